//! Signals in supervise mode with the real binary: forwarding, PID 1 in a PID namespace,
//! reaping orphans, job control, and the child's fate when envrun is killed.

mod common;
use common::*;

use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
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

fn lines(path: &Path) -> Vec<i32> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| l.parse().unwrap())
        .collect()
}

/// Starts envrun over the signal logger; returns envrun and the log path once the child
/// has installed its handlers.
fn start_logger(t: &Test, signals: &[i32], envrun: &[&str]) -> (Child, std::path::PathBuf) {
    let log = t.path("log");
    let ready = t.path("ready");
    let stop = t.path("stop");
    let script = format!("{FIXTURES}/signal_logger.py");
    let mut args: Vec<String> = envrun.iter().map(|s| s.to_string()).collect();
    args.extend(["--".into(), "python3".into(), script]);
    for p in [&log, &ready, &stop] {
        args.push(p.display().to_string());
    }
    args.extend(signals.iter().map(|s| s.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut run = t.command(&args);
    run.cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let child = run.cmd.spawn().unwrap();
    wait_for("the child's handlers", || ready.exists());
    (child, log)
}

/// Every signal envrun takes over and forwards when another process sends it.
fn forwarded_signals() -> Vec<i32> {
    let mut v = vec![
        libc::SIGHUP,
        libc::SIGINT,
        libc::SIGQUIT,
        libc::SIGUSR1,
        libc::SIGUSR2,
        libc::SIGPIPE,
        libc::SIGALRM,
        libc::SIGTERM,
        libc::SIGSTKFLT,
        libc::SIGCONT,
        libc::SIGTSTP,
        libc::SIGURG,
        libc::SIGXCPU,
        libc::SIGXFSZ,
        libc::SIGVTALRM,
        libc::SIGPROF,
        libc::SIGWINCH,
        libc::SIGIO,
        libc::SIGPWR,
    ];
    v.extend([
        libc::SIGRTMIN(),
        libc::SIGRTMIN() + 1,
        libc::SIGRTMAX() - 1,
        libc::SIGRTMAX(),
    ]);
    v
}

#[test]
fn each_signal_sent_to_envrun_reaches_the_child_exactly_once() {
    let t = supervised();
    let signals = forwarded_signals();
    let (mut envrun, log) = start_logger(&t, &signals, &[]);
    for (i, &sig) in signals.iter().enumerate() {
        kill(envrun.id(), sig);
        wait_for(&format!("signal {sig}"), || lines(&log).len() > i);
    }
    // Time for a duplicate to show up, if envrun delivered any.
    std::thread::sleep(Duration::from_millis(200));
    std::fs::write(t.path("stop"), "").unwrap();
    let status = envrun.wait().unwrap();
    assert_eq!(lines(&log), signals);
    assert_eq!(status.code(), Some(0));
}

#[test]
fn ctrl_c_from_a_terminal_reaches_the_child_once() {
    // The terminal sends SIGINT to the whole foreground process group, envrun and the child
    // alike; envrun must not forward its copy. Run envrun in a new session on a pty and type
    // Ctrl-C into it.
    let t = supervised();
    let log = t.path("log");
    let ready = t.path("ready");
    let stop = t.path("stop");
    let logger = format!("{FIXTURES}/signal_logger.py");
    let out = Command::new("python3")
        .current_dir(t.dir.path())
        .arg(format!("{FIXTURES}/pty_ctrl_c.py"))
        .args([&ready, &stop].map(|p| p.display().to_string()))
        .args([BIN, "--", "python3", &logger])
        .args([&log, &ready, &stop].map(|p| p.display().to_string()))
        .arg(libc::SIGINT.to_string())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "0", "{out:?}");
    assert_eq!(lines(&log), vec![libc::SIGINT]);
}

#[test]
fn ctrl_z_stops_envrun_with_the_child_and_continue_resumes_both() {
    // The child keeps the default SIGTSTP action: forwarded, it stops; envrun then stops
    // itself so a shell would see the whole job stopped.
    let t = supervised();
    let (mut envrun, child) = spawn_reporting_child(&t, "exec sleep 1");
    kill(envrun.id(), libc::SIGTSTP);
    wait_for("the child to stop", || state(child) == Some('T'));
    wait_for("envrun to stop", || state(envrun.id()) == Some('T'));
    kill(envrun.id(), libc::SIGCONT);
    let status = envrun.wait().unwrap();
    assert_eq!(status.code(), Some(0), "{status:?}");
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
    // Let `exec sleep` happen: the exec must not clear the parent-death signal.
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(state(child), Some('S'));
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

fn require_root() {
    assert!(
        nix::unistd::Uid::effective().is_root(),
        "PID namespace tests need root (unshare --pid)"
    );
}

#[test]
fn as_pid_1_sigterm_reaches_the_child_and_envrun_exits_143() {
    require_root();
    let t = supervised();
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
    let mut unshare = in_pid_namespace(&t, &["--", "python3", "-c", &child])
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
        "envrun is not PID 1 in its namespace:\n{nspid}"
    );
    kill(envrun, libc::SIGTERM);
    let status = unshare.wait().unwrap();
    assert_eq!(status.code(), Some(143), "{status:?}");
    assert_eq!(std::fs::read_to_string(&log).unwrap(), "15 1\n");
}

#[test]
fn as_pid_1_orphaned_grandchildren_are_reaped() {
    require_root();
    let t = supervised();
    let script = format!("{FIXTURES}/orphans.py");
    let out = in_pid_namespace(&t, &["--", "python3", &script, "200"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "adopted_by=1 zombies=0 parent=1\n",
        "{out:?}"
    );
}
