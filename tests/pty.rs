//! Pseudo-terminal mode through a real terminal: the test opens a pty, starts envrun on it
//! as a session leader with the pty as its controlling terminal (`setsid --ctty`), types
//! into the master side and reads what a user would see.
//!
//! Every wait is for something to appear (with a deadline), never a fixed sleep.

mod common;
use common::*;

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");
const DEADLINE: Duration = Duration::from_secs(10);
/// What these tests run besides envrun: the terminal's session and settings, the children.
const TOOLS: &[&str] = &["setsid", "stty", "python3", "sh"];

/// A test directory whose manifest makes TOKEN secret, so envrun supervises.
fn supervised() -> Test {
    Test::new()
        .file("token.txt", &format!("tok-{CANARY}"))
        .manifest("environment:\n  TOKEN: file:token.txt\n")
}

/// What the user's terminal has shown so far, filled by a reader thread.
#[derive(Default)]
struct Screen {
    bytes: Vec<u8>,
    closed: bool,
}

/// envrun running on a terminal the test controls.
struct Term {
    master: File,
    slave: PathBuf,
    envrun: Child,
    screen: Arc<(Mutex<Screen>, Condvar)>,
    /// How much of the screen earlier `expect`s have consumed.
    seen: usize,
    /// `stty -g` of the terminal before envrun started.
    settings_before: String,
}

impl Term {
    /// Starts `envrun ARGS` on a new 30x100 terminal.
    fn start(t: &Test, args: &[&str]) -> Term {
        Term::start_with_stderr(t, args, None)
    }

