//! Resolution: turns parsed values into bytes, or into a list of everything that failed.
//!
//! Every `secret:` reference is grouped by backend and de-duplicated (two variables that use
//! `secret:DB#user` and `secret:DB#password` cost one lookup of `DB`); each backend is asked
//! for all its keys at once, and the backends run concurrently. Nothing is partial: if any
//! reference fails, [`resolve`] returns every failure and no values.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;

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

/// Resolves `requests` against the backends of `manifest`. What backends warn about
/// ([`Backend::warnings`]) is added to `warnings`, whether or not resolution succeeds.
pub fn resolve(
    manifest: &Manifest,
    requests: &[Request],
    ctx: &Context,
    warnings: &mut Vec<String>,
) -> Result<Resolved, Error> {
    let mut failures = Vec::new();
    let fetched = fetch_secrets(manifest, requests, ctx, &mut failures);
    warnings.extend(fetched.backends.values().flat_map(|b| b.warnings()));
    if !failures.is_empty() {
        // Unknown backends or parameters: nothing was fetched.
        return Err(Error::Resolve { failures });
    }
    let mut resolved = Resolved {
        consumed: fetched.consumed.clone(),
        ..Resolved::default()
    };
    for (var, parts) in requests {
        let mut pieces: Vec<Value> = Vec::with_capacity(parts.len());
        let mut ok = true;
        for part in parts {
            match evaluate(var, part, &fetched, ctx) {
                Ok(v) => pieces.push(v),
                Err(failure) => {
                    failures.push(failure);
                    ok = false;
                }
            }
        }
        if !ok {
            continue;
        }
        let value = join(&pieces);
        for piece in pieces.iter().filter(|p| p.sensitive) {
            resolved.masks.push((var.clone(), piece.bytes.clone()));
        }
        if pieces.len() > 1 && value.sensitive {
            resolved.masks.push((var.clone(), value.bytes.clone()));
        }
        resolved.vars.push((var.clone(), value));
    }
    if failures.is_empty() {
        Ok(resolved)
    } else {
        Err(Error::Resolve { failures })
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
    if failures.is_empty() {
        for (name, lookups) in &wanted {
            let lookups: Vec<Lookup> = lookups.iter().cloned().collect();
            consumed.extend(backends[name].consumed_env(&lookups));
        }
        // One thread per backend, all joined before this returns (scoped). A backend that
        // panics is reported as failed, never silently dropped: the run must not go on
        // without its values.
        let answers: Vec<Answer> = std::thread::scope(|s| {
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
                    let answer = handle.join().unwrap_or_else(|_| {
                        Err(BackendError::new(
                            "failed while fetching (it panicked: a bug in envrun, please report it)",
                        ))
                    });
                    (name, lookups, answer)
                })
                .collect()
        });
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
            let label = label(name, backend);
            let found = match fetched.results.get(&(name.to_owned(), lookup.clone())) {
                Some(Ok(Some(v))) => v,
                Some(Ok(None)) => {
                    let place = backend
                        .looked_for(&lookup)
                        .map(|p| format!(": {p}"))
                        .unwrap_or_default();
                    return Err(fail(
                        format!("not found in {label}{place}"),
                        backend.not_found_hint(&lookup),
                    ));
                }
                Some(Err(e)) => return Err(fail_with(e, &label)),
                None => {
                    return Err(match fetched.failed.get(name) {
                        Some(e) => fail_with(e, &label),
                        None => fail(
                            String::from("was not fetched (a bug in envrun)"),
                            Some(String::from("please report this bug")),
                        ),
                    });
                }
            };
            let bytes = found
                .select(backend, r.field.as_deref())
                .map_err(|e| fail_with(&e, &label))?;
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
/// common literal).
pub fn inherited_requests(env: &[(OsString, Secret)]) -> Result<Vec<Request>, Error> {
    let mut out = Vec::new();
    for (name, value) in env {
        let (Some(name), Ok(value)) = (name.to_str(), std::str::from_utf8(value.expose())) else {
            continue;
        };
        if !(value.starts_with("secret:") || value.starts_with("secret@")) {
            continue;
        }
        match crate::reference::parse_reference(value) {
            Some(Ok(r)) => out.push((name.to_owned(), vec![Part::Ref(r)])),
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
