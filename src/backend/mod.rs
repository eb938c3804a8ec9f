//! Backends: where `secret:` references are looked up.
//!
//! A backend is one implementation of [`Backend`]. The contract:
//! - [`Backend::fetch`] receives every lookup the run needs from this backend at once
//!   (already de-duplicated), so a backend with a network round trip can batch or run them
//!   concurrently.
//! - It returns `Err` when the backend as a whole cannot answer (store unreadable, server
//!   unreachable, credentials refused): the run stops.
//! - Otherwise it returns one entry per lookup, in order: `Ok(Some(found))`,
//!   `Ok(None)` when the key does not exist, or `Err` for a failure of that key alone.
//!   [`Found::Value`] is one value (`#field` reads it as JSON, see [`Backend::field`]);
//!   [`Found::Fields`] is a record of named values (a `.json` or `.env` file, a Vault KV
//!   secret), where `#field` is required. The backend says which, because a lookup does not
//!   carry the field: `secret:DB#user` and `secret:DB#password` are one lookup of `DB`.
//! - Error messages name the key, backend and operation; never a value.
//! - A backend that reads envrun's own environment reports the variables it read
//!   ([`Backend::consumed_env`]); they are not passed on to the command.
//! - A backend that honours tenants (see [`tenant`]) reports the tenant ([`Backend::tenant`]);
//!   every message about that backend names it.
//! - A backend that knows when a value was last changed (for `rotation:` policies and
//!   `envrun check`) attaches the time to what it found with [`Found::updated_at`] (or
//!   [`Found::updated_opt`]) and answers `true` from [`Backend::reports_age`]. A backend that
//!   keeps no such time leaves both alone: `check` then says the backend has no age, rather
//!   than calling a value fresh. [`parse_time`] and [`unix_time`] read the usual encodings.
//! - A backend never prints: what it wants to tell the user without failing (a secret file
//!   other users can read) it hands back from [`Backend::warnings`], and the caller decides
//!   how to show it. So backends sit below `ui` and `error`, and the imports only point down.
//!
//! Configuration is one serde-tagged enum ([`BackendConfig`]); [`BackendConfig::build`] turns
//! it into a backend in one `match`. Backends are built only when a reference uses them.

#[cfg(feature = "aws")]
pub mod aws;
#[cfg(feature = "azure")]
pub mod azure;
pub mod dotenv;
pub mod env;
pub mod files;
#[cfg(feature = "gcp")]
pub mod gcp;
pub mod local;
#[cfg(feature = "net")]
pub mod net;
pub mod tenant;
#[cfg(feature = "vault")]
pub mod vault;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime};

use serde::Deserialize;
use zeroize::Zeroize;

use crate::secret::Secret;

pub use dotenv::{Dotenv, DotenvConfig};
pub use env::{Env, EnvConfig};
pub use files::{Files, FilesConfig};
pub use local::{Local, LocalConfig};

/// One thing to look up: a key and its backend-specific parameters.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Lookup {
    pub key: String,
    pub params: Vec<(String, String)>,
}

#[cfg(test)]
impl Lookup {
    /// A lookup of `key` with `params`, for the backends' unit tests.
    pub fn of(key: &str, params: &[(&str, &str)]) -> Lookup {
        Lookup {
            key: key.into(),
            params: params
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        }
    }
}

/// What kind of failure a [`BackendError`] is: the resolver picks its hint by kind, and
/// [`net::retry`](crate::backend) retries only the kinds that can pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The key, path or version does not exist (a backend may also answer `Ok(None)`).
    NotFound,
    /// Credentials missing, refused or without the right permission (401, 403).
    Denied,
    /// The server could not be reached: connection refused or reset, DNS, TLS handshake.
    /// Retried.
    Unreachable,
    /// The server asked envrun to slow down (429, throttling). Retried.
    Throttled,
    /// The server failed or is not ready yet (5xx except 501, Vault's 412). Retried.
    Unavailable,
    /// The server answered something envrun cannot use (bad JSON, 400, 501, a disabled
    /// or destroyed version).
    BadResponse,
    /// The deadline (`--timeout`) passed before the backend answered.
    Timeout,
    /// The backend's configuration is wrong or incomplete (no address, no region, a feature
    /// envrun was built without).
    Config,
    /// Anything else (local I/O, a store that does not open).
    Other,
}

