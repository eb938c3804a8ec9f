//! `type: aws-ssm`: AWS Systems Manager Parameter Store.
//!
//! `secret:NAME` reads the parameter `{prefix}NAME` (an ARN is used as written), always
//! with decryption, so `SecureString` parameters arrive in clear and `String` ones as they
//! are. `?version=N` and `?label=L` pin one (the `NAME:N` / `NAME:L` selectors). With a
//! tenant `T`: `{prefix}T/NAME`, then `{prefix}NAME`.
//!
//! Every parameter is read with `GetParameters`, [`PARAMETERS_PER_BATCH`] names a call, the
//! calls concurrently. A name in `InvalidParameters` does not exist (the next candidate is
//! tried, then the key is "not found", named). Answers carry the parameter's name but not
//! always the selector that was asked for, so [`batches`] never puts two selectors of one
//! parameter in the same call.

use std::collections::{BTreeMap, BTreeSet};
use std::time::SystemTime;

use aws_sdk_ssm::Client;
use futures_util::StreamExt;

use super::{
    AwsConfig, CONCURRENT_CALLS, PARAMETERS_PER_BATCH, Settings, classify, connect, is_arn,
};
use crate::backend::net;
use crate::backend::{Backend, BackendError, Context, ErrorKind, Found, Lookup, LookupResult};
use crate::secret::Secret;

#[derive(Debug)]
pub struct ParameterStore {
    s: Settings,
}

/// The answer to one name (with its selector): the value, `None` when it does not exist, or
/// an error.
type ReadResult = Result<Option<(Secret, Option<SystemTime>)>, BackendError>;

impl ParameterStore {
    /// Refuses `tenant_layout: json`, which only Secrets Manager has (a parameter holds one
    /// value; a tenant's parameters are `{prefix}{tenant}/NAME`).
    pub fn new(config: &AwsConfig, ctx: &Context) -> Result<ParameterStore, BackendError> {
        if config.tenant_layout != super::TenantLayout::Path {
            return Err(BackendError::of(
                ErrorKind::Config,
                "`tenant_layout: json` is for `type: aws` (Secrets Manager) only",
            )
            .with_hint(
                "remove `tenant_layout` from the aws-ssm backend: a tenant's parameters are {prefix}{tenant}/NAME",
            ));
        }
        Ok(ParameterStore {
            s: Settings::new(config, ctx),
        })
    }

    /// The selector a lookup pins (`:3`, `:prod`), from `?version=` or `?label=`.
    fn selector(lookup: &Lookup) -> Result<String, BackendError> {
        let bad = |why: String| {
            Err(BackendError::of(
                ErrorKind::Config,
                format!("`{}`: {why}", lookup.key),
            ))
        };
        let mut selector = String::new();
        for (name, value) in &lookup.params {
            if !selector.is_empty() {
                return bad(String::from(
                    "give one of `?version=` and `?label=`, not both (a parameter is read at one version)",
                ));
            }
            match name.as_str() {
                "version" => {
                    if !value.bytes().all(|b| b.is_ascii_digit())
                        || value.parse::<u64>().map_or(true, |v| v == 0)
                    {
                        return bad(format!(
                            "`?version={value}` is not a version number (1, 2, ...)"
                        ));
                    }
                    selector = format!(":{value}");
                }
                "label" => {
                    if value.is_empty() || value.contains([':', '/']) {
                        return bad(format!("`?label={value}` is not a parameter label"));
                    }
                    selector = format!(":{value}");
                }
                _ => {}
            }
        }
        Ok(selector)
    }

    /// The names (with selector) `lookup` is looked for under, in order.
    fn candidates(&self, lookup: &Lookup) -> Result<Vec<String>, BackendError> {
        let selector = Self::selector(lookup)?;
        let key = &lookup.key;
        if key.is_empty() {
            return Err(BackendError::of(
                ErrorKind::Config,
                "the parameter name is empty",
            ));
        }
        if is_arn(key) {
            return Ok(vec![format!("{key}{selector}")]);
        }
        let prefix = &self.s.config.prefix;
        let mut out = Vec::with_capacity(2);
        if let Some(t) = &self.s.tenant {
            out.push(format!("{prefix}{t}/{key}{selector}"));
        }
        out.push(format!("{prefix}{key}{selector}"));
        Ok(out)
    }

