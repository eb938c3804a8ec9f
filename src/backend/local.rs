//! `type: local`: the encrypted store ([`crate::store`]).
//!
//! Paths: `path:` / `key_file:` from the manifest (relative to it); otherwise
//! `$ENVRUN_STORE` / `$ENVRUN_KEY_FILE`; otherwise `secrets.json.enc` / `secrets.key` next to
//! the manifest. `$ENVRUN_KEY` (the key in base64) takes precedence over any key file, for
//! containers that receive the key as an environment variable.
//!
//! A store that does not open with the key file is tried with `KEYFILE.old` too: that is
//! the state a reader sees in the middle of `envrun secrets rotate-key` (or after one that
//! was interrupted), and the next write re-encrypts it under the new key.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::{Backend, BackendError, Context, Found, Lookup, LookupResult};
use crate::store::{self, Key};

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LocalConfig {
    pub path: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
}

/// Where the key comes from.
#[derive(Clone, Debug)]
pub enum KeySource {
    /// `$ENVRUN_KEY`.
    Env,
    File(PathBuf),
}

#[derive(Debug)]
pub struct Local {
    pub store: PathBuf,
    pub key: KeySource,
}

impl Local {
    pub fn new(config: &LocalConfig, ctx: &Context) -> Local {
        let (store, key) = paths(
            config.path.as_deref(),
            config.key_file.as_deref(),
            &ctx.base_dir,
        );
        Local { store, key }
    }

    pub fn load_key(&self) -> Result<Key, store::StoreError> {
        load_key(&self.key)
    }
}

/// Applies the precedence rules in the module documentation.
pub fn paths(path: Option<&Path>, key_file: Option<&Path>, base: &Path) -> (PathBuf, KeySource) {
    let from_env = |var: &str| {
        std::env::var_os(var)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    let store = path
        .map(|p| base.join(p))
        .or_else(|| from_env("ENVRUN_STORE"))
        .unwrap_or_else(|| base.join(store::DEFAULT_STORE));
    let key = if std::env::var_os("ENVRUN_KEY").is_some_and(|v| !v.is_empty()) {
        KeySource::Env
    } else {
        KeySource::File(
            key_file
                .map(|p| base.join(p))
                .or_else(|| from_env("ENVRUN_KEY_FILE"))
                .unwrap_or_else(|| base.join(store::DEFAULT_KEY)),
        )
    };
    (store, key)
}

pub fn load_key(source: &KeySource) -> Result<Key, store::StoreError> {
    match source {
        KeySource::Env => {
            let text = zeroize::Zeroizing::new(
                std::env::var_os("ENVRUN_KEY")
                    .unwrap_or_default()
                    .into_encoded_bytes(),
            );
            Key::from_base64(&text, "$ENVRUN_KEY")
        }
        KeySource::File(path) => Key::load(path),
    }
}

/// `secrets.key` -> `secrets.key.old`: the previous key, kept by `rotate-key`.
pub fn old_key_path(key: &Path) -> PathBuf {
    let mut name = key.file_name().unwrap_or_default().to_owned();
    name.push(".old");
    key.with_file_name(name)
}

/// An opened store: its contents and the current key (the one new writes are sealed with).
#[derive(Debug)]
pub struct Opened {
    pub key: Key,
    pub contents: store::Contents,
    /// The store opened only with the old key: a key rotation was interrupted.
    pub with_old_key: bool,
}

/// Opens the store with the current key, falling back to the old key file (see the module
/// documentation). Errors are those of the current key.
pub fn open_store(store_path: &Path, source: &KeySource) -> Result<Opened, store::StoreError> {
    let key = load_key(source)?;
    match store::read(store_path, &key) {
        Ok(contents) => Ok(Opened {
            key,
            contents,
            with_old_key: false,
        }),
        Err(err @ store::StoreError::Decrypt(_)) => {
            let KeySource::File(path) = source else {
                return Err(err);
            };
            let old = old_key_path(path);
            match Key::load(&old).and_then(|old| store::read(store_path, &old)) {
                Ok(contents) => Ok(Opened {
                    key,
                    contents,
                    with_old_key: true,
                }),
                Err(_) => Err(err),
            }
        }
        Err(err) => Err(err),
    }
}

impl Backend for Local {
    fn kind(&self) -> &'static str {
        "local"
    }

    fn fetch(&self, lookups: &[Lookup]) -> Result<Vec<LookupResult>, BackendError> {
        let to_err = |e: store::StoreError| {
            let hint = e.hint();
            BackendError {
                hint,
                ..BackendError::new(e.to_string())
            }
        };
        // The decrypted contents are wiped when they go out of scope here.
        let contents = open_store(&self.store, &self.key).map_err(to_err)?.contents;
        Ok(lookups
            .iter()
            .map(|l| {
                let found = contents.secrets.get(&l.key).cloned().map(Found::Value);
                Ok(found.map(|f| f.updated_opt(contents.updated.get(&l.key).copied())))
            })
            .collect())
    }

    /// The store records when `envrun secrets set` (or `generate`, `import`) last wrote
    /// each secret; entries from a format 1 store have no time until they are set again.
    fn reports_age(&self) -> bool {
        true
    }
}
