//! `type: gcp` through the binary, against a fake of Secret Manager's REST API
//! (`tests/common/gcp_fake.py`, written from Google's reference; no emulator exists). The
//! client is Google's own, pointed at the fake with `endpoint:` and authenticated with a
//! service-account key generated for each test (its JWTs are verified by the fake) or with
//! `gcloud` user credentials refreshed at the fake's token endpoint.
//! (`google-cloud-auth` signs its own JWT for a service-account key and calls no token
//! endpoint, so the key file's `token_uri` is unused there; the fake checks the JWT's
//! signature with the key it generated.)

#![cfg(feature = "gcp")]

mod common;

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use common::server::{Server, free_port, http_get, venv};
use common::{CANARY, Done, Test, exists};
use serde_json::{Value, json};

const FAKE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/common/gcp_fake.py");

struct Fake {
    server: Server,
    /// The service-account key file the fake wrote (its own key, its own token endpoint).
    sa: PathBuf,
    _dir: tempfile::TempDir,
}

impl Fake {
    fn start(state: Value) -> Fake {
        let bin = venv(&["cryptography==48.0.0"]);
        let dir = tempfile::tempdir().unwrap();
        let state_file = dir.path().join("state.json");
        std::fs::write(&state_file, state.to_string()).unwrap();
        let sa = dir.path().join("sa.json");
        let port = free_port();
        let mut cmd = Command::new(bin.join("python"));
        cmd.arg(FAKE)
            .args(["--port", &port.to_string()])
            .arg("--state")
            .arg(&state_file)
            .arg("--sa-out")
            .arg(&sa);
        let ready_sa = sa.clone();
        let server = Server::start("gcp-fake", port, cmd, move |port| {
            ready_sa.exists() && http_get(port, "/_stats").is_some()
        });
        Fake {
            server,
            sa,
            _dir: dir,
        }
    }

    fn stats(&self) -> Value {
        let (status, body) = http_get(self.server.port, "/_stats").expect("fake answers");
        assert_eq!(status, 200);
        serde_json::from_str(&body).unwrap()
    }

    /// A test whose manifest uses this fake as the default backend, authenticated by the
    /// fake's service-account key, with no gcloud files and no metadata server in reach.
    fn test(&self, settings: &str, environment: &str) -> Test {
        let manifest = format!(
            "secrets:\n  type: gcp\n  endpoint: http://localhost:{}\n{settings}environment:\n{environment}",
            self.server.port
        );
        Test::new()
            .manifest(&manifest)
            .env("GOOGLE_APPLICATION_CREDENTIALS", &self.sa)
            .env_remove("GOOGLE_CLOUD_PROJECT")
            .env("GCE_METADATA_HOST", format!("127.0.0.1:{}", free_port()))
            .env("HOME", "/nonexistent-home")
    }
}

/// `sh -c` that checks each variable against its expected value (so no value is printed)
/// and then says `all-good`.
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

/// Runs envrun (masking on, so in supervise mode: the single-thread check runs after the
/// fetch) with a command that checks the values.
fn run_checked(t: &Test, expected: &[(&str, &str)]) -> Done {
    t.run(&["--", "sh", "-c", &check(expected)])
}

fn secrets_state() -> Value {
    json!({
        "secrets": {
            "projects/proj/secrets/plain": {"1": {"data": "old-value"}, "2": {"data": "plain-value"}},
            "projects/proj/secrets/db": {"1": {"data": "{\"user\":\"app\",\"password\":\"pw-9f2c\",\"port\":5432}"}},
            "projects/proj/secrets/app-token": {"1": {"data": "global-token"}},
            "projects/proj/secrets/app-acme-token": {"1": {"data": "acme-token"}},
            "projects/proj/secrets/app-eu-acme-only": {"1": {"data": "eu-acme-only"}},
            "projects/other/secrets/shared": {"1": {"data": "shared-value"}},
            "projects/proj/secrets/off": {"1": {"data": "v1"}, "2": {"data": "v2", "state": "DISABLED"}},
            "projects/proj/secrets/gone": {"1": {"data": "v1", "state": "DESTROYED"}},
            "projects/proj/secrets/locked": {"1": {"data": "nope"}},
            "projects/proj/secrets/busy": {"1": {"data": "busy-value"}},
            "projects/proj/secrets/damaged": {"1": {"data": "damaged-value"}},
        },
        "denied": ["projects/proj/secrets/locked"],
        "throttle": {"projects/proj/secrets/busy": 2},
        "bad_crc": ["projects/proj/secrets/damaged"],
        "refresh_token": CANARY,
    })
}

