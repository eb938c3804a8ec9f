//! `envrun secrets` with the real binary: every command, its error cases, the no-echo prompt
//! on a real pseudo-terminal, plaintext never written (strace), concurrent writers, and
//! every single-bit corruption of a store rejected cleanly.

mod common;
use common::*;

use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use envrun::store::{self, Key};

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o7777
}

/// The store's contents, read with the library and the test's key file.
fn read_store(t: &Test) -> Vec<(String, String)> {
    let key = Key::load(&t.path("secrets.key")).unwrap();
    store::read(&t.path("secrets.json.enc"), &key)
        .unwrap()
        .secrets
        .iter()
        .map(|(k, v)| (k.clone(), String::from_utf8(v.expose().to_vec()).unwrap()))
        .collect()
}

fn set(t: &Test, name: &str, value: &str) -> Done {
    t.command(&["secrets", "set", name])
        .stdin_bytes(value.as_bytes())
        .done()
}

fn temp_files(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".tmp."))
        .collect()
}

// --- set -------------------------------------------------------------------------------

#[test]
fn first_set_creates_key_and_store_0600_and_says_so() {
    let t = Test::new();
    set(&t, "TOKEN", CANARY)
        .status(0)
        .stdout("")
        .stderr_has("created a new key secrets.key and store secrets.json.enc")
        .stderr_has("added `TOKEN` to secrets.json.enc")
        .never_shows(CANARY);
    for f in ["secrets.key", "secrets.json.enc", "secrets.json.enc.lock"] {
        assert_eq!(mode(&t.path(f)), 0o600, "{f}");
    }
    assert_eq!(read_store(&t), [("TOKEN".into(), CANARY.into())]);
    let raw = std::fs::read(t.path("secrets.json.enc")).unwrap();
    assert!(!raw.windows(CANARY.len()).any(|w| w == CANARY.as_bytes()));
}

#[test]
fn set_replaces_a_value_and_strips_one_trailing_newline() {
    let t = Test::new().secret("A", "one");
    set(&t, "A", "two\n\n")
        .status(0)
        .stderr_has("updated `A` in secrets.json.enc");
    assert_eq!(read_store(&t), [("A".into(), "two\n".into())]);
}

#[test]
fn set_with_the_value_as_argument_works_but_warns() {
    let t = Test::new();
    t.run(&["secrets", "set", "A", CANARY])
        .status(0)
        .stderr_has("warning: the value of `A` was given on the command line")
        .stderr_has("shell history")
        .never_shows(CANARY);
    assert_eq!(read_store(&t), [("A".into(), CANARY.into())]);
}

#[test]
fn set_refuses_an_empty_value_and_a_non_utf8_one() {
    let t = Test::new();
    set(&t, "A", "")
        .status(125)
        .stderr_has("empty value on stdin");
    t.command(&["secrets", "set", "A"])
        .stdin_bytes(b"\xff\xfe")
        .done()
        .status(125)
        .stderr_has("value of `A` is not UTF-8");
    assert!(!t.path("secrets.json.enc").exists());
}

#[test]
fn set_with_a_key_but_no_store_creates_the_store_with_that_key() {
    let t = Test::new();
    Key::generate()
        .unwrap()
        .create_file(&t.path("secrets.key"))
        .unwrap();
    let before = std::fs::read(t.path("secrets.key")).unwrap();
    set(&t, "A", "v")
        .status(0)
        .stderr_has("created a new store secrets.json.enc");
    assert_eq!(std::fs::read(t.path("secrets.key")).unwrap(), before);
    assert_eq!(read_store(&t), [("A".into(), "v".into())]);
}

#[test]
fn set_with_a_store_but_no_key_is_an_error_not_a_new_key() {
    let t = Test::new().secret("A", "v");
    std::fs::remove_file(t.path("secrets.key")).unwrap();
    set(&t, "B", "w")
        .status(125)
        .stderr_has("key file secrets.key not found");
    assert!(!t.path("secrets.key").exists());
}

#[test]
fn names_with_bad_characters_are_refused_by_every_command() {
    let t = Test::new().secret("A", "v");
    for args in [
        &["secrets", "set", "bad name"][..],
        &["secrets", "get", "a$b"],
        &["secrets", "exists", "a=b"],
        &["secrets", "delete", "ä"],
        &["secrets", "generate", "a:b"],
        &["secrets", "set", ""],
    ] {
        t.command(args)
            .stdin_bytes(b"v")
            .done()
            .status(125)
            .stdout("")
            .stderr_has("invalid secret name");
    }
    // The legal punctuation.
    set(&t, "team.app/DB-pass_1", "v").status(0);
}

