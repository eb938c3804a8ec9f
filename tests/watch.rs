//! Watch mode with the real binary: a secret changed in the local store while the command
//! runs (`envrun secrets set`, `secrets delete`), and what envrun does about it: restart,
//! signal, exit, keep the child on a failed reload, SIGHUP as a reload, stop signal and
//! timeout, the manifest's `watch:` block, and a canary in rotated values never shown.
//!
//! The children print which generation of the value they hold (`g1:...`: the text before
//! the first `:`, which is not secret) and the value itself (which must show masked), so the
//! test reads which value a child has without unmasking anything. Every wait is for output
//! to appear or a file to be opened (with a deadline), never a fixed sleep.

mod common;
use common::live::{DEADLINE, Live, Opens};
use common::*;

use std::time::{Duration, Instant};

/// The secret's value of generation `generation`, the canary inside.
fn value(generation: &str) -> String {
    format!("{generation}:tok-{CANARY}")
}

/// Stores `value` as `name` in the test's local store while envrun runs.
fn store(t: &Test, name: &str, value: &str) {
    t.command(&["secrets", "set", name])
        .stdin_bytes(value.as_bytes())
        .done()
        .status(0);
}

/// A test directory with TOKEN (generation g1) in the local store, and a `file:` variable
/// TICK whose opens show each reload.
fn watched() -> Test {
    Test::new()
        .secret("TOKEN", &value("g1"))
        .file("tick.txt", "tick-file-value")
        .manifest("environment:\n  TOKEN: secret:TOKEN\n  TICK: file:tick.txt\n")
}

/// A shell child: one `start` line, then a `tick` line every 100 ms, each with the
/// generation of TOKEN, the shell's PID and TOKEN itself (masked by envrun).
const CHILD: &str = r#"echo "start gen=${TOKEN%%:*} pid=$$ raw=$TOKEN"
while :; do echo "tick gen=${TOKEN%%:*} pid=$$ raw=$TOKEN"; sleep 0.1; done"#;

/// One line a child printed: `KIND gen=G pid=P raw=R`.
#[derive(Debug, Clone, PartialEq)]
struct Line {
    kind: String,
    generation: String,
    pid: u32,
    raw: String,
}

/// The value of `key=` in a line of space-separated `key=value` words.
fn field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    line.split(' ')
        .find_map(|w| w.strip_prefix(key)?.strip_prefix('='))
}

/// The children's `start`/`tick` lines, in order.
fn lines(out: &str) -> Vec<Line> {
    out.lines()
        .filter_map(|l| {
            Some(Line {
                kind: l.split(' ').next()?.to_owned(),
                generation: field(l, "gen")?.to_owned(),
                pid: field(l, "pid")?.parse().ok()?,
                raw: field(l, "raw")?.to_owned(),
            })
        })
        .collect()
}

fn count(text: &str, needle: &str) -> usize {
    text.matches(needle).count()
}

/// envrun's lines that report a change (`envrun: NAME changed; ...`).
fn change_lines(err: &str) -> Vec<&str> {
    err.lines()
        .filter(|l| l.starts_with("envrun:") && l.contains("changed"))
        .collect()
}

/// Checks what every test expects of the output: every value the children printed was
/// masked, and nothing shows the canary.
fn all_masked(out: &str, err: &str) {
    for l in lines(out) {
        assert_eq!(l.raw, "***", "a value was not masked: {l:?}\n{out}");
    }
    for (what, text) in [("stdout", out), ("stderr", err)] {
        assert!(!text.contains(CANARY), "{what} shows the canary:\n{text}");
    }
}

/// The state letter of /proc/PID/stat, or None once the process is gone.
fn state(pid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat[stat.rfind(')')? + 2..].chars().next()
}

#[test]
fn a_changed_value_restarts_the_command_within_two_intervals() {
    let t = watched();
    let live = Live::start(&t, &["--watch", "1s", "--", "sh", "-c", CHILD]);
    live.wait_stdout("the first child", |o| o.contains("start gen=g1"));
    store(&t, "TOKEN", &value("g2"));
    let stored = Instant::now();
    live.wait_stdout("the restarted child", |o| o.contains("start gen=g2"));
    let took = stored.elapsed();
    live.wait_stdout("the new child's output", |o| count(o, "tick gen=g2") >= 5);
    live.signal(libc::SIGTERM);
    let (status, out, err) = live.finish();
    eprintln!("from `secrets set` to the new child's first line: {took:?}");
    assert!(
        took < Duration::from_secs(2),
        "the restart took {took:?}, more than 2 intervals"
    );

    // The old value never reappears once the new child has started, and each generation
    // is one process: one restart, no second old child.
    let all = lines(&out);
    let first_new = all.iter().position(|l| l.generation == "g2").unwrap();
    assert!(
        all[..first_new].iter().all(|l| l.generation == "g1"),
        "{out}"
    );
    assert!(
        all[first_new..].iter().all(|l| l.generation == "g2"),
        "the old value reappeared after the restart:\n{out}"
    );
    let pids = |g: &str| {
        let mut p: Vec<u32> = all
            .iter()
            .filter(|l| l.generation == g)
            .map(|l| l.pid)
            .collect();
        p.dedup();
        p
    };
    assert_eq!(pids("g1").len(), 1, "{out}");
    assert_eq!(pids("g2").len(), 1, "{out}");
    assert_ne!(pids("g1"), pids("g2"));
    assert_eq!(count(&out, "start "), 2, "{out}");

    // One line names what changed (TOKEN, not the unchanged TICK), never a value.
    let changes = change_lines(&err);
    assert_eq!(changes.len(), 1, "{err}");
    assert!(changes[0].contains("TOKEN"), "{err}");
    assert!(changes[0].contains("restart"), "{err}");
    assert!(!changes[0].contains("TICK"), "{err}");
    all_masked(&out, &err);
    // SIGTERM went to the child, which died of it; envrun ends the same way.
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(libc::SIGTERM),
        "{status:?}\n{err}"
    );
}

