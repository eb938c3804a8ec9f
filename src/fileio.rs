//! Files that hold values and keys: the one way envrun reads them and the one way it
//! replaces them.
//!
//! Reading ([`read_regular`]): every file envrun takes a value or a key from (`file:`
//! references, `key_file:`, the store, the `files` backend) is opened without blocking (a
//! FIFO must not hang the run), checked to be a regular file (`/dev/zero` or a directory is
//! refused by name, not read until memory runs out), and read up to a size limit into a
//! buffer sized before it is filled and wiped when dropped.
//!
//! Writing ([`replace_file`]): the new content goes to a temp file beside the destination
//! with an unpredictable name, created with `O_CREAT|O_EXCL|O_NOFOLLOW|O_CLOEXEC` and mode
//! 0600 from the start, so nothing planted in a directory another user can write to (a
//! symlink, a file made 0666 in advance) is ever opened. Before the temp file is renamed (or
//! linked) into place it is checked to be still the file envrun created, owned by envrun's
//! user and private. A destination that is a symlink is refused unless the caller asks to
//! replace the link itself.

use std::fs::{self, File, Metadata, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use zeroize::Zeroizing;

/// What went wrong with a file. Messages name the path, never content.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    #[error("{} not found", .0.display())]
    NotFound(PathBuf),
    #[error("{} is {what}, not a regular file", path.display())]
    NotRegular { path: PathBuf, what: &'static str },
    #[error("{} is larger than {limit} bytes", path.display())]
    TooLarge { path: PathBuf, limit: u64 },
    #[error("cannot read {}: {source}", path.display())]
    Read { path: PathBuf, source: io::Error },
    #[error("cannot write {}: {source}", path.display())]
    Write { path: PathBuf, source: io::Error },
    #[error("{} already exists", .0.display())]
    Exists(PathBuf),
    #[error("{} is a symbolic link; it was not replaced", .0.display())]
    Symlink(PathBuf),
    /// A temp file that is no longer what envrun created: someone else is writing in the
    /// directory. Nothing was put in place.
    #[error("refused to write {}: {reason}; nothing was written", path.display())]
    Unsafe { path: PathBuf, reason: String },
}

impl FileError {
    /// What to try next, by cause.
    pub fn hint(&self) -> Option<String> {
        Some(match self {
            FileError::NotFound(_) => "check the path".into(),
            FileError::NotRegular { .. } => "point it at a regular file".into(),
            FileError::TooLarge { .. } => {
                "check the path: a value or key file is never that large".into()
            }
            FileError::Read { .. } | FileError::Write { .. } => {
                "check the path and its permissions".into()
            }
            FileError::Exists(_) => "choose another path".into(),
            FileError::Symlink(_) => {
                "give the path of the file it points to (or, where the command has it, pass --force to replace the link itself)".into()
            }
            FileError::Unsafe { path, .. } => format!(
                "another user can write to the directory of {}; use a directory only you can write to",
                path.display()
            ),
        })
    }
}

/// Names a file type for messages.
fn what(meta: &Metadata) -> &'static str {
    let t = meta.file_type();
    if t.is_dir() {
        "a directory"
    } else if t.is_fifo() {
        "a FIFO"
    } else if t.is_char_device() {
        "a character device"
    } else if t.is_block_device() {
        "a block device"
    } else if t.is_socket() {
        "a socket"
    } else if t.is_symlink() {
        "a symbolic link"
    } else {
        "not a regular file"
    }
}

/// Whether [`open_regular`] follows a symlink in the last component.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Follow {
    Yes,
    /// `O_NOFOLLOW`: for a path already resolved and checked by the caller.
    No,
}

/// Opens `path` for reading without blocking and checks that it is a regular file.
pub fn open_regular(path: &Path, follow: Follow) -> Result<(File, Metadata), FileError> {
    let mut flags = libc::O_NONBLOCK | libc::O_CLOEXEC;
    if follow == Follow::No {
        flags |= libc::O_NOFOLLOW;
    }
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(flags)
        .open(path)
        .map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => FileError::NotFound(path.to_owned()),
            _ if e.raw_os_error() == Some(libc::ELOOP) => FileError::Symlink(path.to_owned()),
            _ => FileError::Read {
                path: path.to_owned(),
                source: e,
            },
        })?;
    let meta = file.metadata().map_err(|e| FileError::Read {
        path: path.to_owned(),
        source: e,
    })?;
    if !meta.is_file() {
        return Err(FileError::NotRegular {
            path: path.to_owned(),
            what: what(&meta),
        });
    }
    Ok((file, meta))
}

