//! `envrun check`, `--dry-run`, rotation ages and `secrets list --long`, on the real binary.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, SystemTime};

use common::{CANARY, Test, exists};
use envrun::secret::Secret;
use envrun::store::{self, Contents, Key};
use serde_json::Value;

const DAY: Duration = Duration::from_secs(86_400);

/// A strong value (for names that look like passwords or keys).
const STRONG: &str = "kT9#mQ2$vL8@pR4!wZ6&";

/// Writes the test directory's local store directly, with each secret's set time `days`
/// ago: the clock is set through the store, not by waiting.
fn store_with(t: &Test, secrets: &[(&str, &str, u64)]) {
    let key = Key::generate().unwrap();
    key.create_file(&t.path("secrets.key")).unwrap();
    let now = SystemTime::now();
    let mut contents = Contents::default();
    for (name, value, days) in secrets {
        contents
            .secrets
            .insert((*name).to_owned(), Secret::from_slice(value.as_bytes()));
        contents
            .updated
            .insert((*name).to_owned(), now - DAY * (*days as u32));
    }
    let path = t.path("secrets.json.enc");
    let lock = store::lock(&path).unwrap();
    store::write(&path, &key, &contents, &lock).unwrap();
}

fn json(out: &common::Done) -> Value {
    serde_json::from_str(&out.stdout_str())
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", out.stdout_str()))
}

/// The (kind, variable) of every finding in a `--json` report.
fn findings(report: &Value) -> BTreeSet<(String, String)> {
    report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["kind"].as_str().unwrap().to_owned(),
                f["variable"].as_str().unwrap_or("-").to_owned(),
            )
        })
        .collect()
}

/// Checks a `--json` report against the shape documented in the README, field by field:
/// exactly these keys, with these types.
fn assert_documented_shape(report: &Value) {
    fn keys(v: &Value) -> BTreeSet<&str> {
        v.as_object()
            .unwrap_or_else(|| panic!("not an object: {v}"))
            .keys()
            .map(String::as_str)
            .collect()
    }
    let is_str_or_null = |v: &Value| v.is_string() || v.is_null();
    assert_eq!(
        keys(report),
        BTreeSet::from([
            "manifest",
            "tenant",
            "ok",
            "errors",
            "warnings",
            "variables",
            "findings"
        ])
    );
    assert!(is_str_or_null(&report["manifest"]) && is_str_or_null(&report["tenant"]));
    assert!(report["ok"].is_boolean());
    assert!(report["errors"].is_u64() && report["warnings"].is_u64());
    for v in report["variables"].as_array().unwrap() {
        assert_eq!(
            keys(v),
            BTreeSet::from([
                "name", "source", "status", "secret", "length", "preview", "updated", "findings"
            ])
        );
        assert!(v["name"].is_string() && v["source"].is_string());
        assert!(["ok", "warning", "error"].contains(&v["status"].as_str().unwrap()));
        assert!(v["secret"].is_boolean());
        assert!(v["length"].is_u64() || v["length"].is_null());
        assert!(is_str_or_null(&v["preview"]));
        if let Some(p) = v["preview"].as_str() {
            assert!(p.chars().count() <= 2, "{p}");
        }
        if let Some(t) = v["updated"].as_str() {
            humantime::parse_rfc3339(t).unwrap();
        }
        assert!(
            v["findings"]
                .as_array()
                .unwrap()
                .iter()
                .all(Value::is_string)
        );
    }
    let kinds = [
        "missing",
        "error",
        "placeholder",
        "weak",
        "plaintext",
        "too-short",
        "duplicate",
        "shadowed",
        "unused-backend",
        "unused-rotation",
        "rotation-due",
        "no-age",
    ];
    for f in report["findings"].as_array().unwrap() {
        assert_eq!(
            keys(f),
            BTreeSet::from(["kind", "severity", "variable", "message", "hint"])
        );
        assert!(kinds.contains(&f["kind"].as_str().unwrap()), "{f}");
        assert!(["error", "warning"].contains(&f["severity"].as_str().unwrap()));
        assert!(is_str_or_null(&f["variable"]) && is_str_or_null(&f["hint"]));
        assert!(f["message"].is_string());
    }
    let errors = report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["severity"] == "error")
        .count();
    assert_eq!(report["errors"].as_u64(), Some(errors as u64));
}

const EVERY_FINDING: &str = r#"
backends:
  spare: {type: env}
