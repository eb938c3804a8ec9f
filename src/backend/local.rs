//! `type: local`: the encrypted store ([`crate::store`]).
//!
//! Paths: `path:` / `key_file:` from the manifest (relative to it); otherwise
//! `$ENVRUN_STORE` / `$ENVRUN_KEY_FILE`; otherwise `secrets.json.enc` / `secrets.key` next to
//! the manifest. `$ENVRUN_KEY` (the key in base64) takes precedence over any key file, for
//! containers that receive the key as an environment variable.
//!
//! Keys, and the fallback to `KEYFILE.old` during a rotation, are the store's business
//! ([`store::KeySource`], [`store::read_with`]).

use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::{Backend, BackendError, Context, Found, Lookup, LookupResult};
use crate::store::{self, KeySource};

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LocalConfig {
    pub path: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
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
    let key = KeySource::choose(
        key_file
            .map(|p| base.join(p))
            .or_else(|| from_env("ENVRUN_KEY_FILE"))
            .unwrap_or_else(|| base.join(store::DEFAULT_KEY)),
    );
    (store, key)
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
        let contents = store::read_with(&self.store, &self.key)
            .map_err(to_err)?
            .contents;
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

    fn not_found_hint(&self, lookup: &Lookup) -> Option<String> {
        Some(format!(
            "`envrun secrets set {}` adds it to {}; `envrun secrets list` shows the names it holds",
            lookup.key,
            self.store.display()
        ))
    }
}
