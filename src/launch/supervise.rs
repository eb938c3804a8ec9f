//! Supervise mode: envrun starts the command as its child and stays as its parent, as tini
//! does, so that it can mask the child's output.
//!
//! [`supervise`] is the list of steps; each is a small function that names the syscall it
//! reports on failure. In order: look the program up (before anything changes, so a typo
//! costs nothing), block the signals envrun takes over, become a subreaper, make the
//! child's stdout and stderr, fork and exec the child with the signal mask envrun started
//! with, wipe the environment block, start the output pump, then wait: forward signals,
//! reap zombies, and when the child has exited, finish the output and end as it did.
//!
//! The child is started with `fork` + `execve` rather than `std::process::Command`, because
//! `Command` copies the environment into buffers of its own that nobody wipes; here the only
//! copy is the [`EnvBlock`], wiped on drop right after the spawn.
//!
//! What this module leaves to others: which signals are forwarded ([`super::signals`]),
//! copying and masking the output ([`super::pump`]), and what the child's fds 0/1/2 are
//! ([`super::ChildStdio`], decided in `launch`).

use std::ffi::{CString, OsString, c_char};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::sync::Arc;

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::sys::signal::{SigSet, SigmaskHow, Signal, sigprocmask};
use nix::sys::signalfd::SignalFd;
use nix::unistd::{ForkResult, Pid, getpgid, getpgrp, getpid, getppid};

use super::exec::Program;
use super::pump::{self, Output, Sink};
use super::signals::{self, Action};
use super::{ChildStdio, EnvBlock};
use crate::error::{EXIT_ENVRUN, Error};
use crate::scrub::Scrubber;

/// How the child ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Exited(i32),
    Signaled(i32),
}

