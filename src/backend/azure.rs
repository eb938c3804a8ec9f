//! `type: azure`: Azure Key Vault secrets, through Microsoft's `azure_security_keyvault_secrets`
//! and `azure_identity` (tokio runtime, so no detached threads of their own).
//!
//! Names: `secret:NAME` reads the latest version of `{prefix}NAME`; `?version=ID` pins one.
//! Key Vault names hold only ASCII letters, digits and `-` (and are case-insensitive), so
//! `_` in NAME becomes `-` (`secret:DB_PASSWORD` reads `DB-PASSWORD`); any other character
//! is an error. With a tenant `T`, `{prefix}{T}-NAME` is read first, then `{prefix}NAME`
//! (the one tenant rule, [`super::tenant`]), with `_`, `.` and `/` in the tenant as `-`.
//!
//! Credentials: a chain tried in this order, the first source that is set up wins ([`Chain`]):
//! 1. a client secret from the environment (`AZURE_TENANT_ID`, `AZURE_CLIENT_ID`,
//!    `AZURE_CLIENT_SECRET`);
//! 2. workload identity (`AZURE_TENANT_ID`, `AZURE_CLIENT_ID`, `AZURE_FEDERATED_TOKEN_FILE`,
//!    as AKS sets them);
//! 3. managed identity: App Service, Functions, Container Apps and Arc (`IDENTITY_ENDPOINT`),
//!    or the instance metadata service, given one quick probe ([`IMDS_PROBE`]) so that off
//!    Azure the chain moves on at once; `AZURE_CLIENT_ID` picks a user-assigned identity.
//!    `$AZURE_POD_IDENTITY_AUTHORITY_HOST` moves the probe (as in Azure's other SDKs), but
//!    not the SDK's own token request: azure_identity 1.0 always asks 169.254.169.254;
//! 4. the Azure CLI (`az account get-access-token`), when `az` is on `PATH`.
//!
//! Workload identity uses the crate's `ClientAssertionCredential` with envrun's own reader
//! of the token file: `WorkloadIdentityCredential` reads that file on a detached
//! `std::thread` (azure_identity 1.0, `workload_identity_credential.rs`), which would break
//! the single-thread rule supervise mode checks before it forks.
//!
//! `$AZURE_AUTHORITY_HOST` points the client-secret and workload credentials at another
//! cloud's Entra ID. `ca_file` adds a CA for the vault and token endpoints (private
//! endpoints behind an inspecting proxy, tests). Lookups run concurrently, at most
//! [`CONCURRENCY`] at a time; throttling (429, honouring `Retry-After`) and 5xx are retried
//! within the deadline by envrun (the SDK's own retries are off).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use azure_core::credentials::{TokenCredential, TokenRequestOptions};
use azure_core::http::{ClientOptions, RetryOptions, Transport};
use azure_identity::{
    AzureCliCredential, ClientAssertion, ClientAssertionCredential,
    ClientAssertionCredentialOptions, ClientSecretCredential, ClientSecretCredentialOptions,
    ManagedIdentityCredential, ManagedIdentityCredentialOptions, UserAssignedId,
};
use azure_security_keyvault_secrets::{SecretClient, SecretClientOptions};
use serde::Deserialize;

use super::net;
use super::{Backend, BackendError, Context, ErrorKind, Found, Lookup, LookupResult};
use crate::secret::Secret;

/// At most this many requests in flight (Key Vault allows a few thousand GETs per 10 s per
/// vault; this keeps one run to a handful of connections).
pub const CONCURRENCY: usize = 16;

/// How long the instance metadata service may take to accept a connection before the chain
/// moves on. On Azure it is local to the host; off Azure nothing answers.
pub const IMDS_PROBE: Duration = Duration::from_millis(500);

