//! `type: vault`: HashiCorp Vault or OpenBao, KV version 2 (and 1).
//!
//! `secret:PATH#FIELD` reads the KV secret at `PATH` under `mount` (default `secret`) and
//! picks one field; `secret:PATH` alone works when the secret has exactly one field (else
//! the error lists the field names); `secret:PATH?version=N#FIELD` pins a KV v2 version, and
//! a deleted or destroyed version is an error naming it. With a tenant `T`, `T/PATH` is
//! read first, then `PATH` (the one tenant rule, [`super::tenant`]).
//!
//! One fetch is: build the client (address from the manifest, else `$BAO_ADDR`, else
//! `$VAULT_ADDR`), get a token (see [`TokenSource`]) and check it once with
//! `auth/token/lookup-self` (so a bad or expired token is one clear error, not one per
//! key), learn the mount's KV version when `kv_version: auto` (`sys/internal/ui/mounts`,
//! as the Vault CLI does, which read-only tokens may call), then read every path once,
//! [`CONCURRENCY`] at a time, on the one runtime. Every request carries
//! `X-Vault-Namespace` when a namespace is set (logins use `auth_namespace` if given).
//! Every step is retried on transient failures (connection errors, 429, 5xx, Vault's 412)
//! within the deadline.
//!
//! The HTTP side lives in [`client`]; this file knows KV and the auth methods.

mod client;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use zeroize::{Zeroize, Zeroizing};

use self::client::{Client, Reply, Request, Tls};
use super::{
    Backend, BackendError, Context, ErrorKind, Found, Lookup, LookupResult, json_fields, net, wipe,
};
use crate::fileio::{self, Follow};
use crate::secret::MAX_VALUE;

/// How many reads are in flight at once.
pub const CONCURRENCY: usize = 16;

/// Where Kubernetes mounts a pod's service account token.
const K8S_TOKEN: &str = "/var/run/secrets/kubernetes.io/serviceaccount/token";

/// The manifest's settings for `type: vault`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VaultConfig {
    /// `https://vault.example.com:8200`; else `$BAO_ADDR`, then `$VAULT_ADDR`.
    pub address: Option<String>,
    /// The KV engine's mount path (default `secret`).
    pub mount: Option<String>,
    /// The namespace (`X-Vault-Namespace`); else `$BAO_NAMESPACE`, then `$VAULT_NAMESPACE`.
    pub namespace: Option<String>,
    /// The namespace of the auth mount, when it differs from `namespace`.
    pub auth_namespace: Option<String>,
    #[serde(default)]
    pub kv_version: KvVersion,
    /// A PEM CA bundle to trust (relative to the manifest); else `$BAO_CACERT`, then
    /// `$VAULT_CACERT`.
    pub ca_cert: Option<PathBuf>,
    /// Accept any server certificate. Loudly warned about.
    #[serde(default)]
    pub tls_skip_verify: bool,
    /// Where the token is: `env:VAR` or `file:PATH`, never the token itself.
    pub token: Option<Credential>,
    /// Log in with an auth method instead of using a token.
    pub auth: Option<AuthConfig>,
}

/// The KV engine version: `1`, `2`, or `auto` (the default: ask the server).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum KvVersion {
    #[default]
    Auto,
    V1,
    V2,
}

impl<'de> Deserialize<'de> for KvVersion {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = KvVersion;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("kv_version: 1, 2 or auto")
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<KvVersion, E> {
                match v {
                    1 => Ok(KvVersion::V1),
                    2 => Ok(KvVersion::V2),
                    _ => Err(E::custom(format!(
                        "kv_version: {v} is not a KV version (1, 2 or auto)"
                    ))),
                }
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<KvVersion, E> {
                u64::try_from(v)
                    .map_err(|_| E::custom("kv_version: 1, 2 or auto"))
                    .and_then(|v| self.visit_u64(v))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<KvVersion, E> {
                match v {
                    "auto" => Ok(KvVersion::Auto),
                    "1" => Ok(KvVersion::V1),
                    "2" => Ok(KvVersion::V2),
                    _ => Err(E::custom(format!(
                        "kv_version: `{v}` is not a KV version (1, 2 or auto)"
                    ))),
                }
            }
        }
        d.deserialize_any(V)
    }
}