rotation:
  OLD_PASSWORD: 30d
  "*_CERT": 30d
  "NOTHING_*": 1d
environment:
  GOOD_TOKEN: secret:GOOD
  MISSING: secret:NOPE
  BROKEN: secret:GOOD#user
  API_KEY: secret:PH
  DB_PASSWORD: secret:WEAK
  STRIPE: sk_live_4eC39HqLyjWDarjtT1zdp7dc
  SHORT_VAL: secret:TINY
  LOG_LEVEL: info
  LOG_LEVEL: debug
  OLD_PASSWORD: secret:OLD
  TLS_CERT: env:CERT_TEXT
  SHADOW: plain
"#;

fn every_finding() -> Test {
    let t = Test::new()
        .manifest(EVERY_FINDING)
        .env("CERT_TEXT", "-----BEGIN CERTIFICATE-----")
        .env("SHADOW", "secret:GOOD");
    store_with(
        &t,
        &[
            ("GOOD", STRONG, 1),
            ("PH", "changeme", 1),
            ("WEAK", "hunter22", 1),
            ("TINY", "abc", 1),
            ("OLD", "Xq7!vR2#mN9$kL4@pW8&", 100),
        ],
    );
    t
}

#[test]
fn a_manifest_with_one_of_each_finding_gets_exactly_those_and_exit_1() {
    let t = every_finding();
    let out = t.run(&["check", "--json"]).status(1);
    let report = json(&out);
    assert_documented_shape(&report);
    let expected: BTreeSet<(String, String)> = [
        ("missing", "MISSING"),
        ("error", "BROKEN"),
        ("placeholder", "API_KEY"),
        ("weak", "DB_PASSWORD"),
        ("plaintext", "STRIPE"),
        ("too-short", "SHORT_VAL"),
        ("duplicate", "LOG_LEVEL"),
        ("shadowed", "SHADOW"),
        ("unused-backend", "-"),
        ("unused-rotation", "-"),
        ("rotation-due", "OLD_PASSWORD"),
        ("no-age", "TLS_CERT"),
    ]
    .iter()
    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
    .collect();
    assert_eq!(findings(&report), expected);
    assert_eq!(report["ok"], false);
    let good = &report["variables"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "GOOD_TOKEN")
        .unwrap();
    assert_eq!(good["status"], "ok");
    assert_eq!(good["length"], STRONG.len());
    assert_eq!(good["preview"], &STRONG[..2]);

    // The text report lists the same findings, one per line, with hints.
    let text = t.run(&["check"]).status(1);
    let body = text.stdout_str();
    for (kind, var) in &expected {
        let line = if var == "-" {
            format!("{kind}: ")
        } else {
            format!("{var}: {kind}: ")
        };
        assert!(body.contains(&line), "text lacks {line:?}\n{body}");
    }
    assert!(
        body.contains("11 variables: 7 errors, 5 warnings"),
        "{body}"
    );
    for value in ["changeme", "hunter22", "Xq7!vR2#mN9$kL4@pW8&", STRONG] {
        assert!(!body.contains(value), "{value} shown:\n{body}");
    }
}

#[test]
fn a_clean_manifest_exits_0() {
    let t = Test::new().manifest(
        "rotation:\n  \"*_TOKEN\": 90d\nenvironment:\n  API_TOKEN: secret:GOOD\n  LOG_LEVEL: info\n",
    );
    store_with(&t, &[("GOOD", STRONG, 10)]);
    let out = t.run(&["check"]).status(0);
    out.stdout_has("API_TOKEN")
        .stdout_has("secret:GOOD")
        .stdout_has("2 variables: 0 errors, 0 warnings");
    let report = json(&t.run(&["check", "--json"]).status(0));
    assert_documented_shape(&report);
    assert_eq!(report["ok"], true);
    assert!(report["findings"].as_array().unwrap().is_empty());
    assert!(report["variables"][0]["updated"].is_string());
}

