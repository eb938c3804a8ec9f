//! `type: aws` (Secrets Manager) and `type: aws-ssm` (SSM Parameter Store), through the
//! official AWS SDK (feature `aws`).
//!
//! This module owns what the two share: the manifest settings ([`AwsConfig`]), loading the
//! SDK's configuration for one fetch ([`connect`]: region, credentials, endpoint, retries
//! and timeouts bounded by envrun's deadline, the EC2 metadata service tried once and
//! quickly), how SDK errors become [`ErrorKind`]s ([`classify`]), and splitting ids into
//! batches ([`chunks`]). Each service's file owns its ids, calls and answers.
//!
//! Nothing here runs unless a manifest uses an AWS backend: [`BackendConfig::build`]
//! (crate::backend) only copies settings; the SDK is configured inside `fetch`, on the
//! runtime of [`net::block_on`], and dropped with it.

mod secrets_manager;
mod ssm;

use std::time::{Duration, Instant};

use aws_config::imds;
use aws_config::meta::region::RegionProviderChain;
use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_smithy_http_client::tls;
use serde::Deserialize;

use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
use aws_smithy_runtime_api::client::result::SdkError;
use aws_smithy_types::error::metadata::ProvideErrorMetadata;

use super::{BackendError, ErrorKind};

pub use secrets_manager::SecretsManager;
pub use ssm::ParameterStore;

/// How many ids one `BatchGetSecretValue` may name (AWS refuses more).
pub const SECRETS_PER_BATCH: usize = 20;
/// How many names one `GetParameters` may name (AWS refuses more).
pub const PARAMETERS_PER_BATCH: usize = 10;
/// How many batch calls run at once.
const CONCURRENT_CALLS: usize = 8;

/// The settings of `type: aws` and `type: aws-ssm`. Every field is optional: the SDK's
/// usual resolution (`AWS_REGION`, `AWS_PROFILE`, `~/.aws/config`, `AWS_ENDPOINT_URL`, ...)
/// fills in what is not set.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AwsConfig {
    /// The region, e.g. `eu-west-1`; else `AWS_REGION`, the profile, or EC2 metadata.
    pub region: Option<String>,
    /// The profile of `~/.aws/config` and `~/.aws/credentials`; else `AWS_PROFILE`.
    pub profile: Option<String>,
    /// Another endpoint (a VPC endpoint, LocalStack, moto); else `AWS_ENDPOINT_URL`.
    pub endpoint_url: Option<String>,
    /// Put before every name: `prod/` for Secrets Manager, a path such as `/myapp/prod/` for
    /// Parameter Store. Not put before ARNs.
    #[serde(default)]
    pub prefix: String,
    /// Secrets Manager only: where a tenant's values are (see [`TenantLayout`]).
    #[serde(default)]
    pub tenant_layout: TenantLayout,
}

/// How a tenant's secrets are laid out in Secrets Manager.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TenantLayout {
    /// One secret per value: `{prefix}{tenant}/NAME`, then `{prefix}NAME`.
    #[default]
    Path,
    /// One JSON secret per tenant: field `NAME` of `{prefix}{tenant}`, then `{prefix}NAME`.
    Json,
}

/// What a backend keeps from [`AwsConfig`] and the [`Context`](super::Context) until it
/// fetches.
#[derive(Clone, Debug)]
struct Settings {
    config: AwsConfig,
    tenant: Option<String>,
    deadline: Instant,
}

impl Settings {
    fn new(config: &AwsConfig, ctx: &super::Context) -> Settings {
        Settings {
            config: config.clone(),
            tenant: ctx.tenant.clone(),
            deadline: ctx.deadline,
        }
    }
}

/// True for a full ARN, which is used as written (no prefix, no tenant).
fn is_arn(key: &str) -> bool {
    key.starts_with("arn:")
}

/// Splits `ids` into batches of at most `size`, in order. Each id appears once: the
/// callers de-duplicate first (a batch must not name an id twice).
pub fn chunks<T: Clone>(ids: &[T], size: usize) -> Vec<Vec<T>> {
    assert!(size > 0, "a batch holds at least one id");
    ids.chunks(size).map(<[T]>::to_vec).collect()
}

/// The IMDS client both chains use: one attempt, short timeouts, so a machine that is not
/// on EC2 (a laptop, CI) learns it in well under a second instead of the SDK's default of
/// four attempts with 1 s timeouts each. `AWS_EC2_METADATA_DISABLED=true` skips it entirely
/// (the SDK's providers check it).
fn imds_client(http: &aws_smithy_runtime_api::client::http::SharedHttpClient) -> imds::Client {
    let provider = aws_config::provider_config::ProviderConfig::without_region()
        .with_http_client(http.clone());
    imds::Client::builder()
        .configure(&provider)
        .max_attempts(1)
        .connect_timeout(Duration::from_millis(300))
        .read_timeout(Duration::from_millis(500))
        .operation_timeout(Duration::from_millis(1000))
        .build()
}

