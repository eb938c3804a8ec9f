//! envrun's one error type: what failed, named by operation and object, never by value.
//!
//! Lower layers have their own typed errors ([`StoreError`] for the local store,
//! [`BackendError`](crate::backend::BackendError) for backends, [`ScrubError`](crate::scrub::ScrubError));
//! each converts into [`Error`] with its hint. Every variant has a message and, where there
//! is one, a hint (what to try next); `ui` prints both. Values never reach these types: they
//! carry variable names, references, keys and paths.

use std::io;
use std::path::PathBuf;

use crate::store::StoreError;

/// Exit status of a command whose answer is "no" (`secrets get`/`delete` of a missing name).
pub const EXIT_ABSENT: i32 = 1;
/// Exit status when envrun itself fails (as `env`, `docker run` and tini use).
pub const EXIT_ENVRUN: i32 = 125;
/// Exit status when the command was found but could not be run.
pub const EXIT_CANNOT_RUN: i32 = 126;
/// Exit status when the command was not found.
pub const EXIT_NOT_FOUND: i32 = 127;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The command line is wrong (the hint points at `--help`).
    #[error("{0}")]
    Usage(String),

    /// Input that is well-formed on the command line but cannot be used (a value, a name
    /// from the environment, a setting), with what to do instead.
    #[error("{message}")]
    Invalid {
        message: String,
        hint: Option<String>,
    },

    /// A command that declines to act, with what to do instead.
    #[error("{message}")]
    Refused { message: String, hint: String },

    /// A bug in envrun (a panic, a broken invariant).
    #[error("{0}")]
    Internal(String),

    /// A command line clap rejected, with clap's suggestions.
    #[error("{message}")]
    Cli { message: String, tips: Vec<String> },

    #[error("manifest {} not found", .0.display())]
    ManifestNotFound(PathBuf),

    #[error("cannot read manifest {}: {source}", path.display())]
    ManifestRead { path: PathBuf, source: io::Error },

    #[error("manifest {}: {message}", path.display())]
    ManifestParse { path: PathBuf, message: String },

    #[error("{}", failures.iter().map(|f| f.to_string()).collect::<Vec<_>>().join("\n"))]
    Resolve { failures: Vec<Failure> },

    #[error("{0}")]
    Store(#[from] StoreError),

    #[error("{0}")]
    Backend(#[from] crate::backend::BackendError),

    #[error("cannot run `{command}`: command not found")]
    NotFound { command: String },

    #[error("cannot run `{command}`: {source}")]
    CannotRun { command: String, source: io::Error },

    /// The command was found, but the interpreter its `#!` line names was not.
    #[error("cannot run `{command}`: {}", interpreter_message(interpreter, *crlf))]
    Interpreter {
        command: String,
        interpreter: String,
        crlf: bool,
    },

    #[error("{0}")]
    Scrub(#[from] crate::scrub::ScrubError),

    #[error("{what}: {source}")]
    Io { what: String, source: io::Error },

    /// The audit log could not be opened or written (the run fails closed).
    #[error("{message}")]
    Audit { message: String },

    /// A secret the command needs does not exist (exit 1, not a failure of envrun).
    #[error("no secret `{name}` in {}", store.display())]
    Absent { name: String, store: PathBuf },
}

/// One reference that could not be resolved: the variable, the reference, what went wrong,
/// and what to try for that backend and cause.
#[derive(Debug)]
pub struct Failure {
    pub var: String,
    pub reference: String,
    pub reason: String,
    pub hint: Option<String>,
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}: {}", self.var, self.reference, self.reason)
    }
}

fn interpreter_message(interpreter: &str, crlf: bool) -> String {
    if crlf {
        format!(
            "its `#!` line names the interpreter `{interpreter}` followed by a carriage return (\\r), which does not exist: the file has Windows (CRLF) line endings"
        )
    } else {
        format!("its interpreter {interpreter} (from the `#!` line) does not exist")
    }
}

impl Error {
    pub fn io(what: impl Into<String>, source: io::Error) -> Error {
        Error::Io {
            what: what.into(),
            source,
        }
    }

    /// An [`Error::Invalid`] with a hint.
    pub fn invalid(message: impl Into<String>, hint: impl Into<String>) -> Error {
        Error::Invalid {
            message: message.into(),
            hint: Some(hint.into()),
        }
    }

    pub fn refused(message: impl Into<String>, hint: impl Into<String>) -> Error {
        Error::Refused {
            message: message.into(),
            hint: hint.into(),
        }
    }

    /// The exit status envrun ends with after this error.
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::NotFound { .. } => EXIT_NOT_FOUND,
            Error::CannotRun { .. } | Error::Interpreter { .. } => EXIT_CANNOT_RUN,
            Error::Absent { .. } => EXIT_ABSENT,
            _ => EXIT_ENVRUN,
        }
    }

    /// What the user can try next.
    pub fn hint(&self) -> Option<String> {
        Some(match self {
            Error::Usage(_) => "run `envrun --help` for usage".into(),
            Error::Invalid { hint, .. } => return hint.clone(),
            Error::Refused { hint, .. } => hint.clone(),
            Error::Internal(_) => "please report this bug (the message above names no value)".into(),
            Error::Cli { tips, .. } if !tips.is_empty() => tips.join("\n"),
            Error::Cli { .. } => "run `envrun --help` for usage".into(),
            Error::ManifestNotFound(_) => {
                "check --manifest / $ENVRUN_MANIFEST, or run without one to use only inherited references".into()
            }
            Error::ManifestRead { .. } => "check that the file exists and is readable".into(),
            Error::ManifestParse { .. } => {
                "fix the manifest at the position shown; see `man envrun` for the schema".into()
            }
            Error::Resolve { failures } => {
                let mut hints = vec!["the command was not started; fix the references above"];
                for h in failures.iter().filter_map(|f| f.hint.as_deref()) {
                    if !hints.contains(&h) {
                        hints.push(h);
                    }
                }
                hints.join("\n")
            }
            Error::Store(e) => return e.hint(),
            Error::Backend(e) => return e.hint_or_default(),
            Error::NotFound { .. } => "check the command name and PATH".into(),
            Error::CannotRun { .. } => "check that the file is an executable the system can run".into(),
            Error::Interpreter { command, crlf: true, .. } => format!(
                "convert the file to Unix line endings, e.g. `sed -i 's/\\r$//' {command}` or `dos2unix {command}`"
            ),
            Error::Interpreter { interpreter, .. } => format!(
                "install {interpreter}, or change the `#!` line to an interpreter that exists (e.g. `#!/usr/bin/env NAME`)"
            ),
            Error::Scrub(_) => {
                "fewer or shorter secrets would fit; --no-mask runs the command without masking".into()
            }
            Error::Io { .. } => return None,
            Error::Absent { .. } => "`envrun secrets list` shows the names it holds".into(),
            Error::Audit { .. } => {
                "the command was not started; fix the path or its permissions, or set `audit: {required: false}` in the manifest to run without the log".into()
            }
        })
    }
}
