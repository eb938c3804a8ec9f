//! Exec mode: envrun becomes the command (same PID; signals and exit status are the
//! command's own because there is no envrun process left).
//!
//! [`Program`] is shared with supervise mode: the lookup in PATH, and two things a shell does
//! that `execve` alone does not. A text script without a `#!` line is run with `/bin/sh` (as
//! `env`, `execvp` and every shell do). And when `execve` fails, the error says why in the
//! user's terms: a `#!` interpreter that does not exist is named (with a word about CRLF line
//! endings when the line ends in `\r`) instead of "command not found".

use std::ffi::{CString, OsStr, OsString};
use std::io;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use super::EnvBlock;
use crate::error::Error;

/// Used when neither the child nor envrun has a PATH (as glibc's execvp does).
const DEFAULT_PATH: &[u8] = b"/usr/local/bin:/usr/bin:/bin";

/// The program, looked up, and its arguments as C strings: ready before a fork (a forked
/// child must not allocate) or an exec.
pub struct Program {
    /// How messages name it: `argv[0]` as given.
    pub shown: String,
    pub path: CString,
    pub args: Vec<CString>,
}

impl Program {
    pub fn prepare(argv: &[OsString], env: &EnvBlock) -> Result<Program, Error> {
        let Some(program) = argv.first() else {
            return Err(Error::Usage(String::from("no command given")));
        };
        let shown = program.to_string_lossy().into_owned();
        let path = find_program(program, env)?;
        let nul = || {
            Error::Usage(format!(
                "the command `{shown}` or an argument contains a NUL byte"
            ))
        };
        let mut args = argv
            .iter()
            .map(|a| CString::new(a.as_bytes()))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|_| nul())?;
        // A script without `#!`: `/bin/sh SCRIPT ARGS...`, so `$0` is the script's path.
        let path = if head(&path).is_some_and(|h| is_shebangless_script(&h)) && executable(&path) {
            args[0] = CString::new(path.as_os_str().as_bytes()).map_err(|_| nul())?;
            args.insert(0, CString::from(c"/bin/sh"));
            PathBuf::from("/bin/sh")
        } else {
            path
        };
        let path = CString::new(path.as_os_str().as_bytes()).map_err(|_| nul())?;
        Ok(Program { shown, path, args })
    }

    /// Whether `execve` would find the program and may run it (a regular file with execute
    /// permission), without running it: watch mode checks this before it stops a running
    /// command for a new one.
    pub fn check_runnable(&self) -> Result<(), Error> {
        let path = Path::new(OsStr::from_bytes(self.path.as_bytes()));
        match nix::unistd::access(path, nix::unistd::AccessFlags::X_OK) {
            Ok(()) if path.is_file() => Ok(()),
            Ok(()) => Err(self.exec_error(io::Error::from_raw_os_error(libc::EACCES))),
            Err(e) => Err(self.exec_error(io::Error::from(e))),
        }
    }

    /// The error for a failed `execve`: 127 when the file is missing, 126 otherwise (a
    /// missing `#!` interpreter included: the command itself was found).
    pub fn exec_error(&self, err: io::Error) -> Error {
        let path = Path::new(OsStr::from_bytes(self.path.as_bytes()));
        let shebang = || head(path).and_then(|h| interpreter(&h));
        match err.raw_os_error() {
            Some(libc::ENOENT) if path.is_file() => match shebang() {
                Some((interpreter, crlf)) => Error::Interpreter {
                    command: self.shown.clone(),
                    interpreter,
                    crlf,
                },
                None => Error::NotFound {
                    command: self.shown.clone(),
                },
            },
            Some(libc::ENOENT) => Error::NotFound {
                command: self.shown.clone(),
            },
            Some(libc::ENOEXEC) => Error::CannotRun {
                command: self.shown.clone(),
                source: io::Error::new(
                    io::ErrorKind::InvalidData,
                    "it is not a program this system can run (not an executable for this machine, no `#!` line, and not a text script)",
                ),
            },
            _ => Error::CannotRun {
                command: self.shown.clone(),
                source: err,
            },
        }
    }
}

