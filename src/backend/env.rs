//! `type: env`: secrets from envrun's own environment, under a prefix.
//!
//! `secret:NAME` reads `{prefix}{TENANT}_{NAME}` when there is a tenant, then
//! `{prefix}{NAME}`. TENANT and NAME are mapped by [`var_name`]: ASCII letters upper-cased,
//! `-`, `.` and `/` turned into `_` (so `secret:db-password` with tenant `acme` and prefix
//! `APP_` reads `APP_ACME_DB_PASSWORD`, then `APP_DB_PASSWORD`). The prefix is used as
//! written. A variable that is set counts, even when empty.
//!
//! Every candidate variable is reported by [`Backend::consumed_env`], found or not: the
//! command does not receive `APP_ACME_DB_PASSWORD` or `APP_DB_PASSWORD` under those names
//! unless the manifest sets them.

use serde::Deserialize;

use super::{Backend, BackendError, Context, Found, Lookup, LookupResult};
use crate::secret::Secret;

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnvConfig {
    /// Put before every variable name, e.g. `APP_`.
    #[serde(default)]
    pub prefix: String,
}

#[derive(Debug)]
pub struct Env {
    prefix: String,
    tenant: Option<String>,
}

/// Maps a key or tenant to its part of a variable name: ASCII upper case, `-` `.` `/` to `_`.
pub fn var_name(s: &str) -> String {
    s.chars()
        .map(|c| match c {
            '-' | '.' | '/' => '_',
            c => c.to_ascii_uppercase(),
        })
        .collect()
}

impl Env {
    pub fn new(config: &EnvConfig, ctx: &Context) -> Env {
        Env {
            prefix: config.prefix.clone(),
            tenant: ctx.tenant.clone(),
        }
    }

    /// The variables `key` is looked up in, in order.
    fn candidates(&self, key: &str) -> Vec<String> {
        let name = var_name(key);
        let mut out = Vec::with_capacity(2);
        if let Some(t) = &self.tenant {
            out.push(format!("{}{}_{name}", self.prefix, var_name(t)));
        }
        out.push(format!("{}{name}", self.prefix));
        out
    }

    fn lookup(&self, key: &str) -> LookupResult {
        for var in self.candidates(key) {
            if var.is_empty() || var.contains(['=', '\0']) {
                return Err(BackendError::new(format!(
                    "key `{key}` maps to `{}`, which is not a valid variable name",
                    var.escape_default()
                )));
            }
            if let Some(v) = std::env::var_os(&var) {
                return Ok(Some(Found::Value(Secret::from_vec(v.into_encoded_bytes()))));
            }
        }
        Ok(None)
    }
}

impl Backend for Env {
    fn kind(&self) -> &'static str {
        "env"
    }

    fn fetch(&self, lookups: &[Lookup]) -> Result<Vec<LookupResult>, BackendError> {
        Ok(lookups.iter().map(|l| self.lookup(&l.key)).collect())
    }

    fn tenant(&self) -> Option<&str> {
        self.tenant.as_deref()
    }

    fn looked_for(&self, lookup: &Lookup) -> Option<String> {
        let vars: Vec<String> = self
            .candidates(&lookup.key)
            .iter()
            .map(|v| format!("${v}"))
            .collect();
        Some(format!("looked for {}", vars.join(", then ")))
    }

    fn not_found_hint(&self, lookup: &Lookup) -> Option<String> {
        let var = self.candidates(&lookup.key).pop().unwrap_or_default();
        Some(format!(
            "set ${var} in envrun's environment (check `prefix:` in the manifest)"
        ))
    }

    fn consumed_env(&self, lookups: &[Lookup]) -> Vec<String> {
        lookups
            .iter()
            .flat_map(|l| self.candidates(&l.key))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_map_to_upper_case_with_underscores() {
        assert_eq!(var_name("db-password"), "DB_PASSWORD");
        assert_eq!(var_name("eu/acme.prod"), "EU_ACME_PROD");
        assert_eq!(var_name("Already_OK9"), "ALREADY_OK9");
    }

    #[test]
    fn tenant_candidate_comes_first() {
        let ctx = Context::new(".", Some("acme-eu".into()));
        let env = Env::new(
            &EnvConfig {
                prefix: "APP_".into(),
            },
            &ctx,
        );
        assert_eq!(
            env.candidates("db.pass"),
            vec!["APP_ACME_EU_DB_PASS", "APP_DB_PASS"]
        );
    }
}