// --- get -------------------------------------------------------------------------------

#[test]
fn get_shows_the_masked_form() {
    let t = Test::new()
        .secret("LONG", CANARY)
        .secret("MID", "123456789012")
        .secret("SHORT", "abcdefg");
    t.run(&["secrets", "get", "LONG"])
        .status(0)
        .stdout("CAN***...9ab\n")
        .never_shows(CANARY);
    t.run(&["secrets", "get", "MID"])
        .status(0)
        .stdout("12***...12\n");
    t.run(&["secrets", "get", "SHORT"])
        .status(0)
        .stdout("***\n");
}

#[test]
fn get_reveal_prints_the_raw_value_alone() {
    let t = Test::new()
        .secret("A", CANARY)
        .secret("ML", "line 1\nline 2");
    t.run(&["secrets", "get", "A", "--reveal"])
        .status(0)
        .stdout(CANARY)
        .stderr("");
    t.run(&["secrets", "get", "ML", "--reveal"])
        .status(0)
        .stdout("line 1\nline 2");
    // As a script uses it.
    t.run(&[
        "--",
        "sh",
        "-c",
        &format!("v=\"$('{BIN}' secrets get A --reveal)\"; test \"$v\" = '{CANARY}' && echo same"),
    ])
    .status(0)
    .stdout("same\n");
}

#[test]
fn get_of_a_missing_name_exits_1_with_a_message() {
    let t = Test::new().secret("A", "v");
    t.run(&["secrets", "get", "B"])
        .status(1)
        .stdout("")
        .stderr_has("no secret `B` in secrets.json.enc");
    t.run(&["secrets", "get", "B", "--reveal"])
        .status(1)
        .stdout("");
}

// --- list, exists, delete --------------------------------------------------------------

#[test]
fn list_is_sorted_names_only_and_json() {
    let t = Test::new()
        .secret("b", CANARY)
        .secret("A", CANARY)
        .secret("a/x", CANARY);
    t.run(&["secrets", "list"])
        .status(0)
        .stdout("A\na/x\nb\n")
        .never_shows(CANARY);
    t.run(&["secrets", "list", "--json"])
        .status(0)
        .stdout("[\"A\",\"a/x\",\"b\"]\n");
    let e = Test::new();
    e.run(&["secrets", "init"]).status(0);
    e.run(&["secrets", "list"]).status(0).stdout("");
    e.run(&["secrets", "list", "--json"])
        .status(0)
        .stdout("[]\n");
}

#[test]
fn exists_answers_with_its_status_only() {
    let t = Test::new().secret("A", "v");
    t.run(&["secrets", "exists", "A"])
        .status(0)
        .stdout("")
        .stderr("");
    t.run(&["secrets", "exists", "B"])
        .status(1)
        .stdout("")
        .stderr("");
}

#[test]
fn delete_removes_one_secret_and_exits_1_when_absent() {
    let t = Test::new().secret("A", "v").secret("B", "w");
    t.run(&["secrets", "delete", "A"])
        .status(0)
        .stderr_has("deleted `A`");
    assert_eq!(read_store(&t), [("B".into(), "w".into())]);
    t.run(&["secrets", "delete", "A"])
        .status(1)
        .stderr_has("no secret `A`");
    t.run(&["secrets", "rm", "B"]).status(0);
    assert!(read_store(&t).is_empty());
}

// --- errors common to every command ----------------------------------------------------

#[test]
fn a_missing_store_is_an_error_for_readers() {
    let t = Test::new();
    Key::generate()
        .unwrap()
        .create_file(&t.path("secrets.key"))
        .unwrap();
    for args in [
        &["secrets", "get", "A"][..],
        &["secrets", "list"],
        &["secrets", "exists", "A"],
        &["secrets", "delete", "A"],
        &["secrets", "backup", "b.enc"],
        &["secrets", "rotate-key"],
    ] {
        t.run(args)
            .status(125)
            .stdout("")
            .stderr_has("store secrets.json.enc not found");
    }
}

#[test]
fn a_wrong_key_is_a_clear_error_for_every_command() {
    let t = Test::new().secret("A", CANARY);
    let other = Key::generate().unwrap().to_base64().to_string();
    let t = t.env("ENVRUN_KEY", other);
    for args in [
        &["secrets", "get", "A"][..],
        &["secrets", "list"],
        &["secrets", "exists", "A"],
        &["secrets", "delete", "A"],
        &["secrets", "set", "B", "v"],
        &["secrets", "generate", "C"],
        &["secrets", "backup", "b.enc"],
    ] {
        t.run(args)
            .status(125)
            .stdout("")
            .stderr_has("store secrets.json.enc is corrupted or the key is wrong")
            .never_shows(CANARY);
    }
    assert!(!t.path("b.enc").exists());
}