#[test]
fn fake_answers_as_the_reference_documents() {
    // Shapes from the REST reference (AccessSecretVersionResponse, SecretPayload) and
    // the error model (google.rpc.Status as {"error": {code, message, status}}).
    let fake = Fake::start(json!({
        "secrets": {"projects/proj/secrets/s": {"1": {"data": "123456789"}, "2": {"data": "x", "state": "DISABLED"}}},
        "denied": ["projects/proj/secrets/d"],
        "throttle": {"projects/proj/secrets/t": 1},
    }));
    let port = fake.server.port;
    // Without credentials: 401 UNAUTHENTICATED, before anything else.
    let (status, body) = http_get(port, "/v1/projects/proj/secrets/s/versions/1:access").unwrap();
    assert_eq!(status, 401);
    let body: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body["error"]["status"], "UNAUTHENTICATED");
    assert_eq!(body["error"]["code"], 401);

    // Authenticated with a token from the token endpoint (refresh-token grant).
    let fake = Fake::start(json!({
        "secrets": {"projects/proj/secrets/s": {"1": {"data": "123456789"}, "2": {"data": "x", "state": "DISABLED"}}},
        "denied": ["projects/proj/secrets/d"],
        "throttle": {"projects/proj/secrets/t": 1},
        "refresh_token": "rt",
    }));
    let port = fake.server.port;
    let form = b"grant_type=refresh_token&refresh_token=rt&client_id=c&client_secret=s";
    let (status, body) = common::server::http(
        port,
        "POST",
        "/token",
        &[("Content-Type", "application/x-www-form-urlencoded")],
        form,
    )
    .unwrap();
    assert_eq!(status, 200, "{body}");
    let token: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(token["token_type"], "Bearer");
    let auth = format!("Bearer {}", token["access_token"].as_str().unwrap());
    let get = |path: &str| {
        let (status, body) = common::server::http(
            port,
            "GET",
            &format!("/v1/{path}:access"),
            &[("Authorization", &auth)],
            b"",
        )
        .unwrap();
        (status, serde_json::from_str::<Value>(&body).unwrap())
    };

    let (status, body) = get("projects/proj/secrets/s/versions/latest");
    assert_eq!(status, 200);
    // `latest` is the newest enabled version (2 is disabled).
    assert_eq!(body["name"], "projects/proj/secrets/s/versions/1");
    assert_eq!(body["payload"]["data"], "MTIzNDU2Nzg5"); // base64("123456789")
    // int64 fields are JSON strings; CRC-32C of "123456789" is 0xE3069283 (RFC 3720).
    assert_eq!(body["payload"]["dataCrc32c"], "3808858755");
    let keys: Vec<&String> = body.as_object().unwrap().keys().collect();
    assert_eq!(keys, ["name", "payload"]);

    for (path, code, status_name) in [
        (
            "projects/proj/secrets/nope/versions/latest",
            404,
            "NOT_FOUND",
        ),
        ("projects/proj/secrets/s/versions/9", 404, "NOT_FOUND"),
        (
            "projects/proj/secrets/d/versions/1",
            403,
            "PERMISSION_DENIED",
        ),
        (
            "projects/proj/secrets/s/versions/2",
            400,
            "FAILED_PRECONDITION",
        ),
        (
            "projects/proj/secrets/t/versions/1",
            429,
            "RESOURCE_EXHAUSTED",
        ),
    ] {
        let (status, body) = get(path);
        assert_eq!(status, code, "{path}: {body}");
        let error = body["error"].as_object().unwrap();
        let mut keys: Vec<&String> = error.keys().collect();
        keys.sort();
        assert_eq!(keys, ["code", "message", "status"], "{path}");
        assert_eq!(error["code"], code);
        assert_eq!(error["status"], status_name);
    }
    assert!(
        get("projects/proj/secrets/s/versions/2").1["error"]["message"]
            .as_str()
            .unwrap()
            .contains("is in DISABLED state")
    );
}

