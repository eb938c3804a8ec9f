//! The manifest: which variables the child gets and where their values come from.
//!
//! Found at `--manifest PATH`, then `$ENVRUN_MANIFEST`, then `./envrun.yaml`. Parsing checks
//! the schema (unknown keys are errors with line and column) and the syntax of every
//! reference; it reads no other file and contacts no backend.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::backend::BackendConfig;
use crate::error::Error;
use crate::reference::{self, Part};

/// The file name looked for in the working directory.
pub const DEFAULT_NAME: &str = "envrun.yaml";

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    tenant: Option<String>,
    timeout: Option<serde_saphyr::Spanned<String>>,
    secrets: Option<BackendConfig>,
    #[serde(default)]
    backends: BTreeMap<String, BackendConfig>,
    #[serde(default)]
    environment: BTreeMap<String, serde_saphyr::Spanned<String>>,
}

/// A parsed and checked manifest.
#[derive(Debug, Default)]
pub struct Manifest {
    /// The file it came from, if any.
    pub path: Option<PathBuf>,
    /// Where relative paths in it resolve: its directory, or the working directory.
    pub base_dir: PathBuf,
    /// `tenant:`, the tenant when neither `--tenant` nor `$ENVRUN_TENANT` gives one.
    pub tenant: Option<String>,
    /// `timeout:`, the resolution deadline when `--timeout` / `$ENVRUN_TIMEOUT` give none.
    pub timeout: Option<std::time::Duration>,
    /// The default backend (`secrets:`); the local store when absent.
    pub default_backend: BackendConfig,
    pub backends: BTreeMap<String, BackendConfig>,
    /// Variable name and its parsed value, in name order.
    pub environment: Vec<(String, Vec<Part>)>,
}

impl Manifest {
    /// Finds the manifest: an explicit path must exist; `./envrun.yaml` is optional.
    pub fn discover(explicit: Option<&Path>) -> Result<Manifest, Error> {
        let cwd = std::env::current_dir().map_err(|e| Error::io("current directory", e))?;
        match explicit {
            Some(path) => Manifest::load(&cwd.join(path)),
            None => {
                let path = cwd.join(DEFAULT_NAME);
                if path.exists() {
                    Manifest::load(&path)
                } else {
                    Ok(Manifest {
                        base_dir: cwd,
                        ..Manifest::default()
                    })
                }
            }
        }
    }