#[test]
fn group_or_world_readable_files_are_refused() {
    let t = Test::new()
        .secret("A", "v")
        .chmod("secrets.json.enc", 0o644);
    t.run(&["secrets", "list"])
        .status(125)
        .stderr_has("secrets.json.enc has mode 0644")
        .stderr_has("chmod 600");
    let t = t
        .chmod("secrets.json.enc", 0o600)
        .chmod("secrets.key", 0o640);
    t.run(&["secrets", "get", "A"])
        .status(125)
        .stderr_has("secrets.key has mode 0640");
}

#[test]
fn file_and_key_file_options_and_their_variables() {
    let t = Test::new().file("sub/.keep", "");
    t.command(&[
        "secrets",
        "-f",
        "sub/s.enc",
        "--key-file",
        "k.key",
        "set",
        "A",
    ])
    .stdin_bytes(b"v1")
    .done()
    .status(0);
    assert!(t.path("sub/s.enc").exists() && t.path("k.key").exists());
    t.run(&[
        "secrets",
        "get",
        "A",
        "--reveal",
        "--file",
        "sub/s.enc",
        "--key-file",
        "k.key",
    ])
    .status(0)
    .stdout("v1");
    let t = t
        .env("ENVRUN_STORE", "sub/s.enc")
        .env("ENVRUN_KEY_FILE", "k.key");
    t.run(&["secrets", "list"]).status(0).stdout("A\n");
    // $ENVRUN_KEY wins over the key file.
    let t = t.env(
        "ENVRUN_KEY",
        Key::generate().unwrap().to_base64().to_string(),
    );
    t.run(&["secrets", "list"])
        .status(125)
        .stderr_has("corrupted or the key is wrong");
}

// --- init --------------------------------------------------------------------------------

#[test]
fn init_creates_both_files_and_refuses_to_overwrite_either() {
    let t = Test::new();
    t.run(&["secrets", "init"])
        .status(0)
        .stderr_has("created a new key secrets.key")
        .stderr_has("created an empty store secrets.json.enc");
    assert_eq!(mode(&t.path("secrets.key")), 0o600);
    assert_eq!(mode(&t.path("secrets.json.enc")), 0o600);
    assert!(read_store(&t).is_empty());
    let key = std::fs::read(t.path("secrets.key")).unwrap();
    t.run(&["secrets", "init"])
        .status(125)
        .stderr_has("store secrets.json.enc already exists");
    std::fs::remove_file(t.path("secrets.json.enc")).unwrap();
    t.run(&["secrets", "init"])
        .status(125)
        .stderr_has("key file secrets.key already exists");
    assert_eq!(std::fs::read(t.path("secrets.key")).unwrap(), key);
    assert!(!t.path("secrets.json.enc").exists());
}

#[test]
fn init_with_the_key_in_the_environment_creates_only_the_store() {
    let key = Key::generate().unwrap().to_base64().to_string();
    let t = Test::new().env("ENVRUN_KEY", &key);
    t.run(&["secrets", "init"]).status(0);
    assert!(!t.path("secrets.key").exists());
    set(&t, "A", "v").status(0);
    t.run(&["secrets", "get", "A", "--reveal"])
        .status(0)
        .stdout("v");
}

// --- import ------------------------------------------------------------------------------

#[test]
fn import_takes_prefixed_variables_and_reports_counts_never_values() {
    let t = Test::new().secret("B", "old");
    let t = t
        .env("SECRET_A", CANARY)
        .env("SECRET_B", format!("{CANARY}-new"))
        .env("SECRET_team/db.pass", "x1")
        .env("OTHER_C", "y");
    t.run(&["secrets", "import"])
        .status(0)
        .stdout("")
        .stderr_has("2 added, 1 updated, 0 unchanged")
        .never_shows(CANARY);
    assert_eq!(
        read_store(&t),
        [
            ("A".into(), CANARY.into()),
            ("B".into(), format!("{CANARY}-new")),
            ("team/db.pass".into(), "x1".into())
        ]
    );
    t.run(&["secrets", "import"])
        .status(0)
        .stderr_has("0 added, 0 updated, 3 unchanged");
    t.run(&["secrets", "import", "--prefix", "OTHER_"])
        .status(0)
        .stderr_has("1 added");
    t.run(&["secrets", "get", "C", "--reveal"]).stdout("y");
}