/// Where a credential is read from at fetch time: `env:VAR` (envrun's environment) or
/// `file:PATH` (relative to the manifest). A literal is refused when the manifest is read,
/// so a token never sits in a manifest, and the error never repeats it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Credential {
    Env(String),
    File(PathBuf),
}

impl<'de> Deserialize<'de> for Credential {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let mut text = Zeroizing::new(String::deserialize(d)?);
        let parsed = Credential::parse(&text);
        text.zeroize();
        parsed.ok_or_else(|| {
            serde::de::Error::custom(
                "a credential must be a reference, `env:VAR` or `file:PATH`, never the value itself (move it to a file or a variable)",
            )
        })
    }
}

impl Credential {
    fn parse(text: &str) -> Option<Credential> {
        if let Some(var) = text.strip_prefix("env:").filter(|v| !v.is_empty()) {
            return Some(Credential::Env(var.to_owned()));
        }
        text.strip_prefix("file:")
            .filter(|p| !p.is_empty())
            .map(|p| Credential::File(PathBuf::from(p)))
    }

    fn describe(&self) -> String {
        match self {
            Credential::Env(v) => format!("env:{v}"),
            Credential::File(p) => format!("file:{}", p.display()),
        }
    }

    /// Reads the credential, less one trailing newline.
    fn read(&self, what: &str, base_dir: &Path) -> Result<SecretString, BackendError> {
        let config = |msg: String| BackendError::of(ErrorKind::Config, msg);
        let mut bytes = match self {
            Credential::Env(var) => std::env::var_os(var)
                .filter(|v| !v.is_empty())
                .ok_or_else(|| config(format!("{what}: ${var} is not set")))?
                .into_encoded_bytes(),
            Credential::File(path) => {
                let full = base_dir.join(path);
                let (_, data) = fileio::read_regular(&full, MAX_VALUE, Follow::Yes)
                    .map_err(|e| config(format!("{what}: {e}")))?;
                data.to_vec()
            }
        };
        crate::secret::trim_one_newline(&mut bytes);
        match String::from_utf8(bytes) {
            Ok(s) if !s.is_empty() => Ok(SecretString::from(s)),
            Ok(_) => Err(config(format!("{what}: {} is empty", self.describe()))),
            Err(e) => {
                let mut bytes = e.into_bytes();
                bytes.zeroize();
                Err(config(format!(
                    "{what}: {} is not UTF-8 text",
                    self.describe()
                )))
            }
        }
    }
}