/// A Python child that counts deliveries of the signal `argv[1]` at the C level (Python's
/// wakeup fd: one byte per delivery, so two deliveries cannot merge into one handler run)
/// and after each prints the count, its PID, the generation of TOKEN in its environment and
/// of the content of the file KEYFILE names, that content (masked by envrun) and the path.
const SIGNALED: &str = r#"
import os, select, signal, sys
signo = int(sys.argv[1])
r, w = os.pipe()
os.set_blocking(w, False)
signal.set_wakeup_fd(w, warn_on_full_buffer=False)
signal.signal(signo, lambda *_: None)
n = 0
def show(kind):
    path = os.environ["KEYFILE"]
    with open(path) as f:
        content = f.read()
    env = os.environ["TOKEN"].split(":")[0]
    print(f"{kind} n={n} pid={os.getpid()} env={env} gen={content.split(':')[0]} raw={content} path={path}", flush=True)
show("start")
while True:
    select.select([r], [], [])
    for s in os.read(r, 4096):
        if s == signo:
            n += 1
            show("sig")
"#;

/// `--on-change ACTION` with a [`SIGNALED`] child counting `signo`: three changes, each
/// followed by exactly one signal, after which the file already has the new value.
fn one_signal_per_change(action: &str, signo: i32) {
    let t = watched().manifest(
        "environment:\n  TOKEN: secret:TOKEN\n  KEYFILE: as_file:secret:TOKEN\n  TICK: file:tick.txt\n",
    );
    let mut opens = Opens::watch(&t.path("tick.txt"));
    let signo_arg = signo.to_string();
    let live = Live::start(
        &t,
        &[
            "--watch",
            "1s",
            "--on-change",
            action,
            "--",
            "python3",
            "-c",
            SIGNALED,
            &signo_arg,
        ],
    );
    live.wait_stdout("the child", |o| o.contains("start n=0"));
    for (i, generation) in ["g2", "g3", "g4"].iter().enumerate() {
        store(&t, "TOKEN", &value(generation));
        let signalled = format!("sig n={} ", i + 1);
        live.wait_stdout(&format!("signal {}", i + 1), |o| o.contains(&signalled));
    }
    // Reloads that find nothing new send nothing: wait for three more reads of TICK (so
    // at least two whole reloads after the last change).
    opens.wait_more("three more reloads", 3, DEADLINE);
    live.signal(libc::SIGTERM);
    let (_, out, err) = live.finish();

    let shown: Vec<(String, String, String, String)> = out
        .lines()
        .map(|l| {
            let f = |k| field(l, k).unwrap_or("?").to_owned();
            (f("n"), f("env"), f("gen"), f("pid"))
        })
        .collect();
    let pid = shown[0].3.clone();
    let expected: Vec<(String, String, String, String)> = [
        ("0", "g1", "g1"),
        ("1", "g1", "g2"),
        ("2", "g1", "g3"),
        ("3", "g1", "g4"),
    ]
    .iter()
    .map(|(n, e, g)| (n.to_string(), e.to_string(), g.to_string(), pid.clone()))
    .collect();
    // One signal per change, the same process throughout, its environment unchanged (it
    // cannot be), and the file read through the same path showing each new value.
    assert_eq!(shown, expected, "\n{out}\n{err}");
    let paths: Vec<&str> = out.lines().filter_map(|l| field(l, "path")).collect();
    assert!(
        paths[0].starts_with("/proc/self/fd/") || paths[0].starts_with("/dev/fd/"),
        "{out}"
    );
    assert!(paths.iter().all(|p| *p == paths[0]), "{out}");
    assert!(out.lines().all(|l| field(l, "raw") == Some("***")), "{out}");
    let changes = change_lines(&err);
    assert_eq!(changes.len(), 3, "{err}");
    assert!(
        changes
            .iter()
            .all(|l| l.contains("TOKEN") && l.contains("KEYFILE") && !l.contains("TICK")),
        "{err}"
    );
    all_masked(&out, &err);
}

#[test]
fn on_change_signal_sends_one_sigusr1_per_change_and_the_file_has_the_new_value() {
    one_signal_per_change("signal:SIGUSR1", libc::SIGUSR1);
}

#[test]
fn on_change_signal_by_number_queues_one_realtime_signal_per_change() {
    // A real-time signal is queued, not merged with one still pending: a second send for
    // the same change would show as a second delivery.
    one_signal_per_change("signal:40", 40);
}