#[test]
fn import_is_all_or_nothing() {
    let t = Test::new()
        .secret("Z", "z")
        .env("SECRET_OK", "v")
        .env("SECRET_bad name", "v");
    t.run(&["secrets", "import"])
        .status(125)
        .stderr_has("cannot import $SECRET_bad name")
        .stderr_has("nothing was imported");
    assert_eq!(read_store(&t), [("Z".into(), "z".into())]);
    let t = t.env_remove("SECRET_bad name").env("SECRET_EMPTY", "");
    t.run(&["secrets", "import"])
        .status(125)
        .stderr_has("$SECRET_EMPTY: its value is empty");
    assert_eq!(read_store(&t), [("Z".into(), "z".into())]);
}

#[test]
fn import_with_nothing_to_import_and_an_empty_prefix() {
    let t = Test::new();
    t.run(&["secrets", "import", "--prefix", "NO_SUCH_PREFIX_"])
        .status(0)
        .stderr_has("nothing imported");
    assert!(!t.path("secrets.json.enc").exists());
    t.run(&["secrets", "import", "--prefix", ""])
        .status(125)
        .stderr_has("--prefix must not be empty");
    // The store's own key is never imported.
    let key = Key::generate().unwrap().to_base64().to_string();
    let t = t.env("ENVRUN_KEY", &key).env("ENVRUN_X", "v");
    t.run(&["secrets", "import", "--prefix", "ENVRUN_"])
        .status(0)
        .stderr_has("1 added");
    t.run(&["secrets", "list"]).status(0).stdout("X\n");
}

// --- backup and restore ------------------------------------------------------------------

#[test]
fn backup_copies_the_encrypted_store_0600_and_refuses_to_overwrite() {
    let t = Test::new().secret("A", CANARY);
    t.run(&["secrets", "backup", "b.enc"])
        .status(0)
        .stderr_has("backed up 1 secrets")
        .never_shows(CANARY);
    assert_eq!(mode(&t.path("b.enc")), 0o600);
    assert_eq!(
        std::fs::read(t.path("b.enc")).unwrap(),
        std::fs::read(t.path("secrets.json.enc")).unwrap()
    );
    set(&t, "B", "w").status(0);
    t.run(&["secrets", "backup", "b.enc"])
        .status(125)
        .stderr_has("b.enc already exists")
        .stderr_has("--force");
    t.run(&["secrets", "backup", "b.enc", "--force"]).status(0);
    assert_eq!(
        std::fs::read(t.path("b.enc")).unwrap(),
        std::fs::read(t.path("secrets.json.enc")).unwrap()
    );
    assert!(temp_files(t.dir.path()).is_empty());
}

#[test]
fn restore_brings_back_a_backup_atomically() {
    let t = Test::new().secret("A", "1").secret("B", "2");
    t.run(&["secrets", "backup", "b.enc"]).status(0);
    set(&t, "A", "changed").status(0);
    t.run(&["secrets", "delete", "B"]).status(0);
    t.run(&["secrets", "restore", "b.enc"])
        .status(0)
        .stderr_has("restored 2 secrets from b.enc");
    assert_eq!(
        read_store(&t),
        [("A".into(), "1".into()), ("B".into(), "2".into())]
    );
    assert_eq!(mode(&t.path("secrets.json.enc")), 0o600);
    assert!(temp_files(t.dir.path()).is_empty());
}

#[test]
fn restore_refuses_a_backup_made_with_another_key() {
    let other = Test::new().secret("X", "x");
    other.run(&["secrets", "backup", "other.enc"]).status(0);
    let t = Test::new().secret("A", "1");
    std::fs::copy(other.path("other.enc"), t.path("other.enc")).unwrap();
    let before = std::fs::read(t.path("secrets.json.enc")).unwrap();
    t.run(&["secrets", "restore", "other.enc"])
        .status(125)
        .stderr_has("backup other.enc does not open with the current key")
        .stderr_has("the store was not changed");
    assert_eq!(std::fs::read(t.path("secrets.json.enc")).unwrap(), before);
    // A damaged backup and a missing one are refused too.
    let mut bad = std::fs::read(t.path("secrets.json.enc")).unwrap();
    let last = bad.len() - 1;
    bad[last] ^= 1;
    let t = t.file("bad.enc", "");
    std::fs::write(t.path("bad.enc"), bad).unwrap();
    t.run(&["secrets", "restore", "bad.enc"]).status(125);
    t.run(&["secrets", "restore", "missing.enc"])
        .status(125)
        .stderr_has("cannot read backup missing.enc");
    assert_eq!(std::fs::read(t.path("secrets.json.enc")).unwrap(), before);
}

