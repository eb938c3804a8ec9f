//! `type: azure` through the binary, against a fake of Key Vault and Entra ID's token
//! endpoint (`tests/common/azure_fake.py`, written from Microsoft's REST reference; no
//! emulator exists), over HTTPS with a CA the fake generates for each test. The client is
//! Microsoft's own: it meets the `401` challenge, gets a token with the client secret from
//! the environment (a canary) at the fake's token endpoint, then reads.

#![cfg(feature = "azure")]

mod common;

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use common::server::{Server, free_port, http_get, venv};
use common::{CANARY, Done, Test, exists};
use serde_json::{Value, json};

const FAKE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/common/azure_fake.py");
const TENANT: &str = "72f988bf-86f1-41af-91ab-2d7cd011db47";
const CLIENT: &str = "0d5e8a63-8b51-4c2c-a1a3-6b1e9d0b2f11";

struct Fake {
    server: Server,
    stats_port: u16,
    ca: PathBuf,
    dir: tempfile::TempDir,
}

impl Fake {
    fn start(mut state: Value) -> Fake {
        let bin = venv(&["cryptography==48.0.0"]);
        state["tenant"] = json!(TENANT);
        state["client_id"] = json!(CLIENT);
        state["client_secret"] = json!(CANARY);
        let dir = tempfile::tempdir().unwrap();
        let state_file = dir.path().join("state.json");
        std::fs::write(&state_file, state.to_string()).unwrap();
        let (port, stats_port) = (free_port(), free_port());
        let mut cmd = Command::new(bin.join("python"));
        cmd.arg(FAKE)
            .args(["--port", &port.to_string()])
            .args(["--stats-port", &stats_port.to_string()])
            .arg("--state")
            .arg(&state_file)
            .arg("--dir")
            .arg(dir.path());
        let server = Server::start("azure-fake", port, cmd, move |_| {
            http_get(stats_port, "/_stats").is_some()
        });
        Fake {
            server,
            stats_port,
            ca: dir.path().join("ca.pem"),
            dir,
        }
    }

    fn url(&self) -> String {
        format!("https://localhost:{}", self.server.port)
    }

    fn stats(&self) -> Value {
        let (status, body) = http_get(self.stats_port, "/_stats").expect("fake answers");
        assert_eq!(status, 200);
        serde_json::from_str(&body).unwrap()
    }

    /// A test whose default backend is this vault, with the client secret in the
    /// environment and no managed identity or Azure CLI in reach.
    fn test(&self, settings: &str, environment: &str) -> Test {
        let manifest = format!(
            "secrets:\n  type: azure\n  vault_url: {}\n  ca_file: {}\n  verify_challenge_resource: false\n{settings}environment:\n{environment}",
            self.url(),
            self.ca.display()
        );
        Test::new()
            .manifest(&manifest)
            .env("AZURE_TENANT_ID", TENANT)
            .env("AZURE_CLIENT_ID", CLIENT)
            .env("AZURE_CLIENT_SECRET", CANARY)
            .env("AZURE_AUTHORITY_HOST", self.url())
            .env_remove("AZURE_FEDERATED_TOKEN_FILE")
            .env_remove("AZURE_KEYVAULT_URL")
            .env_remove("IDENTITY_ENDPOINT")
            .env_remove("MSI_ENDPOINT")
            .env(
                "AZURE_POD_IDENTITY_AUTHORITY_HOST",
                format!("http://127.0.0.1:{}", free_port()),
            )
            .env("PATH", "/usr/bin:/bin")
    }
}

fn check(expected: &[(&str, &str)]) -> String {
    let mut script = String::new();
    for (var, value) in expected {
        script.push_str(&format!(
            "[ \"${var}\" = '{value}' ] || {{ echo 'wrong {var}'; exit 1; }}; "
        ));
    }
    script.push_str("echo all-good");
    script
}

/// Masking is on, so envrun supervises: the single-thread check runs after the fetch.
fn run_checked(t: &Test, expected: &[(&str, &str)]) -> Done {
    t.run(&["--", "sh", "-c", &check(expected)])
        .never_shows(CANARY)
}

