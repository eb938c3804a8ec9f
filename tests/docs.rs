//! The documentation agrees with the program: the man page is generated from the clap
//! definition and must not be stale; README and man page mention every option.

mod common;
use common::*;

#[test]
fn checked_in_man_page_is_current() {
    let generated = Test::new().run(&["man"]).status(0).0.stdout;
    let checked_in = std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/man/envrun.1")).unwrap();
    assert!(
        generated == checked_in,
        "man/envrun.1 is stale: run `cargo run -q -- man > man/envrun.1` and commit it"
    );
}

/// Every long option and subcommand of the CLI, from its own definition.
fn cli_words() -> Vec<String> {
    fn walk(cmd: &clap::Command, out: &mut Vec<String>) {
        for arg in cmd.get_arguments() {
            if let Some(long) = arg.get_long()
                && long != "help"
                && long != "version"
            {
                out.push(format!("--{long}"));
            }
        }
        for sub in cmd.get_subcommands() {
            if !sub.is_hide_set() && sub.get_name() != "help" {
                out.push(sub.get_name().to_owned());
                walk(sub, out);
            }
        }
    }
    let mut out = Vec::new();
    walk(&envrun::cli::command(), &mut out);
    out.sort();
    out.dedup();
    out
}

#[test]
fn readme_help_and_man_page_mention_every_option() {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let man =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/man/envrun.1")).unwrap();
    let help = Test::new().run(&["--help"]).status(0).stdout_str();
    let mut missing = Vec::new();
    for word in cli_words() {
        if !readme.contains(&word) {
            missing.push(format!("README lacks {word}"));
        }
        // roff escapes '-' as '\-'.
        if !man.contains(&word.replace('-', "\\-")) && !man.contains(&word) {
            missing.push(format!("man page lacks {word}"));
        }
    }
    for word in cli_words().iter().filter(|w| w.starts_with("--")) {
        let top_level = envrun::cli::command()
            .get_arguments()
            .any(|a| a.get_long() == Some(&word[2..]));
        if top_level && !help.contains(word.as_str()) {
            missing.push(format!("--help lacks {word}"));
        }
    }
    assert!(missing.is_empty(), "{}", missing.join("\n"));
}

#[test]
fn completions_are_generated_for_every_shell() {
    for shell in ["bash", "zsh", "fish", "elvish", "powershell"] {
        let out = Test::new().run(&["completions", shell]).status(0);
        assert!(out.stdout_str().contains("envrun"), "{shell}");
    }
}

/// The README's first command, exactly as written there.
const README_DEMO: &str = "chmod 600 examples/demo/secrets.* && cargo run -q -- -m examples/demo/envrun.yaml -- sh examples/demo/show.sh";

#[test]
fn readme_first_command_runs_the_demo() {
    let root = env!("CARGO_MANIFEST_DIR");
    let readme = std::fs::read_to_string(format!("{root}/README.md")).unwrap();
    let first_block = readme
        .split("```sh\n")
        .nth(1)
        .unwrap()
        .split("```")
        .next()
        .unwrap();
    assert_eq!(
        first_block.trim(),
        README_DEMO,
        "the README's first command changed: update this test"
    );
    // Run the same thing on a copy (so the checkout's file modes are left alone), with the
    // built binary in place of `cargo run`.
    let t = Test::new();
    std::fs::create_dir_all(t.path("examples/demo")).unwrap();
    for entry in std::fs::read_dir(format!("{root}/examples/demo")).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name().into_string().unwrap();
        if !name.ends_with(".lock") {
            std::fs::copy(entry.path(), t.path(&format!("examples/demo/{name}"))).unwrap();
        }
    }
    let t = t
        .chmod("examples/demo/secrets.json.enc", 0o600)
        .chmod("examples/demo/secrets.key", 0o600);
    let expected = readme
        .split("```text\n")
        .nth(1)
        .unwrap()
        .split("```")
        .next()
        .unwrap();
    t.run(&[
        "-m",
        "examples/demo/envrun.yaml",
        "--",
        "sh",
        "examples/demo/show.sh",
    ])
    .status(0)
    .stdout(expected)
    .stderr("");
}
