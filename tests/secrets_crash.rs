//! Crash safety of `envrun secrets set`: SIGKILL at many points of a write, then check that
//! the store still opens with its key, the secret being written holds its old or its new
//! value, every other secret is intact, and the next successful write leaves no temp file.
//!
//! Half the kills are exact: `strace -e inject=SYSCALL:signal=SIGKILL:when=N` kills envrun
//! as it enters the Nth call of one syscall, cycling through every syscall envrun makes
//! from taking the lock to exiting (taken from a reference trace, so the list follows the
//! code). The other half are blind: SIGKILL after a random delay, which also lands inside
//! syscalls and between instructions.
//!
//! `cargo test` runs 200 kills; `CRASH_TRIALS=1000 scripts/crash-trials.sh` runs more.
//! `CRASH_SEED` replays a run (the seed is printed).

mod common;
use common::*;

use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::{Command, ExitStatus, Stdio};
use std::time::Duration;

use envrun::secret::Secret;
use envrun::store::{self, Contents, Key};

const TARGET: &str = "TARGET";

/// xorshift64*: enough randomness to spread kill points; reproducible from the seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

struct Store {
    dir: tempfile::TempDir,
}

impl Store {
    fn store(&self) -> PathBuf {
        self.dir.path().join("secrets.json.enc")
    }
    fn key(&self) -> PathBuf {
        self.dir.path().join("secrets.key")
    }

    fn envrun(&self) -> Command {
        let mut cmd = Command::new(BIN);
        self.args(&mut cmd);
        cmd
    }

    fn args(&self, cmd: &mut Command) {
        self.args_for(cmd, &["set", TARGET]);
    }

    fn args_for(&self, cmd: &mut Command, sub: &[&str]) {
        cmd.args(["secrets", "--file"])
            .arg(self.store())
            .arg("--key-file")
            .arg(self.key())
            .args(sub)
            .current_dir(self.dir.path())
            .env_remove("ENVRUN_KEY")
            .env_remove("ENVRUN_STORE")
            .env_remove("ENVRUN_KEY_FILE")
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
    }

    fn read(&self) -> BTreeMap<String, String> {
        let key = Key::load(&self.key()).expect("the key file is intact");
        store::read(&self.store(), &key)
            .unwrap_or_else(|e| panic!("the store does not open after a kill: {e}"))
            .secrets
            .iter()
            .map(|(k, v)| (k.clone(), String::from_utf8(v.expose().to_vec()).unwrap()))
            .collect()
    }

    fn temp_files(&self) -> Vec<String> {
        std::fs::read_dir(self.dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.contains(".tmp."))
            .collect()
    }
}

/// A store of 20 secrets (plus TARGET), written with the library to save process starts.
fn fixture() -> (Store, BTreeMap<String, String>) {
    let s = Store {
        dir: tempfile::tempdir().unwrap(),
    };
    let key = Key::generate().unwrap();
    key.create_file(&s.key()).unwrap();
    let mut expected = BTreeMap::new();
    for i in 0..20 {
        expected.insert(
            format!("S{i:02}"),
            format!("value {i} {}", "x".repeat(i * 7)),
        );
    }
    expected.insert(TARGET.to_owned(), "initial".to_owned());
    let contents = Contents {
        secrets: expected
            .iter()
            .map(|(k, v)| (k.clone(), Secret::from_slice(v.as_bytes())))
            .collect(),
        ..Contents::default()
    };
    let lock = store::lock(&s.store()).unwrap();
    store::write(&s.store(), &key, &contents, &lock).unwrap();
    std::fs::set_permissions(s.key(), std::fs::Permissions::from_mode(0o600)).unwrap();
    (s, expected)
}

fn feed(mut cmd: Command, value: &str) -> std::process::Child {
    let mut child = cmd.spawn().expect("spawn");
    let mut stdin = child.stdin.take().unwrap();
    // The child may be dead already; a broken pipe is part of the game.
    let _ = stdin.write_all(value.as_bytes());
    drop(stdin);
    child
}

/// strace running envrun (arguments still to add) so that the `n`th `syscall` kills it.
fn kill_at(syscall: &str, n: usize) -> Command {
    let mut cmd = Command::new(debian_tool("strace", "strace"));
    cmd.args(["-f", "-o", "/dev/null", "-e"])
        .arg(format!("trace={syscall}"))
        .arg("-e")
        .arg(format!("inject={syscall}:signal=SIGKILL:when={n}"))
        .arg(BIN);
    cmd
}

/// Every (syscall, occurrence) envrun makes from `flock` to exit, from one traced run of
/// `set TARGET` (or of `sub`).
fn kill_points(s: &Store) -> Vec<(String, usize)> {
    kill_points_of(s, &["set", TARGET])
}

fn kill_points_of(s: &Store, sub: &[&str]) -> Vec<(String, usize)> {
    let trace = s.dir.path().join("reference.trace");
    let mut cmd = Command::new(debian_tool("strace", "strace"));
    cmd.arg("-f").arg("-o").arg(&trace).arg(BIN);
    s.args_for(&mut cmd, sub);
    let out = feed(cmd, "reference value").wait_with_output().unwrap();
    assert!(out.status.success(), "reference run: {out:?}");
    let text = std::fs::read_to_string(&trace).unwrap();
    std::fs::remove_file(&trace).unwrap();
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    let mut points = Vec::new();
    let mut after_lock = false;
    for line in text.lines() {
        // "PID name(args...) = ret"
        let Some(call) = line.split_whitespace().nth(1) else {
            continue;
        };
        let Some((name, _)) = call.split_once('(') else {
            continue;
        };
        let n = seen.entry(name.to_owned()).or_default();
        *n += 1;
        after_lock |= name == "flock";
        if after_lock && name != "exit_group" {
            points.push((name.to_owned(), *n));
        }
    }
    assert!(
        points.iter().any(|(n, _)| n == "rename") && points.iter().any(|(n, _)| n == "fsync"),
        "unexpected reference trace: {text}"
    );
    points
}