/// The first bytes of a file (up to 512), if it is a regular file envrun can read.
fn head(path: &Path) -> Option<Vec<u8>> {
    use std::io::Read;
    let (file, _) = crate::fileio::open_regular(path, crate::fileio::Follow::Yes).ok()?;
    let mut buf = Vec::with_capacity(512);
    file.take(512).read_to_end(&mut buf).ok()?;
    Some(buf)
}

/// Text without `#!` or a binary magic: what the kernel refuses with ENOEXEC and a shell
/// runs with `/bin/sh`. Like bash, a NUL in the first line means binary, not a script.
fn is_shebangless_script(head: &[u8]) -> bool {
    let first_line = head.split(|b| *b == b'\n').next().unwrap_or_default();
    !head.is_empty()
        && !head.starts_with(b"#!")
        && !head.starts_with(b"\x7fELF")
        && !first_line.contains(&0)
}

fn executable(path: &Path) -> bool {
    nix::unistd::access(path, nix::unistd::AccessFlags::X_OK).is_ok()
}

/// The interpreter named by a `#!` line, and whether the line ends in `\r` (CRLF endings).
fn interpreter(head: &[u8]) -> Option<(String, bool)> {
    let line = head.strip_prefix(b"#!")?;
    let line = line.split(|b| *b == b'\n').next().unwrap_or_default();
    let crlf = line.ends_with(b"\r");
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let name = line
        .trim_ascii_start()
        .split(|b| b.is_ascii_whitespace())
        .next()
        .filter(|n| !n.is_empty())?;
    Some((String::from_utf8_lossy(name).into_owned(), crlf))
}

/// Replaces this process with `argv`; returns the error if that is impossible.
pub fn exec(argv: &[OsString], env: &EnvBlock, files: &[super::MemFile]) -> Error {
    let program = match Program::prepare(argv, env) {
        Ok(p) => p,
        Err(e) => return e,
    };
    let envp = env.as_cstrs();
    // The command keeps the `as_file:` files across the exec; nothing else is inherited.
    let fds: Vec<_> = files.iter().map(std::os::fd::AsFd::as_fd).collect();
    if let Err(e) = super::memfile::inherit(&fds) {
        return Error::io("fcntl(F_SETFD) on an as_file: file", e.into());
    }
    super::signals::default_sigpipe();
    let errno = match nix::unistd::execve(&program.path, &program.args, &envp) {
        Err(e) => e,
        Ok(never) => match never {},
    };
    program.exec_error(io::Error::from(errno))
}

/// Finds the program as the shell would, but in the child's PATH (the one the manifest may
/// set), falling back to envrun's own.
fn find_program(program: &OsStr, env: &EnvBlock) -> Result<PathBuf, Error> {
    let shown = || program.to_string_lossy().into_owned();
    if program.is_empty() {
        return Err(Error::NotFound { command: shown() });
    }
    if program.as_bytes().contains(&b'/') {
        return Ok(PathBuf::from(program));
    }
    let own_path = std::env::var_os("PATH").map(OsString::into_vec);
    let search = env
        .get("PATH")
        .or(own_path.as_deref())
        .unwrap_or(DEFAULT_PATH);
    let mut not_executable = None;
    for dir in search.split(|b| *b == b':') {
        // An empty entry means the current directory, as in POSIX.
        let dir = if dir.is_empty() {
            Path::new(".")
        } else {
            Path::new(OsStr::from_bytes(dir))
        };
        let candidate = dir.join(program);
        let Ok(meta) = candidate.metadata() else {
            continue;
        };
        if !meta.is_file() {
            continue;
        }
        if meta.permissions().mode() & 0o111 != 0 {
            return Ok(candidate);
        }
        not_executable.get_or_insert(candidate);
    }
    match not_executable {
        Some(p) => Err(Error::CannotRun {
            command: shown(),
            source: io::Error::new(
                io::ErrorKind::PermissionDenied,
                format!("{} is not executable", p.display()),
            ),
        }),
        None => Err(Error::NotFound { command: shown() }),
    }
}
