//! Resolution: turns parsed values into bytes, or into a list of everything that failed.
//!
//! Every `secret:` reference is grouped by backend and de-duplicated (two variables that use
//! `secret:DB#user` and `secret:DB#password` cost one lookup of `DB`); each backend is asked
//! for all its keys at once, and the backends run concurrently. Nothing is partial: if any
//! reference fails, [`resolve`] returns every failure and no values.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;
use std::time::SystemTime;

use crate::backend::{Backend, BackendConfig, BackendError, Context, Lookup, LookupResult};
use crate::error::{Error, Failure};
use crate::fileio::{self, FileError, Follow};
use crate::manifest::Manifest;
use crate::reference::{Part, Reference, SecretRef};
use crate::secret::{MAX_VALUE, Secret, Value};

/// The name the default backend (`secrets:`) goes by in messages.
pub const DEFAULT_BACKEND: &str = "default";

/// A variable to resolve: its name and parsed value.
pub type Request = (String, Vec<Part>);

/// What resolution produced.
#[derive(Debug, Default)]
pub struct Resolved {
    /// Each variable and its value, in request order.
    pub vars: Vec<(String, Value)>,
    /// Every secret value to mask in the child's output, with the variable it belongs to:
    /// each secret part of a value and, for an interpolated value, the whole of it.
    pub masks: Vec<(String, Secret)>,
    /// Variables of envrun's environment that backends read secrets from
    /// ([`Backend::consumed_env`]); the command does not inherit them.
    pub consumed: BTreeSet<String>,
}

/// Resolves `requests` against the backends of `manifest`: every value, or every failure.
/// What backends warn about ([`Backend::warnings`]) is added to `warnings`, whether or not
/// resolution succeeds.
pub fn resolve(
    manifest: &Manifest,
    requests: &[Request],
    ctx: &Context,
    warnings: &mut Vec<String>,
) -> Result<Resolved, Error> {
    into_resolved(resolve_each(manifest, requests, ctx, false, warnings))
}

/// All values of `outcome`, or all its failures.
pub fn into_resolved(outcome: Outcome) -> Result<Resolved, Error> {
    let Outcome { vars, consumed } = outcome;
    let mut resolved = Resolved {
        consumed,
        ..Resolved::default()
    };
    let mut failures = Vec::new();
    for var in vars {
        match var.result {
            Ok(value) => {
                resolved
                    .masks
                    .extend(var.masks.into_iter().map(|m| (var.name.clone(), m)));
                resolved.vars.push((var.name, value));
            }
            Err(f) => failures.extend(f),
        }
    }
    if failures.is_empty() {
        Ok(resolved)
    } else {
        Err(Error::Resolve { failures })
    }
}

/// What resolution found for every variable, failed or not: what [`resolve`] turns into
/// all values or all failures, and what `envrun check` reports one by one.
#[derive(Debug, Default)]
pub struct Outcome {
    /// One entry per request, in request order.
    pub vars: Vec<VarOutcome>,
    /// See [`Resolved::consumed`].
    pub consumed: BTreeSet<String>,
}

/// One variable: where its value comes from, and the value or why it failed.
#[derive(Debug)]
pub struct VarOutcome {
    pub name: String,
    /// Each reference in the value, in order (none for a literal).
    pub sources: Vec<Source>,
    pub result: Result<Value, Vec<Failure>>,
    /// The values to mask for this variable (each secret part, and an interpolated whole).
    pub masks: Vec<Secret>,
    /// Whether the value has literal text (a plain value, or references inside a template).
    pub literal: bool,
}

impl VarOutcome {
    /// Where the value comes from, by reference only: `secret:API_KEY`,
    /// `template with secret:A + env:B`, or `(literal)`. Literal text is never shown: it may be
    /// a credential pasted into the manifest.
    pub fn describe(&self) -> String {
        let refs = self
            .sources
            .iter()
            .map(|s| s.reference.as_str())
            .collect::<Vec<_>>()
            .join(" + ");
        match (refs.is_empty(), self.literal) {
            (true, _) => String::from("(literal)"),
            (false, false) => refs,
            (false, true) => format!("template with {refs}"),
        }
    }
}

/// One reference of a variable, by name only: what dry runs, `check` and the audit log show.
#[derive(Clone, Debug)]
pub struct Source {
    /// The reference as written (`secret@prod:apps/billing#password`, `env:HOME`).
    pub reference: String,
    /// `secret`, `file` or `env`.
    pub kind: &'static str,
    /// The backend's name for `secret:` (`default` for `secrets:`).
    pub backend: Option<String>,
    /// The backend's type (`local`, `vault`, ...), when it was built.
    pub backend_kind: Option<&'static str>,
    /// The key (`secret:`), path (`file:`) or variable (`env:`).
    pub key: String,
    /// When the value was last changed, as far as the backend knows.
    pub age: Age,
}