/// Key Vault's REST API version envrun asks for.
const API_VERSION: &str = "7.6";

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AzureConfig {
    /// `https://NAME.vault.azure.net`; else `$AZURE_KEYVAULT_URL`.
    pub vault_url: Option<String>,
    /// Put before every secret name, e.g. `myapp-`.
    #[serde(default)]
    pub prefix: String,
    /// A PEM file of extra CA certificates to trust (relative to the manifest).
    pub ca_file: Option<PathBuf>,
    /// Whether the resource in Key Vault's `401` challenge must be the vault's own domain
    /// (default `true`). Turn off only for a private endpoint or proxy under another name.
    pub verify_challenge_resource: Option<bool>,
}

#[derive(Debug)]
pub struct Azure {
    vault_url: Option<String>,
    prefix: String,
    ca_file: Option<PathBuf>,
    verify_challenge_resource: bool,
    tenant: Option<String>,
    deadline: Instant,
}

impl Azure {
    pub fn new(config: &AzureConfig, ctx: &Context) -> Result<Azure, BackendError> {
        let vault_url = config
            .vault_url
            .clone()
            .or_else(|| std::env::var("AZURE_KEYVAULT_URL").ok())
            .filter(|u| !u.is_empty());
        if !config.prefix.is_empty() && !is_vault_name(&config.prefix) {
            return Err(BackendError::of(
                ErrorKind::Config,
                format!(
                    "azure prefix `{}` may hold only letters, digits and `-` (a Key Vault name's characters)",
                    config.prefix.escape_default()
                ),
            ));
        }
        Ok(Azure {
            vault_url,
            prefix: config.prefix.clone(),
            ca_file: config.ca_file.as_ref().map(|p| ctx.base_dir.join(p)),
            verify_challenge_resource: config.verify_challenge_resource.unwrap_or(true),
            tenant: ctx.tenant.clone(),
            deadline: ctx.deadline,
        })
    }

    /// The secret names to read for `lookup`, in order (tenant's copy first), and the version.
    fn candidates(&self, lookup: &Lookup) -> Result<(Vec<String>, Option<String>), BackendError> {
        let mut version = None;
        for (name, value) in &lookup.params {
            if name == "version" {
                if value.is_empty() || !value.bytes().all(|b| b.is_ascii_alphanumeric()) {
                    return Err(BackendError::of(
                        ErrorKind::Config,
                        format!(
                            "version `{}` of `{}`: a Key Vault version id is letters and digits",
                            value.escape_default(),
                            lookup.key
                        ),
                    ));
                }
                version = Some(value.clone());
            }
        }
        let name = vault_name(&lookup.key);
        if !is_vault_name(&name) {
            return Err(BackendError::of(
                ErrorKind::Config,
                format!(
                    "`{}` is not a Key Vault secret name (letters, digits, `-`; `_` is read as `-`)",
                    lookup.key.escape_default()
                ),
            ));
        }
        let mut out = Vec::with_capacity(2);
        if let Some(t) = &self.tenant {
            out.push(format!("{}{}-{name}", self.prefix, vault_name(t)));
        }
        out.push(format!("{}{name}", self.prefix));
        for n in &out {
            if n.len() > 127 {
                return Err(BackendError::of(
                    ErrorKind::Config,
                    format!("`{n}` is longer than Key Vault's 127 characters"),
                ));
            }
        }
        Ok((out, version))
    }

