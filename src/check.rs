//! The rules of `envrun check`: which values are placeholders, which are weak, which
//! manifest literals look like credentials. Pure functions over bytes; they answer with a
//! reason that never quotes the value. [`crate::commands::check`] runs them over what
//! resolution found and prints the findings.
//!
//! The rules, as documented in the README:
//! - **placeholder**: the whole value (case-insensitive, trimmed) is a stand-in word
//!   (`changeme`, `todo`, `placeholder`, `secret`, `password`, `example`, `dummy`, `none`,
//!   `null`, ...), a run of one filler character (`xxx`, `***`, `000`, `...`), `your-...-here`,
//!   wrapped in `<...>`, `{{...}}` or `${...}`, a token prefix whose body is missing or filler
//!   (`sk-...`, `sk_live_xxxx`, `ghp_XXXX`, `AKIAXXXXXXXXXXXXXXXX`), or the value the
//!   `--template` file gives for the same variable (or any value of 6 characters or more in it).
//! - **weak**, for variables whose name has a word `PASSWORD`, `PASSWD`, `PASS`, `PWD`,
//!   `PASSPHRASE`, `SECRET`, `TOKEN`, `KEY`, `APIKEY`, `CREDENTIAL(S)` or `PIN` (and none of
//!   `ID`, `FILE`, `PATH`, `DIR`, `NAME`, `USER`, `URL`, `ARN`): fewer than 12 characters;
//!   one character class (lower, upper, digit, other) and fewer than 20 characters; fewer
//!   than 2.5 bits per character of Shannon entropy (much repetition); fewer than 60 bits by
//!   length x log2(alphabet of its classes); or a common password (`password`, `123456`,
//!   `qwerty`, `letmein`, `admin`, `welcome`, `iloveyou`) inside it.
//! - **plaintext secret**: a literal in the manifest holding an AWS access key id (`AKIA`,
//!   `ASIA` + 16), a GitHub token (`ghp_`, `gho_`, `ghu_`, `ghs_`, `ghr_` + 36,
//!   `github_pat_`), a Slack token (`xoxb-`, `xoxp-`, `xoxa-`, `xoxr-`, `xoxs-`), a Stripe key
//!   (`sk_live_`, `rk_live_`, `sk_test_`), an OpenAI-style `sk-` key, a GitLab token
//!   (`glpat-`), a JWT, a PEM private key, a password in a URL (`scheme://user:pass@`), or a
//!   long random-looking string (24+ characters of letters and digits with 3.5+ bits of
//!   entropy per character).

/// A variable name that holds a password or key, by the rule in the module documentation.
pub fn secret_name(name: &str) -> bool {
    const SECRET: &[&str] = &[
        "PASSWORD",
        "PASSWD",
        "PASS",
        "PWD",
        "PASSPHRASE",
        "SECRET",
        "TOKEN",
        "KEY",
        "APIKEY",
        "CREDENTIAL",
        "CREDENTIALS",
        "PIN",
    ];
    const NOT: &[&str] = &["ID", "FILE", "PATH", "DIR", "NAME", "USER", "URL", "ARN"];
    let upper = name.to_ascii_uppercase();
    let words: Vec<&str> = upper
        .split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|w| !w.is_empty())
        .collect();
    words.iter().any(|w| SECRET.contains(w)) && !words.iter().any(|w| NOT.contains(w))
}

/// Why `value` looks like a placeholder, if it does.
pub fn placeholder(value: &[u8]) -> Option<&'static str> {
    let text = std::str::from_utf8(value).ok()?.trim();
    let lower = text.to_ascii_lowercase();
    const WORDS: &[&str] = &[
        "changeme",
        "change_me",
        "change-me",
        "changeit",
        "replaceme",
        "replace_me",
        "replace-me",
        "todo",
        "tbd",
        "fixme",
        "placeholder",
        "dummy",
        "example",
        "sample",
        "secret",
        "password",
        "none",
        "null",
        "nil",
        "undefined",
        "empty",
        "redacted",
        "insert_here",
    ];
    if WORDS.contains(&lower.as_str()) {
        return Some("a placeholder word");
    }
    if filler(&lower, 3) {
        return Some("a run of one filler character");
    }
    if lower.starts_with("your") && (lower.ends_with("here") || lower.ends_with("here>")) {
        return Some("a `your-...-here` stand-in");
    }
    let wrapped = |open: &str, close: &str| {
        text.len() > open.len() + close.len() && text.starts_with(open) && text.ends_with(close)
    };
    if wrapped("<", ">") || wrapped("{{", "}}") || wrapped("${", "}") || wrapped("[", "]") {
        return Some("a stand-in in brackets");
    }
    const PREFIXES: &[&str] = &[
        "sk_live_",
        "sk_test_",
        "rk_live_",
        "pk_live_",
        "pk_test_",
        "sk-",
        "ghp_",
        "gho_",
        "github_pat_",
        "xoxb-",
        "xoxp-",
        "glpat-",
        "AKIA",
        "ASIA",
    ];
    for p in PREFIXES {
        if let Some(body) = text.strip_prefix(p) {
            let body_lower = body.to_ascii_lowercase();
            if body.is_empty()
                || filler(&body_lower, 1)
                || body_lower.contains("...")
                || body_lower.contains("xxxx")
                || body_lower.contains("your")
                || body_lower.contains('<')
            {
                return Some("a token prefix with a stand-in body");
            }
        }
    }
    None
}