#[test]
fn a_failed_reload_keeps_the_child_and_warns_once_per_tick() {
    let t = watched();
    let live = Live::start(&t, &["--watch", "1s", "--", "sh", "-c", CHILD]);
    live.wait_stdout("the first child", |o| o.contains("start gen=g1"));
    t.command(&["secrets", "delete", "TOKEN"]).done().status(0);
    // When each of four warnings appeared: one per tick means about an interval apart.
    let mut seen = Vec::new();
    for k in 1..=4 {
        live.wait_stderr(&format!("failed reload {k}"), |e| {
            count(e, "reload failed") >= k
        });
        seen.push(Instant::now());
    }
    let span = seen[3] - seen[0];
    let err = live.stderr();
    assert!(
        span >= Duration::from_secs(2) && span <= Duration::from_millis(4500),
        "4 warnings in {span:?}, not one per 1 s tick:\n{err}"
    );
    for pair in seen.windows(2) {
        assert!(
            pair[1] - pair[0] >= Duration::from_millis(300),
            "two warnings for one tick: {seen:?}\n{err}"
        );
    }
    let failures: Vec<&str> = err
        .lines()
        .filter(|l| l.contains("reload failed"))
        .collect();
    assert!(failures.iter().all(|l| l.contains("TOKEN")), "{err}");
    // The child lives on, untouched.
    let ticks = count(&live.stdout(), "tick gen=g1");
    live.wait_stdout("the child still printing", |o| {
        count(o, "tick gen=g1") >= ticks + 3
    });
    // Once the secret is back (with a new value) the next reload restarts the command.
    store(&t, "TOKEN", &value("g2"));
    live.wait_stdout("the restarted child", |o| o.contains("start gen=g2"));
    live.signal(libc::SIGTERM);
    let (_, out, err) = live.finish();
    let all = lines(&out);
    let g1: Vec<&Line> = all.iter().filter(|l| l.generation == "g1").collect();
    assert!(g1.iter().all(|l| l.pid == g1[0].pid), "{out}");
    assert_eq!(count(&out, "start gen=g1"), 1, "{out}");
    assert_eq!(change_lines(&err).len(), 1, "{err}");
    all_masked(&out, &err);
}

#[test]
fn a_failed_reload_warning_reads_right_for_a_running_command() {
    // The startup error's hint ("the command was not started") is wrong while the command
    // runs, and the warning is one readable line (no `\n` shown as two characters).
    let t = watched();
    let live = Live::start(&t, &["--watch", "1s", "--", "sh", "-c", CHILD]);
    live.wait_stdout("the child", |o| o.contains("start gen=g1"));
    t.command(&["secrets", "delete", "TOKEN"]).done().status(0);
    live.wait_stderr("a failed reload", |e| e.contains("reload failed"));
    live.signal(libc::SIGTERM);
    let (_, _, err) = live.finish();
    let warning = err.lines().find(|l| l.contains("reload failed")).unwrap();
    assert!(warning.starts_with("envrun: warning:"), "{warning}");
    assert!(warning.contains("TOKEN"), "{warning}");
    assert!(
        !warning.contains("not started"),
        "the warning says the command was not started, but it runs: {warning}"
    );
    assert!(
        !warning.contains("\\n"),
        "an escaped newline shows: {warning}"
    );
}

#[test]
fn sighup_with_reload_on_hup_reloads_and_is_not_forwarded() {
    let t = watched();
    let mut opens = Opens::watch(&t.path("tick.txt"));
    let script = format!("trap 'echo \"got-HUP pid=$$\"' HUP\n{CHILD}");
    let live = Live::start(&t, &["--reload-on-hup", "--", "sh", "-c", &script]);
    live.wait_stdout("the first child", |o| o.contains("start gen=g1"));

    // Nothing changed: the reload happens (TICK is read again) and nothing else does.
    let before = opens.count();
    live.signal(libc::SIGHUP);
    opens.wait_past(before, "the reload on SIGHUP", DEADLINE);
    let ticks = count(&live.stdout(), "tick gen=g1");
    live.wait_stdout("the child still printing", |o| {
        count(o, "tick gen=g1") >= ticks + 3
    });

    // A change: SIGHUP restarts the command with the new value at once, no tick needed.
    store(&t, "TOKEN", &value("g2"));
    live.signal(libc::SIGHUP);
    let hup = Instant::now();
    live.wait_stdout("the restarted child", |o| o.contains("start gen=g2"));
    let took = hup.elapsed();
    live.signal(libc::SIGTERM);
    let (_, out, err) = live.finish();
    eprintln!("from SIGHUP to the new child's first line: {took:?}");
    assert!(took < Duration::from_millis(1500), "took {took:?}\n{err}");
    assert!(!out.contains("got-HUP"), "SIGHUP reached the child:\n{out}");
    assert_eq!(count(&out, "start "), 2, "{out}");
    let changes = change_lines(&err);
    assert_eq!(changes.len(), 1, "{err}");
    assert!(changes[0].contains("TOKEN"), "{err}");
    all_masked(&out, &err);
}

