//! The server-less backends (`env`, `files`, `dotenv`), tenants, and several backends in one
//! manifest, with the real binary against real files and environments.

mod common;
use common::*;

/// Prints one variable of the child's environment, or `unset`.
fn show(var: &str) -> Vec<String> {
    vec![
        "--".into(),
        "sh".into(),
        "-c".into(),
        format!("printf %s \"${{{var}-unset}}\""),
    ]
}

fn run_show(t: &Test, extra: &[&str], var: &str) -> Done {
    let mut args: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
    args.extend(show(var));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    t.run_unmasked(&args)
}

/// A file only its owner can read (no permission warning).
fn private(t: Test, rel: &str, content: &str) -> Test {
    t.file(rel, content).chmod(rel, 0o600)
}

const ENV_MANIFEST: &str =
    "secrets:\n  type: env\n  prefix: APP_\nenvironment:\n  DB: secret:db-password\n";

const FILES_MANIFEST: &str =
    "secrets:\n  type: files\n  dir: secrets\nenvironment:\n  TOKEN: secret:TOKEN\n";

// --- env -------------------------------------------------------------------------------

#[test]
fn env_tenant_specific_value_wins_over_global() {
    let t = Test::new()
        .manifest(ENV_MANIFEST)
        .env("APP_ACME_DB_PASSWORD", "tenant-value")
        .env("APP_DB_PASSWORD", "global-value");
    run_show(&t, &["--tenant", "acme"], "DB")
        .status(0)
        .stdout("tenant-value");
}

#[test]
fn env_global_value_used_when_tenant_has_none() {
    let t = Test::new()
        .manifest(ENV_MANIFEST)
        .env("APP_DB_PASSWORD", "global-value");
    run_show(&t, &["--tenant", "acme"], "DB")
        .status(0)
        .stdout("global-value");
    run_show(&t, &[], "DB").status(0).stdout("global-value");
}

#[test]
fn env_names_are_upper_cased_with_dash_dot_slash_as_underscore() {
    let t = Test::new()
        .manifest("secrets:\n  type: env\n  prefix: APP_\nenvironment:\n  V: secret:db-pass.v2/x\n")
        .env("APP_EU_ACME_1_DB_PASS_V2_X", "mapped");
    run_show(&t, &["--tenant", "eu/acme-1"], "V")
        .status(0)
        .stdout("mapped");
}

#[test]
fn tenant_precedence_flag_then_environment_then_manifest() {
    let manifest = format!("tenant: beta\n{ENV_MANIFEST}");
    let t = Test::new()
        .manifest(&manifest)
        .env("APP_ACME_DB_PASSWORD", "from-flag")
        .env("APP_GAMMA_DB_PASSWORD", "from-env")
        .env("APP_BETA_DB_PASSWORD", "from-manifest")
        .env("ENVRUN_TENANT", "gamma");
    run_show(&t, &["--tenant", "acme"], "DB")
        .status(0)
        .stdout("from-flag");
    run_show(&t, &[], "DB").status(0).stdout("from-env");
    let t = t.env_remove("ENVRUN_TENANT");
    run_show(&t, &[], "DB").status(0).stdout("from-manifest");
}

#[test]
fn a_tenant_that_could_escape_a_directory_is_refused() {
    let t = Test::new().manifest(FILES_MANIFEST).mkdir("secrets");
    run_show(&t, &["--tenant", "../x"], "TOKEN")
        .status(125)
        .stderr_has("tenant `../x`");
    Test::new()
        .manifest(&format!("tenant: ../x\n{FILES_MANIFEST}"))
        .run(&["--", "true"])
        .status(125)
        .stderr_has("tenant `../x`");
}

