//! `type: files`: one file per secret in a directory, as Docker and Kubernetes mount them.
//!
//! `secret:NAME` looks in `{dir}/{tenant}` (when there is a tenant), then in `{dir}`; in each
//! directory it tries, in this order, `NAME`, `NAME.txt`, `NAME.key` (one value: the file's
//! bytes, less one trailing newline), then `NAME.json` (a JSON object) and `NAME.env` (dotenv
//! lines), which hold named fields: `secret:NAME#field` picks one, and a reference without
//! `#field` is an error listing the field names. The first file found wins, so a tenant's
//! file of any kind shadows every global one. Directories with a candidate's name are
//! skipped. `dir` defaults to `/run/secrets` and is relative to the manifest.
//!
//! Symlinks are followed only when the file they finally reach is inside `dir` (both sides
//! canonicalized): Kubernetes projects secrets as `dir/NAME -> ..data/NAME` and
//! `dir/..data -> ..2024_01_01_00_00_00.123/`, which stays inside; a link to `/etc/shadow`
//! or `../elsewhere` is refused with an error. The resolved path is then opened with
//! `O_NOFOLLOW` and checked to be a regular file, so a FIFO or device is never read.
//!
//! A file readable by other users gets one warning naming it, except where that is how the
//! platform mounts secrets: Docker Compose mounts them 0444 and Kubernetes 0644, under
//! `/run/secrets` and `/var/run/secrets`, and a warning on every run in every container
//! would teach people to ignore it. `warn_readable: false` turns the warning off.

use std::collections::BTreeSet;
use std::fs::{File, Metadata};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::Deserialize;

use super::{Backend, BackendError, Context, Found, Lookup, LookupResult, json_fields, wipe};
use crate::fileio::{self, FileError, Follow};
use crate::secret::{MAX_VALUE, Secret};

/// Where Docker (and many Kubernetes manifests) mount secrets.
pub const DEFAULT_DIR: &str = "/run/secrets";

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FilesConfig {
    #[serde(default = "default_dir")]
    pub dir: PathBuf,
    /// Warn about a secret file other users can read (see the module documentation).
    #[serde(default = "yes")]
    pub warn_readable: bool,
}

impl Default for FilesConfig {
    fn default() -> Self {
        FilesConfig {
            dir: default_dir(),
            warn_readable: true,
        }
    }
}

fn yes() -> bool {
    true
}

/// Where container platforms mount secrets, with the modes they use there.
const PLATFORM_DIRS: [&str; 2] = ["/run/secrets", "/var/run/secrets"];
const PLATFORM_MODES: [u32; 2] = [0o444, 0o644];

/// Whether a world-readable `path` (or the file it resolves to, `real`) is mounted the way
/// Docker or Kubernetes mounts secrets, which is not worth a warning.
fn platform_mount(path: &Path, real: &Path, mode: u32) -> bool {
    PLATFORM_MODES.contains(&(mode & 0o7777))
        && [path, real]
            .iter()
            .any(|p| PLATFORM_DIRS.iter().any(|d| p.starts_with(d)))
}

fn default_dir() -> PathBuf {
    PathBuf::from(DEFAULT_DIR)
}

/// How a file's content is read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Plain,
    Json,
    Dotenv,
}

/// The candidates in each directory, in order.
const SUFFIXES: [(&str, Kind); 5] = [
    ("", Kind::Plain),
    (".txt", Kind::Plain),
    (".key", Kind::Plain),
    (".json", Kind::Json),
    (".env", Kind::Dotenv),
];

#[derive(Debug)]
pub struct Files {
    dir: PathBuf,
    tenant: Option<String>,
    warn_readable: bool,
    /// What [`Backend::warnings`] hands back.
    warnings: Mutex<Vec<String>>,
}

impl Files {
    pub fn new(config: &FilesConfig, ctx: &Context) -> Files {
        Files {
            dir: ctx.base_dir.join(&config.dir),
            tenant: ctx.tenant.clone(),
            warn_readable: config.warn_readable,
            warnings: Mutex::new(Vec::new()),
        }
    }

