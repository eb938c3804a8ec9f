//! `as_file:` variables with the real binary: the command reads the value through a path
//! (`/proc/self/fd/N`) in supervise and exec mode, nothing of the value is written to any
//! file (strace, and a scan of the usual temp directories while the command runs), a
//! grandchild gets the file only if its fds are passed on, a 100 KiB PEM arrives whole, and
//! `--dry-run` and `check` say which variables are files.

mod common;
use common::live::Live;
use common::*;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime};

/// The SHA-256 of `bytes` as `sha256sum` prints it, computed by `sha256sum` itself.
fn sha256(bytes: &[u8]) -> String {
    let mut child = Command::new("sha256sum")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("run sha256sum");
    child.stdin.take().unwrap().write_all(bytes).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap()
}

/// A value of this run only (the canary, this process and the time), so a search of
/// shared directories cannot find another test's copy.
fn unique_canary() -> String {
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{CANARY}-{}-{nanos}", std::process::id())
}

/// A test directory with SA in the local store and KEY set to it `as_file:`.
fn file_secret(value: &str) -> Test {
    Test::new()
        .secret("SA", value)
        .manifest("environment:\n  KEY: as_file:secret:SA\n")
}

const READ_THROUGH_PATH: &str = r#"echo "path=$KEY"; cat "$KEY"; echo; sha256sum < "$KEY""#;

#[test]
fn the_command_reads_the_value_through_the_path_masked_in_supervise_mode() {
    let value = format!("{{\"type\": \"service_account\", \"key\": \"{CANARY}\"}}");
    let t = file_secret(&value);
    let done = t
        .run(&["--", "sh", "-c", READ_THROUGH_PATH])
        .status(0)
        .never_shows(CANARY);
    let out = done.stdout_str();
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 3, "{out}");
    let path = lines[0].strip_prefix("path=").unwrap();
    assert!(
        path.starts_with("/proc/self/fd/") || path.starts_with("/dev/fd/"),
        "{out}"
    );
    // The content is masked in the output, and is the value to the byte.
    assert_eq!(lines[1], "***", "{out}");
    assert_eq!(format!("{}\n", lines[2]), sha256(value.as_bytes()), "{out}");
}

#[test]
fn the_command_reads_the_value_through_the_path_in_exec_mode() {
    let value = format!("exec-mode-{CANARY}");
    let t = file_secret(&value);
    let mut run = t.command(&[
        "--no-mask",
        "--",
        "sh",
        "-c",
        r#"echo "pid=$$"; cat "$KEY""#,
    ]);
    run.cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let child = run.cmd.spawn().unwrap();
    let pid = child.id();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{out:?}");
    // envrun exec'd (the command has its PID) and the fd survived the exec.
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("pid={pid}\n{value}")
    );
    assert!(out.stderr.is_empty(), "{out:?}");
}

#[test]
fn an_inherited_as_file_reference_works_too() {
    let value = format!("inherited-{CANARY}");
    let t = Test::new()
        .secret("SA", &value)
        .env("KEY", "as_file:secret:SA");
    let done = t
        .run(&["--", "sh", "-c", READ_THROUGH_PATH])
        .status(0)
        .never_shows(CANARY);
    let out = done.stdout_str();
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines[0].starts_with("path=/"), "{out}");
    assert_eq!(lines[1], "***", "{out}");
    assert_eq!(format!("{}\n", lines[2]), sha256(value.as_bytes()), "{out}");
}

/// Every regular file under `dir` (not following links) changed since `since`, at most
/// 16 MiB each, whose content holds `needle`.
fn files_holding(dir: &Path, needle: &[u8], since: SystemTime, found: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let Ok(meta) = entry.path().symlink_metadata() else {
            continue;
        };
        if meta.is_dir() {
            files_holding(&entry.path(), needle, since, found);
        } else if meta.is_file()
            && meta.len() <= 16 << 20
            && meta.modified().is_ok_and(|m| m >= since)
            && std::fs::read(entry.path())
                .is_ok_and(|c| c.windows(needle.len()).any(|w| w == needle))
        {
            found.push(entry.path());
        }
    }
}