#[test]
fn sighup_without_reload_on_hup_is_forwarded_as_before() {
    let t = watched();
    let script = format!("trap 'echo \"got-HUP pid=$$\"; exit 3' HUP\n{CHILD}");
    // Watching (with a long interval), but SIGHUP is not a reload without the flag.
    let live = Live::start(&t, &["--watch", "1h", "--", "sh", "-c", &script]);
    live.wait_stdout("the child", |o| o.contains("start gen=g1"));
    store(&t, "TOKEN", &value("g2"));
    live.signal(libc::SIGHUP);
    let (status, out, err) = live.finish();
    assert!(out.contains("got-HUP"), "{out}\n{err}");
    assert_eq!(status.code(), Some(3), "{status:?}\n{err}");
    assert!(!out.contains("gen=g2"), "{out}");
    assert!(change_lines(&err).is_empty(), "{err}");
    all_masked(&out, &err);
}

#[test]
fn the_exit_status_after_restarts_is_the_last_childs() {
    let t = watched();
    // Generation g3 exits 7 on its own; the earlier ones run until stopped.
    let script = r#"echo "start gen=${TOKEN%%:*} pid=$$ raw=$TOKEN"
[ "${TOKEN%%:*}" = g3 ] && exit 7
while :; do sleep 0.1; done"#;
    let mut cmd = t.command(&["--", "sh", "-c", script]).cmd;
    cmd.env("ENVRUN_WATCH", "1s");
    let live = Live::spawn(cmd);
    live.wait_stdout("the first child", |o| o.contains("start gen=g1"));
    store(&t, "TOKEN", &value("g2"));
    live.wait_stdout("the second child", |o| o.contains("start gen=g2"));
    store(&t, "TOKEN", &value("g3"));
    let (status, out, err) = live.finish();
    assert_eq!(status.code(), Some(7), "{status:?}\n{out}\n{err}");
    assert_eq!(count(&out, "start "), 3, "{out}");
    assert_eq!(change_lines(&err).len(), 2, "{err}");
    all_masked(&out, &err);
}

#[test]
fn a_command_that_ends_by_itself_is_not_restarted() {
    // Watch mode restarts for a new value, not for a command that ended: envrun ends with
    // it at once, not at the next tick.
    let t = watched();
    let started = Instant::now();
    let live = Live::start(&t, &["--watch", "5s", "--", "sh", "-c", "exit 4"]);
    let (status, out, err) = live.finish();
    assert_eq!(status.code(), Some(4), "{status:?}\n{err}");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "envrun waited {:?} after its command ended",
        started.elapsed()
    );
    assert_eq!(out, "");
}

#[test]
fn on_change_exit_stops_the_child_and_exits_75() {
    let t = watched();
    let script = format!("trap 'echo \"got-TERM pid=$$\"; exit 0' TERM\n{CHILD}");
    let live = Live::start(
        &t,
        &[
            "--watch",
            "1s",
            "--on-change",
            "exit",
            "--",
            "sh",
            "-c",
            &script,
        ],
    );
    live.wait_stdout("the child", |o| o.contains("start gen=g1"));
    store(&t, "TOKEN", &value("g2"));
    let (status, out, err) = live.finish();
    assert_eq!(status.code(), Some(75), "{status:?}\n{out}\n{err}");
    assert!(
        out.contains("got-TERM"),
        "the child was not sent SIGTERM:\n{out}"
    );
    assert!(!out.contains("gen=g2"), "a new child was started:\n{out}");
    let changes = change_lines(&err);
    assert_eq!(changes.len(), 1, "{err}");
    assert!(changes[0].contains("TOKEN"), "{err}");
    all_masked(&out, &err);
}

#[test]
fn a_child_ignoring_sigterm_is_killed_after_the_stop_timeout_and_restarted() {
    let t = watched();
    let script = format!("trap '' TERM\n{CHILD}");
    let live = Live::start(
        &t,
        &[
            "--watch",
            "1s",
            "--stop-timeout",
            "1s",
            "--",
            "sh",
            "-c",
            &script,
        ],
    );
    let out = live.wait_stdout("the first child", |o| o.contains("start gen=g1"));
    let old = lines(&out)[0].pid;
    store(&t, "TOKEN", &value("g2"));
    live.wait_stderr("the change", |e| !change_lines(e).is_empty());
    let changed = Instant::now();
    live.wait_stdout("the restarted child", |o| o.contains("start gen=g2"));
    let took = changed.elapsed();
    assert!(
        matches!(state(old), None | Some('Z')),
        "the old child is still alive"
    );
    live.signal(libc::SIGKILL);
    let (_, out, err) = live.finish();
    eprintln!("from the change line to the new child's first line: {took:?}");
    assert!(
        took >= Duration::from_millis(900),
        "restarted after {took:?}: the 1 s stop timeout was not given"
    );
    assert!(took < Duration::from_secs(3), "took {took:?}\n{err}");
    // The old child's output ends before the new one's begins.
    let all = lines(&out);
    let first_new = all.iter().position(|l| l.generation == "g2").unwrap();
    assert!(
        all[first_new..].iter().all(|l| l.generation == "g2"),
        "{out}"
    );
    all_masked(&out, &err);
}