/// `auth:` logs in with an auth method; its `method:` picks which.
#[derive(Clone, Debug, Deserialize)]
#[serde(tag = "method", rename_all = "lowercase")]
pub enum AuthConfig {
    /// `role_id` and `secret_id` (references); `mount` defaults to `approle`.
    Approle(AppRoleAuth),
    /// `role` and `jwt` (a reference); `mount` defaults to `jwt`.
    Jwt(JwtAuth),
    /// `role` and `jwt` (default: the pod's service account token); `mount` defaults to
    /// `kubernetes`.
    Kubernetes(JwtAuth),
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppRoleAuth {
    pub role_id: Credential,
    /// Optional: a role may be set up without one (`bind_secret_id=false`).
    pub secret_id: Option<Credential>,
    pub mount: Option<String>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JwtAuth {
    pub role: String,
    pub jwt: Option<Credential>,
    pub mount: Option<String>,
}

impl AuthConfig {
    fn mount(&self) -> &str {
        match self {
            AuthConfig::Approle(a) => a.mount.as_deref().unwrap_or("approle"),
            AuthConfig::Jwt(j) => j.mount.as_deref().unwrap_or("jwt"),
            AuthConfig::Kubernetes(j) => j.mount.as_deref().unwrap_or("kubernetes"),
        }
    }

    fn name(&self) -> &'static str {
        match self {
            AuthConfig::Approle(_) => "approle",
            AuthConfig::Jwt(_) => "jwt",
            AuthConfig::Kubernetes(_) => "kubernetes",
        }
    }

    fn credentials(&self) -> Vec<&Credential> {
        match self {
            AuthConfig::Approle(a) => std::iter::once(&a.role_id)
                .chain(a.secret_id.as_ref())
                .collect(),
            AuthConfig::Jwt(j) | AuthConfig::Kubernetes(j) => j.jwt.iter().collect(),
        }
    }
}

/// Where the token comes from, decided when the backend is built, in this order: `token:`,
/// then `auth:` (a login), then `$BAO_TOKEN`, `$VAULT_TOKEN`, then `~/.vault-token` (the
/// Vault CLI's own token file, written by `vault login`).
#[derive(Clone, Debug)]
enum TokenSource {
    Given(Credential),
    Login(AuthConfig),
    /// `~/.vault-token`, or `None` when there is no home directory.
    HomeFile(Option<PathBuf>),
}

#[derive(Debug)]
pub struct Vault {
    address: String,
    mount: String,
    namespace: Option<String>,
    auth_namespace: Option<String>,
    kv_version: KvVersion,
    ca_cert: Option<PathBuf>,
    tls_skip_verify: bool,
    token: TokenSource,
    tenant: Option<String>,
    base_dir: PathBuf,
    deadline: Instant,
    /// The `tls_skip_verify` warning, handed to the resolver ([`Backend::warnings`]).
    warnings: std::sync::Mutex<Vec<String>>,
    /// The KV version `kv_version: auto` found, for "not found" messages.
    detected: std::sync::OnceLock<KvVersion>,
}

/// The first non-empty variable of `names` in envrun's environment, with its name.
fn first_env(names: &[&'static str]) -> Option<(&'static str, String)> {
    names.iter().find_map(|n| {
        std::env::var(n)
            .ok()
            .filter(|v| !v.trim().is_empty())
            .map(|v| (*n, v))
    })
}

impl Vault {
    pub fn new(config: &VaultConfig, ctx: &Context) -> Result<Vault, BackendError> {
        let cfg = |msg: String| BackendError::of(ErrorKind::Config, msg);
        let address = match &config.address {
            Some(a) => a.clone(),
            None => first_env(&["BAO_ADDR", "VAULT_ADDR"])
                .map(|(_, v)| v)
                .ok_or_else(|| {
                    cfg(String::from("no address"))
                        .with_hint("set `address:` in the manifest, or $VAULT_ADDR (or $BAO_ADDR)")
                })?,
        };
        let address = address.trim().trim_end_matches('/').to_owned();
        let mount = config
            .mount
            .as_deref()
            .unwrap_or("secret")
            .trim_matches('/')
            .to_owned();
        check_path(&mount).map_err(|e| cfg(format!("mount `{mount}`: {e}")))?;
        let namespace = config
            .namespace
            .clone()
            .or_else(|| first_env(&["BAO_NAMESPACE", "VAULT_NAMESPACE"]).map(|(_, v)| v))
            .map(|n| n.trim_matches('/').to_owned())
            .filter(|n| !n.is_empty());
        let ca_cert = config
            .ca_cert
            .as_ref()
            .map(|p| ctx.base_dir.join(p))
            .or_else(|| first_env(&["BAO_CACERT", "VAULT_CACERT"]).map(|(_, v)| v.into()));
        let token = match (&config.token, &config.auth) {
            (Some(_), Some(_)) => {
                return Err(cfg(String::from(
                    "both `token:` and `auth:` are set; keep one",
                )));
            }
            (Some(t), None) => TokenSource::Given(t.clone()),
            (None, Some(a)) => TokenSource::Login(a.clone()),
            (None, None) => match first_env(&["BAO_TOKEN", "VAULT_TOKEN"]) {
                Some((var, _)) => TokenSource::Given(Credential::Env(var.to_owned())),
                None => TokenSource::HomeFile(
                    std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".vault-token")),
                ),
            },
        };
        let mut warnings = Vec::new();
        if config.tls_skip_verify {
            warnings.push(format!(
                "vault at {address}: tls_skip_verify is on: the server's certificate is NOT checked, so anyone on the network path can impersonate it and read the token and every secret; set `ca_cert:` instead"
            ));
        }
        Ok(Vault {
            address,
            mount,
            namespace,
            auth_namespace: config
                .auth_namespace
                .as_ref()
                .map(|n| n.trim_matches('/').to_owned()),
            kv_version: config.kv_version,
            ca_cert,
            tls_skip_verify: config.tls_skip_verify,
            token,
            tenant: ctx.tenant.clone(),
            base_dir: ctx.base_dir.clone(),
            deadline: ctx.deadline,
            warnings: std::sync::Mutex::new(warnings),
            detected: std::sync::OnceLock::new(),
        })
    }

