//! Throughput of the streaming scrubber on ~64 MiB of log-like text, fed in 64 KiB
//! writes (a pipe's worth), with 0, 1, 10, 100 and 1,000 secrets and all their
//! derived encodings. 0 secrets is the pass-through copy, the ceiling.
//!
//! `scripts/bench-scrub.sh` runs this and prints a table next to a `cat | cat` pipe.
//!
//! `build/...` measures compiling the automaton (which happens on the first output):
//! one 128 KiB value (a CA bundle), 100 values totalling 1 MiB, and 100 and 1,000
//! typical secrets.

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use criterion::{
    BenchmarkId, Criterion, SamplingMode, Throughput, criterion_group, criterion_main,
};
use envrun::scrub::{ScrubOptions, Scrubber};

const TEXT_LEN: usize = 64 << 20;
const WRITE: usize = 64 << 10;

/// xorshift64*: deterministic input without a dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }

    fn chars(&mut self, alphabet: &[u8], len: usize) -> String {
        (0..len).map(|_| *self.pick(alphabet) as char).collect()
    }
}

const ALNUM: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
const B64: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
const HEX: &[u8] = b"0123456789abcdef";

/// API tokens, passwords with punctuation, and base64-looking keys.
fn secrets(n: usize) -> Vec<(String, Vec<u8>)> {
    let mut rng = Rng(0x5eed_0000 + n as u64);
    (0..n)
        .map(|i| {
            let value = match i % 3 {
                0 => format!("sk_live_{}", rng.chars(ALNUM, 24)),
                1 => format!(
                    "{}!{}#{}",
                    rng.chars(ALNUM, 8),
                    rng.chars(ALNUM, 6),
                    rng.chars(HEX, 4)
                ),
                _ => rng.chars(B64, 40),
            };
            (format!("SECRET_{i}"), value.into_bytes())
        })
        .collect()
}

/// Log lines: HTTP access lines, JSON events, SQL, hex IDs, base64 payloads; now
/// and then one of the secrets, raw or encoded.
fn text(secrets: &[(String, Vec<u8>)]) -> Vec<u8> {
    let mut rng = Rng(0x1065);
    let words = [
        "cache",
        "hit",
        "miss",
        "user",
        "session",
        "token",
        "refresh",
        "upstream",
        "retry",
        "connection",
        "closed",
        "opened",
        "request",
        "handled",
        "queue",
        "worker",
        "job",
        "done",
    ];
    let mut out = String::with_capacity(TEXT_LEN + 4096);
    let mut line = 0u64;
    while out.len() < TEXT_LEN {
        line += 1;
        let ts = format!(
            "2024-05-01T12:{:02}:{:02}.{:03}Z",
            line / 60_000 % 60,
            line / 1000 % 60,
            line % 1000
        );
        match rng.below(6) {
            0 | 1 => out.push_str(&format!(
                "{ts} INFO  http::server request_id={} method=GET path=/api/v1/users/{}?page={} status=200 dur_ms={}\n",
                rng.chars(HEX, 16),
                rng.below(100_000),
                rng.below(20),
                rng.below(500)
            )),
            2 => out.push_str(&format!(
                "{{\"ts\":\"{ts}\",\"level\":\"debug\",\"msg\":\"{} {}\",\"key\":\"user:{}\",\"ttl\":{}}}\n",
                rng.pick(&words),
                rng.pick(&words),
                rng.below(10_000),
                rng.below(3600)
            )),
            3 => out.push_str(&format!(
                "{ts} DEBUG db: SELECT id, name FROM users WHERE email = 'user{}@example.com' LIMIT 1\n",
                rng.below(10_000)
            )),
            4 => out.push_str(&format!("{ts} TRACE payload={}\n", rng.chars(B64, 64))),
            _ => {
                let n = 3 + rng.below(8);
                let msg: Vec<&str> = (0..n).map(|_| *rng.pick(&words)).collect();
                out.push_str(&format!("{ts} WARN  worker: {}\n", msg.join(" ")));
            }
        }
        if !secrets.is_empty() && line.is_multiple_of(1000) {
            let value = &rng.pick(secrets).1;
            let shown = match rng.below(4) {
                0 => String::from_utf8_lossy(value).into_owned(),
                1 => STANDARD.encode(value),
                2 => value.iter().map(|b| format!("{b:02x}")).collect(),
                _ => serde_json::to_string(&String::from_utf8_lossy(value)).unwrap(),
            };
            out.push_str(&format!("{ts} ERROR auth: rejected credentials {shown}\n"));
        }
    }
    out.into_bytes()
}

