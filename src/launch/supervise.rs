//! Supervise mode: envrun starts the command as its child and stays as its parent, as tini
//! does, to mask the child's output, or (as PID 1) to be the container's init.
//!
//! [`supervise`] is the list of steps; each is a small function that names the syscall it
//! reports on failure. In order: look the program up (before anything changes, so a typo
//! costs nothing), block the signals envrun takes over, become a subreaper, make the
//! child's stdio (pipes or a pty), fork and exec the child with the signal mask envrun
//! started with, wipe the environment block, put the terminal in raw mode (pty mode), start
//! the pump, then wait: forward signals, reap zombies, and when the child has exited,
//! finish the output (reading signals all along) and end as the child did.
//!
//! The child is started with `fork` + `execve` rather than `std::process::Command`, because
//! `Command` copies the environment into buffers of its own that nobody wipes; here the only
//! copy is the [`EnvBlock`], wiped on drop right after the spawn.
//!
//! What this module leaves to others: which signals are forwarded ([`super::signals`]),
//! copying and masking the output ([`super::pump`]), the terminals ([`super::pty`]), what
//! the child's fds 0/1/2 are ([`super::ChildStdio`], decided in `launch`) and the raw
//! syscalls ([`super::sys`]).

use std::ffi::{CStr, OsString};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::{SigSet, SigmaskHow, Signal, sigprocmask};
use nix::sys::signalfd::SignalFd;
use nix::unistd::{ForkResult, Pid, getpgid, getpgrp, getpid, getppid};

use super::exec::Program;
use super::live::{self, Live};
use super::memfile::MemFile;
use super::pty::{self, Terminal};
use super::pump::{self, Input, Output, Pump, Report, Sink};
use super::signals::{self, Action, Received};
use super::sys::{self, CArray};
use super::{ChildStdio, EnvBlock};
use crate::error::{EXIT_ENVRUN, Error};
use crate::scrub::Scrubber;
use crate::watch;

/// After a request to stop (`SIGTERM`, `SIGINT`, `SIGHUP`, `SIGQUIT`) and the child's exit,
/// how long envrun keeps writing the child's last output to a reader that does not take it.
pub const STOP_GRACE: Duration = Duration::from_millis(500);

/// Signals that ask envrun (and so the child) to stop.
const STOP_REQUESTS: &[i32] = &[libc::SIGTERM, libc::SIGINT, libc::SIGHUP, libc::SIGQUIT];

/// How the output ended, after the child's exit.
enum Finished {
    /// All of it was written (or its reader is gone), as the pump reports.
    Written(Report),
    /// A stop request ended the child, and [`STOP_GRACE`] later some was still unwritten.
    Cut,
    /// This signal asked envrun to stop while it was still writing.
    Stopped(i32),
}

/// How the child ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Exited(i32),
    Signaled(i32),
}

/// What [`supervise`] runs.
pub struct Start {
    pub argv: Vec<OsString>,
    /// The child's whole environment.
    pub env: EnvBlock,
    /// `as_file:` files the child inherits.
    pub files: Vec<MemFile>,
    /// Masks the child's output when given; without, the child has envrun's stdio.
    pub scrubber: Option<Arc<Scrubber>>,
    pub stdio: ChildStdio,
    pub on_exit: Option<super::OnExit>,
    pub watch: Option<super::Watch>,
}

/// How the wait for the child ended.
struct Ended {
    /// The last child's status.
    status: Status,
    /// `on_change: exit` stopped it: envrun exits [`watch::EXIT_CHANGED`].
    changed: bool,
}

