//! The audit log: one JSON line per run, saying who ran what with which secrets (by name,
//! never by value) and how it ended.
//!
//! Targets: `audit: {path: FILE}` in the manifest, `--audit-log FILE` and `$ENVRUN_AUDIT_LOG`
//! (each may be `syslog`). When the manifest and the command line both name one, the record
//! goes to both: a user cannot switch off the log a manifest asks for.
//!
//! Every target is opened before anything is resolved, so a log that cannot be written stops
//! the run before the command starts (fail closed), unless `audit.required: false`, which
//! turns that into a warning. A file is opened with `O_APPEND` (created 0600) and each record
//! is one `write(2)` of one line, so concurrent runs never interleave their lines. syslog
//! records go to `/dev/log` (`$ENVRUN_SYSLOG_SOCKET`), facility authpriv.
//!
//! A record holds: time, uid and user, host, pid, working directory, the command (`argv[0]`
//! only unless `audit.argv: true`), manifest, tenant, each variable with the type, backend
//! and key of every reference in it, and the outcome. It never holds a value or a hash of
//! one (a hash of a short secret is as good as the secret).

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use serde::Serialize;

use crate::error::Error;
use crate::resolve::Source;

/// The target name that means the system log rather than a file.
pub const SYSLOG: &str = "syslog";
/// Where the system log listens, unless `$ENVRUN_SYSLOG_SOCKET` says otherwise.
const DEV_LOG: &str = "/dev/log";
/// `LOG_AUTHPRIV | LOG_INFO`: the facility meant for security records.
const SYSLOG_PRI: u8 = 10 * 8 + 6;

/// One place to send records, as configured.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    /// A file, or [`SYSLOG`].
    pub path: PathBuf,
    /// A failing write stops the run (the default) or only warns.
    pub required: bool,
}

/// The targets of a run: the manifest's `audit:` and `--audit-log`/`$ENVRUN_AUDIT_LOG`
/// (relative to the working directory), each once.
pub fn targets(manifest: Option<&crate::manifest::AuditConfig>, cli: Option<&Path>) -> Vec<Target> {
    let mut targets = Vec::new();
    if let Some(a) = manifest {
        targets.push(Target {
            path: a.path.clone(),
            required: a.required,
        });
    }
    if let Some(path) = cli.filter(|p| !p.as_os_str().is_empty()) {
        let path = if path == Path::new(SYSLOG) {
            path.to_owned()
        } else {
            std::path::absolute(path).unwrap_or_else(|_| path.to_owned())
        };
        if !targets.iter().any(|t| t.path == path) {
            // The command line has no `required: false`: what a user asks for, they get.
            targets.push(Target {
                path,
                required: true,
            });
        }
    }
    targets
}

/// What a record says about how the run ended.
#[derive(Clone, Debug, Serialize)]
#[serde(tag = "result", rename_all = "kebab-case")]
pub enum Outcome {
    /// The command exited with this status.
    Exited { code: i32 },
    /// The command was killed by this signal.
    Signaled { signal: i32, name: String },
    /// envrun replaced itself with the command (exec mode, no value to mask): the command
    /// started, and its status is the caller's to see.
    Exec,
    /// The command was not started: the error, as envrun printed it (names, never values).
    NotStarted { error: String },
}

/// A variable of the record: its name and where its value came from.
#[derive(Clone, Debug, Serialize)]
pub struct Variable {
    pub name: String,
    pub refs: Vec<Ref>,
}

/// One reference of a variable, by name only.
#[derive(Clone, Debug, Serialize)]
pub struct Ref {
    /// `secret`, `file` or `env`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backend: Option<String>,
    pub key: String,
}

impl Variable {
    pub fn new(name: &str, sources: &[Source]) -> Variable {
        Variable {
            name: name.to_owned(),
            refs: sources
                .iter()
                .map(|s| Ref {
                    kind: s.kind,
                    backend: s.backend.clone(),
                    key: s.key.clone(),
                })
                .collect(),
        }
    }
}

/// The parts of a record known before the command starts.
#[derive(Clone, Debug, Serialize)]
struct Record<'a> {
    time: String,
    event: &'static str,
    uid: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    user: Option<String>,
    host: String,
    pid: u32,
    cwd: String,
    command: Vec<String>,
    manifest: Option<String>,
    tenant: Option<&'a str>,
    variables: &'a [Variable],
    outcome: &'a Outcome,
}

/// An open target.
enum Sink {
    File(File),
    Syslog(UnixDatagram),
}

/// The audit log of one run: its open targets and what the record will say.
pub struct Audit {
    sinks: Vec<(Target, Sink)>,
    /// Whether all of `argv` is recorded, or only `argv[0]`.
    argv: bool,
    pub command: Vec<String>,
    pub manifest: Option<PathBuf>,
    pub tenant: Option<String>,
    pub variables: Vec<Variable>,
}

impl Audit {
    /// Opens every target. A required one that cannot be opened is an error (the run
    /// stops); one with `required: false` is a warning and is left out.
    pub fn open(targets: &[Target], argv: bool) -> Result<Option<Audit>, Error> {
        if targets.is_empty() {
            return Ok(None);
        }
        let mut sinks = Vec::new();
        for target in targets {
            match open_sink(&target.path) {
                Ok(sink) => sinks.push((target.clone(), sink)),
                Err(e) if target.required => return Err(failed(target, "open", &e)),
                Err(e) => crate::ui::warn(&format!(
                    "{} (audit.required is false: running without it)",
                    failed(target, "open", &e)
                )),
            }
        }
        Ok(Some(Audit {
            sinks,
            argv,
            command: Vec::new(),
            manifest: None,
            tenant: None,
            variables: Vec::new(),
        }))
    }

