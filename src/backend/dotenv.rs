//! `type: dotenv`: secrets from one or more `.env` files, for local development.
//!
//! `files:` lists the files (default `[.env]`), relative to the manifest; a later file wins
//! over an earlier one for the same name. An entry is a path, or `{ path: ..., required:
//! false }` (the shape of Docker Compose's `env_file`) for a file that may be absent; a
//! required file that is missing is an error naming it. Parsing is dotenvy's: quoting,
//! `export ` prefixes, multi-line quoted values, and `${VAR}` expansion from envrun's
//! environment and earlier lines of the same file. `secret:NAME` reads `NAME` exactly as
//! written in the file; this backend has no notion of tenants.
//!
//! Values are moved into [`Secret`]s as soon as dotenvy hands them over (the `String` is
//! wiped). dotenvy's own line buffer and its expansion table are freed without wiping; that
//! is a limit of the crate, noted in the security section of the docs.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::{Backend, BackendError, Context, Found, Lookup, LookupResult};
use crate::fileio::{self, FileError, Follow};
use crate::secret::{MAX_VALUE, Secret};

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DotenvConfig {
    #[serde(default = "default_files")]
    pub files: Vec<DotenvFile>,
}

impl Default for DotenvConfig {
    fn default() -> Self {
        DotenvConfig {
            files: default_files(),
        }
    }
}

fn default_files() -> Vec<DotenvFile> {
    vec![DotenvFile::Path(PathBuf::from(".env"))]
}

/// One entry of `files:`: a path, or `{ path: ..., required: false }`.
#[derive(Clone, Debug)]
pub enum DotenvFile {
    Path(PathBuf),
    Entry { path: PathBuf, required: bool },
}

/// The mapping form of an entry; unknown keys are errors (`requird: false` must not
/// silently mean required).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Entry {
    path: PathBuf,
    #[serde(default = "yes")]
    required: bool,
}

// By hand rather than `#[serde(untagged)]`: an untagged enum accepts unknown keys in the
// mapping form and reports any mistake as "did not match any variant", naming the type.
impl<'de> Deserialize<'de> for DotenvFile {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = DotenvFile;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a file path, or `{ path: FILE, required: false }`")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<DotenvFile, E> {
                Ok(DotenvFile::Path(PathBuf::from(v)))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                map: A,
            ) -> Result<DotenvFile, A::Error> {
                let e = Entry::deserialize(serde::de::value::MapAccessDeserializer::new(map))?;
                Ok(DotenvFile::Entry {
                    path: e.path,
                    required: e.required,
                })
            }
        }
        d.deserialize_any(V)
    }
}

fn yes() -> bool {
    true
}

#[derive(Debug)]
pub struct Dotenv {
    /// Full path and whether it must exist, in order.
    files: Vec<(PathBuf, bool)>,
}

impl Dotenv {
    pub fn new(config: &DotenvConfig, ctx: &Context) -> Dotenv {
        let files = config
            .files
            .iter()
            .map(|f| match f {
                DotenvFile::Path(p) => (ctx.base_dir.join(p), true),
                DotenvFile::Entry { path, required } => (ctx.base_dir.join(path), *required),
            })
            .collect();
        Dotenv { files }
    }
}

impl Backend for Dotenv {
    fn kind(&self) -> &'static str {
        "dotenv"
    }

    fn fetch(&self, lookups: &[Lookup]) -> Result<Vec<LookupResult>, BackendError> {
        let mut vars: BTreeMap<String, Secret> = BTreeMap::new();
        for (path, required) in &self.files {
            let data = match fileio::read_regular(path, MAX_VALUE, Follow::Yes) {
                Ok((_, data)) => data,
                Err(FileError::NotFound(_)) if !required => continue,
                Err(e @ FileError::NotFound(_)) => {
                    return Err(BackendError::new(e.to_string()).with_hint(
                        "create the file, or list it as `{ path: ..., required: false }` under `files:`",
                    ));
                }
                Err(e) => {
                    let hint = e.hint();
                    let err = BackendError::new(e.to_string());
                    return Err(match hint {
                        Some(h) => err.with_hint(h),
                        None => err,
                    });
                }
            };
            // Later files win: each entry replaces what an earlier file said.
            vars.extend(parse(data.as_slice(), path)?);
        }
        Ok(lookups
            .iter()
            .map(|l| Ok(vars.get(&l.key).cloned().map(Found::Value)))
            .collect())
    }

    fn not_found_hint(&self, lookup: &Lookup) -> Option<String> {
        let file = self.files.last().map(|(p, _)| p.display().to_string())?;
        Some(format!("add a line `{}=...` to {file}", lookup.key))
    }

    fn looked_for(&self, _lookup: &Lookup) -> Option<String> {
        let names: Vec<String> = self
            .files
            .iter()
            .map(|(p, _)| p.display().to_string())
            .collect();
        Some(format!("looked in {}", names.join(", ")))
    }
}

/// Parses `.env` text with dotenvy. Within one file the last line for a name wins (as in a
/// shell). Errors name the file and the entry before the bad one, never a line's text:
/// dotenvy's own parse error quotes the whole line, value included, so it is not shown.
pub fn parse(reader: impl Read, path: &Path) -> Result<BTreeMap<String, Secret>, BackendError> {
    let mut out = BTreeMap::new();
    let mut last: Option<String> = None;
    for item in dotenvy::from_read_iter(reader) {
        match item {
            Ok((name, value)) => {
                out.insert(name.clone(), Secret::from(value));
                last = Some(name);
            }
            Err(dotenvy::Error::Io(e)) => {
                return Err(BackendError::new(format!(
                    "cannot read {}: {e}",
                    path.display()
                )));
            }
            Err(_) => {
                let place = match &last {
                    Some(name) => format!("the entry after `{name}`"),
                    None => String::from("the first entry"),
                };
                return Err(BackendError::new(format!(
                    "cannot parse {}: {place} is not NAME=value (or has an unclosed quote)",
                    path.display()
                ))
                .with_hint("check the quoting of that line; see the dotenv format in the docs"));
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_errors_never_quote_the_line() {
        let text = "A=1\nB=\"canary-value-unclosed\n";
        let err = parse(text.as_bytes(), Path::new("x.env")).unwrap_err();
        assert!(err.message.contains("after `A`"), "{}", err.message);
        assert!(!err.message.contains("canary"), "{}", err.message);
    }

    #[test]
    fn dotenv_syntax_as_dotenvy_reads_it() {
        let text = "export ENVRUN_UNIT_A=1\nB='two words'\nC=\"multi\nline\"\nD=${ENVRUN_UNIT_A}-x\n# comment\nENVRUN_UNIT_A=3\n";
        let vars = parse(text.as_bytes(), Path::new("x.env")).unwrap();
        let get = |k: &str| String::from_utf8(vars[k].expose().to_vec()).unwrap();
        assert_eq!(get("ENVRUN_UNIT_A"), "3");
        assert_eq!(get("B"), "two words");
        assert_eq!(get("C"), "multi\nline");
        assert_eq!(get("D"), "1-x");
    }
}