/// Runs `argv` as a supervised child with `env` as its whole environment, and returns the
/// exit status for envrun (after death by signal N, envrun first tries to die by N itself).
pub fn supervise(
    argv: &[OsString],
    env: EnvBlock,
    scrubber: &Arc<Scrubber>,
    stdio: ChildStdio,
) -> Result<i32, Error> {
    let command = Program::prepare(argv, &env)?;
    super::threads::ensure_single()?;
    let blocked = signals::block()?;
    signals::default_sigchld();
    let sfd = signals::signalfd()?;
    become_subreaper();
    let (child_fds, outputs) = make_stdio(stdio)?;
    let child = spawn(&command, &env, &blocked.original, child_fds)?;
    // The child has its own copy now; this was the last one in envrun.
    drop(env);
    let (exited_r, exited_w) = pipe()?;
    let pump = pump::start(outputs, scrubber, exited_r)?;
    let status = wait_for_child(&sfd, child)?;
    drop(exited_w);
    // The pump thread only reads and writes; it cannot panic on bad input.
    let _ = pump.join();
    Ok(end_like(status))
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

/// The child's ends of its stdio, moved onto its fds 0/1/2 after the fork.
struct ChildFds {
    stdout: OwnedFd,
    stderr: OwnedFd,
}

/// Makes what `stdio` says: the child's ends and the outputs the pump reads.
fn make_stdio(stdio: ChildStdio) -> Result<(ChildFds, Vec<Output>), Error> {
    match stdio {
        ChildStdio::Pipes => {
            let (out_r, out_w) = pipe()?;
            let (err_r, err_w) = pipe()?;
            widen(&out_r);
            let outputs = vec![
                Output {
                    from: out_r,
                    to: Sink::Stdout(std::io::stdout()),
                },
                Output {
                    from: err_r,
                    to: Sink::Stderr(std::io::stderr()),
                },
            ];
            Ok((
                ChildFds {
                    stdout: out_w,
                    stderr: err_w,
                },
                outputs,
            ))
        }
    }
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
fn pipe() -> Result<(OwnedFd, OwnedFd), Error> {
    let (r, w) = nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(|e| Error::io("pipe2", e.into()))?;
    Ok((above_stdio(r)?, above_stdio(w)?))
}

fn above_stdio(fd: OwnedFd) -> Result<OwnedFd, Error> {
    if fd.as_raw_fd() > 2 {
        return Ok(fd);
    }
    // try_clone is fcntl(F_DUPFD_CLOEXEC, 3): the lowest free fd from 3 up.
    fd.try_clone()
        .map_err(|e| Error::io("fcntl(F_DUPFD_CLOEXEC)", e))
}

/// Forks and execs the child. Returns its PID once `execve` has succeeded, or the error
/// `execve` failed with (reported through a close-on-exec pipe: end of file means success).
#[allow(unsafe_code)]
fn spawn(
    command: &Program,
    env: &EnvBlock,
    original_mask: &SigSet,
    fds: ChildFds,
) -> Result<Pid, Error> {
    let argv: Vec<*const c_char> = command
        .args
        .iter()
        .map(|a| a.as_ptr())
        .chain(std::iter::once(std::ptr::null()))
        .collect();
    let envp: Vec<*const c_char> = env
        .as_cstrs()
        .iter()
        .map(|e| e.as_ptr())
        .chain(std::iter::once(std::ptr::null()))
        .collect();
    let (report_r, report_w) = pipe()?;
    let parent = getpid();
    // SAFETY: envrun has a single thread here (the resolver's threads have been joined and
    // the pump starts after this), so the child cannot inherit a lock held by another
    // thread. The child only makes async-signal-safe syscalls and then execs or _exits.
    match unsafe { nix::unistd::fork() } {
        Ok(ForkResult::Child) => {
            let setup = ChildSetup {
                parent,
                path: &command.path,
                argv: &argv,
                envp: &envp,
                mask: original_mask,
                fds: &fds,
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
    path: &'a CString,
    argv: &'a [*const c_char],
    envp: &'a [*const c_char],
    mask: &'a SigSet,
    fds: &'a ChildFds,
    report: &'a OwnedFd,
}

/// In the forked child: set up and exec. Only async-signal-safe calls, no allocation.
#[allow(unsafe_code)]
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
    if let Err(e) = nix::unistd::dup2_stdout(s.fds.stdout.as_fd()) {
        fail(e);
    }
    if let Err(e) = nix::unistd::dup2_stderr(s.fds.stderr.as_fd()) {
        fail(e);
    }
    // The mask envrun started with, as in exec mode. std ignores SIGPIPE in every Rust
    // program; the child gets the default back (as `std::process::Command` does).
    if let Err(e) = sigprocmask(SigmaskHow::SIG_SETMASK, Some(s.mask), None) {
        fail(e);
    }
    signals::default_sigpipe();
    // SAFETY: execve gets NUL-terminated strings and NULL-terminated pointer arrays that
    // the parent built and that live until the exec (this frame never returns).
    unsafe { libc::execve(s.path.as_ptr(), s.argv.as_ptr(), s.envp.as_ptr()) };
    fail(Errno::last())
}

/// In the forked child: tells the parent why the exec did not happen, and exits.
#[allow(unsafe_code)]
fn report_and_exit(report: &OwnedFd, errno: Errno) -> ! {
    let _ = nix::unistd::write(report, &(errno as i32).to_ne_bytes());
    // SAFETY: _exit ends the process without running atexit handlers or unwinding, which
    // is what a forked child that failed to exec must do.
    unsafe { libc::_exit(EXIT_ENVRUN) }
}

/// The main loop: forward signals, reap zombies, until the child has exited.
fn wait_for_child(sfd: &SignalFd, child: Pid) -> Result<Status, Error> {
    let me = getpid();
    loop {
        let received = signals::next(sfd)?;
        match signals::classify(&received, me, || child_in_our_group(child)) {
            Action::Reap => {
                if let Some(status) = reap(child)? {
                    return Ok(status);
                }
            }
            Action::Forward(signo) => forward(child, signo),
            Action::Drop => {}
        }
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

/// Reaps every child that has changed state (the supervised one and any orphan re-parented
/// to envrun). Returns the supervised child's status once it has exited.
fn reap(child: Pid) -> Result<Option<Status>, Error> {
    let mut status = None;
    loop {
        match signals::wait_any() {
            Ok(None) => return Ok(status),
            Ok(Some((pid, raw))) if pid == child => {
                if libc::WIFEXITED(raw) {
                    status = Some(Status::Exited(libc::WEXITSTATUS(raw)));
                } else if libc::WIFSIGNALED(raw) {
                    status = Some(Status::Signaled(libc::WTERMSIG(raw)));
                } else if libc::WIFSTOPPED(raw) {
                    stop_with_child(libc::WSTOPSIG(raw));
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
/// read or write, envrun stops too, so the shell sees the whole job stopped and gives the
/// terminal back. `fg`/`bg` continue both (the shell signals the whole process group).
/// A plain SIGSTOP of the child alone (a debugger) is not mirrored. As PID 1 envrun
/// cannot stop itself and does not try.
fn stop_with_child(signo: i32) {
    let job_control = [libc::SIGTSTP, libc::SIGTTIN, libc::SIGTTOU];
    if job_control.contains(&signo) && getpid().as_raw() != 1 {
        let _ = nix::sys::signal::kill(getpid(), Signal::SIGSTOP);
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