#[test]
fn no_file_of_the_value_is_written_anywhere() {
    let strace = debian_tool("strace", "strace");
    let secret = unique_canary();
    let value = format!("key-{secret}");
    let t = file_secret(&value);
    // The trace holds the value (in envrun's write into the memfd): it is kept outside
    // the directories searched.
    let trace_dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let trace = trace_dir.path().join("trace.txt");
    let started = SystemTime::now() - Duration::from_secs(2);
    // `-y` prints the file behind each fd (a path, `pipe:[...]`, `/memfd:...`); writes are
    // shown whole (-s); -f follows the command and its children.
    let mut cmd = Command::new(strace);
    cmd.args(["-f", "-y", "-s", "1000000", "-o"])
        .arg(&trace)
        .args([
            "-e",
            "trace=open,openat,creat,write,writev,pwrite64,pwritev,memfd_create,rename,renameat2,link,linkat",
            BIN,
            "--",
            "sh",
            "-c",
            r#"cat "$KEY" > /dev/null; echo ready; while [ ! -e stop ]; do sleep 0.05; done"#,
        ])
        .current_dir(t.dir.path())
        .env("RUST_BACKTRACE", "full");
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("ENVRUN_") {
            cmd.env_remove(&k);
        }
    }
    let live = Live::spawn(cmd);
    live.wait_stdout("the command", |o| o.contains("ready"));

    // While the command holds the file: no file anywhere a temp file would go holds it.
    let mut dirs = vec![
        PathBuf::from("/tmp"),
        PathBuf::from("/dev/shm"),
        PathBuf::from("/var/tmp"),
        t.dir.path().to_owned(),
    ];
    if let Some(run) = std::env::var_os("XDG_RUNTIME_DIR") {
        dirs.push(run.into());
    }
    let mut found = Vec::new();
    for dir in &dirs {
        files_holding(dir, secret.as_bytes(), started, &mut found);
    }
    found.dedup();
    // The trace itself, which holds the value, is ours, not envrun's: under /tmp when the
    // checkout is (a CI clone in /tmp).
    found.retain(|p| !p.starts_with(trace_dir.path()));
    std::fs::write(t.path("stop"), "").unwrap();
    let (status, out, err) = live.finish();
    assert!(status.success(), "{status:?}\n{out}\n{err}");
    assert!(found.is_empty(), "files hold the value: {found:?}");

    let text = std::fs::read_to_string(&trace).unwrap();
    let calls: Vec<&str> = text.lines().collect();
    // envrun made the in-memory file, and wrote the value into it: the search below sees
    // written data (the control that keeps this test from passing by seeing nothing).
    assert!(
        calls.iter().any(|l| l.contains("memfd_create(")),
        "no memfd_create in the trace"
    );
    let written: Vec<&&str> = calls
        .iter()
        .filter(|l| l.contains(&secret) && is_write(l))
        .collect();
    assert!(
        written
            .iter()
            .any(|l| fd_target(l).is_some_and(|f| f.starts_with("/memfd:"))),
        "no write of the value into a memfd seen: {written:?}"
    );
    // No write of the value to a file with a path: only to pipes, the memfd itself, and
    // /dev/null (where the command copies it).
    for l in &written {
        let target = fd_target(l).unwrap_or("");
        assert!(
            !target.starts_with('/') || target.starts_with("/memfd:") || target == "/dev/null",
            "the value was written to {target}: {l}"
        );
    }
    // No file opened for writing, created, renamed or linked under a temp directory or in
    // the working directory (a relative path), but the store's lock file.
    let roots: Vec<String> = dirs.iter().map(|d| format!("{}/", d.display())).collect();
    for l in &calls {
        let Some(path) = l.split('"').nth(1) else {
            continue;
        };
        let writes = l.contains("O_WRONLY")
            || l.contains("O_RDWR")
            || l.contains("O_CREAT")
            || l.contains("O_TMPFILE")
            || l.contains("creat(")
            || l.contains("rename")
            || l.contains("link(")
            || l.contains("linkat(");
        let inside = !path.starts_with('/') || roots.iter().any(|r| path.starts_with(r));
        if writes && inside {
            assert!(
                path.ends_with("secrets.json.enc.lock"),
                "a file was created or written: {l}"
            );
        }
    }
}

/// Whether a strace line is a write-family call.
fn is_write(line: &str) -> bool {
    ["write(", "writev(", "pwrite64(", "pwritev("]
        .iter()
        .any(|c| line.contains(c))
}

/// The file behind a call's first fd argument, as `strace -y` shows it: `3</memfd:x>`.
fn fd_target(line: &str) -> Option<&str> {
    let args = &line[line.find('(')? + 1..];
    let start = args.find('<')? + 1;
    let end = start + args[start..].find('>')?;
    Some(&args[start..end])
}

/// A Python command that starts two children reading KEY's path: one with Python's default
/// (close_fds=True: only 0, 1 and 2 are passed on), one with close_fds=False.
const GRANDCHILDREN: &str = r#"
import os, subprocess
for close in (True, False):
    r = subprocess.run(["sh", "-c", 'sha256sum < "$KEY"'], close_fds=close, capture_output=True, text=True)
    print(f"close_fds={close} status={r.returncode} out={r.stdout.strip()}", flush=True)
