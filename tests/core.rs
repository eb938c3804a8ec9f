//! The core path with the real binary: manifest, every reference kind, exec, exit codes,
//! the local store's failure modes, and the canary that no error path prints a value.

mod common;
use common::*;

/// Writes the values to a file: they are secret, so on stdout they would be masked.
const PRINT_ENV: &str = "printf '%s|' \"$TOKEN\" \"$DB_USER\" \"$DB_PASS\" \"$HOME_DIR\" \"$SSH_KEY\" \"$LEVEL\" \"$URL\" > seen.txt";

fn store_with_db() -> Test {
    Test::new().secret("TOKEN", "tok-123456").secret(
        "DB",
        r#"{"user":"app-user","password":"pw-9876","port":5432}"#,
    )
}

#[test]
fn every_reference_kind_reaches_the_child() {
    let t = store_with_db()
        .file("keys/ssh", "ssh-key-material\n")
        .manifest(
            r#"
environment:
  TOKEN: secret:TOKEN
  DB_USER: "secret:DB#user"
  DB_PASS: "secret@default:DB#password"
  HOME_DIR: env:SOME_DIR
  SSH_KEY: file:keys/ssh
  LEVEL: INFO
  URL: "postgres://${secret:DB#user}:${secret:DB#password}@db:${secret:DB#port}/app?cost=$$5"
"#,
        )
        .env("SOME_DIR", "/srv/app");
    t.run(&["--", "sh", "-c", PRINT_ENV])
        .status(0)
        .stdout("")
        .stderr("");
    assert_eq!(
        std::fs::read_to_string(t.path("seen.txt")).unwrap(),
        "tok-123456|app-user|pw-9876|/srv/app|ssh-key-material|INFO|postgres://app-user:pw-9876@db:5432/app?cost=$5|"
    );
}

#[test]
fn manifest_is_found_by_flag_then_env_then_cwd() {
    let t = Test::new()
        .file("a.yaml", "environment:\n  WHICH: flag\n")
        .file("b.yaml", "environment:\n  WHICH: env\n")
        .manifest("environment:\n  WHICH: cwd\n");
    let show = ["--", "sh", "-c", "printf %s \"$WHICH\""];
    t.run(&show).status(0).stdout("cwd");
    let t = t.env("ENVRUN_MANIFEST", "b.yaml");
    t.run(&show).status(0).stdout("env");
    let mut args = vec!["-m", "a.yaml"];
    args.extend(show);
    t.run(&args).status(0).stdout("flag");
}

#[test]
fn file_paths_are_relative_to_the_manifest() {
    let t = Test::new()
        .file("conf/envrun.yaml", "environment:\n  K: file:k.txt\n")
        .file("conf/k.txt", "from-conf-dir\r\n");
    t.run_unmasked(&[
        "-m",
        "conf/envrun.yaml",
        "--",
        "sh",
        "-c",
        "printf %s \"$K\"",
    ])
    .status(0)
    .stdout("from-conf-dir");
}

#[test]
fn inherited_environment_references_are_resolved_without_a_manifest() {
    let t = Test::new().secret("API_KEY", "inherited-secret");
    t.command(&[
        "--no-mask",
        "--",
        "sh",
        "-c",
        "printf '%s|%s' \"$API_KEY\" \"$DATABASE_URL\"",
    ])
    .env_pass("API_KEY", "secret:API_KEY")
    .env_pass("DATABASE_URL", "file:./dev.db")
    .done()
    .status(0)
    .stdout("inherited-secret|file:./dev.db");
    // --no-inherit-refs passes the reference through as text.
    t.command(&[
        "--no-inherit-refs",
        "--",
        "sh",
        "-c",
        "printf %s \"$API_KEY\"",
    ])
    .env_pass("API_KEY", "secret:API_KEY")
    .done()
    .status(0)
    .stdout("secret:API_KEY");
}

