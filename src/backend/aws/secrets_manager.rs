//! `type: aws`: AWS Secrets Manager.
//!
//! `secret:NAME` reads the secret `{prefix}NAME` (a full ARN is used as written);
//! `SecretString` or `SecretBinary`, whichever it holds; `#field` reads a JSON secret's
//! field. With a tenant `T`, the tenant's copy comes first, by [`TenantLayout`]:
//! `{prefix}T/NAME` (`path`, the default) or field `NAME` of the JSON secret `{prefix}T`
//! (`json`); then `{prefix}NAME`.
//!
//! Every unpinned secret is read with `BatchGetSecretValue`, [`SECRETS_PER_BATCH`] ids a
//! call, the calls concurrently; an id in a batch's `Errors` fails that key (not found
//! falls through to the next candidate, then to "not found"). If the batch call itself is
//! denied (a policy that grants `GetSecretValue` but not `BatchGetSecretValue`), the ids of
//! that batch are read one by one. `?stage=AWSPREVIOUS` and `?version_id=...` pin a version
//! and are read with `GetSecretValue`.

use std::collections::{BTreeMap, BTreeSet};
use std::time::SystemTime;

use aws_sdk_secretsmanager::Client;
use futures_util::StreamExt;

use super::{
    AwsConfig, CONCURRENT_CALLS, SECRETS_PER_BATCH, Settings, TenantLayout, chunks, classify,
    connect, is_arn,
};
use crate::backend::net;
use crate::backend::{
    Backend, BackendError, Context, ErrorKind, Found, Lookup, LookupResult, json_field,
};
use crate::secret::Secret;

#[derive(Debug)]
pub struct SecretsManager {
    s: Settings,
}

/// One read: a secret id, and the version it is pinned to (none for a batch read).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Read {
    id: String,
    stage: Option<String>,
    version_id: Option<String>,
}

impl Read {
    fn pinned(&self) -> bool {
        self.stage.is_some() || self.version_id.is_some()
    }
}

/// Where one key may be: a read, and the field of it to take (the tenant's JSON secret).
#[derive(Clone, Debug)]
struct Candidate {
    read: Read,
    field: Option<String>,
}

/// The answer to one read: the value and when that version was created (the time the
/// value last changed, for `rotation:`), `None` when the secret does not exist, or an error.
type ReadResult = Result<Option<(Secret, Option<SystemTime>)>, BackendError>;

impl SecretsManager {
    pub fn new(config: &AwsConfig, ctx: &Context) -> SecretsManager {
        SecretsManager {
            s: Settings::new(config, ctx),
        }
    }

    /// The version a lookup pins, from `?stage=` and `?version_id=`.
    fn pin(lookup: &Lookup) -> Result<(Option<String>, Option<String>), BackendError> {
        let (mut stage, mut version_id) = (None, None);
        for (name, value) in &lookup.params {
            if value.is_empty() {
                return Err(BackendError::of(
                    ErrorKind::Config,
                    format!("`{}`: `?{name}=` needs a value", lookup.key),
                ));
            }
            match name.as_str() {
                "stage" => stage = Some(value.clone()),
                "version_id" => version_id = Some(value.clone()),
                _ => {}
            }
        }
        Ok((stage, version_id))
    }

    /// Where `lookup` is looked for, in order.
    fn candidates(&self, lookup: &Lookup) -> Result<Vec<Candidate>, BackendError> {
        let (stage, version_id) = Self::pin(lookup)?;
        let read = |id: String| Read {
            id,
            stage: stage.clone(),
            version_id: version_id.clone(),
        };
        let key = &lookup.key;
        if key.is_empty() {
            return Err(BackendError::of(
                ErrorKind::Config,
                "the secret name is empty",
            ));
        }
        if is_arn(key) {
            return Ok(vec![Candidate {
                read: read(key.clone()),
                field: None,
            }]);
        }
        let prefix = &self.s.config.prefix;
        let mut out = Vec::with_capacity(2);
        if let Some(t) = &self.s.tenant {
            out.push(match self.s.config.tenant_layout {
                TenantLayout::Path => Candidate {
                    read: read(format!("{prefix}{t}/{key}")),
                    field: None,
                },
                TenantLayout::Json => Candidate {
                    read: read(format!("{prefix}{t}")),
                    field: Some(key.clone()),
                },
            });
        }
        out.push(Candidate {
            read: read(format!("{prefix}{key}")),
            field: None,
        });
        Ok(out)
    }