/// What is known about when a value was last changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Age {
    /// The backend recorded this time.
    At(SystemTime),
    /// The backend records times, but has none for this value (a store entry written
    /// before envrun recorded them, a Vault KV v1 secret).
    NotRecorded,
    /// The backend keeps no change times ([`Backend::reports_age`] is false), or the
    /// value came from envrun's environment (`env:`). A `file:` value's age is the file's
    /// modification time.
    NotKept,
    /// The value was not found, so it has no age.
    Unknown,
}

impl Source {
    fn of(reference: &Reference) -> Source {
        let (kind, backend, key) = match reference {
            Reference::Secret(r) => ("secret", Some(backend_name(r).to_owned()), r.key.clone()),
            Reference::Env(v) => ("env", None, v.clone()),
            Reference::File(p) => ("file", None, p.clone()),
        };
        Source {
            reference: reference.to_string(),
            kind,
            backend,
            backend_kind: None,
            key,
            age: Age::NotKept,
        }
    }
}

/// Resolves every request and reports each one, failed or not. With `fetch_all`, backends
/// are asked for the keys of every valid reference even when another reference names an
/// unknown backend or parameter (`check` wants every finding); a run stops before fetching.
///
/// What backends warn about ([`Backend::warnings`]) is added to `warnings`.
pub fn resolve_each(
    manifest: &Manifest,
    requests: &[Request],
    ctx: &Context,
    fetch_all: bool,
    warnings: &mut Vec<String>,
) -> Outcome {
    let mut failures = Vec::new();
    let fetched = fetch_secrets(manifest, requests, ctx, &mut failures, fetch_all);
    warnings.extend(fetched.backends.values().flat_map(|b| b.warnings()));
    // A run stops before fetching when a reference names an unknown backend or parameter:
    // only those failures are reported, and no other variable is evaluated.
    let stopped = !failures.is_empty() && !fetch_all;
    let mut outcome = Outcome {
        consumed: fetched.consumed.clone(),
        ..Outcome::default()
    };
    for (var, parts) in requests {
        let mut sources = Vec::new();
        let mut pieces: Vec<Value> = Vec::with_capacity(parts.len());
        // Unknown backends or parameters, found before anything was fetched.
        let mut failed: Vec<Failure> = failures
            .iter()
            .filter(|f: &&Failure| f.var == *var)
            .map(|f| Failure {
                var: f.var.clone(),
                reference: f.reference.clone(),
                reason: f.reason.clone(),
                hint: f.hint.clone(),
            })
            .collect();
        if stopped {
            outcome.vars.push(VarOutcome {
                literal: has_literal(parts),
                name: var.clone(),
                sources: parts
                    .iter()
                    .filter_map(|p| match p {
                        Part::Ref(r) => Some(Source::of(r)),
                        Part::Literal(_) => None,
                    })
                    .collect(),
                result: Err(failed),
                masks: Vec::new(),
            });
            continue;
        }
        for part in parts {
            let Part::Ref(reference) = part else {
                if let Ok(v) = evaluate(var, part, &fetched, ctx) {
                    pieces.push(v);
                }
                continue;
            };
            let mut source = Source::of(reference);
            if let Reference::Secret(r) = reference
                && let Some(backend) = fetched.backends.get(backend_name(r))
            {
                source.backend_kind = Some(backend.kind());
            }
            if !failed.is_empty() && failed.iter().any(|f| f.reference == source.reference) {
                source.age = Age::Unknown;
                sources.push(source);
                continue;
            }
            match evaluate(var, part, &fetched, ctx) {
                Ok(v) => {
                    source.age = age_of(reference, &fetched, ctx);
                    pieces.push(v);
                }
                Err(failure) => {
                    source.age = Age::Unknown;
                    failed.push(failure);
                }
            }
            sources.push(source);
        }
        if !failed.is_empty() {
            outcome.vars.push(VarOutcome {
                literal: has_literal(parts),
                name: var.clone(),
                sources,
                result: Err(failed),
                masks: Vec::new(),
            });
            continue;
        }
        let value = join(&pieces);
        let mut masks: Vec<Secret> = pieces
            .iter()
            .filter(|p| p.sensitive)
            .map(|p| p.bytes.clone())
            .collect();
        if pieces.len() > 1 && value.sensitive {
            masks.push(value.bytes.clone());
        }
        outcome.vars.push(VarOutcome {
            literal: has_literal(parts),
            name: var.clone(),
            sources,
            result: Ok(value),
            masks,
        });
    }
    // A failure not tied to one variable (a backend that answered wrongly).
    for f in failures.into_iter().filter(|f| f.var == "-") {
        outcome.vars.push(VarOutcome {
            literal: false,
            name: f.var.clone(),
            sources: Vec::new(),
            result: Err(vec![f]),
            masks: Vec::new(),
        });
    }
    outcome
}

