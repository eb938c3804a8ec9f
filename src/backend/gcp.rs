//! `type: gcp`: Google Secret Manager, through Google's official client
//! (`google-cloud-secretmanager-v1`, REST transport) and `google-cloud-auth`.
//!
//! Names: `secret:NAME` reads `projects/{project}/secrets/{prefix}NAME/versions/latest`;
//! `?version=N` (or an alias) pins a version; a full resource name
//! `projects/P/secrets/S[/versions/V]` (also `projects/P/locations/L/secrets/S[...]`) is
//! read as written, without prefix or tenant. With a tenant `T`, `{prefix}{T}-NAME` is read
//! first, then `{prefix}NAME` (the one tenant rule, [`super::tenant`]). Secret ids allow
//! only ASCII letters, digits, `-` and `_`, so in the tenant every other character (`.` and
//! `/`) becomes `-`: tenant `eu/acme.prod` reads `eu-acme-prod-NAME`.
//!
//! Credentials are Application Default Credentials, in Google's order: the JSON file named
//! by `$GOOGLE_APPLICATION_CREDENTIALS` (a service-account key, `gcloud` user credentials,
//! workload identity federation, an impersonated service account), then `gcloud`'s
//! `~/.config/gcloud/application_default_credentials.json`, then the metadata server. The
//! metadata server gets one quick attempt ([`METADATA_PROBE`]): off Google Cloud nobody
//! answers, and envrun says which sources it tried instead of waiting for the deadline.
//!
//! No age for `rotation:`: the access call does not return the version's `createTime`, and
//! reading it is a second call per secret on every run, with a permission
//! (`secretmanager.versions.get`) the usual `roles/secretmanager.secretAccessor` lacks; so
//! [`Backend::reports_age`] stays false and `envrun check` says gcp keeps no age.
//!
//! Payloads are checked against `dataCrc32c` when the server sends it. Lookups run
//! concurrently, at most [`CONCURRENCY`] at a time; each request is retried on throttling
//! (`RESOURCE_EXHAUSTED`) and unavailability within the deadline. The client's own retries
//! are off, so the deadline and the retry policy are envrun's alone.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use google_cloud_auth::credentials::Credentials;
use google_cloud_gax::error::rpc::Code;
use google_cloud_secretmanager_v1::client::SecretManagerService;
use serde::Deserialize;
use zeroize::Zeroize;

use super::net;
use super::{Backend, BackendError, Context, ErrorKind, Found, Lookup, LookupResult};
use crate::secret::Secret;

/// At most this many requests in flight (Secret Manager's access quota is per minute and
/// generous; this keeps one run from opening a connection per key).
pub const CONCURRENCY: usize = 16;

/// How long the metadata server may take to hand out a token when it is the only source
/// left. On Google Cloud it answers in milliseconds; off it, nothing answers at all.
pub const METADATA_PROBE: Duration = Duration::from_millis(1000);

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GcpConfig {
    /// The project that holds the secrets; else `$GOOGLE_CLOUD_PROJECT`.
    pub project: Option<String>,
    /// Put before every secret id, e.g. `myapp-`.
    #[serde(default)]
    pub prefix: String,
    /// The API endpoint, e.g. a private or regional endpoint
    /// (`https://secretmanager.europe-west1.rep.googleapis.com`) or a test server.
    pub endpoint: Option<String>,
}

#[derive(Debug)]
pub struct Gcp {
    project: Option<String>,
    prefix: String,
    endpoint: Option<String>,
    tenant: Option<String>,
    deadline: Instant,
}

/// Where the credentials come from, as ADC finds them (for messages and the probe bound).
#[derive(Debug)]
enum Source {
    /// `$GOOGLE_APPLICATION_CREDENTIALS`, with the file's `type`.
    EnvFile(PathBuf, String),
    /// `gcloud auth application-default login`'s file.
    Gcloud(PathBuf),
    /// The metadata server (`$GCE_METADATA_HOST` or `metadata.google.internal`).
    Metadata(String),
}

