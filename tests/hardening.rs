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