fn bench(c: &mut Criterion) {
    // ENVRUN_BENCH_QUICK=1: a rough number in a few seconds per case, for iterating.
    let quick = std::env::var_os("ENVRUN_BENCH_QUICK").is_some();
    let mut group = c.benchmark_group("scrub");
    group
        .sampling_mode(SamplingMode::Flat)
        .sample_size(10)
        .warm_up_time(Duration::from_millis(if quick { 300 } else { 1000 }))
        .measurement_time(Duration::from_secs(if quick { 2 } else { 8 }));
    let largest = secrets(1000);
    let input = text(&largest[..100]);
    group.throughput(Throughput::Bytes(input.len() as u64));
    for n in [0, 1, 10, 100, 1000] {
        let secrets = secrets(n);
        let input = if n == 0 {
            input.clone()
        } else {
            text(&secrets)
        };
        let scrubber = Arc::new(
            Scrubber::new(
                secrets.iter().map(|(k, v)| (k.as_str(), v.as_slice())),
                &ScrubOptions::default(),
            )
            .unwrap(),
        );
        let mut out = Vec::with_capacity(2 * WRITE);
        group.bench_function(BenchmarkId::new("secrets", n), |b| {
            b.iter(|| {
                let mut stream = scrubber.stream();
                for chunk in input.chunks(WRITE) {
                    out.clear();
                    stream.write(chunk, &mut out);
                    black_box(&out);
                }
                out.clear();
                stream.flush(&mut out);
                black_box(&out);
            })
        });
    }
    group.finish();
}

fn bench_build(c: &mut Criterion) {
    let quick = std::env::var_os("ENVRUN_BENCH_QUICK").is_some();
    let mut group = c.benchmark_group("build");
    group
        .sampling_mode(SamplingMode::Flat)
        .sample_size(10)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(if quick { 2 } else { 5 }));
    let mut rng = Rng(0xb111d);
    let pem = |rng: &mut Rng, len: usize| {
        let body = rng.chars(B64, len);
        let lines: Vec<&str> = body
            .as_bytes()
            .chunks(64)
            .map(|l| std::str::from_utf8(l).unwrap())
            .collect();
        format!(
            "-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n",
            lines.join("\n")
        )
        .into_bytes()
    };
    type Values = Vec<(String, Vec<u8>)>;
    let cases: Vec<(&str, Values)> = vec![
        (
            "one_128KiB",
            vec![("CA".to_owned(), pem(&mut rng, 127 * 1024))],
        ),
        (
            "100_totalling_1MiB",
            (0..100)
                .map(|i| (format!("K{i}"), pem(&mut rng, 10 * 1024)))
                .collect(),
        ),
        ("100_typical", secrets(100)),
        ("1000_typical", secrets(1000)),
    ];
    for (name, values) in cases {
        let probe = Scrubber::new(
            values.iter().map(|(k, v)| (k.as_str(), v.as_slice())),
            &ScrubOptions::default(),
        )
        .unwrap();
        probe.build();
        eprintln!("build/{name}: {probe:?}");
        group.bench_function(name, |b| {
            b.iter(|| {
                let scrubber = Scrubber::new(
                    values.iter().map(|(k, v)| (k.as_str(), v.as_slice())),
                    &ScrubOptions::default(),
                )
                .unwrap();
                scrubber.build();
                black_box(scrubber.memory_usage())
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench, bench_build);
criterion_main!(benches);