impl Source {
    fn find() -> Source {
        if let Some(path) = std::env::var_os("GOOGLE_APPLICATION_CREDENTIALS") {
            let path = PathBuf::from(path);
            let kind = std::fs::read(&path)
                .ok()
                .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
                .and_then(|v| v.get("type").and_then(|t| t.as_str()).map(describe_type))
                .unwrap_or_else(|| String::from("credentials file"));
            return Source::EnvFile(path, kind);
        }
        if let Some(home) = std::env::var_os("HOME") {
            let path =
                PathBuf::from(home).join(".config/gcloud/application_default_credentials.json");
            if path.exists() {
                return Source::Gcloud(path);
            }
        }
        let host = std::env::var("GCE_METADATA_HOST")
            .unwrap_or_else(|_| String::from("metadata.google.internal"));
        Source::Metadata(host)
    }

    fn describe(&self) -> String {
        match self {
            Source::EnvFile(p, kind) => {
                format!(
                    "{kind} from $GOOGLE_APPLICATION_CREDENTIALS ({})",
                    p.display()
                )
            }
            Source::Gcloud(p) => {
                format!("gcloud application-default credentials ({})", p.display())
            }
            Source::Metadata(host) => format!("the metadata server ({host})"),
        }
    }
}

fn describe_type(t: &str) -> String {
    match t {
        "service_account" => "a service-account key",
        "authorized_user" => "gcloud user credentials",
        "external_account" => "workload identity federation",
        "impersonated_service_account" => "an impersonated service account",
        other => return format!("credentials of type `{other}`"),
    }
    .to_owned()
}

const NO_CREDENTIALS_HINT: &str = "on Google Cloud, attach a service account to the workload; elsewhere set $GOOGLE_APPLICATION_CREDENTIALS to a key or workload-identity file, or run `gcloud auth application-default login`";

impl Gcp {
    pub fn new(config: &GcpConfig, ctx: &Context) -> Result<Gcp, BackendError> {
        let project = config
            .project
            .clone()
            .or_else(|| std::env::var("GOOGLE_CLOUD_PROJECT").ok())
            .filter(|p| !p.is_empty());
        if let Some(p) = &project {
            check_segment("gcp project", p)?;
        }
        if !config.prefix.is_empty() && !is_secret_id(&config.prefix) {
            return Err(BackendError::of(
                ErrorKind::Config,
                format!(
                    "gcp prefix `{}` may hold only letters, digits, `-` and `_` (a secret id's characters)",
                    config.prefix.escape_default()
                ),
            ));
        }
        Ok(Gcp {
            project,
            prefix: config.prefix.clone(),
            endpoint: config.endpoint.clone(),
            tenant: ctx.tenant.clone(),
            deadline: ctx.deadline,
        })
    }

    /// The resource names to read for `lookup`, in order (tenant's copy first).
    fn candidates(&self, lookup: &Lookup) -> Result<Vec<String>, BackendError> {
        let mut version = None;
        for (name, value) in &lookup.params {
            if name == "version" {
                check_segment("version", value)?;
                version = Some(value.as_str());
            }
        }
        let key = &lookup.key;
        if key.starts_with("projects/") {
            return full_name(key, version).map(|n| vec![n]);
        }
        if !is_secret_id(key) {
            return Err(BackendError::of(
                ErrorKind::Config,
                format!(
                    "`{}` is not a secret id (letters, digits, `-` and `_`) nor a resource name `projects/P/secrets/S`",
                    key.escape_default()
                ),
            ));
        }
        let Some(project) = &self.project else {
            return Err(BackendError::of(
                ErrorKind::Config,
                format!("no project to read `{key}` from"),
            )
            .with_hint("set `project:` in the backend's settings or $GOOGLE_CLOUD_PROJECT, or use a full name `projects/P/secrets/S`"));
        };
        let version = version.unwrap_or("latest");
        let name = |id: String| format!("projects/{project}/secrets/{id}/versions/{version}");
        let mut out = Vec::with_capacity(2);
        if let Some(t) = &self.tenant {
            out.push(name(format!("{}{}-{key}", self.prefix, tenant_id(t))));
        }
        out.push(name(format!("{}{key}", self.prefix)));
        Ok(out)
    }

