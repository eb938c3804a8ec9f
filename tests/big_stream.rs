//! A large stream with no secret in it passes through the supervisor's pump intact.
//!
//! 1 GiB of random bytes, hashed by the child as it writes them and by the test as they
//! come out of envrun. About 7 s in a debug build on 2 cores, most of it generating and
//! hashing (the scrubber's dependencies are optimised in the dev profile).

mod common;
use common::*;

use std::time::{Duration, Instant};

const SIZE: u64 = 1 << 30;

#[test]
fn a_large_stream_without_secrets_passes_intact() {
    let t = Test::new()
        .file("token.txt", &format!("tok-{CANARY}"))
        .manifest("environment:\n  TOKEN: file:token.txt\n");
    let expected = t.path("expected.sha256");
    // The child streams random bytes and hashes what it wrote on the side; the test hashes
    // what came out of envrun.
    let child = format!(
        "head -c {SIZE} /dev/urandom | tee >(sha256sum > {})",
        expected.display()
    );
    let outer = format!("{BIN} -- bash -c '{child}' | sha256sum");
    let started = Instant::now();
    let done = t
        .run(&["--no-mask", "--", "bash", "-c", &outer])
        .status(0)
        .stderr("");
    let elapsed = started.elapsed();
    let actual = done.stdout_str();
    // The side hash can finish a moment after the child exits.
    let wait = Instant::now();
    let expected = loop {
        let text = std::fs::read_to_string(&expected).unwrap_or_default();
        if text.len() >= 64 {
            break text;
        }
        assert!(wait.elapsed() < Duration::from_secs(10), "no side hash");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(
        actual[..64],
        expected[..64],
        "the stream changed in transit"
    );
    eprintln!("{} MiB through envrun in {elapsed:?}", SIZE >> 20);
}