    async fn fetch_all(&self, lookups: &[Lookup]) -> Result<Vec<LookupResult>, BackendError> {
        let client = Client::new(
            &self.address,
            &Tls {
                ca_cert: self.ca_cert.as_deref(),
                skip_verify: self.tls_skip_verify,
            },
            self.deadline,
        )?;
        let token = self.token(&client).await?;
        let kv = match self.kv_version {
            KvVersion::Auto => self.detect_kv_version(&client, &token).await?,
            known => known,
        };
        let _ = self.detected.set(kv);
        let reader = Reader {
            vault: self,
            client: &client,
            token: &token,
            kv,
        };
        Ok(net::lookups(lookups, CONCURRENCY, self.deadline, |l| reader.lookup(l)).await)
    }

    /// A token that works: logged in, or read and checked once with `lookup-self`.
    async fn token(&self, client: &Client) -> Result<SecretString, BackendError> {
        let token = match &self.token {
            TokenSource::Login(auth) => return self.login(client, auth).await,
            TokenSource::Given(c) => c.read("token", &self.base_dir)?,
            TokenSource::HomeFile(path) => {
                let missing = || {
                    BackendError::of(ErrorKind::Config, "no token").with_hint(
                        "set $VAULT_TOKEN (or $BAO_TOKEN), `token: env:VAR` / `token: file:PATH`, or `auth:` in the manifest, or run `vault login`",
                    )
                };
                let path = path.as_ref().ok_or_else(missing)?;
                if !path.exists() {
                    return Err(missing());
                }
                Credential::File(path.clone()).read("token", &self.base_dir)?
            }
        };
        let check = client
            .call(&Request {
                what: "check the token (auth/token/lookup-self)",
                path: &["auth", "token", "lookup-self"],
                query: &[],
                namespace: self.namespace.as_deref(),
                token: Some(&token),
                body: None,
            })
            .await;
        match check {
            Ok(reply) => {
                drop(reply);
                Ok(token)
            }
            Err(e) if e.kind == ErrorKind::Denied => Err(BackendError::of(
                ErrorKind::Denied,
                format!(
                    "the token ({}) was refused: it is invalid, expired or revoked ({})",
                    self.token_origin(),
                    e.message
                ),
            )
            .with_hint("get a fresh token (`vault login`), or check that it is for this server and namespace")),
            Err(e) => Err(e),
        }
    }

    /// Names where the token came from, for messages (never the token).
    fn token_origin(&self) -> String {
        match &self.token {
            TokenSource::Given(c) => c.describe(),
            TokenSource::Login(a) => format!("from {} login", a.name()),
            TokenSource::HomeFile(p) => p
                .as_ref()
                .map(|p| p.display().to_string())
                .unwrap_or_default(),
        }
    }

