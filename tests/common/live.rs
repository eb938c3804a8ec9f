//! envrun running in the background while a test acts on it: its stdout and stderr are
//! collected by reader threads, and the test waits for what it expects to appear (with a
//! deadline, never a fixed sleep), sends signals, changes secrets, and finally collects the
//! exit status. Dropping a [`Live`] that is still running kills envrun (its child follows by
//! its parent-death signal).
//!
//! ```ignore
//! let live = Live::start(&t, &["--watch", "1s", "--", "sh", "-c", script]);
//! live.wait_stdout("the first child", |out| out.contains("start"));
//! let (status, out, err) = live.finish();
//! ```
//!
//! [`Opens`] counts how often a file is opened (inotify), which shows a test when envrun
//! has re-read a `file:` reference: how it sees a reload happen that changes nothing.

use std::io::Read;
use std::process::{Child, ExitStatus, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use super::{Test, assert_no_internals};

/// How long a test waits for anything envrun or its child should do promptly.
pub const DEADLINE: Duration = Duration::from_secs(10);

#[derive(Default)]
struct Streams {
    stdout: Vec<u8>,
    stderr: Vec<u8>,
    /// How many of the two pipes have reached EOF.
    closed: usize,
}

type Shared = Arc<(Mutex<Streams>, Condvar)>;

/// envrun in the background with piped stdout and stderr and stdin from /dev/null.
pub struct Live {
    envrun: Child,
    streams: Shared,
    status: Option<ExitStatus>,
}

impl Live {
    /// Starts `envrun ARGS` in the test's directory with the test's environment.
    pub fn start(t: &Test, args: &[&str]) -> Live {
        Live::spawn(t.command(args).cmd)
    }

    /// Starts a prepared envrun command (extra variables set by the caller).
    pub fn spawn(mut cmd: std::process::Command) -> Live {
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut envrun = cmd.spawn().expect("spawn envrun");
        let streams: Shared = Arc::default();
        let out = envrun.stdout.take().unwrap();
        let err = envrun.stderr.take().unwrap();
        for (mut pipe, is_err) in [
            (Box::new(out) as Box<dyn Read + Send>, false),
            (Box::new(err) as Box<dyn Read + Send>, true),
        ] {
            let streams = Arc::clone(&streams);
            std::thread::spawn(move || {
                let mut buf = [0u8; 8192];
                loop {
                    let n = pipe.read(&mut buf).unwrap_or(0);
                    let (lock, cvar) = &*streams;
                    let mut s = lock.lock().unwrap();
                    if n == 0 {
                        s.closed += 1;
                        cvar.notify_all();
                        return;
                    }
                    let into = if is_err { &mut s.stderr } else { &mut s.stdout };
                    into.extend_from_slice(&buf[..n]);
                    cvar.notify_all();
                }
            });
        }
        Live {
            envrun,
            streams,
            status: None,
        }
    }

    pub fn pid(&self) -> u32 {
        self.envrun.id()
    }

    /// What envrun wrote to stdout so far.
    pub fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.streams.0.lock().unwrap().stdout).into_owned()
    }

    /// What envrun wrote to stderr so far.
    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.streams.0.lock().unwrap().stderr).into_owned()
    }

    /// Waits until `ready(stdout, stderr)` holds, for at most [`DEADLINE`]; returns both.
    pub fn wait_for(&self, what: &str, ready: impl Fn(&str, &str) -> bool) -> (String, String) {
        self.wait_for_within(what, DEADLINE, ready)
    }

    /// [`Live::wait_for`] with another deadline.
    pub fn wait_for_within(
        &self,
        what: &str,
        deadline: Duration,
        ready: impl Fn(&str, &str) -> bool,
    ) -> (String, String) {
        let started = Instant::now();
        let (lock, cvar) = &*self.streams;
        let mut s = lock.lock().unwrap();
        loop {
            let out = String::from_utf8_lossy(&s.stdout).into_owned();
            let err = String::from_utf8_lossy(&s.stderr).into_owned();
            if ready(&out, &err) {
                return (out, err);
            }
            let left = deadline.saturating_sub(started.elapsed());
            assert!(
                !left.is_zero() && s.closed < 2,
                "{} waiting for {what}\n--- stdout ---\n{out}\n--- stderr ---\n{err}",
                if s.closed < 2 {
                    format!("timed out after {deadline:?}")
                } else {
                    String::from("envrun closed its output")
                }
            );
            s = cvar.wait_timeout(s, left).unwrap().0;
        }
    }

    /// Waits until stdout satisfies `ready`.
    pub fn wait_stdout(&self, what: &str, ready: impl Fn(&str) -> bool) -> String {
        self.wait_for(what, |out, _| ready(out)).0
    }

    /// Waits until stderr satisfies `ready`.
    pub fn wait_stderr(&self, what: &str, ready: impl Fn(&str) -> bool) -> String {
        self.wait_for(what, |_, err| ready(err)).1
    }

    /// Sends `signo` to envrun (kill(2), as `kill` from a shell or a supervisor does).
    pub fn signal(&self, signo: i32) {
        let sig = nix::sys::signal::Signal::try_from(signo).expect("a signal number");
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.pid() as i32), sig)
            .expect("kill envrun");
    }

    /// Whether envrun is still running.
    pub fn running(&mut self) -> bool {
        if self.status.is_none() {
            self.status = self.envrun.try_wait().expect("try_wait envrun");
        }
        self.status.is_none()
    }

    /// Waits (at most [`DEADLINE`]) for envrun to exit and its output to end; returns the
    /// status and everything it wrote. Fails the test if envrun named a library internal.
    pub fn finish(mut self) -> (ExitStatus, String, String) {
        let started = Instant::now();
        while self.running() {
            if started.elapsed() > DEADLINE {
                let _ = self.envrun.kill();
                panic!(
                    "envrun did not exit within {DEADLINE:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
                    self.stdout(),
                    self.stderr()
                );
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        // Output written by the child's own children may outlive envrun a little.
        {
            let (lock, cvar) = &*self.streams;
            let mut s = lock.lock().unwrap();
            while s.closed < 2 {
                let left = DEADLINE.saturating_sub(started.elapsed());
                assert!(
                    !left.is_zero(),
                    "envrun's output did not end after its exit"
                );
                s = cvar.wait_timeout(s, left).unwrap().0;
            }
        }
        let (out, err) = (self.stdout(), self.stderr());
        assert_no_internals(err.as_bytes());
        (self.status.unwrap(), out, err)
    }
}

impl Drop for Live {
    fn drop(&mut self) {
        if self.running() {
            let _ = self.envrun.kill();
            let _ = self.envrun.wait();
        }
    }
}

/// Counts the opens of one file, seen through inotify (`IN_OPEN`), so a test can wait for
/// envrun to have read a `file:` reference again: a reload made visible.
pub struct Opens {
    fd: std::os::fd::OwnedFd,
    count: usize,
}

impl Opens {
    pub fn watch(path: &std::path::Path) -> Opens {
        use std::os::fd::FromRawFd;
        use std::os::unix::ffi::OsStrExt;
        let cpath = std::ffi::CString::new(path.as_os_str().as_bytes()).unwrap();
        // SAFETY: plain syscalls on a fresh fd and a NUL-terminated path that outlives them.
        #[allow(unsafe_code)]
        let fd = unsafe {
            let fd = libc::inotify_init1(libc::IN_NONBLOCK | libc::IN_CLOEXEC);
            assert!(
                fd >= 0,
                "inotify_init1: {}",
                std::io::Error::last_os_error()
            );
            let wd = libc::inotify_add_watch(fd, cpath.as_ptr(), libc::IN_OPEN);
            assert!(
                wd >= 0,
                "inotify_add_watch {}: {}",
                path.display(),
                std::io::Error::last_os_error()
            );
            std::os::fd::OwnedFd::from_raw_fd(fd)
        };
        Opens { fd, count: 0 }
    }

    /// How many opens happened since [`Opens::watch`].
    pub fn count(&mut self) -> usize {
        let mut file = std::fs::File::from(self.fd.try_clone().unwrap());
        let mut buf = [0u8; 4096];
        loop {
            match file.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    // Each event is a 16-byte header plus `len` bytes of name (none here,
                    // since the watch is on the file itself).
                    let mut at = 0;
                    while at + 16 <= n {
                        let len = u32::from_ne_bytes(buf[at + 12..at + 16].try_into().unwrap());
                        self.count += 1;
                        at += 16 + len as usize;
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) => panic!("read inotify: {e}"),
            }
        }
        self.count
    }

    /// Waits (at most `deadline`) until the file has been opened `n` more times than now.
    pub fn wait_more(&mut self, what: &str, n: usize, deadline: Duration) {
        let base = self.count();
        self.wait_past(base + n - 1, what, deadline);
    }

    /// Waits (at most `deadline`) until the file has been opened more than `base` times
    /// in all (`base` read from [`Opens::count`] before the action that opens it).
    pub fn wait_past(&mut self, base: usize, what: &str, deadline: Duration) {
        let started = Instant::now();
        while self.count() <= base {
            assert!(
                started.elapsed() < deadline,
                "timed out after {deadline:?} waiting for {what} (opened {} times, want more than {base})",
                self.count
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}
