//! Issue 12, as a user met it, through the real binary: wrapped base64, the percent,
//! escape and hex forms real programs print, no over-masking of multi-line secrets, and
//! values too large for an environment variable.
//!
//! The encodings come from the real tools (GNU coreutils, openssl, xxd, od, bash,
//! Python, Node). Go was not at hand: its `%q` output is printed with `printf`, written
//! by hand from `strconv.Quote`'s documented rules.

mod common;
use common::*;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

/// A database URL of 97 bytes, with the canary in the password: GNU `base64` wraps it.
fn db_url() -> String {
    format!("postgres://billing:{CANARY}@db.internal:5432/billing")
}

/// A value with every character the percent and escape forms treat specially.
const TRICKY: &str = "p\u{e4}ss w/rd+~'q\"*(1)&a=b\\c\u{2028}CANARY-tricky-0f9e";

fn with(name: &str, value: &str) -> Test {
    Test::new()
        .file("value.txt", value)
        .manifest(&format!("environment:\n  {name}: file:value.txt\n"))
}

fn strip_breaks(s: &str) -> String {
    s.chars().filter(|&c| c != '\n' && c != '\r').collect()
}

/// Checks that `out` (line breaks removed) is `encoded` with the part that depends only
/// on the value masked: `encoded` is base64 of `pre` bytes, the value (`len` bytes),
/// then more bytes. At most the one character on each side that mixes the value's bits
/// with a neighbour's may stay visible.
fn assert_masked_base64(out: &str, encoded: &str, pre: usize, len: usize) {
    let out = strip_breaks(out);
    let encoded = strip_breaks(encoded);
    let at = out
        .find("***")
        .unwrap_or_else(|| panic!("no mask in {out:?}"));
    let (before, after) = (&out[..at], &out[at + 3..]);
    assert!(encoded.starts_with(before), "{out:?} vs {encoded:?}");
    assert!(encoded.ends_with(after), "{out:?} vs {encoded:?}");
    let first_own = (8 * pre).div_ceil(6);
    let last_own = 8 * (pre + len) / 6; // one past
    assert!(before.len() <= first_own, "too much shown before: {out:?}");
    assert!(
        encoded.len() - after.len() >= last_own,
        "too much shown after: {out:?}"
    );
}

#[test]
fn base64_wrapped_by_gnu_base64_openssl_and_pem_is_masked() {
    let url = db_url();
    assert!(url.len() >= 57, "long enough to wrap at 76 columns");
    let openssl = debian_tool("openssl", "openssl");
    let openssl = openssl.to_str().unwrap();
    for script in [
        "printf %s \"$DBURL\" | base64",
        "echo \"$DBURL\" | base64",
        "printf %s \"$DBURL\" | base64 -w 64",
        "printf %s \"$DBURL\" | base64 -w 4",
        "printf %s \"$DBURL\" | base64 -w 1024",
        "printf %s \"$DBURL\" | base64 | sed 's/$/\\r/'",
        &format!("printf %s \"$DBURL\" | {openssl} base64"),
        &format!("printf %s \"$DBURL\" | {openssl} base64 -A"),
    ] {
        let done = with("DBURL", &url)
            .run(&["--", "sh", "-c", script])
            .status(0)
            .never_shows(CANARY);
        let out = done.stdout_str();
        assert_eq!(
            out.trim_end_matches(['\r', '\n']),
            "***",
            "{script}: {out:?}"
        );
    }
}

#[test]
fn wrapped_base64_inside_a_longer_blob_at_any_column_is_masked() {
    let url = db_url();
    for (pre, post, width) in [
        ("u:", ":tail", 76),
        ("user:", "", 64),
        ("abc", "xyz!", 12),
        ("", "-----", 76),
    ] {
        let raw = format!("{pre}{url}{post}");
        let encoded = STANDARD.encode(&raw);
        // A label before the blob: it starts mid-line.
        let script =
            format!("printf 'payload: '; printf %s '{pre}'\"$DBURL\"'{post}' | base64 -w {width}");
        let done = with("DBURL", &url)
            .run(&["--", "sh", "-c", &script])
            .status(0)
            .never_shows(CANARY);
        let out = done.stdout_str();
        let body = out.strip_prefix("payload: ").expect("label kept");
        assert_masked_base64(body, &encoded, pre.len(), url.len());
    }
}

#[test]
fn percent_encodings_from_python_and_javascript_are_masked() {
    let node = debian_tool("node", "nodejs");
    let python = "import os, re, urllib.parse as u\n\
        v = os.environ['V']\n\
        print(u.quote(v))\n\
        print(u.quote_plus(v))\n\
        print(u.urlencode({'v': v}))\n\
        print(re.sub('%[0-9A-F]{2}', lambda m: m.group(0).lower(), u.quote(v, safe='')))\n";
    with("V", TRICKY)
        .run(&["--", "python3", "-c", python])
        .status(0)
        .stdout("***\n***\nv=***\n***\n")
        .never_shows("CANARY-tricky");
    let js = "const v = process.env.V;\n\
        console.log(encodeURIComponent(v));\n\
        console.log(encodeURI(v));\n\
        console.log(new URLSearchParams({v}).toString());\n";
    with("V", TRICKY)
        .run(&["--", node.to_str().unwrap(), "-e", js])
        .status(0)
        .stdout("***\n***\nv=***\n")
        .never_shows("CANARY-tricky");
}