    fn client_options(&self) -> Result<ClientOptions, BackendError> {
        let mut builder = reqwest::Client::builder();
        if let Some(path) = &self.ca_file {
            let pem = std::fs::read(path).map_err(|e| {
                BackendError::of(
                    ErrorKind::Config,
                    format!("cannot read ca_file {}: {e}", path.display()),
                )
            })?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| {
                BackendError::of(
                    ErrorKind::Config,
                    format!("ca_file {} is not PEM certificates: {e}", path.display()),
                )
            })?;
            for cert in certs {
                builder = builder.add_root_certificate(cert);
            }
        }
        let http = builder.build().map_err(|e| {
            BackendError::of(ErrorKind::Config, format!("cannot set up HTTPS: {e}"))
        })?;
        Ok(ClientOptions {
            transport: Some(Transport::new(Arc::new(http))),
            retry: RetryOptions::none(),
            ..ClientOptions::default()
        })
    }

    async fn client(&self) -> Result<SecretClient, BackendError> {
        let Some(url) = &self.vault_url else {
            return Err(BackendError::of(ErrorKind::Config, "no vault URL")
                .with_hint("set `vault_url:` in the backend's settings or $AZURE_KEYVAULT_URL (https://NAME.vault.azure.net)"));
        };
        let options = self.client_options()?;
        let credential = Chain::new(options.clone())
            .pick(&scope_of(url), self.deadline)
            .await?;
        SecretClient::new(
            url,
            credential,
            Some(SecretClientOptions {
                api_version: API_VERSION.to_owned(),
                client_options: options,
                verify_challenge_resource: Some(self.verify_challenge_resource),
            }),
        )
        .map_err(|e| {
            BackendError::of(
                ErrorKind::Config,
                format!("vault URL `{url}`: {}", e.kind_message()),
            )
        })
    }

    async fn lookup(&self, client: &SecretClient, lookup: &Lookup) -> LookupResult {
        let (names, version) = self.candidates(lookup)?;
        for name in names {
            match get(client, &name, version.as_deref(), self.deadline).await {
                Ok((secret, updated)) => {
                    return Ok(Some(Found::Value(secret).updated_opt(updated)));
                }
                Err(e) if e.kind == ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            }
        }
        Ok(None)
    }
}

/// Reads one secret (one version), retrying transient failures within the deadline; with
/// the version's `updated` time (for `rotation:`), when the answer has it.
async fn get(
    client: &SecretClient,
    name: &str,
    version: Option<&str>,
    deadline: Instant,
) -> Result<(Secret, Option<std::time::SystemTime>), BackendError> {
    let what = match version {
        Some(v) => format!("secret `{name}` version `{v}`"),
        None => format!("secret `{name}`"),
    };
    let response = net::retry(deadline, || async {
        let options = azure_security_keyvault_secrets::models::SecretClientGetSecretOptions {
            secret_version: version.map(str::to_owned),
            ..Default::default()
        };
        client
            .get_secret(name, Some(options))
            .await
            .map_err(|e| error(&what, &e))
    })
    .await?;
    let mut model = response.into_model().map_err(|_| {
        BackendError::of(
            ErrorKind::BadResponse,
            format!("read {what}: the answer is not a secret bundle"),
        )
    })?;
    if model
        .attributes
        .as_ref()
        .and_then(|a| a.enabled)
        .is_some_and(|enabled| !enabled)
    {
        return Err(disabled(&what));
    }
    let updated = model
        .attributes
        .as_ref()
        .and_then(|a| a.updated.or(a.created))
        .and_then(|t| super::unix_time(t.unix_timestamp() as f64));
    let value = model.value.take().ok_or_else(|| {
        BackendError::of(
            ErrorKind::BadResponse,
            format!("read {what}: the answer has no value"),
        )
    })?;
    Ok((Secret::from(value), updated))
}

fn disabled(what: &str) -> BackendError {
    BackendError::of(ErrorKind::BadResponse, format!("read {what}: the secret is disabled (SecretDisabled)"))
        .with_hint("enable it (`az keyvault secret set-attributes --enabled true`), or pin an enabled version with `?version=ID`")
}

/// Key Vault's error body: `{"error": {"code", "message", "innererror": {"code"}}}`.
#[derive(Deserialize)]
struct ErrorBody {
    error: ErrorDetail,
}

#[derive(Deserialize)]
struct ErrorDetail {
    code: Option<String>,
    message: Option<String>,
    innererror: Option<Box<ErrorDetail>>,
}

