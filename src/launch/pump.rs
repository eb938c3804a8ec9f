//! Copies the child's output to envrun's own stdout and stderr, through the scrubber, and in
//! pty mode the user's keystrokes to the child.
//!
//! One thread polls every output of the child (a pipe per stream, one pipe for both, or the
//! pty) and gives each its own [`ScrubStream`], so streams are masked and kept apart exactly
//! as the child wrote them. Bytes that could still begin a secret are held back; when a
//! stream has been silent for [`IDLE_FLUSH`] they are written out (a prompt without a
//! newline, or the echo of a key, is not delayed longer than that).
//!
//! When the supervisor says the child has exited, the pump drains what is left and stops
//! at end of file, or after [`DRAIN_GRACE`] if a grandchild still holds a pipe open (a
//! daemon started in the background must not keep envrun alive). It never decides how long
//! to keep writing to a slow reader: the supervisor may stop waiting for it (see
//! `supervise::finish`).
//!
//! If envrun's own stdout or stderr is gone (`envrun -- yes | head -1`), the pump closes its
//! end of that pipe, so the child gets `EPIPE`/`SIGPIPE` on its next write exactly as it
//! would without envrun. Any other write error (a full disk, an I/O error) is reported once,
//! naming the stream, and handled the same way; [`Report::write_failed`] then makes envrun
//! exit non-zero.

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
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

/// The read buffer starts this small and grows (by 4, up to [`CHUNK`]) each time a read
/// fills it: every byte of it is wiped when it is freed, so a full-size buffer would cost a
/// quiet or short-lived child 3 MiB of page faults and wiping (read and output buffers).
const FIRST_CHUNK: usize = 16 * 1024;

/// Keystrokes are read this many at a time: a paste is rarely longer, and the pty's input
/// queue (4 KiB) could not take more at once anyway.
const INPUT_CHUNK: usize = 4096;

/// An output of the child and where its scrubbed bytes go.
pub struct Output {
    /// The read end of the child's pipe, or the pty's master.
    pub from: OwnedFd,
    /// Where the scrubbed bytes go.
    pub to: Sink,
}

/// envrun's own stdout or stderr.
pub enum Sink {
    Stdout(std::io::Stdout),
    Stderr(std::io::Stderr),
}

impl Sink {
    fn name(&self) -> &'static str {
        match self {
            Sink::Stdout(_) => "stdout",
            Sink::Stderr(_) => "stderr",
        }
    }
}

impl AsFd for Sink {
    fn as_fd(&self) -> BorrowedFd<'_> {
        match self {
            Sink::Stdout(s) => s.as_fd(),
            Sink::Stderr(s) => s.as_fd(),
        }
    }
}

/// In pty mode: envrun's stdin (a terminal in raw mode) copied to the pty's master.
pub struct Input {
    pub from: std::io::Stdin,
    /// The master, non-blocking (a child that does not read must not stall its output).
    pub to: OwnedFd,
}

/// What the pump has to tell the supervisor when it is done.
#[derive(Debug, Default, Clone, Copy)]
pub struct Report {
    /// A write to envrun's stdout or stderr failed (not with `EPIPE`): output was lost.
    pub write_failed: bool,
}

/// A running pump. `done` becomes readable (end of file) when the thread has finished.
pub struct Pump {
    pub thread: JoinHandle<Report>,
    pub done: OwnedFd,
}

/// The scrubber the pump masks with, which a reload (watch mode) replaces with one that
/// also holds the new values. Each stream looks after every read whether it changed, so a
/// byte written after [`Masks::replace`] returned (by a child started or signalled after it)
/// is always masked with the new values.
pub struct Masks {
    current: Mutex<Arc<Scrubber>>,
    generation: AtomicU64,
}

impl Masks {
    pub fn new(scrubber: &Arc<Scrubber>) -> Arc<Masks> {
        Arc::new(Masks {
            current: Mutex::new(Arc::clone(scrubber)),
            generation: AtomicU64::new(0),
        })
    }

    /// From now on, streams mask with `scrubber` (see [`ScrubStream::switch`] for what it
    /// must hold).
    pub fn replace(&self, scrubber: Arc<Scrubber>) {
        let mut current = self.current.lock().unwrap_or_else(|e| e.into_inner());
        *current = scrubber;
        self.generation.fetch_add(1, Ordering::SeqCst);
    }

    fn current(&self) -> (u64, Arc<Scrubber>) {
        let current = self.current.lock().unwrap_or_else(|e| e.into_inner());
        (self.generation.load(Ordering::SeqCst), Arc::clone(&current))
    }
}