/// Runs `argv` as a supervised child with `env` as its whole environment, and returns the
/// exit status for envrun (after death by signal N, envrun first tries to die by N itself).
/// With a scrubber the child's output is masked; without, the child has envrun's stdio.
/// In watch mode the child may be replaced by a new one (see [`super::live`]); the status
/// is the last child's.
pub fn supervise(start: Start) -> Result<i32, Error> {
    let Start {
        argv,
        env,
        files,
        scrubber,
        stdio,
        on_exit,
        watch,
    } = start;
    let command = Program::prepare(&argv, &env)?;
    super::threads::ensure_single()?;
    let blocked = signals::block()?;
    signals::default_sigchld();
    let sfd = signals::signalfd()?;
    become_subreaper();
    let Stdio {
        child: child_fds,
        outputs,
        input,
        terminal,
        master,
    } = make_stdio(stdio)?;
    // Watching: envrun keeps copies of the child's ends for the next child, so the pump
    // sees one output across restarts.
    let kept = match &watch {
        Some(_) => Some(child_fds.try_clone()?),
        None => None,
    };
    let child = spawn(&command, &env, &blocked.original, child_fds, &files)?;
    // The child has its own copy now; this was the last one in envrun.
    drop(env);
    let masks = scrubber.as_ref().map(pump::Masks::new);
    let live = match watch {
        Some(w) => Some(Live::new(w, argv, masks.clone(), files)),
        // The child has the files; envrun needs them no more.
        None => {
            drop(files);
            None
        }
    };
    let mut run = Run {
        sfd,
        child,
        terminal,
        master,
        stop_requested: false,
        live,
        kept,
        original_mask: blocked.original,
    };
    run.resume_terminal();
    let (exited_r, exited_w) = pipe()?;
    let pump = match &masks {
        Some(m) if !outputs.is_empty() => Some(pump::start(outputs, input, m, exited_r)?),
        _ => None,
    };
    let ended = run.wait_for_child()?;
    // The last child is gone: without envrun's copies of its ends the pump sees the end of
    // its output.
    run.kept = None;
    if let Some(live) = run.live.as_mut() {
        live.files.clear();
    }
    drop(exited_w);
    let finished = run.finish(pump)?;
    run.restore_terminal();
    // The audit log records how the child ended, before envrun ends the same way.
    if let Some(f) = on_exit {
        f(ended.status);
    }
    match finished {
        // The output is incomplete: whatever the child says, this run did not succeed.
        Finished::Written(report) if report.write_failed => Ok(EXIT_ENVRUN),
        Finished::Written(_) | Finished::Cut if ended.changed => Ok(watch::EXIT_CHANGED),
        Finished::Written(_) | Finished::Cut => Ok(end_like(ended.status)),
        // Told to stop while still writing the dead child's output: end as told.
        Finished::Stopped(signo) => Ok(end_like(Status::Signaled(signo))),
    }
}

/// With `PR_SET_CHILD_SUBREAPER`, orphaned descendants are re-parented to envrun (not to
/// init), so it reaps them as PID 1 would. As PID 1 envrun already is their reaper.
fn become_subreaper() {
    if getpid().as_raw() == 1 {
        return;
    }
    if let Err(e) = nix::sys::prctl::set_child_subreaper(true) {
        crate::ui::warn(&format!(
            "prctl(PR_SET_CHILD_SUBREAPER): {e}; orphaned grandchildren will be reaped by init instead"
        ));
    }
}

/// The child's fds 0/1/2 (`None`: envrun's own, inherited), moved into place after the
/// fork; `session`: the child starts a session with fd 1 (a pty) as controlling terminal.
struct ChildFds {
    stdio: [Option<OwnedFd>; 3],
    session: bool,
}

impl ChildFds {
    fn try_clone(&self) -> Result<ChildFds, Error> {
        let mut stdio = [None, None, None];
        for (copy, fd) in stdio.iter_mut().zip(&self.stdio) {
            if let Some(fd) = fd {
                *copy = Some(dup(fd)?);
            }
        }
        Ok(ChildFds {
            stdio,
            session: self.session,
        })
    }
}

/// What [`make_stdio`] makes.
struct Stdio {
    child: ChildFds,
    outputs: Vec<Output>,
    input: Option<Input>,
    /// envrun's own terminal, when it relays keystrokes to a pty.
    terminal: Option<Terminal>,
    /// The pty's master (a duplicate, for window sizes), in pty mode.
    master: Option<OwnedFd>,
}