/// Maps a client error to a typed error naming the secret.
fn error(what: &str, e: &azure_core::Error) -> BackendError {
    let azure_core::error::ErrorKind::HttpResponse {
        status,
        raw_response,
        error_code,
    } = e.kind()
    else {
        let kind = match e.kind() {
            azure_core::error::ErrorKind::Io | azure_core::error::ErrorKind::Connection => {
                ErrorKind::Unreachable
            }
            azure_core::error::ErrorKind::Credential => ErrorKind::Denied,
            _ => ErrorKind::BadResponse,
        };
        return BackendError::of(kind, format!("read {what}: {}", e.kind_message()));
    };
    let status = u16::from(*status);
    let body = raw_response
        .as_ref()
        .and_then(|r| serde_json::from_slice::<ErrorBody>(r.body()).ok());
    let code = body
        .as_ref()
        .and_then(|b| b.error.code.clone())
        .or_else(|| error_code.clone())
        .unwrap_or_default();
    let inner = body
        .as_ref()
        .and_then(|b| b.error.innererror.as_ref())
        .and_then(|i| i.code.clone())
        .unwrap_or_default();
    let message = body
        .as_ref()
        .and_then(|b| b.error.message.clone())
        .unwrap_or_default();
    if inner == "SecretDisabled" || code == "SecretDisabled" {
        return disabled(what);
    }
    let retry_after = raw_response
        .as_ref()
        .and_then(|r| {
            r.headers()
                .get_optional_str(&azure_core::http::headers::RETRY_AFTER)
                .map(str::to_owned)
        })
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs);
    let codes = match (code.as_str(), inner.as_str()) {
        ("", _) => format!("HTTP {status}"),
        (c, "") => format!("{c}, HTTP {status}"),
        (c, i) => format!("{c}/{i}, HTTP {status}"),
    };
    let text = if message.is_empty() {
        format!("read {what}: {codes}")
    } else {
        format!("read {what}: {} ({codes})", message.trim_end_matches('.'))
    };
    let kind = net::kind_of_status(status);
    let err = BackendError::of(kind, text).with_retry_after(retry_after);
    match kind {
        ErrorKind::Denied => err.with_hint(
            "give the identity `get` on secrets: the `Key Vault Secrets User` role (RBAC) or an access policy",
        ),
        _ => err,
    }
}

/// The token scope for a vault URL: the Key Vault domain of its cloud
/// (`https://NAME.vault.azure.cn` -> `https://vault.azure.cn/.default`), else the public
/// cloud's, which is what Key Vault's challenge asks for behind a private name too.
fn scope_of(vault_url: &str) -> String {
    const DOMAINS: &[&str] = &[
        "vault.azure.net",
        "vault.azure.cn",
        "vault.usgovcloudapi.net",
        "vault.microsoftazure.de",
        "managedhsm.azure.net",
        "managedhsm.azure.cn",
        "managedhsm.usgovcloudapi.net",
    ];
    let host = vault_url
        .split("://")
        .nth(1)
        .unwrap_or(vault_url)
        .split(['/', ':'])
        .next()
        .unwrap_or_default()
        .to_ascii_lowercase();
    let domain = DOMAINS
        .iter()
        .find(|d| host.ends_with(&format!(".{d}")))
        .unwrap_or(&DOMAINS[0]);
    format!("https://{domain}/.default")
}

/// Maps a key or tenant to Key Vault's alphabet: `_`, `.` and `/` become `-`.
pub fn vault_name(s: &str) -> String {
    s.chars()
        .map(|c| if matches!(c, '_' | '.' | '/') { '-' } else { c })
        .collect()
}

