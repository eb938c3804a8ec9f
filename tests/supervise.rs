//! Supervise mode with the real binary: masking in the child's output, stdio, exit status,
//! and the choice between exec and supervise.

mod common;
use common::*;

use std::io::Read;
use std::os::unix::process::ExitStatusExt;
use std::process::Stdio;
use std::time::{Duration, Instant};

/// A secret long enough to be masked, with the canary inside.
fn secret() -> String {
    format!("tok-{CANARY}")
}

/// A test directory whose manifest makes TOKEN secret (a `file:` value), so envrun
/// supervises the command.
fn with_secret(value: &str) -> Test {
    Test::new()
        .file("token.txt", value)
        .manifest("environment:\n  TOKEN: file:token.txt\n")
}

#[test]
fn a_secret_printed_whole_is_masked() {
    with_secret(&secret())
        .run(&["--", "sh", "-c", "echo \"before $TOKEN after\""])
        .status(0)
        .stdout("before *** after\n")
        .stderr("")
        .never_shows(CANARY);
}

#[test]
fn mask_with_names_the_variable() {
    with_secret(&secret())
        .run(&[
            "--mask-with",
            "[{name}]",
            "--",
            "sh",
            "-c",
            "printf %s \"$TOKEN\"",
        ])
        .status(0)
        .stdout("[TOKEN]");
    with_secret(&secret())
        .env("ENVRUN_MASK_WITH", "<hidden>")
        .run(&["--", "sh", "-c", "printf %s \"$TOKEN\""])
        .status(0)
        .stdout("<hidden>");
}

#[test]
fn a_secret_written_byte_by_byte_is_masked() {
    // Each byte is its own write(2), back to back: the pump reads them in whatever pieces
    // the pipe gives, and the scrubber must carry a partial match across reads.
    let script = "import os\n\
        os.write(1, b'id=')\n\
        for b in os.environb[b'TOKEN']: os.write(1, bytes([b]))\n\
        os.write(1, b' end\\n')\n";
    with_secret("Zq8-byte-by-byte-secret")
        .run(&["--", "python3", "-c", script])
        .status(0)
        .stdout("id=*** end\n");
}

#[test]
fn encoded_forms_are_masked() {
    let value = format!("p@ss w/rd+\"q\"&\\x={CANARY}");
    let script = r#"
import base64, json, os, sys, urllib.parse
t = os.environ["TOKEN"]
print("b64", base64.b64encode(t.encode()).decode())
print("url", urllib.parse.quote(t, safe=""))
print("json", json.dumps({"token": t}))
print("hex", t.encode().hex())
"#;
    with_secret(&value)
        .run(&["--", "python3", "-c", script])
        .status(0)
        .stdout("b64 ***\nurl ***\njson {\"token\": \"***\"}\nhex ***\n")
        .never_shows(CANARY);
}

#[test]
fn a_multi_line_pem_is_masked_whole_and_line_by_line() {
    let pem = "-----BEGIN PRIVATE KEY-----\n\
               MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQC7\n\
               Zx3yq1Yb5c0m9XkK8yH0aQn2F4bWv7TqL1sJ8RcXpEo4uN6dGf\n\
               -----END PRIVATE KEY-----\n";
    let t = with_secret(pem);
    t.run(&["--", "sh", "-c", "printf '%s\\n' \"$TOKEN\""])
        .status(0)
        .stdout("***\n");
    // One line on its own, as a log line might quote it.
    t.run(&["--", "sh", "-c", "printf '%s\\n' \"$TOKEN\" | sed -n 2p"])
        .status(0)
        .stdout("***\n")
        .never_shows("MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQC7");
}

#[test]
fn stdout_and_stderr_are_masked_and_kept_apart() {
    with_secret(&secret())
        .run(&[
            "--",
            "sh",
            "-c",
            "echo \"out $TOKEN\"; echo \"err $TOKEN\" >&2; echo out2; echo err2 >&2",
        ])
        .status(0)
        .stdout("out ***\nout2\n")
        .stderr("err ***\nerr2\n")
        .never_shows(CANARY);
}