/// Makes what `stdio` says: the child's ends and what the pump reads and writes.
fn make_stdio(stdio: ChildStdio) -> Result<Stdio, Error> {
    let stdout = || Sink::Stdout(std::io::stdout());
    let stderr = || Sink::Stderr(std::io::stderr());
    let mut made = Stdio {
        child: ChildFds {
            stdio: [None, None, None],
            session: false,
        },
        outputs: Vec::new(),
        input: None,
        terminal: None,
        master: None,
    };
    match stdio {
        ChildStdio::Inherit => {}
        ChildStdio::Pipes { merged } => {
            let (out_r, out_w) = pipe()?;
            widen(&out_r);
            made.outputs.push(Output {
                from: out_r,
                to: stdout(),
            });
            if merged {
                made.child.stdio[2] = Some(dup(&out_w)?);
            } else {
                let (err_r, err_w) = pipe()?;
                made.outputs.push(Output {
                    from: err_r,
                    to: stderr(),
                });
                made.child.stdio[2] = Some(err_w);
            }
            made.child.stdio[1] = Some(out_w);
        }
        ChildStdio::Pty {
            stdin,
            stderr: stderr_tty,
        } => {
            let pty = pty::open(std::io::stdout().as_fd())?;
            made.child.session = true;
            if stdin {
                made.child.stdio[0] = Some(dup(&pty.slave)?);
                let keys = dup(&pty.master)?;
                nix::fcntl::fcntl(&keys, nix::fcntl::FcntlArg::F_SETFL(OFlag::O_NONBLOCK))
                    .map_err(|e| Error::io("fcntl(O_NONBLOCK)", e.into()))?;
                made.input = Some(Input {
                    from: std::io::stdin(),
                    to: keys,
                });
                made.terminal = Some(Terminal::take()?);
            }
            if stderr_tty {
                made.child.stdio[2] = Some(dup(&pty.slave)?);
            } else {
                let (err_r, err_w) = pipe()?;
                made.outputs.push(Output {
                    from: err_r,
                    to: stderr(),
                });
                made.child.stdio[2] = Some(err_w);
            }
            made.master = Some(dup(&pty.master)?);
            made.child.stdio[1] = Some(pty.slave);
            made.outputs.insert(
                0,
                Output {
                    from: pty.master,
                    to: stdout(),
                },
            );
        }
    }
    Ok(made)
}

/// A close-on-exec duplicate above fd 2.
fn dup(fd: &OwnedFd) -> Result<OwnedFd, Error> {
    // try_clone is fcntl(F_DUPFD_CLOEXEC, 3): the lowest free fd from 3 up.
    fd.try_clone()
        .map_err(|e| Error::io("fcntl(F_DUPFD_CLOEXEC)", e))
}

/// A bigger pipe for stdout means fewer, larger reads and context switches when the child
/// writes a lot (`envrun -- cat` of 1 GiB: 0.81 s with 64 KiB, 0.33 s with 1 MiB). Best
/// effort: an unprivileged user is capped by /proc/sys/fs/pipe-max-size, and the default
/// size still works. stderr keeps the default: it is rarely a bulk stream.
fn widen(pipe: &OwnedFd) {
    let _ = nix::fcntl::fcntl(pipe, nix::fcntl::FcntlArg::F_SETPIPE_SZ(pump::CHUNK as i32));
}

/// A close-on-exec pipe whose ends are both above fd 2, so that moving one onto the
/// child's fd 1 or 2 can never clobber the other (envrun may start with 0/1/2 closed).
pub fn pipe() -> Result<(OwnedFd, OwnedFd), Error> {
    let (r, w) = nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(|e| Error::io("pipe2", e.into()))?;
    Ok((cloexec_above_stdio(r)?, cloexec_above_stdio(w)?))
}