    async fn login(
        &self,
        client: &Client,
        auth: &AuthConfig,
    ) -> Result<SecretString, BackendError> {
        let mut fields: Vec<(&str, SecretString)> = Vec::with_capacity(2);
        match auth {
            AuthConfig::Approle(a) => {
                fields.push(("role_id", a.role_id.read("auth role_id", &self.base_dir)?));
                if let Some(s) = &a.secret_id {
                    fields.push(("secret_id", s.read("auth secret_id", &self.base_dir)?));
                }
            }
            AuthConfig::Jwt(j) | AuthConfig::Kubernetes(j) => {
                let jwt = match (&j.jwt, auth) {
                    (Some(c), _) => c.clone(),
                    (None, AuthConfig::Kubernetes(_)) => Credential::File(PathBuf::from(K8S_TOKEN)),
                    (None, _) => {
                        return Err(BackendError::of(
                            ErrorKind::Config,
                            "auth method jwt needs `jwt:` (env:VAR or file:PATH)",
                        ));
                    }
                };
                fields.push(("jwt", jwt.read("auth jwt", &self.base_dir)?));
                fields.push(("role", SecretString::from(j.role.clone())));
            }
        }
        let body: serde_json::Map<String, serde_json::Value> = fields
            .iter()
            .map(|(k, v)| {
                (
                    (*k).to_owned(),
                    serde_json::Value::String(v.expose_secret().to_owned()),
                )
            })
            .collect();
        let mut doc = serde_json::Value::Object(body);
        let bytes = Zeroizing::new(serde_json::to_vec(&doc).unwrap_or_default());
        wipe(&mut doc);
        let mount = auth.mount().trim_matches('/');
        let mut path: Vec<&str> = vec!["auth"];
        path.extend(mount.split('/'));
        path.push("login");
        let what = format!("log in ({} at auth/{mount})", auth.name());
        let reply = client
            .call(&Request {
                what: &what,
                path: &path,
                query: &[],
                // `auth_namespace: ""` is the root namespace: no header at all.
                namespace: match self.auth_namespace.as_deref() {
                    Some("") => None,
                    Some(ns) => Some(ns),
                    None => self.namespace.as_deref(),
                },
                token: None,
                body: Some(bytes),
            })
            .await
            .map_err(|e| match e.kind {
                ErrorKind::Denied | ErrorKind::BadResponse => {
                    let hint = format!(
                        "check the {} credentials and role, and that the auth method is enabled at auth/{mount}{}",
                        auth.name(),
                        if self.auth_namespace.is_some() { " in auth_namespace" } else { "" }
                    );
                    e.with_hint(hint)
                }
                _ => e,
            })?;
        let mut doc: serde_json::Value = serde_json::from_slice(&reply.body)
            .map_err(|_| bad(&what, "the answer is not JSON"))?;
        let token = doc
            .pointer_mut("/auth/client_token")
            .and_then(|t| match t {
                serde_json::Value::String(s) => Some(SecretString::from(std::mem::take(s))),
                _ => None,
            })
            .ok_or_else(|| bad(&what, "the answer has no auth.client_token"));
        wipe(&mut doc);
        token
    }

    /// `kv_version: auto`: asks the mount's type and options, as the Vault CLI does.
    async fn detect_kv_version(
        &self,
        client: &Client,
        token: &SecretString,
    ) -> Result<KvVersion, BackendError> {
        let mut path = vec!["sys", "internal", "ui", "mounts"];
        path.extend(self.mount.split('/'));
        let what = format!("look up mount `{}` (sys/internal/ui/mounts)", self.mount);
        let hint = "set `kv_version: 1` or `kv_version: 2` in the manifest, and check `mount:`";
        let reply = client
            .call(&Request {
                what: &what,
                path: &path,
                query: &[],
                namespace: self.namespace.as_deref(),
                token: Some(token),
                body: None,
            })
            .await
            .map_err(|e| match e.kind {
                ErrorKind::NotFound | ErrorKind::Denied | ErrorKind::BadResponse => {
                    e.with_hint(hint)
                }
                _ => e,
            })?;
        #[derive(Deserialize)]
        struct Mount {
            data: MountData,
        }
        #[derive(Deserialize)]
        struct MountData {
            #[serde(rename = "type")]
            kind: String,
            #[serde(default)]
            options: Option<BTreeMap<String, String>>,
        }
        let mount: Mount = serde_json::from_slice(&reply.body)
            .map_err(|_| bad(&what, "unexpected answer").with_hint(hint))?;
        if !matches!(mount.data.kind.as_str(), "kv" | "generic") {
            return Err(BackendError::of(
                ErrorKind::Config,
                format!(
                    "mount `{}` is a `{}` engine, not a KV engine",
                    self.mount, mount.data.kind
                ),
            )
            .with_hint("set `mount:` to the path of a KV secrets engine"));
        }
        let version = mount
            .data
            .options
            .as_ref()
            .and_then(|o| o.get("version"))
            .map(String::as_str);
        Ok(if version == Some("2") {
            KvVersion::V2
        } else {
            KvVersion::V1
        })
    }

