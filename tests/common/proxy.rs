//! A fault-injecting HTTP/1.1 proxy for the network-backend tests: it sits on a loopback
//! port in front of a real server and, per request, fails it on purpose (503, 429, a reset
//! before any answer, a reset halfway through the answer) or delays it, or forwards it.
//!
//! ```ignore
//! let proxy = Proxy::start(server.port, Faults { fail_percent: 20, delay_percent: 10 });
//! // point the client at proxy.port; afterwards proxy.stats() says what was injected
//! ```
//!
//! Each client connection carries one request: the proxy forwards it with
//! `Connection: close`, so the upstream server closes after its answer and a client pool
//! never reuses a connection the proxy has finished with. [`Proxy::black_hole`] accepts
//! connections and never answers (a hung server). Threads stop when the proxy is dropped.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

/// What to inject, in percent of requests.
#[derive(Clone, Copy, Debug)]
pub struct Faults {
    /// Requests that fail: 503, 429, reset before answering, or reset mid-answer, in turn.
    pub fail_percent: u32,
    /// Requests (of those not failed) forwarded after a delay of 50-400 ms.
    pub delay_percent: u32,
}

/// How many requests met each fate.
#[derive(Debug, Default)]
pub struct Stats {
    pub forwarded: AtomicUsize,
    pub unavailable: AtomicUsize,
    pub throttled: AtomicUsize,
    pub reset: AtomicUsize,
    pub cut: AtomicUsize,
    pub delayed: AtomicUsize,
}

impl Stats {
    pub fn failed(&self) -> usize {
        self.unavailable.load(Ordering::Relaxed)
            + self.throttled.load(Ordering::Relaxed)
            + self.reset.load(Ordering::Relaxed)
            + self.cut.load(Ordering::Relaxed)
    }
}

pub struct Proxy {
    pub port: u16,
    stats: Arc<Stats>,
    stop: Arc<AtomicBool>,
    accept: Option<JoinHandle<()>>,
}

enum Mode {
    Forward { upstream: u16, faults: Faults },
    BlackHole,
}

impl Proxy {
    /// Forwards to `127.0.0.1:upstream`, injecting `faults`.
    pub fn start(upstream: u16, faults: Faults) -> Proxy {
        Proxy::spawn(Mode::Forward { upstream, faults })
    }

    /// Accepts connections and never answers.
    pub fn black_hole() -> Proxy {
        Proxy::spawn(Mode::BlackHole)
    }

    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    fn spawn(mode: Mode) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the proxy");
        let port = listener.local_addr().expect("proxy address").port();
        let stats = Arc::new(Stats::default());
        let stop = Arc::new(AtomicBool::new(false));
        let accept = std::thread::spawn({
            let (stats, stop) = (stats.clone(), stop.clone());
            move || {
                let mode = Arc::new(mode);
                let mut held = Vec::new();
                let mut n: u64 = 0;
                for conn in listener.incoming() {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let Ok(conn) = conn else { continue };
                    n += 1;
                    match &*mode {
                        // Kept open, never read: the client waits for an answer.
                        Mode::BlackHole => held.push(conn),
                        Mode::Forward { upstream, faults } => {
                            let (stats, upstream, faults) = (stats.clone(), *upstream, *faults);
                            std::thread::spawn(move || {
                                let _ = serve(conn, upstream, faults, &stats, n);
                            });
                        }
                    }
                }
            }
        });
        Proxy {
            port,
            stats,
            stop,
            accept: Some(accept),
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Wakes the accept loop so it sees `stop`.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        if let Some(h) = self.accept.take() {
            let _ = h.join();
        }
    }
}

/// A random number below `n` (no seed to manage: the tests assert on totals).
fn random_below(n: u32) -> u32 {
    let mut b = [0u8; 4];
    getrandom::fill(&mut b).expect("random bytes");
    u32::from_le_bytes(b) % n
}

fn serve(
    mut client: TcpStream,
    upstream: u16,
    faults: Faults,
    stats: &Stats,
    n: u64,
) -> std::io::Result<()> {
    client.set_read_timeout(Some(Duration::from_secs(30)))?;
    let (head, body) = read_request(&mut client)?;
    if random_below(100) < faults.fail_percent {
        match n % 4 {
            0 => {
                stats.unavailable.fetch_add(1, Ordering::Relaxed);
                return answer(&mut client, "503 Service Unavailable", "");
            }
            1 => {
                stats.throttled.fetch_add(1, Ordering::Relaxed);
                return answer(&mut client, "429 Too Many Requests", "Retry-After: 0\r\n");
            }
            2 => {
                stats.reset.fetch_add(1, Ordering::Relaxed);
                return reset(client);
            }
            _ => {
                // Half of the real answer, then a reset.
                stats.cut.fetch_add(1, Ordering::Relaxed);
                let answer = forward(&head, &body, upstream)?;
                client.write_all(&answer[..answer.len() / 2])?;
                return reset(client);
            }
        }
    }
    if random_below(100) < faults.delay_percent {
        stats.delayed.fetch_add(1, Ordering::Relaxed);
        std::thread::sleep(Duration::from_millis(50 + u64::from(random_below(350))));
    }
    let answer = forward(&head, &body, upstream)?;
    stats.forwarded.fetch_add(1, Ordering::Relaxed);
    client.write_all(&answer)?;
    client.shutdown(Shutdown::Write)
}

/// Reads one request: its head (request line and headers) and its body.
fn read_request(conn: &mut TcpStream) -> std::io::Result<(String, Vec<u8>)> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = conn.read(&mut chunk)?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
    let length: usize = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse().ok())?
        })
        .unwrap_or(0);
    let mut body = buf[end..].to_vec();
    while body.len() < length {
        let n = conn.read(&mut chunk)?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        body.extend_from_slice(&chunk[..n]);
    }
    Ok((head, body))
}

/// Sends the request upstream with `Connection: close` and returns the whole answer.
fn forward(head: &str, body: &[u8], upstream: u16) -> std::io::Result<Vec<u8>> {
    let mut out = String::new();
    for line in head.split("\r\n").filter(|l| !l.is_empty()) {
        if !line.to_ascii_lowercase().starts_with("connection:") {
            out.push_str(line);
            out.push_str("\r\n");
        }
    }
    out.push_str("Connection: close\r\n\r\n");
    let mut up = TcpStream::connect(("127.0.0.1", upstream))?;
    up.set_read_timeout(Some(Duration::from_secs(30)))?;
    up.write_all(out.as_bytes())?;
    up.write_all(body)?;
    let mut answer = Vec::new();
    up.read_to_end(&mut answer)?;
    Ok(answer)
}

fn answer(conn: &mut TcpStream, status: &str, extra: &str) -> std::io::Result<()> {
    let body = r#"{"errors":["injected by the test proxy"]}"#;
    write!(
        conn,
        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n{extra}Connection: close\r\n\r\n{body}",
        body.len()
    )?;
    conn.shutdown(Shutdown::Write)
}

/// Closes with a TCP reset (SO_LINGER 0) instead of an orderly close.
#[allow(unsafe_code)]
fn reset(conn: TcpStream) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: `conn` is an open socket for the duration of the call, and `linger` is a
    // valid `struct linger` of the size passed.
    let rc = unsafe {
        libc::setsockopt(
            conn.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&raw const linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        )
    };
    drop(conn);
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}
