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

mod errors;

/// The file name looked for in the working directory.
pub const DEFAULT_NAME: &str = "envrun.yaml";

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    tenant: Option<String>,
    timeout: Option<serde_saphyr::Spanned<String>>,
    secrets: Option<BackendConfig>,
    #[serde(default)]
    backends: Entries<BackendConfig>,
    #[serde(default)]
    environment: Entries<serde_saphyr::Spanned<String>>,
    #[serde(default)]
    rotation: Entries<serde_saphyr::Spanned<String>>,
    audit: Option<AuditConfig>,
    watch: Option<RawWatch>,
}

/// `watch:` as written; checked into [`crate::watch::Partial`].
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWatch {
    interval: Option<serde_saphyr::Spanned<String>>,
    on_change: Option<serde_saphyr::Spanned<String>>,
    reload_on_hup: Option<bool>,
    stop_signal: Option<serde_saphyr::Spanned<String>>,
    stop_timeout: Option<serde_saphyr::Spanned<String>>,
}

/// The prefix that puts a variable's value in an in-memory file and sets the variable to
/// its path (`GOOGLE_APPLICATION_CREDENTIALS: as_file:secret:gcp-sa`).
pub const AS_FILE: &str = "as_file:";

/// The entries of a YAML mapping in the order written, repeated keys included, so that a
/// variable written twice can be reported (by `envrun check`) rather than silently lost.
#[derive(Debug)]
struct Entries<T>(Vec<(serde_saphyr::Spanned<String>, T)>);

impl<T> Default for Entries<T> {
    fn default() -> Self {
        Entries(Vec::new())
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Entries<T> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<T>(std::marker::PhantomData<T>);
        impl<'de, T: Deserialize<'de>> serde::de::Visitor<'de> for V<T> {
            type Value = Entries<T>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a mapping")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<Self::Value, A::Error> {
                let mut out = Vec::new();
                while let Some(entry) = map.next_entry()? {
                    out.push(entry);
                }
                Ok(Entries(out))
            }
        }
        d.deserialize_map(V(std::marker::PhantomData))
    }
}

/// `audit:` in the manifest: where each run appends its audit record.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditConfig {
    /// A file (relative to the manifest), or `syslog`.
    pub path: PathBuf,
    /// Record the command's arguments too, not only `argv[0]` (they may hold sensitive
    /// text, such as a URL with a password).
    #[serde(default)]
    pub argv: bool,
    /// When false, a failing audit write is a warning and the run goes on.
    #[serde(default = "yes")]
    pub required: bool,
}

fn yes() -> bool {
    true
}

/// A rotation policy: variables matching `pattern` must have been changed within `max_age`.
#[derive(Clone, Debug)]
pub struct Rotation {
    /// A variable name, or a glob over names (`*_PASSWORD`).
    pub pattern: String,
    pub max_age: std::time::Duration,
    /// The text as written (`90d`), for messages.
    pub written: String,
}

/// A variable written more than once in `environment:`; the last one is used by `check`,
/// and a run refuses the manifest.
#[derive(Clone, Debug)]
pub struct Duplicate {
    pub name: String,
    /// Lines of every definition, in order.
    pub lines: Vec<u64>,
    /// Column of the name in its second definition (for the run's error message).
    pub column: u64,
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
    /// Whether `secrets:` is written in the manifest (an unused one is reported by `check`).
    pub default_written: bool,
    pub backends: BTreeMap<String, BackendConfig>,
    /// Variable name and its parsed value, in name order.
    pub environment: Vec<(String, Vec<Part>)>,
    /// Variables written more than once (see [`Duplicate`]).
    pub duplicates: Vec<Duplicate>,
    /// `rotation:` policies, in the order written.
    pub rotation: Vec<Rotation>,
    /// `audit:`, with `path` resolved against the manifest's directory (except `syslog`).
    pub audit: Option<AuditConfig>,
    /// Variables written `as_file:`: the command gets a path to an in-memory file holding
    /// the value, not the value.
    pub as_file: std::collections::BTreeSet<String>,
    /// `watch:`, each setting as written (the command line may override it).
    pub watch: crate::watch::Partial,
}

