//! The small HTTP client the Vault backend speaks through: one `reqwest` client (rustls with
//! the `ring` provider, HTTP/1.1, a connection pool shared by every concurrent read), the
//! namespace header on every request, and the mapping of every failure to an [`ErrorKind`]
//! (which decides what [`net::retry`] retries).
//!
//! It knows Vault's wire conventions (`/v1/` paths, `X-Vault-Token`, `X-Vault-Namespace`,
//! `{"errors": [...]}` bodies, 412 for "not replicated yet", `Retry-After`) and nothing about
//! KV engines or auth methods: that is `vault/mod.rs`.
//!
//! Bodies are read into buffers that are wiped when dropped ([`Reply`]); request bodies that
//! carry credentials (logins) and the token header are copied into the HTTP stack, whose own
//! buffers envrun cannot wipe.

use std::path::Path;
use std::time::{Duration, Instant};

use reqwest::header::{HeaderMap, HeaderValue, RETRY_AFTER};
use secrecy::{ExposeSecret, SecretString};
use zeroize::Zeroizing;

use crate::backend::net;
use crate::backend::{BackendError, ErrorKind};

/// The shortest time one attempt is given before it is abandoned and retried.
const MIN_ATTEMPT: Duration = Duration::from_millis(1500);

/// TLS settings of a connection.
pub struct Tls<'a> {
    /// A PEM file (one or more certificates) trusted in addition to the system roots.
    pub ca_cert: Option<&'a Path>,
    /// Accept any certificate (`tls_skip_verify`; warned about when the backend is built).
    pub skip_verify: bool,
}

/// A connection to one Vault server.
pub struct Client {
    http: reqwest::Client,
    base: reqwest::Url,
    deadline: Instant,
}

/// An answer from Vault: its status, `Retry-After`, and its body in a buffer wiped on drop.
pub struct Reply {
    pub status: u16,
    pub retry_after: Option<Duration>,
    pub body: Zeroizing<Vec<u8>>,
}

/// What to send with a request.
pub struct Request<'a> {
    /// What the request does, for messages: "read `secret/data/app`".
    pub what: &'a str,
    /// Path segments after `/v1/`, each percent-encoded as needed.
    pub path: &'a [&'a str],
    /// `?name=value` pairs.
    pub query: &'a [(&'a str, String)],
    pub namespace: Option<&'a str>,
    pub token: Option<&'a SecretString>,
    /// A JSON body: sends a POST (logins); none sends a GET.
    pub body: Option<Zeroizing<Vec<u8>>>,
}