impl ErrorKind {
    /// Whether trying again, within the deadline, can succeed.
    pub fn is_transient(self) -> bool {
        matches!(
            self,
            ErrorKind::Unreachable | ErrorKind::Throttled | ErrorKind::Unavailable
        )
    }
}

/// A backend failure. The message names the backend and key (never a value); `hint` says
/// what to try; `kind` says what sort of failure it is.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct BackendError {
    pub message: String,
    pub hint: Option<String>,
    pub kind: ErrorKind,
    /// How long the server asked envrun to wait before trying again (`Retry-After`).
    pub retry_after: Option<std::time::Duration>,
}

impl BackendError {
    pub fn new(message: impl Into<String>) -> BackendError {
        BackendError::of(ErrorKind::Other, message)
    }

    /// An error of a given kind.
    pub fn of(kind: ErrorKind, message: impl Into<String>) -> BackendError {
        BackendError {
            message: message.into(),
            hint: None,
            kind,
            retry_after: None,
        }
    }

    pub fn with_hint(mut self, hint: impl Into<String>) -> BackendError {
        self.hint = Some(hint.into());
        self
    }

    pub fn with_retry_after(mut self, after: Option<std::time::Duration>) -> BackendError {
        self.retry_after = after;
        self
    }

    /// The hint to print: the backend's own, else one chosen by kind.
    pub fn hint_or_default(&self) -> Option<String> {
        if let Some(h) = &self.hint {
            return Some(h.clone());
        }
        let hint = match self.kind {
            ErrorKind::Denied => "check the backend's credentials and that they may read this key",
            ErrorKind::Unreachable => {
                "check the backend's address and that the server is reachable from here"
            }
            ErrorKind::Throttled | ErrorKind::Unavailable => {
                "the server kept failing until the deadline; try again later or raise --timeout"
            }
            ErrorKind::Timeout => {
                "the backend did not answer in time; raise --timeout (or `timeout:` in the manifest) or check the server"
            }
            ErrorKind::NotFound | ErrorKind::BadResponse | ErrorKind::Config | ErrorKind::Other => {
                return None;
            }
        };
        Some(hint.to_owned())
    }
}

/// What a backend found for one key.
#[derive(Clone, Debug)]
pub enum Found {
    /// One value; `#field` reads it as a JSON object ([`Backend::field`]).
    Value(Secret),
    /// Named values; `#field` picks one and is required.
    Fields(BTreeMap<String, Secret>),
    /// What was found, and when it was last changed; built with [`Found::updated_at`].
    Updated(Box<Found>, SystemTime),
}

impl From<Secret> for Found {
    fn from(s: Secret) -> Found {
        Found::Value(s)
    }
}

impl Found {
    /// Records when the value was last changed (Vault `created_time`, AWS
    /// `LastChangedDate`, ...): `Found::Value(v).updated_at(t)`.
    pub fn updated_at(self, when: SystemTime) -> Found {
        match self {
            Found::Updated(inner, _) => Found::Updated(inner, when),
            found => Found::Updated(Box::new(found), when),
        }
    }

    /// [`Found::updated_at`] when the time is known, else `self` unchanged.
    pub fn updated_opt(self, when: Option<SystemTime>) -> Found {
        match when {
            Some(t) => self.updated_at(t),
            None => self,
        }
    }

    /// When the value was last changed, if the backend said.
    pub fn updated(&self) -> Option<SystemTime> {
        match self {
            Found::Updated(_, when) => Some(*when),
            _ => None,
        }
    }

