//! Regressions of issue 13 (hardening), each through the real binary: temp files an
//! attacker cannot plant, backups that cannot destroy the store, files that are not regular,
//! exact manifest errors and hints that do not mislead.

mod common;
use common::*;

use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The unprivileged user the attacks run as.
const ATTACKER: &str = "65534";

/// `setpriv` when envrun's tests run as root (they do in CI); otherwise the attacks cannot
/// be staged as another user and the test says so.
fn attacker() -> Option<std::path::PathBuf> {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: the attacker runs as another user, which needs root (setpriv)");
        return None;
    }
    Some(debian_tool("setpriv", "util-linux"))
}

/// Runs `script` with `sh` as the unprivileged attacker.
fn as_attacker(setpriv: &Path, script: &str) {
    let status = Command::new(setpriv)
        .args([
            &format!("--reuid={ATTACKER}"),
            &format!("--regid={ATTACKER}"),
            "--clear-groups",
            "sh",
            "-c",
            script,
        ])
        .status()
        .unwrap();
    assert!(status.success(), "attacker script failed: {script}");
}

/// A directory inside the test directory that every user can write to (no sticky bit), as
/// a careless shared directory is.
fn shared_dir(t: &Test) -> std::path::PathBuf {
    std::fs::set_permissions(t.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let shared = t.path("shared");
    std::fs::create_dir(&shared).unwrap();
    std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o777)).unwrap();
    shared
}

/// Starts envrun with `args` through `sh`, which execs it after a line on stdin: the PID is
/// known before envrun runs, so an attacker can plant files named after it (the old temp
/// file name was `.NAME.tmp.PID`). `plant(pid)` runs in between.
fn run_with_pid_known(t: &Test, args: &[&str], plant: impl FnOnce(u32)) -> std::process::Output {
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg("read go; exec \"$0\" \"$@\"")
        .arg(BIN)
        .args(args)
        .current_dir(t.dir.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("ENVRUN_") {
            cmd.env_remove(&k);
        }
    }
    let mut child = cmd.spawn().unwrap();
    plant(child.id());
    child.stdin.take().unwrap().write_all(b"go\n").unwrap();
    child.wait_with_output().unwrap()
}

fn assert_private_file_of_root(path: &Path) {
    let meta = std::fs::symlink_metadata(path).unwrap();
    assert!(meta.is_file(), "{} is not a regular file", path.display());
    assert_eq!(meta.uid(), 0, "{} is not owned by root", path.display());
    assert_eq!(meta.mode() & 0o777, 0o600, "{}", path.display());
}

#[test]
fn backup_does_not_follow_a_symlink_planted_at_the_old_temp_name() {
    let Some(setpriv) = attacker() else { return };
    let t = Test::new().secret("TOKEN", CANARY);
    let shared = shared_dir(&t);
    let victim = t.path("victim");
    std::fs::write(&victim, "root's file\n").unwrap();
    let out = run_with_pid_known(&t, &["secrets", "backup", "shared/backup.enc"], |pid| {
        as_attacker(
            &setpriv,
            &format!(
                "ln -s {} {}/.backup.enc.tmp.{pid}",
                victim.display(),
                shared.display()
            ),
        );
    });
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        std::fs::read(&victim).unwrap(),
        b"root's file\n",
        "the symlink's target was overwritten"
    );
    let backup = shared.join("backup.enc");
    assert_private_file_of_root(&backup);
    assert!(std::fs::read(&backup).unwrap().starts_with(b"ENVRUN"));
}