// --- rotate-key --------------------------------------------------------------------------

#[test]
fn rotate_key_re_encrypts_and_keeps_the_old_key_until_discarded() {
    let t = Test::new().secret("A", CANARY).secret("B", "two");
    let old_key = std::fs::read(t.path("secrets.key")).unwrap();
    t.run(&["secrets", "backup", "before.enc"]).status(0);
    t.run(&["secrets", "rotate-key"])
        .status(0)
        .stderr_has("rotated the key")
        .never_shows(CANARY);
    assert_eq!(std::fs::read(t.path("secrets.key.old")).unwrap(), old_key);
    assert_ne!(std::fs::read(t.path("secrets.key")).unwrap(), old_key);
    assert_eq!(mode(&t.path("secrets.key")), 0o600);
    assert_eq!(mode(&t.path("secrets.key.old")), 0o600);
    // The store opens with the new key alone and no longer with the old one.
    assert_eq!(
        read_store(&t),
        [("A".into(), CANARY.into()), ("B".into(), "two".into())]
    );
    let old = Key::load(&t.path("secrets.key.old")).unwrap();
    assert!(store::read(&t.path("secrets.json.enc"), &old).is_err());
    // A backup from before the rotation is restored and brought under the new key.
    set(&t, "A", "later").status(0);
    t.run(&["secrets", "restore", "before.enc"])
        .status(0)
        .stderr_has("re-encrypted from the previous key");
    assert_eq!(read_store(&t)[0], ("A".into(), CANARY.into()));
    // Rotating again would lose the old key: refused until it is discarded.
    t.run(&["secrets", "rotate-key"])
        .status(125)
        .stderr_has("secrets.key.old exists from an earlier rotation");
    t.run(&["secrets", "rotate-key", "--discard-old"])
        .status(0)
        .stderr_has("deleted the previous key secrets.key.old");
    assert!(!t.path("secrets.key.old").exists());
    t.run(&["secrets", "rotate-key", "--discard-old"])
        .status(0)
        .stderr_has("no previous key");
    t.run(&["secrets", "rotate-key"]).status(0);
    assert_eq!(read_store(&t).len(), 2);
    assert!(temp_files(t.dir.path()).is_empty());
}

#[test]
fn rotate_key_refuses_a_key_from_the_environment() {
    let key = Key::generate().unwrap().to_base64().to_string();
    let t = Test::new().env("ENVRUN_KEY", &key);
    set(&t, "A", "v").status(0);
    let before = std::fs::read(t.path("secrets.json.enc")).unwrap();
    t.run(&["secrets", "rotate-key"])
        .status(125)
        .stderr_has("rotate-key cannot update $ENVRUN_KEY")
        .never_shows(&key);
    assert_eq!(std::fs::read(t.path("secrets.json.enc")).unwrap(), before);
}

/// The state a crash between step 2 (new key file) and step 3 (re-encrypted store) of
/// `rotate-key` leaves: readers still work, the next write finishes the rotation, and the
/// old key is not discarded while it is the only one that opens the store.
#[test]
fn an_interrupted_rotation_is_readable_and_finished_by_the_next_write() {
    let t = Test::new()
        .secret("A", "one")
        .manifest("environment:\n  A: secret:A\n");
    std::fs::rename(t.path("secrets.key"), t.path("secrets.key.old")).unwrap();
    Key::generate()
        .unwrap()
        .create_file(&t.path("secrets.key"))
        .unwrap();
    t.run(&["secrets", "get", "A", "--reveal"])
        .status(0)
        .stdout("one");
    t.run(&["--", "sh", "-c", "printf %s \"$A\""])
        .status(0)
        .stdout("one");
    t.run(&["secrets", "rotate-key", "--discard-old"])
        .status(125)
        .stderr_has("secrets.key.old may be the key that does, so it was kept");
    assert!(t.path("secrets.key.old").exists());
    set(&t, "B", "two")
        .status(0)
        .stderr_has("interrupted rotate-key");
    assert_eq!(
        read_store(&t),
        [("A".into(), "one".into()), ("B".into(), "two".into())]
    );
    t.run(&["secrets", "rotate-key", "--discard-old"]).status(0);
}