    async fn read_all(&self, reads: Vec<Read>) -> Result<BTreeMap<Read, ReadResult>, BackendError> {
        let config = connect(&self.s).await?;
        let client = Client::new(&config);
        let (pinned, batched): (Vec<Read>, Vec<Read>) = reads.into_iter().partition(Read::pinned);
        let ids: Vec<String> = batched.into_iter().map(|r| r.id).collect();
        let mut out = BTreeMap::new();

        let batches = futures_util::stream::iter(chunks(&ids, SECRETS_PER_BATCH))
            .map(|chunk| batch(&client, chunk))
            .buffer_unordered(CONCURRENT_CALLS)
            .collect::<Vec<_>>();
        let singles = futures_util::stream::iter(pinned)
            .map(|read| async {
                let result = get(&client, &read).await;
                (read, result)
            })
            .buffer_unordered(CONCURRENT_CALLS)
            .collect::<Vec<_>>();
        let (batches, singles) = tokio::join!(batches, singles);
        for answers in batches {
            for (id, result) in answers {
                let read = Read {
                    id,
                    stage: None,
                    version_id: None,
                };
                out.insert(read, result);
            }
        }
        out.extend(singles);
        Ok(out)
    }
}

/// One `BatchGetSecretValue` call (following `NextToken` if AWS pages the answer): every
/// id of `ids` with its answer. A call that is denied as a whole is retried id by id with
/// `GetSecretValue`.
async fn batch(client: &Client, ids: Vec<String>) -> Vec<(String, ReadResult)> {
    let what = || {
        if ids.len() == 1 {
            format!("BatchGetSecretValue `{}`", ids[0])
        } else {
            format!("BatchGetSecretValue of {} secrets", ids.len())
        }
    };
    let mut values: Vec<aws_sdk_secretsmanager::types::SecretValueEntry> = Vec::new();
    let mut errors: Vec<aws_sdk_secretsmanager::types::ApiErrorType> = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let sent = client
            .batch_get_secret_value()
            .set_secret_id_list(Some(ids.clone()))
            .set_next_token(token.take())
            .send()
            .await;
        let mut page = match sent {
            Ok(page) => page,
            Err(e) => {
                let err = classify(&what(), &e);
                // Only before any page was answered: a batch is read one way.
                if err.kind == ErrorKind::Denied && values.is_empty() && errors.is_empty() {
                    return one_by_one(client, ids).await;
                }
                return ids.into_iter().map(|id| (id, Err(err.clone()))).collect();
            }
        };
        values.append(&mut page.secret_values.take().unwrap_or_default());
        errors.append(&mut page.errors.take().unwrap_or_default());
        match page.next_token.take() {
            Some(t) if !t.is_empty() => token = Some(t),
            _ => break,
        }
    }
    // Each value is moved into a `Secret` once (wiped on drop) and shared by every id that
    // names it (a name and its ARN may both be asked for).
    let mut found: BTreeMap<&str, (Secret, Option<SystemTime>)> = BTreeMap::new();
    for v in &mut values {
        let value = (
            value_of(v.secret_string.take(), v.secret_binary.take()),
            time(v.created_date.as_ref()),
        );
        for id in ids
            .iter()
            .filter(|id| answers(id, v.name.as_deref(), v.arn.as_deref()))
        {
            found.entry(id).or_insert_with(|| value.clone());
        }
    }
    ids.iter()
        .map(|id| {
            let result = match found.remove(id.as_str()) {
                Some(value) => Ok(Some(value)),
                None => match errors.iter().find(|e| e.secret_id.as_deref() == Some(id)) {
                    Some(e) => item_error(id, e),
                    None => Ok(None),
                },
            };
            (id.clone(), result)
        })
        .collect()
}