    async fn client(&self) -> Result<SecretManagerService, BackendError> {
        let source = Source::find();
        let credentials = google_cloud_auth::credentials::Builder::default()
            .build()
            .map_err(|e| {
                BackendError::of(
                    ErrorKind::Denied,
                    format!("cannot load {}: {e}", source.describe()),
                )
                .with_hint(NO_CREDENTIALS_HINT)
            })?;
        self.first_token(&credentials, &source).await?;
        let mut builder = SecretManagerService::builder()
            .with_credentials(credentials)
            .with_retry_policy(google_cloud_gax::retry_policy::NeverRetry);
        if let Some(endpoint) = &self.endpoint {
            builder = builder.with_endpoint(endpoint.clone());
        }
        builder.build().await.map_err(|e| {
            BackendError::of(ErrorKind::Config, format!("cannot set up the client: {e}"))
        })
    }

    /// Gets the first token before any lookup, so a missing or refused credential is one
    /// error naming where envrun looked (not one per key), and the metadata server is
    /// given one short chance. The token is cached by the credentials for the lookups.
    async fn first_token(
        &self,
        credentials: &Credentials,
        source: &Source,
    ) -> Result<(), BackendError> {
        let bound = match source {
            Source::Metadata(_) => self.deadline.min(Instant::now() + METADATA_PROBE),
            _ => self.deadline,
        };
        let fetched = net::within(bound, credentials.headers(http::Extensions::new())).await;
        let tried = "tried $GOOGLE_APPLICATION_CREDENTIALS (unset), gcloud application-default credentials (no ~/.config/gcloud/application_default_credentials.json)";
        let err = match (fetched, source) {
            (Some(Ok(_)), _) => return Ok(()),
            // Off Google Cloud this is the common case; the client's own words ("transient
            // error") would mislead, so say what was tried.
            (Some(Err(_)) | None, Source::Metadata(_)) => BackendError::of(
                ErrorKind::Denied,
                format!(
                    "no credentials found: {tried}, then {} (no answer)",
                    source.describe()
                ),
            ),
            (Some(Err(e)), _) => BackendError::of(
                ErrorKind::Denied,
                format!("no access token from {}: {e}", source.describe()),
            ),
            (None, _) => BackendError::of(
                ErrorKind::Timeout,
                format!(
                    "no access token from {} before the deadline (--timeout)",
                    source.describe()
                ),
            ),
        };
        Err(err.with_hint(NO_CREDENTIALS_HINT))
    }

    async fn lookup(&self, client: &SecretManagerService, lookup: &Lookup) -> LookupResult {
        for name in self.candidates(lookup)? {
            match access(client, &name, self.deadline).await {
                Ok(secret) => return Ok(Some(Found::Value(secret))),
                Err(e) if e.kind == ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            }
        }
        Ok(None)
    }
}

/// Reads one version, retrying transient failures within the deadline.
async fn access(
    client: &SecretManagerService,
    name: &str,
    deadline: Instant,
) -> Result<Secret, BackendError> {
    let response = net::retry(deadline, || async {
        client
            .access_secret_version()
            .set_name(name)
            .send()
            .await
            .map_err(|e| error(name, &e))
    })
    .await?;
    let Some(payload) = response.payload else {
        return Err(BackendError::of(
            ErrorKind::BadResponse,
            format!("access {name}: the answer has no payload"),
        ));
    };
    let data = payload.data;
    if let Some(expected) = payload.data_crc32c
        && i64::from(crc32c::crc32c(&data)) != expected
    {
        wipe_bytes(data);
        return Err(BackendError::of(
            ErrorKind::BadResponse,
            format!("access {name}: the payload does not match its checksum (dataCrc32c)"),
        )
        .with_hint("the value was damaged on the way; try again"));
    }
    let secret = Secret::from_slice(&data);
    wipe_bytes(data);
    Ok(secret)
}

