//! The test harness: runs the real `envrun` binary in a fresh directory.
//!
//! ```ignore
//! let t = Test::new().secret("TOKEN", "s3cr3t").manifest("environment:\n  T: secret:TOKEN\n");
//! t.run(&["--", "sh", "-c", "echo $T"]).status(0).stdout("s3cr3t\n");
//! ```
//!
//! Every run clears the inherited `ENVRUN_*` variables so the developer's own settings never
//! leak into a test; `RUST_BACKTRACE=full` is set so a panic would show everything it holds.

#![allow(dead_code)]

use std::ffi::OsString;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

pub mod bao;
pub mod live;
pub mod proxy;
pub mod recording_proxy;
pub mod server;

pub const BIN: &str = env!("CARGO_BIN_EXE_envrun");

/// A value that must never appear in anything envrun itself prints.
pub const CANARY: &str = "CANARY-7f3e9b1c-d00d-4bad-a55e-0123456789ab";

pub struct Test {
    pub dir: tempfile::TempDir,
    env: Vec<(OsString, Option<OsString>)>,
    stdin: Option<Vec<u8>>,
}

impl Test {
    pub fn new() -> Test {
        Test {
            dir: tempfile::tempdir().expect("tempdir"),
            env: Vec::new(),
            stdin: None,
        }
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// Writes `envrun.yaml` in the test directory.
    pub fn manifest(self, yaml: &str) -> Test {
        self.file("envrun.yaml", yaml)
    }

    pub fn file(self, rel: &str, content: &str) -> Test {
        let p = self.path(rel);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent).unwrap();
        }
        std::fs::write(&p, content).unwrap();
        self
    }

    /// Creates a directory (and its parents) in the test directory.
    pub fn mkdir(self, rel: &str) -> Test {
        std::fs::create_dir_all(self.path(rel)).unwrap();
        self
    }

    /// Creates the symlink `rel` pointing at `target` (written as given: relative targets
    /// resolve from the link's directory, as the kernel does).
    pub fn symlink(self, rel: &str, target: &str) -> Test {
        let p = self.path(rel);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent).unwrap();
        }
        std::os::unix::fs::symlink(target, &p).unwrap();
        self
    }

    pub fn chmod(self, rel: &str, mode: u32) -> Test {
        std::fs::set_permissions(self.path(rel), std::fs::Permissions::from_mode(mode)).unwrap();
        self
    }

    /// Stores a secret in the test directory's local store with `envrun secrets set`.
    pub fn secret(self, name: &str, value: &str) -> Test {
        let out = self
            .command(&["secrets", "set", name])
            .stdin_bytes(value.as_bytes())
            .output();
        assert!(
            out.status.success(),
            "secrets set failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        self
    }

    pub fn env(mut self, k: &str, v: impl Into<OsString>) -> Test {
        self.env.push((k.into(), Some(v.into())));
        self
    }

    pub fn env_remove(mut self, k: &str) -> Test {
        self.env.push((k.into(), None));
        self
    }

    pub fn stdin(mut self, bytes: &[u8]) -> Test {
        self.stdin = Some(bytes.to_vec());
        self
    }

    /// A `Command` for envrun in the test directory, with the test's environment.
    pub fn command(&self, args: &[&str]) -> Run {
        let mut cmd = Command::new(BIN);
        cmd.args(args).current_dir(self.dir.path());
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("ENVRUN_") {
                cmd.env_remove(&k);
            }
        }
        cmd.env("RUST_BACKTRACE", "full");
        for (k, v) in &self.env {
            match v {
                Some(v) => cmd.env(k, v),
                None => cmd.env_remove(k),
            };
        }
        Run {
            cmd,
            stdin: self.stdin.clone(),
        }
    }

    /// Runs envrun with `args` and returns the finished output for assertions.
    pub fn run(&self, args: &[&str]) -> Done {
        self.command(args).done()
    }

    /// Runs envrun with `--no-mask` before `args`: for tests of which values the command
    /// receives, which masking would hide from the test (masking has its own tests).
    pub fn run_unmasked(&self, args: &[&str]) -> Done {
        let mut all = vec!["--no-mask"];
        all.extend_from_slice(args);
        self.run(&all)
    }
}

pub struct Run {
    pub cmd: Command,
    stdin: Option<Vec<u8>>,
}

impl Run {
    /// Sets a variable for this run only.
    pub fn env_pass(mut self, k: &str, v: &str) -> Run {
        self.cmd.env(k, v);
        self
    }

    pub fn stdin_bytes(mut self, bytes: &[u8]) -> Run {
        self.stdin = Some(bytes.to_vec());
        self
    }

    pub fn output(mut self) -> Output {
        self.cmd.stdin(if self.stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        });
        self.cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = self.cmd.spawn().expect("spawn envrun");
        if let Some(bytes) = self.stdin.take() {
            let mut stdin = child.stdin.take().unwrap();
            // The child may exit without reading; a broken pipe is fine.
            let _ = stdin.write_all(&bytes);
        }
        let out = child.wait_with_output().expect("wait for envrun");
        assert_no_internals(&out.stderr);
        out
    }

    pub fn done(self) -> Done {
        Done(self.output())
    }
}