#[test]
fn a_value_too_short_to_mask_is_named_once() {
    let done = Test::new()
        .file("short.txt", "ab")
        .file("token.txt", &secret())
        .manifest("environment:\n  PIN: file:short.txt\n  TOKEN: file:token.txt\n")
        .run(&["--", "sh", "-c", "echo \"$PIN $TOKEN\""])
        .status(0)
        .stdout("ab ***\n");
    let warnings: Vec<String> = done
        .stderr_str()
        .lines()
        .filter(|l| l.contains("`PIN`"))
        .map(String::from)
        .collect();
    assert_eq!(warnings.len(), 1, "{}", done.stderr_str());
    assert!(warnings[0].starts_with("envrun: warning:"), "{warnings:?}");
    // --min-mask-len lowers the bar: then nothing is reported and `ab` is masked too.
    Test::new()
        .file("short.txt", "ab")
        .manifest("environment:\n  PIN: file:short.txt\n")
        .run(&["--min-mask-len", "2", "--", "sh", "-c", "echo \"pin=$PIN\""])
        .status(0)
        .stdout("pin=***\n")
        .stderr("");
}

#[test]
fn no_mask_runs_the_command_directly() {
    with_secret(&secret())
        .run(&["--no-mask", "--", "sh", "-c", "printf %s \"$TOKEN\""])
        .status(0)
        .stdout(&secret());
    with_secret(&secret())
        .env("ENVRUN_NO_MASK", "1")
        .run(&["--", "sh", "-c", "printf %s \"$TOKEN\""])
        .status(0)
        .stdout(&secret());
}

/// Runs envrun with stdout piped and returns (envrun's PID, what the child printed).
fn pid_and_output(t: &Test, script: &str) -> (u32, String) {
    let mut run = t.command(&["--", "sh", "-c", script]);
    run.cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let child = run.cmd.spawn().unwrap();
    let pid = child.id();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{out:?}");
    (pid, String::from_utf8(out.stdout).unwrap())
}

#[test]
fn exec_mode_keeps_the_pid_and_supervise_mode_is_the_parent() {
    // Nothing secret: envrun execs, so the command has envrun's PID.
    let plain = Test::new().manifest("environment:\n  LEVEL: info\n");
    let (pid, out) = pid_and_output(&plain, "echo $$");
    assert_eq!(out.trim(), pid.to_string());
    // A secret: envrun stays, as the command's parent.
    let (pid, out) = pid_and_output(&with_secret(&secret()), "echo $$ $PPID");
    let (own, parent) = out.trim().split_once(' ').unwrap();
    assert_ne!(own, pid.to_string());
    assert_eq!(parent, pid.to_string());
}

#[test]
fn stdin_is_the_childs_untouched() {
    let t = with_secret(&secret()).file("input.txt", "line one\nline two\n");
    let input = std::fs::File::open(t.path("input.txt")).unwrap();
    let mut run = t.command(&["--", "sh", "-c", "readlink /proc/self/fd/0; cat"]);
    run.cmd.stdin(input);
    let out = run.cmd.output().unwrap();
    assert!(out.status.success(), "{out:?}");
    let expected = format!("{}\nline one\nline two\n", t.path("input.txt").display());
    assert_eq!(String::from_utf8_lossy(&out.stdout), expected);
}

#[test]
fn exit_codes_0_to_255_pass_through() {
    let t = with_secret(&secret());
    let codes: Vec<i32> = (0..256).collect();
    std::thread::scope(|s| {
        for chunk in codes.chunks(64) {
            let t = &t;
            s.spawn(move || {
                for &code in chunk {
                    let script = format!("exit {code}");
                    let out = t.command(&["--", "sh", "-c", &script]).output();
                    assert_eq!(out.status.code(), Some(code), "{out:?}");
                }
            });
        }
    });
}

#[test]
fn a_death_by_signal_is_reproduced() {
    let t = with_secret(&secret());
    for sig in [
        libc::SIGTERM,
        libc::SIGINT,
        libc::SIGHUP,
        libc::SIGKILL,
        libc::SIGSEGV,
        libc::SIGABRT,
        libc::SIGUSR1,
    ] {
        // No core file from the child; envrun is non-dumpable and writes none either.
        let script = format!("ulimit -c 0; kill -{sig} $$");
        let out = t.command(&["--", "sh", "-c", &script]).output();
        assert_eq!(out.status.signal(), Some(sig), "signal {sig}: {out:?}");
    }
}

#[test]
fn a_shell_sees_128_plus_n_after_a_signal_death() {
    let t = with_secret(&secret());
    let script = format!("{BIN} -- sh -c 'kill -TERM $$'; echo \"status=$?\"");
    t.run(&["--no-mask", "--", "sh", "-c", &script])
        .status(0)
        .stdout("status=143\n");
}