    pub fn load(path: &Path) -> Result<Manifest, Error> {
        let text = std::fs::read_to_string(path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => Error::ManifestNotFound(path.to_owned()),
            _ => Error::ManifestRead {
                path: path.to_owned(),
                source: e,
            },
        })?;
        let base_dir = path.parent().map(Path::to_owned).unwrap_or_default();
        Manifest::parse(&text, path, base_dir)
    }

    /// Parses manifest text; `path` is used in messages and kept as the origin.
    pub fn parse(text: &str, path: &Path, base_dir: PathBuf) -> Result<Manifest, Error> {
        let bad = |message: String| Error::ManifestParse {
            path: path.to_owned(),
            message,
        };
        // Snippets are off: an error prints one line, never the surrounding manifest text.
        let options = serde_saphyr::options! { with_snippet: false };
        let raw: Raw = if text.trim().is_empty() {
            Raw::default()
        } else {
            serde_saphyr::from_str_with_options(text, options).map_err(|e| bad(one_line(&e)))?
        };
        let mut environment = Vec::with_capacity(raw.environment.len());
        for (name, value) in raw.environment {
            let at = format!(
                "line {} column {}",
                value.referenced.line(),
                value.referenced.column()
            );
            if name.is_empty() || name.contains(['=', '\0']) {
                return Err(bad(format!(
                    "{at}: `{name}` is not a valid environment variable name"
                )));
            }
            let parts = reference::parse_value(&value.value)
                .map_err(|e| bad(format!("{at}: environment.{name}: {e}")))?;
            environment.push((name, parts));
        }
        for name in raw.backends.keys() {
            if name.is_empty() || name.contains([':', '@', '/', '#', '?']) {
                return Err(bad(format!(
                    "backend name `{name}` may not be empty or contain `:@/#?`"
                )));
            }
        }
        if let Some(t) = raw.tenant.as_deref().filter(|t| !t.is_empty()) {
            crate::backend::tenant::check(t).map_err(|e| bad(format!("tenant: {e}")))?;
        }
        let timeout = match raw.timeout {
            Some(t) => Some(crate::timeout::parse(&t.value).map_err(|e| {
                bad(format!(
                    "line {} column {}: timeout: {e}",
                    t.referenced.line(),
                    t.referenced.column()
                ))
            })?),
            None => None,
        };
        Ok(Manifest {
            path: Some(path.to_owned()),
            base_dir,
            tenant: raw.tenant,
            timeout,
            default_backend: raw.secrets.unwrap_or_default(),
            backends: raw.backends,
            environment,
        })
    }

    /// The names a `secret@NAME:` reference can use: `default` and every entry of `backends:`.
    pub fn backend_names(&self) -> Vec<&str> {
        let mut names = vec![crate::resolve::DEFAULT_BACKEND];
        names.extend(
            self.backends
                .keys()
                .map(String::as_str)
                .filter(|n| *n != crate::resolve::DEFAULT_BACKEND),
        );
        names
    }

    /// A short name for messages: the manifest's path, or "(no manifest)".
    pub fn describe(&self) -> String {
        self.path
            .as_ref()
            .map_or_else(|| "(no manifest)".into(), |p| p.display().to_string())
    }
}

/// serde-saphyr's message with its position, on one line.
fn one_line(e: &serde_saphyr::Error) -> String {
    let text = e.to_string();
    let text = text.strip_prefix("error: ").unwrap_or(&text);
    let text = text.lines().next().unwrap_or_default();
    match e.location() {
        Some(at) => {
            let message = text.rfind(" at line ").map_or(text, |i| &text[..i]);
            format!("line {} column {}: {message}", at.line(), at.column())
        }
        None => text.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Manifest, Error> {
        Manifest::parse(text, Path::new("m.yaml"), PathBuf::from("/base"))
    }

    #[test]
    fn unknown_keys_name_key_line_and_column() {
        let err = parse("environment:\n  A: b\nbogus: 1\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("line 3 column 1"), "{err}");
        assert!(err.contains("bogus"), "{err}");
    }

    #[test]
    fn malformed_yaml_reports_position_on_one_line() {
        let err = parse("environment:\n  A: [b\n").unwrap_err().to_string();
        assert!(err.contains("line 2"), "{err}");
        assert_eq!(err.lines().count(), 1, "{err}");
    }

    #[test]
    fn scalars_become_strings_and_references_parse() {
        let m = parse("environment:\n  PORT: 8080\n  TOKEN: secret:T\n").unwrap();
        assert_eq!(m.environment.len(), 2);
        assert!(matches!(&m.environment[1].1[0], Part::Ref(_)));
        assert!(matches!(m.default_backend, BackendConfig::Local(_)));
    }

    #[test]
    fn timeout_is_a_duration() {
        let m = parse("timeout: 2m\n").unwrap();
        assert_eq!(m.timeout, Some(std::time::Duration::from_secs(120)));
        let m = parse("timeout: 5\n").unwrap();
        assert_eq!(m.timeout, Some(std::time::Duration::from_secs(5)));
        let err = parse("environment: {}\ntimeout: soon\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("line 2") && err.contains("timeout"), "{err}");
    }

    #[test]
    fn bad_reference_is_reported_with_variable_and_position() {
        let err = parse("environment:\n  X: \"secret:\"\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("environment.X") && err.contains("line 2"),
            "{err}"
        );
    }
}