#[test]
fn consumed_env_vars_are_not_passed_on_unless_mapped() {
    let manifest = "secrets:\n  type: env\n  prefix: APP_\nenvironment:\n  TOKEN: secret:TOKEN\n";
    let t = Test::new()
        .manifest(manifest)
        .env("APP_TOKEN", "raw-token")
        .env("APP_ACME_TOKEN", "acme-token")
        .env("APP_OTHER", "not-a-lookup");
    // The child gets TOKEN, never APP_TOKEN; an unrelated prefixed variable passes.
    let script = "printf '%s|%s|%s' \"$TOKEN\" \"${APP_TOKEN-unset}\" \"${APP_OTHER-unset}\"";
    t.run_unmasked(&["--", "sh", "-c", script])
        .status(0)
        .stdout("raw-token|unset|not-a-lookup");
    // With a tenant both candidates were read for the key, so neither passes on.
    let script = "printf '%s|%s|%s' \"$TOKEN\" \"${APP_TOKEN-unset}\" \"${APP_ACME_TOKEN-unset}\"";
    t.run_unmasked(&["--tenant", "acme", "--", "sh", "-c", script])
        .status(0)
        .stdout("acme-token|unset|unset");
    // The manifest may map the raw name back in explicitly.
    let t = t.manifest(
        "secrets:\n  type: env\n  prefix: APP_\nenvironment:\n  TOKEN: secret:TOKEN\n  APP_TOKEN: env:APP_TOKEN\n",
    );
    t.run_unmasked(&["--", "sh", "-c", "printf '%s|%s' \"$TOKEN\" \"$APP_TOKEN\""])
        .status(0)
        .stdout("raw-token|raw-token");
}

#[test]
fn env_not_found_names_backend_key_tenant_and_variables() {
    Test::new()
        .manifest(ENV_MANIFEST)
        .run(&["--tenant", "acme", "--", "true"])
        .status(125)
        .stderr_has("DB: secret:db-password: not found in backend `default` (env, tenant `acme`)")
        .stderr_has("$APP_ACME_DB_PASSWORD, then $APP_DB_PASSWORD");
}

// --- files -----------------------------------------------------------------------------

#[test]
fn files_tenant_file_wins_over_global_and_global_is_the_fallback() {
    let t = private(
        Test::new().manifest(FILES_MANIFEST),
        "secrets/TOKEN",
        "global\n",
    );
    let t = private(t, "secrets/acme/TOKEN.txt", "acme\n");
    run_show(&t, &["--tenant", "acme"], "TOKEN")
        .status(0)
        .stdout("acme");
    run_show(&t, &["--tenant", "other"], "TOKEN")
        .status(0)
        .stdout("global");
    run_show(&t, &[], "TOKEN").status(0).stdout("global");
}

#[test]
fn files_tries_exact_then_txt_then_key_and_strips_one_newline() {
    let t = private(
        Test::new().manifest(FILES_MANIFEST),
        "secrets/TOKEN.key",
        "k\n\n",
    );
    run_show(&t, &[], "TOKEN").status(0).stdout("k\n");
    let t = private(t, "secrets/TOKEN.txt", "t\r\n");
    run_show(&t, &[], "TOKEN").status(0).stdout("t");
    let t = private(t, "secrets/TOKEN", "exact");
    run_show(&t, &[], "TOKEN").status(0).stdout("exact");
}

#[test]
fn files_json_and_env_fields() {
    let manifest = "secrets:\n  type: files\n  dir: secrets\nenvironment:\n  USER: secret:db#user\n  PORT: secret:db#port\n  KEY: secret:api#API_KEY\n";
    let t = private(
        Test::new().manifest(manifest),
        "secrets/db.json",
        r#"{"user": "app", "port": 5432}"#,
    );
    let t = private(t, "secrets/api.env", "export API_KEY=\"k-1\"\nOTHER=x\n");
    t.run_unmasked(&[
        "--",
        "sh",
        "-c",
        "printf '%s|%s|%s' \"$USER\" \"$PORT\" \"$KEY\"",
    ])
    .status(0)
    .stdout("app|5432|k-1");
}

#[test]
fn files_json_wins_over_env_of_the_same_name() {
    let manifest = "secrets:\n  type: files\n  dir: secrets\nenvironment:\n  U: secret:db#user\n";
    let t = private(
        Test::new().manifest(manifest),
        "secrets/db.json",
        r#"{"user":"json"}"#,
    );
    let t = private(t, "secrets/db.env", "user=env\n");
    run_show(&t, &[], "U").status(0).stdout("json");
}