#[test]
fn plain_json_fields_versions_and_full_names() {
    let fake = Fake::start(secrets_state());
    let t = fake.test(
        "  project: proj\n",
        "  PLAIN: secret:plain\n  OLD: secret:plain?version=1\n  USER: secret:db#user\n  PASS: secret:db#password\n  PORT: secret:db#port\n  WHOLE: secret:db\n  FULL: secret:projects/other/secrets/shared\n  FULLV: secret:projects/proj/secrets/plain/versions/1\n",
    );
    run_checked(
        &t,
        &[
            ("PLAIN", "plain-value"),
            ("OLD", "old-value"),
            ("USER", "app"),
            ("PASS", "pw-9f2c"),
            ("PORT", "5432"),
            (
                "WHOLE",
                r#"{"user":"app","password":"pw-9f2c","port":5432}"#,
            ),
            ("FULL", "shared-value"),
            ("FULLV", "old-value"),
        ],
    )
    .status(0)
    .stdout("all-good\n");
    // `secret:db#user` and `secret:db#password` are one lookup.
    assert_eq!(
        fake.stats()["per_name"]["projects/proj/secrets/db/versions/latest"],
        1
    );
}

#[test]
fn project_comes_from_the_environment_when_not_set() {
    let fake = Fake::start(secrets_state());
    let t = fake
        .test("", "  PLAIN: secret:plain\n")
        .env("GOOGLE_CLOUD_PROJECT", "proj");
    run_checked(&t, &[("PLAIN", "plain-value")])
        .status(0)
        .stdout("all-good\n");
    let t = fake.test("", "  PLAIN: secret:plain\n");
    let done = t.run(&["--", "sh", "-c", "echo ran"]).status(125);
    assert!(!done.stdout_str().contains("ran"));
    done.stderr_has("no project")
        .stderr_has("GOOGLE_CLOUD_PROJECT");
}

#[test]
fn prefix_and_tenant_copy_first_then_global() {
    let fake = Fake::start(secrets_state());
    let settings = "  project: proj\n  prefix: app-\n";
    let env = "  TOKEN: secret:token\n";
    let t = fake.test(settings, env);
    run_checked(&t, &[("TOKEN", "global-token")])
        .status(0)
        .stdout("all-good\n");
    run_checked(
        &fake.test(settings, env).env("ENVRUN_TENANT", "acme"),
        &[("TOKEN", "acme-token")],
    )
    .status(0)
    .stdout("all-good\n");
    // A tenant without its own copy falls back to the global one.
    run_checked(
        &fake.test(settings, env).env("ENVRUN_TENANT", "beta"),
        &[("TOKEN", "global-token")],
    )
    .status(0)
    .stdout("all-good\n");
    // `/` and `.` in a tenant become `-` in the secret id.
    let t = fake
        .test(settings, "  ONLY: secret:only\n")
        .env("ENVRUN_TENANT", "eu/acme");
    run_checked(&t, &[("ONLY", "eu-acme-only")])
        .status(0)
        .stdout("all-good\n");
    let stats = fake.stats();
    assert_eq!(
        stats["per_name"]["projects/proj/secrets/app-beta-token/versions/latest"],
        1
    );
}