/// Wipes the client's copy of a payload when it is the only owner (it is, once the response
/// is taken apart); a shared buffer is left to its other owner.
fn wipe_bytes(data: bytes::Bytes) {
    if let Ok(mut owned) = data.try_into_mut() {
        owned.as_mut().zeroize();
    }
}

/// Maps a client error to a typed error naming the resource.
fn error(name: &str, e: &google_cloud_gax::error::Error) -> BackendError {
    let (kind, what) = if let Some(status) = e.status() {
        let kind = match status.code {
            Code::NotFound => ErrorKind::NotFound,
            Code::PermissionDenied | Code::Unauthenticated => ErrorKind::Denied,
            Code::ResourceExhausted => ErrorKind::Throttled,
            Code::Unavailable | Code::Internal | Code::Aborted | Code::DeadlineExceeded => {
                ErrorKind::Unavailable
            }
            // FAILED_PRECONDITION: the version is disabled or destroyed.
            _ => ErrorKind::BadResponse,
        };
        (kind, format!("{} ({})", status.message, status.code.name()))
    } else if let Some(code) = e.http_status_code() {
        (net::kind_of_status(code), format!("HTTP {code}"))
    } else if e.is_authentication() {
        (ErrorKind::Denied, e.to_string())
    } else if e.is_io() || e.is_connect() || e.is_timeout() || e.is_transport() {
        (ErrorKind::Unreachable, e.to_string())
    } else {
        (ErrorKind::BadResponse, e.to_string())
    };
    let retry_after = e
        .http_headers()
        .and_then(|h| h.get("retry-after"))
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs);
    let err =
        BackendError::of(kind, format!("access {name}: {what}")).with_retry_after(retry_after);
    match kind {
        ErrorKind::Denied => err.with_hint(
            "grant the credentials `roles/secretmanager.secretAccessor` on the secret or project",
        ),
        ErrorKind::BadResponse if what.contains("FAILED_PRECONDITION") => err.with_hint(
            "the version is disabled or destroyed: enable it, or pin another with `?version=N`",
        ),
        _ => err,
    }
}

/// `projects/P/secrets/S[/versions/V]` or `projects/P/locations/L/secrets/S[/versions/V]`,
/// with the version from `?version=` when the name has none.
fn full_name(key: &str, version: Option<&str>) -> Result<String, BackendError> {
    let bad = || {
        BackendError::of(
            ErrorKind::Config,
            format!(
                "`{}` is not a resource name `projects/P/secrets/S[/versions/V]`",
                key.escape_default()
            ),
        )
    };
    let parts: Vec<&str> = key.split('/').collect();
    let secret_at = match parts.as_slice() {
        ["projects", _, "secrets", _, ..] => 4,
        ["projects", _, "locations", _, "secrets", _, ..] => 6,
        _ => return Err(bad()),
    };
    for (i, part) in parts.iter().enumerate() {
        if i % 2 == 1 && (part.is_empty() || !is_secret_id(part)) {
            return Err(bad());
        }
    }
    let named_version = match &parts[secret_at..] {
        [] => None,
        ["versions", v] => Some(*v),
        _ => return Err(bad()),
    };
    match (named_version, version) {
        (Some(_), Some(_)) => Err(BackendError::of(
            ErrorKind::Config,
            format!("`{key}` names a version and `?version=` gives another; keep one"),
        )),
        (Some(_), None) => Ok(key.to_owned()),
        (None, v) => Ok(format!("{key}/versions/{}", v.unwrap_or("latest"))),
    }
}

/// Letters, digits, `-`, `_`: what a secret id (and a version alias) may hold.
fn is_secret_id(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 255
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

fn check_segment(what: &str, value: &str) -> Result<(), BackendError> {
    if is_secret_id(value) {
        return Ok(());
    }
    Err(BackendError::of(
        ErrorKind::Config,
        format!(
            "{what} `{}` may hold only letters, digits, `-` and `_`",
            value.escape_default()
        ),
    ))
}

/// A tenant as part of a secret id: every character a secret id cannot hold becomes `-`.
pub fn tenant_id(tenant: &str) -> String {
    tenant
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '-'
            }
        })
        .collect()
}

