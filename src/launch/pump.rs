//! Copies the child's output to envrun's own stdout and stderr, through the scrubber.
//!
//! One thread polls every output of the child (stdout and stderr now; a pseudo-terminal
//! later) and gives each its own [`ScrubStream`], so the two are masked and kept apart
//! exactly as the child wrote them. Bytes that could still begin a secret are held back;
//! when a stream has been silent for [`IDLE_FLUSH`] they are written out (a prompt without
//! a newline is not delayed longer than that).
//!
//! When the supervisor says the child has exited, the pump drains what is left and stops
//! at end of file, or after [`DRAIN_GRACE`] if a grandchild still holds a pipe open (a
//! daemon started in the background must not keep envrun alive).
//!
//! If envrun's own stdout or stderr is gone (`envrun -- yes | head -1`), the pump closes its
//! end of that pipe, so the child gets `EPIPE`/`SIGPIPE` on its next write exactly as it
//! would without envrun, and envrun itself lives on to report the child's status.

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use zeroize::Zeroizing;

use crate::error::Error;
use crate::scrub::{ScrubStream, Scrubber};

/// How long a stream must be silent before held-back bytes are written out.
pub const IDLE_FLUSH: Duration = Duration::from_millis(50);

/// How long after the child's exit the pump waits for the last writers to close its pipes.
pub const DRAIN_GRACE: Duration = Duration::from_millis(250);

/// One read's worth, and the capacity the supervisor asks for the child's stdout pipe.
pub const CHUNK: usize = 1024 * 1024;

/// An output of the child and where its scrubbed bytes go.
pub struct Output {
    /// The read end of the child's pipe.
    pub from: OwnedFd,
    /// Where the scrubbed bytes go.
    pub to: Sink,
}

/// envrun's own stdout or stderr.
pub enum Sink {
    Stdout(std::io::Stdout),
    Stderr(std::io::Stderr),
}

impl AsFd for Sink {
    fn as_fd(&self) -> BorrowedFd<'_> {
        match self {
            Sink::Stdout(s) => s.as_fd(),
            Sink::Stderr(s) => s.as_fd(),
        }
    }
}

/// Starts the pump thread. It stops when every output is at end of file, or
/// [`DRAIN_GRACE`] after `exited` becomes readable (its write end is closed when the child
/// has exited).
pub fn start(
    outputs: Vec<Output>,
    scrubber: &Arc<Scrubber>,
    exited: OwnedFd,
) -> Result<JoinHandle<()>, Error> {
    let streams: Vec<Stream> = outputs
        .into_iter()
        .map(|o| Stream {
            from: Some(o.from),
            to: o.to,
            scrub: scrubber.stream(),
            last_data: Instant::now(),
        })
        .collect();
    std::thread::Builder::new()
        .name(String::from("envrun-pump"))
        .spawn(move || run(streams, exited))
        .map_err(|e| Error::io("start the output thread", e))
}

struct Stream {
    /// `None` once at end of file or once envrun's side is gone.
    from: Option<OwnedFd>,
    to: Sink,
    scrub: ScrubStream,
    last_data: Instant,
}

fn run(mut streams: Vec<Stream>, exited: OwnedFd) {
    let mut buf = Zeroizing::new(vec![0u8; CHUNK]);
    let mut out = Zeroizing::new(Vec::with_capacity(CHUNK * 2));
    let mut deadline: Option<Instant> = None;
    loop {
        let open: Vec<usize> = (0..streams.len())
            .filter(|i| streams[*i].from.is_some())
            .collect();
        if open.is_empty() {
            break;
        }
        let now = Instant::now();
        if deadline.is_some_and(|d| now >= d) {
            break;
        }
        let timeout = next_timeout(&streams, deadline, now);
        let mut fds: Vec<PollFd> = open
            .iter()
            .map(|i| {
                let fd = streams[*i].from.as_ref().expect("open").as_fd();
                PollFd::new(fd, PollFlags::POLLIN)
            })
            .collect();
        if deadline.is_none() {
            fds.push(PollFd::new(exited.as_fd(), PollFlags::POLLIN));
        }
        match poll(&mut fds, timeout) {
            Ok(_) | Err(Errno::EINTR) => {}
            // poll on valid fds does not fail otherwise; stop rather than spin.
            Err(_) => break,
        }
        let ready: Vec<bool> = fds
            .iter()
            .map(|f| f.revents().is_some_and(|r| !r.is_empty()))
            .collect();
        drop(fds);
        if deadline.is_none() && ready[open.len()] {
            deadline = Some(Instant::now() + DRAIN_GRACE);
        }
        for (k, i) in open.iter().enumerate() {
            if ready[k] {
                pump_once(&mut streams[*i], &mut buf, &mut out);
            }
        }
        flush_idle(&mut streams, &mut out);
    }
    // Streams still open here outlived the drain deadline; the others were flushed at end
    // of file, or their destination is gone.
    for s in streams.iter_mut().filter(|s| s.from.is_some()) {
        out.clear();
        s.scrub.flush(&mut out);
        let _ = write_all(s.to.as_fd(), &out);
    }
}

/// Until the next idle flush is due, or the drain deadline; forever if neither.
fn next_timeout(streams: &[Stream], deadline: Option<Instant>, now: Instant) -> PollTimeout {
    let idle = streams
        .iter()
        .filter(|s| s.from.is_some() && s.scrub.pending() > 0)
        .map(|s| s.last_data + IDLE_FLUSH)
        .min();
    let due = match (idle, deadline) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };
    match due {
        None => PollTimeout::NONE,
        Some(t) => {
            // Round up so a wake-up is never a few microseconds early (a busy loop).
            let ms = t.saturating_duration_since(now).as_micros().div_ceil(1000);
            PollTimeout::try_from(ms).unwrap_or(PollTimeout::MAX)
        }
    }
}

/// Reads once from a ready stream and writes what the scrubber lets through.
fn pump_once(s: &mut Stream, buf: &mut [u8], out: &mut Vec<u8>) {
    let Some(from) = s.from.as_ref() else {
        return;
    };
    let n = match nix::unistd::read(from, buf) {
        Ok(n) => n,
        Err(Errno::EINTR | Errno::EAGAIN) => return,
        // EOF, or an error reading our own pipe: either way nothing more will come.
        Err(_) => 0,
    };
    out.clear();
    if n == 0 {
        s.scrub.flush(out);
        s.from = None;
    } else {
        s.scrub.write(&buf[..n], out);
        s.last_data = Instant::now();
    }
    if !out.is_empty() && write_all(s.to.as_fd(), out).is_err() {
        // envrun's side is gone: close the child's pipe so the child sees it too.
        s.from = None;
    }
}

/// Writes out held-back bytes of streams that have been silent for [`IDLE_FLUSH`].
fn flush_idle(streams: &mut [Stream], out: &mut Vec<u8>) {
    let now = Instant::now();
    for s in streams.iter_mut() {
        if s.from.is_some() && s.scrub.pending() > 0 && now >= s.last_data + IDLE_FLUSH {
            out.clear();
            s.scrub.flush(out);
            if !out.is_empty() && write_all(s.to.as_fd(), out).is_err() {
                s.from = None;
            }
        }
    }
}

/// `write_all` on a raw fd: no buffering, so nothing sits in envrun after the child wrote it.
fn write_all(fd: BorrowedFd<'_>, mut bytes: &[u8]) -> io::Result<()> {
    while !bytes.is_empty() {
        match nix::unistd::write(fd, bytes) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => bytes = &bytes[n..],
            Err(Errno::EINTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}