#[test]
fn rotate_key_finishes_an_interrupted_rotation() {
    let t = Test::new().secret("A", "one");
    std::fs::rename(t.path("secrets.key"), t.path("secrets.key.old")).unwrap();
    Key::generate()
        .unwrap()
        .create_file(&t.path("secrets.key"))
        .unwrap();
    let old = std::fs::read(t.path("secrets.key.old")).unwrap();
    t.run(&["secrets", "rotate-key"]).status(0);
    assert_eq!(std::fs::read(t.path("secrets.key.old")).unwrap(), old);
    assert_eq!(read_store(&t), [("A".into(), "one".into())]);
}

// --- generate ----------------------------------------------------------------------------

#[test]
fn generate_stores_a_random_value_and_prints_only_name_and_length() {
    let t = Test::new();
    let done = t
        .run(&["secrets", "generate", "G"])
        .status(0)
        .stdout("")
        .stderr_has("generated `G`: 32 random characters (alnum)");
    let value = t.run(&["secrets", "get", "G", "--reveal"]).stdout_str();
    assert_eq!(value.len(), 32);
    assert!(value.bytes().all(|b| b.is_ascii_alphanumeric()));
    done.never_shows(&value);
    for (charset, ok) in [
        (
            "hex",
            (|b: u8| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) as fn(u8) -> bool,
        ),
        ("base64", |b| {
            b.is_ascii_alphanumeric() || b == b'+' || b == b'/'
        }),
        ("urlsafe", |b| {
            b.is_ascii_alphanumeric() || b == b'-' || b == b'_'
        }),
    ] {
        let name = format!("G_{charset}");
        t.run(&[
            "secrets",
            "generate",
            &name,
            "--length",
            "200",
            "--charset",
            charset,
        ])
        .status(0)
        .stderr_has("200 random characters");
        let v = t.run(&["secrets", "get", &name, "--reveal"]).stdout_str();
        assert_eq!(v.len(), 200);
        assert!(v.bytes().all(ok), "{charset}: {v}");
    }
}

#[test]
fn generate_refuses_to_replace_without_force_and_bad_lengths() {
    let t = Test::new().secret("G", "keep");
    t.run(&["secrets", "generate", "G"])
        .status(125)
        .stderr_has("secret `G` already exists");
    t.run(&["secrets", "get", "G", "--reveal"]).stdout("keep");
    t.run(&["secrets", "generate", "G", "--force", "--length", "8"])
        .status(0);
    assert_eq!(
        t.run(&["secrets", "get", "G", "--reveal"])
            .stdout_str()
            .len(),
        8
    );
    for bad in ["0", "4097", "-1", "x"] {
        t.run(&["secrets", "generate", "H", "--length", bad])
            .status(125);
    }
    t.run(&["secrets", "generate", "H", "--charset", "emoji"])
        .status(125);
    t.run(&["secrets", "exists", "H"]).status(1);
}

// --- jobs pick up new values -------------------------------------------------------------

#[test]
fn a_job_sees_the_new_value_at_its_next_start() {
    let t = Test::new()
        .secret("T", "v1")
        .manifest("environment:\n  T: secret:T\n");
    let job = ["--", "sh", "-c", "printf %s \"$T\""];
    t.run(&job).status(0).stdout("v1");
    set(&t, "T", "v2").status(0);
    t.run(&job).status(0).stdout("v2");
    t.run(&["secrets", "rotate-key"]).status(0);
    t.run(&job).status(0).stdout("v2");
}

// --- the prompt on a real terminal -------------------------------------------------------

/// Runs `script` (a pseudo-terminal) with `shell_cmd`; types `keys` once the prompt shows.
/// Returns everything the terminal showed.
fn on_a_terminal(t: &Test, shell_cmd: &str, keys: &[u8]) -> String {
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
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "no prompt: {}",
            String::from_utf8_lossy(&seen.lock().unwrap())
        );
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

/// The `echo` flag of the terminal as `stty -a` printed it: "echo" or "-echo".
fn echo_flag(screen: &str) -> &str {
    screen
        .split(|c: char| c.is_whitespace() || c == ';')
        .find(|w| *w == "echo" || *w == "-echo")
        .unwrap_or_else(|| panic!("no echo flag in {screen}"))
}

