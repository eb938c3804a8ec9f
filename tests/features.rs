//! Build features and the shared network settings, through the binary: a manifest naming a
//! backend this build lacks says which feature to build with; `--timeout` is checked.

mod common;

use common::Test;

/// Each network backend type, and the cargo feature that brings it.
const NETWORK: &[(&str, &str, bool)] = &[
    ("vault", "vault", cfg!(feature = "vault")),
    ("aws", "aws", cfg!(feature = "aws")),
    ("aws-ssm", "aws", cfg!(feature = "aws")),
    ("gcp", "gcp", cfg!(feature = "gcp")),
    ("azure", "azure", cfg!(feature = "azure")),
];

#[test]
fn a_backend_left_out_of_the_build_names_its_feature() {
    for (kind, feature, built) in NETWORK {
        let t = Test::new().manifest(&format!(
            "backends:\n  remote:\n    type: {kind}\nenvironment:\n  X: secret@remote:some/key\n"
        ));
        // No cloud metadata service is ever asked from a test (it is off this machine).
        let done = t
            .command(&["--timeout", "2s", "--", "sh", "-c", "echo ran"])
            .env_pass("AWS_EC2_METADATA_DISABLED", "true")
            .env_pass("GCE_METADATA_HOST", "127.0.0.1:1")
            .env_pass("AZURE_POD_IDENTITY_AUTHORITY_HOST", "http://127.0.0.1:1")
            .done();
        let err = done.stderr_str();
        assert!(
            !done.stdout_str().contains("ran"),
            "the command ran: {kind}"
        );
        assert_eq!(done.code(), Some(125), "{kind}: {err}");
        if *built {
            assert!(!err.contains("built without"), "{kind}: {err}");
        } else {
            assert!(
                err.contains(&format!("built without the `{kind}` backend"))
                    && err.contains(&format!("--features {feature}")),
                "{kind}: {err}"
            );
        }
    }
}

#[test]
fn timeout_is_checked_from_flag_environment_and_manifest() {
    let t = Test::new().manifest("environment:\n  A: plain\n");
    t.run(&["--timeout", "soon", "--", "true"])
        .status(125)
        .stderr_has("`soon` is not a duration");
    t.command(&["--", "true"])
        .env_pass("ENVRUN_TIMEOUT", "0")
        .done()
        .status(125)
        .stderr_has("more than zero");
    t.run(&["--timeout", "1m30s", "--", "true"]).status(0);
    let t = Test::new().manifest("timeout: never\nenvironment:\n  A: plain\n");
    t.run(&["--", "true"])
        .status(125)
        .stderr_has("line 1 column 10: timeout:");
}
