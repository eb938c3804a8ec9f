//! Watch mode against a real OpenBao (`bao server -dev` from the test virtualenv, as in
//! `vault.rs`): a KV v2 update restarts the command with the new value (a pinned version
//! does not change), and a server that goes away keeps the command running with a warning
//! per failed reload.
#![cfg(feature = "vault")]

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::live::Live;
use common::server::{Server, free_port, http, http_get};
use common::{CANARY, Test};

use common::bao::{ROOT, bao_bin};

/// A dev-mode OpenBao on a free loopback port, root token `root`, its KV v2 `secret/`
/// mount ready.
fn start_bao() -> Server {
    let port = free_port();
    let mut cmd = Command::new(bao_bin());
    // -dev-no-store-token: dev servers started at the same time (other tests, other
    // checkouts) would otherwise race writing ~/.vault-token, and one fails to start.
    cmd.args([
        "server",
        "-dev",
        "-dev-no-store-token",
        &format!("-dev-root-token-id={ROOT}"),
        &format!("-dev-listen-address=127.0.0.1:{port}"),
    ]);
    Server::start("bao", port, cmd, |port| {
        http_get(port, "/v1/sys/health").is_some_and(|(status, _)| status == 200)
            && http(
                port,
                "GET",
                "/v1/secret/config",
                &[("X-Vault-Token", ROOT)],
                b"",
            )
            .is_some_and(|(status, _)| status == 200)
    })
}

/// Writes `data` as a new version of the KV v2 secret `secret/PATH`.
fn put(bao: &Server, path: &str, data: serde_json::Value) {
    let body = serde_json::json!({ "data": data }).to_string();
    let (status, text) = http(
        bao.port,
        "POST",
        &format!("/v1/secret/data/{path}"),
        &[("X-Vault-Token", ROOT)],
        body.as_bytes(),
    )
    .expect("OpenBao answers");
    assert!((200..300).contains(&status), "{status} {text}");
}

fn value(generation: &str) -> String {
    format!("{generation}:tok-{CANARY}")
}

/// A test directory whose default backend is `bao`, with none of the developer's own
/// Vault settings.
fn vault_test(bao: &Server, environment: &str) -> Test {
    let mut t = Test::new();
    for var in [
        "VAULT_ADDR",
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
        .env("VAULT_TOKEN", ROOT)
        .manifest(&format!(
            "secrets:\n  type: vault\n  address: {}\nenvironment:\n{environment}",
            bao.url()
        ))
}

/// Prints the generation of TOKEN and PINNED, its PID and TOKEN itself (masked), every
/// 100 ms.
const CHILD: &str = r#"echo "start gen=${TOKEN%%:*} pinned=${PINNED%%:*} pid=$$ raw=$TOKEN"
while :; do echo "tick gen=${TOKEN%%:*} pid=$$ raw=$TOKEN"; sleep 0.1; done"#;

fn change_lines(err: &str) -> Vec<&str> {
    err.lines()
        .filter(|l| l.starts_with("envrun:") && l.contains("changed"))
        .collect()
}

#[test]
fn a_kv2_update_restarts_the_command_with_the_new_value() {
    let bao = start_bao();
    put(&bao, "app", serde_json::json!({ "token": value("g1") }));
    let t = vault_test(
        &bao,
        "  TOKEN: secret:app#token\n  PINNED: secret:app?version=1#token\n",
    );
    let live = Live::start(&t, &["--watch", "1s", "--", "sh", "-c", CHILD]);
    live.wait_stdout("the first child", |o| o.contains("start gen=g1"));
    put(&bao, "app", serde_json::json!({ "token": value("g2") }));
    let written = Instant::now();
    live.wait_stdout("the restarted child", |o| o.contains("start gen=g2"));
    let took = written.elapsed();
    live.wait_stdout("the new child's output", |o| {
        o.matches("tick gen=g2").count() >= 3
    });
    live.signal(libc::SIGTERM);
    let (_, out, err) = live.finish();
    eprintln!("from the KV v2 write to the new child's first line: {took:?}");
    assert!(took < Duration::from_secs(2), "took {took:?}\n{err}");
    // The new child has the new version, and the pinned reference still version 1.
    assert!(out.contains("start gen=g2 pinned=g1 "), "{out}");
    let after = &out[out.find("start gen=g2").unwrap()..];
    assert!(
        !after.contains("gen=g1 "),
        "the old value reappeared:\n{out}"
    );
    let changes = change_lines(&err);
    assert_eq!(changes.len(), 1, "{err}");
    assert!(
        changes[0].contains("TOKEN") && !changes[0].contains("PINNED"),
        "{err}"
    );
    assert!(out.lines().all(|l| l.ends_with("raw=***")), "{out}");
    assert!(!out.contains(CANARY) && !err.contains(CANARY));
}

#[test]
fn an_unreachable_server_keeps_the_command_and_warns_per_reload() {
    let mut bao = start_bao();
    put(&bao, "app", serde_json::json!({ "token": value("g1") }));
    let t = vault_test(&bao, "  TOKEN: secret:app#token\n");
    let live = Live::start(
        &t,
        &["--watch", "1s", "--timeout", "1s", "--", "sh", "-c", CHILD],
    );
    let out = live.wait_stdout("the child", |o| o.contains("start gen=g1"));
    let pid = out
        .split("pid=")
        .nth(1)
        .unwrap()
        .split(' ')
        .next()
        .unwrap()
        .to_owned();
    bao.stop();
    let err = live.wait_stderr("two failed reloads", |e| {
        e.matches("reload failed").count() >= 2
    });
    let ticks = live.stdout().matches("tick gen=g1").count();
    live.wait_stdout("the child still printing", |o| {
        o.matches("tick gen=g1").count() >= ticks + 3
    });
    live.signal(libc::SIGTERM);
    let (_, out, _) = live.finish();
    let failures: Vec<&str> = err
        .lines()
        .filter(|l| l.contains("reload failed"))
        .collect();
    assert!(failures.iter().all(|l| l.contains("TOKEN")), "{err}");
    assert!(change_lines(&err).is_empty(), "{err}");
    assert_eq!(out.matches("start ").count(), 1, "{out}");
    assert!(
        out.lines().all(|l| l.contains(&format!("pid={pid} "))),
        "the child changed:\n{out}"
    );
    assert!(!out.contains(CANARY) && !err.contains(CANARY));
}
