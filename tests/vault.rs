//! `type: vault` against a real OpenBao (`bao server -dev`, installed from PyPI into the
//! test virtualenv), seeded over its HTTP API: KV v2 and v1, fields, versions, AppRole and
//! JWT logins, namespaces, TLS, the one token check, faults injected by a proxy, the
//! deadline, the single-thread rule of supervise mode, and a canary token.
#![cfg(feature = "vault")]

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use base64::Engine;
use common::proxy::{Faults, Proxy};
use common::server::{Server, free_port, http, http_get};
use common::{CANARY, Done, Test};

use common::bao::{ROOT, bao_bin};

/// A dev-mode OpenBao on a free loopback port, root token `root`.
struct Bao {
    server: Server,
}

impl Bao {
    fn start() -> Bao {
        let port = free_port();
        let mut cmd = Command::new(bao_bin());
        cmd.args([
            "server",
            "-dev",
            // Servers started at the same time race on renaming ~/.vault-token otherwise.
            "-dev-no-store-token",
            &format!("-dev-root-token-id={ROOT}"),
            &format!("-dev-listen-address=127.0.0.1:{port}"),
        ]);
        // Healthy, and the dev `secret/` KV v2 mount done upgrading (until then it refuses
        // requests).
        let server = Server::start("bao", port, cmd, |port| {
            http_get(port, "/v1/sys/health").is_some_and(|(status, _)| status == 200)
                && http(
                    port,
                    "GET",
                    "/v1/secret/config",
                    &[("X-Vault-Token", ROOT)],
                    b"",
                )
                .is_some_and(|(status, _)| status == 200)
        });
        Bao { server }
    }

    fn port(&self) -> u16 {
        self.server.port
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port())
    }

    /// Calls the API as root (in namespace `ns` if given) and returns the JSON answer;
    /// anything but 2xx fails the test.
    fn api_ns(&self, ns: Option<&str>, method: &str, path: &str, body: &str) -> serde_json::Value {
        let mut headers = vec![("X-Vault-Token", ROOT)];
        if let Some(ns) = ns {
            headers.push(("X-Vault-Namespace", ns));
        }
        let (status, text) = http(
            self.port(),
            method,
            &format!("/v1/{path}"),
            &headers,
            body.as_bytes(),
        )
        .unwrap_or_else(|| panic!("{method} {path}: no answer"));
        assert!(
            (200..300).contains(&status),
            "{method} {path}: {status} {text}"
        );
        serde_json::from_str(&text).unwrap_or(serde_json::Value::Null)
    }

    fn api(&self, method: &str, path: &str, body: &str) -> serde_json::Value {
        self.api_ns(None, method, path, body)
    }

    /// Writes a KV v2 secret at `mount/path` and returns its new version.
    fn put(&self, mount: &str, path: &str, data: serde_json::Value) -> u64 {
        let body = serde_json::json!({ "data": data }).to_string();
        self.api("POST", &format!("{mount}/data/{path}"), &body)["data"]["version"]
            .as_u64()
            .unwrap()
    }

    /// A policy that reads every KV v2 secret under `secret/`.
    fn read_policy(&self) {
        let policy = r#"path "secret/data/*" { capabilities = ["read"] }"#;
        self.api(
            "PUT",
            "sys/policies/acl/read-app",
            &serde_json::json!({ "policy": policy }).to_string(),
        );
    }
}

/// A test directory with a manifest whose default backend is this Vault, and none of the
/// developer's own `VAULT_*`/`BAO_*` settings.
fn vault_test(backend: &str, environment: &str) -> Test {
    let mut t = Test::new();
    for var in [
        "VAULT_ADDR",
        "VAULT_TOKEN",
        "VAULT_NAMESPACE",
        "VAULT_CACERT",
        "BAO_ADDR",
        "BAO_TOKEN",
        "BAO_NAMESPACE",
        "BAO_CACERT",
    ] {
        t = t.env_remove(var);
    }
    let home = t.path("home");
    std::fs::create_dir_all(&home).unwrap();
    t.env("HOME", home)
        .manifest(&format!("secrets:\n{backend}environment:\n{environment}"))
}

/// Runs `sh -c script` under envrun and checks nothing envrun printed shows the canary.
fn run(t: &Test, args: &[&str], script: &str) -> Done {
    let mut all = args.to_vec();
    all.extend(["--", "sh", "-c", script]);
    t.run(&all).never_shows(CANARY)
}