#[test]
fn rotate_key_never_adopts_a_temp_file_an_attacker_precreated() {
    let Some(setpriv) = attacker() else { return };
    let t = Test::new();
    let shared = shared_dir(&t);
    let t = t.secret("TOKEN", CANARY);
    let store = ["-f", "shared/secrets.json.enc"];
    let mut set = vec!["secrets"];
    set.extend(store);
    set.extend(["set", "TOKEN"]);
    t.command(&set)
        .stdin_bytes(CANARY.as_bytes())
        .done()
        .status(0);
    let mut rotate = vec!["secrets"];
    rotate.extend(store);
    rotate.push("rotate-key");
    let names = ["secrets.key", "secrets.key.old", "secrets.json.enc"];
    let out = run_with_pid_known(&t, &rotate, |pid| {
        let mut script = String::new();
        for name in names {
            script.push_str(&format!(
                "printf planted > {dir}/.{name}.tmp.{pid} && chmod 666 {dir}/.{name}.tmp.{pid}\n",
                dir = shared.display()
            ));
        }
        as_attacker(&setpriv, &script);
    });
    assert!(out.status.success(), "{out:?}");
    for name in ["secrets.key", "secrets.key.old", "secrets.json.enc"] {
        assert_private_file_of_root(&shared.join(name));
    }
    // The planted files are still the attacker's own, holding what the attacker wrote.
    let key = std::fs::read_to_string(shared.join("secrets.key")).unwrap();
    for entry in std::fs::read_dir(&shared).unwrap().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.contains(".tmp.") {
            assert_eq!(entry.metadata().unwrap().uid(), 65534, "{name}");
            let text = std::fs::read_to_string(entry.path()).unwrap();
            assert_eq!(text, "planted", "{name}");
            assert!(!text.contains(key.trim()));
        }
    }
    let mut get = vec!["secrets"];
    get.extend(store);
    get.extend(["get", "TOKEN", "--reveal"]);
    t.run(&get).status(0).stdout(CANARY);
}