/// Starts the pump thread. It stops when every output is at end of file, or
/// [`DRAIN_GRACE`] after `exited` becomes readable (its write end is closed when the child
/// has exited).
pub fn start(
    outputs: Vec<Output>,
    input: Option<Input>,
    masks: &Arc<Masks>,
    exited: OwnedFd,
) -> Result<Pump, Error> {
    let (generation, scrubber) = masks.current();
    let streams: Vec<Stream> = outputs
        .into_iter()
        .map(|o| Stream {
            from: Some(o.from),
            to: o.to,
            scrub: scrubber.stream(),
            generation,
            last_data: Instant::now(),
        })
        .collect();
    let masks = Arc::clone(masks);
    let relay = input.map(|i| Relay {
        from: Some(i.from),
        to: i.to,
        pending: Zeroizing::new(Vec::with_capacity(INPUT_CHUNK)),
    });
    let (done_r, done_w) = super::supervise::pipe()?;
    let thread = std::thread::Builder::new()
        .name(String::from("envrun-pump"))
        .spawn(move || {
            let report = run(streams, relay, exited, &masks);
            drop(done_w);
            report
        })
        .map_err(|e| Error::io("start the output thread", e))?;
    Ok(Pump {
        thread,
        done: done_r,
    })
}

struct Stream {
    /// `None` once at end of file or once envrun's side is gone.
    from: Option<OwnedFd>,
    to: Sink,
    scrub: ScrubStream,
    /// The [`Masks`] generation `scrub` masks with.
    generation: u64,
    last_data: Instant,
}

struct Relay {
    /// `None` once envrun's stdin is at end of file or unreadable.
    from: Option<std::io::Stdin>,
    to: OwnedFd,
    /// Read from the terminal, not yet taken by the pty.
    pending: Zeroizing<Vec<u8>>,
}

/// Where each polled fd is in the poll list.
#[derive(Clone, Copy)]
enum Slot {
    Output(usize),
    Exited,
    Keys,
    KeysOut,
}

fn run(
    mut streams: Vec<Stream>,
    mut relay: Option<Relay>,
    exited: OwnedFd,
    masks: &Masks,
) -> Report {
    let mut report = Report::default();
    let mut buf = Zeroizing::new(vec![0u8; FIRST_CHUNK]);
    let mut out = Zeroizing::new(Vec::with_capacity(FIRST_CHUNK * 2));
    let mut deadline: Option<Instant> = None;
    loop {
        if streams.iter().all(|s| s.from.is_none()) {
            break;
        }
        let now = Instant::now();
        if deadline.is_some_and(|d| now >= d) {
            break;
        }
        let timeout = next_timeout(&streams, deadline, now);
        let mut slots = Vec::with_capacity(streams.len() + 3);
        let mut fds = Vec::with_capacity(streams.len() + 3);
        for (i, s) in streams.iter().enumerate() {
            if let Some(from) = &s.from {
                slots.push(Slot::Output(i));
                fds.push(PollFd::new(from.as_fd(), PollFlags::POLLIN));
            }
        }
        if deadline.is_none() {
            slots.push(Slot::Exited);
            fds.push(PollFd::new(exited.as_fd(), PollFlags::POLLIN));
        }
        if let Some(r) = &relay {
            if !r.pending.is_empty() {
                slots.push(Slot::KeysOut);
                fds.push(PollFd::new(r.to.as_fd(), PollFlags::POLLOUT));
            } else if let Some(stdin) = &r.from {
                slots.push(Slot::Keys);
                fds.push(PollFd::new(stdin.as_fd(), PollFlags::POLLIN));
            }
        }
        match poll(&mut fds, timeout) {
            Ok(_) | Err(Errno::EINTR) => {}
            // poll on valid fds does not fail otherwise; stop rather than spin.
            Err(_) => break,
        }
        let ready: Vec<Slot> = fds
            .iter()
            .zip(&slots)
            .filter(|(f, _)| f.revents().is_some_and(|r| !r.is_empty()))
            .map(|(_, slot)| *slot)
            .collect();
        drop(fds);
        for slot in ready {
            match slot {
                Slot::Output(i) => {
                    pump_once(&mut streams[i], masks, &mut buf, &mut out, &mut report)
                }
                Slot::Exited => deadline = Some(Instant::now() + DRAIN_GRACE),
                Slot::Keys => read_keys(relay.as_mut().expect("polled")),
                Slot::KeysOut => write_keys(&mut relay),
            }
        }
        flush_idle(&mut streams, &mut out, &mut report);
    }
    // Streams still open here outlived the drain deadline; the others were flushed at end
    // of file, or their destination is gone.
    for s in streams.iter_mut().filter(|s| s.from.is_some()) {
        out.clear();
        s.scrub.flush(&mut out);
        deliver(s, &out, &mut report);
    }
    report
}