/// Whether the EC2 metadata service is turned off by `AWS_EC2_METADATA_DISABLED`.
fn imds_disabled() -> bool {
    std::env::var("AWS_EC2_METADATA_DISABLED").is_ok_and(|v| v.eq_ignore_ascii_case("true"))
}

/// Loads the SDK configuration for one fetch: region, credentials (resolved once, here, so
/// a failure names every source tried), endpoint, and retries and timeouts that end by the
/// deadline. Must run on the fetch's runtime.
async fn connect(s: &Settings) -> Result<SdkConfig, BackendError> {
    let c = &s.config;
    let http = aws_smithy_http_client::Builder::new()
        .tls_provider(tls::Provider::Rustls(
            tls::rustls_provider::CryptoMode::Ring,
        ))
        .build_https();
    let imds = imds_client(&http);

    let region = match &c.region {
        Some(r) => Some(Region::new(r.clone())),
        None => {
            let mut profile = aws_config::profile::ProfileFileRegionProvider::builder();
            if let Some(p) = &c.profile {
                profile = profile.profile_name(p);
            }
            RegionProviderChain::first_try(
                aws_config::environment::EnvironmentVariableRegionProvider::new(),
            )
            .or_else(profile.build())
            .or_else(
                aws_config::imds::region::ImdsRegionProvider::builder()
                    .imds_client(imds.clone())
                    .build(),
            )
            .region()
            .await
        }
    };
    let Some(region) = region else {
        return Err(BackendError::of(
            ErrorKind::Config,
            format!(
                "no AWS region configured (looked at `region:` in the manifest, AWS_REGION, AWS_DEFAULT_REGION, the profile's `region` in ~/.aws/config{})",
                if imds_disabled() {
                    ""
                } else {
                    " and the EC2 instance metadata service (one quick attempt)"
                }
            ),
        )
        .with_hint(
            "set `region: eu-west-1` (for example) on the backend in the manifest, or export AWS_REGION",
        ));
    };

    // Credentials, once: the SDK's default chain, with the quick IMDS client.
    let provider_config = aws_config::provider_config::ProviderConfig::without_region()
        .with_http_client(http.clone())
        .with_region(Some(region.clone()));
    let mut chain = aws_config::default_provider::credentials::DefaultCredentialsChain::builder()
        .configure(provider_config)
        .region(region.clone())
        .imds_client(imds);
    if let Some(p) = &c.profile {
        chain = chain.profile_name(p);
    }
    let chain = chain.build().await;
    let credentials = {
        use aws_credential_types::provider::ProvideCredentials;
        chain
            .provide_credentials()
            .await
            .map_err(|e| credentials_error(s, &e))?
    };

    let remaining = s.deadline.saturating_duration_since(Instant::now());
    let mut loader = aws_config::defaults(BehaviorVersion::latest())
        .http_client(http)
        .region(region)
        .credentials_provider(credentials)
        // The standard mode retries throttling and transient failures (not AccessDenied,
        // ResourceNotFound or DecryptionFailure), with backoff that starts as envrun's does;
        // the operation timeout keeps every attempt and wait inside the deadline.
        .retry_config(
            RetryConfig::standard()
                .with_max_attempts(8)
                .with_initial_backoff(Duration::from_millis(50))
                .with_max_backoff(Duration::from_secs(2)),
        )
        .timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(remaining.min(Duration::from_secs(3)))
                .operation_timeout(remaining)
                .build(),
        );
    if let Some(p) = &c.profile {
        loader = loader.profile_name(p);
    }
    if let Some(url) = &c.endpoint_url {
        loader = loader.endpoint_url(url);
    }
    Ok(loader.load().await)
}

/// A credentials failure, naming every source the default chain tried.
fn credentials_error(
    s: &Settings,
    e: &aws_credential_types::provider::error::CredentialsError,
) -> BackendError {
    use aws_credential_types::provider::error::CredentialsError;
    let profile = s
        .config
        .profile
        .clone()
        .or_else(|| std::env::var("AWS_PROFILE").ok())
        .unwrap_or_else(|| String::from("default"));
    let imds = if imds_disabled() {
        "EC2 instance metadata (skipped: AWS_EC2_METADATA_DISABLED)"
    } else {
        "EC2 instance metadata (one quick attempt)"
    };
    let detail = chain(e);
    let message = match e {
        CredentialsError::CredentialsNotLoaded(_) => format!(
            "no AWS credentials found; tried: the environment (AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY), profile `{profile}` in ~/.aws/credentials and ~/.aws/config (keys, SSO, credential_process, role), a web identity token (AWS_WEB_IDENTITY_TOKEN_FILE), ECS container credentials, {imds}",
        ),
        _ => format!("loading AWS credentials failed: {detail}"),
    };
    BackendError::of(ErrorKind::Denied, message).with_hint(
        "export AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE (after `aws sso login` or `aws configure`), or set `profile:` on the backend",
    )
}

