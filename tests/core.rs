//! The core path with the real binary: manifest, every reference kind, exec, exit codes.

mod common;
use common::*;

#[test]
fn harness_runs_the_binary() {
    Test::new()
        .secret("T", "v4lue")
        .manifest("environment:\n  T: secret:T\n")
        .run(&["--", "sh", "-c", "test \"$T\" = v4lue && echo ok"])
        .status(0)
        .stdout("ok\n");
}