fn has_literal(parts: &[Part]) -> bool {
    parts.iter().any(|p| matches!(p, Part::Literal(_)))
}

/// The age of a resolved reference: what its backend found, or a file's modification time.
fn age_of(reference: &Reference, fetched: &Fetched, ctx: &Context) -> Age {
    let r = match reference {
        Reference::Secret(r) => r,
        Reference::File(path) => {
            return std::fs::metadata(ctx.base_dir.join(path))
                .and_then(|m| m.modified())
                .map_or(Age::NotRecorded, Age::At);
        }
        Reference::Env(_) => return Age::NotKept,
    };
    let name = backend_name(r);
    let Some(backend) = fetched.backends.get(name) else {
        return Age::Unknown;
    };
    if !backend.reports_age() {
        return Age::NotKept;
    }
    let lookup = Lookup {
        key: r.key.clone(),
        params: r.params.clone(),
    };
    match fetched.results.get(&(name.to_owned(), lookup)) {
        Some(Ok(Some(found))) => found.updated().map_or(Age::NotRecorded, Age::At),
        _ => Age::Unknown,
    }
}

/// Values fetched from backends, by backend name and lookup.
struct Fetched {
    backends: BTreeMap<String, Box<dyn Backend>>,
    results: BTreeMap<(String, Lookup), LookupResult>,
    /// Backends that could not answer at all.
    failed: BTreeMap<String, BackendError>,
    consumed: BTreeSet<String>,
}

/// How messages name a backend: "backend `prod` (env, tenant `acme`)".
fn label(name: &str, backend: &dyn Backend) -> String {
    match backend.tenant() {
        Some(t) => format!("backend `{name}` ({}, tenant `{t}`)", backend.kind()),
        None => format!("backend `{name}` ({})", backend.kind()),
    }
}

fn backend_name(r: &SecretRef) -> &str {
    r.backend.as_deref().unwrap_or(DEFAULT_BACKEND)
}

fn config<'m>(manifest: &'m Manifest, name: &str) -> Option<&'m BackendConfig> {
    if name == DEFAULT_BACKEND && !manifest.backends.contains_key(DEFAULT_BACKEND) {
        Some(&manifest.default_backend)
    } else {
        manifest.backends.get(name)
    }
}

fn secret_refs(requests: &[Request]) -> impl Iterator<Item = (&str, &SecretRef)> {
    requests.iter().flat_map(|(var, parts)| {
        parts.iter().filter_map(move |p| match p {
            Part::Ref(Reference::Secret(r)) => Some((var.as_str(), r)),
            _ => None,
        })
    })
}

/// One backend's answer to all its lookups.
type Answer = (String, Vec<Lookup>, Result<Vec<LookupResult>, BackendError>);