impl Client {
    pub fn new(address: &str, tls: &Tls<'_>, deadline: Instant) -> Result<Client, BackendError> {
        let config = |msg: String| BackendError::of(ErrorKind::Config, msg);
        let base = reqwest::Url::parse(address)
            .ok()
            .filter(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some())
            .ok_or_else(|| {
                config(format!("address `{address}` is not an http(s) URL"))
                    .with_hint("write it as https://vault.example.com:8200")
            })?;
        // The process-wide default provider: `ring`, unless something installed one first.
        // An error only means one is already installed.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut builder = reqwest::Client::builder()
            .http1_only()
            .user_agent(concat!("envrun/", env!("CARGO_PKG_VERSION")))
            .pool_max_idle_per_host(super::CONCURRENCY);
        if let Some(path) = tls.ca_cert {
            let (_, pem) = crate::fileio::read_regular(
                path,
                crate::secret::MAX_VALUE,
                crate::fileio::Follow::Yes,
            )
            .map_err(|e| config(format!("ca_cert: {e}")))?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem)
                .ok()
                .filter(|c| !c.is_empty())
                .ok_or_else(|| {
                    config(format!(
                        "ca_cert {} holds no PEM certificate",
                        path.display()
                    ))
                })?;
            builder = builder.tls_certs_merge(certs);
        }
        if tls.skip_verify {
            builder = builder.tls_danger_accept_invalid_certs(true);
        }
        let http = builder
            .build()
            .map_err(|e| config(format!("cannot set up the HTTP client: {}", chain(&e))))?;
        Ok(Client {
            http,
            base,
            deadline,
        })
    }

    /// The URL of `/v1/{path...}` with its query.
    fn url(&self, req: &Request<'_>) -> reqwest::Url {
        let mut url = self.base.clone();
        {
            // `base` is an http(s) URL with a host, so it can be a base.
            if let Ok(mut segments) = url.path_segments_mut() {
                segments.pop_if_empty().push("v1").extend(req.path);
            }
        }
        if !req.query.is_empty() {
            url.query_pairs_mut()
                .extend_pairs(req.query.iter().map(|(k, v)| (*k, v.as_str())));
        }
        url
    }

    /// Sends one request, once. Any HTTP status is a [`Reply`]; `Err` is a failure to get
    /// one (connection, TLS, or the attempt's time ran out).
    pub async fn send(&self, req: &Request<'_>) -> Result<Reply, BackendError> {
        let mut headers = HeaderMap::new();
        if let Some(ns) = req.namespace {
            let value = HeaderValue::from_str(ns).map_err(|_| {
                BackendError::of(
                    ErrorKind::Config,
                    format!(
                        "namespace `{}` is not a valid header value",
                        ns.escape_default()
                    ),
                )
            })?;
            headers.insert("X-Vault-Namespace", value);
        }
        if let Some(token) = req.token {
            let mut value = HeaderValue::from_str(token.expose_secret()).map_err(|_| {
                BackendError::of(
                    ErrorKind::Config,
                    "the token holds characters a header cannot carry (is it the right file?)",
                )
            })?;
            value.set_sensitive(true);
            headers.insert("X-Vault-Token", value);
        }
        headers.insert("X-Vault-Request", HeaderValue::from_static("true"));
        let url = self.url(req);
        let mut builder = match &req.body {
            Some(body) => self
                .http
                .post(url)
                .header("Content-Type", "application/json")
                .body(body.to_vec()),
            None => self.http.get(url),
        };
        // One attempt may not take the whole deadline: a stalled connection is abandoned
        // (and retried) while there is still time for another attempt.
        let left = self.deadline.saturating_duration_since(Instant::now());
        builder = builder
            .headers(headers)
            .timeout((left / 2).max(MIN_ATTEMPT));
        let response = builder.send().await.map_err(|e| failure(req.what, &e))?;
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let bytes = response.bytes().await.map_err(|e| failure(req.what, &e))?;
        // Unique after the read, so this takes the buffer instead of copying it.
        let body = Zeroizing::new(Vec::from(bytes));
        Ok(Reply {
            status,
            retry_after,
            body,
        })
    }

    /// Sends `req` (retrying transient failures until the deadline) and returns the body
    /// of a 2xx answer; any other status is an error of its kind.
    pub async fn call(&self, req: &Request<'_>) -> Result<Reply, BackendError> {
        let attempt = || async {
            let reply = self.send(req).await?;
            if (200..300).contains(&reply.status) {
                Ok(reply)
            } else {
                Err(status_error(req.what, &reply))
            }
        };
        match net::within(self.deadline, net::retry(self.deadline, attempt)).await {
            Some(result) => result,
            None => Err(net::timed_out(req.what)),
        }
    }
}

/// The error for a non-2xx answer: its kind from the status (412, Vault's "not replicated
/// yet", is retried), Vault's own words, and the status.
pub fn status_error(what: &str, reply: &Reply) -> BackendError {
    let kind = match reply.status {
        412 => ErrorKind::Unavailable,
        s => net::kind_of_status(s),
    };
    let words = vault_errors(&reply.body);
    let detail = if words.is_empty() {
        String::new()
    } else {
        format!(": {words}")
    };
    BackendError::of(kind, format!("{what}: HTTP {}{detail}", reply.status))
        .with_retry_after(reply.retry_after)
}

/// Vault's `{"errors": [...]}`, flattened to one short line. These are Vault's messages
/// (paths, "permission denied"), never secret data.
fn vault_errors(body: &[u8]) -> String {
    #[derive(serde::Deserialize)]
    struct Errors {
        #[serde(default)]
        errors: Vec<String>,
    }
    let Ok(parsed) = serde_json::from_slice::<Errors>(body) else {
        return String::new();
    };
    let mut words: Vec<String> = parsed
        .errors
        .iter()
        .flat_map(|e| e.lines())
        .map(|l| l.trim().trim_start_matches("* ").trim())
        .filter(|l| {
            !l.is_empty() && !l.ends_with("error occurred:") && !l.ends_with("errors occurred:")
        })
        .map(str::to_owned)
        .collect();
    words.dedup();
    let mut line = words.join("; ");
    if line.len() > 300 {
        let mut cut = 300;
        while !line.is_char_boundary(cut) {
            cut -= 1;
        }
        line.truncate(cut);
        line.push_str("...");
    }
    line
}