    /// Applies `#field` (or its absence). Errors list field names, never values.
    pub fn select(
        &self,
        backend: &dyn Backend,
        field: Option<&str>,
    ) -> Result<Secret, BackendError> {
        match (self, field) {
            (Found::Updated(inner, _), field) => inner.select(backend, field),
            (Found::Value(v), None) => Ok(v.clone()),
            (Found::Value(v), Some(f)) => backend.field(v, f),
            (Found::Fields(map), Some(f)) => map.get(f).cloned().ok_or_else(|| no_field(f, map)),
            (Found::Fields(map), None) => match map.values().next() {
                Some(only) if map.len() == 1 && backend.one_field_is_the_value() => {
                    Ok(only.clone())
                }
                _ => Err(BackendError::new(format!(
                    "holds several fields, pick one with `#FIELD` (fields: {})",
                    names(map)
                ))
                .with_hint("add `#FIELD` to the reference, e.g. `secret:DB#password`")),
            },
        }
    }
}

fn no_field(field: &str, map: &BTreeMap<String, Secret>) -> BackendError {
    BackendError::new(format!("no field `{field}` (fields: {})", names(map)))
        .with_hint("use one of the field names listed, after `#` in the reference")
}

fn names(map: &BTreeMap<String, Secret>) -> String {
    if map.is_empty() {
        return String::from("none");
    }
    map.keys()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .join(", ")
}

/// The result for one lookup: what was found, `None` for "no such key", or a failure.
pub type LookupResult = Result<Option<Found>, BackendError>;

pub trait Backend: Send + Sync {
    /// The backend's type as written in the manifest (`local`, `vault`, ...).
    fn kind(&self) -> &'static str;

    /// The `?name=value` parameters this backend understands; any other is an error
    /// reported before anything is fetched.
    fn params(&self) -> &'static [&'static str] {
        &[]
    }

    /// Looks up every key at once; see the module documentation for the contract.
    ///
    /// Everything `fetch` starts (threads, an async runtime, DNS lookups) has finished
    /// before it returns: envrun blocks signals and forks right after resolution, and a
    /// thread still alive then would take a forwarded signal with its default action
    /// (supervise mode checks this and refuses to start the command). Network backends use
    /// [`net::block_on`](crate::backend), which runs a `current_thread` runtime and drops it
    /// (joining its blocking pool, where DNS runs) before returning. A backend must answer by
    /// [`Context::deadline`]; keys still unanswered then are [`ErrorKind::Timeout`] errors.
    fn fetch(&self, lookups: &[Lookup]) -> Result<Vec<LookupResult>, BackendError>;

    /// Picks `#field` out of a [`Found::Value`]. The default reads the value as a JSON object.
    fn field(&self, value: &Secret, field: &str) -> Result<Secret, BackendError> {
        json_field(value, field)
    }

    /// Whether `secret:KEY` without `#field` may read a [`Found::Fields`] record that has
    /// exactly one field (Vault: a KV secret holding one value). Otherwise `#field` is
    /// always required for a record.
    fn one_field_is_the_value(&self) -> bool {
        false
    }

    /// The tenant this backend looks up for, if it honours tenants; messages name it.
    fn tenant(&self) -> Option<&str> {
        None
    }

    /// Where a key was looked for, for the "not found" message (names and paths only).
    fn looked_for(&self, _lookup: &Lookup) -> Option<String> {
        None
    }

    /// What to try when `lookup` was not found: the next step for this backend.
    fn not_found_hint(&self, _lookup: &Lookup) -> Option<String> {
        None
    }

    /// The variables of envrun's own environment that serving `lookups` reads. They are
    /// removed from the command's environment unless the manifest sets the same name, so a
    /// secret does not reach the command a second time under its raw name.
    fn consumed_env(&self, _lookups: &[Lookup]) -> Vec<String> {
        Vec::new()
    }

    /// Whether this backend records when a value was last changed and attaches it with
    /// [`Found::updated_at`]. `false` (the default) makes `envrun check` report "this backend
    /// has no age" for a `rotation:` policy instead of guessing. A backend that answers
    /// `true` may still leave one value undated (a Vault KV v1 mount, a store entry written
    /// before envrun recorded times); `check` says so for that value.
    fn reports_age(&self) -> bool {
        false
    }

    /// Warnings collected by [`Backend::fetch`] (names and paths only, never values), taken
    /// out once by the resolver, which reports them.
    fn warnings(&self) -> Vec<String> {
        Vec::new()
    }
}