/// Turns an SDK error into a [`BackendError`] of the right kind; `what` names the operation
/// and key(s), e.g. "GetSecretValue `prod/db`". The message holds AWS's error code and
/// message, never a value.
fn classify<E>(what: &str, err: &SdkError<E, HttpResponse>) -> BackendError
where
    E: std::error::Error + ProvideErrorMetadata + 'static,
{
    match err {
        SdkError::TimeoutError(_) => BackendError::of(
            ErrorKind::Timeout,
            format!("{what}: no answer before the deadline (--timeout)"),
        ),
        SdkError::DispatchFailure(f) => {
            let kind = if f.is_timeout() {
                ErrorKind::Timeout
            } else {
                ErrorKind::Unreachable
            };
            BackendError::of(kind, format!("{what}: {}", chain(err)))
        }
        SdkError::ServiceError(ctx) => {
            let e = ctx.err();
            let code = e.code().unwrap_or("unknown error");
            let status = ctx.raw().status().as_u16();
            let message = match e.message() {
                Some(m) if !m.is_empty() => format!("{what}: {code}: {m}"),
                _ => format!("{what}: {code}"),
            };
            BackendError::of(kind_of_code(code, status), message)
        }
        SdkError::ResponseError(r) => BackendError::of(
            super::net::kind_of_status(r.raw().status().as_u16()),
            format!("{what}: {}", chain(err)),
        ),
        _ => BackendError::of(ErrorKind::BadResponse, format!("{what}: {}", chain(err))),
    }
}

/// An error and its sources, each as its `Display` text (`dispatch failure: io error: ...:
/// Connection refused (os error 111)`), without the `Debug` dump the SDK's own
/// `DisplayErrorContext` appends (a user should not read Rust structs).
fn chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut out = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !text.is_empty() && !out.ends_with(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

/// The kind of an AWS error code (the same codes come back per item in a batch's `Errors`).
fn kind_of_code(code: &str, status: u16) -> ErrorKind {
    match code {
        "ResourceNotFoundException" | "ParameterNotFound" | "ParameterVersionNotFound" => {
            ErrorKind::NotFound
        }
        "AccessDeniedException"
        | "AccessDenied"
        | "UnrecognizedClientException"
        | "InvalidSignatureException"
        | "SignatureDoesNotMatch"
        | "ExpiredTokenException"
        | "InvalidClientTokenId"
        | "IncompleteSignature" => ErrorKind::Denied,
        "ThrottlingException"
        | "Throttling"
        | "TooManyRequestsException"
        | "RequestLimitExceeded" => ErrorKind::Throttled,
        "InternalServiceError" | "InternalServerError" | "ServiceUnavailable" => {
            ErrorKind::Unavailable
        }
        "DecryptionFailure"
        | "InvalidKeyId"
        | "InvalidRequestException"
        | "InvalidParameterException" => ErrorKind::BadResponse,
        _ if status == 0 => ErrorKind::BadResponse,
        _ => super::net::kind_of_status(status),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_hold_at_most_size_in_order_and_lose_nothing() {
        for (n, size, expect) in [
            (0, 20, vec![]),
            (1, 20, vec![1]),
            (19, 20, vec![19]),
            (20, 20, vec![20]),
            (21, 20, vec![20, 1]),
            (40, 20, vec![20, 20]),
            (45, 20, vec![20, 20, 5]),
            (100, 20, vec![20; 5]),
            (9, 10, vec![9]),
            (10, 10, vec![10]),
            (11, 10, vec![10, 1]),
            (25, 10, vec![10, 10, 5]),
        ] {
            let ids: Vec<usize> = (0..n).collect();
            let batches = chunks(&ids, size);
            let lens: Vec<usize> = batches.iter().map(Vec::len).collect();
            assert_eq!(lens, expect, "{n} ids in batches of {size}");
            assert_eq!(batches.concat(), ids, "{n} ids in batches of {size}");
        }
    }

    #[test]
    fn error_codes_map_to_kinds_that_retry_only_what_can_pass() {
        assert_eq!(
            kind_of_code("ThrottlingException", 400),
            ErrorKind::Throttled
        );
        assert!(kind_of_code("ThrottlingException", 400).is_transient());
        for permanent in [
            "AccessDeniedException",
            "ResourceNotFoundException",
            "DecryptionFailure",
            "ParameterNotFound",
        ] {
            assert!(!kind_of_code(permanent, 400).is_transient(), "{permanent}");
        }
        assert_eq!(
            kind_of_code("ResourceNotFoundException", 400),
            ErrorKind::NotFound
        );
        assert_eq!(
            kind_of_code("AccessDeniedException", 400),
            ErrorKind::Denied
        );
        assert_eq!(kind_of_code("Whatever", 503), ErrorKind::Unavailable);
    }

    #[test]
    fn arns_are_recognised() {
        assert!(is_arn(
            "arn:aws:secretsmanager:eu-west-1:123456789012:secret:db-AbCdEf"
        ));
        assert!(!is_arn("prod/db"));
    }
}