#[test]
fn the_stop_signal_is_the_one_asked_for() {
    let t = watched();
    // Ignores SIGTERM, ends on SIGUSR2: a restart faster than the 10 s default timeout
    // proves SIGUSR2 was sent.
    let script = format!("trap '' TERM\ntrap 'echo \"got-USR2 pid=$$\"; exit 0' USR2\n{CHILD}");
    let live = Live::start(
        &t,
        &[
            "--watch",
            "1s",
            "--stop-signal",
            "SIGUSR2",
            "--",
            "sh",
            "-c",
            &script,
        ],
    );
    live.wait_stdout("the first child", |o| o.contains("start gen=g1"));
    store(&t, "TOKEN", &value("g2"));
    live.wait_for_within("the restarted child", Duration::from_secs(5), |o, _| {
        o.contains("start gen=g2")
    });
    live.signal(libc::SIGKILL);
    let (_, out, err) = live.finish();
    let got = out
        .lines()
        .find(|l| l.starts_with("got-USR2"))
        .unwrap_or_else(|| panic!("the child did not get SIGUSR2:\n{out}"));
    let first = &lines(&out)[0];
    assert_eq!(field(got, "pid"), Some(first.pid.to_string().as_str()));
    all_masked(&out, &err);
}

#[test]
fn the_manifests_watch_block_works_and_the_command_line_wins() {
    let manifest = "watch:\n  interval: 1s\n  on_change: exit\nenvironment:\n  TOKEN: secret:TOKEN\n  TICK: file:tick.txt\n";
    // The manifest alone: watching, and exit on a change.
    let t = watched().manifest(manifest);
    let live = Live::start(&t, &["--", "sh", "-c", CHILD]);
    live.wait_stdout("the child", |o| o.contains("start gen=g1"));
    store(&t, "TOKEN", &value("g2"));
    let (status, out, err) = live.finish();
    assert_eq!(status.code(), Some(75), "{status:?}\n{out}\n{err}");

    // --on-change wins over the manifest's on_change.
    let t = watched().manifest(manifest);
    let live = Live::start(&t, &["--on-change", "restart", "--", "sh", "-c", CHILD]);
    live.wait_stdout("the child", |o| o.contains("start gen=g1"));
    store(&t, "TOKEN", &value("g2"));
    live.wait_stdout("the restarted child", |o| o.contains("start gen=g2"));
    live.signal(libc::SIGTERM);
    let (_, out, err) = live.finish();
    all_masked(&out, &err);
}

#[test]
fn the_manifest_sets_reload_on_hup_stop_signal_and_stop_timeout() {
    let t = watched().manifest(
        "watch:\n  reload_on_hup: true\n  stop_signal: SIGUSR2\n  stop_timeout: 1s\n\
         environment:\n  TOKEN: secret:TOKEN\n  TICK: file:tick.txt\n",
    );
    // Ignores SIGUSR2 (the stop signal): killed after the 1 s stop timeout; SIGHUP is
    // the reload and never reaches it.
    let script = format!("trap '' USR2\ntrap 'echo \"got-HUP pid=$$\"' HUP\n{CHILD}");
    let live = Live::start(&t, &["--", "sh", "-c", &script]);
    live.wait_stdout("the first child", |o| o.contains("start gen=g1"));
    store(&t, "TOKEN", &value("g2"));
    let hup = Instant::now();
    live.signal(libc::SIGHUP);
    live.wait_stdout("the restarted child", |o| o.contains("start gen=g2"));
    let took = hup.elapsed();
    live.signal(libc::SIGTERM);
    let (_, out, err) = live.finish();
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(3),
        "restart {took:?} after SIGHUP: not the 1 s stop timeout for a child ignoring SIGUSR2\n{err}"
    );
    assert!(!out.contains("got-HUP"), "{out}");
    all_masked(&out, &err);
}

#[test]
fn bad_watch_settings_are_refused_naming_the_key() {
    let cases: &[(&str, &str)] = &[
        ("watch:\n  interval: soon\n", "interval"),
        ("watch:\n  interval: 1s\n  on_change: bogus\n", "on_change"),
        (
            "watch:\n  interval: 1s\n  on_change: \"signal:SIGNOPE\"\n",
            "on_change",
        ),
        (
            "watch:\n  interval: 1s\n  stop_signal: SIGNOPE\n",
            "stop_signal",
        ),
        (
            "watch:\n  interval: 1s\n  stop_timeout: later\n",
            "stop_timeout",
        ),
        ("watch:\n  intervall: 1s\n", "intervall"),
    ];
    for (watch, key) in cases {
        let t = watched().manifest(&format!("{watch}environment:\n  TOKEN: secret:TOKEN\n"));
        let done = t
            .run(&["--", "sh", "-c", "touch ran"])
            .status(125)
            .stderr_has(key)
            .never_shows(CANARY);
        assert!(!t.path("ran").exists(), "{watch}: the command ran");
        assert!(
            done.stderr_str().starts_with("envrun:"),
            "{}",
            done.stderr_str()
        );
    }
    let cli: &[(&[&str], &str)] = &[
        (&["--watch", "soon"], "--watch"),
        (&["--on-change", "bogus"], "--on-change"),
        (&["--on-change", "signal:NOPE"], "--on-change"),
        (&["--stop-signal", "NOPE"], "--stop-signal"),
        (&["--stop-timeout", "later"], "--stop-timeout"),
    ];
    let t = watched();
    for (args, option) in cli {
        let mut all = args.to_vec();
        all.extend(["--", "sh", "-c", "touch ran"]);
        t.run(&all)
            .status(125)
            .stderr_has(option)
            .never_shows(CANARY);
        assert!(!t.path("ran").exists(), "{args:?}: the command ran");
    }
    t.command(&["--", "sh", "-c", "touch ran"])
        .env_pass("ENVRUN_ON_CHANGE", "bogus")
        .done()
        .status(125)
        .stderr_has("ENVRUN_ON_CHANGE");
    assert!(!t.path("ran").exists());
}