#[test]
fn set_on_a_terminal_prompts_without_echo_and_restores_the_terminal() {
    let t = Test::new();
    let screen = on_a_terminal(
        &t,
        &format!("'{BIN}' secrets set P; echo status=$?; stty -a"),
        format!("{CANARY}\r").as_bytes(),
    );
    assert!(
        screen.contains("Value for `P` (input hidden): "),
        "{screen}"
    );
    assert!(!screen.contains(CANARY), "the value was echoed: {screen}");
    assert!(screen.contains("status=0"), "{screen}");
    assert_eq!(echo_flag(&screen), "echo", "{screen}");
    assert_eq!(read_store(&t), [("P".into(), CANARY.into())]);
}

#[test]
fn ctrl_c_at_the_prompt_stores_nothing_and_restores_the_terminal() {
    let t = Test::new().secret("A", "keep");
    let screen = on_a_terminal(
        &t,
        &format!("'{BIN}' secrets set P; echo status=$?; stty -a"),
        format!("{CANARY}\x03").as_bytes(),
    );
    assert!(!screen.contains(CANARY), "{screen}");
    // Killed by SIGINT, as if envrun had not caught it.
    assert!(screen.contains("status=130"), "{screen}");
    assert_eq!(echo_flag(&screen), "echo", "{screen}");
    assert_eq!(read_store(&t), [("A".into(), "keep".into())]);
}

#[test]
fn backspace_and_empty_input_at_the_prompt() {
    let t = Test::new();
    let screen = on_a_terminal(
        &t,
        &format!("'{BIN}' secrets set P; echo status=$?"),
        b"abX\x7fc\r",
    );
    assert!(screen.contains("status=0"), "{screen}");
    assert_eq!(read_store(&t), [("P".into(), "abc".into())]);
    let screen = on_a_terminal(&t, &format!("'{BIN}' secrets set Q; echo status=$?"), b"\r");
    assert!(screen.contains("no value entered"), "{screen}");
    assert!(screen.contains("status=125"), "{screen}");
}

#[test]
fn get_reveal_on_a_terminal_ends_with_a_newline() {
    let t = Test::new().secret("A", "v4lue");
    let out = Command::new(debian_tool("script", "util-linux"))
        .args([
            "-qfec",
            &format!("'{BIN}' secrets get A --reveal; echo END"),
            "/dev/null",
        ])
        .current_dir(t.dir.path())
        .env("SHELL", "/bin/sh")
        .env_remove("ENVRUN_KEY")
        .env_remove("ENVRUN_STORE")
        .env_remove("ENVRUN_KEY_FILE")
        .stdin(Stdio::null())
        .output()
        .expect("run script(1) from util-linux");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "v4lue\r\nEND\r\n");
}

// --- plaintext never written -------------------------------------------------------------

/// `strace -xx` prints every byte of a written buffer as `\xHH`.
fn strace_hex(s: &str) -> String {
    s.bytes().map(|b| format!("\\x{b:02x}")).collect()
}

#[test]
fn strace_shows_no_plaintext_value_written_anywhere() {
    let t = Test::new().secret("OTHER", &format!("{CANARY}-other"));
    let trace = t.path("trace.txt");
    let trace_arg = trace.to_str().unwrap().to_owned();
    let strace = |args: &[&str], stdin: &[u8]| {
        let mut all = vec![
            "-f",
            "-s",
            "100000",
            "-xx",
            "-e",
            "trace=openat,write,writev,pwrite64,pwritev,sendto,sendmsg",
            "-o",
            &trace_arg,
            BIN,
        ];
        all.extend_from_slice(args);
        let mut cmd = Command::new(debian_tool("strace", "strace"));
        cmd.args(&all)
            .current_dir(t.dir.path())
            .env_remove("ENVRUN_KEY")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("run /usr/bin/strace");
        child.stdin.take().unwrap().write_all(stdin).unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "{out:?}");
        std::fs::read_to_string(&trace).unwrap()
    };
    // Each run with what its trace must show, proving the trace saw the writes.
    let runs = [
        (
            strace(&["secrets", "set", "NEW"], CANARY.as_bytes()),
            "ENVRUN\x02\x01",
        ),
        (
            strace(&["secrets", "set", "OTHER"], b"replaced"),
            "ENVRUN\x02\x01",
        ),
        (strace(&["secrets", "rotate-key"], b""), "ENVRUN\x02\x01"),
        (strace(&["secrets", "get", "NEW"], b""), "CAN***...9ab\n"),
    ];
    for (text, shown) in runs {
        // Writers go through the temp file (paths are hex-escaped too).
        assert!(text.contains(&strace_hex(".tmp.")) || shown.starts_with("CAN"));
        assert!(text.contains(&strace_hex(shown)), "{shown:?} not in {text}");
        for needle in [CANARY, &format!("{CANARY}-other")] {
            assert!(
                !text.contains(&strace_hex(needle)),
                "plaintext written: {text}"
            );
            assert!(!text.contains(needle), "plaintext written: {text}");
        }
    }
    // The control: when envrun does print the value, the search finds it.
    let revealed = strace(&["secrets", "get", "NEW", "--reveal"], b"");
    assert!(revealed.contains(&strace_hex(CANARY)), "{revealed}");
    assert_eq!(read_store(&t)[0], ("NEW".into(), CANARY.into()));
}