fn state() -> Value {
    json!({
        "secrets": {
            "plain": {"v1": {"value": "old-value"}, "v2": {"value": "plain-value"}},
            "db": {"v1": {"value": "{\"user\":\"app\",\"password\":\"pw-9f2c\",\"port\":5432}"}},
            "db-password": {"v1": {"value": "underscored"}},
            "app-token": {"v1": {"value": "global-token"}},
            "app-acme-token": {"v1": {"value": "acme-token"}},
            "app-eu-acme-only": {"v1": {"value": "eu-acme-only"}},
            "off": {"v1": {"value": "disabled-value", "enabled": false}},
            "locked": {"v1": {"value": "nope"}},
            "busy": {"v1": {"value": "busy-value"}},
        },
        "latest": {"plain": "v2"},
        "denied": ["locked"],
        "throttle": {"busy": 2},
    })
}

#[test]
fn fake_answers_as_the_reference_documents() {
    let fake = Fake::start(state());
    let ca = std::fs::read(&fake.ca).unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let client = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&ca).unwrap())
        .build()
        .unwrap();
    let base = fake.url();
    runtime.block_on(async {
        // No token: the challenge, as Key Vault sends it.
        let r = client
            .get(format!("{base}/secrets/plain/?api-version=7.6"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401);
        let challenge = r.headers()["www-authenticate"].to_str().unwrap().to_owned();
        assert!(
            challenge.starts_with("Bearer authorization=\"https://login.microsoftonline.com/")
                && challenge.contains("resource=\"https://vault.azure.net\""),
            "{challenge}"
        );
        // Client credentials at the token endpoint.
        let r = client
            .post(format!("{base}/{TENANT}/oauth2/v2.0/token"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(format!(
                "grant_type=client_credentials&client_id={CLIENT}&client_secret={CANARY}&scope=https%3A%2F%2Fvault.azure.net%2F.default"
            ))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let token: Value = serde_json::from_str(&r.text().await.unwrap()).unwrap();
        assert_eq!(token["token_type"], "Bearer");
        let bearer = format!("Bearer {}", token["access_token"].as_str().unwrap());
        let get = |path: String| {
            let req = client.get(format!("{base}{path}")).header("authorization", &bearer);
            async move {
                let r = req.send().await.unwrap();
                let status = r.status().as_u16();
                let retry = r.headers().get("retry-after").map(|v| v.to_str().unwrap().to_owned());
                (status, serde_json::from_str::<Value>(&r.text().await.unwrap()).unwrap(), retry)
            }
        };
        // The Get Secret example's shape: value, id, attributes.
        let (status, body, _) = get("/secrets/plain/?api-version=7.6".into()).await;
        assert_eq!(status, 200);
        assert_eq!(body["value"], "plain-value");
        assert!(body["id"].as_str().unwrap().ends_with("/secrets/plain/v2"));
        let mut keys: Vec<&String> = body["attributes"].as_object().unwrap().keys().collect();
        keys.sort();
        assert_eq!(keys, ["created", "enabled", "recoveryLevel", "updated"]);
        let (_, body, _) = get("/secrets/plain/v1?api-version=7.6".into()).await;
        assert_eq!(body["value"], "old-value");
        for (path, status_code, code, inner) in [
            ("/secrets/nope/?api-version=7.6", 404, "SecretNotFound", None),
            ("/secrets/locked/?api-version=7.6", 403, "Forbidden", Some("AccessDenied")),
            ("/secrets/off/?api-version=7.6", 403, "Forbidden", Some("SecretDisabled")),
            ("/secrets/busy/?api-version=7.6", 429, "Throttled", None),
        ] {
            let (status, body, retry) = get(path.into()).await;
            assert_eq!(status, status_code, "{path}: {body}");
            assert_eq!(body["error"]["code"], code, "{path}");
            assert!(body["error"]["message"].is_string());
            assert_eq!(body["error"]["innererror"]["code"].as_str(), inner, "{path}");
            if status == 429 {
                assert_eq!(retry.as_deref(), Some("1"));
            }
        }
    });
}

#[test]
fn plain_json_fields_versions_and_underscores() {
    let fake = Fake::start(state());
    let t = fake.test(
        "",
        "  PLAIN: secret:plain\n  OLD: secret:plain?version=v1\n  USER: secret:db#user\n  PASS: secret:db#password\n  PORT: secret:db#port\n  UND: secret:DB_PASSWORD\n",
    );
    run_checked(
        &t,
        &[
            ("PLAIN", "plain-value"),
            ("OLD", "old-value"),
            ("USER", "app"),
            ("PASS", "pw-9f2c"),
            ("PORT", "5432"),
            ("UND", "underscored"),
        ],
    )
    .status(0)
    .stdout("all-good\n");
    let stats = fake.stats();
    assert_eq!(
        stats["per_name"]["db/"], 1,
        "one lookup for two fields: {stats}"
    );
    assert_eq!(stats["token"], 1, "one token for the run: {stats}");
}

#[test]
fn vault_url_comes_from_the_environment_when_not_set() {
    let fake = Fake::start(state());
    let manifest = format!(
        "secrets:\n  type: azure\n  ca_file: {}\n  verify_challenge_resource: false\nenvironment:\n  PLAIN: secret:plain\n",
        fake.ca.display()
    );
    let t = fake.test("", "  X: plain\n").manifest(&manifest);
    run_checked(
        &t.env("AZURE_KEYVAULT_URL", fake.url()),
        &[("PLAIN", "plain-value")],
    )
    .status(0)
    .stdout("all-good\n");
    let t = fake.test("", "  X: plain\n").manifest(&manifest);
    t.run(&["--", "sh", "-c", "touch ran"])
        .status(125)
        .stderr_has("no vault URL")
        .stderr_has("AZURE_KEYVAULT_URL");
    assert!(!exists(&t.path("ran")));
}

#[test]
fn prefix_and_tenant_copy_first_then_global() {
    let fake = Fake::start(state());
    let settings = "  prefix: app-\n";
    let env = "  TOKEN: secret:token\n";
    run_checked(&fake.test(settings, env), &[("TOKEN", "global-token")])
        .status(0)
        .stdout("all-good\n");
    run_checked(
        &fake.test(settings, env).env("ENVRUN_TENANT", "acme"),
        &[("TOKEN", "acme-token")],
    )
    .status(0)
    .stdout("all-good\n");
    run_checked(
        &fake.test(settings, env).env("ENVRUN_TENANT", "beta"),
        &[("TOKEN", "global-token")],
    )
    .status(0)
    .stdout("all-good\n");
    run_checked(
        &fake
            .test(settings, "  ONLY: secret:only\n")
            .env("ENVRUN_TENANT", "eu/acme"),
        &[("ONLY", "eu-acme-only")],
    )
    .status(0)
    .stdout("all-good\n");
    assert_eq!(fake.stats()["per_name"]["app-beta-token/"], 1);
}

#[test]
fn missing_denied_and_disabled_are_named_and_nothing_runs() {
    let fake = Fake::start(state());
    let cases: &[(&str, &[&str])] = &[
        ("secret:missing", &["not found", "`missing`"]),
        (
            "secret:plain?version=v9",
            &["not found", "`plain` version `v9`"],
        ),
        (
            "secret:locked",
            &[
                "`locked`",
                "Forbidden/AccessDenied",
                "HTTP 403",
                "Key Vault Secrets User",
            ],
        ),
        ("secret:off", &["`off`", "disabled", "SecretDisabled"]),
    ];
    for (reference, needles) in cases {
        let t = fake.test("", &format!("  OK: secret:plain\n  BAD: \"{reference}\"\n"));
        let done = t
            .run(&["--", "sh", "-c", "touch ran"])
            .status(125)
            .never_shows("plain-value")
            .never_shows("disabled-value")
            .never_shows(CANARY);
        for needle in *needles {
            assert!(
                done.stderr_str().contains(needle),
                "{reference}: stderr lacks {needle:?}:\n{}",
                done.stderr_str()
            );
        }
        assert!(!exists(&t.path("ran")), "{reference}: the command ran");
    }
}

#[test]
fn throttling_is_retried_honouring_retry_after_within_the_deadline() {
    let fake = Fake::start(state());
    let start = Instant::now();
    run_checked(
        &fake.test("", "  BUSY: secret:busy\n"),
        &[("BUSY", "busy-value")],
    )
    .status(0)
    .stdout("all-good\n");
    // Two 429s with `Retry-After: 1`: envrun waited at least that long, twice.
    assert!(
        start.elapsed() >= Duration::from_secs(2),
        "{:?}",
        start.elapsed()
    );
    assert_eq!(fake.stats()["per_name"]["busy/"], 3);

    let mut s = state();
    s["throttle"]["busy"] = json!(1_000_000);
    let fake = Fake::start(s);
    let t = fake.test("", "  BUSY: secret:busy\n");
    let start = Instant::now();
    t.run(&["--timeout", "2s", "--", "sh", "-c", "touch ran"])
        .status(125)
        .stderr_has("Throttled")
        .stderr_has("attempts");
    assert!(
        start.elapsed() < Duration::from_secs(6),
        "{:?}",
        start.elapsed()
    );
    assert!(!exists(&t.path("ran")));
}

#[test]
fn a_hundred_references_are_fetched_concurrently_and_bounded() {
    let mut s = state();
    let mut environment = String::new();
    let mut expected = Vec::new();
    for i in 0..100 {
        s["secrets"][format!("k{i}")] = json!({"v1": {"value": format!("value-{i}")}});
        environment.push_str(&format!("  K{i}: secret:k{i}\n"));
        expected.push((format!("K{i}"), format!("value-{i}")));
    }
    s["delay_ms"] = json!(50);
    let fake = Fake::start(s);
    let expected: Vec<(&str, &str)> = expected
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    run_checked(&fake.test("", &environment), &expected)
        .status(0)
        .stdout("all-good\n");
    let stats = fake.stats();
    assert_eq!(stats["get"], 100, "{stats}");
    let max = stats["max_in_flight"].as_u64().unwrap();
    assert!(
        (4..=16).contains(&max),
        "at most 16 at a time, and more than a few: {max}"
    );
}

#[test]
fn a_refused_client_secret_is_one_clear_error_without_the_secret() {
    let fake = Fake::start(state());
    let t = fake
        .test("", "  PLAIN: secret:plain\n")
        .env("AZURE_CLIENT_SECRET", format!("{CANARY}-wrong"));
    t.run(&["--", "sh", "-c", "touch ran"])
        .status(125)
        .stderr_has("client secret")
        .never_shows(CANARY);
    assert!(!exists(&t.path("ran")));
}

#[test]
fn workload_identity_reads_the_federated_token_file() {
    let mut s = state();
    s["assertion"] = json!("eyJhbGciOiJSUzI1NiJ9.federated.token");
    let fake = Fake::start(s);
    let token_file = fake.dir.path().join("azure-identity-token");
    std::fs::write(&token_file, "eyJhbGciOiJSUzI1NiJ9.federated.token\n").unwrap();
    let t = fake
        .test("", "  PLAIN: secret:plain\n")
        .env_remove("AZURE_CLIENT_SECRET")
        .env("AZURE_FEDERATED_TOKEN_FILE", &token_file);
    run_checked(&t, &[("PLAIN", "plain-value")])
        .status(0)
        .stdout("all-good\n");
    assert_eq!(fake.stats()["token"], 1);
}

#[test]
fn the_challenge_resource_is_verified_by_default() {
    let fake = Fake::start(state());
    let manifest = format!(
        "secrets:\n  type: azure\n  vault_url: {}\n  ca_file: {}\nenvironment:\n  PLAIN: secret:plain\n",
        fake.url(),
        fake.ca.display()
    );
    let t = fake.test("", "  X: plain\n").manifest(&manifest);
    t.run(&["--", "sh", "-c", "touch ran"])
        .status(125)
        .stderr_has("`plain`")
        .never_shows(CANARY);
    assert!(!exists(&t.path("ran")));
}

#[test]
fn off_cloud_without_credentials_fails_fast_naming_the_sources() {
    // The metadata address refuses, or accepts and never answers: both end in the probe,
    // and the SDK's own request (always to 169.254.169.254) is never made.
    let closed = free_port();
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let silent_port = silent.local_addr().unwrap().port();
    for port in [closed, silent_port] {
        let t = Test::new()
            .manifest("secrets:\n  type: azure\n  vault_url: https://127.0.0.1:9\nenvironment:\n  A: secret:a\n")
            .env_remove("AZURE_CLIENT_SECRET")
            .env_remove("AZURE_FEDERATED_TOKEN_FILE")
            .env_remove("IDENTITY_ENDPOINT")
            .env_remove("MSI_ENDPOINT")
            .env("AZURE_POD_IDENTITY_AUTHORITY_HOST", format!("http://127.0.0.1:{port}"))
            .env("PATH", "/usr/bin:/bin");
        let start = Instant::now();
        let done = t
            .run(&["--timeout", "30s", "--", "sh", "-c", "touch ran"])
            .status(125)
            .stderr_has("AZURE_CLIENT_SECRET")
            .stderr_has("workload identity")
            .stderr_has("managed identity")
            .stderr_has("Azure CLI");
        let took = start.elapsed();
        assert!(
            took < Duration::from_secs(2),
            "took {took:?}: {}",
            done.stderr_str()
        );
        assert!(!exists(&t.path("ran")));
    }
    drop(silent);
}

#[test]
fn the_example_manifest_is_valid_and_fails_only_for_want_of_credentials() {
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/azure/envrun.yaml");
    let t = Test::new()
        .env_remove("AZURE_CLIENT_SECRET")
        .env_remove("AZURE_FEDERATED_TOKEN_FILE")
        .env_remove("IDENTITY_ENDPOINT")
        .env_remove("MSI_ENDPOINT")
        .env(
            "AZURE_POD_IDENTITY_AUTHORITY_HOST",
            format!("http://127.0.0.1:{}", free_port()),
        )
        .env("PATH", "/usr/bin:/bin");
    t.run(&["-m", example, "--", "sh", "-c", "touch ran"])
        .status(125)
        .stderr_has("no credentials found");
    assert!(!exists(&t.path("ran")));
}

#[test]
fn rotation_age_comes_from_the_versions_updated_time() {
    // The fake's versions were last updated in 2017 (the reference's example time).
    let fake = Fake::start(state());
    let t = fake
        .test("", "  PLAIN: secret:plain\n  USER: secret:db#user\n")
        .file(
            "envrun.yaml",
            &format!(
                "secrets:\n  type: azure\n  vault_url: {}\n  ca_file: {}\n  verify_challenge_resource: false\nrotation:\n  PLAIN: 90d\nenvironment:\n  PLAIN: secret:plain\n  USER: secret:db#user\n",
                fake.url(),
                fake.ca.display()
            ),
        );
    let done = t.run(&["check", "--json"]).status(1).never_shows(CANARY);
    let report: Value = serde_json::from_str(&done.stdout_str()).unwrap();
    let due: Vec<&Value> = report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["kind"] == "rotation-due")
        .collect();
    assert_eq!(due.len(), 1, "{report}");
    assert_eq!(due[0]["variable"], "PLAIN");
    assert!(
        !report["findings"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f["kind"] == "no-age"),
        "{report}"
    );
}

#[test]
fn the_azure_cli_is_the_last_source_and_leaves_no_thread() {
    // A stand-in `az` that prints what `az account get-access-token --output json` prints.
    let mut s = state();
    s["static_tokens"] = json!(["cli-token-3f9a"]);
    let fake = Fake::start(s);
    let bin = fake.dir.path().join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let az = bin.join("az");
    std::fs::write(
        &az,
        "#!/bin/sh\necho \"$@\" >> \"$(dirname \"$0\")/calls\"\nprintf '{\"accessToken\":\"cli-token-3f9a\",\"expiresOn\":\"2099-01-01 00:00:00.000000\",\"expires_on\":4070908800,\"subscription\":\"s\",\"tenant\":\"t\",\"tokenType\":\"Bearer\"}\\n'\n",
    )
    .unwrap();
    std::fs::set_permissions(&az, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let t = fake
        .test("", "  PLAIN: secret:plain\n")
        .env_remove("AZURE_CLIENT_SECRET")
        .env("PATH", format!("{}:/usr/bin:/bin", bin.display()));
    // Supervise mode (masking on) refuses to start the command if a thread were left.
    run_checked(&t, &[("PLAIN", "plain-value")])
        .status(0)
        .stdout("all-good\n");
    let calls = std::fs::read_to_string(bin.join("calls")).unwrap();
    assert!(calls.contains("account get-access-token"), "{calls}");
    assert_eq!(
        fake.stats()["token"],
        0,
        "no token endpoint call: {}",
        fake.stats()
    );
}
