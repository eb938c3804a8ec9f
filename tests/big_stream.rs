//! A large stream with no secret in it passes through the supervisor's pump intact.
//!
//! The acceptance size is 1 GiB. An unoptimised build pumps at about 40 MB/s, so a debug
//! `cargo test` streams 64 MiB (same code path, same checks) and the full 1 GiB runs in
//! the release step of CI: `cargo test --release --test big_stream` (about 5 s).

mod common;
use common::*;

use std::time::{Duration, Instant};

const SIZE: u64 = if cfg!(debug_assertions) {
    64 << 20
} else {
    1 << 30
};

#[test]
fn a_large_stream_without_secrets_passes_intact() {
    let t = Test::new()
        .file("token.txt", &format!("tok-{CANARY}"))
        .manifest("environment:\n  TOKEN: file:token.txt\n");
    let expected = t.path("expected.sha256");
    // The child streams random bytes and hashes what it wrote on the side; the test hashes
    // what came out of envrun.
    let child = format!(
        "head -c {SIZE} /dev/urandom | tee >(sha256sum > {})",
        expected.display()
    );
    let outer = format!("{BIN} -- bash -c '{child}' | sha256sum");
    let started = Instant::now();
    let done = t
        .run(&["--no-mask", "--", "bash", "-c", &outer])
        .status(0)
        .stderr("");
    let elapsed = started.elapsed();
    let actual = done.stdout_str();
    // The side hash can finish a moment after the child exits.
    let wait = Instant::now();
    let expected = loop {
        let text = std::fs::read_to_string(&expected).unwrap_or_default();
        if text.len() >= 64 {
            break text;
        }
        assert!(wait.elapsed() < Duration::from_secs(10), "no side hash");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(
        actual[..64],
        expected[..64],
        "the stream changed in transit"
    );
    eprintln!("{} MiB through envrun in {elapsed:?}", SIZE >> 20);
}
