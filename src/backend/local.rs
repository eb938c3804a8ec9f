//! `type: local`: the encrypted store ([`crate::store`]).
//!
//! Paths: `path:` / `key_file:` from the manifest (relative to it); otherwise
//! `$ENVRUN_STORE` / `$ENVRUN_KEY_FILE`; otherwise `secrets.json.enc` / `secrets.key` next to
//! the manifest. `$ENVRUN_KEY` (the key in base64) takes precedence over any key file, for
//! containers that receive the key as an environment variable.

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

impl Backend for Local {
    fn kind(&self) -> &'static str {
        "local"
    }

    fn fetch(&self, lookups: &[Lookup]) -> Result<Vec<LookupResult>, BackendError> {
        let to_err = |e: store::StoreError| {
            let hint = e.hint();
            BackendError {
                message: e.to_string(),
                hint,
            }
        };
        let key = self.load_key().map_err(to_err)?;
        // The decrypted contents are wiped when they go out of scope here.
        let contents = store::read(&self.store, &key).map_err(to_err)?;
        Ok(lookups
            .iter()
            .map(|l| Ok(contents.secrets.get(&l.key).cloned().map(Found::Value)))
            .collect())
    }
}