/// `fd`, or a duplicate of it, that is close-on-exec and above fd 2.
pub fn cloexec_above_stdio(fd: OwnedFd) -> Result<OwnedFd, Error> {
    if fd.as_raw_fd() > 2 {
        nix::fcntl::fcntl(
            &fd,
            nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
        )
        .map_err(|e| Error::io("fcntl(FD_CLOEXEC)", e.into()))?;
        return Ok(fd);
    }
    dup(&fd)
}

/// Forks and execs the child. Returns its PID once `execve` has succeeded, or the error
/// `execve` failed with (reported through a close-on-exec pipe: end of file means success).
fn spawn(
    command: &Program,
    env: &EnvBlock,
    original_mask: &SigSet,
    fds: ChildFds,
    files: &[MemFile],
) -> Result<Pid, Error> {
    let argv = CArray::new(command.args.iter().map(|a| a.as_c_str()));
    let envp = CArray::new(env.as_cstrs());
    let files: Vec<BorrowedFd<'_>> = files.iter().map(AsFd::as_fd).collect();
    let (report_r, report_w) = pipe()?;
    let parent = getpid();
    match sys::fork() {
        Ok(ForkResult::Child) => {
            let setup = ChildSetup {
                parent,
                path: &command.path,
                argv: &argv,
                envp: &envp,
                mask: original_mask,
                fds: &fds,
                files: &files,
                report: &report_w,
            };
            exec_child(&setup)
        }
        Ok(ForkResult::Parent { child }) => {
            drop(fds);
            drop(report_w);
            match read_exec_report(&report_r) {
                None => Ok(child),
                Some(errno) => {
                    // The child has _exited; reap it so it does not linger as a zombie.
                    let _ = nix::sys::wait::waitpid(child, None);
                    Err(command.exec_error(std::io::Error::from_raw_os_error(errno)))
                }
            }
        }
        Err(e) => Err(Error::io("fork", e.into())),
    }
}

/// End of file: `execve` succeeded. Four bytes: the errno it failed with.
fn read_exec_report(fd: &OwnedFd) -> Option<i32> {
    let mut buf = [0u8; 4];
    let mut got = 0;
    while got < buf.len() {
        match nix::unistd::read(fd, &mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(Errno::EINTR) => {}
            Err(e) => return Some(e as i32),
        }
    }
    (got == buf.len()).then(|| i32::from_ne_bytes(buf))
}

/// Everything the child needs between fork and exec, prepared by the parent.
struct ChildSetup<'a> {
    parent: Pid,
    path: &'a CStr,
    argv: &'a CArray<'a>,
    envp: &'a CArray<'a>,
    mask: &'a SigSet,
    fds: &'a ChildFds,
    /// `as_file:` files, kept across the exec.
    files: &'a [BorrowedFd<'a>],
    report: &'a OwnedFd,
}

/// In the forked child: set up and exec. Only async-signal-safe calls, no allocation.
fn exec_child(s: &ChildSetup) -> ! {
    let fail = |errno: Errno| report_and_exit(s.report, errno);
    // If envrun dies (even by SIGKILL) the child is killed: it holds the secrets and would
    // otherwise write to a pipe nobody masks.
    if let Err(e) = nix::sys::prctl::set_pdeathsig(Signal::SIGKILL) {
        fail(e);
    }
    // envrun may have died between fork and prctl; then the signal will never come.
    if getppid() != s.parent {
        fail(Errno::ESRCH);
    }
    if s.fds.session
        && let Err(e) = nix::unistd::setsid()
    {
        fail(e);
    }
    let [stdin, stdout, stderr] = &s.fds.stdio;
    if let Some(fd) = stdin
        && let Err(e) = nix::unistd::dup2_stdin(fd.as_fd())
    {
        fail(e);
    }
    if let Some(fd) = stdout
        && let Err(e) = nix::unistd::dup2_stdout(fd.as_fd())
    {
        fail(e);
    }
    if let Some(fd) = stderr
        && let Err(e) = nix::unistd::dup2_stderr(fd.as_fd())
    {
        fail(e);
    }
    if s.fds.session
        && let Err(e) = sys::set_controlling_terminal(std::io::stdout().as_fd())
    {
        fail(e);
    }
    // The mask envrun started with, as in exec mode. std ignores SIGPIPE in every Rust
    // program; the child gets the default back (as `std::process::Command` does).
    if let Err(e) = super::memfile::inherit(s.files) {
        fail(e);
    }
    if let Err(e) = sigprocmask(SigmaskHow::SIG_SETMASK, Some(s.mask), None) {
        fail(e);
    }
    signals::default_sigpipe();
    fail(sys::execve(s.path, s.argv, s.envp))
}