/// Builds the backends in use, checks names and parameters, then fetches concurrently.
fn fetch_secrets(
    manifest: &Manifest,
    requests: &[Request],
    ctx: &Context,
    failures: &mut Vec<Failure>,
    fetch_all: bool,
) -> Fetched {
    let mut backends: BTreeMap<String, Box<dyn Backend>> = BTreeMap::new();
    let mut wanted: BTreeMap<String, BTreeSet<Lookup>> = BTreeMap::new();
    for (var, r) in secret_refs(requests) {
        let name = backend_name(r);
        let fail = |reason: String, hint: String| Failure {
            var: var.to_owned(),
            reference: r.to_string(),
            reason,
            hint: Some(hint),
        };
        if !backends.contains_key(name) {
            let Some(cfg) = config(manifest, name) else {
                failures.push(fail(
                    format!("no backend named `{name}` in {}", manifest.describe()),
                    format!(
                        "define it under `backends:` in the manifest, or fix the name after `secret@` (defined: {})",
                        manifest.backend_names().join(", ")
                    ),
                ));
                continue;
            };
            match cfg.build(ctx) {
                Ok(b) => {
                    backends.insert(name.to_owned(), b);
                }
                Err(e) => {
                    failures.push(Failure {
                        var: var.to_owned(),
                        reference: r.to_string(),
                        reason: format!("backend `{name}`: {e}"),
                        hint: e.hint_or_default(),
                    });
                    continue;
                }
            }
        }
        let backend = &backends[name];
        if let Some((p, _)) = r
            .params
            .iter()
            .find(|(p, _)| !backend.params().contains(&p.as_str()))
        {
            let known = backend.params();
            failures.push(fail(
                format!(
                    "backend `{name}` ({}) has no parameter `{p}`{}",
                    backend.kind(),
                    if known.is_empty() {
                        String::from(" (it takes none)")
                    } else {
                        format!(" (it takes: {})", known.join(", "))
                    }
                ),
                String::from("remove the `?...` part of the reference, or use a parameter listed"),
            ));
            continue;
        }
        wanted.entry(name.to_owned()).or_default().insert(Lookup {
            key: r.key.clone(),
            params: r.params.clone(),
        });
    }
    let mut results = BTreeMap::new();
    let mut failed = BTreeMap::new();
    let mut consumed = BTreeSet::new();
    if failures.is_empty() || fetch_all {
        for (name, lookups) in &wanted {
            let lookups: Vec<Lookup> = lookups.iter().cloned().collect();
            consumed.extend(backends[name].consumed_env(&lookups));
        }
        // One thread per backend, all joined before this returns (scoped); a single backend
        // (the usual case) runs on this thread, as a thread would only add its start and
        // teardown. A backend that panics is reported as failed, never silently dropped: the
        // run must not go on without its values.
        let answers: Vec<Answer> = if wanted.len() == 1 {
            wanted
                .into_iter()
                .map(|(name, lookups)| {
                    let backend = &backends[&name];
                    let lookups: Vec<Lookup> = lookups.into_iter().collect();
                    let answer = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        backend.fetch(&lookups)
                    }))
                    .unwrap_or_else(|_| Err(panicked()));
                    (name, lookups, answer)
                })
                .collect()
        } else {
            fetch_concurrently(wanted, &backends)
        };
        for (name, lookups, answer) in answers {
            match answer {
                Ok(values) if values.len() == lookups.len() => {
                    for (l, v) in lookups.into_iter().zip(values) {
                        results.insert((name.clone(), l), v);
                    }
                }
                Ok(_) => failures.push(Failure {
                    var: String::from("-"),
                    reference: format!("backend `{name}`"),
                    reason: String::from("returned the wrong number of answers (a bug in envrun)"),
                    hint: Some(String::from("please report this bug")),
                }),
                Err(e) => {
                    // Reported once per variable that needed this backend (in `evaluate`), next
                    // to the failures of every other backend, so one run shows everything.
                    failed.insert(name, e);
                }
            }
        }
    }
    Fetched {
        backends,
        results,
        failed,
        consumed,
    }
}

/// Fetches each backend's lookups on a thread of its own, all joined before this returns.
fn fetch_concurrently(
    wanted: BTreeMap<String, BTreeSet<Lookup>>,
    backends: &BTreeMap<String, Box<dyn Backend>>,
) -> Vec<Answer> {
    std::thread::scope(|s| {
        let handles: Vec<_> = wanted
            .into_iter()
            .map(|(name, lookups)| {
                let backend = &backends[&name];
                let lookups: Vec<Lookup> = lookups.into_iter().collect();
                let handle = s.spawn({
                    let lookups = lookups.clone();
                    move || backend.fetch(&lookups)
                });
                (name, lookups, handle)
            })
            .collect();
        handles
            .into_iter()
            .map(|(name, lookups, handle)| {
                let answer = handle.join().unwrap_or_else(|_| Err(panicked()));
                (name, lookups, answer)
            })
            .collect()
    })
}

/// What a backend that panicked while fetching is reported as.
fn panicked() -> BackendError {
    BackendError::new("failed while fetching (it panicked: a bug in envrun, please report it)")
}