    /// Appends the record with `outcome` to every target, one write each. Errors name the
    /// target; those of targets with `required: false` are printed as warnings here.
    pub fn record(&self, outcome: &Outcome) -> Result<(), Error> {
        let line = self.line(outcome)?;
        let mut first_error = None;
        for (target, sink) in &self.sinks {
            let result = match sink {
                Sink::File(file) => write_once(file, line.as_bytes()),
                Sink::Syslog(sock) => {
                    let msg = format!(
                        "<{SYSLOG_PRI}>envrun[{}]: {}",
                        std::process::id(),
                        line.trim_end()
                    );
                    sock.send(msg.as_bytes()).and_then(|n| {
                        if n == msg.len() {
                            Ok(())
                        } else {
                            Err(std::io::Error::other("short send"))
                        }
                    })
                }
            };
            if let Err(e) = result {
                let err = failed(target, "write", &e);
                if target.required {
                    first_error.get_or_insert(err);
                } else {
                    crate::ui::warn(&format!("{err} (audit.required is false)"));
                }
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// The record as one line of JSON, newline included.
    fn line(&self, outcome: &Outcome) -> Result<String, Error> {
        let uid = nix::unistd::getuid();
        let command = match (self.argv, self.command.first()) {
            (true, _) => self.command.clone(),
            (false, Some(first)) => vec![first.clone()],
            (false, None) => Vec::new(),
        };
        let record = Record {
            time: humantime::format_rfc3339_millis(SystemTime::now()).to_string(),
            event: "run",
            uid: uid.as_raw(),
            user: nix::unistd::User::from_uid(uid)
                .ok()
                .flatten()
                .map(|u| u.name),
            host: nix::unistd::gethostname()
                .map(|h| h.to_string_lossy().into_owned())
                .unwrap_or_default(),
            pid: std::process::id(),
            cwd: std::env::current_dir()
                .map(|d| d.display().to_string())
                .unwrap_or_default(),
            command,
            manifest: self.manifest.as_ref().map(|p| p.display().to_string()),
            tenant: self.tenant.as_deref(),
            variables: &self.variables,
            outcome,
        };
        let mut line = serde_json::to_string(&record)
            .map_err(|e| Error::io("encode the audit record", e.into()))?;
        line.push('\n');
        Ok(line)
    }
}

fn failed(target: &Target, op: &str, e: &std::io::Error) -> Error {
    Error::Audit {
        message: format!("cannot {op} the audit log {}: {e}", target.path.display()),
    }
}

fn open_sink(path: &Path) -> std::io::Result<Sink> {
    if path == Path::new(SYSLOG) {
        let socket = std::env::var_os("ENVRUN_SYSLOG_SOCKET")
            .filter(|s| !s.is_empty())
            .map_or_else(|| PathBuf::from(DEV_LOG), PathBuf::from);
        let sock = UnixDatagram::unbound()?;
        sock.connect(&socket)
            .map_err(|e| std::io::Error::new(e.kind(), format!("{} ({e})", socket.display())))?;
        return Ok(Sink::Syslog(sock));
    }
    OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        .open(path)
        .map(Sink::File)
}

/// One `write(2)`: with `O_APPEND` the kernel places the whole line at the end of the file
/// at once, so lines of concurrent runs never interleave. A short write is an error.
fn write_once(mut file: &File, bytes: &[u8]) -> std::io::Result<()> {
    let n = file.write(bytes)?;
    if n == bytes.len() {
        Ok(())
    } else {
        Err(std::io::Error::other(format!(
            "short write ({n} of {} bytes)",
            bytes.len()
        )))
    }
}

/// The signal's name (`SIGTERM`), or `SIG{n}` for one nix does not know.
pub fn signal_name(signo: i32) -> String {
    nix::sys::signal::Signal::try_from(signo)
        .map_or_else(|_| format!("SIG{signo}"), |s| s.as_str().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_is_one_line_with_argv0_only_by_default() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let target = Target {
            path: path.clone(),
            required: true,
        };
        let mut audit = Audit::open(std::slice::from_ref(&target), false)
            .unwrap()
            .unwrap();
        audit.command = vec!["./deploy".into(), "--password=hunter2".into()];
        audit.variables = vec![Variable {
            name: "DB".into(),
            refs: vec![Ref {
                kind: "secret",
                backend: Some("default".into()),
                key: "db".into(),
            }],
        }];
        audit.record(&Outcome::Exited { code: 3 }).unwrap();
        audit
            .record(&Outcome::Signaled {
                signal: 15,
                name: signal_name(15),
            })
            .unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0]["command"], serde_json::json!(["./deploy"]));
        assert_eq!(
            lines[0]["outcome"],
            serde_json::json!({"result": "exited", "code": 3})
        );
        assert_eq!(lines[1]["outcome"]["name"], "SIGTERM");
        assert_eq!(lines[0]["variables"][0]["refs"][0]["key"], "db");
        assert!(!text.contains("hunter2"));
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }
}
