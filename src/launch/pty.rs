//! Pseudo-terminal mode: the child gets a terminal of its own, and envrun sits between it
//! and the user's terminal, masking what the child writes.
//!
//! This module owns the two terminals: [`open`] makes the pty with the outer terminal's
//! settings and size; [`Terminal`] puts the outer terminal in raw mode (so every key,
//! Ctrl-C included, reaches the pty's line discipline as a byte and acts on the child
//! exactly once) and restores it on every way out, including unwinding; [`sync_size`]
//! copies the window size. Moving bytes between them is the pump's job, and what the child
//! does with the slave (session, controlling terminal, fds) is `supervise`'s.
//!
//! Known limit: the child is the session leader of the pty, and its process group has no
//! parent inside that session, so the kernel treats it as orphaned and ignores Ctrl-Z for
//! it (as under `script`). A shell as the child does job control for its own jobs; a
//! program run directly cannot be suspended. Lifting this takes a monitor process between
//! envrun and the command (sudo's design).

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use nix::sys::termios::{self, SetArg, Termios};
use nix::unistd::{getpgrp, tcgetpgrp};

use super::sys;
use crate::error::Error;

/// A new pseudo-terminal: the master envrun keeps, the slave the child gets.
pub struct Pty {
    pub master: OwnedFd,
    pub slave: OwnedFd,
}

/// Opens a pty with the settings and window size of `outer` (envrun's own terminal), so
/// the child sees the same line endings, erase character and size as without envrun.
pub fn open(outer: BorrowedFd<'_>) -> Result<Pty, Error> {
    let settings = termios::tcgetattr(outer).ok();
    let size = sys::window_size(outer);
    let pair = nix::pty::openpty(size.as_ref(), settings.as_ref())
        .map_err(|e| Error::io("openpty", e.into()))?;
    Ok(Pty {
        master: super::supervise::cloexec_above_stdio(pair.master)?,
        slave: super::supervise::cloexec_above_stdio(pair.slave)?,
    })
}

/// Copies the window size of `outer` to the pty (the kernel then sends `SIGWINCH` to the
/// child's foreground process group, if the size changed).
pub fn sync_size(outer: BorrowedFd<'_>, master: BorrowedFd<'_>) {
    if let Some(size) = sys::window_size(outer) {
        let _ = sys::set_window_size(master, &size);
    }
}

/// envrun's own terminal while the child runs on a pty: in raw mode, and back as it was
/// when this is restored or dropped.
pub struct Terminal {
    stdin: std::io::Stdin,
    saved: Termios,
    raw: bool,
}

impl Terminal {
    /// Takes over envrun's stdin (a terminal), saving its settings; raw mode starts with
    /// [`Terminal::enter_raw`].
    pub fn take() -> Result<Terminal, Error> {
        let stdin = std::io::stdin();
        let saved =
            termios::tcgetattr(stdin.as_fd()).map_err(|e| Error::io("tcgetattr", e.into()))?;
        Ok(Terminal {
            stdin,
            saved,
            raw: false,
        })
    }

    /// Puts the terminal in raw mode, if envrun is in its foreground (from the background
    /// it would change the settings of whatever job is in front).
    pub fn enter_raw(&mut self) {
        let fd = self.stdin.as_fd();
        if !in_foreground(fd) {
            return;
        }
        let mut raw = self.saved.clone();
        termios::cfmakeraw(&mut raw);
        if termios::tcsetattr(fd, SetArg::TCSANOW, &raw).is_ok() {
            self.raw = true;
        }
    }

    /// Puts the saved settings back (before envrun stops, exits or dies).
    pub fn restore(&mut self) {
        if self.raw {
            // TCSANOW, not TCSADRAIN: a terminal stopped with Ctrl-S never drains, and
            // envrun must not hang on its way out.
            let _ = termios::tcsetattr(self.stdin.as_fd(), SetArg::TCSANOW, &self.saved);
            self.raw = false;
        }
    }
}

impl Drop for Terminal {
    fn drop(&mut self) {
        self.restore();
    }
}

/// Whether envrun's process group is the terminal's foreground group.
pub fn in_foreground(fd: BorrowedFd<'_>) -> bool {
    tcgetpgrp(fd).is_ok_and(|g| g == getpgrp())
}