/// A finished run, with chainable assertions that print everything on failure.
pub struct Done(pub Output);

impl Done {
    pub fn stdout_str(&self) -> String {
        String::from_utf8_lossy(&self.0.stdout).into_owned()
    }

    pub fn stderr_str(&self) -> String {
        String::from_utf8_lossy(&self.0.stderr).into_owned()
    }

    fn context(&self) -> String {
        format!(
            "status: {:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.0.status,
            self.stdout_str(),
            self.stderr_str()
        )
    }

    pub fn code(&self) -> Option<i32> {
        self.0.status.code()
    }

    pub fn status(self, code: i32) -> Done {
        assert_eq!(self.0.status.code(), Some(code), "{}", self.context());
        self
    }

    pub fn stdout(self, expected: &str) -> Done {
        assert_eq!(self.stdout_str(), expected, "{}", self.context());
        self
    }

    pub fn stderr(self, expected: &str) -> Done {
        assert_eq!(self.stderr_str(), expected, "{}", self.context());
        self
    }

    pub fn stdout_has(self, needle: &str) -> Done {
        assert!(
            self.stdout_str().contains(needle),
            "stdout lacks {needle:?}\n{}",
            self.context()
        );
        self
    }

    pub fn stderr_has(self, needle: &str) -> Done {
        assert!(
            self.stderr_str().contains(needle),
            "stderr lacks {needle:?}\n{}",
            self.context()
        );
        self
    }

    /// Asserts that `secret` appears nowhere in envrun's stdout or stderr.
    pub fn never_shows(self, secret: &str) -> Done {
        for (what, bytes) in [("stdout", &self.0.stdout), ("stderr", &self.0.stderr)] {
            assert!(
                !bytes.windows(secret.len()).any(|w| w == secret.as_bytes()),
                "{what} shows the secret\n{}",
                self.context()
            );
        }
        self
    }
}

/// Words of Rust and of envrun's libraries that a user must never read in an envrun message
/// ("use Option<String>", "set DuplicateKeyPolicy in Options", "untagged enum DotenvFile",
/// "AliasAnchorRatio {...}"): every message envrun prints in every test is checked.
pub const INTERNAL_WORDS: &[&str] = &[
    "Option<",
    "DuplicateKeyPolicy",
    "in Options",
    "untagged enum",
    "did not match any variant",
    "AliasAnchorRatio",
    "breached",
    "serde",
    "saphyr",
    "Vec<",
    "PathBuf",
    "String>",
    "invalid type:",
    "Os {",
    "Kind(",
];

/// Fails if a line envrun itself printed (`envrun: ...`) names library internals.
pub fn assert_no_internals(stderr: &[u8]) {
    for line in String::from_utf8_lossy(stderr).lines() {
        if !line.starts_with("envrun:") {
            continue;
        }
        if let Some(w) = INTERNAL_WORDS.iter().find(|w| line.contains(*w)) {
            panic!("envrun's message names a library internal ({w:?}): {line}");
        }
    }
}

/// True if `path` exists (for marker files that prove a child did or did not run).
pub fn exists(path: &Path) -> bool {
    path.exists()
}

/// The path of a tool from a Debian package that a test needs (strace, script, unshare).
/// On a fresh machine without it the package is installed (CI runs as root with Debian's
/// registry reachable), so such a test provisions itself instead of being skipped; if that
/// fails the test fails, saying what to install.
pub fn debian_tool(bin: &str, package: &str) -> PathBuf {
    let find = || {
        std::env::var_os("PATH").and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|d| d.join(bin))
                .find(|p| p.is_file())
        })
    };
    if let Some(p) = find() {
        return p;
    }
    // One installer at a time across parallel test binaries.
    let script = format!(
        "command -v {bin} >/dev/null || {{ apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq {package}; }}"
    );
    let status = Command::new("flock")
        .args(["/tmp/envrun-tests-apt.lock", "sh", "-c", &script])
        .stdout(Stdio::null())
        .status();
    match (status, find()) {
        (Ok(s), Some(p)) if s.success() => p,
        _ => panic!("this test needs `{bin}`: install the Debian package `{package}`"),
    }
}

/// Whether every tool a test needs is on PATH. If one is missing the test should return
/// early: this prints which tool and that the test is skipped, instead of failing or
/// installing anything.
pub fn tools_or_skip(test: &str, tools: &[&str]) -> bool {
    let on_path = |bin: &str| {
        std::env::var_os("PATH")
            .is_some_and(|paths| std::env::split_paths(&paths).any(|d| d.join(bin).is_file()))
    };
    match tools.iter().find(|t| !on_path(t)) {
        None => true,
        Some(missing) => {
            eprintln!("skipped {test}: `{missing}` is not installed");
            false
        }
    }
}
