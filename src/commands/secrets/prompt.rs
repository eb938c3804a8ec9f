//! The prompt `secrets set` shows when its standard input is a terminal: on `/dev/tty`, with
//! echo off, and with the terminal restored on every way out.
//!
//! The terminal is put in non-canonical mode with `ISIG` off, so Ctrl-C arrives as a byte
//! rather than as a signal that would kill envrun with echo still off: envrun restores the
//! terminal first and then raises SIGINT on itself, so the shell still sees a death by
//! SIGINT. SIGTERM, SIGHUP and SIGQUIT sent from outside are blocked while the terminal is
//! changed and polled through a signalfd, with the same restore-then-raise. A guard restores
//! the terminal on errors and panics. Line editing is minimal: Backspace, Ctrl-U (erase
//! all), Ctrl-D (end of input), Enter. Any other key that sends a control character or an
//! escape sequence (arrows, Home, Delete, Tab, function keys) makes the value refused once
//! Enter is pressed: the screen would not match the bytes (Left-arrow then typing does not
//! insert, it appends `ESC [ D`). Piped stdin is not edited at all: it is stored byte for
//! byte.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::AsFd;
use std::time::{Duration, Instant};

use nix::sys::signal::{SigSet, SigmaskHow, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::termios::{self, LocalFlags, SetArg, SpecialCharacterIndices, Termios};
use zeroize::Zeroizing;

use crate::error::Error;
use crate::secret::Secret;

/// How long one read waits before envrun checks for signals (tenths of a second).
const POLL_DECISECONDS: u8 = 2;

/// Asks for a value on `/dev/tty` without echoing it. `max` bounds its length in bytes.
pub fn read_hidden(prompt: &str, max: usize) -> Result<Secret, Error> {
    let tty_err = |e: io::Error| Error::io("prompt on /dev/tty", e);
    let mut tty = OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/tty")
        .map_err(tty_err)?;
    let guard = Guard::enter(&tty).map_err(tty_err)?;
    tty.write_all(prompt.as_bytes()).map_err(tty_err)?;

    // Sized before it is filled, so pushing never reallocates and leaves copies behind.
    let mut value = Zeroizing::new(Vec::with_capacity(max + 1));
    let mut keys = Keys::default();
    let mut chunk = Zeroizing::new([0u8; 256]);
    let outcome = loop {
        if let Some(signal) = guard.pending_signal() {
            break Outcome::Signal(signal);
        }
        let started = Instant::now();
        let n = match tty.read(&mut chunk[..]) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(tty_err(e)),
        };
        // With VMIN=0 a read returns 0 after the VTIME timeout; returning 0 at once means the
        // terminal is gone (hang-up).
        if n == 0 {
            if started.elapsed() < Duration::from_millis(u64::from(POLL_DECISECONDS) * 50) {
                break Outcome::Eof;
            }
            continue;
        }
        if let Some(done) = keys.edit(&mut value, &chunk[..n], max) {
            break done;
        }
    };
    let _ = tty.write_all(b"\n");
    drop(guard);
    match outcome {
        Outcome::Done if keys.rejected => Err(Error::invalid(
            "the typed value contained a terminal escape sequence (an arrow, Home, Delete or function key) or a control character; nothing was stored",
            "type the value again using only Backspace and Ctrl-U to edit, or pipe it on stdin (stdin is stored byte for byte)",
        )),
        Outcome::Done if value.len() > max => Err(Error::invalid(
            format!("the value is larger than {max} bytes"),
            "pipe a shorter value on stdin, or use `file:` in the manifest",
        )),
        Outcome::Done if value.is_empty() => Err(no_value()),
        Outcome::Done => Ok(Secret::from_slice(&value)),
        Outcome::Eof => Err(no_value()),
        Outcome::Signal(signal) => {
            drop(value);
            // The terminal is restored and the signals unblocked: die the way the user asked.
            let _ = nix::sys::signal::raise(signal);
            std::process::exit(128 + signal as i32)
        }
    }
}

fn no_value() -> Error {
    Error::invalid(
        "no value entered; nothing was stored",
        "type the value and press Enter, or pipe it on stdin",
    )
}

enum Outcome {
    Done,
    Eof,
    Signal(Signal),
}

/// Where the editor is within a terminal escape sequence.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
enum Escape {
    #[default]
    None,
    /// After ESC.
    Esc,
    /// After `ESC [` (CSI): parameters until a final byte 0x40..=0x7e.
    Csi,
    /// After `ESC O` (SS3, as some terminals send arrows) or another two-byte escape: one
    /// more byte.
    OneMore,
}

/// The line editor's state across reads: an escape sequence can be split between reads.
#[derive(Debug, Default)]
struct Keys {
    escape: Escape,
    /// An escape sequence or a control character was typed: what the user sees on the
    /// screen (a cursor that moved) is not what the bytes say, so the value is refused
    /// rather than stored as, say, `abc[Ddef`.
    rejected: bool,
}