/// Evaluates one part of the value of `var`.
fn evaluate(var: &str, part: &Part, fetched: &Fetched, ctx: &Context) -> Result<Value, Failure> {
    let reference = match part {
        Part::Literal(s) => {
            return Ok(Value {
                bytes: Secret::from_slice(s.as_bytes()),
                sensitive: false,
            });
        }
        Part::Ref(r) => r,
    };
    let fail = |reason: String, hint: Option<String>| Failure {
        var: var.to_owned(),
        reference: reference.to_string(),
        reason,
        hint,
    };
    let fail_with =
        |e: &BackendError, label: &str| fail(format!("{label}: {e}"), e.hint_or_default());
    match reference {
        Reference::Secret(r) => {
            let name = backend_name(r);
            let lookup = Lookup {
                key: r.key.clone(),
                params: r.params.clone(),
            };
            let backend = fetched.backends[name].as_ref();
            // Only a failure names the backend: no message is made for the usual success.
            let label = || label(name, backend);
            let key = (name.to_owned(), lookup);
            let lookup = &key.1;
            let found = match fetched.results.get(&key) {
                Some(Ok(Some(v))) => v,
                Some(Ok(None)) => {
                    let place = backend
                        .looked_for(lookup)
                        .map(|p| format!(": {p}"))
                        .unwrap_or_default();
                    return Err(fail(
                        format!("not found in {}{place}", label()),
                        backend.not_found_hint(lookup),
                    ));
                }
                Some(Err(e)) => return Err(fail_with(e, &label())),
                None => {
                    return Err(match fetched.failed.get(name) {
                        Some(e) => fail_with(e, &label()),
                        None => fail(
                            String::from("was not fetched (a bug in envrun)"),
                            Some(String::from("please report this bug")),
                        ),
                    });
                }
            };
            let bytes = found
                .select(backend, r.field.as_deref())
                .map_err(|e| fail_with(&e, &label()))?;
            Ok(Value {
                bytes,
                sensitive: true,
            })
        }
        Reference::Env(var) => match std::env::var_os(var) {
            Some(v) => Ok(Value {
                bytes: Secret::from_vec(v.into_vec()),
                sensitive: false,
            }),
            None => Err(fail(
                String::from("not set in envrun's environment"),
                Some(format!(
                    "export {var} before running envrun, or remove the `env:` reference"
                )),
            )),
        },
        Reference::File(path) => {
            let full = ctx.base_dir.join(path);
            let (_, mut bytes) =
                fileio::read_regular(&full, MAX_VALUE, Follow::Yes).map_err(|e| {
                    let hint = match e {
                        FileError::NotFound(_) => {
                            String::from("`file:` paths are relative to the manifest's directory")
                        }
                        FileError::NotRegular { .. } => String::from(
                            "`file:` reads a regular file; a FIFO, device or directory is refused",
                        ),
                        ref e => e.hint().unwrap_or_default(),
                    };
                    fail(e.to_string(), Some(hint))
                })?;
            crate::secret::trim_one_newline(&mut bytes);
            Ok(Value {
                bytes: Secret::from_slice(&bytes),
                sensitive: true,
            })
        }
    }
}

/// Concatenates the pieces into one value, in a buffer sized before it is filled.
fn join(pieces: &[Value]) -> Value {
    if let [single] = pieces {
        return single.clone();
    }
    let len = pieces.iter().map(|p| p.bytes.len()).sum();
    let mut buf = Vec::with_capacity(len);
    for p in pieces {
        buf.extend_from_slice(p.bytes.expose());
    }
    Value {
        bytes: Secret::from_vec(buf),
        sensitive: pieces.iter().any(|p| p.sensitive),
    }
}

/// Finds references in envrun's inherited environment: only whole `secret:` / `secret@`
/// values count (`env:` and `file:` are left alone there: `DATABASE_URL=file:./dev.db` is a
/// common literal). `as_file:secret:...` asks for the value as a file; the flag says so.
pub fn inherited_requests(env: &[(OsString, Secret)]) -> Result<Vec<(Request, bool)>, Error> {
    let mut out = Vec::new();
    for (name, value) in env {
        let (Some(name), Ok(value)) = (name.to_str(), std::str::from_utf8(value.expose())) else {
            continue;
        };
        let (value, as_file) = match value.strip_prefix(crate::manifest::AS_FILE) {
            Some(rest) => (rest, true),
            None => (value, false),
        };
        if !(value.starts_with("secret:") || value.starts_with("secret@")) {
            continue;
        }
        match crate::reference::parse_reference(value) {
            Some(Ok(r)) => out.push(((name.to_owned(), vec![Part::Ref(r)]), as_file)),
            Some(Err(e)) => {
                return Err(Error::Resolve {
                    failures: vec![Failure {
                        var: name.to_owned(),
                        reference: String::from("(inherited environment)"),
                        reason: e.to_string(),
                        hint: Some(format!(
                            "fix or unset ${name}, or pass --no-inherit-refs to leave such values alone"
                        )),
                    }],
                });
            }
            None => {}
        }
    }
    Ok(out)
}