impl Backend for Gcp {
    fn kind(&self) -> &'static str {
        "gcp"
    }

    fn params(&self) -> &'static [&'static str] {
        &["version"]
    }

    fn fetch(&self, lookups: &[Lookup]) -> Result<Vec<LookupResult>, BackendError> {
        // Names are checked before any network traffic.
        for lookup in lookups {
            self.candidates(lookup)?;
        }
        net::block_on(async {
            let client = &net::setup(self.deadline, "client", self.client()).await?;
            Ok(net::lookups(lookups, CONCURRENCY, self.deadline, |l| {
                self.lookup(client, l)
            })
            .await)
        })?
    }

    fn tenant(&self) -> Option<&str> {
        self.tenant.as_deref()
    }

    fn looked_for(&self, lookup: &Lookup) -> Option<String> {
        let names = self.candidates(lookup).ok()?;
        Some(format!("looked for {}", names.join(", then ")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gcp(prefix: &str, tenant: Option<&str>) -> Gcp {
        Gcp::new(
            &GcpConfig {
                project: Some("proj".into()),
                prefix: prefix.into(),
                endpoint: None,
            },
            &Context::new(".", tenant.map(str::to_owned)),
        )
        .unwrap()
    }

    fn lookup(key: &str, params: &[(&str, &str)]) -> Lookup {
        Lookup::of(key, params)
    }

    #[test]
    fn names_take_prefix_tenant_and_version() {
        let g = gcp("app-", Some("eu/acme.prod"));
        assert_eq!(
            g.candidates(&lookup("DB", &[("version", "3")])).unwrap(),
            vec![
                "projects/proj/secrets/app-eu-acme-prod-DB/versions/3",
                "projects/proj/secrets/app-DB/versions/3"
            ]
        );
        let g = gcp("", None);
        assert_eq!(
            g.candidates(&lookup("DB", &[])).unwrap(),
            vec!["projects/proj/secrets/DB/versions/latest"]
        );
    }

    #[test]
    fn full_names_are_read_as_written() {
        let g = gcp("app-", Some("acme"));
        assert_eq!(
            g.candidates(&lookup("projects/p/secrets/s", &[("version", "2")]))
                .unwrap(),
            vec!["projects/p/secrets/s/versions/2"]
        );
        assert_eq!(
            g.candidates(&lookup("projects/p/locations/eu/secrets/s/versions/7", &[]))
                .unwrap(),
            vec!["projects/p/locations/eu/secrets/s/versions/7"]
        );
        for bad in [
            "projects/p/secrets",
            "projects/p/locations/eu/secrets",
            "projects/p/secrets/s/versions",
            "projects/p/secrets/s/other/1",
            "projects//secrets/s",
            "projects/p/secrets/a.b",
        ] {
            assert!(g.candidates(&lookup(bad, &[])).is_err(), "{bad}");
        }
        let both = g
            .candidates(&lookup(
                "projects/p/secrets/s/versions/1",
                &[("version", "2")],
            ))
            .unwrap_err();
        assert!(both.message.contains("keep one"), "{}", both.message);
    }

    #[test]
    fn bad_ids_and_missing_project_are_config_errors() {
        let g = gcp("", None);
        let e = g.candidates(&lookup("a/b", &[])).unwrap_err();
        assert_eq!(e.kind, ErrorKind::Config);
        let e = g
            .candidates(&lookup("DB", &[("version", "1/2")]))
            .unwrap_err();
        assert_eq!(e.kind, ErrorKind::Config);
        let none = Gcp {
            project: None,
            ..gcp("", None)
        };
        let e = none.candidates(&lookup("DB", &[])).unwrap_err();
        assert!(e.message.contains("no project"), "{}", e.message);
    }

    #[test]
    fn crc32c_matches_the_published_check_value() {
        // The CRC-32C check value (RFC 3720, appendix B.4): crc of "123456789".
        assert_eq!(crc32c::crc32c(b"123456789"), 0xE306_9283);
    }
}