/// `s` is `min` or more of one filler character (`x`, `*`, `0`, `.`, `#`, `-`, `?`).
fn filler(s: &str, min: usize) -> bool {
    let mut chars = s.chars();
    let Some(first) = chars.next() else {
        return false;
    };
    "x*0.#-?".contains(first) && s.chars().count() >= min && chars.all(|c| c == first)
}

/// Why `value` is weak for a password or key, if it is.
pub fn weak(value: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(value);
    let n = text.chars().count();
    if n < 12 {
        return Some(String::from("fewer than 12 characters"));
    }
    let (mut lower, mut upper, mut digit, mut other) = (false, false, false, false);
    for c in text.chars() {
        match c {
            'a'..='z' => lower = true,
            'A'..='Z' => upper = true,
            '0'..='9' => digit = true,
            _ => other = true,
        }
    }
    let classes = [lower, upper, digit, other].iter().filter(|c| **c).count();
    if classes == 1 && n < 20 {
        return Some(String::from(
            "one character class only and fewer than 20 characters",
        ));
    }
    if shannon(&text) < 2.5 {
        return Some(String::from("much repetition (low entropy)"));
    }
    let pool = [(lower, 26.0), (upper, 26.0), (digit, 10.0), (other, 33.0)]
        .iter()
        .filter(|(on, _)| *on)
        .map(|(_, size)| size)
        .sum::<f64>();
    if (n as f64) * pool.log2() < 60.0 {
        return Some(String::from(
            "under 60 bits for its length and character classes",
        ));
    }
    let lowered = text.to_ascii_lowercase();
    const COMMON: &[&str] = &[
        "password", "123456", "qwerty", "letmein", "admin", "welcome", "iloveyou",
    ];
    if COMMON.iter().any(|w| lowered.contains(w)) {
        return Some(String::from("contains a common password"));
    }
    None
}

/// Shannon entropy of the characters of `s`, in bits per character.
pub fn shannon(s: &str) -> f64 {
    let mut counts = std::collections::HashMap::new();
    let mut n = 0usize;
    for c in s.chars() {
        *counts.entry(c).or_insert(0usize) += 1;
        n += 1;
    }
    if n == 0 {
        return 0.0;
    }
    counts
        .values()
        .map(|&k| {
            let p = k as f64 / n as f64;
            -p * p.log2()
        })
        .sum()
}

/// What kind of credential a manifest literal looks like, if it does.
pub fn credential(text: &str) -> Option<&'static str> {
    const TOKENS: &[(&str, usize, &str)] = &[
        ("AKIA", 16, "an AWS access key id"),
        ("ASIA", 16, "an AWS access key id"),
        ("ghp_", 36, "a GitHub token"),
        ("gho_", 36, "a GitHub token"),
        ("ghu_", 36, "a GitHub token"),
        ("ghs_", 36, "a GitHub token"),
        ("ghr_", 36, "a GitHub token"),
        ("github_pat_", 22, "a GitHub token"),
        ("xoxb-", 10, "a Slack token"),
        ("xoxp-", 10, "a Slack token"),
        ("xoxa-", 10, "a Slack token"),
        ("xoxr-", 10, "a Slack token"),
        ("xoxs-", 10, "a Slack token"),
        ("sk_live_", 16, "a Stripe secret key"),
        ("rk_live_", 16, "a Stripe secret key"),
        ("sk_test_", 16, "a Stripe secret key"),
        ("sk-", 20, "an API secret key (sk-...)"),
        ("glpat-", 20, "a GitLab token"),
    ];
    for (prefix, min, what) in TOKENS {
        let mut from = 0;
        while let Some(i) = text[from..].find(prefix) {
            let start = from + i;
            let body = &text[start + prefix.len()..];
            let run = body
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == '-')
                .count();
            let upper_only = prefix.starts_with("AKIA") || prefix.starts_with("ASIA");
            let ok = if upper_only {
                body.chars()
                    .take(*min)
                    .filter(|c| c.is_ascii_uppercase() || c.is_ascii_digit())
                    .count()
                    == *min
            } else {
                run >= *min
            };
            // A word boundary before the prefix, so `task-...` is not an `sk-` key.
            let boundary = text[..start]
                .chars()
                .next_back()
                .is_none_or(|c| !c.is_ascii_alphanumeric());
            if ok && boundary && placeholder(&text.as_bytes()[start..]).is_none() {
                return Some(what);
            }
            from = start + prefix.len();
        }
    }
    if text.contains("-----BEGIN") && text.contains("PRIVATE KEY") {
        return Some("a PEM private key");
    }
    if text
        .split(|c: char| c.is_whitespace() || c == '"' || c == '\'')
        .any(|w| w.starts_with("eyJ") && w.matches('.').count() == 2 && w.len() > 30)
    {
        return Some("a JSON Web Token");
    }
    if url_password(text) {
        return Some("a password in a URL");
    }
    let random = text
        .split(|c: char| !(c.is_ascii_alphanumeric() || "+/=_-".contains(c)))
        .any(|w| {
            w.len() >= 24
                && w.chars().any(|c| c.is_ascii_digit())
                && w.chars().any(|c| c.is_ascii_alphabetic())
                && shannon(w) >= 3.5
        });
    if random {
        return Some("a long random-looking string");
    }
    None
}