/// A child that prints TOKEN and the content of KEYFILE (both masked by envrun) and the
/// generation of each (`eg=`, `fg=`) without pause: a value caught between its old and new
/// masks, or read half-replaced, would show here. SIGUSR1 (the change signal) is caught.
const PRINTER: &str = r#"trap : USR1
echo "start gen=${TOKEN%%:*} pid=$$ raw=$TOKEN"
while :; do c=$(cat "$KEYFILE"); printf 'env=%s file=%s eg=%s fg=%s\n' "$TOKEN" "$c" "${TOKEN%%:*}" "${c%%:*}"; done"#;

/// Rotates TOKEN `rotations` times at random moments (0 to 150 ms apart) under
/// `--on-change ACTION --watch 200ms`, with `printer` ([`PRINTER`], [`READS_ON_SIGNAL`])
/// printing the environment's value and the file's all along, and checks that no part of
/// the canary ever shows.
///
/// With `acknowledged`, each rotation waits until the command shows it has read the new
/// file (`fg=rN`): a command that reads on the signal and is done before the next change,
/// which is what `signal:` promises to serve.
fn rotations_never_show_the_canary(
    action: &str,
    printer: &str,
    rotations: usize,
    acknowledged: bool,
) {
    let t = watched()
        .manifest("environment:\n  TOKEN: secret:TOKEN\n  KEYFILE: as_file:secret:TOKEN\n");
    let live = Live::start(
        &t,
        &[
            "--watch",
            "200ms",
            "--on-change",
            action,
            "--",
            "sh",
            "-c",
            printer,
        ],
    );
    live.wait_stdout("the child", |o| o.contains("start gen=g1"));
    // ROTATION_SEED=0x... reproduces a run's values and pauses.
    let mut rng = std::env::var("ROTATION_SEED")
        .ok()
        .and_then(|s| u64::from_str_radix(s.trim_start_matches("0x"), 16).ok())
        .unwrap_or_else(|| {
            let mut seed = [0u8; 8];
            getrandom::fill(&mut seed).unwrap();
            u64::from_le_bytes(seed) | 1
        });
    eprintln!("ROTATION_SEED={rng:#x}");
    let mut next = || {
        // xorshift64: enough randomness for timings and values.
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let last = format!("r{rotations}");
    for i in 1..=rotations {
        // The random pause is the property's input (when the rotation lands relative to
        // the ticks and the child's reads), not a wait for anything.
        std::thread::sleep(Duration::from_millis(next() % 150));
        // A random length before the canary: a value shorter than the one it replaces
        // leaves the old one's end (the canary's end) behind if the file is read between
        // its rewrite and its truncation.
        let pad = format!("{:016x}{:016x}", next(), next());
        let v = format!("r{i}:{}{CANARY}", &pad[..(next() % 33) as usize]);
        store(&t, "TOKEN", &v);
        if acknowledged {
            let read = format!("fg=r{i}\n");
            live.wait_stdout(&format!("the command reading r{i}"), |o| o.contains(&read));
        }
    }
    // The last value reached the child: through the file (signal) or a restart.
    let seen = match action {
        "restart" => format!("eg={last} "),
        _ => format!("fg={last}\n"),
    };
    live.wait_stdout("the last value in the child", |o| o.contains(&seen));
    live.signal(libc::SIGTERM);
    let (_, out, err) = live.finish();
    // Any 8 bytes of the canary shown mean a value (or part of one) leaked: the output
    // holds nothing else that could match.
    for piece in CANARY.as_bytes().windows(8) {
        let piece = std::str::from_utf8(piece).unwrap();
        assert!(
            !out.contains(piece) && !err.contains(piece),
            "a rotated value leaked ({piece}):\n{}",
            out.lines()
                .chain(err.lines())
                .filter(|l| l.contains(piece))
                .take(5)
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
    let printed = count(&out, "env=");
    // Every value shows exactly as the mask: a line with more around it shows part of a
    // value (a file read while it was rewritten: say the new value and the old one's end).
    // An empty file, read while a longer value gave way to a shorter one, shows nothing
    // (envrun documents it); such reads are counted, not failed.
    let masked = |v: Option<&str>| v == Some("***");
    let torn: Vec<&str> = out
        .lines()
        .filter(|l| {
            !l.starts_with("start ")
                && (!masked(field(l, "env"))
                    || !(masked(field(l, "file")) || field(l, "file") == Some("")))
        })
        .collect();
    let empty = out.lines().filter(|l| field(l, "file") == Some("")).count();
    eprintln!(
        "{rotations} rotations, {printed} lines, {} changes, {} torn reads, {empty} empty reads",
        change_lines(&err).len(),
        torn.len(),
    );
    assert!(printed > 0);
    assert!(
        torn.is_empty(),
        "part of a value shows unmasked (read while the file was rewritten):\n{}",
        torn[..torn.len().min(5)].join("\n")
    );
}

/// A child as [`PRINTER`] that reads KEYFILE only when told by SIGUSR1, as a program that
/// re-reads its key on a signal does; in between it prints its environment's value.
const READS_ON_SIGNAL: &str = r#"c=$(cat "$KEYFILE")
trap 'c=$(cat "$KEYFILE")' USR1
echo "start gen=${TOKEN%%:*} pid=$$ raw=$TOKEN"
while :; do printf 'env=%s file=%s eg=%s fg=%s\n' "$TOKEN" "$c" "${TOKEN%%:*}" "${c%%:*}"; sleep 0.005; done"#;

// Under `signal:` a command that reads its file at any time (PRINTER) can read across a
// replacement and print a mix of two values, which no mask covers: the README documents
// it, and `scripts/rotation-canary.py --action signal:SIGUSR1 --reader continuous` measures
// it. What signal mode serves is the command that reads on its signal:
#[test]
fn rotations_at_random_moments_never_show_the_canary_with_signal_read_on_the_signal() {
    rotations_never_show_the_canary("signal:SIGUSR1", READS_ON_SIGNAL, 25, true);
}

#[test]
fn rotations_at_random_moments_never_show_the_canary_with_restart() {
    rotations_never_show_the_canary("restart", PRINTER, 40, false);
}

#[test]
fn watch_supervises_even_with_no_mask_and_restarts_unmasked() {
    // --no-mask would exec; watching needs envrun to stay as the parent.
    let t = watched();
    let script = r#"echo "start gen=${TOKEN%%:*} pid=$$ ppid=$PPID value=$TOKEN"; while :; do sleep 0.1; done"#;
    let live = Live::start(
        &t,
        &["--no-mask", "--watch", "1s", "--", "sh", "-c", script],
    );
    let out = live.wait_stdout("the child", |o| o.contains("start gen=g1"));
    assert!(
        out.contains(&format!("ppid={} ", live.pid())),
        "envrun is not the command's parent (it exec'd?):\n{out}"
    );
    store(&t, "TOKEN", &value("g2"));
    live.wait_stdout("the restarted child", |o| o.contains("start gen=g2"));
    live.signal(libc::SIGTERM);
    let (_, out, err) = live.finish();
    // Unmasked, as asked: the whole new value arrived.
    assert!(out.contains(&format!("value={}\n", value("g2"))), "{out}");
    assert_eq!(change_lines(&err).len(), 1, "{err}");
}

#[test]
fn the_old_value_stays_masked_after_a_restart() {
    // old.txt holds generation g1's value, which no variable references once TOKEN has
    // changed: only the kept mask hides it (output in flight may still carry it).
    let t = watched().file("old.txt", &value("g1"));
    let script = r#"echo "start gen=${TOKEN%%:*} pid=$$ raw=$TOKEN"
while :; do echo "tick gen=${TOKEN%%:*} pid=$$ raw=$(cat old.txt)"; sleep 0.1; done"#;
    let live = Live::start(&t, &["--watch", "1s", "--", "sh", "-c", script]);
    live.wait_stdout("the child", |o| o.contains("tick gen=g1"));
    store(&t, "TOKEN", &value("g2"));
    live.wait_stdout("the new child's output", |o| count(o, "tick gen=g2") >= 3);
    live.signal(libc::SIGTERM);
    let (_, out, err) = live.finish();
    all_masked(&out, &err);
}

#[test]
fn a_terminal_hangup_still_stops_envrun_with_reload_on_hup() {
    // A SIGHUP from the kernel (the terminal went away: si_code SI_KERNEL) is not a reload
    // request: envrun and its command end, as without --reload-on-hup.
    let setsid = debian_tool("setsid", "util-linux");
    let t = watched();
    let pty = nix::pty::openpty(None, None).expect("openpty");
    // openpty's fds are inherited: envrun holding the master would keep the terminal up.
    for f in [&pty.master, &pty.slave] {
        nix::fcntl::fcntl(
            f,
            nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
        )
        .unwrap();
    }
    let mut cmd = std::process::Command::new(setsid);
    cmd.arg("--ctty")
        .arg(BIN)
        .args([
            "--reload-on-hup",
            "--",
            "sh",
            "-c",
            "echo $$ > child.pid; while :; do sleep 0.1; done",
        ])
        .current_dir(t.dir.path())
        .env_remove("ENVRUN_RELOAD_ON_HUP");
    let fd = |f: &std::os::fd::OwnedFd| std::process::Stdio::from(f.try_clone().unwrap());
    cmd.stdin(fd(&pty.slave))
        .stdout(fd(&pty.slave))
        .stderr(fd(&pty.slave));
    // setsid execs envrun in place (the test is not a group leader): this is envrun.
    let mut envrun = cmd.spawn().expect("spawn setsid envrun");
    drop(pty.slave);
    let started = Instant::now();
    let child: u32 = loop {
        if let Some(pid) = std::fs::read_to_string(t.path("child.pid"))
            .ok()
            .and_then(|s| s.strip_suffix('\n').and_then(|p| p.parse().ok()))
        {
            break pid;
        }
        assert!(started.elapsed() < DEADLINE, "the command did not start");
        std::thread::sleep(Duration::from_millis(5));
    };
    drop(pty.master);
    let hung_up = Instant::now();
    let status = loop {
        if let Some(status) = envrun.try_wait().unwrap() {
            break status;
        }
        if hung_up.elapsed() > DEADLINE {
            let _ = envrun.kill();
            panic!("envrun kept running after its terminal hung up");
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    while !matches!(state(child), None | Some('Z')) {
        assert!(
            hung_up.elapsed() < DEADLINE,
            "the command outlived the hangup"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(!status.success(), "{status:?}");
}

#[test]
fn dry_run_shows_the_watch_settings() {
    let t = watched();
    let done = t
        .run(&[
            "--dry-run",
            "--no-mask",
            "--watch",
            "5s",
            "--reload-on-hup",
            "--on-change",
            "signal:SIGHUP",
            "--",
            "sh",
            "-c",
            "touch ran",
        ])
        .status(0)
        .never_shows(CANARY);
    assert!(!t.path("ran").exists());
    let out = done.stdout_str();
    // Watching keeps envrun as the parent, --no-mask or not.
    let mode = out.lines().find(|l| l.starts_with("mode:")).unwrap();
    assert!(mode.contains("supervise"), "{out}");
    let watch = out
        .lines()
        .find(|l| l.starts_with("watch:"))
        .unwrap_or_else(|| panic!("no watch line:\n{out}"));
    for needle in ["5s", "SIGHUP"] {
        assert!(watch.contains(needle), "{out}");
    }
    // Not watching: no such line.
    let done = t.run(&["--dry-run", "--", "true"]).status(0);
    assert!(
        !done.stdout_str().lines().any(|l| l.starts_with("watch:")),
        "{}",
        done.stdout_str()
    );
}

#[test]
fn a_restart_whose_command_is_gone_keeps_the_running_one() {
    // The new environment is fine but the command can no longer be run (deleted, as by a
    // deploy in progress): envrun must not stop a working command for one it cannot start.
    let t = watched()
        .file(
            "app.sh",
            "#!/bin/sh\necho \"start gen=${TOKEN%%:*} pid=$$ raw=$TOKEN\"\nwhile :; do sleep 0.1; done\n",
        )
        .chmod("app.sh", 0o755);
    let live = Live::start(&t, &["--watch", "1s", "--", "./app.sh"]);
    live.wait_stdout("the first child", |o| o.contains("start gen=g1"));
    std::fs::remove_file(t.path("app.sh")).unwrap();
    store(&t, "TOKEN", &value("g2"));
    live.wait_stderr("the failed restart", |e| e.contains("app.sh"));
    // The running command lives on: envrun is still there at the next reload.
    let mut opens = Opens::watch(&t.path("tick.txt"));
    let mut live = live;
    let since = Instant::now();
    while opens.count() == 0 && live.running() {
        assert!(
            since.elapsed() < DEADLINE,
            "no reload after the failed restart"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(
        live.running(),
        "envrun ended (its command stopped) for a restart it could not do:\n{}",
        live.stderr()
    );
    let out = live.stdout();
    let pid = lines(&out)[0].pid;
    assert!(
        !matches!(state(pid), None | Some('Z')),
        "the running command was stopped"
    );
    live.signal(libc::SIGTERM);
    let (_, out, err) = live.finish();
    assert_eq!(count(&out, "start "), 1, "{out}");
    all_masked(&out, &err);
}

#[test]
fn a_burst_of_sighups_is_one_restart_not_a_storm() {
    let t = watched();
    let mut opens = Opens::watch(&t.path("tick.txt"));
    let live = Live::start(&t, &["--reload-on-hup", "--", "sh", "-c", CHILD]);
    live.wait_stdout("the first child", |o| o.contains("start gen=g1"));
    let started = opens.count();
    store(&t, "TOKEN", &value("g2"));
    for _ in 0..20 {
        live.signal(libc::SIGHUP);
    }
    live.wait_stdout("the restarted child", |o| o.contains("start gen=g2"));
    // One more SIGHUP, once the new child runs: its reload is the last, after any queued.
    live.wait_stdout("the new child's output", |o| count(o, "tick gen=g2") >= 2);
    let before = opens.count();
    live.signal(libc::SIGHUP);
    opens.wait_past(before, "the last reload", DEADLINE);
    let reloads = opens.count() - started;
    live.signal(libc::SIGTERM);
    let (_, out, err) = live.finish();
    // 20 requests while one reload ran (and the restart) are folded into at most one more.
    assert!(
        (2..=3).contains(&reloads),
        "{reloads} reloads for 21 SIGHUPs\n{err}"
    );
    assert_eq!(count(&out, "start "), 2, "{out}");
    assert_eq!(change_lines(&err).len(), 1, "{err}");
    all_masked(&out, &err);
}