    fn warn(&self, message: String) {
        self.warnings
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(message);
    }

    /// The directories searched, in order.
    fn dirs(&self) -> Vec<PathBuf> {
        let mut dirs = Vec::with_capacity(2);
        if let Some(t) = &self.tenant {
            dirs.push(self.dir.join(t));
        }
        dirs.push(self.dir.clone());
        dirs
    }

    fn lookup(&self, root: &Path, key: &str, warned: &mut BTreeSet<PathBuf>) -> LookupResult {
        check_key(key)?;
        for dir in self.dirs() {
            for (suffix, kind) in SUFFIXES {
                let path = dir.join(format!("{key}{suffix}"));
                let Some((file, meta, real)) = self.open_inside(root, &path)? else {
                    continue;
                };
                let mode = meta.mode();
                if self.warn_readable
                    && mode & 0o004 != 0
                    && !platform_mount(&path, &real, mode)
                    && warned.insert(path.clone())
                {
                    self.warn(format!(
                        "{} is readable by other users (mode {:04o}); make it 0400 or 0440, or set `warn_readable: false` if that is intended",
                        path.display(),
                        mode & 0o7777
                    ));
                }
                return read(file, &meta, &path, kind).map(Some);
            }
        }
        Ok(None)
    }

    /// Opens `path` if it exists, is (or leads by symlinks to) a regular file inside `root`.
    /// `Ok(None)`: nothing there, or a directory. Returns the file and its mode.
    fn open_inside(
        &self,
        root: &Path,
        path: &Path,
    ) -> Result<Option<(File, Metadata, PathBuf)>, BackendError> {
        let real = match std::fs::canonicalize(path) {
            Ok(p) => p,
            // ENOTDIR: a key `a/b` where `a` is a file; nothing there either.
            Err(e)
                if e.kind() == std::io::ErrorKind::NotFound
                    || e.raw_os_error() == Some(libc::ENOTDIR) =>
            {
                return Ok(None);
            }
            Err(e) => {
                return Err(BackendError::new(format!(
                    "cannot resolve {}: {e}",
                    path.display()
                )));
            }
        };
        if !real.starts_with(root) {
            return Err(BackendError::new(format!(
                "refused {}: it resolves to {}, outside {}",
                path.display(),
                real.display(),
                self.dir.display()
            ))
            .with_hint("symlinks are followed only while they stay inside the secrets directory"));
        }
        // O_NOFOLLOW: `real` had no symlinks a moment ago; refuse one swapped in since.
        // Opening does not block (a FIFO must not hang), and only a regular file is read.
        match fileio::open_regular(&real, Follow::No) {
            Ok((file, meta)) => Ok(Some((file, meta, real))),
            Err(FileError::NotRegular {
                what: "a directory",
                ..
            }) => Ok(None),
            Err(FileError::NotRegular { what, .. }) => Err(BackendError::new(format!(
                "{} is {what}, not a regular file",
                path.display()
            ))
            .with_hint(
                "a secret file must be a regular file (Docker and Kubernetes mount them so)",
            )),
            Err(e) => Err(BackendError::new(format!(
                "cannot read {}: {}",
                path.display(),
                e
            ))),
        }
    }
}

/// A key is a relative path of plain segments: no `..`, `.` or empty segment, no NUL.
fn check_key(key: &str) -> Result<(), BackendError> {
    let bad = key.contains('\0')
        || key
            .split('/')
            .any(|s| s.is_empty() || s == "." || s == "..");
    if bad {
        return Err(BackendError::new(format!(
            "key `{}` is not a file name inside the secrets directory (no `..`, `.`, empty segments or leading `/`)",
            key.escape_default()
        )));
    }
    Ok(())
}