/// Reads an RFC 3339 timestamp (`2026-03-22T02:24:06.945319214Z`, as Vault, GCP and Azure
/// write them); `None` for anything else, so a backend can pass the result to
/// [`Found::updated_opt`] as it is.
pub fn parse_time(text: &str) -> Option<SystemTime> {
    humantime::parse_rfc3339_weak(text.trim()).ok()
}

/// Seconds since the Unix epoch (AWS `LastChangedDate` is a float, Azure `updated` an
/// integer) as a time; `None` for negative or non-finite input.
pub fn unix_time(secs: f64) -> Option<SystemTime> {
    if !secs.is_finite() || secs < 0.0 {
        return None;
    }
    SystemTime::UNIX_EPOCH.checked_add(Duration::try_from_secs_f64(secs).ok()?)
}

/// Where a backend is built: paths resolve against `base_dir`.
#[derive(Clone, Debug)]
pub struct Context {
    /// The manifest's directory, or the working directory when there is no manifest.
    pub base_dir: PathBuf,
    /// The tenant: `--tenant`, else `$ENVRUN_TENANT`, else the manifest's `tenant:`
    /// (checked with [`tenant::check`]).
    pub tenant: Option<String>,
    /// When the whole resolution must be done (`--timeout`, `timeout:`, default 10 s).
    /// Network backends keep it from [`BackendConfig::build`] and stop waiting then.
    pub deadline: Instant,
}

impl Context {
    /// A context with the default deadline from now (for tests and tools).
    pub fn new(base_dir: impl Into<PathBuf>, tenant: Option<String>) -> Context {
        Context {
            base_dir: base_dir.into(),
            tenant,
            deadline: Instant::now() + crate::timeout::DEFAULT,
        }
    }
}

/// A backend as written in the manifest (`secrets:` or an entry of `backends:`).
#[derive(Clone, Debug, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase", deny_unknown_fields)]
pub enum BackendConfig {
    Local(LocalConfig),
    Env(EnvConfig),
    Files(FilesConfig),
    Dotenv(DotenvConfig),
    #[cfg(feature = "vault")]
    Vault(vault::VaultConfig),
    #[cfg(not(feature = "vault"))]
    Vault(Unavailable),
    #[cfg(feature = "aws")]
    Aws(aws::AwsConfig),
    #[cfg(not(feature = "aws"))]
    Aws(Unavailable),
    #[cfg(feature = "aws")]
    #[serde(rename = "aws-ssm")]
    AwsSsm(aws::AwsConfig),
    #[cfg(not(feature = "aws"))]
    #[serde(rename = "aws-ssm")]
    AwsSsm(Unavailable),
    #[cfg(feature = "gcp")]
    Gcp(gcp::GcpConfig),
    #[cfg(not(feature = "gcp"))]
    Gcp(Unavailable),
    #[cfg(feature = "azure")]
    Azure(azure::AzureConfig),
    #[cfg(not(feature = "azure"))]
    Azure(Unavailable),
}

/// The settings of a backend this build of envrun does not include: accepted by the
/// manifest parser (so the error names the missing feature, not a "bad type"), refused by
/// [`BackendConfig::build`].
#[derive(Clone, Debug)]
pub struct Unavailable;

impl<'de> Deserialize<'de> for Unavailable {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        serde::de::IgnoredAny::deserialize(d)?;
        Ok(Unavailable)
    }
}