/// A failure: exit 125, and the command (which would create `ran`) never started.
fn fails(t: &Test, args: &[&str]) -> Done {
    let done = run(t, args, "touch ran; echo ran").status(125);
    assert!(!t.path("ran").exists(), "the command ran");
    assert!(!done.stdout_str().contains("ran"));
    done
}

#[test]
fn kv2_fields_single_field_missing_path_and_missing_field() {
    let bao = Bao::start();
    bao.put(
        "secret",
        "apps/db",
        serde_json::json!({ "user": "app", "password": CANARY }),
    );
    bao.put("secret", "apps/api", serde_json::json!({ "key": "k-123" }));
    let backend = format!("  type: vault\n  address: {}\n", bao.url());
    let t = vault_test(
        &backend,
        "  USER: secret:apps/db#user\n  PASS: secret:apps/db#password\n  KEY: secret:apps/api\n",
    )
    .env("VAULT_TOKEN", ROOT);
    run(&t, &["--no-mask"], r#"echo "$USER $KEY ${#PASS}""#)
        .status(0)
        .stdout(&format!("app k-123 {}\n", CANARY.len()));
    // Masked in supervise mode: the value never reaches envrun's stdout.
    run(&t, &[], r#"echo "$PASS""#).status(0).stdout("***\n");

    let t = vault_test(
        &backend,
        "  A: secret:apps/nope#user\n  B: secret:apps/db#nope\n  C: secret:apps/db\n",
    )
    .env("VAULT_TOKEN", ROOT);
    let done = fails(&t, &[]);
    let err = done.stderr_str();
    assert!(err.contains("A: secret:apps/nope#user: not found in backend `default` (vault): secret/data/apps/nope"), "{err}");
    assert!(err.contains("B: secret:apps/db#nope: backend `default` (vault): no field `nope` (fields: password, user)"), "{err}");
    assert!(err.contains("C: secret:apps/db: backend `default` (vault): holds several fields, pick one with `#FIELD` (fields: password, user)"), "{err}");
}

#[test]
fn kv1_mount_found_by_auto_detection_and_by_setting() {
    let bao = Bao::start();
    bao.api(
        "POST",
        "sys/mounts/kv1",
        r#"{"type":"kv","options":{"version":"1"}}"#,
    );
    bao.api(
        "POST",
        "kv1/team/app",
        r#"{"token":"t-1","url":"https://x"}"#,
    );
    for kv in ["", "  kv_version: 1\n"] {
        let t = vault_test(
            &format!(
                "  type: vault\n  address: {}\n  mount: kv1\n{kv}",
                bao.url()
            ),
            "  T: secret:team/app#token\n",
        )
        .env("BAO_TOKEN", ROOT);
        run(&t, &["--no-mask"], "echo $T").status(0).stdout("t-1\n");
    }
    // A version pin on KV v1 is a clear error.
    let t = vault_test(
        &format!("  type: vault\n  address: {}\n  mount: kv1\n", bao.url()),
        "  T: secret:team/app?version=2#token\n",
    )
    .env("BAO_TOKEN", ROOT);
    fails(&t, &[]).stderr_has("?version= needs KV version 2, and mount `kv1` is version 1");
    // A missing path names the v1 API path the mount was found to use.
    let t = vault_test(
        &format!("  type: vault\n  address: {}\n  mount: kv1\n", bao.url()),
        "  T: secret:team/nope#token\n",
    )
    .env("BAO_TOKEN", ROOT);
    fails(&t, &[]).stderr_has("not found in backend `default` (vault): kv1/team/nope");
    // A mount that is not KV.
    let t = vault_test(
        &format!("  type: vault\n  address: {}\n  mount: sys\n", bao.url()),
        "  T: secret:x#y\n",
    )
    .env("BAO_TOKEN", ROOT);
    fails(&t, &[]).stderr_has("mount `sys`");
}

#[test]
fn versions_are_pinned_and_deleted_or_destroyed_versions_are_named() {
    let bao = Bao::start();
    for v in ["one", "two", "three", "four"] {
        bao.put("secret", "app", serde_json::json!({ "v": v }));
    }
    bao.api("POST", "secret/destroy/app", r#"{"versions":[1]}"#);
    bao.api("POST", "secret/delete/app", r#"{"versions":[2]}"#);
    let backend = format!("  type: vault\n  address: {}\n", bao.url());
    let t = vault_test(
        &backend,
        "  NOW: secret:app#v\n  THEN: secret:app?version=3#v\n  SAME: secret:app?version=3\n",
    )
    .env("VAULT_TOKEN", ROOT);
    run(&t, &["--no-mask"], "echo $NOW $THEN $SAME")
        .status(0)
        .stdout("four three three\n");

    let t = vault_test(
        &backend,
        "  A: secret:app?version=1#v\n  B: secret:app?version=2#v\n  C: secret:app?version=9#v\n  D: secret:app?version=x#v\n",
    )
    .env("VAULT_TOKEN", ROOT);
    let err = fails(&t, &[]).stderr_str();
    assert!(
        err.contains(
            "A: secret:app?version=1#v: backend `default` (vault): `app`: version 1 was destroyed"
        ),
        "{err}"
    );
    assert!(
        err.contains(
            "B: secret:app?version=2#v: backend `default` (vault): `app`: version 2 was deleted at "
        ),
        "{err}"
    );
    assert!(err.contains("C: secret:app?version=9#v: not found in backend `default` (vault): secret/data/app (version 9)"), "{err}");
    assert!(err.contains("D: secret:app?version=x#v: backend `default` (vault): `app`: version `x` is not a version number"), "{err}");

    // The latest version deleted: named too.
    bao.api("DELETE", "secret/data/app", "");
    let t = vault_test(&backend, "  A: secret:app#v\n").env("VAULT_TOKEN", ROOT);
    fails(&t, &[]).stderr_has("`app`: its latest version (4) was deleted at ");
}

#[test]
fn tenants_read_their_own_path_first_then_the_global_one() {
    let bao = Bao::start();
    bao.put("secret", "db", serde_json::json!({ "password": "global" }));
    bao.put(
        "secret",
        "acme/db",
        serde_json::json!({ "password": "acme" }),
    );
    bao.put("secret", "api", serde_json::json!({ "key": "global-key" }));
    let t = vault_test(
        &format!("  type: vault\n  address: {}\n", bao.url()),
        "  DB: secret:db#password\n  API: secret:api#key\n",
    )
    .env("VAULT_TOKEN", ROOT);
    run(&t, &["--no-mask", "--tenant", "acme"], "echo $DB $API")
        .status(0)
        .stdout("acme global-key\n");
    run(&t, &["--no-mask"], "echo $DB $API")
        .status(0)
        .stdout("global global-key\n");
    let t = vault_test(
        &format!("  type: vault\n  address: {}\n", bao.url()),
        "  X: secret:nope#k\n",
    )
    .env("VAULT_TOKEN", ROOT);
    fails(&t, &["--tenant", "acme"]).stderr_has(
        "not found in backend `default` (vault, tenant `acme`): secret/data/acme/nope, then secret/data/nope",
    );
}

#[test]
fn token_from_manifest_reference_home_file_and_a_literal_is_refused() {
    let bao = Bao::start();
    bao.put("secret", "app", serde_json::json!({ "k": "v1" }));
    let backend = format!("  type: vault\n  address: {}\n", bao.url());
    // `token: file:` relative to the manifest, and `token: env:`.
    let t = vault_test(
        &format!("{backend}  token: file:vault.token\n"),
        "  K: secret:app#k\n",
    )
    .file("vault.token", "root\n");
    run(&t, &["--no-mask"], "echo $K").status(0).stdout("v1\n");
    let t = vault_test(
        &format!("{backend}  token: env:MY_TOKEN\n"),
        "  K: secret:app#k\n",
    )
    .env("MY_TOKEN", ROOT);
    // The variable the token came from is not passed on to the command.
    run(&t, &["--no-mask"], r#"echo "$K ${MY_TOKEN:-unset}""#)
        .status(0)
        .stdout("v1 unset\n");
    // ~/.vault-token, as `vault login` leaves it; $VAULT_ADDR for the address.
    let t = vault_test("  type: vault\n", "  K: secret:app#k\n")
        .env("VAULT_ADDR", bao.url())
        .file("home/.vault-token", "root");
    run(&t, &["--no-mask"], "echo $K").status(0).stdout("v1\n");
    // $BAO_ADDR wins over $VAULT_ADDR.
    let t = vault_test("  type: vault\n", "  K: secret:app#k\n")
        .env("BAO_ADDR", bao.url())
        .env("VAULT_ADDR", "http://127.0.0.1:1")
        .env("VAULT_TOKEN", ROOT);
    run(&t, &["--no-mask"], "echo $K").status(0).stdout("v1\n");
    // A literal token in the manifest: refused, and not repeated.
    let t = vault_test(
        &format!("{backend}  token: {CANARY}\n"),
        "  K: secret:app#k\n",
    );
    fails(&t, &[]).stderr_has("never the value itself");
    // No token anywhere.
    let t = vault_test(&backend, "  K: secret:app#k\n");
    fails(&t, &[]).stderr_has("no token");
}

#[test]
fn a_wrong_token_is_one_clear_error_and_never_shown() {
    let bao = Bao::start();
    bao.put("secret", "app", serde_json::json!({ "a": "1", "b": "2" }));
    let t = vault_test(
        &format!("  type: vault\n  address: {}\n", bao.url()),
        "  A: secret:app#a\n  B: secret:app#b\n",
    )
    .env("VAULT_TOKEN", CANARY);
    let done = fails(&t, &[]);
    let err = done.stderr_str();
    assert!(
        err.contains("the token (env:VAULT_TOKEN) was refused: it is invalid, expired or revoked"),
        "{err}"
    );
    // One reason, the same for every variable, and one hint; no per-key 403s.
    assert!(!err.contains("read `"), "{err}");
    assert_eq!(err.matches("get a fresh token").count(), 1, "{err}");
}

#[test]
fn approle_login() {
    let bao = Bao::start();
    bao.read_policy();
    bao.put("secret", "app", serde_json::json!({ "k": "from-approle" }));
    bao.api("POST", "sys/auth/approle", r#"{"type":"approle"}"#);
    bao.api(
        "POST",
        "auth/approle/role/ci",
        r#"{"token_policies":["read-app"],"token_ttl":"5m"}"#,
    );
    let role_id = bao.api("GET", "auth/approle/role/ci/role-id", "")["data"]["role_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let secret_id = bao.api("POST", "auth/approle/role/ci/secret-id", "{}")["data"]["secret_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let backend = format!(
        "  type: vault\n  address: {}\n  auth:\n    method: approle\n    role_id: env:ROLE_ID\n    secret_id: file:secret-id\n",
        bao.url()
    );
    let t = vault_test(&backend, "  K: secret:app#k\n")
        .env("ROLE_ID", &role_id)
        .file("secret-id", &secret_id);
    run(&t, &["--no-mask"], r#"echo "$K ${ROLE_ID:-consumed}""#)
        .status(0)
        .stdout("from-approle consumed\n");
    // A wrong secret id: a login error naming the method and mount.
    let t = vault_test(&backend, "  K: secret:app#k\n")
        .env("ROLE_ID", &role_id)
        .file("secret-id", CANARY);
    fails(&t, &[]).stderr_has("log in (approle at auth/approle)");
}

/// A JWT signed with RS256 by `key` (PEM), made with `openssl`.
fn sign_jwt(dir: &Path, key: &Path, claims: &serde_json::Value) -> String {
    let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
    let header = b64(br#"{"alg":"RS256","typ":"JWT"}"#);
    let payload = b64(claims.to_string().as_bytes());
    let input = format!("{header}.{payload}");
    let data = dir.join("jwt-input");
    std::fs::write(&data, &input).unwrap();
    let out = Command::new(common::debian_tool("openssl", "openssl"))
        .args(["dgst", "-sha256", "-sign"])
        .arg(key)
        .arg(&data)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    format!("{input}.{}", b64(&out.stdout))
}

#[test]
fn jwt_login_with_a_key_generated_here() {
    let bao = Bao::start();
    bao.read_policy();
    bao.put("secret", "app", serde_json::json!({ "k": "from-jwt" }));
    let t = vault_test("", "");
    let openssl = common::debian_tool("openssl", "openssl");
    let key = t.path("key.pem");
    let status = Command::new(&openssl)
        .args([
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
            "-out",
        ])
        .arg(&key)
        .output()
        .unwrap();
    assert!(
        status.status.success(),
        "{}",
        String::from_utf8_lossy(&status.stderr)
    );
    let public = Command::new(&openssl)
        .args(["pkey", "-pubout", "-in"])
        .arg(&key)
        .output()
        .unwrap();
    assert!(public.status.success());
    let public = String::from_utf8(public.stdout).unwrap();
    bao.api("POST", "sys/auth/ci-jwt", r#"{"type":"jwt"}"#);
    bao.api(
        "POST",
        "auth/ci-jwt/config",
        &serde_json::json!({ "jwt_validation_pubkeys": [public] }).to_string(),
    );
    bao.api(
        "POST",
        "auth/ci-jwt/role/deploy",
        r#"{"role_type":"jwt","user_claim":"sub","bound_audiences":["envrun"],"token_policies":["read-app"],"token_ttl":"5m"}"#,
    );
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let jwt = sign_jwt(
        t.dir.path(),
        &key,
        &serde_json::json!({ "sub": "ci", "aud": "envrun", "iat": now, "nbf": now - 5, "exp": now + 600 }),
    );
    let backend = format!(
        "  type: vault\n  address: {}\n  auth:\n    method: jwt\n    role: deploy\n    jwt: file:ci.jwt\n    mount: ci-jwt\n",
        bao.url()
    );
    let t = vault_test(&backend, "  K: secret:app#k\n").file("ci.jwt", &jwt);
    run(&t, &["--no-mask"], "echo $K")
        .status(0)
        .stdout("from-jwt\n");
    // A token signed by another key is refused at login.
    let other = vault_test(&backend, "  K: secret:app#k\n");
    let other_key = other.path("other.pem");
    assert!(
        Command::new(&openssl)
            .args([
                "genpkey",
                "-algorithm",
                "RSA",
                "-pkeyopt",
                "rsa_keygen_bits:2048",
                "-out"
            ])
            .arg(&other_key)
            .status()
            .unwrap()
            .success()
    );
    let forged = sign_jwt(
        other.dir.path(),
        &other_key,
        &serde_json::json!({ "sub": "ci", "aud": "envrun", "iat": now, "exp": now + 600 }),
    );
    let other = other.file("ci.jwt", &forged);
    fails(&other, &[]).stderr_has("log in (jwt at auth/ci-jwt)");
}

#[test]
fn namespaces_on_every_request_and_a_separate_auth_namespace() {
    let bao = Bao::start();
    bao.api("POST", "sys/namespaces/team", "{}");
    bao.api_ns(Some("team"), "POST", "sys/namespaces/billing", "{}");
    let ns = Some("team/billing");
    bao.api_ns(
        ns,
        "POST",
        "sys/mounts/kv",
        r#"{"type":"kv","options":{"version":"2"}}"#,
    );
    bao.api_ns(
        ns,
        "POST",
        "kv/data/app",
        r#"{"data":{"k":"in-namespace"}}"#,
    );
    // With the root token, from the environment's namespace variable.
    let backend = format!("  type: vault\n  address: {}\n  mount: kv\n", bao.url());
    let t = vault_test(&backend, "  K: secret:app#k\n")
        .env("VAULT_TOKEN", ROOT)
        .env("VAULT_NAMESPACE", "team/billing");
    run(&t, &["--no-mask"], "echo $K")
        .status(0)
        .stdout("in-namespace\n");
    // Without the namespace the mount does not exist.
    let t = vault_test(&backend, "  K: secret:app#k\n").env("VAULT_TOKEN", ROOT);
    fails(&t, &[]).stderr_has("mount `kv`");

    // AppRole enabled in the parent namespace `team`, secrets in `team/billing`: the login
    // goes to `auth_namespace`, the lookup and reads to `namespace`.
    let team = Some("team");
    let policy = r#"path "billing/kv/data/*" { capabilities = ["read"] }
path "billing/sys/internal/ui/mounts/*" { capabilities = ["read"] }"#;
    bao.api_ns(
        team,
        "PUT",
        "sys/policies/acl/billing-read",
        &serde_json::json!({ "policy": policy }).to_string(),
    );
    bao.api_ns(team, "POST", "sys/auth/approle", r#"{"type":"approle"}"#);
    bao.api_ns(
        team,
        "POST",
        "auth/approle/role/ci",
        r#"{"token_policies":["billing-read"]}"#,
    );
    let role_id = bao.api_ns(team, "GET", "auth/approle/role/ci/role-id", "")["data"]["role_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let secret_id =
        bao.api_ns(team, "POST", "auth/approle/role/ci/secret-id", "{}")["data"]["secret_id"]
            .as_str()
            .unwrap()
            .to_owned();
    let backend = format!(
        "  type: vault\n  address: {}\n  mount: kv\n  namespace: team/billing\n  auth_namespace: team\n  kv_version: 2\n  auth:\n    method: approle\n    role_id: env:ROLE_ID\n    secret_id: env:SECRET_ID\n",
        bao.url()
    );
    let t = vault_test(&backend, "  K: secret:app#k\n")
        .env("ROLE_ID", &role_id)
        .env("SECRET_ID", &secret_id);
    run(&t, &["--no-mask"], "echo $K")
        .status(0)
        .stdout("in-namespace\n");

    // `auth_namespace: ""`: AppRole in the root namespace.
    let policy = r#"path "team/billing/kv/data/*" { capabilities = ["read"] }"#;
    bao.api(
        "PUT",
        "sys/policies/acl/billing-read",
        &serde_json::json!({ "policy": policy }).to_string(),
    );
    bao.api("POST", "sys/auth/approle", r#"{"type":"approle"}"#);
    bao.api(
        "POST",
        "auth/approle/role/ci",
        r#"{"token_policies":["billing-read"]}"#,
    );
    let role_id = bao.api("GET", "auth/approle/role/ci/role-id", "")["data"]["role_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let secret_id = bao.api("POST", "auth/approle/role/ci/secret-id", "{}")["data"]["secret_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let t = vault_test(
        &backend.replace("auth_namespace: team", "auth_namespace: \"\""),
        "  K: secret:app#k\n",
    )
    .env("ROLE_ID", &role_id)
    .env("SECRET_ID", &secret_id);
    run(&t, &["--no-mask"], "echo $K")
        .status(0)
        .stdout("in-namespace\n");
}

#[test]
fn tls_with_the_dev_ca_and_failure_without_it() {
    let port = free_port();
    let certs = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(bao_bin());
    cmd.args([
        "server",
        "-dev",
        "-dev-no-store-token",
        "-dev-tls",
        &format!("-dev-tls-cert-dir={}", certs.path().display()),
        &format!("-dev-root-token-id={ROOT}"),
        &format!("-dev-listen-address=127.0.0.1:{port}"),
    ]);
    let ca = certs.path().join("vault-ca.pem");
    let url = format!("https://127.0.0.1:{port}");
    // Ready once `bao kv put` over TLS succeeds; it seeds the secret at the same time.
    let put = |port: u16| {
        Command::new(bao_bin())
            .args(["kv", "put", "-mount=secret", "app", "k=over-tls"])
            .env("BAO_ADDR", format!("https://127.0.0.1:{port}"))
            .env("BAO_CACERT", &ca)
            .env("BAO_TOKEN", ROOT)
            .output()
            .is_ok_and(|o| o.status.success())
    };
    let _server = Server::start("bao-tls", port, cmd, |port| ca.exists() && put(port));

    let backend = format!("  type: vault\n  address: {url}\n  ca_cert: ca.pem\n");
    let t = vault_test(&backend, "  K: secret:app#k\n")
        .env("VAULT_TOKEN", ROOT)
        .file("ca.pem", &std::fs::read_to_string(&ca).unwrap());
    run(&t, &["--no-mask"], "echo $K")
        .status(0)
        .stdout("over-tls\n");
    // $VAULT_CACERT does the same.
    let t = vault_test(
        &format!("  type: vault\n  address: {url}\n"),
        "  K: secret:app#k\n",
    )
    .env("VAULT_TOKEN", ROOT)
    .env("VAULT_CACERT", &ca);
    run(&t, &["--no-mask"], "echo $K")
        .status(0)
        .stdout("over-tls\n");
    // Without the CA: a TLS error at once (not retried until the deadline), with a hint.
    let t = vault_test(
        &format!("  type: vault\n  address: {url}\n"),
        "  K: secret:app#k\n",
    )
    .env("VAULT_TOKEN", ROOT);
    let start = Instant::now();
    fails(&t, &["--timeout", "20s"])
        .stderr_has("TLS: invalid peer certificate")
        .stderr_has("ca_cert");
    assert!(
        start.elapsed() < Duration::from_secs(10),
        "{:?}",
        start.elapsed()
    );
    // tls_skip_verify works, with a loud warning.
    let t = vault_test(
        &format!("  type: vault\n  address: {url}\n  tls_skip_verify: true\n"),
        "  K: secret:app#k\n",
    )
    .env("VAULT_TOKEN", ROOT);
    run(&t, &["--no-mask"], "echo $K")
        .status(0)
        .stdout("over-tls\n")
        .stderr_has("tls_skip_verify is on: the server's certificate is NOT checked");
}

/// Supervise mode (a secret to mask) starts the command only when envrun is single-threaded
/// again; a fetch by hostname (DNS on the runtime's blocking pool) must leave no thread.
#[test]
fn after_a_fetch_by_hostname_supervise_mode_finds_one_thread() {
    let bao = Bao::start();
    bao.put("secret", "app", serde_json::json!({ "k": CANARY }));
    let t = vault_test(
        &format!(
            "  type: vault\n  address: http://localhost:{}\n",
            bao.port()
        ),
        "  K: secret:app#k\n",
    )
    .env("VAULT_TOKEN", ROOT);
    run(&t, &[], r#"echo "ran $K""#)
        .status(0)
        .stdout("ran ***\n");
}

#[test]
fn with_20_percent_injected_faults_100_runs_all_succeed_in_time() {
    let bao = Bao::start();
    let mut env = String::new();
    for i in 0..5 {
        bao.put(
            "secret",
            &format!("app/{i}"),
            serde_json::json!({ "v": format!("value-{i}") }),
        );
        env.push_str(&format!("  V{i}: secret:app/{i}#v\n"));
    }
    let proxy = Proxy::start(
        bao.port(),
        Faults {
            fail_percent: 20,
            delay_percent: 10,
        },
    );
    let t = vault_test(
        &format!(
            "  type: vault\n  address: http://127.0.0.1:{}\n",
            proxy.port
        ),
        &env,
    )
    .env("VAULT_TOKEN", ROOT);
    let deadline = Duration::from_secs(10);
    let mut slowest = Duration::ZERO;
    for _ in 0..100 {
        let start = Instant::now();
        run(&t, &["--no-mask", "--timeout", "10s"], "echo $V0 $V4")
            .status(0)
            .stdout("value-0 value-4\n");
        slowest = slowest.max(start.elapsed());
    }
    assert!(slowest < deadline, "slowest run {slowest:?}");
    let stats = proxy.stats();
    // 100 runs of 7 requests: about 140 failures are injected.
    assert!(stats.failed() >= 70, "{stats:?}");
    for (kind, n) in [
        ("503", &stats.unavailable),
        ("429", &stats.throttled),
        ("reset", &stats.reset),
        ("cut", &stats.cut),
        ("delay", &stats.delayed),
    ] {
        assert!(
            n.load(std::sync::atomic::Ordering::Relaxed) > 0,
            "no {kind} injected"
        );
    }
}

#[test]
fn a_stopped_or_hung_server_fails_by_the_deadline() {
    let mut bao = Bao::start();
    bao.put("secret", "app", serde_json::json!({ "k": "v" }));
    let port = bao.port();
    bao.server.stop();
    let black_hole = Proxy::black_hole();
    for (what, port) in [("stopped", port), ("hung", black_hole.port)] {
        let t = vault_test(
            &format!("  type: vault\n  address: http://127.0.0.1:{port}\n"),
            "  K: secret:app#k\n",
        )
        .env("VAULT_TOKEN", ROOT);
        let start = Instant::now();
        let done = fails(&t, &["--timeout", "2s"]);
        let took = start.elapsed();
        // By the deadline (2 s), with room for a loaded machine; a hung server is waited
        // for until then.
        assert!(took < Duration::from_millis(3500), "{what}: {took:?}");
        if what == "hung" {
            assert!(took >= Duration::from_millis(1900), "{what}: {took:?}");
        }
        let err = done.stderr_str();
        assert!(
            err.contains("K: secret:app#k: backend `default` (vault)"),
            "{what}: {err}"
        );
        assert!(err.contains("check the token"), "{what}: {err}");
    }
}

/// `examples/vault/envrun.yaml`, seeded as its comment says.
#[test]
fn the_example_manifest_works_against_a_dev_server() {
    let bao = Bao::start();
    bao.put(
        "secret",
        "apps/billing",
        serde_json::json!({ "user": "billing-app", "password": "s3cr3t-pw" }),
    );
    bao.put(
        "secret",
        "apps/api",
        serde_json::json!({ "key": "k-0123456789" }),
    );
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/vault/envrun.yaml");
    let t = vault_test("", "")
        .env("VAULT_ADDR", bao.url())
        .env("VAULT_TOKEN", ROOT);
    run(
        &t,
        &["--no-mask", "-m", example.to_str().unwrap()],
        r#"echo "$DB_USER $DB_PASSWORD $API_KEY $DATABASE_URL""#,
    )
    .status(0)
    .stdout(
        "billing-app s3cr3t-pw k-0123456789 postgres://billing-app:s3cr3t-pw@db:5432/billing\n",
    );
}

/// `envrun check` learns a KV v2 value's age from its `created_time` (for `rotation:`).
#[test]
fn check_reports_when_a_kv2_value_was_written() {
    let bao = Bao::start();
    let written = bao.api(
        "POST",
        "secret/data/aged",
        r#"{"data":{"token":"Zq8v-Lr2m-Wd5k-Pj7x-Tn3c"}}"#,
    )["data"]["created_time"]
        .as_str()
        .unwrap()
        .to_owned();
    let t = vault_test(
        &format!("  type: vault\n  address: {}\n", bao.url()),
        "  API_TOKEN: secret:aged#token\n",
    )
    .env("VAULT_TOKEN", ROOT);
    let done = t.run(&["check", "--json"]);
    let report: serde_json::Value = serde_json::from_str(&done.stdout_str())
        .unwrap_or_else(|e| panic!("{e}: {}{}", done.stdout_str(), done.stderr_str()));
    let updated = report["variables"][0]["updated"]
        .as_str()
        .unwrap_or_default();
    assert_eq!(
        updated.get(..19),
        written.get(..19),
        "{report:#}\nwritten {written}"
    );
}

/// Rotation policies against Vault: a KV v2 value older than its policy is due, one within
/// it is not, and a KV v1 value (which has no time) is reported as having no age. The
/// canary never shows (under a name that is not checked for strength: the canary contains
/// `123456`, which `check` rightly calls weak). The "old" value is old by construction: a policy of 1 ns is shorter
/// than any real age, so no clock is faked and nothing waits.
#[test]
fn rotation_is_checked_against_kv2_times_and_kv1_has_no_age() {
    let bao = Bao::start();
    bao.put("secret", "fresh", serde_json::json!({ "token": CANARY }));
    bao.put(
        "secret",
        "due",
        serde_json::json!({ "token": "Zq8v-Lr2m-Wd5k-Pj7x-Tn3c" }),
    );
    bao.api(
        "POST",
        "sys/mounts/kv1",
        r#"{"type":"kv","options":{"version":"1"}}"#,
    );
    bao.api("POST", "kv1/old", r#"{"token":"Hs4!pQ9#vW2$xR7&mK5@"}"#);
    let t = vault_test(
        &format!("  type: vault\n  address: {}\n", bao.url()),
        "  FRESH_VALUE: secret:fresh#token\n  DUE_TOKEN: secret:due#token\n  V1_TOKEN: secret@v1:old#token\n",
    )
    .env("VAULT_TOKEN", ROOT);
    let manifest = std::fs::read_to_string(t.path("envrun.yaml")).unwrap();
    let t = t.manifest(&format!(
        "{manifest}backends:\n  v1:\n    type: vault\n    address: {}\n    mount: kv1\nrotation:\n  FRESH_VALUE: 90d\n  DUE_TOKEN: 1ns\n  V1_TOKEN: 90d\n",
        bao.url()
    ));
    let done = t.run(&["check", "--json"]).status(1).never_shows(CANARY);
    let report: serde_json::Value = serde_json::from_str(&done.stdout_str()).unwrap();
    let findings: Vec<(String, String)> = report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["kind"].as_str().unwrap().to_owned(),
                f["variable"].as_str().unwrap_or("-").to_owned(),
            )
        })
        .collect();
    assert_eq!(
        findings,
        vec![
            ("rotation-due".to_owned(), "DUE_TOKEN".to_owned()),
            ("no-age".to_owned(), "V1_TOKEN".to_owned()),
        ],
        "{report:#}"
    );
    let v1 = report["findings"][1]["message"].as_str().unwrap();
    assert!(v1.contains("no recorded change time"), "{v1}");
    let fresh = report["variables"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "FRESH_VALUE")
        .unwrap();
    assert_eq!(fresh["status"], "ok");
    assert!(fresh["updated"].is_string());
    t.run(&["check"]).status(1).never_shows(CANARY);
}