/// Checks `watch:`; an error names the key, its line and column.
fn parse_watch(w: RawWatch) -> Result<crate::watch::Partial, String> {
    use crate::watch;
    fn field<T>(
        value: Option<serde_saphyr::Spanned<String>>,
        key: &str,
        parse: impl Fn(&str) -> Result<T, String>,
    ) -> Result<Option<T>, String> {
        value
            .map(|v| {
                parse(&v.value).map_err(|e| {
                    format!(
                        "line {} column {}: watch.{key}: {e}",
                        v.referenced.line(),
                        v.referenced.column()
                    )
                })
            })
            .transpose()
    }
    Ok(watch::Partial {
        interval: field(w.interval, "interval", crate::timeout::parse)?,
        reload_on_hup: w.reload_on_hup,
        on_change: field(w.on_change, "on_change", watch::parse_on_change)?,
        stop_signal: field(w.stop_signal, "stop_signal", watch::parse_signal)?,
        stop_timeout: field(w.stop_timeout, "stop_timeout", crate::timeout::parse)?,
    })
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
        // Repeated keys reach `Entries`, which reports them; derived structs still reject
        // a repeated field (`environment:` twice).
        let options = serde_saphyr::options! {
            with_snippet: false,
            duplicate_keys: serde_saphyr::DuplicateKeyPolicy::PassThrough,
        };
        let raw: Raw = if text.trim().is_empty() {
            Raw::default()
        } else {
            serde_saphyr::from_str_with_options(text, options)
                .map_err(|e| bad(errors::explain(&e, text)))?
        };
        let mut environment: Vec<(String, Vec<Part>)> = Vec::with_capacity(raw.environment.0.len());
        let mut lines: BTreeMap<String, (Vec<u64>, u64)> = BTreeMap::new();
        let mut as_file = std::collections::BTreeSet::new();
        for (key, value) in raw.environment.0 {
            let name = key.value;
            let at = format!(
                "line {} column {}",
                value.referenced.line(),
                value.referenced.column()
            );
            let seen = lines.entry(name.clone()).or_default();
            seen.0.push(key.referenced.line());
            if seen.0.len() == 2 {
                seen.1 = key.referenced.column();
            }
            if name.is_empty() || name.contains(['=', '\0']) {
                return Err(bad(format!(
                    "{at}: `{name}` is not a valid environment variable name"
                )));
            }
            let (text, file) = match value.value.strip_prefix(AS_FILE) {
                Some(rest) => (rest, true),
                None => (value.value.as_str(), false),
            };
            let parts = reference::parse_value(text)
                .map_err(|e| bad(format!("{at}: environment.{name}: {e}")))?;
            if file {
                as_file.insert(name.clone());
            } else {
                as_file.remove(&name);
            }
            // The last definition wins, as in YAML tools that accept repeated keys.
            environment.retain(|(n, _)| *n != name);
            environment.push((name, parts));
        }
        environment.sort_by(|a, b| a.0.cmp(&b.0));
        let duplicates = lines
            .into_iter()
            .filter(|(_, (l, _))| l.len() > 1)
            .map(|(name, (lines, column))| Duplicate {
                name,
                lines,
                column,
            })
            .collect();
        let mut backends = BTreeMap::new();
        for (name, config) in raw.backends.0 {
            let at = format!(
                "line {} column {}",
                name.referenced.line(),
                name.referenced.column()
            );
            let name = name.value;
            if name.is_empty() || name.contains([':', '@', '/', '#', '?']) {
                return Err(bad(format!(
                    "{at}: backend name `{name}` may not be empty or contain `:@/#?`"
                )));
            }
            if backends.insert(name.clone(), config).is_some() {
                return Err(bad(format!(
                    "{at}: key `{name}` appears twice under `backends`; keep one"
                )));
            }
        }
        let mut rotation: Vec<Rotation> = Vec::new();
        for (pattern, age) in raw.rotation.0 {
            let at = format!(
                "line {} column {}",
                age.referenced.line(),
                age.referenced.column()
            );
            let key_at = format!(
                "line {} column {}",
                pattern.referenced.line(),
                pattern.referenced.column()
            );
            let pattern = pattern.value;
            if glob::Pattern::new(&pattern).is_err() {
                return Err(bad(format!(
                    "{at}: rotation: `{pattern}` is not a valid name pattern (use `*` and `?`)"
                )));
            }
            let max_age = humantime::parse_duration(age.value.trim()).map_err(|e| {
                bad(format!(
                    "{at}: rotation.{pattern}: `{}` is not a duration ({e}; write e.g. `90d`, `12w`, `36h`)",
                    age.value
                ))
            })?;
            if rotation.iter().any(|r| r.pattern == pattern) {
                return Err(bad(format!(
                    "{key_at}: key `{pattern}` appears twice under `rotation`; keep one"
                )));
            }
            rotation.push(Rotation {
                pattern,
                max_age,
                written: age.value.trim().to_owned(),
            });
        }
        let audit = raw.audit.map(|mut a| {
            if a.path != Path::new(crate::audit::SYSLOG) {
                a.path = base_dir.join(&a.path);
            }
            a
        });
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
        let watch = match raw.watch {
            Some(w) => parse_watch(w).map_err(bad)?,
            None => crate::watch::Partial::default(),
        };
        Ok(Manifest {
            path: Some(path.to_owned()),
            base_dir,
            tenant: raw.tenant,
            timeout,
            default_written: raw.secrets.is_some(),
            default_backend: raw.secrets.unwrap_or_default(),
            backends,
            environment,
            duplicates,
            rotation,
            audit,
            as_file,
            watch,
        })
    }

    /// The manifest for a run: a variable written twice is an error there (which one was
    /// meant?); `envrun check` reports it as a finding instead.
    pub fn refuse_duplicates(&self) -> Result<(), Error> {
        match self.duplicates.first() {
            None => Ok(()),
            Some(d) => Err(Error::ManifestParse {
                path: self.path.clone().unwrap_or_default(),
                message: format!(
                    "line {} column {}: key `{}` appears twice under `environment`; keep one (lines {})",
                    d.lines[1],
                    d.column,
                    d.name,
                    d.lines
                        .iter()
                        .map(u64::to_string)
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            }),
        }
    }

    /// The rotation policy for a variable: its exact name first, else the first pattern
    /// written that matches.
    pub fn rotation_for(&self, var: &str) -> Option<&Rotation> {
        self.rotation.iter().find(|r| r.pattern == var).or_else(|| {
            self.rotation
                .iter()
                .find(|r| glob::Pattern::new(&r.pattern).is_ok_and(|p| p.matches(var)))
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
    fn repeated_variables_are_kept_for_check_and_refused_for_a_run() {
        let m = parse("environment:\n  A: one\n  B: x\n  A: two\n").unwrap();
        assert_eq!(m.environment.len(), 2);
        assert_eq!(m.environment[0].1, vec![Part::Literal("two".into())]);
        assert_eq!(m.duplicates.len(), 1);
        assert_eq!(m.duplicates[0].lines, vec![2, 4]);
        let err = m.refuse_duplicates().unwrap_err().to_string();
        assert!(
            err.contains("line 4 column 3: key `A` appears twice") && err.contains("lines 2, 4"),
            "{err}"
        );
        let err = parse("backends:\n  p: {type: env}\n  p: {type: env}\n").unwrap_err();
        assert!(
            err.to_string()
                .contains("line 3 column 3: key `p` appears twice"),
            "{err}"
        );
    }

    #[test]
    fn rotation_policies_parse_and_match_exact_names_first() {
        let m = parse("rotation:\n  \"*_PASSWORD\": 90d\n  DB_PASSWORD: 30d\n").unwrap();
        let day = 86_400;
        assert_eq!(
            m.rotation_for("DB_PASSWORD").unwrap().max_age.as_secs(),
            30 * day
        );
        assert_eq!(
            m.rotation_for("X_PASSWORD").unwrap().max_age.as_secs(),
            90 * day
        );
        assert!(m.rotation_for("TOKEN").is_none());
        let err = parse("rotation:\n  A: soon\n").unwrap_err().to_string();
        assert!(
            err.contains("rotation.A") && err.contains("line 2"),
            "{err}"
        );
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