    /// The paths tried for `key`, in order: the tenant's, then the global one.
    fn candidates(&self, key: &str) -> Vec<String> {
        let mut out = Vec::with_capacity(2);
        if let Some(t) = &self.tenant {
            out.push(format!("{t}/{key}"));
        }
        out.push(key.to_owned());
        out
    }

    /// The API path of a secret, as messages show it.
    fn api_path(&self, kv: KvVersion, path: &str) -> String {
        match kv {
            KvVersion::V2 => format!("{}/data/{path}", self.mount),
            _ => format!("{}/{path}", self.mount),
        }
    }
}

/// Checks a KV path or mount: `/`-separated, no empty, `.` or `..` segment, no control
/// characters.
fn check_path(path: &str) -> Result<(), String> {
    if path.is_empty() {
        return Err(String::from("is empty"));
    }
    if path
        .split('/')
        .any(|s| s.is_empty() || s == "." || s == "..")
    {
        return Err(String::from(
            "has an empty, `.` or `..` segment (no leading, trailing or double `/`)",
        ));
    }
    if path.chars().any(char::is_control) {
        return Err(String::from("contains a control character"));
    }
    Ok(())
}

fn bad(what: &str, why: &str) -> BackendError {
    BackendError::of(ErrorKind::BadResponse, format!("{what}: {why}"))
}

/// Reads KV secrets with one client and token.
struct Reader<'a> {
    vault: &'a Vault,
    client: &'a Client,
    token: &'a SecretString,
    kv: KvVersion,
}

/// What one read found.
enum Read {
    Found(Found),
    Missing,
}