/// Classifies a failure to get an answer. A TLS failure (untrusted certificate, wrong
/// scheme) will not pass by trying again, so it is not transient; every other connection
/// failure is.
fn failure(what: &str, e: &reqwest::Error) -> BackendError {
    let cause = chain(e);
    if let Some(tls) = tls_error(e) {
        return BackendError::of(ErrorKind::Config, format!("{what}: TLS: {tls}")).with_hint(
            "if the server's certificate is signed by a private CA, set `ca_cert:` (or $VAULT_CACERT) to that CA's PEM file; check that the address's scheme (http/https) is right",
        );
    }
    if e.is_timeout() {
        return BackendError::of(
            ErrorKind::Unavailable,
            format!("{what}: no answer in time ({cause})"),
        );
    }
    BackendError::of(ErrorKind::Unreachable, format!("{what}: {cause}"))
}

/// The rustls error somewhere in `e`'s sources (io errors hide theirs one level down).
fn tls_error(e: &(dyn std::error::Error + 'static)) -> Option<String> {
    let mut next: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = next {
        if let Some(t) = err.downcast_ref::<rustls::Error>() {
            return Some(t.to_string());
        }
        if let Some(io) = err.downcast_ref::<std::io::Error>()
            && let Some(inner) = io.get_ref()
            && let Some(t) = inner.downcast_ref::<rustls::Error>()
        {
            return Some(t.to_string());
        }
        // The connector may box the error in a type of its own; rustls's messages are
        // recognisable ("invalid peer certificate: UnknownIssuer", "received corrupt
        // message of type InvalidContentType").
        let text = err.to_string();
        if text.contains("peer certificate") || text.contains("corrupt message") {
            return Some(text);
        }
        next = err.source();
    }
    None
}

/// An error and its causes on one line, without the URL (messages name the operation).
fn chain(e: &reqwest::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut next = std::error::Error::source(e);
    while let Some(err) = next {
        let text = err.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        next = err.source();
    }
    if parts.is_empty() {
        parts.push(e.to_string());
    }
    parts.join(": ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vault_error_bodies_become_one_line() {
        let body = br#"{"errors":["1 error occurred:\n\t* permission denied\n\n"]}"#;
        assert_eq!(vault_errors(body), "permission denied");
        assert_eq!(vault_errors(br#"{"errors":[]}"#), "");
        assert_eq!(vault_errors(b"<html>"), "");
        let long = format!(r#"{{"errors":["{}"]}}"#, "é".repeat(400));
        assert!(vault_errors(long.as_bytes()).ends_with("..."));
    }

    #[test]
    fn statuses_map_to_kinds_and_412_is_retried() {
        let reply = |status| Reply {
            status,
            retry_after: Some(Duration::from_secs(2)),
            body: Zeroizing::new(br#"{"errors":["permission denied"]}"#.to_vec()),
        };
        let e = status_error("read `secret/data/app`", &reply(403));
        assert_eq!(e.kind, ErrorKind::Denied);
        assert_eq!(
            e.message,
            "read `secret/data/app`: HTTP 403: permission denied"
        );
        assert!(status_error("x", &reply(412)).kind.is_transient());
        assert!(status_error("x", &reply(429)).kind.is_transient());
        assert_eq!(
            status_error("x", &reply(429)).retry_after,
            Some(Duration::from_secs(2))
        );
        assert!(!status_error("x", &reply(400)).kind.is_transient());
    }

    #[test]
    fn urls_encode_segments_and_keep_the_address_path() {
        let c = Client::new(
            "https://vault.example.com:8200/",
            &Tls {
                ca_cert: None,
                skip_verify: false,
            },
            Instant::now(),
        )
        .unwrap();
        let req = Request {
            what: "x",
            path: &["secret", "data", "a b", "c?d"],
            query: &[("version", String::from("3"))],
            namespace: None,
            token: None,
            body: None,
        };
        assert_eq!(
            c.url(&req).as_str(),
            "https://vault.example.com:8200/v1/secret/data/a%20b/c%3Fd?version=3"
        );
        assert!(
            Client::new(
                "vault:8200",
                &Tls {
                    ca_cert: None,
                    skip_verify: false
                },
                Instant::now()
            )
            .is_err()
        );
    }
}
