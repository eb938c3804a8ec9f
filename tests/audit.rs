//! The audit log: one JSON line per run, on the real binary.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{BIN, CANARY, Test, exists};
use serde_json::Value;

fn lines(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad line ({e}): {l}")))
        .collect()
}

/// A test whose manifest asks for an audit log and has one secret, the canary.
fn audited(extra: &str) -> Test {
    Test::new()
        .manifest(&format!(
            "audit:\n  path: audit.log\n{extra}environment:\n  TOKEN: secret:TOKEN\n  MODE: fast\n"
        ))
        .secret("TOKEN", CANARY)
}

#[test]
fn a_run_appends_one_line_with_names_never_values() {
    let t = audited("");
    t.run(&["--", "sh", "-c", "echo $TOKEN; exit 3"])
        .status(3)
        .never_shows(CANARY);
    let log = t.path("audit.log");
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(!text.contains(CANARY), "{text}");
    let records = lines(&log);
    assert_eq!(records.len(), 1);
    let r = &records[0];
    assert_eq!(r["event"], "run");
    assert_eq!(r["command"], serde_json::json!(["sh"]));
    assert_eq!(
        r["outcome"],
        serde_json::json!({"result": "exited", "code": 3})
    );
    assert_eq!(
        r["uid"].as_u64(),
        Some(u64::from(nix::unistd::getuid().as_raw()))
    );
    assert!(r["host"].is_string() && r["pid"].is_u64() && r["time"].is_string());
    humantime::parse_rfc3339_weak(r["time"].as_str().unwrap()).unwrap();
    assert_eq!(
        r["cwd"].as_str().unwrap(),
        std::fs::canonicalize(t.dir.path())
            .unwrap()
            .to_str()
            .unwrap()
    );
    assert!(r["manifest"].as_str().unwrap().ends_with("envrun.yaml"));
    let vars = r["variables"].as_array().unwrap();
    assert_eq!(vars.len(), 2);
    assert_eq!(
        vars[1],
        serde_json::json!({"name": "TOKEN", "refs": [{"type": "secret", "backend": "default", "key": "TOKEN"}]})
    );
    let mode = std::fs::metadata(&log).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
}

#[test]
fn signal_deaths_resolution_errors_and_exec_are_recorded() {
    let t = audited("");
    t.run(&["--", "sh", "-c", "kill -TERM $$"]);
    t.run(&["--no-mask", "--", "true"]).status(0);
    let bad = Test::new().manifest("audit:\n  path: audit.log\nenvironment:\n  A: secret:NOPE\n");
    bad.run(&["--", "sh", "-c", "touch marker"]).status(125);
    assert!(!exists(&bad.path("marker")));
    let records = lines(&t.path("audit.log"));
    assert_eq!(
        records[0]["outcome"],
        serde_json::json!({"result": "signaled", "signal": 15, "name": "SIGTERM"})
    );
    assert_eq!(records[1]["outcome"], serde_json::json!({"result": "exec"}));
    let failed = lines(&bad.path("audit.log"));
    assert_eq!(failed[0]["outcome"]["result"], "not-started");
    assert!(
        failed[0]["outcome"]["error"]
            .as_str()
            .unwrap()
            .contains("secret:NOPE")
    );
}

#[test]
fn argv_is_recorded_only_when_asked() {
    let t = audited("");
    t.run(&["--", "echo", "--password=hunter2"]).status(0);
    assert_eq!(
        lines(&t.path("audit.log"))[0]["command"],
        serde_json::json!(["echo"])
    );
    let t = audited("  argv: true\n");
    t.run(&["--", "echo", "a b"]).status(0);
    assert_eq!(
        lines(&t.path("audit.log"))[0]["command"],
        serde_json::json!(["echo", "a b"])
    );
}

#[test]
fn eight_concurrent_runs_append_eight_whole_lines() {
    let t = Test::new()
        .manifest("environment:\n  TOKEN: secret:TOKEN\n")
        .secret("TOKEN", CANARY);
    let log = t.path("shared.log");
    let children: Vec<_> = (0..8)
        .map(|i| {
            let mut run = t.command(&["--audit-log", log.to_str().unwrap(), "--", "sh", "-c"]);
            run.cmd.arg(format!("exit {i}"));
            run.cmd
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::piped());
            run.cmd.spawn().unwrap()
        })
        .collect();
    for (i, child) in children.into_iter().enumerate() {
        let out = child.wait_with_output().unwrap();
        assert_eq!(out.status.code(), Some(i as i32), "{out:?}");
    }
    let records = lines(&log);
    assert_eq!(records.len(), 8);
    let mut codes: Vec<i64> = records
        .iter()
        .map(|r| r["outcome"]["code"].as_i64().unwrap())
        .collect();
    codes.sort();
    assert_eq!(codes, (0..8).collect::<Vec<_>>());
    assert!(!std::fs::read_to_string(&log).unwrap().contains(CANARY));
}