impl Reader<'_> {
    async fn lookup(&self, lookup: &Lookup) -> LookupResult {
        let key = lookup.key.as_str();
        check_path(key)
            .map_err(|e| BackendError::of(ErrorKind::Config, format!("`{key}`: the path {e}")))?;
        let version = version_param(lookup)?;
        if version.is_some() && self.kv != KvVersion::V2 {
            return Err(BackendError::of(
                ErrorKind::Config,
                format!(
                    "`{key}`: ?version= needs KV version 2, and mount `{}` is version 1",
                    self.vault.mount
                ),
            ));
        }
        for path in self.vault.candidates(key) {
            match net::retry(self.vault.deadline, || self.read(&path, version)).await? {
                Read::Found(found) => return Ok(Some(found)),
                Read::Missing => continue,
            }
        }
        Ok(None)
    }

    /// One read of one path (retried by the caller).
    async fn read(&self, path: &str, version: Option<u64>) -> Result<Read, BackendError> {
        let api = self.vault.api_path(self.kv, path);
        let what = match version {
            Some(v) => format!("read `{api}` version {v}"),
            None => format!("read `{api}`"),
        };
        let mut segments: Vec<&str> = self.vault.mount.split('/').collect();
        if self.kv == KvVersion::V2 {
            segments.push("data");
        }
        segments.extend(path.split('/'));
        let query: Vec<(&str, String)> = version
            .map(|v| ("version", v.to_string()))
            .into_iter()
            .collect();
        let reply = self
            .client
            .send(&Request {
                what: &what,
                path: &segments,
                query: &query,
                namespace: self.vault.namespace.as_deref(),
                token: Some(self.token),
                body: None,
            })
            .await?;
        match reply.status {
            200 => self.found(&what, &reply).map(Read::Found),
            404 => self.missing(path, version, &reply),
            _ => Err(client::status_error(&what, &reply)),
        }
    }

    /// The fields of a 200 answer.
    fn found(&self, what: &str, reply: &Reply) -> Result<Found, BackendError> {
        let mut doc: serde_json::Value =
            serde_json::from_slice(&reply.body).map_err(|_| bad(what, "the answer is not JSON"))?;
        let pointer = if self.kv == KvVersion::V2 {
            "/data/data"
        } else {
            "/data"
        };
        let fields = doc.pointer_mut(pointer).and_then(json_fields);
        // KV v2 says when this version was written (for `rotation:`); KV v1 keeps no time.
        let created = doc
            .pointer("/data/metadata/created_time")
            .and_then(serde_json::Value::as_str)
            .and_then(super::parse_time);
        wipe(&mut doc);
        fields
            .map(|f| Found::Fields(f).updated_opt(created))
            .ok_or_else(|| bad(what, "the answer holds no secret data"))
    }

    /// A 404: no such secret, or (KV v2) a version that was deleted or destroyed, which
    /// Vault answers with its metadata.
    fn missing(
        &self,
        path: &str,
        version: Option<u64>,
        reply: &Reply,
    ) -> Result<Read, BackendError> {
        #[derive(Deserialize)]
        struct Body {
            data: Option<Data>,
        }
        #[derive(Deserialize)]
        struct Data {
            metadata: Option<Metadata>,
        }
        #[derive(Deserialize)]
        struct Metadata {
            #[serde(default)]
            deletion_time: String,
            #[serde(default)]
            destroyed: bool,
            version: Option<u64>,
        }
        let meta = serde_json::from_slice::<Body>(&reply.body)
            .ok()
            .and_then(|b| b.data)
            .and_then(|d| d.metadata);
        let Some(meta) = meta.filter(|m| m.destroyed || !m.deletion_time.is_empty()) else {
            return Ok(Read::Missing);
        };
        let which = match (version, meta.version) {
            (Some(v), _) => format!("version {v}"),
            (None, Some(v)) => format!("its latest version ({v})"),
            (None, None) => String::from("its latest version"),
        };
        let what = format!("`{path}`: {which}");
        Err(if meta.destroyed {
            BackendError::of(
                ErrorKind::BadResponse,
                format!("{what} was destroyed (its data is gone)"),
            )
            .with_hint("pin a version that still exists with ?version=N, or write the secret again")
        } else {
            BackendError::of(
                ErrorKind::BadResponse,
                format!("{what} was deleted at {}", meta.deletion_time),
            )
            .with_hint("undelete it (`bao kv undelete -versions=N`), or pin another version with ?version=N")
        })
    }
}

/// `?version=N`: a positive whole number.
fn version_param(lookup: &Lookup) -> Result<Option<u64>, BackendError> {
    let Some((_, v)) = lookup.params.iter().find(|(k, _)| k == "version") else {
        return Ok(None);
    };
    match v.parse::<u64>() {
        Ok(n) if n > 0 => Ok(Some(n)),
        _ => Err(BackendError::of(
            ErrorKind::Config,
            format!(
                "`{}`: version `{v}` is not a version number (1, 2, ...)",
                lookup.key
            ),
        )),
    }
}