/// In the forked child: tells the parent why the exec did not happen, and exits.
fn report_and_exit(report: &OwnedFd, errno: Errno) -> ! {
    let _ = nix::unistd::write(report, &(errno as i32).to_ne_bytes());
    sys::exit_now(EXIT_ENVRUN)
}

/// The supervisor's state while the child runs.
struct Run {
    sfd: SignalFd,
    child: Pid,
    /// envrun's own terminal, in raw mode while the child runs on a pty.
    terminal: Option<Terminal>,
    /// The pty's master, for window sizes.
    master: Option<OwnedFd>,
    /// A signal asking to stop has arrived: the final drain is bounded ([`STOP_GRACE`]).
    stop_requested: bool,
    /// Watch mode's state.
    live: Option<Live>,
    /// Watch mode: envrun's copies of the child's fds 0/1/2, for the next child.
    kept: Option<ChildFds>,
    /// The signal mask envrun started with, which every child gets.
    original_mask: SigSet,
}

impl Run {
    /// The main loop: forward signals, reap zombies, and in watch mode reload and replace
    /// the child, until the (last) child has exited.
    fn wait_for_child(&mut self) -> Result<Ended, Error> {
        let me = getpid();
        loop {
            let timeout = self
                .live
                .as_ref()
                .map_or(PollTimeout::NONE, |l| l.timeout(Instant::now()));
            let (signalled, reloaded) = {
                let mut fds = vec![PollFd::new(self.sfd.as_fd(), PollFlags::POLLIN)];
                if let Some(done) = self.live.as_ref().and_then(Live::worker_done) {
                    fds.push(PollFd::new(done, PollFlags::POLLIN));
                }
                match poll(&mut fds, timeout) {
                    Ok(_) | Err(Errno::EINTR) => {}
                    Err(e) => return Err(Error::io("poll", e.into())),
                }
                let ready = |f: &PollFd| f.revents().is_some_and(|r| !r.is_empty());
                (ready(&fds[0]), fds.get(1).is_some_and(ready))
            };
            if signalled {
                let received = signals::next(&self.sfd)?;
                if let Some(ended) = self.on_signal(&received, me)? {
                    return Ok(ended);
                }
            }
            if reloaded && let Some(live) = self.live.as_mut() {
                match live.reloaded(self.stop_requested)? {
                    live::Act::Signal(signo) => forward(self.child, signo),
                    live::Act::Nothing => {}
                }
            }
            if let Some(live) = self.live.as_mut()
                && live.on_time(Instant::now())?
            {
                // It did not stop within --stop-timeout.
                forward(self.child, libc::SIGKILL);
            }
        }
    }

    /// One signal: forward it, reap, or (watch mode) reload. Returns how the wait ended
    /// once the last child has exited.
    fn on_signal(&mut self, received: &Received, me: Pid) -> Result<Option<Ended>, Error> {
        if received.signo == libc::SIGHUP
            && received.sent_by_another_process(me)
            && let Some(live) = self.live.as_mut()
            && live.settings().reload_on_hup
        {
            // `--reload-on-hup`: the SIGHUP is for envrun, not passed on.
            live.request()?;
            return Ok(None);
        }
        self.on_any(received);
        let child = self.child;
        match signals::classify(received, me, || child_in_our_group(child)) {
            Action::Reap => {
                if let Some(status) = self.reap()? {
                    return self.after_exit(status);
                }
            }
            Action::Forward(signo) => forward(child, signo),
            Action::Drop => {}
            Action::Fatal(signo) => self.die(signo),
        }
        Ok(None)
    }