#[test]
fn clean_env_keeps_only_path_and_the_manifest() {
    let t = Test::new()
        .manifest("environment:\n  ONLY: this\n")
        .env("NOISE", "x");
    let out = t.run(&["--clean-env", "--", "env"]).status(0);
    let mut names: Vec<String> = out
        .stdout_str()
        .lines()
        .map(|l| l.split('=').next().unwrap().to_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["ONLY", "PATH"]);
    // A manifest that sets PATH replaces it.
    let t = Test::new().manifest("environment:\n  PATH: /usr/bin:/bin\n");
    t.run(&["--clean-env", "--", "env"])
        .status(0)
        .stdout("PATH=/usr/bin:/bin\n");
}

#[test]
fn the_store_key_from_the_environment_never_reaches_the_child() {
    let t = Test::new().secret("T", "x-value");
    let key = std::fs::read_to_string(t.path("secrets.key")).unwrap();
    std::fs::remove_file(t.path("secrets.key")).unwrap();
    t.command(&[
        "--no-mask",
        "--",
        "sh",
        "-c",
        "printf '%s|%s' \"$T\" \"${ENVRUN_KEY-unset}\"",
    ])
    .env_pass("ENVRUN_KEY", key.trim())
    .env_pass("T", "secret:T")
    .done()
    .status(0)
    .stdout("x-value|unset");
}

#[test]
fn missing_secret_fails_closed_and_names_variable_reference_and_backend() {
    let t = store_with_db().manifest("environment:\n  A: secret:TOKEN\n  B: secret:NOPE\n  C: \"secret:DB#nofield\"\n  D: env:NOT_SET_ANYWHERE\n");
    let marker = t.path("ran");
    t.run(&["--", "sh", "-c", &format!("touch {}", marker.display())])
        .status(125)
        .stdout("")
        .stderr_has("envrun: error: B: secret:NOPE: not found in backend `default` (local)")
        .stderr_has("envrun: error: C: secret:DB#nofield: backend `default` (local): no field `nofield` (fields: password, port, user)")
        .stderr_has("envrun: error: D: env:NOT_SET_ANYWHERE: not set in envrun's environment")
        .stderr_has("envrun: hint: the command was not started")
        .never_shows("pw-9876");
    assert!(
        !exists(&marker),
        "the child ran although a reference failed"
    );
}

#[test]
fn unknown_backend_and_unknown_parameter_are_errors_before_fetching() {
    let t = Test::new().manifest("environment:\n  A: secret@prod:x\n  B: secret:x?version=3\n");
    // No store exists: the errors must be about the references, not the missing store.
    t.run(&["--", "true"])
        .status(125)
        .stderr_has("A: secret@prod:x: no backend named `prod`")
        .stderr_has("B: secret:x?version=3: backend `default` (local) has no parameter `version` (it takes none)");
}

#[test]
fn exit_codes_pass_through() {
    let t = Test::new();
    for code in [0, 1, 42, 255] {
        t.run(&["--", "sh", "-c", &format!("exit {code}")])
            .status(code);
    }
}

#[test]
fn command_not_found_is_127_and_not_executable_is_126() {
    let t = Test::new()
        .file("script.sh", "#!/bin/sh\necho hi\n")
        .chmod("script.sh", 0o644);
    t.run(&["--", "definitely-not-a-command-xyz"])
        .status(127)
        .stderr_has("envrun: error: cannot run `definitely-not-a-command-xyz`: command not found");
    t.run_unmasked(&["--", "./script.sh"])
        .status(126)
        .stderr_has("cannot run `./script.sh`");
    t.run(&["--", "./missing.sh"]).status(127);
    // A manifest PATH is where the command is looked up.
    let t = Test::new()
        .file("bin/mytool", "#!/bin/sh\necho mytool-ran\n")
        .chmod("bin/mytool", 0o755);
    let path = format!("{}:/usr/bin:/bin", t.path("bin").display());
    let t = t.manifest(&format!("environment:\n  PATH: {path}\n"));
    t.run(&["--", "mytool"]).status(0).stdout("mytool-ran\n");
}