impl Backend for Vault {
    fn kind(&self) -> &'static str {
        "vault"
    }

    fn params(&self) -> &'static [&'static str] {
        &["version"]
    }

    fn fetch(&self, lookups: &[Lookup]) -> Result<Vec<LookupResult>, BackendError> {
        net::block_on(self.fetch_all(lookups))?
    }

    fn tenant(&self) -> Option<&str> {
        self.tenant.as_deref()
    }

    fn one_field_is_the_value(&self) -> bool {
        true
    }

    fn reports_age(&self) -> bool {
        true
    }

    fn looked_for(&self, lookup: &Lookup) -> Option<String> {
        let kv = self.detected.get().copied().unwrap_or(self.kv_version);
        let paths: Vec<String> = self
            .candidates(&lookup.key)
            .iter()
            .map(|p| self.api_path(kv, p))
            .collect();
        let version = version_param(lookup)
            .ok()
            .flatten()
            .map(|v| format!(" (version {v})"))
            .unwrap_or_default();
        Some(format!("{}{version}", paths.join(", then ")))
    }

    fn not_found_hint(&self, lookup: &Lookup) -> Option<String> {
        Some(format!(
            "check the path and `mount:` ({}); list what is there with `bao kv list -mount={} {}`",
            self.mount,
            self.mount,
            lookup.key.rsplit_once('/').map_or("", |(dir, _)| dir)
        ))
    }

    fn warnings(&self) -> Vec<String> {
        std::mem::take(&mut *self.warnings.lock().unwrap_or_else(|e| e.into_inner()))
    }

    fn consumed_env(&self, _lookups: &[Lookup]) -> Vec<String> {
        let creds: Vec<&Credential> = match &self.token {
            TokenSource::Given(c) => vec![c],
            TokenSource::Login(a) => a.credentials(),
            TokenSource::HomeFile(_) => Vec::new(),
        };
        creds
            .into_iter()
            .filter_map(|c| match c {
                Credential::Env(v) => Some(v.clone()),
                Credential::File(_) => None,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Parses as the manifest does (no source snippet in errors: it would quote the line).
    fn config(yaml: &str) -> Result<VaultConfig, String> {
        let options = serde_saphyr::options! { with_snippet: false };
        serde_saphyr::from_str_with_options(yaml, options).map_err(|e| e.to_string())
    }

    #[test]
    fn credentials_are_references_and_a_literal_is_never_repeated() {
        let c = config("token: env:MY_TOKEN\n").unwrap();
        assert_eq!(c.token, Some(Credential::Env("MY_TOKEN".into())));
        let c = config("token: file:./t\n").unwrap();
        assert_eq!(c.token, Some(Credential::File("./t".into())));
        let err = config("token: hvs.CANARY-literal\n").unwrap_err();
        assert!(err.contains("never the value itself"), "{err}");
        assert!(!err.contains("CANARY"), "{err}");
    }

    #[test]
    fn kv_version_takes_1_2_auto() {
        assert_eq!(config("kv_version: 1\n").unwrap().kv_version, KvVersion::V1);
        assert_eq!(config("kv_version: 2\n").unwrap().kv_version, KvVersion::V2);
        assert_eq!(
            config("kv_version: auto\n").unwrap().kv_version,
            KvVersion::Auto
        );
        assert_eq!(config("{}\n").unwrap().kv_version, KvVersion::Auto);
        assert!(
            config("kv_version: 3\n")
                .unwrap_err()
                .contains("1, 2 or auto")
        );
        assert!(config("kv_versoin: 3\n").is_err());
    }

    #[test]
    fn auth_methods_parse_with_their_fields() {
        let c =
            config("auth:\n  method: approle\n  role_id: env:R\n  secret_id: file:s\n").unwrap();
        assert!(matches!(c.auth, Some(AuthConfig::Approle(_))));
        let c = config("auth:\n  method: kubernetes\n  role: app\n").unwrap();
        assert_eq!(c.auth.unwrap().mount(), "kubernetes");
        assert!(config("auth:\n  method: jwt\n  role: app\n  jwt: eyJhbGc\n").is_err());
        assert!(config("auth:\n  method: ldap\n").is_err());
    }

    #[test]
    fn paths_are_checked() {
        assert!(check_path("apps/billing").is_ok());
        for bad in ["", "/a", "a/", "a//b", "../sys", "a/./b", "a\nb"] {
            assert!(check_path(bad).is_err(), "{bad:?}");
        }
    }
}
