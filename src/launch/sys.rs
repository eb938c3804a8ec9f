//! Every raw system call of envrun that the compiler cannot check, in one room.
//!
//! This is the only module of envrun allowed `unsafe` (everywhere else it is forbidden).
//! Each function wraps one call (or one short sequence that must stay together) in a safe
//! signature; each `unsafe` block says which hazard it rules out. Callers decide *when* to
//! call these (see `supervise`); this module only makes each call sound.
//!
//! What it leaves to others: the policy (which signals, which fds, what the child's stdio
//! is) and the safe wrappers `nix` already provides (prctl, setsid, termios, pipes, dup2).

use std::ffi::{CStr, c_char};
use std::io;
use std::marker::PhantomData;
use std::os::fd::{AsRawFd, BorrowedFd};

use nix::errno::Errno;
use nix::pty::Winsize;
use nix::unistd::{ForkResult, Pid};

/// Forks the process.
///
/// The child of a fork in a multi-threaded program may only make async-signal-safe calls
/// until it execs or exits (another thread may have held the allocator's lock). The only
/// caller, `supervise::spawn`, meets that: its child makes raw syscalls on memory the parent
/// prepared, then `execve`s or `_exit`s. (envrun is also single-threaded at that point, but
/// that is required for blocking signals, not for this.)
pub fn fork() -> nix::Result<ForkResult> {
    // SAFETY: see above; the child side never allocates, locks or unwinds.
    unsafe { nix::unistd::fork() }
}

/// A NULL-terminated array of pointers to C strings, for `execve`; borrows the strings, so
/// they outlive it. Built before a fork: the child must not allocate.
pub struct CArray<'a> {
    ptrs: Vec<*const c_char>,
    strings: PhantomData<&'a CStr>,
}

impl<'a> CArray<'a> {
    pub fn new(strings: impl IntoIterator<Item = &'a CStr>) -> CArray<'a> {
        let ptrs = strings
            .into_iter()
            .map(CStr::as_ptr)
            .chain(std::iter::once(std::ptr::null()))
            .collect();
        CArray {
            ptrs,
            strings: PhantomData,
        }
    }
}

/// Replaces the process image; returns only on failure, with the reason.
pub fn execve(path: &CStr, argv: &CArray, envp: &CArray) -> Errno {
    // SAFETY: `path` is NUL-terminated; `argv` and `envp` are NULL-terminated arrays of
    // pointers to NUL-terminated strings that the borrows keep alive until the call returns
    // (on success it never does). No allocation: safe between fork and exec.
    unsafe { libc::execve(path.as_ptr(), argv.ptrs.as_ptr(), envp.ptrs.as_ptr()) };
    Errno::last()
}

/// Ends the process at once, without atexit handlers, flushing or unwinding: what a forked
/// child that failed to exec must do (the parent's buffers are not its to flush).
pub fn exit_now(code: i32) -> ! {
    // SAFETY: _exit takes an integer and does not return.
    unsafe { libc::_exit(code) }
}

/// Gives signal `signo` its default action back.
pub fn default_action(signo: i32) {
    // SAFETY: SIG_DFL installs no handler, so no code of ours can run asynchronously;
    // signal(2) is async-signal-safe (the forked child calls this for SIGPIPE).
    unsafe { libc::signal(signo, libc::SIG_DFL) };
}

/// Reaps one child that has exited or stopped, without blocking: its PID and raw wait
/// status, or `None` if no child has changed state. (nix's `waitpid` cannot decode a death
/// by a real-time signal.)
pub fn wait_any() -> io::Result<Option<(Pid, i32)>> {
    let mut status: libc::c_int = 0;
    // SAFETY: waitpid writes one int into `status`, which lives on this frame.
    let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG | libc::WUNTRACED) };
    match pid {
        -1 => Err(io::Error::last_os_error()),
        0 => Ok(None),
        pid => Ok(Some((Pid::from_raw(pid), status))),
    }
}

/// Sends signal number `signo` (real-time ones included, which `nix::Signal` cannot name).
pub fn kill(pid: Pid, signo: i32) -> io::Result<()> {
    // SAFETY: kill(2) takes two integers and touches no memory of ours.
    if unsafe { libc::kill(pid.as_raw(), signo) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Ends the process by signal `signo`: default action, raise (the signal is blocked, so it
/// stays pending), unblock. Returns if the signal did not end the process: as PID 1 of a
/// namespace the kernel ignores signals a process sends itself.
pub fn die_by(signo: i32) {
    let mut only = std::mem::MaybeUninit::<libc::sigset_t>::uninit();
    // SAFETY: SIG_DFL installs no handler, so nothing of ours runs asynchronously after it.
    // sigemptyset initialises the set before sigaddset and pthread_sigmask read it; every
    // pointer is to this frame. (nix's SigSet cannot name real-time signals, hence libc.)
    unsafe {
        libc::signal(signo, libc::SIG_DFL);
        libc::raise(signo);
        libc::sigemptyset(only.as_mut_ptr());
        libc::sigaddset(only.as_mut_ptr(), signo);
        libc::pthread_sigmask(libc::SIG_UNBLOCK, only.as_ptr(), std::ptr::null_mut());
    }
}

/// Makes the terminal `fd` the controlling terminal of the calling session leader.
pub fn set_controlling_terminal(fd: BorrowedFd<'_>) -> nix::Result<()> {
    // SAFETY: TIOCSCTTY takes an integer argument (0: do not steal it from another
    // session), not a pointer. Async-signal-safe: the forked child calls it.
    let rc = unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCSCTTY, 0) };
    Errno::result(rc).map(drop)
}

/// The window size of the terminal `fd`, or `None` if it is not a terminal.
pub fn window_size(fd: BorrowedFd<'_>) -> Option<Winsize> {
    let mut size = Winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCGWINSZ writes one `struct winsize` through the pointer, which points to a
    // value of exactly that type on this frame.
    let rc = unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCGWINSZ, &mut size) };
    (rc == 0).then_some(size)
}

/// Sets the window size of the terminal `fd` (the kernel sends `SIGWINCH` to its
/// foreground process group when the size changed).
pub fn set_window_size(fd: BorrowedFd<'_>, size: &Winsize) -> nix::Result<()> {
    // SAFETY: TIOCSWINSZ reads one `struct winsize` through the pointer, which points to a
    // live value of exactly that type.
    let rc = unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCSWINSZ, size as *const Winsize) };
    Errno::result(rc).map(drop)
}

/// Whether `a` and `b` refer to the same open file description (as after `2>&1`), asked
/// with kcmp(2). `None` when the kernel cannot say (kcmp not built in, or not permitted).
pub fn same_open_file(a: BorrowedFd<'_>, b: BorrowedFd<'_>) -> Option<bool> {
    const KCMP_FILE: libc::c_long = 0;
    let pid = libc::c_long::from(std::process::id() as libc::pid_t);
    // SAFETY: kcmp with KCMP_FILE takes integers only (two PIDs, the type, two fds) and
    // touches no memory of ours.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_kcmp,
            pid,
            pid,
            KCMP_FILE,
            libc::c_long::from(a.as_raw_fd()),
            libc::c_long::from(b.as_raw_fd()),
        )
    };
    match rc {
        0 => Some(true),
        1..=3 => Some(false),
        _ => None,
    }
}
