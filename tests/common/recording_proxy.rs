//! A counting, fault-injecting HTTP/1.1 proxy in front of a test server on loopback.
//!
//! Every request that passes is recorded ([`Seen`]: method, path, headers, body), so a test
//! can count calls on the server side (`proxy.count(|r| r.header("x-amz-target") == ...)`).
//! [`Proxy::fail_next`] answers the next N matching requests itself with a canned response
//! (a 429, a throttling error, a 403) instead of forwarding them, to test retries and
//! errors against a real server. One upstream connection per request; the client's
//! connection is kept alive as long as upstream allows it.
//!
//! ```ignore
//! let proxy = Proxy::start(server.port);
//! proxy.fail_next(2, |r| r.path == "/", 400, &[], br#"{"__type":"ThrottlingException"}"#);
//! // ... point the client at proxy.url() ...
//! assert_eq!(proxy.count(|r| r.path == "/"), 3);
//! ```

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// One request the proxy received.
#[derive(Clone, Debug)]
pub struct Seen {
    pub method: String,
    pub path: String,
    /// Header names in lower case, values as sent.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Seen {
    /// The first value of header `name` (any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
    }
}

type Matcher = Box<dyn Fn(&Seen) -> bool + Send>;

struct Fault {
    matches: Matcher,
    left: usize,
    response: Vec<u8>,
}

#[derive(Default)]
struct Shared {
    seen: Mutex<Vec<Seen>>,
    faults: Mutex<Vec<Fault>>,
    stop: AtomicBool,
}

pub struct Proxy {
    pub port: u16,
    shared: Arc<Shared>,
}

impl Proxy {
    /// Listens on a free loopback port and forwards to `127.0.0.1:upstream`.
    pub fn start(upstream: u16) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the proxy");
        let port = listener.local_addr().unwrap().port();
        let shared = Arc::new(Shared::default());
        let s = shared.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if s.stop.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let s = s.clone();
                std::thread::spawn(move || serve(conn, upstream, &s));
            }
        });
        Proxy { port, shared }
    }

    /// `http://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// How many requests so far satisfy `pred`.
    pub fn count(&self, pred: impl Fn(&Seen) -> bool) -> usize {
        self.shared
            .seen
            .lock()
            .unwrap()
            .iter()
            .filter(|r| pred(r))
            .count()
    }

    /// Every request so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.shared.seen.lock().unwrap().clone()
    }

    /// Forgets the requests recorded so far (after seeding, before the run under test).
    pub fn clear(&self) {
        self.shared.seen.lock().unwrap().clear();
    }

    /// Answers the next `times` requests that satisfy `pred` with `status`, `headers` and
    /// `body` instead of forwarding them (they are still recorded).
    pub fn fail_next(
        &self,
        times: usize,
        pred: impl Fn(&Seen) -> bool + Send + 'static,
        status: u16,
        headers: &[(&str, &str)],
        body: &[u8],
    ) {
        let mut response = format!(
            "HTTP/1.1 {status} Injected\r\nContent-Length: {}\r\n",
            body.len()
        );
        for (k, v) in headers {
            response.push_str(&format!("{k}: {v}\r\n"));
        }
        response.push_str("\r\n");
        let mut response = response.into_bytes();
        response.extend_from_slice(body);
        self.shared.faults.lock().unwrap().push(Fault {
            matches: Box::new(pred),
            left: times,
            response,
        });
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so it sees `stop`.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

/// Reads one request: `None` at a clean end of the connection.
fn read_request(reader: &mut BufReader<TcpStream>) -> Option<(Seen, Vec<u8>)> {
    let mut head = Vec::new();
    loop {
        let mut line = Vec::new();
        if reader.read_until(b'\n', &mut line).ok()? == 0 {
            return None;
        }
        let end = line == b"\r\n" || line == b"\n";
        head.extend_from_slice(&line);
        if end {
            break;
        }
    }
    let text = String::from_utf8_lossy(&head).into_owned();
    let mut lines = text.split("\r\n");
    let mut first = lines.next()?.split_whitespace();
    let method = first.next()?.to_owned();
    let path = first.next()?.to_owned();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let len = headers
        .iter()
        .find(|(k, _)| k == "content-length")
        .and_then(|(_, v)| v.parse::<usize>().ok())
        .unwrap_or(0);
    let mut body = vec![0; len];
    reader.read_exact(&mut body).ok()?;
    let mut raw = head;
    raw.extend_from_slice(&body);
    Some((
        Seen {
            method,
            path,
            headers,
            body,
        },
        raw,
    ))
}

fn serve(client: TcpStream, upstream: u16, shared: &Shared) {
    let _ = client.set_read_timeout(Some(Duration::from_secs(30)));
    let mut writer = match client.try_clone() {
        Ok(w) => w,
        Err(_) => return,
    };
    let mut reader = BufReader::new(client);
    while let Some((seen, raw)) = read_request(&mut reader) {
        let injected = {
            let mut faults = shared.faults.lock().unwrap();
            faults
                .iter_mut()
                .find(|f| f.left > 0 && (f.matches)(&seen))
                .map(|f| {
                    f.left -= 1;
                    f.response.clone()
                })
        };
        shared.seen.lock().unwrap().push(seen);
        if let Some(response) = injected {
            if writer.write_all(&response).is_err() {
                return;
            }
            continue;
        }
        // Upstream closes after its answer (HTTP/1.0-style framing is then unambiguous).
        let Ok(mut up) = TcpStream::connect(("127.0.0.1", upstream)) else {
            return;
        };
        let raw = force_close(&raw);
        if up.write_all(&raw).is_err() {
            return;
        }
        let mut response = Vec::new();
        if up.read_to_end(&mut response).is_err() {
            return;
        }
        let keep = has_length(&response);
        if writer.write_all(&response).is_err() || !keep {
            let _ = writer.shutdown(Shutdown::Both);
            return;
        }
    }
}

/// The request with `Connection: close` in place of any `Connection` header.
fn force_close(raw: &[u8]) -> Vec<u8> {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map_or(raw.len(), |i| i + 2);
    let head = String::from_utf8_lossy(&raw[..split]);
    let mut out = String::new();
    for line in head.split_inclusive("\r\n") {
        if !line.to_ascii_lowercase().starts_with("connection:") {
            out.push_str(line);
        }
    }
    out.push_str("Connection: close\r\n");
    let mut out = out.into_bytes();
    out.extend_from_slice(&raw[split..]);
    out
}

/// Whether a response says where it ends (Content-Length), so the client connection can
/// carry another request; otherwise the proxy closes it.
fn has_length(response: &[u8]) -> bool {
    let end = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or(response.len());
    String::from_utf8_lossy(&response[..end])
        .to_ascii_lowercase()
        .contains("\r\ncontent-length:")
}