#[test]
fn exec_keeps_the_pid() {
    let t = Test::new();
    let mut run = t.command(&["--", "sh", "-c", "echo $$"]);
    run.cmd.stdout(std::process::Stdio::piped());
    let child = run.cmd.spawn().unwrap();
    let pid = child.id();
    let out = child.wait_with_output().unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), pid.to_string());
}

#[test]
fn usage_errors_exit_125() {
    let t = Test::new();
    t.run(&["--bogus"])
        .status(125)
        .stderr("envrun: error: unexpected argument '--bogus' found\nenvrun: hint: to pass '--bogus' as a value, use '-- --bogus'\n");
    t.run(&["secrets", "sett", "x"])
        .status(125)
        .stderr_has("envrun: error: unrecognized subcommand 'sett'\nenvrun: hint: ");
    t.run(&["secrets"])
        .status(125)
        .stderr_has("Usage: envrun secrets");
    t.run(&[])
        .status(125)
        .stderr_has("required arguments were not provided");
    t.run(&["--help"]).status(0).stdout_has("Exit status");
    t.run(&["--version"]).status(0).stdout_has("envrun ");
}

#[test]
fn malformed_yaml_reports_line_and_column() {
    let t = Test::new().manifest("environment:\n  A: \"ok\"\n  B: [unclosed\n");
    t.run(&["--", "true"])
        .status(125)
        .stderr_has("line 3 column")
        .stderr_has("envrun.yaml");
    let t = Test::new().manifest("environment:\n  A: b\nenviron: {}\n");
    t.run(&["--", "true"]).status(125).stderr_has(
        "line 3 column 1: unknown key `environ` at the top level; did you mean `environment`? (allowed here: tenant, timeout, secrets, backends, environment, rotation, audit, watch)",
    );
    let t = Test::new().manifest("secrets:\n  type: local\n  pth: x\n");
    t.run(&["--", "true"])
        .status(125)
        .stderr_has("line 3 column 3: unknown key `pth` under `secrets`; did you mean `path`?");
}

#[test]
fn explicit_manifest_that_does_not_exist_is_an_error() {
    Test::new()
        .run(&["-m", "nope.yaml", "--", "true"])
        .status(125)
        .stderr_has("manifest")
        .stderr_has("nope.yaml not found");
}

fn flip_bit(path: &std::path::Path, bit: usize) {
    let mut data = std::fs::read(path).unwrap();
    data[bit / 8] ^= 1 << (bit % 8);
    std::fs::write(path, data).unwrap();
}

#[test]
fn tampered_store_is_a_clear_error_for_one_flipped_bit_anywhere() {
    let t = Test::new()
        .secret("T", CANARY)
        .manifest("environment:\n  T: secret:T\n");
    let store = t.path("secrets.json.enc");
    let len = std::fs::metadata(&store).unwrap().len() as usize;
    // One bit in every byte (a different bit position each time): header, nonce, body, tag.
    for byte in 0..len {
        let bit = byte * 8 + byte % 8;
        flip_bit(&store, bit);
        let out = t
            .run(&["--", "true"])
            .status(125)
            .stdout("")
            .never_shows(CANARY);
        let err = out.stderr_str();
        assert!(
            err.contains("is corrupted or the key is wrong")
                || err.contains("is not an envrun store")
                || err.contains("newer than this envrun"),
            "byte {byte}: {err}"
        );
        assert!(!err.contains("panicked"), "{err}");
        flip_bit(&store, bit);
    }
    t.run(&["--", "sh", "-c", "test -n \"$T\""]).status(0);
}