impl Keys {
    /// Applies typed bytes to `value`; returns an outcome when input is finished.
    fn edit(&mut self, value: &mut Vec<u8>, bytes: &[u8], max: usize) -> Option<Outcome> {
        for &b in bytes {
            match self.escape {
                Escape::None => {}
                Escape::Esc => {
                    self.escape = match b {
                        b'[' => Escape::Csi,
                        b'O' | b'N' | b'P' | b']' => Escape::OneMore,
                        _ => Escape::None,
                    };
                    continue;
                }
                Escape::Csi => {
                    if (0x40..=0x7e).contains(&b) {
                        self.escape = Escape::None;
                    }
                    continue;
                }
                Escape::OneMore => {
                    self.escape = Escape::None;
                    continue;
                }
            }
            match b {
                b'\r' | b'\n' => return Some(Outcome::Done),
                0x03 => return Some(Outcome::Signal(Signal::SIGINT)),
                0x1c => return Some(Outcome::Signal(Signal::SIGQUIT)),
                0x04 if value.is_empty() => return Some(Outcome::Eof),
                0x04 => return Some(Outcome::Done),
                // Backspace removes one character: a UTF-8 lead byte and its continuation bytes.
                0x7f | 0x08 => {
                    while let Some(last) = value.pop() {
                        if last & 0xc0 != 0x80 {
                            break;
                        }
                    }
                }
                0x15 => value.clear(),
                0x1b => {
                    self.escape = Escape::Esc;
                    self.rejected = true;
                }
                // Other control bytes (Tab, Ctrl-Z, ...) are not part of a value either.
                0x00..=0x1f => self.rejected = true,
                _ if value.len() <= max => value.push(b),
                // Over the limit: stop storing (no reallocation) but keep reading to the end.
                _ => {}
            }
        }
        None
    }
}

/// The terminal's and the signal mask's previous state, restored on drop.
struct Guard {
    tty: File,
    saved: Termios,
    old_mask: SigSet,
    signals: SignalFd,
}

impl Guard {
    fn enter(tty: &File) -> io::Result<Guard> {
        let tty = tty.try_clone()?;
        let saved = termios::tcgetattr(tty.as_fd())?;
        let mut mask = SigSet::empty();
        for s in [
            Signal::SIGINT,
            Signal::SIGTERM,
            Signal::SIGHUP,
            Signal::SIGQUIT,
        ] {
            mask.add(s);
        }
        // Block first: from here on a signal waits in the signalfd until the terminal is back.
        let old_mask = mask.thread_swap_mask(SigmaskHow::SIG_BLOCK)?;
        let signals =
            match SignalFd::with_flags(&mask, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC) {
                Ok(fd) => fd,
                Err(e) => {
                    let _ = old_mask.thread_set_mask();
                    return Err(e.into());
                }
            };
        let mut quiet = saved.clone();
        quiet.local_flags &= !(LocalFlags::ECHO
            | LocalFlags::ECHONL
            | LocalFlags::ICANON
            | LocalFlags::ISIG
            | LocalFlags::IEXTEN);
        quiet.control_chars[SpecialCharacterIndices::VMIN as usize] = 0;
        quiet.control_chars[SpecialCharacterIndices::VTIME as usize] = POLL_DECISECONDS;
        // TCSAFLUSH, as getpass(3) does: input typed before the prompt was echoed; drop it.
        if let Err(e) = termios::tcsetattr(tty.as_fd(), SetArg::TCSAFLUSH, &quiet) {
            let _ = old_mask.thread_set_mask();
            return Err(e.into());
        }
        Ok(Guard {
            tty,
            saved,
            old_mask,
            signals,
        })
    }

    fn pending_signal(&self) -> Option<Signal> {
        match self.signals.read_signal() {
            Ok(Some(info)) => Signal::try_from(info.ssi_signo as i32).ok(),
            _ => None,
        }
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        // The terminal first, then the signals: a pending SIGTERM must find echo back on.
        let _ = termios::tcsetattr(self.tty.as_fd(), SetArg::TCSANOW, &self.saved);
        let _ = self.old_mask.thread_set_mask();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn typed(bytes: &[u8]) -> (Vec<u8>, Option<&'static str>) {
        let mut v = Vec::with_capacity(64);
        let out = Keys::default().edit(&mut v, bytes, 16).map(|o| match o {
            Outcome::Done => "done",
            Outcome::Eof => "eof",
            Outcome::Signal(_) => "signal",
        });
        (v, out)
    }

    #[test]
    fn line_editing() {
        assert_eq!(typed(b"abc\r"), (b"abc".to_vec(), Some("done")));
        assert_eq!(typed(b"abx\x7fc\n"), (b"abc".to_vec(), Some("done")));
        assert_eq!(typed("a\u{e9}\x7f".as_bytes()), (b"a".to_vec(), None));
        assert_eq!(typed(b"junk\x15ok\r"), (b"ok".to_vec(), Some("done")));
        assert_eq!(typed(b"\x04"), (Vec::new(), Some("eof")));
        assert_eq!(typed(b"ab\x03"), (b"ab".to_vec(), Some("signal")));
    }

    #[test]
    fn escape_sequences_are_consumed_whole_and_reject_the_value() {
        for keys in [
            &b"abc\x1b[Ddef\r"[..],
            b"abc\x1bODdef\r",
            b"abc\x1b[3~def\r",
            b"abc\x1b[1;5Cdef\r",
            b"abc\tdef\r",
        ] {
            let mut keys_state = Keys::default();
            let mut v = Vec::with_capacity(64);
            // Split anywhere: a sequence can arrive over two reads.
            let (a, b) = keys.split_at(5);
            assert!(keys_state.edit(&mut v, a, 64).is_none());
            assert!(matches!(
                keys_state.edit(&mut v, b, 64),
                Some(Outcome::Done)
            ));
            assert_eq!(v, b"abcdef", "{keys:?}");
            assert!(keys_state.rejected, "{keys:?}");
        }
        let mut k = Keys::default();
        let mut v = Vec::with_capacity(8);
        k.edit(&mut v, b"plain\r", 8);
        assert!(!k.rejected);
    }
}