/// Runs envrun with `args` in `t`, where `dir` (inside the test directory) cannot be
/// written: a read-only mount in a private mount namespace when running as root (root
/// writes through file modes), else a directory of mode 0555.
fn run_with_read_only(t: &Test, dir: &str, args: &[&str]) -> common::Done {
    let ro = t.path(dir);
    std::fs::create_dir_all(&ro).unwrap();
    if nix::unistd::getuid().is_root() {
        let unshare = common::debian_tool("unshare", "util-linux");
        let script = "mount -t tmpfs -o ro envrun-test \"$1\" && shift && exec \"$@\"";
        let mut run = t.command(&[]);
        run.cmd = {
            let mut c = Command::new(unshare);
            c.args(["-m", "sh", "-c", script, "sh"])
                .arg(&ro)
                .arg(BIN)
                .args(args)
                .current_dir(t.dir.path());
            for (k, _) in std::env::vars_os() {
                if k.to_string_lossy().starts_with("ENVRUN_") {
                    c.env_remove(&k);
                }
            }
            c
        };
        run.done()
    } else {
        std::fs::set_permissions(&ro, std::fs::Permissions::from_mode(0o555)).unwrap();
        t.run(args)
    }
}

#[test]
fn a_read_only_audit_path_fails_the_run_closed() {
    let t = Test::new()
        .manifest("audit:\n  path: ro/audit.log\nenvironment:\n  A: b\n")
        .mkdir("ro");
    let out = run_with_read_only(&t, "ro", &["--", "sh", "-c", "touch marker"]);
    out.status(125)
        .stderr_has("cannot open the audit log")
        .stderr_has("ro/audit.log")
        .stderr_has("audit: {required: false}");
    assert!(!exists(&t.path("marker")));
    // --audit-log too.
    let t = Test::new().mkdir("ro");
    let out = run_with_read_only(
        &t,
        "ro",
        &["--audit-log", "ro/x.log", "--", "sh", "-c", "touch marker"],
    );
    out.status(125).stderr_has("cannot open the audit log");
    assert!(!exists(&t.path("marker")));
}

#[test]
fn required_false_warns_and_runs() {
    let t = Test::new()
        .manifest("audit:\n  path: ro/audit.log\n  required: false\nenvironment:\n  A: b\n")
        .mkdir("ro");
    let out = run_with_read_only(&t, "ro", &["--", "sh", "-c", "touch marker"]);
    out.status(0)
        .stderr_has("warning: cannot open the audit log")
        .stderr_has("running without it");
    assert!(exists(&t.path("marker")));
}

#[test]
fn the_environment_variable_and_the_manifest_both_get_the_record() {
    let t = audited("");
    let other = t.path("env.log");
    t.command(&["--", "true"])
        .env_pass("ENVRUN_AUDIT_LOG", other.to_str().unwrap())
        .done()
        .status(0);
    assert_eq!(lines(&other).len(), 1);
    assert_eq!(lines(&t.path("audit.log")).len(), 1);
    // A dry run starts nothing, so it records nothing.
    t.run(&["--dry-run", "--", "true"]).status(0);
    assert_eq!(lines(&t.path("audit.log")).len(), 1);
}

#[test]
fn syslog_gets_one_datagram_per_run() {
    let t = Test::new()
        .manifest("environment:\n  TOKEN: secret:TOKEN\n")
        .secret("TOKEN", CANARY);
    let socket = t.path("log.sock");
    let listener = UnixDatagram::bind(&socket).unwrap();
    listener
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    t.command(&["--audit-log", "syslog", "--", "true"])
        .env_pass("ENVRUN_SYSLOG_SOCKET", socket.to_str().unwrap())
        .done()
        .status(0);
    let mut buf = vec![0u8; 65536];
    let n = listener.recv(&mut buf).unwrap();
    let msg = String::from_utf8(buf[..n].to_vec()).unwrap();
    assert!(msg.starts_with("<86>envrun["), "{msg}");
    assert!(!msg.contains(CANARY));
    let json: Value = serde_json::from_str(&msg[msg.find('{').unwrap()..]).unwrap();
    assert_eq!(json["variables"][0]["name"], "TOKEN");
    // No syslog listening: the run fails closed.
    t.command(&["--audit-log", "syslog", "--", "sh", "-c", "touch marker"])
        .env_pass(
            "ENVRUN_SYSLOG_SOCKET",
            t.path("none.sock").to_str().unwrap(),
        )
        .done()
        .status(125)
        .stderr_has("audit log syslog");
    assert!(!exists(&t.path("marker")));
}