    /// The child has exited: the wait is over, unless watch mode stopped it to start it
    /// again (and nobody asked envrun to stop meanwhile).
    fn after_exit(&mut self, status: Status) -> Result<Option<Ended>, Error> {
        let stopping = self.live.as_mut().and_then(|l| l.stopping.take());
        let then = match stopping {
            None => {
                return Ok(Some(Ended {
                    status,
                    changed: false,
                }));
            }
            Some(s) => s.then,
        };
        match then {
            live::Then::Exit => Ok(Some(Ended {
                status,
                changed: true,
            })),
            live::Then::Restart { .. } if self.stop_requested => Ok(Some(Ended {
                status,
                changed: false,
            })),
            live::Then::Restart { env, files } => {
                let live = self.live.as_mut().expect("stopping is watch mode's");
                let command = Program::prepare(&live.argv, &env)?;
                let fds = match &self.kept {
                    Some(k) => k.try_clone()?,
                    None => ChildFds {
                        stdio: [None, None, None],
                        session: false,
                    },
                };
                // Only the pump thread runs beside this one (the reload thread has been
                // joined); the forked child makes only async-signal-safe calls.
                self.child = spawn(&command, &env, &self.original_mask, fds, &files)?;
                drop(env);
                // The old child's files go; the new child's are kept for the next change.
                live.files = files;
                Ok(None)
            }
        }
    }

    /// What every received signal means for envrun itself, whoever sent it.
    fn on_any(&mut self, received: &Received) {
        match received.signo {
            libc::SIGWINCH => self.sync_size(),
            // Continued (`fg`): raw mode again, and the size may have changed meanwhile.
            libc::SIGCONT => self.resume_terminal(),
            s if STOP_REQUESTS.contains(&s) => self.stop_requested = true,
            _ => {}
        }
    }

    /// After the child's exit: waits for the pump to write what is left, still reading
    /// signals (and reaping), so envrun never hangs on a reader that has stopped reading.
    /// A request to stop ends the wait at once (envrun then dies by it: the output is
    /// incomplete), or [`STOP_GRACE`] after the child's exit when it came earlier (it is
    /// what ended the child, and envrun ends as the child did).
    fn finish(&mut self, pump: Option<Pump>) -> Result<Finished, Error> {
        let Some(pump) = pump else {
            return Ok(Finished::Written(Report::default()));
        };
        let deadline = self.stop_requested.then(|| Instant::now() + STOP_GRACE);
        loop {
            let timeout = match deadline {
                None => PollTimeout::NONE,
                Some(d) => {
                    let left = d.saturating_duration_since(Instant::now());
                    PollTimeout::try_from(left.as_millis() + 1).unwrap_or(PollTimeout::MAX)
                }
            };
            let mut fds = [
                PollFd::new(pump.done.as_fd(), PollFlags::POLLIN),
                PollFd::new(self.sfd.as_fd(), PollFlags::POLLIN),
            ];
            match poll(&mut fds, timeout) {
                Ok(_) | Err(Errno::EINTR) => {}
                Err(e) => return Err(Error::io("poll", e.into())),
            }
            let ready = |f: &PollFd| f.revents().is_some_and(|r| !r.is_empty());
            let (done, signalled) = (ready(&fds[0]), ready(&fds[1]));
            if done {
                // The thread has returned, so join does not wait. It only reads and writes
                // and cannot panic on bad input.
                return Ok(Finished::Written(pump.thread.join().unwrap_or_default()));
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return Ok(Finished::Cut);
            }
            if signalled {
                let received = signals::next(&self.sfd)?;
                self.on_any(&received);
                match signals::classify(&received, getpid(), || true) {
                    Action::Reap => {
                        self.reap()?;
                    }
                    Action::Fatal(signo) => self.die(signo),
                    _ if STOP_REQUESTS.contains(&received.signo) => {
                        return Ok(Finished::Stopped(received.signo));
                    }
                    // The child is gone: there is nobody to forward to.
                    _ => {}
                }
            }
        }
    }