    /// The same, with envrun's stderr going to `stderr` instead of the terminal.
    fn start_with_stderr(t: &Test, args: &[&str], stderr: Option<File>) -> Term {
        let size = nix::pty::Winsize {
            ws_row: 30,
            ws_col: 100,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        let pty = nix::pty::openpty(Some(&size), None).expect("openpty");
        let slave = nix::unistd::ttyname(&pty.slave).expect("ttyname");
        let settings_before = stty_g(&slave);
        let cmd = t.command(args).cmd;
        let program = cmd.get_program().to_owned();
        let mut setsid = Command::new("setsid");
        setsid
            .arg("--ctty")
            .arg(program)
            .args(cmd.get_args())
            .current_dir(t.dir.path());
        for (k, v) in cmd.get_envs() {
            match v {
                Some(v) => setsid.env(k, v),
                None => setsid.env_remove(k),
            };
        }
        setsid.env("TERM", "xterm").env("PS1", "PROMPT> ");
        let fd = |f: &OwnedFd| Stdio::from(f.try_clone().unwrap());
        setsid
            .stdin(fd(&pty.slave))
            .stdout(fd(&pty.slave))
            .stderr(stderr.map_or_else(|| fd(&pty.slave), Stdio::from));
        let envrun = setsid.spawn().expect("spawn setsid envrun");
        drop(pty.slave);
        let master = File::from(pty.master);
        let screen = Arc::new((Mutex::new(Screen::default()), Condvar::new()));
        let (reader, shared) = (master.try_clone().unwrap(), Arc::clone(&screen));
        std::thread::spawn(move || read_screen(reader, &shared));
        Term {
            master,
            slave,
            envrun,
            screen,
            seen: 0,
            settings_before,
        }
    }

    /// Waits until `needle` appears after what earlier calls consumed; returns the screen
    /// up to and including it.
    fn expect(&mut self, needle: &str) -> String {
        let (lock, cond) = &*self.screen;
        let started = Instant::now();
        let mut screen = lock.lock().unwrap();
        loop {
            let from = self.seen.min(screen.bytes.len());
            if let Some(at) = find(&screen.bytes[from..], needle.as_bytes()) {
                let end = from + at + needle.len();
                self.seen = end;
                return String::from_utf8_lossy(&screen.bytes[..end]).into_owned();
            }
            let left = DEADLINE.saturating_sub(started.elapsed());
            assert!(
                !left.is_zero() && !screen.closed,
                "{needle:?} never appeared; the terminal shows:\n{}",
                String::from_utf8_lossy(&screen.bytes)
            );
            screen = cond.wait_timeout(screen, left).unwrap().0;
        }
    }

    /// Everything shown so far.
    fn shown(&self) -> Vec<u8> {
        self.screen.0.lock().unwrap().bytes.clone()
    }

    /// Types `bytes` (a key, a line ending in `\r`, a control character).
    fn send(&mut self, bytes: &[u8]) {
        self.master.write_all(bytes).unwrap();
    }

    /// Resizes the terminal as a terminal emulator does (the kernel sends SIGWINCH to its
    /// foreground process group).
    fn resize(&self, rows: u16, cols: u16) {
        let status = Command::new("stty")
            .arg("-F")
            .arg(&self.slave)
            .args(["rows", &rows.to_string(), "cols", &cols.to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    fn pid(&self) -> u32 {
        self.envrun.id()
    }

    /// Waits for envrun to exit (with a deadline), checks the terminal's settings are back
    /// as they were, and returns its status.
    fn wait(mut self) -> (ExitStatus, Vec<u8>) {
        let started = Instant::now();
        let status = loop {
            if let Some(status) = self.envrun.try_wait().unwrap() {
                break status;
            }
            assert!(
                started.elapsed() < DEADLINE,
                "envrun did not exit; the terminal shows:\n{}",
                String::from_utf8_lossy(&self.shown())
            );
            std::thread::sleep(Duration::from_millis(5));
        };
        assert_eq!(
            stty_g(&self.slave),
            self.settings_before,
            "the terminal's settings were not restored"
        );
        (status, self.shown())
    }
}

impl Drop for Term {
    /// A failed test must not leave envrun (and what it runs) waiting on a terminal.
    fn drop(&mut self) {
        if matches!(self.envrun.try_wait(), Ok(None)) {
            let _ = self.envrun.kill();
            let _ = self.envrun.wait();
        }
    }
}

fn read_screen(mut master: File, screen: &(Mutex<Screen>, Condvar)) {
    let mut buf = [0u8; 4096];
    loop {
        // EIO once no process has the slave open any more.
        let n = master.read(&mut buf).unwrap_or(0);
        let mut s = screen.0.lock().unwrap();
        if n == 0 {
            s.closed = true;
            screen.1.notify_all();
            return;
        }
        s.bytes.extend_from_slice(&buf[..n]);
        screen.1.notify_all();
    }
}

/// State, process group and the terminal's foreground process group, from /proc/PID/stat.
fn stat(pid: u32) -> (char, i32, i32) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let fields: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..].split(' ').collect();
    let state = fields[0].chars().next().unwrap();
    (
        state,
        fields[2].parse().unwrap(),
        fields[5].parse().unwrap(),
    )
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn stty_g(tty: &Path) -> String {
    let out = Command::new("stty")
        .arg("-g")
        .arg("-F")
        .arg(tty)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    String::from_utf8(out.stdout).unwrap()
}

fn kill(pid: u32, signo: i32) {
    let rc = Command::new("kill")
        .args([format!("-{signo}"), pid.to_string()])
        .status()
        .unwrap();
    assert!(rc.success(), "kill -{signo} {pid}");
}

fn wait_for(what: &str, mut ready: impl FnMut() -> bool) {
    let started = Instant::now();
    while !ready() {
        assert!(started.elapsed() < DEADLINE, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn lines(path: &Path) -> Vec<i32> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| l.parse().unwrap())
        .collect()
}

#[test]
fn the_child_gets_a_terminal_of_the_outer_size_and_masked_output() {
    if !tools_or_skip(
        "the_child_gets_a_terminal_of_the_outer_size_and_masked_output",
        TOOLS,
    ) {
        return;
    }
    let t = supervised();
    let script = r#"
test -t 0 -a -t 1 -a -t 2 && echo is-a-tty
echo "size $(stty size)"
echo "token $TOKEN"
IFS= read -r line; echo "typed:$line"
trap 'echo "resized $(stty size)"; exit 7' WINCH
echo waiting-for-resize
while :; do sleep 1 & wait $!; done
"#;
    let mut term = Term::start(&t, &["--", "sh", "-c", script]);
    term.expect("is-a-tty");
    term.expect("size 30 100");
    term.expect("token ***");
    term.send(b"hello there\r");
    term.expect("typed:hello there");
    term.expect("waiting-for-resize");
    term.resize(40, 120);
    term.expect("resized 40 120");
    let (status, shown) = term.wait();
    assert_eq!(status.code(), Some(7), "{status:?}");
    assert!(
        find(&shown, CANARY.as_bytes()).is_none(),
        "the secret reached the terminal"
    );
}

#[test]
fn ctrl_c_stops_a_sleep_with_status_130() {
    if !tools_or_skip("ctrl_c_stops_a_sleep_with_status_130", TOOLS) {
        return;
    }
    let t = supervised();
    let mut term = Term::start(&t, &["--", "sh", "-c", "echo ready; exec sleep 30"]);
    term.expect("ready");
    term.send(b"\x03");
    let (status, _) = term.wait();
    assert_eq!(status.signal(), Some(libc::SIGINT), "{status:?}");
}

#[test]
fn ctrl_c_reaches_the_child_exactly_once() {
    if !tools_or_skip("ctrl_c_reaches_the_child_exactly_once", TOOLS) {
        return;
    }
    // On a pty, ^C is a byte envrun relays; the pty sends the child SIGINT.
    ctrl_c_once(&[]);
}

#[test]
fn ctrl_c_reaches_the_child_exactly_once_with_no_pty() {
    if !tools_or_skip("ctrl_c_reaches_the_child_exactly_once_with_no_pty", TOOLS) {
        return;
    }
    // With pipes, the terminal sends SIGINT to envrun and the child (one process group);
    // envrun must not forward its own copy.
    ctrl_c_once(&["--no-pty"]);
}

/// After ^C, a SIGUSR1 sent to envrun is forwarded through envrun's queue: had envrun
/// queued a second SIGINT it would have arrived first (lower signals are taken first).
fn ctrl_c_once(opts: &[&str]) {
    let t = supervised();
    let (log, ready, stop) = (t.path("log"), t.path("ready"), t.path("stop"));
    let logger = format!("{FIXTURES}/signal_logger.py");
    let paths = [&log, &ready, &stop].map(|p| p.display().to_string());
    let (int, usr1) = (libc::SIGINT.to_string(), libc::SIGUSR1.to_string());
    let mut args = opts.to_vec();
    args.extend(["--", "python3", &logger]);
    args.extend(paths.iter().map(String::as_str));
    args.extend([int.as_str(), usr1.as_str()]);
    let mut term = Term::start(&t, &args);
    wait_for("the child's handlers", || ready.exists());
    term.send(b"\x03");
    wait_for("SIGINT", || !lines(&log).is_empty());
    kill(term.pid(), libc::SIGUSR1);
    wait_for("SIGUSR1", || lines(&log).len() >= 2);
    std::fs::write(&stop, "").unwrap();
    let (status, _) = term.wait();
    assert_eq!(status.code(), Some(0), "{status:?}");
    assert_eq!(lines(&log), vec![libc::SIGINT, libc::SIGUSR1]);
}

/// The child reports its PID, then sleeps.
fn start_sleeper(t: &Test) -> (Term, u32) {
    let mut term = Term::start(t, &["--", "sh", "-c", "echo \"pid=$$.\"; exec sleep 30"]);
    let shown = term.expect(".");
    let pid = shown
        .rsplit("pid=")
        .next()
        .and_then(|s| s.split('.').next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no pid in {shown:?}"));
    (term, pid)
}

#[test]
fn the_terminal_is_restored_after_the_child_is_killed() {
    if !tools_or_skip("the_terminal_is_restored_after_the_child_is_killed", TOOLS) {
        return;
    }
    let t = supervised();
    let (term, child) = start_sleeper(&t);
    kill(child, libc::SIGKILL);
    let (status, _) = term.wait();
    assert_eq!(status.signal(), Some(libc::SIGKILL), "{status:?}");
}

#[test]
fn the_terminal_is_restored_after_envrun_gets_sigterm() {
    if !tools_or_skip("the_terminal_is_restored_after_envrun_gets_sigterm", TOOLS) {
        return;
    }
    let t = supervised();
    let (term, _) = start_sleeper(&t);
    kill(term.pid(), libc::SIGTERM);
    let (status, _) = term.wait();
    assert_eq!(status.signal(), Some(libc::SIGTERM), "{status:?}");
}

#[test]
fn envrun_shell_runs_commands_and_job_control_works() {
    if !tools_or_skip("envrun_shell_runs_commands_and_job_control_works", TOOLS) {
        return;
    }
    let t = supervised();
    let mut term = Term::start(&t, &["shell", "--shell", "/bin/sh"]);
    term.expect("PROMPT> ");
    term.send(b"echo active=$ENVRUN_ACTIVE token=$TOKEN\r");
    term.expect("active=1 token=***");
    term.expect("PROMPT> ");
    // One job whose process group is in the foreground before it prints its PID; it then
    // becomes `sleep 100`.
    term.send(b"sh -c 'echo job-$$-; exec sleep 100'\r");
    term.expect("job-");
    let shown = term.expect("-\r\n");
    let pid: u32 = shown
        .rsplit("job-")
        .next()
        .and_then(|s| s.split('-').next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no job pid in {shown:?}"));
    wait_for("the exec", || {
        std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c == "sleep\n")
    });
    term.send(b"\x1a");
    term.expect("Stopped");
    term.expect("PROMPT> ");
    assert_eq!(stat(pid).0, 'T');
    term.send(b"fg\r");
    // Resumed, and its process group owns the terminal again (dash prints the job before
    // it hands the terminal over, so the text alone is not enough).
    wait_for("the job to be resumed in the foreground", || {
        let (state, pgrp, tpgid) = stat(pid);
        state != 'T' && pgrp == tpgid
    });
    term.send(b"\x03");
    term.expect("PROMPT> ");
    term.send(b"exit 3\r");
    let (status, shown) = term.wait();
    assert_eq!(status.code(), Some(3), "{status:?}");
    assert!(find(&shown, CANARY.as_bytes()).is_none());
}

/// Signals 1-31 but KILL, STOP and CHLD, and three real-time ones.
fn matrix() -> Vec<i32> {
    let mut v: Vec<i32> = (1..=31)
        .filter(|s| ![libc::SIGKILL, libc::SIGSTOP, libc::SIGCHLD].contains(s))
        .collect();
    v.extend([34, 50, 64]);
    v
}

/// Sends each signal of [`matrix`] to envrun with kill(1) and checks the child received
/// each exactly once. A last signal (40) closes the run: envrun forwards in the order it
/// reads, so a duplicate would have arrived before it.
fn each_signal_reaches_the_child_once(t: &Test, run: impl FnOnce(&[&str]) -> Runner) {
    const LAST: i32 = 40;
    let (log, ready, stop) = (t.path("log"), t.path("ready"), t.path("stop"));
    let logger = format!("{FIXTURES}/signal_logger.py");
    let signals = matrix();
    let mut args: Vec<String> = vec!["--".into(), "python3".into(), logger];
    args.extend([&log, &ready, &stop].map(|p| p.display().to_string()));
    args.extend(signals.iter().chain([&LAST]).map(i32::to_string));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let envrun = run(&args);
    wait_for("the child's handlers", || ready.exists());
    for (i, &sig) in signals.iter().enumerate() {
        kill(envrun.pid(), sig);
        wait_for(&format!("signal {sig}"), || lines(&log).len() > i);
    }
    kill(envrun.pid(), LAST);
    wait_for("the last signal", || lines(&log).last() == Some(&LAST));
    std::fs::write(&stop, "").unwrap();
    let status = envrun.wait();
    let mut expected = signals.clone();
    expected.push(LAST);
    assert_eq!(lines(&log), expected);
    assert_eq!(status.code(), Some(0), "{status:?}");
}

/// envrun on a terminal or with pipes, for the signal matrix.
enum Runner {
    Term(Term),
    Pipes(Child),
}

impl Runner {
    fn pid(&self) -> u32 {
        match self {
            Runner::Term(t) => t.pid(),
            Runner::Pipes(c) => c.id(),
        }
    }

    fn wait(self) -> ExitStatus {
        match self {
            Runner::Term(t) => t.wait().0,
            Runner::Pipes(mut c) => c.wait().unwrap(),
        }
    }
}

#[test]
fn every_signal_sent_with_kill_reaches_the_child_once_in_pty_mode() {
    if !tools_or_skip(
        "every_signal_sent_with_kill_reaches_the_child_once_in_pty_mode",
        TOOLS,
    ) {
        return;
    }
    let t = supervised();
    each_signal_reaches_the_child_once(&t, |args| Runner::Term(Term::start(&t, args)));
}

#[test]
fn every_signal_sent_with_kill_reaches_the_child_once_in_pipe_mode() {
    if !tools_or_skip(
        "every_signal_sent_with_kill_reaches_the_child_once_in_pipe_mode",
        TOOLS,
    ) {
        return;
    }
    let t = supervised();
    each_signal_reaches_the_child_once(&t, |args| {
        let mut run = t.command(args);
        run.cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        Runner::Pipes(run.cmd.spawn().unwrap())
    });
}

#[test]
fn no_pty_gives_the_child_pipes_on_a_terminal() {
    if !tools_or_skip("no_pty_gives_the_child_pipes_on_a_terminal", TOOLS) {
        return;
    }
    let t = supervised();
    let mut term = Term::start(
        &t,
        &["--no-pty", "--", "sh", "-c", "test -t 1 || echo not-a-tty"],
    );
    term.expect("not-a-tty");
    let (status, _) = term.wait();
    assert_eq!(status.code(), Some(0));
}

#[test]
fn a_stream_that_is_not_a_terminal_stays_a_masked_pipe() {
    if !tools_or_skip("a_stream_that_is_not_a_terminal_stays_a_masked_pipe", TOOLS) {
        return;
    }
    // stdout on the terminal, stderr to a file (`2>err.log`).
    let t = supervised();
    let err = File::create(t.path("err.log")).unwrap();
    let script = "test -t 1 && echo out-tty; test -t 2 || echo \"err-pipe $TOKEN\" >&2";
    let mut term = Term::start_with_stderr(&t, &["--", "sh", "-c", script], Some(err));
    term.expect("out-tty");
    let (status, _) = term.wait();
    assert_eq!(status.code(), Some(0));
    let err = std::fs::read_to_string(t.path("err.log")).unwrap();
    assert_eq!(err, "err-pipe ***\n");
}

#[test]
fn export_refuses_to_reveal_to_a_terminal_without_force() {
    if !tools_or_skip(
        "export_refuses_to_reveal_to_a_terminal_without_force",
        TOOLS,
    ) {
        return;
    }
    let t = supervised();
    let mut term = Term::start(&t, &["export", "--reveal"]);
    term.expect("refusing to print secret values to a terminal");
    let (status, shown) = term.wait();
    assert_eq!(status.code(), Some(125), "{status:?}");
    assert!(find(&shown, CANARY.as_bytes()).is_none());
    let mut term = Term::start(&t, &["export", "--reveal", "--force"]);
    term.expect(&format!("TOKEN=\"tok-{CANARY}\""));
    let (status, _) = term.wait();
    assert_eq!(status.code(), Some(0), "{status:?}");
}