/// Reads an opened regular file of at most `limit` bytes into a buffer sized before it is
/// filled (growth would leave unwiped copies) and wiped on drop.
pub fn read_capped(
    mut file: File,
    meta: &Metadata,
    path: &Path,
    limit: u64,
) -> Result<Zeroizing<Vec<u8>>, FileError> {
    let too_large = || FileError::TooLarge {
        path: path.to_owned(),
        limit,
    };
    if meta.len() > limit {
        return Err(too_large());
    }
    // One byte more than the file's size, so a file that grew is noticed without growing.
    let capacity = usize::try_from(meta.len()).unwrap_or(0).saturating_add(1);
    let mut buf = Zeroizing::new(Vec::with_capacity(capacity));
    let mut chunk = Zeroizing::new([0u8; 4096]);
    loop {
        let n = match file.read(&mut chunk[..]) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                return Err(FileError::Read {
                    path: path.to_owned(),
                    source: e,
                });
            }
        };
        if (buf.len() + n) as u64 > limit {
            return Err(too_large());
        }
        if buf.len() + n > buf.capacity() {
            // The file grew while it was read: move to a bigger buffer, wiping the old one.
            let mut bigger = Zeroizing::new(Vec::with_capacity((buf.len() + n) * 2));
            bigger.extend_from_slice(&buf);
            buf = bigger;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    Ok(buf)
}

/// Opens and reads a regular file of at most `limit` bytes; see the module documentation.
pub fn read_regular(
    path: &Path,
    limit: u64,
    follow: Follow,
) -> Result<(Metadata, Zeroizing<Vec<u8>>), FileError> {
    let (file, meta) = open_regular(path, follow)?;
    let data = read_capped(file, &meta, path, limit)?;
    Ok((meta, data))
}

/// Whether [`replace_file`] may replace an existing destination.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Replace {
    /// Replace a regular file; refuse a symlink.
    Overwrite,
    /// Replace whatever is there, a symlink included (the link itself, never its target).
    OverwriteLink,
    /// Fail with [`FileError::Exists`] if the destination exists (the check and the
    /// creation are one atomic step: a hard link, which never replaces).
    NoClobber,
}

/// Writes `bytes` to `path` so that at every instant `path` is either absent, the old file
/// or the complete new one; see the module documentation. Callers that may race hold the
/// store's lock.
pub fn replace_file(path: &Path, bytes: &[u8], mode: Replace) -> Result<(), FileError> {
    let werr = |p: &Path| {
        let p = p.to_owned();
        move |e| FileError::Write { path: p, source: e }
    };
    if mode == Replace::Overwrite
        && fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink())
    {
        return Err(FileError::Symlink(path.to_owned()));
    }
    let (tmp, mut file) = create_temp(path)?;
    let result = (|| {
        file.write_all(bytes).map_err(werr(&tmp))?;
        file.sync_all().map_err(werr(&tmp))?;
        verify_temp(&file, &tmp, path)?;
        match mode {
            Replace::Overwrite | Replace::OverwriteLink => {
                fs::rename(&tmp, path).map_err(werr(path))
            }
            Replace::NoClobber => match fs::hard_link(&tmp, path) {
                Ok(()) => fs::remove_file(&tmp).map_err(werr(&tmp)),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                    Err(FileError::Exists(path.to_owned()))
                }
                Err(e) => Err(werr(path)(e)),
            },
        }
    })();
    if result.is_err() {
        remove_if_ours(&tmp, &file);
        return result;
    }
    sync_dir(path).map_err(werr(path))
}

/// The prefix of every temp file of `path`: `.NAME.tmp.`.
fn temp_prefix(path: &Path) -> Option<String> {
    Some(format!(".{}.tmp.", path.file_name()?.to_string_lossy()))
}

/// Creates `.NAME.tmp.RANDOM` beside `path`: exclusive, no symlink followed, 0600.
fn create_temp(path: &Path) -> Result<(PathBuf, File), FileError> {
    let prefix = temp_prefix(path).ok_or_else(|| FileError::Write {
        path: path.to_owned(),
        source: io::Error::new(io::ErrorKind::InvalidInput, "not a file name"),
    })?;
    let mut last = None;
    // A name that exists already is someone else's file (or a planted one): never opened,
    // another name is drawn.
    for _ in 0..8 {
        let mut random = [0u8; 12];
        getrandom::fill(&mut random).map_err(|e| FileError::Write {
            path: path.to_owned(),
            source: io::Error::other(format!("random temp file name: {e}")),
        })?;
        let suffix: String = random.iter().map(|b| format!("{b:02x}")).collect();
        let tmp = path.with_file_name(format!("{prefix}{suffix}"));
        match OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&tmp)
        {
            Ok(file) => return Ok((tmp, file)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => last = Some(e),
            Err(e) => {
                return Err(FileError::Write {
                    path: tmp,
                    source: e,
                });
            }
        }
    }
    Err(FileError::Write {
        path: path.to_owned(),
        source: last.unwrap_or_else(|| io::Error::other("no free temp file name")),
    })
}

