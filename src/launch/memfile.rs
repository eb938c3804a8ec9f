//! Secrets as files that never touch a disk: `as_file:` variables.
//!
//! The value goes into an anonymous in-memory file (`memfd_create`): it has no name in any
//! directory, lives in RAM (swapped like any process memory), and disappears with the last
//! descriptor. envrun opens it close-on-exec; only the command's exec keeps it (the fd is
//! made inheritable between the fork and the `execve`, or just before the `execve` in exec
//! mode), and the variable is set to `/proc/self/fd/N`, which the command can open as often
//! as it likes. The command's own children get the fd only if it passes it on: Python's
//! `subprocess` (`close_fds=True`), Go's `os/exec` and Node's `child_process` do not; a shell
//! does.
//!
//! The file is read-only (mode 0400) and sealed: it can never be written, grown or shrunk
//! again, by anyone. Except with `on_change: signal`, where envrun itself replaces the
//! content on rotation (the command re-reads the same path on the signal), so it is left
//! unsealed.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::os::unix::fs::FileExt;

use nix::errno::Errno;
use nix::fcntl::{FcntlArg, SealFlag};
use nix::sys::memfd::{MFdFlags, memfd_create};

use crate::error::Error;
use crate::secret::Secret;

/// One variable's value in an in-memory file.
#[derive(Debug)]
pub struct MemFile {
    /// The variable whose value it holds (the file's name too: `/memfd:envrun:NAME`).
    pub var: String,
    file: std::fs::File,
    sealed: bool,
}

impl MemFile {
    /// A new in-memory file holding `value`, sealed unless envrun must rewrite it later.
    pub fn new(var: &str, value: &[u8], seal: bool) -> Result<MemFile, Error> {
        let fail = |what: &str, e: Errno| Error::Invalid {
            message: format!("cannot make the in-memory file for `{var}` (as_file:): {what}: {e}"),
            hint: Some(String::from(
                "as_file: needs memfd_create (Linux 3.17 or later, allowed by the seccomp profile) and /proc in the command's mount namespace",
            )),
        };
        // The name shows in /proc/PID/fd links; a variable name is not secret. NUL and
        // `/` cannot occur in it (variable names were checked), and it is cut to the
        // kernel's 249 bytes.
        let mut name = format!("envrun:{var}");
        name.truncate(240);
        let name = std::ffi::CString::new(name).unwrap_or_else(|_| c"envrun".to_owned());
        let fd = memfd_create(
            name.as_c_str(),
            MFdFlags::MFD_CLOEXEC | MFdFlags::MFD_ALLOW_SEALING,
        )
        .map_err(|e| fail("memfd_create", e))?;
        let fd = super::supervise::cloexec_above_stdio(fd)?;
        nix::sys::stat::fchmod(&fd, nix::sys::stat::Mode::S_IRUSR)
            .map_err(|e| fail("fchmod", e))?;
        let file = MemFile {
            var: var.to_owned(),
            file: std::fs::File::from(fd),
            sealed: seal,
        };
        file.file
            .write_all_at(value, 0)
            .map_err(|e| fail("write", Errno::from_raw(e.raw_os_error().unwrap_or(0))))?;
        if seal {
            nix::fcntl::fcntl(
                &file.file,
                FcntlArg::F_ADD_SEALS(
                    SealFlag::F_SEAL_WRITE
                        | SealFlag::F_SEAL_GROW
                        | SealFlag::F_SEAL_SHRINK
                        | SealFlag::F_SEAL_SEAL,
                ),
            )
            .map_err(|e| fail("fcntl(F_ADD_SEALS)", e))?;
        }
        Ok(file)
    }

    /// What the variable is set to: a path the command opens to read the value.
    pub fn path(&self) -> String {
        format!("/proc/self/fd/{}", self.file.as_raw_fd())
    }

    /// Replaces the content (`on_change: signal`). A reader racing with this may find the
    /// file empty (or, for a value over one page, only its first pages); the command is
    /// told by its signal only after this returns, and reads the whole new value then.
    pub fn replace(&self, value: &Secret) -> Result<(), Error> {
        if self.sealed {
            return Err(Error::Invalid {
                message: format!(
                    "the in-memory file of `{}` is sealed and cannot be replaced",
                    self.var
                ),
                hint: Some(String::from("this is a bug in envrun; please report it")),
            });
        }
        let fail = |what: &str, e| {
            Error::io(
                format!("replace the in-memory file of `{}`: {what}", self.var),
                e,
            )
        };
        // Emptied first, then written in one call: the kernel sets the new size only
        // after a page's bytes are in, so a reader racing with this sees an empty file or
        // the whole new value (for a value over one page, possibly only its first pages);
        // never a mix of the old and the new, nor a cut one. Writing over the old value in
        // place would let a reader see the new bytes cut at the old length, or old and new
        // bytes mixed (a property test caught the first).
        self.file.set_len(0).map_err(|e| fail("ftruncate", e))?;
        self.file
            .write_all_at(value.expose(), 0)
            .map_err(|e| fail("write", e))
    }
}

impl AsFd for MemFile {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.file.as_fd()
    }
}

/// Makes each file's fd survive the next `execve` (clears close-on-exec). Between a fork
/// and an exec: one `fcntl` per fd, no allocation.
pub fn inherit(files: &[BorrowedFd<'_>]) -> Result<(), Errno> {
    for fd in files {
        nix::fcntl::fcntl(fd, FcntlArg::F_SETFD(nix::fcntl::FdFlag::empty()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn holds_the_value_readable_through_its_path_and_sealed() {
        let file = MemFile::new("KEY", b"-----BEGIN KEY-----\nabc\n", true).unwrap();
        let mut read = String::new();
        std::fs::File::open(file.path())
            .unwrap()
            .read_to_string(&mut read)
            .unwrap();
        assert_eq!(read, "-----BEGIN KEY-----\nabc\n");
        assert!(file.as_fd().as_raw_fd() > 2);
        // Sealed: not even envrun can change it.
        let err = file.file.write_at(b"x", 0).unwrap_err();
        assert_eq!(
            err.raw_os_error(),
            Some(libc::EPERM),
            "write to a sealed memfd"
        );
        assert!(file.replace(&Secret::from_slice(b"new")).is_err());
        // Close-on-exec in envrun until `inherit` says otherwise.
        let flags = nix::fcntl::fcntl(&file, FcntlArg::F_GETFD).unwrap();
        assert_ne!(flags & libc::FD_CLOEXEC, 0);
        inherit(&[file.as_fd()]).unwrap();
        let flags = nix::fcntl::fcntl(&file, FcntlArg::F_GETFD).unwrap();
        assert_eq!(flags & libc::FD_CLOEXEC, 0);
    }

    #[test]
    fn an_unsealed_file_is_replaced_shorter_and_longer() {
        let file = MemFile::new("KEY", b"first value", false).unwrap();
        let read = |f: &MemFile| std::fs::read(f.path()).unwrap();
        file.replace(&Secret::from_slice(b"2nd")).unwrap();
        assert_eq!(read(&file), b"2nd");
        file.replace(&Secret::from_slice(b"a much longer third value"))
            .unwrap();
        assert_eq!(read(&file), b"a much longer third value");
    }
}