/// Until the next idle flush is due, or the drain deadline; forever if neither.
fn next_timeout(streams: &[Stream], deadline: Option<Instant>, now: Instant) -> PollTimeout {
    let idle = streams
        .iter()
        .filter(|s| s.from.is_some() && s.scrub.pending() > 0)
        .map(|s| s.last_data + IDLE_FLUSH)
        .min();
    until_first(idle, deadline, now)
}

/// A poll timeout until the earlier of two moments; forever if neither.
pub(super) fn until_first(a: Option<Instant>, b: Option<Instant>, now: Instant) -> PollTimeout {
    let due = match (a, b) {
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
fn pump_once(
    s: &mut Stream,
    masks: &Masks,
    buf: &mut Zeroizing<Vec<u8>>,
    out: &mut Vec<u8>,
    report: &mut Report,
) {
    let Some(from) = s.from.as_ref() else {
        return;
    };
    let n = match nix::unistd::read(from, &mut buf[..]) {
        Ok(n) => n,
        Err(Errno::EINTR | Errno::EAGAIN) => return,
        // EOF, or an error reading our own pipe (EIO: the pty's last slave fd is closed):
        // either way nothing more will come.
        Err(_) => 0,
    };
    out.clear();
    // After the read: bytes a child wrote after a reload's `replace` are in this read or a
    // later one, never in an earlier one.
    if masks.generation.load(Ordering::SeqCst) != s.generation {
        let (generation, scrubber) = masks.current();
        s.scrub.switch(&scrubber, out);
        s.generation = generation;
    }
    if n == 0 {
        s.scrub.flush(out);
        s.from = None;
    } else {
        s.scrub.write(&buf[..n], out);
        s.last_data = Instant::now();
    }
    deliver(s, out, report);
    if n == buf.len() && n < CHUNK {
        // A fresh buffer, not a resize: growth in place would copy what was read.
        *buf = Zeroizing::new(vec![0u8; (n * 4).min(CHUNK)]);
    }
}

/// Writes out held-back bytes of streams that have been silent for [`IDLE_FLUSH`].
fn flush_idle(streams: &mut [Stream], out: &mut Vec<u8>, report: &mut Report) {
    let now = Instant::now();
    for s in streams.iter_mut() {
        if s.from.is_some() && s.scrub.pending() > 0 && now >= s.last_data + IDLE_FLUSH {
            out.clear();
            s.scrub.flush(out);
            deliver(s, out, report);
        }
    }
}

/// Writes `bytes` to the stream's destination. If that fails, closes the child's end, so
/// its next write fails as it would have without envrun; a failure other than a closed pipe
/// is reported (once: the stream is closed after it).
fn deliver(s: &mut Stream, bytes: &[u8], report: &mut Report) {
    if bytes.is_empty() {
        return;
    }
    let Err(e) = write_all(s.to.as_fd(), bytes) else {
        return;
    };
    let was_open = s.from.take().is_some();
    if e.raw_os_error() != Some(libc::EPIPE) && (was_open || !report.write_failed) {
        report.write_failed = true;
        crate::ui::error(&Error::io(
            format!(
                "cannot write the command's {} (its output is incomplete)",
                s.to.name()
            ),
            e,
        ));
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

/// Reads what the user typed (the relay's pending buffer is empty when this is polled).
fn read_keys(r: &mut Relay) {
    let Some(stdin) = &r.from else {
        return;
    };
    let mut buf = Zeroizing::new([0u8; INPUT_CHUNK]);
    match nix::unistd::read(stdin.as_fd(), &mut buf[..]) {
        Ok(0) => r.from = None,
        Ok(n) => r.pending.extend_from_slice(&buf[..n]),
        Err(Errno::EINTR | Errno::EAGAIN) => {}
        // With SIGTTIN blocked, a read from the background fails with EIO instead of
        // stopping envrun: stop as the signal would have, and read again once continued.
        Err(Errno::EIO) if in_background(stdin.as_fd()) => {
            let _ =
                nix::sys::signal::kill(nix::unistd::getpid(), nix::sys::signal::Signal::SIGSTOP);
        }
        Err(_) => r.from = None,
    }
}

/// Whether envrun's terminal has a foreground process group other than envrun's.
fn in_background(fd: BorrowedFd<'_>) -> bool {
    nix::unistd::tcgetpgrp(fd).is_ok_and(|g| g != nix::unistd::getpgrp())
}

/// Passes pending keystrokes to the pty, as many as it takes now.
fn write_keys(relay: &mut Option<Relay>) {
    let Some(r) = relay.as_mut() else {
        return;
    };
    match nix::unistd::write(&r.to, &r.pending) {
        Ok(n) => {
            r.pending.drain(..n);
        }
        Err(Errno::EINTR | Errno::EAGAIN) => {}
        // The child's side is gone (EIO): nobody is left to type to.
        Err(_) => *relay = None,
    }
}