    async fn read_all(
        &self,
        names: Vec<String>,
    ) -> Result<BTreeMap<String, ReadResult>, BackendError> {
        let config = connect(&self.s).await?;
        let client = Client::new(&config);
        let answers = futures_util::stream::iter(batches(&names, PARAMETERS_PER_BATCH))
            .map(|batch| get_parameters(&client, batch))
            .buffer_unordered(CONCURRENT_CALLS)
            .collect::<Vec<_>>()
            .await;
        Ok(answers.into_iter().flatten().collect())
    }
}

/// A requested name without its selector: `/app/db:3` -> `/app/db`. ARNs hold `:` too, so
/// only a colon after the last `/` starts a selector.
fn base(name: &str) -> &str {
    let tail = name.rfind('/').map_or(0, |i| i + 1);
    match name[tail..].find(':') {
        Some(i) if !is_arn(name) || name[..tail].contains(":parameter/") => &name[..tail + i],
        _ => name,
    }
}

/// Splits `names` into calls of at most `size`, in order, such that no call names one
/// parameter twice (with two selectors): AWS and moto answer with the parameter's name,
/// which would not say which selector an answer is for.
pub(super) fn batches(names: &[String], size: usize) -> Vec<Vec<String>> {
    let mut out: Vec<(Vec<String>, BTreeSet<&str>)> = Vec::new();
    for name in names {
        let b = base(name);
        match out
            .iter_mut()
            .find(|(batch, bases)| batch.len() < size && !bases.contains(b))
        {
            Some((batch, bases)) => {
                batch.push(name.clone());
                bases.insert(b);
            }
            None => out.push((vec![name.clone()], BTreeSet::from([b]))),
        }
    }
    out.into_iter().map(|(batch, _)| batch).collect()
}

/// Whether a returned parameter (by name and ARN) answers the requested name.
fn answers(requested: &str, name: Option<&str>, arn: Option<&str>) -> bool {
    let want = base(requested);
    if name == Some(want) || arn == Some(want) {
        return true;
    }
    // An ARN asked for, answered by name: `arn:...:parameter/app/db` is `/app/db` (or `db`).
    match (want.split_once(":parameter/"), name) {
        (Some((_, path)), Some(name)) => name.trim_start_matches('/') == path,
        _ => false,
    }
}

/// One `GetParameters` call with decryption: every name of `batch` with its answer.
async fn get_parameters(client: &Client, batch: Vec<String>) -> Vec<(String, ReadResult)> {
    let sent = client
        .get_parameters()
        .set_names(Some(batch.clone()))
        .with_decryption(true)
        .send()
        .await;
    let mut out = match sent {
        Ok(out) => out,
        Err(e) => {
            let what = if batch.len() == 1 {
                format!("GetParameters `{}`", batch[0])
            } else {
                format!("GetParameters of {} parameters", batch.len())
            };
            let err = classify(&what, &e);
            return batch.into_iter().map(|n| (n, Err(err.clone()))).collect();
        }
    };
    let mut params = out.parameters.take().unwrap_or_default();
    let invalid = out.invalid_parameters.take().unwrap_or_default();
    batch
        .into_iter()
        .map(|requested| {
            let result = match params
                .iter_mut()
                .find(|p| answers(&requested, p.name.as_deref(), p.arn.as_deref()))
            {
                // Each base name is in the call once (see `batches`), so taking is safe.
                Some(p) => Ok(Some((
                    Secret::from(p.value.take().unwrap_or_default()),
                    p.last_modified_date
                        .as_ref()
                        .and_then(|t| crate::backend::unix_time(t.as_secs_f64())),
                ))),
                None if invalid.contains(&requested) => Ok(None),
                // Fail closed: a name neither answered nor called invalid is not "missing".
                None => Err(BackendError::of(
                    ErrorKind::BadResponse,
                    format!("GetParameters `{requested}`: neither returned nor listed as invalid"),
                )),
            };
            (requested, result)
        })
        .collect()
}