/// Reads a found file according to its kind.
fn read(file: File, meta: &Metadata, path: &Path, kind: Kind) -> Result<Found, BackendError> {
    let mut buf = fileio::read_capped(file, meta, path, MAX_VALUE).map_err(|e| match e {
        FileError::TooLarge { .. } => BackendError::new(e.to_string())
            .with_hint("a secret file is at most 1 MiB; check that this is the right file"),
        e => BackendError::new(e.to_string()),
    })?;
    match kind {
        Kind::Plain => {
            crate::secret::trim_one_newline(&mut buf);
            Ok(Found::Value(Secret::from_slice(&buf)))
        }
        Kind::Dotenv => {
            let fields = super::dotenv::parse(buf.as_slice(), path);
            drop(buf);
            Ok(Found::Fields(fields?))
        }
        Kind::Json => {
            let parsed = serde_json::from_slice::<serde_json::Value>(&buf);
            drop(buf);
            // serde_json's message can quote part of the input; only the position is shown.
            let mut doc = parsed.map_err(|e| {
                BackendError::new(format!(
                    "{} is not valid JSON (line {} column {})",
                    path.display(),
                    e.line(),
                    e.column()
                ))
            })?;
            let fields = json_fields(&mut doc);
            wipe(&mut doc);
            fields
                .ok_or_else(|| {
                    BackendError::new(format!("{} is not a JSON object of fields", path.display()))
                })
                .map(Found::Fields)
        }
    }
}

impl Backend for Files {
    fn kind(&self) -> &'static str {
        "files"
    }

    fn fetch(&self, lookups: &[Lookup]) -> Result<Vec<LookupResult>, BackendError> {
        let root = std::fs::canonicalize(&self.dir)
            .ok()
            .filter(|p| p.is_dir())
            .ok_or_else(|| {
                BackendError::new(format!(
                    "secrets directory {} does not exist or is not a directory",
                    self.dir.display()
                ))
                .with_hint("mount the secrets there, or set `dir:` in the manifest")
            })?;
        let mut warned = BTreeSet::new();
        Ok(lookups
            .iter()
            .map(|l| self.lookup(&root, &l.key, &mut warned))
            .collect())
    }

    fn tenant(&self) -> Option<&str> {
        self.tenant.as_deref()
    }

    fn warnings(&self) -> Vec<String> {
        std::mem::take(&mut *self.warnings.lock().unwrap_or_else(|e| e.into_inner()))
    }

    fn not_found_hint(&self, lookup: &Lookup) -> Option<String> {
        Some(format!(
            "create {} (or mount the secret there), or set `dir:` in the manifest",
            self.dir.join(&lookup.key).display()
        ))
    }

    fn looked_for(&self, lookup: &Lookup) -> Option<String> {
        let key = &lookup.key;
        let dirs: Vec<String> = self
            .dirs()
            .iter()
            .map(|d| d.display().to_string())
            .collect();
        Some(format!(
            "looked for {key}, {key}.txt, {key}.key, {key}.json, {key}.env in {}",
            dirs.join(", then ")
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_cannot_climb_out() {
        for bad in ["..", "../x", "a/../b", "/abs", "a//b", ".", "a/"] {
            assert!(check_key(bad).is_err(), "{bad}");
        }
        for ok in ["TOKEN", "db/password", "..data_is_a_name"] {
            assert!(check_key(ok).is_ok(), "{ok}");
        }
    }

    #[test]
    fn json_fields_are_strings_or_json_text() {
        let mut doc: serde_json::Value =
            serde_json::from_str(r#"{"user":"app","port":5432,"opts":{"a":"b"}}"#).unwrap();
        let f = json_fields(&mut doc).unwrap();
        assert_eq!(f["user"].expose(), b"app");
        assert_eq!(f["port"].expose(), b"5432");
        assert_eq!(f["opts"].expose(), br#"{"a":"b"}"#);
        wipe(&mut doc);
        assert_eq!(doc["opts"]["a"], "");
    }
}