    /// Reaps every child that has changed state (the supervised one and any orphan
    /// re-parented to envrun). Returns the supervised child's status once it has exited.
    fn reap(&mut self) -> Result<Option<Status>, Error> {
        let mut status = None;
        loop {
            match sys::wait_any() {
                Ok(None) => return Ok(status),
                Ok(Some((pid, raw))) if pid == self.child => {
                    if libc::WIFEXITED(raw) {
                        status = Some(Status::Exited(libc::WEXITSTATUS(raw)));
                    } else if libc::WIFSIGNALED(raw) {
                        status = Some(Status::Signaled(libc::WTERMSIG(raw)));
                    } else if libc::WIFSTOPPED(raw) {
                        self.stop_with_child(libc::WSTOPSIG(raw));
                    }
                }
                // An orphaned descendant: reaping it is all there is to do.
                Ok(Some(_)) => {}
                Err(e) if e.raw_os_error() == Some(libc::ECHILD) => return Ok(status),
                Err(e) if e.raw_os_error() == Some(libc::EINTR) => {}
                Err(e) => return Err(Error::io("waitpid", e)),
            }
        }
    }

    /// Job control: when the child is stopped from the terminal (Ctrl-Z) or by a background
    /// read or write, envrun stops too, so the shell sees the whole job stopped and gets its
    /// terminal back (restored first). `fg`/`bg` continue envrun, which passes the
    /// `SIGCONT` on. A plain SIGSTOP of the child alone (a debugger) is not mirrored. As
    /// PID 1 envrun cannot stop itself and does not try.
    fn stop_with_child(&mut self, signo: i32) {
        let job_control = [libc::SIGTSTP, libc::SIGTTIN, libc::SIGTTOU];
        if job_control.contains(&signo) && getpid().as_raw() != 1 {
            self.restore_terminal();
            let _ = nix::sys::signal::kill(getpid(), Signal::SIGSTOP);
        }
    }

    /// Raw mode on envrun's terminal (if it relays keys to a pty) and the current size.
    fn resume_terminal(&mut self) {
        if let Some(t) = self.terminal.as_mut() {
            t.enter_raw();
        }
        self.sync_size();
    }

    fn restore_terminal(&mut self) {
        if let Some(t) = self.terminal.as_mut() {
            t.restore();
        }
    }

    fn sync_size(&self) {
        if let Some(master) = &self.master {
            pty::sync_size(std::io::stdout().as_fd(), master.as_fd());
        }
    }

    /// A fault signal of envrun's own: the terminal back, then die by it.
    fn die(&mut self, signo: i32) -> ! {
        self.restore_terminal();
        signals::die_by(signo);
        std::process::exit(128 + signo)
    }
}

/// Whether the child still shares envrun's process group (so it gets terminal signals).
fn child_in_our_group(child: Pid) -> bool {
    // If it cannot be asked, it is gone or going: forwarding would not help.
    getpgid(Some(child)).map_or(true, |g| g == getpgrp())
}

fn forward(child: Pid, signo: i32) {
    if let Err(e) = signals::send(child, signo)
        && e.raw_os_error() != Some(libc::ESRCH)
    {
        crate::ui::warn(&format!("kill({}, {signo}): {e}", child.as_raw()));
    }
}

/// The exit status for envrun. After death by signal N, envrun first dies by N itself, so
/// that a shell sees a real signal death (bash stops a script's loop on a child killed by
/// SIGINT, not on one that exited 130); as PID 1 the kernel ignores a signal to itself,
/// and envrun exits 128+N.
fn end_like(status: Status) -> i32 {
    match status {
        Status::Exited(code) => code,
        Status::Signaled(signo) => {
            if getpid().as_raw() != 1 {
                signals::die_by(signo);
            }
            128 + signo
        }
    }
}