impl Backend for ParameterStore {
    fn kind(&self) -> &'static str {
        "aws-ssm"
    }

    fn params(&self) -> &'static [&'static str] {
        &["version", "label"]
    }

    fn tenant(&self) -> Option<&str> {
        self.s.tenant.as_deref()
    }

    /// `LastModifiedDate` of the version read.
    fn reports_age(&self) -> bool {
        true
    }

    fn not_found_hint(&self, _lookup: &Lookup) -> Option<String> {
        Some(String::from(
            "check the name, the backend's `prefix`, the region and the account (`aws ssm get-parameter --name NAME` with the same credentials)",
        ))
    }

    fn looked_for(&self, lookup: &Lookup) -> Option<String> {
        let names = self.candidates(lookup).ok()?;
        Some(
            names
                .iter()
                .map(|n| format!("parameter `{n}`"))
                .collect::<Vec<_>>()
                .join(", then "),
        )
    }

    fn fetch(&self, lookups: &[Lookup]) -> Result<Vec<LookupResult>, BackendError> {
        let plans: Vec<Result<Vec<String>, BackendError>> =
            lookups.iter().map(|l| self.candidates(l)).collect();
        let mut seen = BTreeSet::new();
        let names: Vec<String> = plans
            .iter()
            .flatten()
            .flatten()
            .filter(|n| seen.insert(n.as_str()))
            .cloned()
            .collect();
        if names.is_empty() {
            return Ok(plans.into_iter().map(|p| p.map(|_| None)).collect());
        }
        let answers = net::block_on(net::within(self.s.deadline, self.read_all(names)))?;
        let answers = match answers {
            Some(answers) => answers?,
            None => {
                return Ok(lookups
                    .iter()
                    .map(|l| Err(net::timed_out(&l.key)))
                    .collect());
            }
        };
        Ok(plans
            .into_iter()
            .map(|plan| {
                for name in plan? {
                    match answers.get(&name) {
                        Some(Ok(Some((v, when)))) => {
                            return Ok(Some(Found::Value(v.clone()).updated_opt(*when)));
                        }
                        Some(Ok(None)) => continue,
                        Some(Err(e)) => return Err(e.clone()),
                        None => {
                            return Err(BackendError::new(format!(
                                "`{name}` was not read (a bug in envrun)"
                            )));
                        }
                    }
                }
                Ok(None)
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn batches_hold_at_most_size_and_never_one_parameter_twice() {
        let many: Vec<String> = (0..25).map(|i| format!("/app/p{i}")).collect();
        let b = batches(&many, 10);
        assert_eq!(b.iter().map(Vec::len).collect::<Vec<_>>(), [10, 10, 5]);
        assert_eq!(b.concat(), many);

        let mixed = names(&["/app/db", "/app/db:2", "/app/db:prod", "/app/x", "db:3"]);
        let b = batches(&mixed, 10);
        for batch in &b {
            let bases: BTreeSet<&str> = batch.iter().map(|n| base(n)).collect();
            assert_eq!(bases.len(), batch.len(), "{batch:?}");
        }
        let mut all = b.concat();
        all.sort();
        let mut want = mixed.clone();
        want.sort();
        assert_eq!(all, want);
        assert_eq!(b.len(), 3);
    }

    #[test]
    fn selectors_are_split_from_names_and_arns() {
        assert_eq!(base("/app/db:3"), "/app/db");
        assert_eq!(base("/app/db"), "/app/db");
        assert_eq!(base("db:prod"), "db");
        let arn = "arn:aws:ssm:us-east-1:123456789012:parameter/app/db";
        assert_eq!(base(arn), arn);
        assert_eq!(base(&format!("{arn}:4")), arn);
        assert!(answers(arn, Some("/app/db"), None));
        assert!(answers("/app/db:4", Some("/app/db"), None));
        assert!(!answers("/app/d", Some("/app/db"), None));
    }

    #[test]
    fn versions_and_labels_are_checked() {
        let l = |params: &[(&str, &str)]| Lookup {
            key: "db".into(),
            params: params
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        };
        assert_eq!(
            ParameterStore::selector(&l(&[("version", "3")])).unwrap(),
            ":3"
        );
        assert_eq!(
            ParameterStore::selector(&l(&[("label", "prod")])).unwrap(),
            ":prod"
        );
        for bad in [
            vec![("version", "0")],
            vec![("version", "x")],
            vec![("version", "")],
            vec![("label", "")],
            vec![("version", "1"), ("label", "prod")],
        ] {
            assert!(ParameterStore::selector(&l(&bad)).is_err(), "{bad:?}");
        }
    }
}
