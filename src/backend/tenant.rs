//! Tenants: one rule for every backend that has a notion of them.
//!
//! The tenant comes from `--tenant`, else `$ENVRUN_TENANT`, else `tenant:` at the top of the
//! manifest (an empty value counts as unset). With a tenant `T`, a backend looks for the
//! tenant's own copy of a key first and falls back to the global one:
//!
//! | backend | tenant's copy | then global |
//! |---|---|---|
//! | `env` | `{prefix}{T}_{NAME}` | `{prefix}{NAME}` |
//! | `files` | `{dir}/{T}/NAME` | `{dir}/NAME` |
//! | `vault`, `aws` | path prefix `{T}/` before the key | the key as written |
//! | `gcp`, `azure` | `{prefix}{T}-NAME`, characters the service refuses in `T` as `-` | `{prefix}NAME` |
//!
//! A tenant is one or more `/`-separated segments of ASCII letters, digits, `_`, `-` and `.`;
//! a segment may not start with `.` (so no `..`, and no Kubernetes `..data` internals). The
//! `local` and `dotenv` backends have no notion of tenants and ignore it.

use super::BackendError;

/// Checks a tenant name against the rule above; the error says what is wrong.
pub fn check(tenant: &str) -> Result<(), BackendError> {
    let bad = |message: String| {
        Err(BackendError::new(message).with_hint(
            "a tenant is letters, digits, `_`, `-` and `.`, in segments separated by `/`",
        ))
    };
    if tenant.is_empty() {
        return bad(String::from("tenant is empty"));
    }
    for segment in tenant.split('/') {
        if segment.is_empty() {
            return bad(format!(
                "tenant `{tenant}` has an empty segment (no leading, trailing or double `/`)"
            ));
        }
        if segment.starts_with('.') {
            return bad(format!("tenant `{tenant}` has a segment starting with `.`"));
        }
        if let Some(c) = segment
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.')))
        {
            return bad(format!(
                "tenant `{}` contains `{}` (allowed: letters, digits, `_`, `-`, `.`, and `/` between segments)",
                tenant.escape_default(),
                c.escape_default()
            ));
        }
    }
    Ok(())
}

/// Picks the tenant by precedence: the command line (or `$ENVRUN_TENANT`, which clap folds
/// into it), then the manifest. Empty values count as unset.
pub fn choose(cli: Option<&str>, manifest: Option<&str>) -> Option<String> {
    cli.filter(|t| !t.is_empty())
        .or(manifest.filter(|t| !t.is_empty()))
        .map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_names_and_nested_segments() {
        for ok in ["acme", "ACME-1", "eu/acme_2", "a.b"] {
            assert!(check(ok).is_ok(), "{ok}");
        }
    }

    #[test]
    fn rejects_paths_that_could_escape() {
        for bad in [
            "", "..", "../x", "a/../b", "/abs", "a/", "a//b", "..data", "a b", "a\0b", "a=b",
        ] {
            assert!(check(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn command_line_wins_over_manifest_and_empty_is_unset() {
        assert_eq!(choose(Some("a"), Some("b")).as_deref(), Some("a"));
        assert_eq!(choose(None, Some("b")).as_deref(), Some("b"));
        assert_eq!(choose(Some(""), Some("b")).as_deref(), Some("b"));
        assert_eq!(choose(None, Some("")), None);
    }
}