#[test]
fn rotation_is_due_only_past_the_policy_and_the_exact_name_wins() {
    let t = Test::new().manifest(
        "rotation:\n  \"*_PASSWORD\": 90d\n  DB_PASSWORD: 30d\nenvironment:\n  DB_PASSWORD: secret:DB\n  MAIL_PASSWORD: secret:MAIL\n",
    );
    // 45 days: due under DB_PASSWORD's 30d, not under the pattern's 90d.
    store_with(
        &t,
        &[("DB", STRONG, 45), ("MAIL", "Xq7!vR2#mN9$kL4@pW8&", 45)],
    );
    let report = json(&t.run(&["check", "--json"]).status(1));
    assert_eq!(
        findings(&report),
        BTreeSet::from([("rotation-due".to_owned(), "DB_PASSWORD".to_owned())])
    );
    let msg = report["findings"][0]["message"].as_str().unwrap();
    assert!(
        msg.contains("45d ago") && msg.contains("DB_PASSWORD: 30d"),
        "{msg}"
    );
}

#[test]
fn a_backend_without_ages_and_an_old_store_say_so() {
    // The demo store is format 1: it opens, and its secrets have no recorded time.
    let demo = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/demo");
    let t = Test::new()
        .manifest(
            "backends:\n  ci: {type: env, prefix: CI_}\nrotation:\n  \"*\": 30d\nenvironment:\n  API_TOKEN: secret:API_TOKEN\n  CI_TOKEN: secret@ci:TOKEN\n",
        )
        .env("CI_TOKEN", STRONG);
    for f in ["secrets.json.enc", "secrets.key"] {
        std::fs::copy(format!("{demo}/{f}"), t.path(f)).unwrap();
    }
    let t = t
        .chmod("secrets.json.enc", 0o600)
        .chmod("secrets.key", 0o600);
    let report = json(&t.run(&["check", "--json"]));
    let by_var: BTreeMap<&str, &str> = report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["kind"] == "no-age")
        .map(|f| {
            (
                f["variable"].as_str().unwrap(),
                f["message"].as_str().unwrap(),
            )
        })
        .collect();
    assert!(
        by_var["API_TOKEN"].contains("no recorded change time"),
        "{by_var:?}"
    );
    assert!(
        by_var["CI_TOKEN"].contains("backend `ci` (env) does not record"),
        "{by_var:?}"
    );
    t.run(&["secrets", "list", "--long"])
        .status(0)
        .stdout_has("API_TOKEN")
        .stdout_has("(not recorded)");
}

#[test]
fn template_values_are_placeholders() {
    let t = Test::new()
        .manifest("environment:\n  SMTP_LOGIN: secret:SMTP\n  REGION: secret:REGION\n")
        .file(
            ".env.example",
            "SMTP_LOGIN=smtp-user-goes-in-here\nREGION=eu\n",
        );
    store_with(
        &t,
        &[
            ("SMTP", "smtp-user-goes-in-here", 1),
            ("REGION", "eu-west-1", 1),
        ],
    );
    t.run(&["check"]).status(0);
    let report = json(
        &t.run(&["check", "--json", "--template", ".env.example"])
            .status(1),
    );
    assert_eq!(
        findings(&report),
        BTreeSet::from([("placeholder".to_owned(), "SMTP_LOGIN".to_owned())])
    );
    t.run(&["check", "--template", "nope.env"])
        .status(125)
        .stderr_has("nope.env");
}

#[test]
fn quiet_values_shows_no_length_or_preview() {
    let t = Test::new().manifest("environment:\n  API_TOKEN: secret:GOOD\n");
    store_with(&t, &[("GOOD", STRONG, 1)]);
    let report = json(&t.run(&["check", "--json", "--quiet-values"]).status(0));
    assert!(report["variables"][0]["length"].is_null());
    assert!(report["variables"][0]["preview"].is_null());
    let text = t.run(&["check", "--quiet-values"]).status(0).stdout_str();
    assert!(!text.contains("chars") && !text.contains("kT"), "{text}");
}

#[test]
fn strict_makes_warnings_fail() {
    let t = Test::new().manifest("backends:\n  spare: {type: env}\nenvironment:\n  A: b\n");
    t.run(&["check"])
        .status(0)
        .stdout_has("0 errors, 1 warning");
    t.run(&["check", "--strict"]).status(1);
}

#[test]
fn a_broken_manifest_exits_125() {
    Test::new()
        .manifest("environment:\n  A: [b\n")
        .run(&["check"])
        .status(125)
        .stderr_has("line 2");
    Test::new()
        .run(&["check", "-m", "missing.yaml"])
        .status(125)
        .stderr_has("missing.yaml");
    Test::new()
        .manifest("rotation:\n  A: someday\n")
        .run(&["check"])
        .status(125)
        .stderr_has("rotation.A");
}

