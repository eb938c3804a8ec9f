//! `type: aws` (Secrets Manager) and `type: aws-ssm` (Parameter Store) against a real moto
//! server (`moto[server]`, pinned, from the test virtualenv), seeded through its JSON API.
//! A counting proxy in front of moto counts the calls envrun makes and injects throttling
//! and denials. Every run sets `AWS_EC2_METADATA_DISABLED` or points the metadata endpoint
//! at loopback: no test sends anything off this machine.

#![cfg(feature = "aws")]

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::recording_proxy::{Proxy, Seen};
use common::server::{Server, free_port, http, http_get, venv};
use common::{CANARY, Test};
use serde_json::{Value, json};

const MOTO: &str = "moto[server]==5.2.5";

/// A moto server with a counting proxy in front of it.
struct Moto {
    server: Server,
    proxy: Proxy,
}

impl Moto {
    fn start() -> Moto {
        let bin = venv(&[MOTO]);
        let port = free_port();
        let mut cmd = Command::new(bin.join("moto_server"));
        cmd.args(["-H", "127.0.0.1", "-p", &port.to_string()]);
        let server = Server::start("moto", port, cmd, |p| http_get(p, "/moto-api/").is_some());
        let proxy = Proxy::start(port);
        let moto = Moto { server, proxy };
        // moto imports each service on its first request, which can take longer than the
        // harness's 10 s read timeout on a loaded machine: warm both up with harmless calls.
        let deadline = Instant::now() + Duration::from_secs(120);
        for (service, target) in [
            ("secretsmanager", "secretsmanager.ListSecrets"),
            ("ssm", "AmazonSSM.DescribeParameters"),
        ] {
            while moto.try_call(service, target, &json!({})).is_none() {
                assert!(Instant::now() < deadline, "moto did not answer {target}");
            }
        }
        moto
    }

    fn try_call(&self, service: &str, target: &str, body: &Value) -> Option<(u16, String)> {
        let auth = format!(
            "AWS4-HMAC-SHA256 Credential=testing/20260101/us-east-1/{service}/aws4_request, SignedHeaders=host, Signature=0"
        );
        http(
            self.server.port,
            "POST",
            "/",
            &[
                ("X-Amz-Target", target),
                ("Content-Type", "application/x-amz-json-1.1"),
                ("Authorization", &auth),
            ],
            body.to_string().as_bytes(),
        )
    }

    /// One call of the JSON protocol, straight to moto (not counted). Panics on an error.
    fn call(&self, service: &str, target: &str, body: Value) -> Value {
        let (status, text) = self
            .try_call(service, target, &body)
            .unwrap_or_else(|| panic!("moto did not answer {target}"));
        assert_eq!(status, 200, "{target}: {text}");
        serde_json::from_str(&text).unwrap_or(Value::Null)
    }

    /// Creates a string secret; returns its ARN.
    fn secret(&self, name: &str, value: &str) -> String {
        let out = self.call(
            "secretsmanager",
            "secretsmanager.CreateSecret",
            json!({"Name": name, "SecretString": value}),
        );
        out["ARN"].as_str().unwrap().to_owned()
    }

    fn parameter(&self, name: &str, value: &str, kind: &str) {
        self.call(
            "ssm",
            "AmazonSSM.PutParameter",
            json!({"Name": name, "Value": value, "Type": kind, "Overwrite": true}),
        );
    }

    /// The calls envrun made of one operation, e.g. `secretsmanager.BatchGetSecretValue`.
    fn calls(&self, target: &str) -> usize {
        self.proxy
            .count(|r| r.header("x-amz-target") == Some(target))
    }
}