impl Unavailable {
    // A build with every network backend (`full`) never refuses one.
    #[cfg_attr(
        all(feature = "vault", feature = "aws", feature = "gcp", feature = "azure"),
        allow(dead_code)
    )]
    fn error(kind: &str, feature: &str) -> BackendError {
        BackendError::of(
            ErrorKind::Config,
            format!("this envrun was built without the `{kind}` backend (cargo feature `{feature}`)"),
        )
        .with_hint(format!(
            "install a build that has it: `cargo install envrun --features {feature}` (or `--features full` for every backend)"
        ))
    }
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
            BackendConfig::Env(_) => "env",
            BackendConfig::Files(_) => "files",
            BackendConfig::Dotenv(_) => "dotenv",
            BackendConfig::Vault(_) => "vault",
            BackendConfig::Aws(_) => "aws",
            BackendConfig::AwsSsm(_) => "aws-ssm",
            BackendConfig::Gcp(_) => "gcp",
            BackendConfig::Azure(_) => "azure",
        }
    }

    pub fn build(&self, ctx: &Context) -> Result<Box<dyn Backend>, BackendError> {
        Ok(match self {
            BackendConfig::Local(c) => Box::new(Local::new(c, ctx)),
            BackendConfig::Env(c) => Box::new(Env::new(c, ctx)),
            BackendConfig::Files(c) => Box::new(Files::new(c, ctx)),
            BackendConfig::Dotenv(c) => Box::new(Dotenv::new(c, ctx)),
            #[cfg(feature = "vault")]
            BackendConfig::Vault(c) => Box::new(vault::Vault::new(c, ctx)?),
            #[cfg(not(feature = "vault"))]
            BackendConfig::Vault(Unavailable) => return Err(Unavailable::error("vault", "vault")),
            #[cfg(feature = "aws")]
            BackendConfig::Aws(c) => Box::new(aws::SecretsManager::new(c, ctx)),
            #[cfg(not(feature = "aws"))]
            BackendConfig::Aws(Unavailable) => return Err(Unavailable::error("aws", "aws")),
            #[cfg(feature = "aws")]
            BackendConfig::AwsSsm(c) => Box::new(aws::ParameterStore::new(c, ctx)?),
            #[cfg(not(feature = "aws"))]
            BackendConfig::AwsSsm(Unavailable) => {
                return Err(Unavailable::error("aws-ssm", "aws"));
            }
            #[cfg(feature = "gcp")]
            BackendConfig::Gcp(c) => Box::new(gcp::Gcp::new(c, ctx)?),
            #[cfg(not(feature = "gcp"))]
            BackendConfig::Gcp(Unavailable) => return Err(Unavailable::error("gcp", "gcp")),
            #[cfg(feature = "azure")]
            BackendConfig::Azure(c) => Box::new(azure::Azure::new(c, ctx)?),
            #[cfg(not(feature = "azure"))]
            BackendConfig::Azure(Unavailable) => return Err(Unavailable::error("azure", "azure")),
        })
    }
}

/// Selects a field of a JSON-object value: strings as they are, other JSON as its text.
/// Every string of the parsed document is wiped before it is freed.
pub fn json_field(value: &Secret, field: &str) -> Result<Secret, BackendError> {
    let not_object = || {
        BackendError::new(format!(
            "field `{field}` asked for, but the value is not a JSON object"
        ))
        .with_hint("drop `#field` to use the whole value, or store the value as a JSON object")
    };
    let mut doc: serde_json::Value =
        serde_json::from_slice(value.expose()).map_err(|_| not_object())?;
    let fields = json_fields(&mut doc);
    wipe(&mut doc);
    let mut fields = fields.ok_or_else(not_object)?;
    fields.remove(field).ok_or_else(|| no_field(field, &fields))
}

/// The fields of a JSON object: strings as they are, other JSON as its text.
pub(crate) fn json_fields(doc: &mut serde_json::Value) -> Option<BTreeMap<String, Secret>> {
    let serde_json::Value::Object(map) = doc else {
        return None;
    };
    Some(
        map.iter_mut()
            .map(|(name, v)| {
                let value = match v {
                    serde_json::Value::String(s) => Secret::from(std::mem::take(s)),
                    other => json_text(other),
                };
                (name.clone(), value)
            })
            .collect(),
    )
}

