//! Exec mode: envrun becomes the command (same PID; signals and exit status are the
//! command's own because there is no envrun process left).

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
        let path = CString::new(path.as_os_str().as_bytes()).map_err(|_| nul())?;
        let args = argv
            .iter()
            .map(|a| CString::new(a.as_bytes()))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|_| nul())?;
        Ok(Program { shown, path, args })
    }

    /// The error for a failed `execve`: 127 when the file is missing, 126 otherwise.
    pub fn exec_error(&self, err: io::Error) -> Error {
        match err.kind() {
            io::ErrorKind::NotFound => Error::NotFound {
                command: self.shown.clone(),
            },
            _ => Error::CannotRun {
                command: self.shown.clone(),
                source: err,
            },
        }
    }
}

/// Replaces this process with `argv`; returns the error if that is impossible.
pub fn exec(argv: &[OsString], env: &EnvBlock) -> Error {
    let program = match Program::prepare(argv, env) {
        Ok(p) => p,
        Err(e) => return e,
    };
    let envp = env.as_cstrs();
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