#[test]
fn files_missing_field_lists_field_names_only() {
    let manifest = "secrets:\n  type: files\n  dir: secrets\nenvironment:\n  P: secret:db#pass\n  W: secret:db\n";
    let json = format!(r#"{{"user": "app", "password": "{CANARY}"}}"#);
    let t = private(Test::new().manifest(manifest), "secrets/db.json", &json);
    t.run(&["--tenant", "acme", "--", "true"])
        .status(125)
        .stderr_has("P: secret:db#pass: backend `default` (files, tenant `acme`): no field `pass` (fields: password, user)")
        .stderr_has("W: secret:db: backend `default` (files, tenant `acme`): holds several fields, pick one with `#FIELD` (fields: password, user)")
        .never_shows(CANARY);
}

#[test]
fn files_kubernetes_data_symlinks_work() {
    // What the kubelet writes: a timestamped directory, `..data` pointing at it, and one
    // symlink per key through `..data`, for the global keys and a tenant directory.
    let t = Test::new().manifest("secrets:\n  type: files\n  dir: secrets\nenvironment:\n  T: secret:TOKEN\n  U: secret:db#user\n");
    let t = private(t, "secrets/..2024_05_01_10_00_00.123/TOKEN", "global-k8s\n");
    let t = private(
        t,
        "secrets/..2024_05_01_10_00_00.123/db.json",
        r#"{"user":"k8s-user"}"#,
    );
    let t = private(
        t,
        "secrets/..2024_05_01_10_00_00.123/acme/TOKEN",
        "acme-k8s\n",
    );
    let t = t
        .symlink("secrets/..data", "..2024_05_01_10_00_00.123")
        .symlink("secrets/TOKEN", "..data/TOKEN")
        .symlink("secrets/db.json", "..data/db.json")
        .symlink("secrets/acme", "..data/acme");
    t.run_unmasked(&["--", "sh", "-c", "printf '%s|%s' \"$T\" \"$U\""])
        .status(0)
        .stdout("global-k8s|k8s-user")
        .stderr("");
    t.run_unmasked(&["--tenant", "acme", "--", "sh", "-c", "printf %s \"$T\""])
        .status(0)
        .stdout("acme-k8s");
}

#[test]
fn files_symlink_escaping_dir_is_refused() {
    let marker = "ran";
    let t = private(
        Test::new().manifest(FILES_MANIFEST),
        "outside/TOKEN",
        CANARY,
    )
    .mkdir("secrets")
    .symlink("secrets/TOKEN", "../outside/TOKEN");
    t.run(&["--", "sh", "-c", &format!("touch {marker}")])
        .status(125)
        .stderr_has("TOKEN: secret:TOKEN: backend `default` (files): refused ")
        .stderr_has("outside")
        .never_shows(CANARY);
    assert!(!exists(&t.path(marker)), "the command ran");
    // A tenant directory that is a link out of `dir` is refused the same way.
    let t = Test::new()
        .manifest(FILES_MANIFEST)
        .mkdir("secrets")
        .mkdir("elsewhere");
    let t = private(t, "elsewhere/TOKEN", CANARY).symlink("secrets/acme", "../elsewhere");
    t.run(&["--tenant", "acme", "--", "true"])
        .status(125)
        .stderr_has("refused")
        .never_shows(CANARY);
    // A sibling whose name merely starts with `dir`'s is outside too (paths compare by
    // component, not by string prefix).
    let t = private(
        Test::new().manifest(FILES_MANIFEST),
        "secrets-evil/TOKEN",
        CANARY,
    )
    .mkdir("secrets")
    .symlink("secrets/TOKEN", "../secrets-evil/TOKEN");
    t.run(&["--", "true"])
        .status(125)
        .stderr_has("refused")
        .never_shows(CANARY);
    // An absolute link too.
    let t = private(
        Test::new().manifest(FILES_MANIFEST),
        "outside/TOKEN",
        CANARY,
    )
    .mkdir("secrets");
    let target = t.path("outside/TOKEN").display().to_string();
    let t = t.symlink("secrets/TOKEN", &target);
    t.run(&["--", "true"]).status(125).stderr_has("refused");
}

#[test]
fn files_readable_by_others_warns_once_per_file_naming_it() {
    let manifest = "secrets:\n  type: files\n  dir: secrets\nenvironment:\n  A: secret:TOKEN\n  B: secret:TOKEN.txt\n";
    let t = Test::new()
        .manifest(manifest)
        .file("secrets/TOKEN.txt", CANARY)
        .chmod("secrets/TOKEN.txt", 0o644);
    let done = t.run(&["--", "true"]).status(0).never_shows(CANARY);
    let err = done.stderr_str();
    assert_eq!(err.matches("warning").count(), 1, "{err}");
    assert!(
        err.contains("secrets/TOKEN.txt is readable by other users (mode 0644)"),
        "{err}"
    );
}

#[test]
fn files_missing_dir_and_missing_key_are_clear_errors() {
    Test::new()
        .manifest(FILES_MANIFEST)
        .run(&["--", "true"])
        .status(125)
        .stderr_has("secrets directory")
        .stderr_has("does not exist");
    Test::new()
        .manifest(FILES_MANIFEST)
        .mkdir("secrets")
        .run(&["--tenant", "acme", "--", "true"])
        .status(125)
        .stderr_has("TOKEN: secret:TOKEN: not found in backend `default` (files, tenant `acme`): looked for TOKEN, TOKEN.txt, TOKEN.key, TOKEN.json, TOKEN.env in ");
}

// --- dotenv ----------------------------------------------------------------------------

#[test]
fn dotenv_later_files_win_and_dotenvy_syntax_applies() {
    let manifest = "secrets:\n  type: dotenv\n  files: [.env, .env.local]\nenvironment:\n  A: secret:A\n  B: secret:B\n  C: secret:C\n  D: secret:D\n";
    let t = Test::new()
        .manifest(manifest)
        .file(
            ".env",
            "A=base\nexport B='single quoted'\nC=\"line1\nline2\"\n",
        )
        .file(".env.local", "A=local\nD=${ENVRUN_TEST_HOST}:${A}\n")
        .env("ENVRUN_TEST_HOST", "db");
    t.run_unmasked(&[
        "--",
        "sh",
        "-c",
        "printf '%s|%s|%s|%s' \"$A\" \"$B\" \"$C\" \"$D\"",
    ])
    .status(0)
    .stdout("local|single quoted|line1\nline2|db:local");
}

#[test]
fn dotenv_missing_file_is_an_error_unless_not_required() {
    let t = Test::new()
        .manifest(
            "secrets:\n  type: dotenv\n  files: [.env, .env.local]\nenvironment:\n  A: secret:A\n",
        )
        .file(".env", "A=1\n");
    t.run(&["--", "true"])
        .status(125)
        .stderr_has(".env.local")
        .stderr_has("required: false");
    let t = t.manifest("secrets:\n  type: dotenv\n  files:\n    - .env\n    - { path: .env.local, required: false }\nenvironment:\n  A: secret:A\n");
    run_show(&t, &[], "A").status(0).stdout("1");
}

#[test]
fn dotenv_defaults_to_dot_env_beside_the_manifest() {
    let t = Test::new()
        .manifest("secrets:\n  type: dotenv\nenvironment:\n  A: secret:A\n")
        .file(".env", "A=default-file\n");
    run_show(&t, &[], "A").status(0).stdout("default-file");
}

// --- several backends ------------------------------------------------------------------

#[test]
fn one_manifest_mixing_local_env_files_and_dotenv() {
    let manifest = "\
backends:
  e: { type: env, prefix: APP_ }
  f: { type: files, dir: secrets }
  d: { type: dotenv, files: [dev.env] }
environment:
  L: secret:LOCAL_KEY
  E: secret@e:TOKEN
  F: secret@f:db#password
  D: secret@d:DEV
  URL: postgres://${secret@f:db#user}:${secret@f:db#password}@db/app
";
    let t = Test::new()
        .secret("LOCAL_KEY", "from-local")
        .manifest(manifest)
        .env("APP_TOKEN", "from-env")
        .file("dev.env", "DEV=from-dotenv\n");
    let t = private(
        t,
        "secrets/db.json",
        r#"{"user":"app","password":"from-files"}"#,
    );
    t.run_unmasked(&[
        "--",
        "sh",
        "-c",
        "printf '%s|%s|%s|%s|%s' \"$L\" \"$E\" \"$F\" \"$D\" \"$URL\"",
    ])
    .status(0)
    .stdout("from-local|from-env|from-files|from-dotenv|postgres://app:from-files@db/app");
}

#[test]
fn an_undefined_backend_is_an_error_before_anything_is_fetched() {
    // The dotenv file is missing: had that backend been fetched, its error would show.
    let manifest = "backends:\n  d: { type: dotenv, files: [missing.env] }\nenvironment:\n  A: secret@d:A\n  B: secret@nope:B\n";
    let done = Test::new()
        .manifest(manifest)
        .run(&["--", "true"])
        .status(125)
        .stderr_has("B: secret@nope:B: no backend named `nope`");
    assert!(
        !done.stderr_str().contains("missing.env"),
        "{}",
        done.stderr_str()
    );
}

#[test]
fn a_backend_named_in_the_inherited_environment_uses_the_manifest_backends() {
    let t = Test::new()
        .manifest("backends:\n  e: { type: env, prefix: CI_ }\n")
        .env("CI_DEPLOY_KEY", "from-ci")
        .env("DEPLOY_KEY", "secret@e:deploy-key");
    run_show(&t, &[], "DEPLOY_KEY").status(0).stdout("from-ci");
}

// --- no value in any output ------------------------------------------------------------

#[test]
fn canary_never_shows_on_any_error_path() {
    let files = "secrets:\n  type: files\n  dir: secrets\n";
    let cases: Vec<(&str, Test, &str)> = vec![
        (
            "json without field",
            private(
                Test::new(),
                "secrets/db.json",
                &format!(r#"{{"p":"{CANARY}"}}"#),
            ),
            "X: secret:db",
        ),
        (
            "json missing field",
            private(
                Test::new(),
                "secrets/db.json",
                &format!(r#"{{"p":"{CANARY}"}}"#),
            ),
            "X: secret:db#nope",
        ),
        (
            "json invalid",
            private(
                Test::new(),
                "secrets/db.json",
                &format!(r#"{{"p": {CANARY}}}"#),
            ),
            "X: secret:db#p",
        ),
        (
            "json not an object",
            private(Test::new(), "secrets/db.json", &format!(r#"["{CANARY}"]"#)),
            "X: secret:db#p",
        ),
        (
            "env file missing field",
            private(Test::new(), "secrets/db.env", &format!("P={CANARY}\n")),
            "X: secret:db#nope",
        ),
        (
            "env file unparsable",
            private(
                Test::new(),
                "secrets/db.env",
                &format!("A=1\nP=\"{CANARY}\n"),
            ),
            "X: secret:db#P",
        ),
        (
            "env file bad line",
            private(Test::new(), "secrets/db.env", &format!("{CANARY}\n")),
            "X: secret:db#P",
        ),
        (
            "field of a plain file",
            private(Test::new(), "secrets/plain", CANARY),
            "X: secret:plain#f",
        ),
        (
            "symlink escape",
            private(Test::new().mkdir("secrets"), "out/T", CANARY).symlink("secrets/T", "../out/T"),
            "X: secret:T",
        ),
        (
            "world-readable file then a failure",
            Test::new()
                .file("secrets/T", CANARY)
                .chmod("secrets/T", 0o644)
                .mkdir("secrets"),
            "X: secret:T\n  Y: secret:absent",
        ),
    ];
    for (what, t, env) in cases {
        let t = t.manifest(&format!("{files}environment:\n  {env}\n"));
        let done = t.run(&["--tenant", "acme", "--", "true"]);
        assert_eq!(done.code(), Some(125), "{what}: {}", done.stderr_str());
        done.stderr_has("backend `default` (files, tenant `acme`)")
            .never_shows(CANARY);
    }

    let env_cases = [
        (
            "env value, field asked",
            "secrets:\n  type: env\n  prefix: APP_\nenvironment:\n  X: secret:T#f\n",
        ),
        (
            "dotenv unparsable",
            "secrets:\n  type: dotenv\n  files: [bad.env]\nenvironment:\n  X: secret:T\n",
        ),
        (
            "dotenv value, field asked",
            "secrets:\n  type: dotenv\n  files: [ok.env]\nenvironment:\n  X: secret:T#f\n",
        ),
    ];
    for (what, manifest) in env_cases {
        let t = Test::new()
            .manifest(manifest)
            .env("APP_T", CANARY)
            .file("bad.env", &format!("A=1\nT='{CANARY}\n"))
            .file("ok.env", &format!("T={CANARY}\n"));
        let done = t.run(&["--", "true"]);
        assert_eq!(done.code(), Some(125), "{what}: {}", done.stderr_str());
        done.stderr_has("backend `default`").never_shows(CANARY);
    }
}

#[test]
fn files_that_are_not_regular_are_refused_without_hanging() {
    let t = Test::new().manifest(FILES_MANIFEST).mkdir("secrets");
    nix::unistd::mkfifo(
        &t.path("secrets/TOKEN"),
        nix::sys::stat::Mode::S_IRUSR | nix::sys::stat::Mode::S_IWUSR,
    )
    .unwrap();
    t.run(&["--", "true"])
        .status(125)
        .stderr_has("secrets/TOKEN is a FIFO, not a regular file");
}

/// The Docker example's manifest, with `/run/secrets` laid out the way its compose file
/// mounts the example secrets, and the example's own CMD.
#[test]
fn docker_secrets_example_resolves_against_its_mounts() {
    let example = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/docker-secrets");
    let read = |rel: &str| std::fs::read_to_string(example.join(rel)).unwrap();
    let manifest = read("envrun.yaml");
    assert!(manifest.contains("dir: /run/secrets"));
    assert!(read("Dockerfile").contains(r#"ENTRYPOINT ["envrun", "--"]"#));
    let compose = read("compose.yaml");
    assert!(
        compose.contains("file: ./secrets/db_password.txt") && compose.contains("target: api.json")
    );
    let t = Test::new()
        .manifest(&manifest.replace("dir: /run/secrets", "dir: run/secrets"))
        .file("run/secrets/db_password", &read("secrets/db_password.txt"))
        .file("run/secrets/api.json", &read("secrets/api.json"))
        .chmod("run/secrets/db_password", 0o644)
        .chmod("run/secrets/api.json", 0o644);
    let cmd = "echo \"API_URL=$API_URL LOG_LEVEL=$LOG_LEVEL; DB_PASSWORD: ${#DB_PASSWORD} bytes, API_KEY: ${#API_KEY} bytes\"";
    assert!(read("Dockerfile").contains(&cmd.replace('"', "\\\"")));
    let done = t.run(&["--", "sh", "-c", cmd]).status(0);
    let readme = read("README.md");
    assert!(
        readme.contains(done.stdout_str().trim_end()),
        "{}",
        done.stdout_str()
    );
    // In the container the files are 0644 bind mounts under /run/secrets, a platform's mode
    // there that envrun does not warn about (tests/hardening.rs mounts them there); in this
    // temp directory the same modes get one warning each.
    assert_eq!(
        done.stderr_str().lines().count(),
        2,
        "{}",
        done.stderr_str()
    );
    for line in done.stderr_str().lines() {
        assert!(
            line.contains("is readable by other users (mode 0644)"),
            "{line}"
        );
    }
    assert!(
        !readme.contains("envrun: warning"),
        "the README shows warnings"
    );
}