#[test]
fn missing_denied_disabled_destroyed_and_damaged_are_named_and_nothing_runs() {
    let fake = Fake::start(secrets_state());
    let cases: &[(&str, &[&str])] = &[
        (
            "secret:missing",
            &["not found", "projects/proj/secrets/missing/versions/latest"],
        ),
        (
            "secret:locked",
            &[
                "projects/proj/secrets/locked/versions/latest",
                "PERMISSION_DENIED",
                "secretAccessor",
            ],
        ),
        (
            "secret:off?version=2",
            &[
                "projects/proj/secrets/off/versions/2",
                "DISABLED",
                "FAILED_PRECONDITION",
            ],
        ),
        (
            "secret:gone?version=1",
            &["projects/proj/secrets/gone/versions/1", "DESTROYED"],
        ),
        (
            "secret:damaged",
            &["projects/proj/secrets/damaged/versions/latest", "checksum"],
        ),
        (
            "secret:plain?version=9",
            &["projects/proj/secrets/plain/versions/9", "not found"],
        ),
    ];
    for (reference, needles) in cases {
        let t = fake.test(
            "  project: proj\n",
            &format!("  OK: secret:plain\n  BAD: \"{reference}\"\n"),
        );
        let done = t
            .run(&["--", "sh", "-c", "touch ran"])
            .status(125)
            .never_shows("plain-value")
            .never_shows("damaged-value")
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
fn throttling_is_retried_within_the_deadline() {
    let fake = Fake::start(secrets_state());
    let t = fake.test("  project: proj\n", "  BUSY: secret:busy\n");
    run_checked(&t, &[("BUSY", "busy-value")])
        .status(0)
        .stdout("all-good\n");
    assert_eq!(
        fake.stats()["per_name"]["projects/proj/secrets/busy/versions/latest"],
        3,
        "two RESOURCE_EXHAUSTED answers, then the value"
    );

    // Throttled for longer than the deadline: the error says so, the command never runs.
    let mut state = secrets_state();
    state["throttle"]["projects/proj/secrets/busy"] = json!(1_000_000);
    let fake = Fake::start(state);
    let t = fake.test("  project: proj\n", "  BUSY: secret:busy\n");
    let start = Instant::now();
    let done = t
        .run(&["--timeout", "1s", "--", "sh", "-c", "touch ran"])
        .status(125)
        .stderr_has("RESOURCE_EXHAUSTED")
        .stderr_has("attempts");
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "{:?}",
        start.elapsed()
    );
    assert!(!exists(&t.path("ran")));
    drop(done);
}

#[test]
fn a_hundred_references_are_fetched_concurrently_and_bounded() {
    let mut state = secrets_state();
    let mut environment = String::new();
    let mut expected = Vec::new();
    for i in 0..100 {
        state["secrets"][format!("projects/proj/secrets/k{i}")] =
            json!({"1": {"data": format!("value-{i}")}});
        environment.push_str(&format!("  K{i}: secret:k{i}\n"));
        expected.push((format!("K{i}"), format!("value-{i}")));
    }
    state["delay_ms"] = json!(50);
    let fake = Fake::start(state);
    let t = fake.test("  project: proj\n", &environment);
    let expected: Vec<(&str, &str)> = expected
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    run_checked(&t, &expected).status(0).stdout("all-good\n");
    let stats = fake.stats();
    assert_eq!(stats["access"], 100, "{stats}");
    let max = stats["max_in_flight"].as_u64().unwrap();
    assert!(
        (4..=16).contains(&max),
        "at most 16 at a time, and more than a few: {max}"
    );
}

#[test]
fn gcloud_user_credentials_refresh_at_the_token_endpoint_and_never_show() {
    let fake = Fake::start(secrets_state());
    let t = fake.test("  project: proj\n", "  PLAIN: secret:plain\n");
    let user = json!({
        "type": "authorized_user",
        "client_id": "client-id.apps.googleusercontent.com",
        "client_secret": CANARY,
        "refresh_token": CANARY,
        "token_uri": format!("http://127.0.0.1:{}/token", fake.server.port),
    });
    // gcloud's own file, found through $HOME (no $GOOGLE_APPLICATION_CREDENTIALS).
    let t = t
        .file(
            "home/.config/gcloud/application_default_credentials.json",
            &user.to_string(),
        )
        .env_remove("GOOGLE_APPLICATION_CREDENTIALS");
    let home = t.path("home");
    let t = t.env("HOME", &home);
    run_checked(&t, &[("PLAIN", "plain-value")])
        .status(0)
        .stdout("all-good\n")
        .never_shows(CANARY);
    assert_eq!(fake.stats()["token"], 1);

    // A refused refresh token: one clear error naming the source; the canary never shows.
    let refused = json!({
        "type": "authorized_user",
        "client_id": "client-id.apps.googleusercontent.com",
        "client_secret": CANARY,
        "refresh_token": format!("{CANARY}-revoked"),
        "token_uri": format!("http://127.0.0.1:{}/token", fake.server.port),
    });
    let t = t.file(
        "home/.config/gcloud/application_default_credentials.json",
        &refused.to_string(),
    );
    t.run(&["--", "sh", "-c", "touch ran"])
        .status(125)
        .stderr_has("gcloud application-default credentials")
        .never_shows(CANARY);
    assert!(!exists(&t.path("ran")));
}

#[test]
fn off_cloud_without_credentials_fails_fast_naming_the_sources() {
    // Nothing listens on the metadata port: refused at once.
    let closed = free_port();
    // Something accepts but never answers: the probe's own bound must end it.
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let silent_port = silent.local_addr().unwrap().port();
    for port in [closed, silent_port] {
        let t = Test::new()
            .manifest("secrets:\n  type: gcp\n  project: proj\n  endpoint: http://127.0.0.1:9\nenvironment:\n  A: secret:a\n")
            .env_remove("GOOGLE_APPLICATION_CREDENTIALS")
            .env("HOME", "/nonexistent-home")
            .env("GCE_METADATA_HOST", format!("127.0.0.1:{port}"));
        let start = Instant::now();
        let done = t
            .run(&["--timeout", "30s", "--", "sh", "-c", "touch ran"])
            .status(125)
            .stderr_has("GOOGLE_APPLICATION_CREDENTIALS")
            .stderr_has("gcloud")
            .stderr_has("metadata server");
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
fn bad_names_are_refused_before_any_request() {
    let fake = Fake::start(secrets_state());
    for (reference, needle) in [
        ("secret:a.b", "not a secret id"),
        ("secret:projects/p/secrets", "not a resource name"),
        (
            "secret:projects/p/secrets/s/versions/1?version=2",
            "keep one",
        ),
        ("secret:plain?stage=x", "stage"),
    ] {
        let t = fake.test("  project: proj\n", &format!("  A: \"{reference}\"\n"));
        t.run(&["--", "sh", "-c", "touch ran"])
            .status(125)
            .stderr_has(needle);
        assert!(!exists(&t.path("ran")), "{reference}");
    }
    assert_eq!(fake.stats()["access"], 0);
}

#[test]
fn the_example_manifest_is_valid_and_fails_only_for_want_of_credentials() {
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/gcp/envrun.yaml");
    let t = Test::new()
        .env_remove("GOOGLE_APPLICATION_CREDENTIALS")
        .env("HOME", "/nonexistent-home")
        .env("GCE_METADATA_HOST", format!("127.0.0.1:{}", free_port()));
    t.run(&["-m", example, "--", "sh", "-c", "touch ran"])
        .status(125)
        .stderr_has("no credentials found");
    assert!(!exists(&t.path("ran")));
}

#[test]
fn workload_identity_federation_exchanges_the_subject_token() {
    let mut state = secrets_state();
    state["subject_token"] = json!(CANARY);
    let fake = Fake::start(state);
    let t = fake.test("  project: proj\n", "  PLAIN: secret:plain\n");
    let subject = t.path("oidc-token");
    std::fs::write(&subject, CANARY).unwrap();
    let config = json!({
        "type": "external_account",
        "audience": "//iam.googleapis.com/projects/123/locations/global/workloadIdentityPools/ci/providers/github",
        "subject_token_type": "urn:ietf:params:oauth:token-type:jwt",
        "token_url": format!("http://127.0.0.1:{}/v1/token", fake.server.port),
        "credential_source": {"file": subject},
    });
    let t = t.file("wif.json", &config.to_string());
    let path = t.path("wif.json");
    let t = t.env("GOOGLE_APPLICATION_CREDENTIALS", &path);
    run_checked(&t, &[("PLAIN", "plain-value")])
        .status(0)
        .stdout("all-good\n")
        .never_shows(CANARY);
    assert_eq!(fake.stats()["token"], 1);

    // A subject token the STS refuses: one error naming the source, no canary.
    std::fs::write(&subject, format!("{CANARY}-expired")).unwrap();
    t.run(&["--", "sh", "-c", "touch ran"])
        .status(125)
        .stderr_has("workload identity federation")
        .never_shows(CANARY);
    assert!(!exists(&t.path("ran")));
}
