//! Backends: where `secret:` references are looked up.
//!
//! A backend is one implementation of [`Backend`]. The contract:
//! - [`Backend::fetch`] receives every lookup the run needs from this backend at once
//!   (already de-duplicated), so a backend with a network round trip can batch or run them
//!   concurrently.
//! - It returns `Err` when the backend as a whole cannot answer (store unreadable, server
//!   unreachable, credentials refused): the run stops.
//! - Otherwise it returns one entry per lookup, in order: `Ok(Some(value))`,
//!   `Ok(None)` when the key does not exist, or `Err` for a failure of that key alone.
//! - Error messages name the key, backend and operation; never a value.
//!
//! Configuration is one serde-tagged enum ([`BackendConfig`]); [`BackendConfig::build`] turns
//! it into a backend in one `match`. Backends are built only when a reference uses them.

pub mod local;

use std::path::PathBuf;

use serde::Deserialize;

use crate::secret::Secret;

pub use local::{Local, LocalConfig};

/// One thing to look up: a key and its backend-specific parameters.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Lookup {
    pub key: String,
    pub params: Vec<(String, String)>,
}

/// A backend failure. The message names the backend and key; `hint` says what to try.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct BackendError {
    pub message: String,
    pub hint: Option<String>,
}

impl BackendError {
    pub fn new(message: impl Into<String>) -> BackendError {
        BackendError {
            message: message.into(),
            hint: None,
        }
    }

    pub fn with_hint(mut self, hint: impl Into<String>) -> BackendError {
        self.hint = Some(hint.into());
        self
    }
}

/// The result for one lookup: the value, `None` for "no such key", or a failure.
pub type LookupResult = Result<Option<Secret>, BackendError>;

pub trait Backend: Send + Sync {
    /// The backend's type as written in the manifest (`local`, `vault`, ...).
    fn kind(&self) -> &'static str;

    /// The `?name=value` parameters this backend understands; any other is an error
    /// reported before anything is fetched.
    fn params(&self) -> &'static [&'static str] {
        &[]
    }

    /// Looks up every key at once; see the module documentation for the contract.
    fn fetch(&self, lookups: &[Lookup]) -> Result<Vec<LookupResult>, BackendError>;

    /// Picks `#field` out of a value. The default reads the value as a JSON object.
    fn field(&self, value: &Secret, field: &str) -> Result<Secret, String> {
        json_field(value, field)
    }
}

/// Where a backend is built: paths resolve against `base_dir`.
#[derive(Clone, Debug)]
pub struct Context {
    /// The manifest's directory, or the working directory when there is no manifest.
    pub base_dir: PathBuf,
    /// `--tenant`, when given.
    pub tenant: Option<String>,
}

/// A backend as written in the manifest (`secrets:` or an entry of `backends:`).
#[derive(Clone, Debug, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase", deny_unknown_fields)]
pub enum BackendConfig {
    Local(LocalConfig),
}

impl Default for BackendConfig {
    fn default() -> Self {
        BackendConfig::Local(LocalConfig::default())
    }
}

impl BackendConfig {
    pub fn kind(&self) -> &'static str {
        match self {
            BackendConfig::Local(_) => "local",
        }
    }

    pub fn build(&self, ctx: &Context) -> Result<Box<dyn Backend>, BackendError> {
        Ok(match self {
            BackendConfig::Local(c) => Box::new(Local::new(c, ctx)),
        })
    }
}

/// Selects a field of a JSON-object value: strings as they are, other JSON as its text.
pub fn json_field(value: &Secret, field: &str) -> Result<Secret, String> {
    let doc: serde_json::Value = serde_json::from_slice(value.expose())
        .map_err(|_| format!("field `{field}` asked for, but the value is not a JSON object"))?;
    let serde_json::Value::Object(map) = doc else {
        return Err(format!(
            "field `{field}` asked for, but the value is not a JSON object"
        ));
    };
    match map.get(field) {
        Some(serde_json::Value::String(s)) => Ok(Secret::from_slice(s.as_bytes())),
        Some(other) => Ok(Secret::from(other.to_string())),
        None => {
            let names: Vec<&str> = map.keys().map(String::as_str).collect();
            Err(format!("no field `{field}` (fields: {})", names.join(", ")))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_field_selects_and_lists_names_only() {
        let v = Secret::from(String::from(
            r#"{"user":"app","password":"hunter22","port":5432}"#,
        ));
        assert_eq!(json_field(&v, "password").unwrap().expose(), b"hunter22");
        assert_eq!(json_field(&v, "port").unwrap().expose(), b"5432");
        let err = json_field(&v, "nope").unwrap_err();
        assert_eq!(err, "no field `nope` (fields: password, port, user)");
        assert!(!err.contains("hunter22"));
        let plain = Secret::from(String::from("hunter22"));
        assert!(!json_field(&plain, "x").unwrap_err().contains("hunter22"));
    }
}