/// Whether an answer (by its name and ARN) is for the requested `id`: a name, a full ARN,
/// or an ARN without its random suffix.
fn answers(id: &str, name: Option<&str>, arn: Option<&str>) -> bool {
    name == Some(id)
        || arn == Some(id)
        || (is_arn(id) && arn.is_some_and(|a| a.starts_with(&format!("{id}-"))))
}

/// A batch's per-item error: not found is `None` (the next candidate is tried); anything
/// else fails the key, named.
fn item_error(id: &str, e: &aws_sdk_secretsmanager::types::ApiErrorType) -> ReadResult {
    let code = e.error_code.as_deref().unwrap_or("unknown error");
    if code == "ResourceNotFoundException" {
        return Ok(None);
    }
    let message = match e.message.as_deref() {
        Some(m) if !m.is_empty() => format!("BatchGetSecretValue `{id}`: {code}: {m}"),
        _ => format!("BatchGetSecretValue `{id}`: {code}"),
    };
    Err(BackendError::of(super::kind_of_code(code, 400), message))
}

/// Reads each id with `GetSecretValue` (when `BatchGetSecretValue` is not allowed).
async fn one_by_one(client: &Client, ids: Vec<String>) -> Vec<(String, ReadResult)> {
    futures_util::stream::iter(ids)
        .map(|id| async {
            let read = Read {
                id,
                stage: None,
                version_id: None,
            };
            let result = get(client, &read).await;
            (read.id, result)
        })
        .buffer_unordered(CONCURRENT_CALLS)
        .collect()
        .await
}

/// One `GetSecretValue`, pinned or not.
async fn get(client: &Client, read: &Read) -> ReadResult {
    let sent = client
        .get_secret_value()
        .secret_id(&read.id)
        .set_version_stage(read.stage.clone())
        .set_version_id(read.version_id.clone())
        .send()
        .await;
    match sent {
        Ok(mut out) => Ok(Some((
            value_of(out.secret_string.take(), out.secret_binary.take()),
            time(out.created_date.as_ref()),
        ))),
        Err(e) => {
            let err = classify(&describe("GetSecretValue", read), &e);
            if err.kind == ErrorKind::NotFound {
                Ok(None)
            } else {
                Err(err)
            }
        }
    }
}

/// "GetSecretValue `prod/db` (stage AWSPREVIOUS)"
fn describe(op: &str, read: &Read) -> String {
    let mut s = format!("{op} `{}`", read.id);
    if let Some(stage) = &read.stage {
        s.push_str(&format!(" (stage {stage})"));
    }
    if let Some(v) = &read.version_id {
        s.push_str(&format!(" (version id {v})"));
    }
    s
}

/// An AWS timestamp as a time.
fn time(t: Option<&aws_smithy_types::DateTime>) -> Option<SystemTime> {
    crate::backend::unix_time(t?.as_secs_f64())
}

/// The value of a secret: its string, else its binary (empty if it has neither).
fn value_of(string: Option<String>, binary: Option<aws_smithy_types::Blob>) -> Secret {
    match (string, binary) {
        (Some(s), _) => Secret::from(s),
        (None, Some(b)) => Secret::from_vec(b.into_inner()),
        (None, None) => Secret::from_vec(Vec::new()),
    }
}

impl Backend for SecretsManager {
    fn kind(&self) -> &'static str {
        "aws"
    }

    fn params(&self) -> &'static [&'static str] {
        &["stage", "version_id"]
    }

    fn tenant(&self) -> Option<&str> {
        self.s.tenant.as_deref()
    }

    /// The creation time of the version read: when the value last changed.
    fn reports_age(&self) -> bool {
        true
    }

    fn not_found_hint(&self, _lookup: &Lookup) -> Option<String> {
        Some(String::from(
            "check the name, the backend's `prefix`, the region and the account (`aws secretsmanager describe-secret --secret-id NAME` with the same credentials)",
        ))
    }

    fn looked_for(&self, lookup: &Lookup) -> Option<String> {
        let candidates = self.candidates(lookup).ok()?;
        Some(
            candidates
                .iter()
                .map(|c| match &c.field {
                    Some(f) => format!("field `{f}` of secret `{}`", c.read.id),
                    None => format!("secret `{}`", c.read.id),
                })
                .collect::<Vec<_>>()
                .join(", then "),
        )
    }

    fn fetch(&self, lookups: &[Lookup]) -> Result<Vec<LookupResult>, BackendError> {
        let plans: Vec<Result<Vec<Candidate>, BackendError>> =
            lookups.iter().map(|l| self.candidates(l)).collect();
        let reads: BTreeSet<Read> = plans
            .iter()
            .flatten()
            .flatten()
            .map(|c| c.read.clone())
            .collect();
        if reads.is_empty() {
            return Ok(plans.into_iter().map(|p| p.map(|_| None)).collect());
        }
        let deadline = self.s.deadline;
        let answers = net::block_on(net::within(
            deadline,
            self.read_all(reads.into_iter().collect()),
        ))?;
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
            .map(|plan| pick(&plan?, &answers))
            .collect())
    }
}