#[test]
fn a_closed_stdout_ends_the_child_as_it_would_without_envrun() {
    // `yes` must die of SIGPIPE once `head` is gone, and envrun report that, in both modes.
    for manifest in [
        "environment:\n  TOKEN: file:token.txt\n",
        "environment:\n  A: b\n",
    ] {
        let t = with_secret(&secret()).manifest(manifest);
        let script =
            format!("{BIN} -- yes | head -c 5 >/dev/null; echo \"status=${{PIPESTATUS[0]}}\"");
        t.run(&["--no-mask", "--", "bash", "-c", &script])
            .status(0)
            .stdout("status=141\n");
    }
}

#[test]
fn a_background_grandchild_holding_the_pipe_does_not_keep_envrun_alive() {
    let started = Instant::now();
    with_secret(&secret())
        .run(&["--", "sh", "-c", "sleep 5 & echo started"])
        .status(0)
        .stdout("started\n");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "took {:?}",
        started.elapsed()
    );
}

#[test]
fn output_after_the_last_write_is_not_lost() {
    // 1 MiB written right before exit must all arrive (drained after the child is gone).
    let out = with_secret(&secret())
        .command(&["--", "sh", "-c", "head -c 1048576 /dev/zero | tr '\\0' x"])
        .output();
    assert!(out.status.success());
    assert_eq!(out.stdout.len(), 1 << 20);
    assert!(out.stdout.iter().all(|b| *b == b'x'));
}

#[test]
fn a_possible_secret_prefix_is_flushed_when_the_child_goes_quiet() {
    // `tok-` could begin the secret, so it is held back, but only until the child has been
    // silent for ~50 ms: a prompt must not wait for more output.
    let t = with_secret(&secret());
    let mut run = t.command(&["--", "sh", "-c", "printf 'Code: tok-'; exec sleep 3"]);
    run.cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .stdin(Stdio::null());
    let mut child = run.cmd.spawn().unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let started = Instant::now();
    let mut got = Vec::new();
    let mut buf = [0u8; 64];
    while got != b"Code: tok-" {
        let n = stdout.read(&mut buf).unwrap();
        assert!(n > 0, "EOF before the prompt: {got:?}");
        got.extend_from_slice(&buf[..n]);
    }
    let waited = started.elapsed();
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        waited < Duration::from_secs(1),
        "the prompt took {waited:?}"
    );
}

#[test]
fn a_command_that_is_not_found_or_cannot_run_exits_127_or_126() {
    let t = with_secret(&secret()).file("noexec.sh", "#!/bin/sh\n");
    t.run(&["--", "no-such-command-xyz"])
        .status(127)
        .stderr_has("no-such-command-xyz")
        .never_shows(CANARY);
    t.run(&["--", "./noexec.sh"])
        .status(126)
        .never_shows(CANARY);
}

#[test]
fn envruns_own_messages_are_masked() {
    // A command named after the secret value: the error names the command, and the
    // masker in ui must hide it.
    let t = with_secret(&secret());
    let cmd = format!("./{}", secret());
    t.run(&["--", &cmd])
        .status(127)
        .stderr_has("cannot run `./***`")
        .never_shows(CANARY);
}

