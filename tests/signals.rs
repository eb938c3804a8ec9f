//! Signals in supervise mode with the real binary: PID 1 in a PID namespace (with and
//! without masking), reaping orphans, job control, and the child's fate when envrun is
//! killed. The forwarding matrix, in pipe and pty modes, is in `pty.rs`.

mod common;
use common::*;

use std::os::unix::process::ExitStatusExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");

/// A test directory whose manifest makes TOKEN secret, so envrun supervises.
fn supervised() -> Test {
    Test::new()
        .file("token.txt", &format!("tok-{CANARY}"))
        .manifest("environment:\n  TOKEN: file:token.txt\n")
}

fn wait_for(what: &str, mut ready: impl FnMut() -> bool) {
    let started = Instant::now();
    while !ready() {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn kill(pid: u32, signo: i32) {
    // kill(1) takes real-time signal numbers, which nix's Signal cannot name.
    let rc = std::process::Command::new("kill")
        .args([format!("-{signo}"), pid.to_string()])
        .status()
        .unwrap();
    assert!(rc.success(), "kill -{signo} {pid}");
}

#[test]
fn ctrl_z_stops_envrun_with_the_child_and_continue_resumes_both() {
    // The child keeps the default SIGTSTP action: forwarded, it stops; envrun then stops
    // itself so a shell would see the whole job stopped.
    let t = supervised();
    let (mut envrun, child) = spawn_reporting_child(&t, "exec sleep 60");
    wait_for("the exec", || comm(child).as_deref() == Some("sleep"));
    kill(envrun.id(), libc::SIGTSTP);
    wait_for("the child to stop", || state(child) == Some('T'));
    wait_for("envrun to stop", || state(envrun.id()) == Some('T'));
    kill(envrun.id(), libc::SIGCONT);
    wait_for("the child to continue", || state(child) == Some('S'));
    wait_for("envrun to continue", || state(envrun.id()) == Some('S'));
    kill(envrun.id(), libc::SIGTERM);
    let status = envrun.wait().unwrap();
    assert_eq!(status.signal(), Some(libc::SIGTERM), "{status:?}");
}

/// The command name in /proc/PID/comm (changes on exec).
fn comm(pid: u32) -> Option<String> {
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
    Some(comm.trim_end().to_owned())
}

/// Starts envrun with a shell child that writes its PID to `child.pid` and then runs
/// `then`; returns envrun and the child's PID.
fn spawn_reporting_child(t: &Test, then: &str) -> (std::process::Child, u32) {
    let script = format!("echo $$ > child.pid; {then}");
    let mut run = t.command(&["--", "sh", "-c", &script]);
    run.cmd.stdout(Stdio::null()).stderr(Stdio::null());
    let envrun = run.cmd.spawn().unwrap();
    wait_for("the child", || {
        std::fs::read_to_string(t.path("child.pid")).is_ok_and(|s| s.ends_with('\n'))
    });
    let child = std::fs::read_to_string(t.path("child.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    (envrun, child)
}

/// The state letter in /proc/PID/stat (R, S, T, Z, ...), or None when gone.
fn state(pid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat[stat.rfind(')')? + 2..].chars().next()
}

#[test]
fn kill_9_of_envrun_takes_the_child_with_it() {
    let t = supervised();
    let (mut envrun, child) = spawn_reporting_child(&t, "exec sleep 60");
    // After `exec sleep`: the exec must not clear the parent-death signal.
    wait_for("the exec", || comm(child).as_deref() == Some("sleep"));
    envrun.kill().unwrap();
    let status = envrun.wait().unwrap();
    assert_eq!(status.signal(), Some(libc::SIGKILL));
    let killed = Instant::now();
    // Dead means gone, or a zombie waiting for whoever adopted it.
    while !matches!(state(child), None | Some('Z')) {
        assert!(
            killed.elapsed() < Duration::from_secs(1),
            "the child outlived envrun by a second"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn orphaned_grandchildren_are_reaped_by_envrun_as_subreaper() {
    let t = supervised();
    let script = format!("{FIXTURES}/orphans.py");
    let mut run = t.command(&["--", "python3", &script, "200"]);
    run.cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let envrun = run.cmd.spawn().unwrap();
    let pid = envrun.id();
    let out = envrun.wait_with_output().unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("adopted_by={pid} zombies=0 parent={pid}\n"),
        "{out:?}"
    );
}

/// `unshare --pid --fork --mount-proc envrun ARGS`: envrun is PID 1 of a new namespace.
fn in_pid_namespace(t: &Test, args: &[&str]) -> Command {
    let mut cmd = Command::new("unshare");
    cmd.args(["--pid", "--fork", "--mount-proc", BIN])
        .args(args)
        .current_dir(t.dir.path());
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("ENVRUN_") {
            cmd.env_remove(&k);
        }
    }
    cmd
}

/// PID namespaces need root; without it the test is skipped, saying so.
fn root_or_skip(test: &str) -> bool {
    let root = nix::unistd::Uid::effective().is_root();
    if !root {
        eprintln!("skipped {test}: needs root for unshare --pid");
    }
    root && tools_or_skip(test, &["unshare", "python3"])
}

/// The three ways envrun can be a container's init: masking a secret, with nothing secret,
/// and with masking off. In all three it must stay as init, not exec.
fn pid_1_setups() -> Vec<(&'static str, Test, Vec<&'static str>)> {
    vec![
        ("a secret, masked", supervised(), vec![]),
        (
            "nothing secret",
            Test::new().manifest("environment:\n  LEVEL: info\n"),
            vec![],
        ),
        ("--no-mask", supervised(), vec!["--no-mask"]),
    ]
}

#[test]
fn as_pid_1_sigterm_reaches_the_child_and_envrun_exits_143() {
    if !root_or_skip("as_pid_1_sigterm_reaches_the_child_and_envrun_exits_143") {
        return;
    }
    for (what, t, opts) in pid_1_setups() {
        let log = t.path("log");
        let ready = t.path("ready");
        // The child records SIGTERM, then dies by it (default action restored and re-raised).
        let child = format!(
            "import os, signal, time\n\
             def h(n, f):\n\
             \x20   open({log:?}, 'a').write('%d %d\\n' % (n, os.getppid()))\n\
             \x20   signal.signal(n, signal.SIG_DFL); os.kill(os.getpid(), n)\n\
             signal.signal(signal.SIGTERM, h)\n\
             open({ready:?}, 'w').close()\n\
             time.sleep(30)\n",
            log = log.display().to_string(),
            ready = ready.display().to_string(),
        );
        let mut args = opts.clone();
        args.extend(["--", "python3", "-c", &child]);
        let mut unshare = in_pid_namespace(&t, &args)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        wait_for("the child", || ready.exists());
        let children = format!("/proc/{0}/task/{0}/children", unshare.id());
        let envrun: u32 = std::fs::read_to_string(children)
            .unwrap()
            .split_whitespace()
            .next()
            .expect("unshare's child")
            .parse()
            .unwrap();
        let nspid = std::fs::read_to_string(format!("/proc/{envrun}/status")).unwrap();
        assert!(
            nspid
                .lines()
                .any(|l| l.starts_with("NSpid:") && l.ends_with("\t1")),
            "{what}: envrun is not PID 1 in its namespace:\n{nspid}"
        );
        assert_eq!(
            comm(envrun).as_deref(),
            Some("envrun"),
            "{what}: envrun exec'd"
        );
        kill(envrun, libc::SIGTERM);
        let status = unshare.wait().unwrap();
        assert_eq!(status.code(), Some(143), "{what}: {status:?}");
        assert_eq!(std::fs::read_to_string(&log).unwrap(), "15 1\n", "{what}");
    }
}

#[test]
fn as_pid_1_orphaned_grandchildren_are_reaped() {
    if !root_or_skip("as_pid_1_orphaned_grandchildren_are_reaped") {
        return;
    }
    let script = format!("{FIXTURES}/orphans.py");
    for (what, t, opts) in pid_1_setups() {
        let mut args = opts.clone();
        args.extend(["--", "python3", &script, "200"]);
        let out = in_pid_namespace(&t, &args).output().unwrap();
        assert!(out.status.success(), "{what}: {out:?}");
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            "adopted_by=1 zombies=0 parent=1\n",
            "{what}: {out:?}"
        );
    }
}

#[test]
fn the_issue_reproduction_no_mask_pid_1_ends_on_sigterm() {
    // `unshare --pid --fork --mount-proc envrun --no-mask -- sh -c '(sleep .2 &); exec
    // sleep 30'`, then SIGTERM to the namespace's PID 1: it used to live on (exec'd sleep).
    if !root_or_skip("the_issue_reproduction_no_mask_pid_1_ends_on_sigterm") {
        return;
    }
    let t = Test::new();
    let mut unshare = in_pid_namespace(
        &t,
        &[
            "--no-mask",
            "--",
            "sh",
            "-c",
            "(sleep .2 &); echo $$ > started; exec sleep 30",
        ],
    )
    .spawn()
    .unwrap();
    wait_for("the child", || {
        std::fs::read_to_string(t.path("started")).is_ok_and(|s| s.ends_with('\n'))
    });
    let children = format!("/proc/{0}/task/{0}/children", unshare.id());
    let init: u32 = std::fs::read_to_string(children)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap();
    kill(init, libc::SIGTERM);
    let started = Instant::now();
    let status = unshare.wait().unwrap();
    assert!(started.elapsed() < Duration::from_secs(2));
    assert_eq!(status.code(), Some(143), "{status:?}");
}

#[test]
fn as_pid_1_without_masking_the_child_inherits_envruns_stdio() {
    // No pipes: the child's stdout is the very file envrun's stdout is.
    if !root_or_skip("as_pid_1_without_masking_the_child_inherits_envruns_stdio") {
        return;
    }
    let t = supervised();
    let out = std::fs::File::create(t.path("out.txt")).unwrap();
    let status = in_pid_namespace(
        &t,
        &[
            "--no-mask",
            "--",
            "sh",
            "-c",
            "readlink /proc/self/fd/1; echo ppid=$PPID",
        ],
    )
    .stdout(out)
    .status()
    .unwrap();
    assert!(status.success(), "{status:?}");
    let shown = std::fs::read_to_string(t.path("out.txt")).unwrap();
    assert_eq!(
        shown,
        format!("{}\nppid=1\n", t.path("out.txt").display()),
        "the child's stdout is not envrun's own file, or envrun is not its parent"
    );
}