/// The JSON text of a nested value (`{"a":"b"}`, `5432`), written into a buffer sized
/// before it is filled: `to_string` grows a `String` by doubling and leaves copies behind.
fn json_text(v: &serde_json::Value) -> Secret {
    struct Counter(usize);
    impl std::io::Write for Counter {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut counter = Counter(0);
    // Writing a Value to memory cannot fail (its keys are strings).
    let _ = serde_json::to_writer(&mut counter, v);
    let mut buf = Vec::with_capacity(counter.0);
    let _ = serde_json::to_writer(&mut buf, v);
    Secret::from_vec(buf)
}

/// Wipes the strings left in a parsed document (nested values, before it is dropped).
pub(crate) fn wipe(v: &mut serde_json::Value) {
    match v {
        serde_json::Value::String(s) => s.zeroize(),
        serde_json::Value::Array(items) => items.iter_mut().for_each(wipe),
        serde_json::Value::Object(map) => map.values_mut().for_each(wipe),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_need_a_field_and_errors_list_names_only() {
        let backend = Local::new(&LocalConfig::default(), &Context::new(".", None));
        let found = Found::Fields(BTreeMap::from([
            ("user".to_owned(), Secret::from(String::from("app"))),
            (
                "password".to_owned(),
                Secret::from(String::from("hunter22")),
            ),
        ]));
        assert_eq!(
            found.select(&backend, Some("user")).unwrap().expose(),
            b"app"
        );
        let missing = found.select(&backend, Some("pass")).unwrap_err().message;
        assert_eq!(missing, "no field `pass` (fields: password, user)");
        let whole = found.select(&backend, None).unwrap_err().message;
        assert!(whole.contains("(fields: password, user)"), "{whole}");
        let value = Found::Value(Secret::from(String::from(r#"{"a":"b"}"#)));
        assert_eq!(value.select(&backend, Some("a")).unwrap().expose(), b"b");
        assert_eq!(
            value.select(&backend, None).unwrap().expose(),
            br#"{"a":"b"}"#
        );
    }

    #[test]
    fn updated_is_carried_and_invisible_to_select() {
        let backend = Local::new(&LocalConfig::default(), &Context::new(".", None));
        let t = unix_time(1_700_000_000.5).unwrap();
        let plain = Found::Value(Secret::from(String::from(r#"{"a":"b"}"#)));
        assert_eq!(plain.updated(), None);
        let dated = plain.clone().updated_at(t);
        assert_eq!(dated.updated(), Some(t));
        assert_eq!(dated.select(&backend, Some("a")).unwrap().expose(), b"b");
        let later = t + Duration::from_secs(1);
        assert_eq!(dated.updated_at(later).updated(), Some(later));
        assert_eq!(plain.clone().updated_opt(None).updated(), None);
        assert!(!format!("{:?}", plain.updated_at(t)).contains("\"a\""));
    }

    #[test]
    fn times_parse_from_the_usual_encodings() {
        let t = parse_time("2018-03-22T02:24:06.945319214Z").unwrap();
        let secs = t.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs();
        assert_eq!(secs, 1_521_685_446);
        assert_eq!(
            parse_time("2018-03-22T02:24:06Z"),
            unix_time(1_521_685_446.0)
        );
        assert_eq!(parse_time("yesterday"), None);
        assert_eq!(unix_time(-1.0), None);
        assert_eq!(unix_time(f64::NAN), None);
    }

    #[test]
    fn json_field_selects_and_lists_names_only() {
        let v = Secret::from(String::from(
            r#"{"user":"app","password":"hunter22","port":5432}"#,
        ));
        assert_eq!(json_field(&v, "password").unwrap().expose(), b"hunter22");
        assert_eq!(json_field(&v, "port").unwrap().expose(), b"5432");
        let err = json_field(&v, "nope").unwrap_err().message;
        assert_eq!(err, "no field `nope` (fields: password, port, user)");
        assert!(!err.contains("hunter22"));
        let plain = Secret::from(String::from("hunter22"));
        assert!(
            !json_field(&plain, "x")
                .unwrap_err()
                .message
                .contains("hunter22")
        );
    }
}