#[test]
fn dry_run_never_starts_the_command() {
    let t = Test::new().manifest(
        "environment:\n  API_TOKEN: secret:GOOD\n  DB_URL: \"postgres://app:${secret:GOOD}@db/app\"\n  LOG_LEVEL: info\n",
    );
    store_with(&t, &[("GOOD", CANARY, 1)]);
    let out = t
        .run(&["--dry-run", "--", "sh", "-c", "touch marker"])
        .status(0)
        .never_shows(CANARY)
        .stdout_has("would run: sh -c 'touch marker'")
        .stdout_has("API_TOKEN")
        .stdout_has("secret:GOOD")
        .stdout_has("(literal)")
        .stdout_has("mode: supervise");
    assert!(!exists(&t.path("marker")), "{}", out.stdout_str());
    // A dry run fails where a run would, and still starts nothing.
    let t = Test::new().manifest("environment:\n  A: secret:NOPE\n");
    t.run(&["--dry-run", "--", "sh", "-c", "touch marker"])
        .status(125)
        .stderr_has("NOPE");
    assert!(!exists(&t.path("marker")));
    // Nothing secret: exec mode is reported.
    Test::new()
        .manifest("environment:\n  A: b\n")
        .run(&["--dry-run", "--", "true"])
        .status(0)
        .stdout_has("mode: exec");
}

#[test]
fn the_canary_appears_in_no_output_of_check_dry_run_or_list_long() {
    let t = Test::new()
        .manifest(
            "rotation:\n  \"*\": 1d\nenvironment:\n  API_TOKEN: secret:C\n  DB_PASSWORD: secret:C\n  URL: \"https://u:${secret:C}@h/\"\n  MISSING: secret:NOPE\n",
        )
        .file(".env.example", &format!("API_TOKEN={CANARY}\n"));
    store_with(&t, &[("C", CANARY, 400)]);
    for args in [
        &["check"][..],
        &["check", "--json"],
        &["check", "--template", ".env.example"],
        &["check", "--json", "--quiet-values"],
        &["--dry-run", "--", "env"],
        &["secrets", "list", "--long"],
        &["secrets", "list", "--long", "--json"],
    ] {
        let out = t.run(args).never_shows(CANARY);
        let printed = out.stdout_str() + &out.stderr_str();
        assert!(!printed.trim().is_empty(), "{args:?} printed nothing");
    }
    // Without the failing reference, the dry run gets as far as listing the variables.
    let t = Test::new()
        .manifest("environment:\n  API_TOKEN: secret:C\n  URL: \"https://u:${secret:C}@h/\"\n");
    store_with(&t, &[("C", CANARY, 400)]);
    t.run(&["--dry-run", "--", "env"])
        .status(0)
        .never_shows(CANARY)
        .stdout_has("API_TOKEN");
}

#[test]
fn list_long_shows_set_time_and_age_never_values() {
    let t = Test::new();
    store_with(&t, &[("OLD", CANARY, 40), ("NEW", "value-two", 0)]);
    let out = t
        .run(&["secrets", "list", "--long"])
        .status(0)
        .never_shows(CANARY);
    let lines: Vec<String> = out.stdout_str().lines().map(str::to_owned).collect();
    assert!(lines[0].starts_with("NAME") && lines[0].contains("LAST SET"));
    assert!(
        lines[1].starts_with("NEW") && lines[1].ends_with('s'),
        "{lines:?}"
    );
    assert!(
        lines[2].starts_with("OLD") && lines[2].ends_with("40d"),
        "{lines:?}"
    );
    let entries: Value =
        serde_json::from_str(&t.run(&["secrets", "list", "--long", "--json"]).stdout_str())
            .unwrap();
    assert_eq!(entries[1]["name"], "OLD");
    let age = entries[1]["age_seconds"].as_u64().unwrap();
    assert!((40 * 86_400..41 * 86_400).contains(&age), "{age}");
    // A secret set again starts its clock over.
    t.command(&["secrets", "set", "OLD"])
        .stdin_bytes(b"fresh-value")
        .done()
        .status(0);
    let entries: Value =
        serde_json::from_str(&t.run(&["secrets", "list", "--long", "--json"]).stdout_str())
            .unwrap();
    assert!(entries[1]["age_seconds"].as_u64().unwrap() < 60);
}