/// Whether a request is the operation `target`.
fn is(target: &'static str) -> impl Fn(&Seen) -> bool + Send + 'static {
    move |r: &Seen| r.header("x-amz-target") == Some(target)
}

/// A test directory with an AWS environment that reaches only `endpoint`: fake keys, a
/// region, no profile files, no metadata service, nothing inherited from the developer.
fn aws_test(manifest: &str) -> Test {
    let t = Test::new().manifest(manifest);
    let home = t.path("home");
    std::fs::create_dir_all(&home).unwrap();
    let t = t
        .env("HOME", &home)
        .env("AWS_CONFIG_FILE", home.join("no-config"))
        .env("AWS_SHARED_CREDENTIALS_FILE", home.join("no-credentials"))
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("AWS_REGION", "us-east-1")
        .env("AWS_EC2_METADATA_DISABLED", "true");
    [
        "AWS_PROFILE",
        "AWS_DEFAULT_REGION",
        "AWS_SESSION_TOKEN",
        "AWS_ENDPOINT_URL",
        "AWS_ENDPOINT_URL_SECRETS_MANAGER",
        "AWS_ENDPOINT_URL_SSM",
        "AWS_WEB_IDENTITY_TOKEN_FILE",
        "AWS_ROLE_ARN",
        "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
        "AWS_CONTAINER_CREDENTIALS_FULL_URI",
        "AWS_EC2_METADATA_SERVICE_ENDPOINT",
    ]
    .into_iter()
    .fold(t, Test::env_remove)
}

/// A manifest with one default backend and the given variables.
fn manifest(kind: &str, endpoint: &str, settings: &str, vars: &[(&str, &str)]) -> String {
    let mut m = format!("secrets:\n  type: {kind}\n  endpoint_url: {endpoint}\n");
    for line in settings.lines() {
        m.push_str(&format!("  {line}\n"));
    }
    m.push_str("environment:\n");
    for (var, reference) in vars {
        m.push_str(&format!("  {var}: \"{reference}\"\n"));
    }
    m
}

/// `sh -c` that prints each variable as `NAME=value` on its own line.
fn print(vars: &[&str]) -> String {
    vars.iter()
        .map(|v| format!("echo {v}=\"${v}\";"))
        .collect::<String>()
}

#[test]
fn secrets_plain_json_fields_arns_prefix_and_binary() {
    let moto = Moto::start();
    moto.secret("prod/plain", "plain-value");
    moto.secret("prod/db", r#"{"user":"app","password":"pw-1","port":5432}"#);
    let arn = moto.secret("other/token", "by-arn");
    moto.call(
        "secretsmanager",
        "secretsmanager.CreateSecret",
        // base64 of the bytes 01 02 ff 'b' 'i' 'n' c3: not UTF-8 (an environment variable
        // cannot hold a NUL, which envrun refuses with its own error).
        json!({"Name": "prod/blob", "SecretBinary": "AQL/Ymluww=="}),
    );
    let m = manifest(
        "aws",
        &moto.proxy.url(),
        "prefix: prod/",
        &[
            ("PLAIN", "secret:plain"),
            ("USER", "secret:db#user"),
            ("PASSWORD", "secret:db#password"),
            ("PORT", "secret:db#port"),
            ("WHOLE", "secret:db"),
            ("ARN", &format!("secret:{arn}")),
            (
                "URL",
                "postgres://${secret:db#user}:${secret:db#password}@db/app",
            ),
        ],
    );
    aws_test(&m)
        .run_unmasked(&[
            "--",
            "sh",
            "-c",
            &print(&["PLAIN", "USER", "PASSWORD", "PORT", "WHOLE", "ARN", "URL"]),
        ])
        .status(0)
        .stdout(concat!(
            "PLAIN=plain-value\n",
            "USER=app\n",
            "PASSWORD=pw-1\n",
            "PORT=5432\n",
            "WHOLE={\"user\":\"app\",\"password\":\"pw-1\",\"port\":5432}\n",
            "ARN=by-arn\n",
            "URL=postgres://app:pw-1@db/app\n",
        ));
    // Two fields of one secret, a plain secret and an ARN: one batch call, nothing else.
    assert_eq!(moto.calls("secretsmanager.BatchGetSecretValue"), 1);
    assert_eq!(moto.calls("secretsmanager.GetSecretValue"), 0);

    // A binary secret arrives as its bytes.
    let m = manifest(
        "aws",
        &moto.proxy.url(),
        "prefix: prod/",
        &[("BLOB", "secret:blob")],
    );
    aws_test(&m)
        .run_unmasked(&[
            "--",
            "sh",
            "-c",
            "printf %s \"$BLOB\" | od -An -tx1 | tr -d ' \\n'",
        ])
        .status(0)
        .stdout("0102ff62696ec3");

    // A field that is not there: the error names the fields, never a value.
    let m = manifest(
        "aws",
        &moto.proxy.url(),
        "prefix: prod/",
        &[("X", "secret:db#nope")],
    );
    aws_test(&m)
        .run(&["--", "sh", "-c", "echo ran"])
        .status(125)
        .stderr_has("no field `nope` (fields: password, port, user)")
        .never_shows("pw-1");
}

#[test]
fn forty_five_secrets_take_three_batch_calls() {
    let moto = Moto::start();
    let names: Vec<String> = (0..45).map(|i| format!("svc/s{i:02}")).collect();
    for (i, n) in names.iter().enumerate() {
        moto.secret(n, &format!("value-{i}"));
    }
    let vars: Vec<(String, String)> = (0..45)
        .map(|i| (format!("S{i:02}"), format!("secret:svc/s{i:02}")))
        .collect();
    let pairs: Vec<(&str, &str)> = vars.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
    let m = manifest("aws", &moto.proxy.url(), "", &pairs);
    let expected: String = (0..45).map(|i| format!("value-{i}\n")).collect();
    let script: String = (0..45).map(|i| format!("echo \"$S{i:02}\";")).collect();
    aws_test(&m)
        .run_unmasked(&["--", "sh", "-c", &script])
        .status(0)
        .stdout(&expected);
    assert_eq!(moto.calls("secretsmanager.BatchGetSecretValue"), 3);
    // Each call named at most 20 ids, and every id was asked for once.
    let mut asked: Vec<String> = Vec::new();
    for r in moto.proxy.seen() {
        let body: Value = serde_json::from_slice(&r.body).unwrap();
        let ids = body["SecretIdList"].as_array().unwrap();
        assert!(ids.len() <= 20, "{} ids in one call", ids.len());
        asked.extend(ids.iter().map(|v| v.as_str().unwrap().to_owned()));
    }
    asked.sort();
    assert_eq!(asked, names);
}

#[test]
fn a_secret_missing_from_a_batch_is_named_and_the_command_never_runs() {
    let moto = Moto::start();
    moto.secret("app/a", "value-a");
    moto.secret("app/c", "value-c");
    let m = manifest(
        "aws",
        &moto.proxy.url(),
        "prefix: app/",
        &[("A", "secret:a"), ("B", "secret:b"), ("C", "secret:c")],
    );
    let t = aws_test(&m);
    let marker = t.path("ran");
    t.run(&["--", "sh", "-c", &format!("touch {}", marker.display())])
        .status(125)
        .stderr_has("B: secret:b: not found in backend `default` (aws): secret `app/b`")
        .never_shows("value-a");
    assert!(
        !marker.exists(),
        "the command ran with a partial environment"
    );
    assert_eq!(moto.calls("secretsmanager.BatchGetSecretValue"), 1);
}

#[test]
fn stages_pin_current_and_previous_versions() {
    let moto = Moto::start();
    moto.secret("rotating", "old-value");
    let put = moto.call(
        "secretsmanager",
        "secretsmanager.PutSecretValue",
        json!({"SecretId": "rotating", "SecretString": "new-value"}),
    );
    let new_version = put["VersionId"].as_str().unwrap().to_owned();
    let m = manifest(
        "aws",
        &moto.proxy.url(),
        "",
        &[
            ("NOW", "secret:rotating"),
            ("CURRENT", "secret:rotating?stage=AWSCURRENT"),
            ("PREVIOUS", "secret:rotating?stage=AWSPREVIOUS"),
            (
                "BY_ID",
                &format!("secret:rotating?version_id={new_version}"),
            ),
        ],
    );
    aws_test(&m)
        .run_unmasked(&[
            "--",
            "sh",
            "-c",
            &print(&["NOW", "CURRENT", "PREVIOUS", "BY_ID"]),
        ])
        .status(0)
        .stdout("NOW=new-value\nCURRENT=new-value\nPREVIOUS=old-value\nBY_ID=new-value\n");
    // The unpinned one is batched; each pinned one is its own GetSecretValue.
    assert_eq!(moto.calls("secretsmanager.BatchGetSecretValue"), 1);
    assert_eq!(moto.calls("secretsmanager.GetSecretValue"), 3);

    let m = manifest(
        "aws",
        &moto.proxy.url(),
        "",
        &[("X", "secret:rotating?stage=NOPE")],
    );
    aws_test(&m)
        .run(&["--", "true"])
        .status(125)
        .stderr_has("X: secret:rotating?stage=NOPE: not found in backend `default` (aws)");
    let m = manifest(
        "aws",
        &moto.proxy.url(),
        "",
        &[("X", "secret:rotating?version=3")],
    );
    aws_test(&m)
        .run(&["--", "true"])
        .status(125)
        .stderr_has("has no parameter `version` (it takes: stage, version_id)");
}

#[test]
fn tenants_in_both_layouts_come_first_then_global() {
    let moto = Moto::start();
    // One secret per value.
    moto.secret("p/acme/db", "acme-db");
    moto.secret("p/db", "global-db");
    moto.secret("p/api", "global-api");
    let vars = [("DB", "secret:db"), ("API", "secret:api")];
    let m = manifest("aws", &moto.proxy.url(), "prefix: p/", &vars);
    aws_test(&m)
        .run_unmasked(&["--tenant", "acme", "--", "sh", "-c", &print(&["DB", "API"])])
        .status(0)
        .stdout("DB=acme-db\nAPI=global-api\n");
    aws_test(&m)
        .run_unmasked(&["--", "sh", "-c", &print(&["DB", "API"])])
        .status(0)
        .stdout("DB=global-db\nAPI=global-api\n");

    // One JSON secret per tenant.
    moto.secret("j/acme", r#"{"db":"acme-json-db"}"#);
    moto.secret("j/db", "global-json-db");
    moto.secret("j/api", "global-json-api");
    let m = manifest(
        "aws",
        &moto.proxy.url(),
        "prefix: j/\ntenant_layout: json",
        &vars,
    );
    moto.proxy.clear();
    aws_test(&m)
        .run_unmasked(&["--tenant", "acme", "--", "sh", "-c", &print(&["DB", "API"])])
        .status(0)
        .stdout("DB=acme-json-db\nAPI=global-json-api\n");
    assert_eq!(moto.calls("secretsmanager.BatchGetSecretValue"), 1);

    // Missing everywhere: the message says where envrun looked, tenant first.
    let m = manifest(
        "aws",
        &moto.proxy.url(),
        "prefix: j/\ntenant_layout: json",
        &[("Z", "secret:zz")],
    );
    aws_test(&m)
        .run(&["--tenant", "acme", "--", "true"])
        .status(125)
        .stderr_has("(aws, tenant `acme`): field `zz` of secret `j/acme`, then secret `j/zz`");
}

#[test]
fn throttling_is_retried_and_denials_and_decryption_failures_are_not() {
    let moto = Moto::start();
    moto.secret("t/one", "value-one");
    moto.secret("t/two", "value-two");
    let throttled = br#"{"__type":"ThrottlingException","message":"Rate exceeded"}"#;
    moto.proxy.fail_next(
        2,
        is("secretsmanager.BatchGetSecretValue"),
        400,
        &[("Content-Type", "application/x-amz-json-1.1")],
        throttled,
    );
    let m = manifest(
        "aws",
        &moto.proxy.url(),
        "prefix: t/",
        &[("ONE", "secret:one")],
    );
    aws_test(&m)
        .run_unmasked(&["--", "sh", "-c", &print(&["ONE"])])
        .status(0)
        .stdout("ONE=value-one\n");
    assert_eq!(moto.calls("secretsmanager.BatchGetSecretValue"), 3);

    // A pinned read that is denied: one call, no retry, the key and code named.
    moto.proxy.clear();
    moto.proxy.fail_next(
        1,
        is("secretsmanager.GetSecretValue"),
        400,
        &[("Content-Type", "application/x-amz-json-1.1")],
        br#"{"__type":"AccessDeniedException","message":"not allowed"}"#,
    );
    let m = manifest(
        "aws",
        &moto.proxy.url(),
        "prefix: t/",
        &[("ONE", "secret:one?stage=AWSCURRENT")],
    );
    aws_test(&m).run(&["--", "true"]).status(125).stderr_has(
        "GetSecretValue `t/one` (stage AWSCURRENT): AccessDeniedException: not allowed",
    );
    assert_eq!(moto.calls("secretsmanager.GetSecretValue"), 1);

    // DecryptionFailure: not retried either.
    moto.proxy.clear();
    moto.proxy.fail_next(
        1,
        is("secretsmanager.GetSecretValue"),
        400,
        &[("Content-Type", "application/x-amz-json-1.1")],
        br#"{"__type":"DecryptionFailure","message":"KMS key disabled"}"#,
    );
    aws_test(&m)
        .run(&["--", "true"])
        .status(125)
        .stderr_has("DecryptionFailure: KMS key disabled");
    assert_eq!(moto.calls("secretsmanager.GetSecretValue"), 1);

    // A policy without BatchGetSecretValue: envrun reads the secrets one by one.
    moto.proxy.clear();
    moto.proxy.fail_next(
        1,
        is("secretsmanager.BatchGetSecretValue"),
        400,
        &[("Content-Type", "application/x-amz-json-1.1")],
        br#"{"__type":"AccessDeniedException","message":"no batch for you"}"#,
    );
    let m = manifest(
        "aws",
        &moto.proxy.url(),
        "prefix: t/",
        &[("ONE", "secret:one"), ("TWO", "secret:two")],
    );
    aws_test(&m)
        .run_unmasked(&["--", "sh", "-c", &print(&["ONE", "TWO"])])
        .status(0)
        .stdout("ONE=value-one\nTWO=value-two\n");
    assert_eq!(moto.calls("secretsmanager.BatchGetSecretValue"), 1);
    assert_eq!(moto.calls("secretsmanager.GetSecretValue"), 2);
}

#[test]
fn parameters_string_secure_versions_labels_and_tenants() {
    let moto = Moto::start();
    moto.parameter("/app/prod/url", "https://example.test", "String");
    moto.parameter("/app/prod/key", "secure-v1", "SecureString");
    moto.parameter("/app/prod/key", "secure-v2", "SecureString");
    moto.parameter("/app/prod/key", "secure-v3", "SecureString");
    moto.parameter("/app/prod/acme/url", "https://acme.test", "String");
    moto.call(
        "ssm",
        "AmazonSSM.LabelParameterVersion",
        json!({"Name": "/app/prod/key", "ParameterVersion": 2, "Labels": ["stable"]}),
    );
    let m = manifest(
        "aws-ssm",
        &moto.proxy.url(),
        "prefix: /app/prod/",
        &[
            ("URL", "secret:url"),
            ("KEY", "secret:key"),
            ("KEY_V1", "secret:key?version=1"),
            ("KEY_STABLE", "secret:key?label=stable"),
        ],
    );
    aws_test(&m)
        .run_unmasked(&[
            "--",
            "sh",
            "-c",
            &print(&["URL", "KEY", "KEY_V1", "KEY_STABLE"]),
        ])
        .status(0)
        .stdout(
            "URL=https://example.test\nKEY=secure-v3\nKEY_V1=secure-v1\nKEY_STABLE=secure-v2\n",
        );
    // Three selectors of one parameter are never in one call (answers carry only the name).
    assert_eq!(moto.calls("AmazonSSM.GetParameters"), 3);
    for r in moto.proxy.seen() {
        let body: Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(body["WithDecryption"], json!(true));
    }

    aws_test(&m)
        .run_unmasked(&[
            "--tenant",
            "acme",
            "--",
            "sh",
            "-c",
            &print(&["URL", "KEY"]),
        ])
        .status(0)
        .stdout("URL=https://acme.test\nKEY=secure-v3\n");

    let m = manifest(
        "aws-ssm",
        &moto.proxy.url(),
        "prefix: /app/prod/",
        &[("K", "secret:key?version=9")],
    );
    aws_test(&m)
        .run(&["--", "true"])
        .status(125)
        .stderr_has("not found in backend `default` (aws-ssm): parameter `/app/prod/key:9`");
    let m = manifest(
        "aws-ssm",
        &moto.proxy.url(),
        "tenant_layout: json",
        &[("K", "secret:key")],
    );
    aws_test(&m)
        .run(&["--", "true"])
        .status(125)
        .stderr_has("`tenant_layout: json` is for `type: aws` (Secrets Manager) only");
    let m = manifest(
        "aws-ssm",
        &moto.proxy.url(),
        "",
        &[("K", "secret:/app/prod/key?version=1&label=stable")],
    );
    aws_test(&m)
        .run(&["--", "true"])
        .status(125)
        .stderr_has("give one of `?version=` and `?label=`, not both");
}

#[test]
fn twenty_five_parameters_take_three_calls_and_a_missing_one_is_named() {
    let moto = Moto::start();
    for i in 0..25 {
        moto.parameter(
            &format!("/bulk/p{i:02}"),
            &format!("pv-{i}"),
            "SecureString",
        );
    }
    let vars: Vec<(String, String)> = (0..25)
        .map(|i| (format!("P{i:02}"), format!("secret:p{i:02}")))
        .collect();
    let pairs: Vec<(&str, &str)> = vars.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
    let m = manifest("aws-ssm", &moto.proxy.url(), "prefix: /bulk/", &pairs);
    let script: String = (0..25).map(|i| format!("echo \"$P{i:02}\";")).collect();
    let expected: String = (0..25).map(|i| format!("pv-{i}\n")).collect();
    aws_test(&m)
        .run_unmasked(&["--", "sh", "-c", &script])
        .status(0)
        .stdout(&expected);
    assert_eq!(moto.calls("AmazonSSM.GetParameters"), 3);
    for r in moto.proxy.seen() {
        let body: Value = serde_json::from_slice(&r.body).unwrap();
        assert!(body["Names"].as_array().unwrap().len() <= 10);
    }

    let mut with_missing = pairs.clone();
    with_missing.push(("GONE", "secret:gone"));
    let m = manifest(
        "aws-ssm",
        &moto.proxy.url(),
        "prefix: /bulk/",
        &with_missing,
    );
    let t = aws_test(&m);
    let marker = t.path("ran");
    t.run(&["--", "sh", "-c", &format!("touch {}", marker.display())])
        .status(125)
        .stderr_has(
            "GONE: secret:gone: not found in backend `default` (aws-ssm): parameter `/bulk/gone`",
        )
        .never_shows("pv-1");
    assert!(!marker.exists());
}

#[test]
fn supervise_mode_is_single_threaded_after_a_fetch_and_masks_the_canary() {
    let moto = Moto::start();
    moto.secret("canary", CANARY);
    moto.parameter("/c/canary", CANARY, "SecureString");
    // By hostname, so a DNS lookup runs (on the runtime's blocking pool, which must be gone
    // before the command starts).
    let endpoint = format!("http://localhost:{}", moto.proxy.port);
    let m = format!(
        "secrets:\n  type: aws\n  endpoint_url: {endpoint}\nbackends:\n  ssm:\n    type: aws-ssm\n    endpoint_url: {endpoint}\n    prefix: /c/\nenvironment:\n  A: secret:canary\n  B: secret@ssm:canary\n"
    );
    let t = aws_test(&m);
    let marker = t.path("ran");
    // Masking is on (output piped, a secret to mask): supervise mode, which checks that
    // envrun has one thread before it blocks signals and forks.
    t.run(&[
        "--",
        "sh",
        "-c",
        &format!("echo \"a=$A b=$B\"; touch {}", marker.display()),
    ])
    .status(0)
    .stdout("a=*** b=***\n")
    .never_shows(CANARY);
    assert!(marker.exists(), "the command did not run");

    // Errors that involve the canary's secret never show it.
    let m = format!(
        "secrets:\n  type: aws\n  endpoint_url: {endpoint}\nenvironment:\n  A: secret:canary#field\n"
    );
    aws_test(&m)
        .run(&["--", "true"])
        .status(125)
        .stderr_has("not a JSON object")
        .never_shows(CANARY);
}

/// A listener that accepts and never answers: the metadata endpoint of a machine that is
/// not on EC2, kept on loopback.
fn black_hole() -> (std::net::TcpListener, u16) {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    (l, port)
}

#[test]
fn no_region_and_no_credentials_fail_fast_and_say_what_to_do() {
    let (_hole, port) = black_hole();
    let m = "secrets:\n  type: aws\nenvironment:\n  A: secret:db\n";
    for kind in ["aws", "aws-ssm"] {
        let m = m.replace("type: aws", &format!("type: {kind}"));
        // No region anywhere; the metadata service is tried once, on loopback, and hangs.
        let t = aws_test(&m)
            .env_remove("AWS_REGION")
            .env_remove("AWS_ACCESS_KEY_ID")
            .env_remove("AWS_SECRET_ACCESS_KEY")
            .env_remove("AWS_EC2_METADATA_DISABLED")
            .env(
                "AWS_EC2_METADATA_SERVICE_ENDPOINT",
                format!("http://127.0.0.1:{port}"),
            );
        let start = Instant::now();
        let done = t.run(&["--", "sh", "-c", "echo ran"]);
        let took = start.elapsed();
        eprintln!("{kind}: no region, metadata hanging: failed in {took:?}");
        done.status(125)
            .stderr_has("no AWS region configured")
            .stderr_has("EC2 instance metadata service (one quick attempt)")
            .stderr_has("export AWS_REGION");
        assert!(took < Duration::from_secs(2), "took {took:?}");

        // Region, but no credentials; the metadata service tried once and hanging.
        let t = aws_test(&m)
            .env_remove("AWS_ACCESS_KEY_ID")
            .env_remove("AWS_SECRET_ACCESS_KEY")
            .env_remove("AWS_EC2_METADATA_DISABLED")
            .env(
                "AWS_EC2_METADATA_SERVICE_ENDPOINT",
                format!("http://127.0.0.1:{port}"),
            );
        let start = Instant::now();
        let done = t.run(&["--", "sh", "-c", "echo ran"]);
        let took = start.elapsed();
        eprintln!("{kind}: no credentials, metadata hanging: failed in {took:?}");
        done.status(125)
            .stderr_has("no AWS credentials found")
            .stderr_has("EC2 instance metadata (one quick attempt)");
        assert!(took < Duration::from_secs(3), "took {took:?}");

        // Region, but no credentials; metadata turned off.
        let t = aws_test(&m)
            .env_remove("AWS_ACCESS_KEY_ID")
            .env_remove("AWS_SECRET_ACCESS_KEY");
        let start = Instant::now();
        let done = t.run(&["--", "sh", "-c", "echo ran"]);
        let took = start.elapsed();
        eprintln!("{kind}: no credentials, metadata disabled: failed in {took:?}");
        done.status(125)
            .stderr_has("no AWS credentials found; tried: the environment (AWS_ACCESS_KEY_ID")
            .stderr_has("profile `default`")
            .stderr_has("EC2 instance metadata (skipped: AWS_EC2_METADATA_DISABLED)");
        assert!(took < Duration::from_secs(2), "took {took:?}");
    }
}

#[test]
fn an_unreachable_endpoint_stops_at_the_deadline() {
    let port = free_port();
    let m = manifest(
        "aws",
        &format!("http://127.0.0.1:{port}"),
        "",
        &[("A", "secret:a")],
    );
    let start = Instant::now();
    let done = aws_test(&m).run(&["--timeout", "1500ms", "--", "sh", "-c", "echo ran"]);
    let took = start.elapsed();
    assert!(!done.stdout_str().contains("ran"));
    done.status(125).stderr_has("`a`");
    assert!(took < Duration::from_secs(5), "took {took:?}");
}

#[test]
fn check_reads_when_each_value_last_changed() {
    let moto = Moto::start();
    moto.secret("age/api", "Xq7!vR2#mN9$kL4@pW8&zz");
    moto.parameter("/age/url", "https://example.test/hook", "SecureString");
    let endpoint = moto.proxy.url();
    let m = format!(
        "secrets:\n  type: aws\n  endpoint_url: {endpoint}\n  prefix: age/\nbackends:\n  ssm:\n    type: aws-ssm\n    endpoint_url: {endpoint}\n    prefix: /age/\nrotation:\n  \"*\": 90d\nenvironment:\n  API: secret:api\n  URL: secret@ssm:url\n"
    );
    let done = aws_test(&m).run(&["check", "--json"]);
    let report: Value = serde_json::from_str(&done.stdout_str()).unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}):\n{}\n{}",
            done.stdout_str(),
            done.stderr_str()
        )
    });
    let vars = report["variables"].as_array().unwrap();
    assert_eq!(vars.len(), 2, "{report}");
    for v in vars {
        let updated = v["updated"]
            .as_str()
            .unwrap_or_else(|| panic!("no time: {v}"));
        let when = humantime::parse_rfc3339(updated).unwrap();
        let age = std::time::SystemTime::now()
            .duration_since(when)
            .unwrap_or_default();
        assert!(age < Duration::from_secs(3600), "{v}");
    }
    let kinds: Vec<&str> = report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|f| f["kind"].as_str())
        .collect();
    assert!(
        !kinds.contains(&"no-age") && !kinds.contains(&"rotation-due"),
        "{report}"
    );
    done.never_shows("Xq7!vR2");
}

#[test]
fn a_manifest_without_aws_references_never_configures_the_sdk() {
    // An AWS backend is declared but no variable uses it. With no region, no credentials
    // and a metadata endpoint that never answers, configuring the SDK would fail or wait:
    // the command runs at once instead.
    let (_hole, port) = black_hole();
    let t = aws_test(
        "backends:\n  cloud:\n    type: aws\n  params:\n    type: aws-ssm\nenvironment:\n  A: plain\n",
    )
    .env_remove("AWS_REGION")
    .env_remove("AWS_ACCESS_KEY_ID")
    .env_remove("AWS_SECRET_ACCESS_KEY")
    .env_remove("AWS_EC2_METADATA_DISABLED")
    .env(
        "AWS_EC2_METADATA_SERVICE_ENDPOINT",
        format!("http://127.0.0.1:{port}"),
    );
    t.run(&["--", "sh", "-c", "echo \"A=$A\""])
        .status(0)
        .stdout("A=plain\n")
        .stderr("");
}