/// The bytes of every writable mapping of `pid` (root may read another process's memory
/// even when it is non-dumpable).
fn writable_memory(pid: u32) -> Vec<u8> {
    use std::io::{Seek, SeekFrom};
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap();
    let mut mem = std::fs::File::open(format!("/proc/{pid}/mem")).unwrap();
    let mut all = Vec::new();
    for line in maps.lines() {
        let mut fields = line.split_whitespace();
        let (range, perms) = (fields.next().unwrap(), fields.next().unwrap());
        if !perms.starts_with("rw") {
            continue;
        }
        let (start, end) = range.split_once('-').unwrap();
        let start = u64::from_str_radix(start, 16).unwrap();
        let end = u64::from_str_radix(end, 16).unwrap();
        let mut buf = vec![0u8; (end - start) as usize];
        if mem.seek(SeekFrom::Start(start)).is_ok() && mem.read_exact(&mut buf).is_ok() {
            all.extend_from_slice(&buf);
        }
    }
    all
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn the_environment_block_is_wiped_after_the_spawn() {
    if !nix::unistd::Uid::effective().is_root() {
        panic!("this test reads another process's memory and must run as root");
    }
    let t = with_secret(&secret());
    let mut run = t.command(&["--", "sleep", "5"]);
    run.cmd.stdout(Stdio::null()).stderr(Stdio::null());
    let mut envrun = run.cmd.spawn().unwrap();
    let pid = envrun.id();
    let children = format!("/proc/{pid}/task/{pid}/children");
    let started = Instant::now();
    let child: u32 = loop {
        let text = std::fs::read_to_string(&children).unwrap_or_default();
        if let Some(c) = text.split_whitespace().next() {
            break c.parse().unwrap();
        }
        assert!(started.elapsed() < Duration::from_secs(5), "no child");
        std::thread::sleep(Duration::from_millis(10));
    };
    let entry = format!("TOKEN={}", secret());
    // The control: the method finds the entry in the child, once it has exec'd.
    let started = Instant::now();
    while !contains(&writable_memory(child), entry.as_bytes()) {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "not in the child"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    // envrun wipes the block right after the exec succeeded; it must be gone soon after
    // and stay gone.
    while contains(&writable_memory(pid), entry.as_bytes()) {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "envrun still holds the child's environment entry"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let _ = envrun.kill();
    let _ = envrun.wait();
}

#[test]
fn stdout_and_stderr_to_the_same_file_keep_the_childs_order() {
    // `2>&1`: one pipe for both, so the reader sees the order the child wrote in.
    let t = with_secret(&secret());
    let script =
        format!("{BIN} -- sh -c 'for i in $(seq 1000); do echo out$i; echo err$i >&2; done' 2>&1");
    let expected: String = (1..=1000).map(|i| format!("out{i}\nerr{i}\n")).collect();
    for run in 0..20 {
        let done = t.run(&["--no-mask", "--", "sh", "-c", &script]).status(0);
        assert!(done.stdout_str() == expected, "run {run}: order changed");
    }
}

#[test]
fn a_write_error_on_stdout_is_reported_and_fails_the_run() {
    let t = with_secret(&secret());
    let done = t
        .run(&[
            "--no-mask",
            "--",
            "sh",
            "-c",
            &format!("{BIN} -- sh -c 'echo hi' > /dev/full; echo status=$?"),
        ])
        .status(0)
        .stdout("status=125\n");
    let errors: Vec<&str> = done
        .stderr_str()
        .lines()
        .filter(|l| l.starts_with("envrun: error:"))
        .map(|_| "")
        .collect();
    assert_eq!(errors.len(), 1, "{}", done.stderr_str());
    done.stderr_has("stdout")
        .stderr_has("No space left on device")
        .never_shows(CANARY);
}

#[test]
fn a_full_file_system_never_reports_success() {
    // 1 MiB into a 64 KiB tmpfs, in a private mount namespace (root only).
    if !nix::unistd::Uid::effective().is_root() {
        eprintln!("skipped a_full_file_system_never_reports_success: needs root to mount a tmpfs");
        return;
    }
    if !tools_or_skip(
        "a_full_file_system_never_reports_success",
        &["unshare", "mount"],
    ) {
        return;
    }
    let t = with_secret(&secret()).mkdir("small");
    let script = format!(
        "mount -t tmpfs -o size=64k envrun-test small && \
         {BIN} -- head -c 1048576 /dev/zero > small/out; echo status=$?; \
         stat -c %s small/out"
    );
    let mut run = t.command(&["--no-mask", "--", "unshare", "--mount", "sh", "-c", &script]);
    run.cmd.env_remove("ENVRUN_MANIFEST");
    let done = run.done().status(0);
    let out = done.stdout_str();
    let mut lines = out.lines();
    assert_eq!(lines.next(), Some("status=125"), "{}", done.stderr_str());
    let written: u64 = lines.next().unwrap().parse().unwrap();
    assert!(written < 1 << 20, "wrote {written} bytes");
    done.stderr_has("cannot write the command's stdout")
        .stderr_has("No space left on device");
}

#[test]
fn sigterm_ends_envrun_even_when_its_reader_has_stopped_reading() {
    // `envrun -- yes | sleep 20`, then SIGTERM: `yes` dies, and envrun must not stay
    // blocked writing to a pipe nobody reads.
    let t = with_secret(&secret());
    let mut sleep = std::process::Command::new("sleep")
        .arg("20")
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    let mut run = t.command(&["--", "yes"]);
    run.cmd
        .stdin(Stdio::null())
        .stdout(Stdio::from(sleep.stdin.take().unwrap()))
        .stderr(Stdio::null());
    let mut envrun = run.cmd.spawn().unwrap();
    // Wait until envrun's output thread blocks writing to the full pipe to `sleep`.
    let tasks = format!("/proc/{}/task", envrun.id());
    let blocked_in_write = || {
        std::fs::read_dir(&tasks)
            .into_iter()
            .flatten()
            .flatten()
            .any(|task| {
                std::fs::read_to_string(task.path().join("wchan"))
                    .is_ok_and(|w| w.contains("pipe_write"))
            })
    };
    let started = Instant::now();
    while !blocked_in_write() {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "envrun never blocked writing"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    let rc = std::process::Command::new("kill")
        .args(["-TERM", &envrun.id().to_string()])
        .status()
        .unwrap();
    assert!(rc.success());
    let killed = Instant::now();
    let status = loop {
        if let Some(status) = envrun.try_wait().unwrap() {
            break status;
        }
        assert!(
            killed.elapsed() < Duration::from_secs(2),
            "envrun still runs 2 s after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(5));
    };
    let _ = sleep.kill();
    let _ = sleep.wait();
    assert_eq!(status.signal(), Some(libc::SIGTERM), "{status:?}");
}

#[test]
fn as_pid_1_is_not_needed_for_exec_outside_it() {
    // Outside PID 1, --no-mask still execs: the command has envrun's PID.
    let t = with_secret(&secret());
    let mut run = t.command(&["--no-mask", "--", "sh", "-c", "echo $$"]);
    run.cmd.stdout(Stdio::piped());
    let child = run.cmd.spawn().unwrap();
    let pid = child.id();
    let out = child.wait_with_output().unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), pid.to_string());
}

#[test]
fn sigterm_after_the_child_exited_ends_envrun_still_writing() {
    // The child has written and exited; envrun still holds output nobody reads (the pipe
    // to `sleep` is full before envrun starts). A SIGTERM then ends envrun at once, and by
    // that signal: the output is incomplete.
    let t = with_secret(&secret());
    let (r, w) = nix::unistd::pipe().unwrap();
    fill(&w);
    let mut sleep = std::process::Command::new("sleep")
        .arg("20")
        .stdin(Stdio::from(r))
        .spawn()
        .unwrap();
    // 32 KiB: less than any pipe holds, so the child never waits for envrun.
    let mut run = t.command(&["--", "sh", "-c", "head -c 32768 /dev/zero; echo $$ > done"]);
    run.cmd
        .stdin(Stdio::null())
        .stdout(Stdio::from(w))
        .stderr(Stdio::null());
    let mut envrun = run.cmd.spawn().unwrap();
    let started = Instant::now();
    let child_pid = loop {
        if let Ok(s) = std::fs::read_to_string(t.path("done"))
            && s.ends_with('\n')
        {
            break s.trim().to_owned();
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the child never finished"
        );
        std::thread::sleep(Duration::from_millis(5));
    };
    // Reaped by envrun: gone from /proc.
    while std::path::Path::new(&format!("/proc/{child_pid}")).exists() {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the child was never reaped"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    let rc = std::process::Command::new("kill")
        .args(["-TERM", &envrun.id().to_string()])
        .status()
        .unwrap();
    assert!(rc.success());
    let killed = Instant::now();
    let status = loop {
        if let Some(status) = envrun.try_wait().unwrap() {
            break status;
        }
        assert!(killed.elapsed() < Duration::from_secs(2), "envrun lives on");
        std::thread::sleep(Duration::from_millis(5));
    };
    let _ = sleep.kill();
    let _ = sleep.wait();
    assert_eq!(status.signal(), Some(libc::SIGTERM), "{status:?}");
}

/// Fills a pipe nobody reads, so the next blocking write to it waits.
fn fill(w: &std::os::fd::OwnedFd) {
    use nix::fcntl::{FcntlArg, OFlag, fcntl};
    fcntl(w, FcntlArg::F_SETFL(OFlag::O_NONBLOCK)).unwrap();
    while nix::unistd::write(w, &[0u8; 4096]).is_ok() {}
    fcntl(w, FcntlArg::F_SETFL(OFlag::empty())).unwrap();
}