#[test]
fn wrong_key_is_a_clear_error() {
    let t = Test::new()
        .secret("T", CANARY)
        .manifest("environment:\n  T: secret:T\n");
    let other = Test::new().secret("X", "y");
    std::fs::copy(other.path("secrets.key"), t.path("secrets.key")).unwrap();
    t.run(&["--", "true"])
        .status(125)
        .stderr_has("secrets.json.enc is corrupted or the key is wrong")
        .stderr_has("hint: check that the key matches this store")
        .never_shows(CANARY);
}

#[test]
fn key_file_readable_by_others_is_refused() {
    let t = Test::new()
        .secret("T", "v")
        .manifest("environment:\n  T: secret:T\n")
        .chmod("secrets.key", 0o644);
    t.run(&["--", "true"])
        .status(125)
        .stderr_has("secrets.key has mode 0644; it must not be accessible by group or others")
        .stderr_has("chmod 600");
}

#[test]
fn bad_key_text_and_missing_files_are_clear_errors() {
    let t = Test::new().manifest("environment:\n  T: secret:T\n");
    t.run(&["--", "true"])
        .status(125)
        .stderr_has("key file")
        .stderr_has("secrets.key not found");
    let t = t
        .file("secrets.key", "not base64!\n")
        .chmod("secrets.key", 0o600);
    t.run(&["--", "true"])
        .status(125)
        .stderr_has("is not a valid key");
    let t = Test::new()
        .secret("Q", "q")
        .manifest("environment:\n  T: secret:T\n");
    std::fs::remove_file(t.path("secrets.json.enc")).unwrap();
    t.run(&["--", "true"])
        .status(125)
        .stderr_has("secrets.json.enc not found");
}

/// The value must not appear in anything envrun prints, on any error path, with full
/// backtraces on.
#[test]
fn canary_never_appears_in_envrun_output() {
    let t = Test::new()
        .secret("C", CANARY)
        .secret("J", &format!(r#"{{"inner":"{CANARY}"}}"#));
    let cases: &[&str] = &[
        "environment:\n  A: secret:C\n  B: secret:MISSING\n",
        "environment:\n  A: \"secret:C#field\"\n",
        "environment:\n  A: \"secret:J#missing\"\n",
        "environment:\n  A: \"secret:C?version=1\"\n",
        "environment:\n  A: secret:C\n  B: secret@nope:C\n",
        "environment:\n  A: \"x${secret:C}y${env:UNSET_VAR_XYZ}\"\n",
        "environment:\n  A: secret:C\n  B: [broken\n",
    ];
    for yaml in cases {
        std::fs::write(t.path("envrun.yaml"), yaml).unwrap();
        t.run(&["--", "true"]).status(125).never_shows(CANARY);
    }
    // Store failures with the canary inside the store.
    let store = t.path("secrets.json.enc");
    std::fs::write(t.path("envrun.yaml"), "environment:\n  A: secret:C\n").unwrap();
    flip_bit(&store, 200);
    t.run(&["--", "true"]).status(125).never_shows(CANARY);
    flip_bit(&store, 200);
    t.run(&["--", "/nonexistent/cmd"])
        .status(127)
        .never_shows(CANARY);
    t.run(&["--", "true"]).status(0).never_shows(CANARY);
    t.run(&["secrets", "list"]).status(0).never_shows(CANARY);
}

/// Regression: a backend that fails as a whole used to hide the failures of the others
/// until the next run.
#[test]
fn every_backend_failure_is_reported_in_one_run() {
    let t = Test::new().secret("HAVE", "v1").manifest(
        "backends:\n  dev: { type: dotenv, files: [missing.env] }\nenvironment:\n  A: secret@dev:X\n  B: secret:NOPE\n  C: secret:HAVE\n",
    );
    t.run(&["--", "true"])
        .status(125)
        .stderr_has("A: secret@dev:X: backend `dev` (dotenv)")
        .stderr_has("missing.env")
        .stderr_has("B: secret:NOPE: not found in backend `default` (local)");
}
