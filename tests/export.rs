//! `envrun export`: the resolved environment printed, secrets masked unless revealed.

mod common;
use common::*;

fn with_secret() -> Test {
    Test::new()
        .file("token.txt", &format!("it's \"{CANARY}\"\n$x"))
        .manifest("environment:\n  LEVEL: info\n  TOKEN: file:token.txt\n")
}

#[test]
fn secrets_are_masked_by_default_in_every_format() {
    let t = with_secret();
    t.run(&["export"])
        .status(0)
        .stdout("LEVEL=\"info\"\nTOKEN=\"***\"\n")
        .never_shows(CANARY);
    t.run(&["export", "--format", "shell"])
        .status(0)
        .stdout("export LEVEL='info'\nexport TOKEN='***'\n");
    t.run(&["export", "--format", "json", "--mask-with", "[{name}]"])
        .status(0)
        .stdout("{\"LEVEL\":\"info\",\"TOKEN\":\"[TOKEN]\"}\n");
}

#[test]
fn revealed_values_round_trip_through_a_shell_and_json() {
    let t = with_secret();
    let value = std::fs::read_to_string(t.path("token.txt")).unwrap();
    // file: drops one trailing newline; this value has none at the end.
    let shell = t
        .run(&["export", "--format", "shell", "--reveal"])
        .status(0)
        .stdout_str();
    let script = format!("{shell}printf %s \"$TOKEN\"");
    let out = std::process::Command::new("sh")
        .args(["-c", &script])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), value);
    let json = t
        .run(&["export", "--format", "json", "--reveal"])
        .status(0)
        .stdout_str();
    let parsed: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(parsed["TOKEN"], value.as_str());
    assert_eq!(parsed["LEVEL"], "info");
}

#[test]
fn revealed_dotenv_reads_back_with_a_dotenv_parser() {
    let t = with_secret();
    let value = std::fs::read_to_string(t.path("token.txt")).unwrap();
    let dotenv = t.run(&["export", "--reveal"]).status(0).stdout_str();
    let parsed: Vec<(String, String)> = dotenvy::from_read_iter(dotenv.as_bytes())
        .collect::<Result<_, _>>()
        .unwrap();
    assert!(parsed.contains(&("TOKEN".to_owned(), value)), "{parsed:?}");
}

#[test]
fn force_needs_reveal() {
    with_secret()
        .run(&["export", "--force"])
        .status(125)
        .stderr_has("--reveal");
}