#[test]
fn escaped_string_forms_are_masked() {
    let node = debian_tool("node", "nodejs");
    // Python repr() and print(os.environ)
    let done = with("V", TRICKY)
        .run(&[
            "--",
            "python3",
            "-c",
            "import os; v = os.environ['V']; print(repr(v)); print(repr(v.encode())); print({'V': v}); print(os.environ)",
        ])
        .status(0)
        .never_shows("CANARY-tricky");
    let out = done.stdout_str();
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[..3], ["'***'", "b'***'", "{'V': '***'}"], "{out}");
    assert!(lines[3].contains("'V': '***'"), "{out}");
    // Node's util.inspect picks backquotes for a value with both quotes
    with("V", TRICKY)
        .run(&[
            "--",
            node.to_str().unwrap(),
            "-e",
            "console.log({v: process.env.V})",
        ])
        .status(0)
        .stdout("{ v: `***` }\n")
        .never_shows("CANARY-tricky");
    // bash printf %q and ${V@Q}
    with("V", TRICKY)
        .run(&[
            "--",
            "bash",
            "-c",
            "printf '%q\\n' \"$V\"; echo \"${V@Q}\"; LC_ALL=C printf '%q\\n' \"$V\"",
        ])
        .status(0)
        .stdout("$'***'\n$'***'\n$'***'\n")
        .never_shows("CANARY-tricky");
    // Go's %q and %+q of TRICKY, by strconv.Quote's rules
    let go = "\"p\u{e4}ss w/rd+~'q\\\"*(1)&a=b\\\\c\\u2028CANARY-tricky-0f9e\"\n\
        \"p\\u00e4ss w/rd+~'q\\\"*(1)&a=b\\\\c\\u2028CANARY-tricky-0f9e\"\n";
    with("V", TRICKY)
        .file("go.txt", go)
        .run(&["--", "cat", "go.txt"])
        .status(0)
        .stdout("\"***\"\n\"***\"\n");
}

#[test]
fn hex_dumps_with_separators_are_masked() {
    let xxd = debian_tool("xxd", "xxd");
    let url = db_url();
    for script in [
        "printf %s \"$DBURL\" | od -An -tx1".to_owned(),
        format!("printf %s \"$DBURL\" | {} -p", xxd.display()),
        "printf %s \"$DBURL\" | od -An -tx1 | tr 'a-f' 'A-F'".to_owned(),
        // a fingerprint: ab:cd:ef
        "printf %s \"$DBURL\" | od -An -tx1 -v | tr -s ' \\n' ':' | sed 's/^://; s/:$//'"
            .to_owned(),
    ] {
        let done = with("DBURL", &url)
            .run(&["--", "sh", "-c", &script])
            .status(0);
        let out = strip_breaks(&done.stdout_str());
        assert_eq!(out.trim(), "***", "{script}: {out:?}");
    }
}

/// A pretty-printed service-account key as the secret; the command prints its own JSON,
/// which shares lines such as `{`, `},` and `"type": "service_account",` with the key.
#[test]
fn a_multi_line_json_secret_does_not_mask_unrelated_lines() {
    let key = r#"{
  "type": "service_account",
  "project_id": "demo-project",
  "private_key_id": "5f1c2e9a77aa0b3c4d5e6f708192a3b4c5d6e7f8",
  "private_key": "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQC7\n-----END PRIVATE KEY-----\n",
  "client_email": "deployer@demo-project.iam.gserviceaccount.com",
  "enabled": true
}
"#;
    let own = r#"{
  "type": "service_account",
  "enabled": true,
  "items": [
    {"id": 1},
  ],
  "private_key_id": "5f1c2e9a77aa0b3c4d5e6f708192a3b4c5d6e7f8",
  "client_email": "deployer@demo-project.iam.gserviceaccount.com",
}
"#;
    let expected = r#"{
  "type": "service_account",
  "enabled": true,
  "items": [
    {"id": 1},
  ],
  ***
  ***
}
"#;
    Test::new()
        .file("key.json", key)
        .file("own.json", own)
        .manifest("environment:\n  GOOGLE_KEY: file:key.json\n")
        .run(&["--", "sh", "-c", "cat own.json; printf %s \"$GOOGLE_KEY\""])
        .status(0)
        .stdout(&format!("{expected}***"));
}

#[test]
fn a_value_over_the_kernels_limit_fails_before_anything_runs() {
    let big = "x".repeat(200_000);
    with("BIG", &big)
        .run(&["--", "sh", "-c", "echo started"])
        .status(125)
        .stdout("")
        .stderr_has("`BIG`")
        .stderr_has("131072 bytes")
        .never_shows(&big[..64]);
    // just under the limit still runs: `BIG=` + value + NUL = 131072
    let fits = "y".repeat(131_072 - 5);
    with("BIG", &fits)
        .run(&["--", "sh", "-c", "printf '%s' \"${#BIG}\""])
        .status(0)
        .stdout("131067");
}