fn is_vault_name(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

/// The credential chain. Each source is tried only when it is set up; the first that is
/// set up answers (its failure is the error: envrun does not fall through to another
/// identity than the one configured). When none is set up, the error lists what was tried.
struct Chain {
    options: ClientOptions,
}

/// Why a source was skipped, for the "no credentials" message.
type Skipped = String;

impl Chain {
    fn new(options: ClientOptions) -> Chain {
        Chain { options }
    }

    async fn pick(
        &self,
        scope: &str,
        deadline: Instant,
    ) -> Result<Arc<dyn TokenCredential>, BackendError> {
        let mut skipped: Vec<Skipped> = Vec::new();
        let sources: [(&str, Option<Arc<dyn TokenCredential>>); 4] = [
            (
                "the environment's client secret",
                self.client_secret(&mut skipped)?,
            ),
            ("workload identity", self.workload_identity(&mut skipped)?),
            (
                "managed identity",
                self.managed_identity(&mut skipped).await?,
            ),
            ("the Azure CLI", self.azure_cli(&mut skipped)?),
        ];
        // Only the first set-up source is asked; the rest are built lazily in effect
        // (constructing a credential does no I/O).
        let Some((name, credential)) = sources
            .into_iter()
            .find_map(|(name, c)| c.map(|c| (name, c)))
        else {
            return Err(BackendError::of(
                ErrorKind::Denied,
                format!("no credentials found: tried {}", skipped.join(", ")),
            )
            .with_hint("set AZURE_TENANT_ID, AZURE_CLIENT_ID and AZURE_CLIENT_SECRET, run on Azure with a managed or workload identity, or `az login`"));
        };
        let options = TokenRequestOptions::default();
        match net::within(deadline, credential.get_token(&[scope], Some(options))).await {
            Some(Ok(_)) => Ok(credential),
            Some(Err(e)) => Err(BackendError::of(
                ErrorKind::Denied,
                format!("no token from {name}: {}", e.kind_message()),
            )
            .with_hint(
                "check the identity's tenant, client id and secret, and that it may sign in",
            )),
            None => Err(BackendError::of(
                ErrorKind::Timeout,
                format!("no token from {name} before the deadline (--timeout)"),
            )),
        }
    }

    fn client_secret(
        &self,
        skipped: &mut Vec<Skipped>,
    ) -> Result<Option<Arc<dyn TokenCredential>>, BackendError> {
        let Some(secret) = std::env::var("AZURE_CLIENT_SECRET")
            .ok()
            .filter(|s| !s.is_empty())
        else {
            skipped.push("the environment's client secret ($AZURE_CLIENT_SECRET unset)".into());
            return Ok(None);
        };
        let (tenant, client) = ids("AZURE_CLIENT_SECRET")?;
        let credential = ClientSecretCredential::new(
            &tenant,
            client,
            secret.into(),
            Some(ClientSecretCredentialOptions {
                client_options: self.options.clone(),
            }),
        )
        .map_err(|e| config_error("the environment's client secret", &e))?;
        Ok(Some(credential))
    }

    fn workload_identity(
        &self,
        skipped: &mut Vec<Skipped>,
    ) -> Result<Option<Arc<dyn TokenCredential>>, BackendError> {
        let Some(file) = std::env::var_os("AZURE_FEDERATED_TOKEN_FILE").filter(|f| !f.is_empty())
        else {
            skipped.push("workload identity ($AZURE_FEDERATED_TOKEN_FILE unset)".into());
            return Ok(None);
        };
        let (tenant, client) = ids("AZURE_FEDERATED_TOKEN_FILE")?;
        let credential = ClientAssertionCredential::new(
            tenant,
            client,
            TokenFile(PathBuf::from(file)),
            Some(ClientAssertionCredentialOptions {
                client_options: self.options.clone(),
            }),
        )
        .map_err(|e| config_error("workload identity", &e))?;
        Ok(Some(credential))
    }

    async fn managed_identity(
        &self,
        skipped: &mut Vec<Skipped>,
    ) -> Result<Option<Arc<dyn TokenCredential>>, BackendError> {
        let hosted = ["IDENTITY_ENDPOINT", "MSI_ENDPOINT"]
            .iter()
            .any(|v| std::env::var_os(v).is_some_and(|v| !v.is_empty()));
        if !hosted {
            let address = std::env::var("AZURE_POD_IDENTITY_AUTHORITY_HOST")
                .ok()
                .filter(|h| !h.is_empty())
                .map(|h| {
                    h.trim_start_matches("http://")
                        .trim_end_matches('/')
                        .to_owned()
                })
                .unwrap_or_else(|| String::from("169.254.169.254:80"));
            if !imds_answers(&address).await {
                skipped.push(format!(
                    "managed identity (no instance metadata service at {address})"
                ));
                return Ok(None);
            }
        }
        let user_assigned_id = std::env::var("AZURE_CLIENT_ID")
            .ok()
            .filter(|c| !c.is_empty())
            .map(UserAssignedId::ClientId);
        let credential = ManagedIdentityCredential::new(Some(ManagedIdentityCredentialOptions {
            user_assigned_id,
            client_options: self.options.clone(),
        }))
        .map_err(|e| config_error("managed identity", &e))?;
        Ok(Some(credential))
    }

    fn azure_cli(
        &self,
        skipped: &mut Vec<Skipped>,
    ) -> Result<Option<Arc<dyn TokenCredential>>, BackendError> {
        let on_path = std::env::var_os("PATH")
            .is_some_and(|paths| std::env::split_paths(&paths).any(|d| d.join("az").is_file()));
        if !on_path {
            skipped.push("the Azure CLI (`az` not on PATH)".into());
            return Ok(None);
        }
        let credential =
            AzureCliCredential::new(None).map_err(|e| config_error("the Azure CLI", &e))?;
        Ok(Some(credential))
    }
}

/// Whether an instance metadata service answers at `address` within [`IMDS_PROBE`]: an
/// HTTP request without the `Metadata: true` header, which IMDS refuses at once with `400`
/// (any answer counts), as Azure's other SDKs probe. A port that accepts and stays silent
/// is no IMDS.
async fn imds_answers(address: &str) -> bool {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let probe = async {
        let mut stream = tokio::net::TcpStream::connect(address).await?;
        let host = address.split(':').next().unwrap_or(address);
        stream
            .write_all(
                format!("GET /metadata/identity/oauth2/token HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n")
                    .as_bytes(),
            )
            .await?;
        let mut head = [0u8; 12];
        let n = stream.read(&mut head).await?;
        Ok::<bool, std::io::Error>(head[..n].starts_with(b"HTTP/"))
    };
    matches!(tokio::time::timeout(IMDS_PROBE, probe).await, Ok(Ok(true)))
}

/// `AZURE_TENANT_ID` and `AZURE_CLIENT_ID`, which `because` needs.
fn ids(because: &str) -> Result<(String, String), BackendError> {
    let get = |v: &str| std::env::var(v).ok().filter(|s| !s.is_empty());
    match (get("AZURE_TENANT_ID"), get("AZURE_CLIENT_ID")) {
        (Some(t), Some(c)) => Ok((t, c)),
        (t, c) => {
            let missing: Vec<&str> = [
                ("$AZURE_TENANT_ID", t.is_none()),
                ("$AZURE_CLIENT_ID", c.is_none()),
            ]
            .iter()
            .filter(|(_, m)| *m)
            .map(|(n, _)| *n)
            .collect();
            Err(BackendError::of(
                ErrorKind::Config,
                format!("${because} is set but {} is not", missing.join(" and ")),
            )
            .with_hint("set AZURE_TENANT_ID and AZURE_CLIENT_ID beside it"))
        }
    }
}

fn config_error(source: &str, e: &azure_core::Error) -> BackendError {
    BackendError::of(
        ErrorKind::Config,
        format!("cannot set up {source}: {}", e.kind_message()),
    )
}

/// Workload identity's assertion: the federated token file, read when a token is needed
/// (the kubelet rotates it), on the calling thread.
#[derive(Debug)]
struct TokenFile(PathBuf);

#[async_trait::async_trait]
impl ClientAssertion for TokenFile {
    async fn secret(
        &self,
        _: Option<azure_core::http::ClientMethodOptions<'_>>,
    ) -> azure_core::Result<String> {
        std::fs::read_to_string(&self.0)
            .map(|s| s.trim().to_owned())
            .map_err(|e| {
                azure_core::Error::with_message(
                    azure_core::error::ErrorKind::Credential,
                    format!(
                        "cannot read the federated token file {}: {e}",
                        self.0.display()
                    ),
                )
            })
    }
}

/// The short text of an SDK error: its message and kind, never a response body.
trait KindMessage {
    fn kind_message(&self) -> String;
}

impl KindMessage for azure_core::Error {
    fn kind_message(&self) -> String {
        match self.kind() {
            azure_core::error::ErrorKind::HttpResponse {
                status, error_code, ..
            } => match error_code {
                Some(code) => format!("{code} (HTTP {})", u16::from(*status)),
                None => format!("HTTP {}", u16::from(*status)),
            },
            _ => self.to_string(),
        }
    }
}

impl Backend for Azure {
    fn kind(&self) -> &'static str {
        "azure"
    }

    fn params(&self) -> &'static [&'static str] {
        &["version"]
    }

    fn fetch(&self, lookups: &[Lookup]) -> Result<Vec<LookupResult>, BackendError> {
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

    /// Key Vault returns the version's `updated` time with every read.
    fn reports_age(&self) -> bool {
        true
    }

    fn looked_for(&self, lookup: &Lookup) -> Option<String> {
        let (names, version) = self.candidates(lookup).ok()?;
        let at = version
            .map(|v| format!(" version `{v}`"))
            .unwrap_or_default();
        let names: Vec<String> = names.iter().map(|n| format!("`{n}`{at}")).collect();
        Some(format!("looked for {}", names.join(", then ")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn azure(prefix: &str, tenant: Option<&str>) -> Azure {
        Azure::new(
            &AzureConfig {
                vault_url: Some("https://v.vault.azure.net".into()),
                prefix: prefix.into(),
                ..AzureConfig::default()
            },
            &Context::new(".", tenant.map(str::to_owned)),
        )
        .unwrap()
    }

    fn lookup(key: &str, params: &[(&str, &str)]) -> Lookup {
        Lookup::of(key, params)
    }

    #[test]
    fn names_map_underscores_and_tenants_to_dashes() {
        let a = azure("app-", Some("eu/acme_1.prod"));
        let (names, version) = a
            .candidates(&lookup("DB_PASSWORD", &[("version", "0a1b")]))
            .unwrap();
        assert_eq!(names, ["app-eu-acme-1-prod-DB-PASSWORD", "app-DB-PASSWORD"]);
        assert_eq!(version.as_deref(), Some("0a1b"));
        let a = azure("", None);
        assert_eq!(a.candidates(&lookup("db", &[])).unwrap().0, ["db"]);
    }

    #[test]
    fn bad_names_and_versions_are_config_errors() {
        let a = azure("", None);
        for bad in ["a b", "a:b", "", "é"] {
            assert_eq!(
                a.candidates(&lookup(bad, &[])).unwrap_err().kind,
                ErrorKind::Config,
                "{bad:?}"
            );
        }
        let e = a
            .candidates(&lookup("x", &[("version", "1/2")]))
            .unwrap_err();
        assert_eq!(e.kind, ErrorKind::Config);
        assert!(e.message.contains("1/2"));
    }

    #[test]
    fn scope_follows_the_vault_domain() {
        assert_eq!(
            scope_of("https://myvault.vault.azure.net/"),
            "https://vault.azure.net/.default"
        );
        assert_eq!(
            scope_of("https://v.vault.azure.cn:443"),
            "https://vault.azure.cn/.default"
        );
        // A private name (or a test server) asks for the public cloud's scope.
        assert_eq!(
            scope_of("https://localhost:8443"),
            "https://vault.azure.net/.default"
        );
        assert_eq!(
            scope_of("https://kv.privatelink.vaultcore.azure.net"),
            "https://vault.azure.net/.default"
        );
    }
}