#[derive(Default)]
struct Tally {
    kills: usize,
    old_seen: usize,
    new_seen: usize,
    temp_left: usize,
    not_killed: usize,
}

fn killed(status: ExitStatus) -> bool {
    status.signal() == Some(9)
}

fn run_trials(wanted: usize, seed: u64) -> Tally {
    let (s, mut expected) = fixture();
    let points = kill_points(&s);
    assert_eq!(s.read()[TARGET], "reference value");
    expected.insert(TARGET.to_owned(), "reference value".to_owned());
    let mut rng = Rng(seed | 1);
    let mut tally = Tally::default();
    let mut attempt = 0usize;
    let offset = rng.below(points.len() as u64) as usize;
    while tally.kills < wanted {
        attempt += 1;
        assert!(
            attempt <= wanted * 3,
            "only {} kills in {attempt} attempts",
            tally.kills
        );
        let old = expected[TARGET].clone();
        let new = format!("new {attempt} {}", "y".repeat(rng.below(300) as usize));
        let status = if attempt.is_multiple_of(2) {
            let (name, n) = &points[(attempt / 2 + offset) % points.len()];
            let mut cmd = kill_at(name, *n);
            s.args(&mut cmd);
            feed(cmd, &new).wait().unwrap()
        } else {
            let mut child = feed(s.envrun(), &new);
            std::thread::sleep(Duration::from_micros(rng.below(6000)));
            let _ = child.kill();
            child.wait().unwrap()
        };
        if killed(status) {
            tally.kills += 1;
        } else {
            assert!(status.success(), "attempt {attempt}: {status:?}");
            tally.not_killed += 1;
        }

        // After the kill: the store opens, TARGET is old or new, the rest is intact.
        let mut now = s.read();
        let got = now.remove(TARGET).expect("TARGET is still there");
        if got == old {
            tally.old_seen += 1;
        } else if got == new {
            tally.new_seen += 1;
        } else {
            panic!("attempt {attempt} (seed {seed}): TARGET is neither old nor new: {got:?}");
        }
        expected.insert(TARGET.to_owned(), got);
        let mut others = expected.clone();
        others.remove(TARGET);
        assert_eq!(
            now, others,
            "attempt {attempt} (seed {seed}): other secrets changed"
        );
        if !s.temp_files().is_empty() {
            tally.temp_left += 1;
        }

        // The next successful write cleans up after the killed one.
        let after = format!("after {attempt}");
        let out = feed(s.envrun(), &after).wait_with_output().unwrap();
        assert!(out.status.success(), "attempt {attempt}: {out:?}");
        assert_eq!(s.temp_files(), Vec::<String>::new(), "attempt {attempt}");
        assert_eq!(s.read()[TARGET], after);
        expected.insert(TARGET.to_owned(), after);
    }
    tally
}

#[test]
fn sigkill_during_set_never_loses_or_corrupts_a_secret() {
    let wanted: usize = std::env::var("CRASH_TRIALS")
        .ok()
        .map(|v| v.parse().expect("CRASH_TRIALS is a number"))
        .unwrap_or(200);
    let seed: u64 = std::env::var("CRASH_SEED")
        .ok()
        .map(|v| v.parse().expect("CRASH_SEED is a number"))
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        });
    let t = run_trials(wanted, seed);
    eprintln!(
        "crash trials (seed {seed}): {} kills, {} runs finished before the kill; after a kill TARGET held the old value {} times and the new value {} times; a temp file was left {} times and removed by the next write every time",
        t.kills, t.not_killed, t.old_seen, t.new_seen, t.temp_left
    );
    assert!(t.kills >= wanted);
    // The kills landed on both sides of the rename, and some left a temp file behind.
    assert!(t.old_seen > 0 && t.new_seen > 0 && t.temp_left > 0);
}

/// `rotate-key` killed at every syscall from the lock on: the store always opens with
/// `secrets.key` or `secrets.key.old`, holds every secret, and the next write leaves it
/// under `secrets.key` alone.
#[test]
fn sigkill_during_rotate_key_leaves_a_store_one_of_the_two_keys_opens() {
    let points = {
        let (s, _) = fixture();
        kill_points_of(&s, &["rotate-key"])
    };
    let mut kills = 0;
    for (name, n) in &points {
        let (s, expected) = fixture();
        let mut cmd = kill_at(name, *n);
        s.args_for(&mut cmd, &["rotate-key"]);
        let status = feed(cmd, "").wait().unwrap();
        if killed(status) {
            kills += 1;
        }
        let opened = envrun::store::read_with(&s.store(), &envrun::store::KeySource::File(s.key()))
            .unwrap_or_else(|e| panic!("killed at {name} #{n}: neither key opens the store: {e}"));
        let got: BTreeMap<String, String> = opened
            .contents
            .secrets
            .iter()
            .map(|(k, v)| (k.clone(), String::from_utf8(v.expose().to_vec()).unwrap()))
            .collect();
        assert_eq!(got, expected, "killed at {name} #{n}");
        let out = feed(s.envrun(), "after").wait_with_output().unwrap();
        assert!(out.status.success(), "killed at {name} #{n}: {out:?}");
        assert_eq!(s.read()[TARGET], "after", "killed at {name} #{n}");
        assert!(s.temp_files().is_empty(), "killed at {name} #{n}");
    }
    eprintln!(
        "rotate-key: killed at {kills} of {} syscall points",
        points.len()
    );
    assert!(
        kills * 10 >= points.len() * 9,
        "{kills} of {}",
        points.len()
    );
}