#[test]
fn temp_files_have_unpredictable_names_and_are_created_exclusively() {
    // strace shows the temp file's name (random, not the PID) and its flags and mode.
    let strace = debian_tool("strace", "strace");
    let t = Test::new().secret("TOKEN", CANARY);
    let trace = t.path("trace");
    let out = Command::new(&strace)
        .args(["-f", "-e", "trace=openat", "-o"])
        .arg(&trace)
        .arg(BIN)
        .args(["secrets", "backup", "b.enc"])
        .current_dir(t.dir.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let trace = std::fs::read_to_string(&trace).unwrap();
    let line = trace
        .lines()
        .find(|l| l.contains(".b.enc.tmp."))
        .unwrap_or_else(|| panic!("no temp file opened:\n{trace}"));
    for flag in ["O_CREAT", "O_EXCL", "O_NOFOLLOW", "O_CLOEXEC", "0600"] {
        assert!(line.contains(flag), "{flag} missing: {line}");
    }
    // With -f every line starts with the PID of the process that made the call.
    let pid = line.split_whitespace().next().unwrap();
    let name = line.split(".b.enc.tmp.").nth(1).unwrap();
    let suffix: String = name.chars().take_while(|c| c.is_ascii_hexdigit()).collect();
    assert_ne!(suffix, pid, "{line}");
    assert!(
        suffix.len() >= 16,
        "temp name too short to be unpredictable: {line}"
    );
}

#[test]
fn backup_refuses_the_store_its_key_the_old_key_and_the_lock_even_with_force() {
    let t = Test::new().secret("TOKEN", CANARY);
    t.command(&["secrets", "rotate-key"]).done().status(0);
    t.command(&["secrets", "set", "OTHER"])
        .stdin_bytes(b"x-value")
        .done()
        .status(0);
    std::fs::hard_link(t.path("secrets.key"), t.path("key-link")).unwrap();
    std::os::unix::fs::symlink("secrets.key", t.path("key-symlink")).unwrap();
    let before: Vec<Vec<u8>> = ["secrets.key", "secrets.key.old", "secrets.json.enc"]
        .iter()
        .map(|n| std::fs::read(t.path(n)).unwrap())
        .collect();
    for (dest, what) in [
        ("secrets.key", "the store's key file"),
        ("./secrets.key", "the store's key file"),
        ("key-link", "the store's key file"),
        ("key-symlink", "the store's key file"),
        ("secrets.key.old", "previous key"),
        ("secrets.json.enc", "is the store"),
        ("secrets.json.enc.lock", "lock file"),
    ] {
        t.run(&["secrets", "backup", dest, "--force"])
            .status(125)
            .stderr_has(what)
            .stderr_has("would destroy it")
            .never_shows(CANARY);
    }
    let after: Vec<Vec<u8>> = ["secrets.key", "secrets.key.old", "secrets.json.enc"]
        .iter()
        .map(|n| std::fs::read(t.path(n)).unwrap())
        .collect();
    assert_eq!(before, after);
    t.run(&["secrets", "get", "TOKEN", "--reveal"])
        .status(0)
        .stdout(CANARY);
}

#[test]
fn backup_to_a_symlink_is_refused_unless_force_replaces_the_link_itself() {
    let t = Test::new()
        .secret("TOKEN", CANARY)
        .file("target.txt", "keep me\n");
    std::os::unix::fs::symlink("target.txt", t.path("link.enc")).unwrap();
    t.run(&["secrets", "backup", "link.enc"])
        .status(125)
        .stderr_has("link.enc is a symbolic link")
        .stderr_has("--force to replace the link itself");
    t.run(&["secrets", "backup", "link.enc", "--force"])
        .status(0);
    assert_eq!(
        std::fs::read_to_string(t.path("target.txt")).unwrap(),
        "keep me\n"
    );
    let meta = std::fs::symlink_metadata(t.path("link.enc")).unwrap();
    assert!(meta.is_file());
    assert_eq!(meta.mode() & 0o777, 0o600);
}

#[test]
fn the_store_is_not_written_through_a_symlink() {
    let t = Test::new().secret("TOKEN", CANARY);
    std::fs::rename(t.path("secrets.json.enc"), t.path("real.enc")).unwrap();
    std::os::unix::fs::symlink("real.enc", t.path("secrets.json.enc")).unwrap();
    // Reading through the link works; replacing the link with a file is refused.
    t.run(&["secrets", "get", "TOKEN", "--reveal"])
        .status(0)
        .stdout(CANARY);
    t.command(&["secrets", "set", "OTHER"])
        .stdin_bytes(b"other-value")
        .done()
        .status(125)
        .stderr_has("secrets.json.enc is a symbolic link")
        .never_shows(CANARY);
    assert!(
        std::fs::symlink_metadata(t.path("secrets.json.enc"))
            .unwrap()
            .file_type()
            .is_symlink()
    );
}

/// Runs `envrun` with a `file:` reference to `path` and returns the finished run, failing if
/// it takes more than a few seconds (a FIFO used to hang it, `/dev/zero` to exhaust memory).
fn run_file_ref(t: &Test, path: &str) -> Done {
    let manifest = format!("environment:\n  V: \"file:{path}\"\n");
    std::fs::write(t.path("envrun.yaml"), manifest).unwrap();
    let mut child = t.command(&["--", "true"]).cmd;
    child
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = child.spawn().unwrap();
    let started = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if started.elapsed() > Duration::from_secs(10) {
            let _ = child.kill();
            panic!("envrun did not finish reading file:{path}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Done(child.wait_with_output().unwrap())
}

#[test]
fn file_references_read_only_regular_files_of_bounded_size() {
    let t = Test::new();
    nix::unistd::mkfifo(
        &t.path("fifo"),
        nix::sys::stat::Mode::from_bits_truncate(0o600),
    )
    .unwrap();
    run_file_ref(&t, "fifo")
        .status(125)
        .stderr_has("fifo is a FIFO, not a regular file")
        .stderr_has("hint: `file:` reads a regular file");
    run_file_ref(&t, "/dev/zero")
        .status(125)
        .stderr_has("/dev/zero is a character device, not a regular file");
    std::fs::create_dir(t.path("dir")).unwrap();
    run_file_ref(&t, "dir")
        .status(125)
        .stderr_has("dir is a directory, not a regular file");
    let big = std::fs::File::create(t.path("big")).unwrap();
    big.set_len(2 << 20).unwrap();
    run_file_ref(&t, "big")
        .status(125)
        .stderr_has("big is larger than 1048576 bytes");
}

#[test]
fn key_files_and_stores_that_are_devices_or_directories_get_the_right_hint() {
    let t = Test::new().secret("TOKEN", CANARY);
    t.run(&["secrets", "--key-file", "/dev/zero", "list"])
        .status(125)
        .stderr_has("/dev/zero is a character device, not a regular file")
        .stderr_has("hint: point it at a regular file")
        .never_shows("chmod");
    std::fs::create_dir(t.path("store-dir")).unwrap();
    t.run(&[
        "secrets",
        "-f",
        "store-dir",
        "--key-file",
        "secrets.key",
        "list",
    ])
    .status(125)
    .stderr_has("store-dir is a directory, not a regular file")
    .never_shows("chmod");
}

/// Runs `shell_cmd` on a pseudo-terminal (script(1)); types `keys` once envrun's prompt
/// shows. Returns everything the terminal showed.
fn on_a_terminal(t: &Test, shell_cmd: &str, keys: &[u8]) -> String {
    use std::io::Read;
    use std::sync::{Arc, Mutex};
    let mut child = Command::new(debian_tool("script", "util-linux"))
        .args(["-qfec", shell_cmd, "/dev/null"])
        .current_dir(t.dir.path())
        .env("SHELL", "/bin/sh")
        .env_remove("ENVRUN_KEY")
        .env_remove("ENVRUN_STORE")
        .env_remove("ENVRUN_KEY_FILE")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run script(1) from util-linux");
    let seen = Arc::new(Mutex::new(Vec::new()));
    let mut out = child.stdout.take().unwrap();
    let reader = {
        let seen = seen.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = out.read(&mut buf) {
                if n == 0 {
                    break;
                }
                seen.lock().unwrap().extend_from_slice(&buf[..n]);
            }
        })
    };
    let start = Instant::now();
    while !String::from_utf8_lossy(&seen.lock().unwrap()).contains("(input hidden): ") {
        assert!(start.elapsed() < Duration::from_secs(10), "no prompt");
        std::thread::sleep(Duration::from_millis(10));
    }
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(keys).unwrap();
    stdin.flush().unwrap();
    // Keep stdin open until the command is done: script(1) turns its EOF into ^D.
    while child.try_wait().unwrap().is_none() {
        assert!(start.elapsed() < Duration::from_secs(20), "script hangs");
        std::thread::sleep(Duration::from_millis(10));
    }
    drop(stdin);
    reader.join().unwrap();
    String::from_utf8_lossy(&seen.lock().unwrap()).into_owned()
}

#[test]
fn the_prompt_refuses_a_value_typed_with_arrow_keys_and_stdin_stays_byte_exact() {
    let t = Test::new();
    // abc, Left-arrow, def, Enter: used to store "abc\x1b[Ddef".
    let screen = on_a_terminal(
        &t,
        &format!("'{BIN}' secrets set P; echo status=$?"),
        b"abc\x1b[Ddef\r",
    );
    assert!(screen.contains("terminal escape sequence"), "{screen}");
    assert!(screen.contains("nothing was stored"), "{screen}");
    assert!(screen.contains("status=125"), "{screen}");
    assert!(!t.path("secrets.json.enc").exists());
    // The same bytes on stdin are a value like any other.
    t.command(&["secrets", "set", "P"])
        .stdin_bytes(b"abc\x1b[Ddef")
        .done()
        .status(0);
    let out = t.run(&["secrets", "get", "P", "--reveal"]).status(0);
    assert_eq!(out.0.stdout, b"abc\x1b[Ddef");
    // Typing plainly still works.
    let screen = on_a_terminal(
        &t,
        &format!("'{BIN}' secrets set Q; echo status=$?"),
        b"plain-value\r",
    );
    assert!(screen.contains("status=0"), "{screen}");
    t.run(&["secrets", "get", "Q", "--reveal"])
        .status(0)
        .stdout("plain-value");
}

#[test]
fn set_refuses_a_value_with_a_nul_byte() {
    let t = Test::new();
    t.command(&["secrets", "set", "N"])
        .stdin_bytes(b"before\0after")
        .done()
        .status(125)
        .stderr_has("the value of `N` contains a NUL byte")
        .stderr_has("nothing was stored")
        .never_shows("before");
    assert!(!t.path("secrets.json.enc").exists());
}

#[test]
fn a_nul_in_a_resolved_value_is_not_called_a_usage_error() {
    let t = Test::new().manifest("environment:\n  V: file:v.bin\n");
    std::fs::write(t.path("v.bin"), b"a\0b-CANARY").unwrap();
    t.run(&["--", "true"])
        .status(125)
        .stderr_has("the value of `V` contains a NUL byte")
        .never_shows("--help")
        .never_shows("CANARY");
}

#[test]
fn envrun_masks_its_own_messages_before_escaping_them() {
    // A secret with ESC in it: escaped first, it no longer matched the mask. The command
    // name is the only place a test can make envrun print a value of its own accord.
    let secret = format!("\x1b[31m{CANARY}");
    let t = Test::new().manifest("environment:\n  V: file:v.txt\n");
    std::fs::write(t.path("v.txt"), &secret).unwrap();
    t.run(&["--", &secret])
        .status(127)
        .stderr_has("command not found")
        .never_shows(CANARY);
}

/// Runs envrun with `manifest` and expects exit 125 with each of `expected` in the error.
fn manifest_error(manifest: &str, expected: &[&str]) {
    let t = Test::new().manifest(manifest);
    let mut done = t.run(&["--", "true"]).status(125);
    for e in expected {
        done = done.stderr_has(e);
    }
    // The harness already fails on library words in any envrun message; say so here too.
    assert_no_internals(&done.0.stderr);
}

#[test]
fn unknown_keys_are_errors_at_every_level_with_a_suggestion() {
    // Used to be ignored: `requird: false` silently meant required.
    manifest_error(
        "secrets:\n  type: dotenv\n  files:\n    - path: .env\n      requird: false\n",
        &[
            "line 5 column 7: unknown key `requird` under `secrets.files[0]`",
            "did you mean `required`?",
        ],
    );
    manifest_error(
        "enviroment:\n  A: x\n",
        &[
            "line 1 column 1: unknown key `enviroment` at the top level; did you mean `environment`?",
        ],
    );
    manifest_error(
        "backends:\n  p:\n    type: env\n    prefx: A\n",
        &["line 4 column 5: unknown key `prefx` under `backends.p`; did you mean `prefix`?"],
    );
    manifest_error(
        "secrets:\n  type: vaultt\n",
        &["unknown type `vaultt`; did you mean `vault`?"],
    );
}

#[test]
fn errors_point_at_the_offending_key_not_its_parent() {
    // Used to be reported at line 1 column 1.
    manifest_error(
        "secrets: {type: local, bogus: 1}\n",
        &["line 1 column 24: unknown key `bogus` under `secrets`"],
    );
    manifest_error(
        "environment:\n  A: x\nsecrets:\n  type: local\n  bogus: 1\n",
        &["line 5 column 3: unknown key `bogus` under `secrets`"],
    );
}

#[test]
fn library_internals_are_rewritten_into_what_to_fix() {
    manifest_error(
        "environment:\n  A: x\n  A: y\n",
        // `envrun check` reports a variable defined twice as a finding; a run refuses it,
        // naming both lines.
        &["line 3 column 3: key `A` appears twice under `environment`; keep one (lines 2, 3)"],
    );
    manifest_error(
        "secrets:\n  type: local\n  path: a.enc\n  path: b.enc\n",
        &["line 4 column 3: key `path` appears twice under `secrets`; keep one"],
    );
    manifest_error(
        "secrets: {type: local}\nsecrets: {type: env}\n",
        &["line 2 column 1: key `secrets` appears twice at the top level; keep one"],
    );
    manifest_error(
        "environment:\n  A:\n",
        &["line 2 column 4: a value is missing after `:`"],
    );
    manifest_error(
        "secrets:\n  type: dotenv\n  files: [3]\n",
        &["expected a file path, or `{ path: FILE, required: false }`"],
    );
    manifest_error(
        "environment:\n  A: [1, 2]\n",
        &["expected one value (text or a number) here, not a list or a mapping"],
    );
    // Many aliases of one anchor trip the YAML parser's limits ("AliasAnchorRatio {...}").
    let mut many = String::from("environment:\n  A: &a lol\n");
    for i in 0..150 {
        many.push_str(&format!("  B{i}: *a\n"));
    }
    manifest_error(
        &many,
        &["the manifest is too large or nests or repeats aliases (`*name`) too much"],
    );
}

/// Writes an executable file in the test directory.
fn script(t: &Test, name: &str, content: &[u8]) {
    std::fs::write(t.path(name), content).unwrap();
    std::fs::set_permissions(t.path(name), std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// A manifest with one secret value, so envrun supervises instead of exec-ing.
fn supervised() -> Test {
    Test::new()
        .file("tok.txt", "tok-value-123")
        .manifest("environment:\n  T: file:tok.txt\n")
}

#[test]
fn a_missing_interpreter_is_named_not_called_command_not_found() {
    for t in [Test::new(), supervised()] {
        script(&t, "a.sh", b"#!/nonexistent/interp\necho hi\n");
        t.run(&["--", "./a.sh"])
            .status(126)
            .stderr_has("its interpreter /nonexistent/interp (from the `#!` line) does not exist")
            .stderr_has("hint: install /nonexistent/interp")
            .never_shows("command not found");
        script(&t, "crlf.sh", b"#!/bin/sh\r\necho hi\r\n");
        t.run(&["--", "./crlf.sh"])
            .status(126)
            .stderr_has("carriage return")
            .stderr_has("Windows (CRLF) line endings")
            .stderr_has("dos2unix ./crlf.sh")
            .never_shows("command not found");
    }
}

#[test]
fn a_script_without_a_shebang_runs_with_bin_sh_as_shells_do() {
    for t in [Test::new(), supervised()] {
        script(
            &t,
            "plain.sh",
            b"printf 'ran as %s with %s' \"$0\" \"$1\"\n",
        );
        t.run(&["--", "./plain.sh", "arg-1"])
            .status(0)
            .stdout("ran as ./plain.sh with arg-1");
        // Not text: said so, not run with /bin/sh.
        script(&t, "blob", b"\x00\x01\x02binary\n");
        t.run(&["--", "./blob"])
            .status(126)
            .stderr_has("not a program this system can run");
    }
}

#[test]
fn a_command_without_dashes_gets_the_line_that_would_run_it() {
    let t = Test::new();
    t.run(&["echo", "hi"])
        .status(125)
        .stderr_has("hint: to run a command, put `--` before it: `envrun -- echo hi`");
    t.run(&["--no-mask", "-m", "x.yaml", "sh", "-c", "echo $A"])
        .status(125)
        .stderr_has("`envrun --no-mask -m x.yaml -- sh -c 'echo $A'`");
    // A mistyped subcommand is not mistaken for a command.
    t.run(&["secrets", "lst"])
        .status(125)
        .stderr_has("'list'")
        .never_shows("put `--` before it");
}

#[test]
fn empty_envrun_variables_count_as_unset() {
    let t = Test::new().file("v.txt", "from-file");
    for (var, value) in [
        ("ENVRUN_MANIFEST", ""),
        ("ENVRUN_NO_MASK", ""),
        ("ENVRUN_MIN_MASK_LEN", ""),
        ("ENVRUN_MASK_WITH", ""),
        ("ENVRUN_TENANT", ""),
        ("ENVRUN_TIMEOUT", ""),
    ] {
        t.command(&["--", "sh", "-c", "printf ok"])
            .env_pass(var, value)
            .done()
            .status(0)
            .stdout("ok")
            .stderr("");
    }
    // ENVRUN_MASK_WITH= masks with the default, not with nothing.
    let t = Test::new()
        .file("v.txt", "value-to-mask-42")
        .manifest("environment:\n  V: file:v.txt\n");
    t.command(&["--", "sh", "-c", "printf %s \"$V\""])
        .env_pass("ENVRUN_MASK_WITH", "")
        .done()
        .status(0)
        .stdout("***");
}

#[test]
fn a_bad_value_in_a_variable_names_the_variable_not_the_flag() {
    let t = Test::new();
    for (var, value, flag) in [
        ("ENVRUN_MIN_MASK_LEN", "abc", "--min-mask-len"),
        ("ENVRUN_NO_MASK", "maybe", "--no-mask"),
        ("ENVRUN_TIMEOUT", "soon", "--timeout"),
    ] {
        t.command(&["--", "true"])
            .env_pass(var, value)
            .done()
            .status(125)
            .stderr_has(&format!("invalid value '{value}' in ${var}"))
            .stderr_has(&format!("hint: fix or unset {var} (it stands for {flag}"))
            .never_shows("for '--");
    }
    // On the command line it is the flag's fault.
    t.run(&["--min-mask-len", "abc", "--", "true"])
        .status(125)
        .stderr_has("for '--min-mask-len <N>'");
    // The tenant is checked after parsing, and named the same way.
    t.command(&["--", "true"])
        .env_pass("ENVRUN_TENANT", "../up")
        .done()
        .status(125)
        .stderr_has("$ENVRUN_TENANT: tenant `../up`");
    t.run(&["--tenant", "../up", "--", "true"])
        .status(125)
        .stderr_has("--tenant: tenant `../up`");
}

#[test]
fn hints_name_the_next_step_for_the_backend_and_cause() {
    let t = Test::new()
        .manifest("secrets:\n  type: files\n  dir: secrets\nenvironment:\n  A: secret:MISSING\n")
        .mkdir("secrets");
    t.run(&["--", "true"])
        .status(125)
        .stderr_has("hint: create ")
        .stderr_has("secrets/MISSING")
        .never_shows("secrets list");
    let t = Test::new()
        .manifest("secrets:\n  type: env\n  prefix: APP_\nenvironment:\n  A: secret:MISSING\n");
    t.run(&["--", "true"])
        .status(125)
        .stderr_has("hint: set $APP_MISSING in envrun's environment")
        .never_shows("secrets list");
    let t = Test::new()
        .manifest("environment:\n  A: secret:MISSING\n")
        .secret("X", "x-value");
    t.run(&["--", "true"])
        .status(125)
        .stderr_has("`envrun secrets set MISSING` adds it");
    // Not usage errors, so no pointer to --help.
    Test::new()
        .command(&["secrets", "set", "E"])
        .stdin_bytes(b"")
        .done()
        .status(125)
        .stderr_has("empty value on stdin")
        .never_shows("--help");
    let t = Test::new().file("bad.env", "A=\"unclosed\n");
    t.run(&["check", "--template", "missing.env"])
        .status(125)
        .stderr_has("hint: check the path given to --template")
        .never_shows("--help");
    t.run(&["check", "--template", "bad.env"])
        .status(125)
        .stderr_has("hint: a template holds NAME=value lines")
        .never_shows("--help");
}

/// Runs `script` as root in a private mount namespace with a fresh tmpfs on /run, so a test
/// can mount secrets where Docker and Kubernetes do without touching the machine's /run.
fn in_private_run(t: &Test, script: &str) -> Option<Done> {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: mounting a tmpfs on /run needs root (unshare --mount)");
        return None;
    }
    let unshare = debian_tool("unshare", "util-linux");
    let mut run = t.command(&[]);
    let mut cmd = Command::new(unshare);
    cmd.args(["--mount", "--propagation", "private", "sh", "-c"])
        .arg(format!("mount -t tmpfs tmpfs /run && {script}"))
        .current_dir(t.dir.path());
    for (k, v) in run.cmd.get_envs() {
        match v {
            Some(v) => cmd.env(k, v),
            None => cmd.env_remove(k),
        };
    }
    run.cmd = cmd;
    Some(run.done())
}

#[test]
fn files_mounted_as_docker_and_kubernetes_do_are_not_warned_about() {
    let t = Test::new().manifest(
        "secrets:\n  type: files\nbackends:\n  k8s:\n    type: files\n    dir: /var/run/secrets/app\nenvironment:\n  A: secret:TOKEN\n  B: secret@k8s:PASSWORD\n",
    );
    let Some(done) = in_private_run(
        &t,
        &format!(
            "mkdir -p /run/secrets/app && printf tok-value > /run/secrets/TOKEN && chmod 444 /run/secrets/TOKEN \
             && printf pw-value > /run/secrets/app/PASSWORD && chmod 644 /run/secrets/app/PASSWORD \
             && exec '{BIN}' -- sh -c 'test \"$A\" = tok-value && test \"$B\" = pw-value'"
        ),
    ) else {
        return;
    };
    done.status(0).stderr("");
    // Writable by others is not a platform's mode: still warned about there.
    let Some(done) = in_private_run(
        &t,
        &format!(
            "mkdir -p /run/secrets/app && printf tok-value > /run/secrets/TOKEN && chmod 666 /run/secrets/TOKEN \
             && printf pw-value > /run/secrets/app/PASSWORD && chmod 400 /run/secrets/app/PASSWORD \
             && exec '{BIN}' -- true"
        ),
    ) else {
        return;
    };
    done.status(0)
        .stderr_has("/run/secrets/TOKEN is readable by other users (mode 0666)");
}

#[test]
fn a_world_readable_secret_elsewhere_warns_unless_warn_readable_is_false() {
    let manifest = |extra: &str| {
        format!("secrets:\n  type: files\n  dir: secrets\n{extra}environment:\n  A: secret:TOKEN\n")
    };
    let t = Test::new()
        .manifest(&manifest(""))
        .file("secrets/TOKEN", "tok-value")
        .chmod("secrets/TOKEN", 0o644);
    t.run(&["--", "true"])
        .status(0)
        .stderr_has("secrets/TOKEN is readable by other users (mode 0644)")
        .stderr_has("`warn_readable: false`");
    std::fs::write(t.path("envrun.yaml"), manifest("  warn_readable: false\n")).unwrap();
    t.run(&["--", "true"]).status(0).stderr("");
}

/// Every writable private mapping of process `pid` (heap, stacks, anonymous memory), read
/// through /proc/PID/mem. Needs CAP_SYS_PTRACE: envrun is not dumpable.
fn writable_memory(pid: u32) -> Vec<u8> {
    use std::io::{Read, Seek, SeekFrom};
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap();
    let mut mem = std::fs::File::open(format!("/proc/{pid}/mem")).unwrap();
    let mut out = Vec::new();
    for line in maps.lines() {
        let mut fields = line.split_whitespace();
        let (Some(range), Some(perms)) = (fields.next(), fields.next()) else {
            continue;
        };
        if !perms.starts_with("rw") || line.contains("[vvar") || line.contains("[vsyscall") {
            continue;
        }
        let (start, end) = range.split_once('-').unwrap();
        let start = u64::from_str_radix(start, 16).unwrap();
        let end = u64::from_str_radix(end, 16).unwrap();
        let mut buf = vec![0u8; (end - start) as usize];
        if mem.seek(SeekFrom::Start(start)).is_ok() && mem.read_exact(&mut buf).is_ok() {
            out.extend_from_slice(&buf);
        }
    }
    out
}

#[test]
fn values_envrun_no_longer_needs_are_wiped_from_its_memory() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: reading envrun's memory needs CAP_SYS_PTRACE (root)");
        return;
    }
    // Each canary is read and then dropped during resolution: a nested JSON field nobody
    // asked for (with escapes, so serde_json unescapes it in its scratch buffer, and
    // rendered as JSON text), and a .env variable nobody asked for (dotenvy's line buffer).
    // Long, so that the allocator's own bookkeeping in a freed block (the first 16 bytes)
    // does not hide what stays behind; the scan looks for their tails.
    let json_canary = "json-canary-5e1f\\\"q\\\"-77aa-tail-of-the-json-canary-0c3d9e";
    let env_canary = "dotenv-canary-0b9c-31f7-tail-of-the-dotenv-canary-8a2b4f";
    let db = format!(r#"{{"user":"app-user-4821","opts":{{"k":"{json_canary}"}}}}"#);
    let t = Test::new()
        .secret("DB", &db)
        .file(".env", &format!("UNUSED='{env_canary}'\nUSED=used-value-9911\n"))
        .manifest(
            "backends:\n  dev:\n    type: dotenv\nenvironment:\n  U: secret:DB#user\n  V: secret@dev:USED\n",
        );
    // The comment is a control: the command line stays in envrun's memory while it runs.
    let script = "echo ready; read x # control-7c41-in-argv";
    let mut cmd = t.command(&["--", "sh", "-c", script]).cmd;
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let mut line = [0u8; 6];
    std::io::Read::read_exact(&mut stdout, &mut line).unwrap();
    assert_eq!(&line, b"ready\n");
    // envrun is now supervising: resolution is over and only the masks remain.
    let memory = writable_memory(child.id());
    child.stdin.take().unwrap().write_all(b"go\n").unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{out:?}");
    let contains = |needle: &str| memory.windows(needle.len()).any(|w| w == needle.as_bytes());
    assert!(
        contains("control-7c41-in-argv"),
        "the scan does not see envrun's memory"
    );
    for canary in [
        "tail-of-the-json-canary-0c3d9e",
        "tail-of-the-dotenv-canary-8a2b4f",
    ] {
        assert!(!contains(canary), "{canary:?} is still in envrun's memory");
    }
}