"#;

#[test]
fn a_grandchild_gets_the_file_only_if_the_fds_are_passed_on() {
    let value = format!("grandchild-{CANARY}");
    let t = file_secret(&value);
    let done = t
        .run(&["--", "python3", "-c", GRANDCHILDREN])
        .status(0)
        .never_shows(CANARY);
    let out = done.stdout_str();
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 2, "{out}");
    assert!(
        lines[0].starts_with("close_fds=True status=") && !lines[0].contains("status=0 "),
        "a grandchild with closed fds opened the file: {out}"
    );
    assert_eq!(
        format!("{}\n", lines[1]),
        format!(
            "close_fds=False status=0 out={}",
            sha256(value.as_bytes()).trim_end()
        ) + "\n",
        "{out}"
    );
}

/// A PEM block of `size` bytes or a little more: BEGIN/END lines around 64-column base64 of
/// random bytes, with `inside` as one of its lines.
fn pem(size: usize, inside: &str) -> String {
    use base64::Engine;
    let mut raw = vec![0u8; size * 3 / 4];
    getrandom::fill(&mut raw).unwrap();
    let b64 = base64::engine::general_purpose::STANDARD.encode(&raw);
    let mut lines: Vec<&str> = b64
        .as_bytes()
        .chunks(64)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect();
    let middle = lines.len() / 2;
    lines.insert(middle, inside);
    format!(
        "-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----",
        lines.join("\n")
    )
}

#[test]
fn a_100_kib_pem_arrives_whole_and_masked() {
    let value = pem(100 << 10, CANARY);
    assert!(value.len() >= 100 << 10);
    let t = file_secret(&value);
    let done = t
        .run(&[
            "--",
            "sh",
            "-c",
            r#"sha256sum < "$KEY"; wc -c < "$KEY"; cat "$KEY""#,
        ])
        .status(0)
        .never_shows(CANARY);
    let out = done.stdout_str();
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        format!("{}\n", lines[0]),
        sha256(value.as_bytes()),
        "{}",
        lines[0]
    );
    assert_eq!(lines[1].trim(), value.len().to_string());
    // The whole PEM, printed, is masked (as one value, so no line of it shows).
    assert_eq!(
        lines[2..].join("\n"),
        "***",
        "{}",
        &out[..out.len().min(500)]
    );
    let second_line = value.lines().nth(1).unwrap();
    assert!(!out.contains(second_line));
}

#[test]
fn dry_run_and_check_show_which_variables_are_files() {
    let t = Test::new()
        .secret("SA", &format!("sa-{CANARY}"))
        .secret("PLAIN", &format!("plain-{CANARY}"))
        .manifest("environment:\n  KEY: as_file:secret:SA\n  TOKEN: secret:PLAIN\n");
    let done = t
        .run(&["--dry-run", "--", "sh", "-c", "touch ran"])
        .status(0)
        .never_shows(CANARY);
    assert!(!t.path("ran").exists());
    let out = done.stdout_str();
    let line = |name: &str| {
        out.lines()
            .find(|l| l.trim_start().starts_with(name))
            .unwrap_or_else(|| panic!("no line for {name}:\n{out}"))
            .to_owned()
    };
    assert!(line("KEY ").contains("as_file"), "{out}");
    assert!(!line("TOKEN ").contains("file"), "{out}");

    let done = t.run(&["check"]).never_shows(CANARY);
    let out = done.stdout_str();
    let key = out
        .lines()
        .find(|l| l.contains("KEY"))
        .unwrap_or_else(|| panic!("{out}"));
    assert!(key.contains("as_file"), "{out}");
    let token = out.lines().find(|l| l.contains("TOKEN")).unwrap();
    assert!(!token.contains("file"), "{out}");
}

#[test]
fn the_file_cannot_be_written_grown_or_cut_by_the_command() {
    // Sealed (and mode 0400): even root, whom the mode does not stop, cannot change it.
    let value = format!("sealed-{CANARY}");
    let t = file_secret(&value);
    let script = r#"
for how in write append truncate; do
  case $how in
    write) printf x 1<> "$KEY" ;;
    append) printf x >> "$KEY" ;;
    truncate) true > "$KEY" ;;
  esac 2>/dev/null && echo "$how: done" || echo "$how: refused"
done
sha256sum < "$KEY""#;
    let done = t
        .run(&["--", "sh", "-c", script])
        .status(0)
        .never_shows(CANARY);
    let out = done.stdout_str();
    assert_eq!(
        out,
        format!(
            "write: refused\nappend: refused\ntruncate: refused\n{}",
            sha256(value.as_bytes())
        )
    );
}