/// The first candidate that has the key; an error stops the search (fail closed: a denied
/// tenant copy must not silently become the global value).
fn pick(candidates: &[Candidate], answers: &BTreeMap<Read, ReadResult>) -> LookupResult {
    for c in candidates {
        match answers.get(&c.read) {
            Some(Ok(Some((value, when)))) => match &c.field {
                None => return Ok(Some(Found::Value(value.clone()).updated_opt(*when))),
                Some(f) => match json_field(value, f) {
                    Ok(v) => return Ok(Some(Found::Value(v).updated_opt(*when))),
                    // The tenant's JSON secret lacks this name: the global one is next.
                    Err(e) if e.message.starts_with("no field") => continue,
                    Err(e) => {
                        let mut err = BackendError::of(
                            ErrorKind::BadResponse,
                            format!("tenant secret `{}`: {}", c.read.id, e.message),
                        );
                        err.hint = Some(String::from(
                            "with `tenant_layout: json` the tenant's secret must be a JSON object of every value; or use `tenant_layout: path`",
                        ));
                        return Err(err);
                    }
                },
            },
            Some(Ok(None)) => continue,
            Some(Err(e)) => return Err(e.clone()),
            None => {
                return Err(BackendError::new(format!(
                    "`{}` was not read (a bug in envrun)",
                    c.read.id
                )));
            }
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backend(prefix: &str, tenant: Option<&str>, layout: TenantLayout) -> SecretsManager {
        let config = AwsConfig {
            prefix: prefix.into(),
            tenant_layout: layout,
            ..AwsConfig::default()
        };
        SecretsManager::new(&config, &Context::new(".", tenant.map(str::to_owned)))
    }

    fn lookup(key: &str, params: &[(&str, &str)]) -> Lookup {
        Lookup::of(key, params)
    }

    #[test]
    fn candidates_follow_prefix_tenant_layout_and_arns() {
        let b = backend("prod/", Some("acme"), TenantLayout::Path);
        assert_eq!(
            b.looked_for(&lookup("db", &[])).unwrap(),
            "secret `prod/acme/db`, then secret `prod/db`"
        );
        let b = backend("prod/", Some("acme"), TenantLayout::Json);
        assert_eq!(
            b.looked_for(&lookup("db", &[])).unwrap(),
            "field `db` of secret `prod/acme`, then secret `prod/db`"
        );
        let arn = "arn:aws:secretsmanager:us-east-1:123456789012:secret:db-AbCdEf";
        assert_eq!(
            b.looked_for(&lookup(arn, &[])).unwrap(),
            format!("secret `{arn}`")
        );
        let c = b
            .candidates(&lookup("db", &[("stage", "AWSPREVIOUS")]))
            .unwrap();
        assert!(c.iter().all(|c| c.read.pinned()));
        assert!(b.candidates(&lookup("db", &[("stage", "")])).is_err());
    }

    #[test]
    fn answers_match_names_arns_and_partial_arns() {
        let arn = "arn:aws:secretsmanager:us-east-1:123456789012:secret:db-AbCdEf";
        assert!(answers("db", Some("db"), Some(arn)));
        assert!(answers(arn, Some("db"), Some(arn)));
        assert!(answers(
            "arn:aws:secretsmanager:us-east-1:123456789012:secret:db",
            Some("db"),
            Some(arn)
        ));
        assert!(!answers("d", Some("db"), Some(arn)));
    }
}