// --- concurrency ---------------------------------------------------------------------------

#[test]
fn eight_concurrent_writers_of_100_names_each_lose_nothing() {
    // The lock is what is tested here, not fsync: on tmpfs (when there is one) the 1,600
    // fsyncs of 800 writes cost nothing, which keeps the test at a few seconds.
    let shm = Path::new("/dev/shm");
    let dir = if shm.is_dir() {
        tempfile::tempdir_in(shm).unwrap()
    } else {
        tempfile::tempdir().unwrap()
    };
    let store = dir.path().join("secrets.json.enc");
    let key = dir.path().join("secrets.key");
    let t = Test::new();
    let files = [
        "--file",
        store.to_str().unwrap(),
        "--key-file",
        key.to_str().unwrap(),
    ];
    std::thread::scope(|s| {
        for w in 0..8 {
            let (t, files) = (&t, &files);
            s.spawn(move || {
                for i in 0..100 {
                    let name = format!("W{w}_{i:03}");
                    let mut args = vec!["secrets", "set", name.as_str()];
                    args.extend_from_slice(files);
                    t.command(&args)
                        .stdin_bytes(format!("value-{w}-{i}").as_bytes())
                        .done()
                        .status(0);
                }
            });
        }
    });
    // Exactly one key was created although eight first writers raced for it, and every
    // value is where it belongs.
    let contents = store::read(&store, &Key::load(&key).unwrap()).unwrap();
    assert_eq!(contents.secrets.len(), 800);
    for (name, value) in &contents.secrets {
        let (w, i) = name[1..].split_once('_').unwrap();
        let expected = format!("value-{w}-{}", i.parse::<u32>().unwrap());
        assert_eq!(value.expose(), expected.as_bytes(), "{name}");
    }
    assert!(temp_files(dir.path()).is_empty());
    let mut args = vec!["secrets", "list"];
    args.extend_from_slice(&files);
    assert_eq!(t.run(&args).status(0).stdout_str().lines().count(), 800);
}

// --- tampering -----------------------------------------------------------------------------

#[test]
fn every_flipped_bit_of_a_store_is_rejected_cleanly_by_the_binary() {
    let t = Test::new().secret("A", "x");
    let sealed = std::fs::read(t.path("secrets.json.enc")).unwrap();
    let bits = sealed.len() * 8;
    assert!(bits >= 300, "store of {} bytes", sealed.len());
    // Two workers, each with its own copy of the store and key.
    let failures: Vec<String> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..2)
            .map(|worker| {
                let sealed = &sealed;
                let key = t.path("secrets.key");
                s.spawn(move || {
                    let dir = tempfile::tempdir().unwrap();
                    let store = dir.path().join("s.enc");
                    let mut bad = Vec::new();
                    for bit in (worker..bits).step_by(2) {
                        let mut data = sealed.clone();
                        data[bit / 8] ^= 1 << (bit % 8);
                        std::fs::write(&store, &data).unwrap();
                        std::fs::set_permissions(&store, std::fs::Permissions::from_mode(0o600))
                            .unwrap();
                        let out = Command::new(BIN)
                            .args(["secrets", "list", "-f"])
                            .arg(&store)
                            .arg("--key-file")
                            .arg(&key)
                            .env_remove("ENVRUN_KEY")
                            .env("RUST_BACKTRACE", "full")
                            .stdin(Stdio::null())
                            .output()
                            .unwrap();
                        let err = String::from_utf8_lossy(&out.stderr);
                        let clear = [
                            "is corrupted or the key is wrong",
                            "is not an envrun store",
                            "newer than this envrun understands",
                        ]
                        .iter()
                        .any(|m| err.starts_with("envrun: error: ") && err.contains(m));
                        if out.status.code() != Some(125)
                            || !out.stdout.is_empty()
                            || !clear
                            || err.contains("panicked")
                        {
                            bad.push(format!("bit {bit}: {:?} {err}", out.status));
                        }
                    }
                    bad
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect()
    });
    assert!(failures.is_empty(), "{failures:#?}");
}