/// `scheme://user:password@host` with a non-empty password.
fn url_password(text: &str) -> bool {
    let Some(i) = text.find("://") else {
        return false;
    };
    let rest = &text[i + 3..];
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let Some(at) = authority.rfind('@') else {
        return false;
    };
    let userinfo = &authority[..at];
    matches!(userinfo.split_once(':'), Some((_, pass)) if !pass.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_that_hold_passwords_and_keys() {
        for n in [
            "DB_PASSWORD",
            "API_KEY",
            "github-token",
            "SECRET",
            "smtp.pass",
        ] {
            assert!(secret_name(n), "{n}");
        }
        for n in [
            "AWS_ACCESS_KEY_ID",
            "SSH_KEY_FILE",
            "KEYBOARD",
            "LOG_LEVEL",
            "DB_USER",
        ] {
            assert!(!secret_name(n), "{n}");
        }
    }

    #[test]
    fn placeholders_are_recognised_and_real_values_are_not() {
        for v in [
            "changeme",
            " TODO ",
            "xxx",
            "XXXXXXXX",
            "********",
            "your-api-key-here",
            "YOUR_TOKEN_HERE",
            "<db password>",
            "{{ token }}",
            "sk-...",
            "sk_live_xxxxxxxx",
            "ghp_XXXXXXXXXXXX",
            "AKIAXXXXXXXXXXXXXXXX",
        ] {
            assert!(placeholder(v.as_bytes()).is_some(), "{v}");
        }
        for v in [
            "kT9#mQ2$vL8@pR4!",
            "sk-proj-4f9a8b7c6d5e4f3a2b1c",
            "x",
            "xanadu-2",
            "<",
        ] {
            assert!(placeholder(v.as_bytes()).is_none(), "{v}");
        }
    }

    #[test]
    fn weak_values_follow_the_documented_rule() {
        assert!(weak(b"hunter2").is_some()); // short
        assert!(weak(b"abcdefghijklmno").is_some()); // one class, < 20
        assert!(weak(b"abababababababababab12").is_some()); // repetition
        assert!(weak(b"MyPassword2024!").is_some()); // common word
        assert!(weak(b"kT9#mQ2$vL8@pR4!").is_none());
        assert!(weak(b"f3a9c2e81b7d4056a9e3c1b2").is_none()); // 24 hex
        assert!(weak(b"correct horse battery staple").is_none());
    }

    #[test]
    fn credentials_in_literals() {
        let cases = [
            ("AKIAIOSFODNN7EXAMPLE", "an AWS access key id"),
            ("ghp_aBcDeFgHiJkLmNoPqRsTuVwXyZ0123456789", "a GitHub token"),
            ("xoxb-123456789012-abcdefABCDEF", "a Slack token"),
            ("sk_live_4eC39HqLyjWDarjtT1zdp7dc", "a Stripe secret key"),
            ("-----BEGIN RSA PRIVATE KEY-----\nMIIE", "a PEM private key"),
            ("postgres://app:hunter22@db:5432/app", "a password in a URL"),
            (
                "Zm9vYmFyYmF6cXV4MTIzNDU2Nzg5MGFiY2RlZg",
                "a long random-looking string",
            ),
        ];
        for (text, what) in cases {
            assert_eq!(credential(text), Some(what), "{text}");
        }
        for text in [
            "info",
            "postgres://app@db:5432/app",
            "https://example.com/a/b",
            "task-runner-for-the-nightly-backup-job",
            "sk-...",
            "/usr/local/share/envrun/examples/dev",
        ] {
            assert_eq!(credential(text), None, "{text}");
        }
    }
}