/// Checks that the temp file at `tmp` is still the one open as `file`, a regular file of
/// envrun's user, private, with one link.
fn verify_temp(file: &File, tmp: &Path, dest: &Path) -> Result<(), FileError> {
    let unsafe_ = |reason: String| FileError::Unsafe {
        path: dest.to_owned(),
        reason,
    };
    let ours = file.metadata().map_err(|e| FileError::Write {
        path: tmp.to_owned(),
        source: e,
    })?;
    let there = fs::symlink_metadata(tmp)
        .map_err(|_| unsafe_(format!("the temp file {} was removed", tmp.display())))?;
    if there.dev() != ours.dev() || there.ino() != ours.ino() {
        return Err(unsafe_(format!(
            "the temp file {} was replaced by another file",
            tmp.display()
        )));
    }
    let uid = nix::unistd::geteuid().as_raw();
    if !there.is_file() || there.uid() != uid || there.mode() & 0o077 != 0 || there.nlink() != 1 {
        return Err(unsafe_(format!(
            "the temp file {} is not a private file of this user (owner {}, mode {:04o}, {} links)",
            tmp.display(),
            there.uid(),
            there.mode() & 0o7777,
            there.nlink()
        )));
    }
    Ok(())
}

/// Removes `tmp` if it is still the file open as `file`.
fn remove_if_ours(tmp: &Path, file: &File) {
    if let (Ok(ours), Ok(there)) = (file.metadata(), fs::symlink_metadata(tmp))
        && ours.dev() == there.dev()
        && ours.ino() == there.ino()
    {
        let _ = fs::remove_file(tmp);
    }
}

/// Removes `path` and makes the removal durable.
pub fn remove_file(path: &Path) -> Result<(), FileError> {
    let werr = |e| FileError::Write {
        path: path.to_owned(),
        source: e,
    };
    fs::remove_file(path).map_err(werr)?;
    sync_dir(path).map_err(werr)
}

/// Removes temp files of `path` left by writers that were killed: only regular files of
/// envrun's own user (a file planted by someone else is left alone, and never opened).
/// Callers hold the store's lock, so no other writer of ours is running.
pub fn remove_stale_temps(path: &Path) {
    let (Some(dir), Some(prefix)) = (parent(path), temp_prefix(path)) else {
        return;
    };
    let uid = nix::unistd::geteuid().as_raw();
    if let Ok(entries) = fs::read_dir(dir) {
        for entry in entries.flatten() {
            if !entry.file_name().to_string_lossy().starts_with(&prefix) {
                continue;
            }
            if fs::symlink_metadata(entry.path()).is_ok_and(|m| m.is_file() && m.uid() == uid) {
                let _ = fs::remove_file(entry.path());
            }
        }
    }
}

/// The directory of `path` (`.` for a bare file name).
pub fn parent(path: &Path) -> Option<&Path> {
    match path.parent() {
        Some(p) if p.as_os_str().is_empty() => Some(Path::new(".")),
        other => other,
    }
}

fn sync_dir(path: &Path) -> io::Result<()> {
    match parent(path) {
        Some(dir) => File::open(dir)?.sync_all(),
        None => Ok(()),
    }
}

/// A file's identity: device and inode (names can differ: hard links, `./x` and `x`).
pub fn identity(meta: &Metadata) -> (u64, u64) {
    (meta.dev(), meta.ino())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_regular_files_and_refuses_devices_directories_and_large_files() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("v");
        fs::write(&f, b"value\n").unwrap();
        let (_, data) = read_regular(&f, 16, Follow::Yes).unwrap();
        assert_eq!(&data[..], b"value\n");
        assert!(matches!(
            read_regular(&f, 3, Follow::Yes),
            Err(FileError::TooLarge { limit: 3, .. })
        ));
        let err = read_regular(Path::new("/dev/zero"), 16, Follow::Yes).unwrap_err();
        assert_eq!(
            err.to_string(),
            "/dev/zero is a character device, not a regular file"
        );
        assert!(matches!(
            read_regular(dir.path(), 16, Follow::Yes),
            Err(FileError::NotRegular { .. })
        ));
    }

    #[test]
    fn replace_writes_private_files_with_unpredictable_temp_names() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("out");
        replace_file(&dest, b"one", Replace::NoClobber).unwrap();
        assert!(matches!(
            replace_file(&dest, b"two", Replace::NoClobber),
            Err(FileError::Exists(_))
        ));
        replace_file(&dest, b"two", Replace::Overwrite).unwrap();
        assert_eq!(fs::read(&dest).unwrap(), b"two");
        assert_eq!(fs::metadata(&dest).unwrap().mode() & 0o777, 0o600);
        let names: Vec<_> = fs::read_dir(dir.path()).unwrap().flatten().collect();
        assert_eq!(names.len(), 1, "no temp file left behind");
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&dest, &link).unwrap();
        assert!(matches!(
            replace_file(&link, b"x", Replace::Overwrite),
            Err(FileError::Symlink(_))
        ));
        replace_file(&link, b"three", Replace::OverwriteLink).unwrap();
        assert_eq!(fs::read(&dest).unwrap(), b"two", "the target is untouched");
        assert!(fs::symlink_metadata(&link).unwrap().is_file());
    }
}
