//! `envrun check`: resolves every reference exactly as a run would ([`crate::prepare`],
//! [`resolve::resolve_each`]) and reports each variable and every finding, without ever
//! printing a value: a preview is at most the length and 2 leading characters.
//!
//! Findings and their severity (errors make the exit status 1; `--strict` counts warnings
//! too): missing, error, placeholder, weak, plaintext, duplicate and rotation-due are errors;
//! too-short, shadowed, unused-backend, unused-rotation and no-age are warnings. The rules
//! for placeholder, weak and plaintext are in [`crate::check`].

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::{Duration, SystemTime};

use serde::Serialize;

use super::write_stdout;
use crate::check;
use crate::cli::{CheckArgs, RunOptions};
use crate::config::RunConfig;
use crate::error::Error;
use crate::manifest::Manifest;
use crate::reference::Part;
use crate::resolve::{Age, DEFAULT_BACKEND, VarOutcome};
use crate::secret::Secret;
use crate::ui;

/// Exit status when a finding is an error.
pub const EXIT_FINDINGS: i32 = 1;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Warning,
    Error,
}

/// One finding: what, how bad, about which variable, and what to do.
#[derive(Clone, Debug, Serialize)]
pub struct Finding {
    pub kind: &'static str,
    pub severity: Severity,
    pub variable: Option<String>,
    pub message: String,
    pub hint: Option<String>,
}

/// One variable of the report.
#[derive(Debug, Serialize)]
struct VarReport {
    name: String,
    /// Where the value comes from ([`VarOutcome::describe`]).
    source: String,
    status: &'static str,
    /// Whether the value is secret (from `secret:` or `file:`).
    secret: bool,
    /// Characters in the value (secrets only; `null` with --quiet-values).
    length: Option<usize>,
    /// At most 2 leading characters (secrets of 16+ characters; 1 from 8; none below).
    preview: Option<String>,
    /// When the value was last changed, if known (RFC 3339).
    updated: Option<String>,
    /// The kinds of this variable's findings.
    findings: Vec<&'static str>,
}

/// The whole report, as `--json` prints it.
#[derive(Debug, Serialize)]
struct Report {
    manifest: Option<String>,
    tenant: Option<String>,
    ok: bool,
    errors: usize,
    warnings: usize,
    variables: Vec<VarReport>,
    findings: Vec<Finding>,
}

pub fn run(args: CheckArgs) -> Result<i32, Error> {
    let template = match &args.template {
        Some(path) => Some(read_template(path)?),
        None => None,
    };
    // The configuration of a run of nothing: the same manifest, environment, tenant and
    // deadline rules as `envrun -- COMMAND`.
    let prepared = RunConfig::build(
        RunOptions {
            manifest: args.manifest.clone(),
            clean_env: false,
            no_inherit_refs: args.no_inherit_refs,
            tenant: args.tenant.clone(),
            no_mask: false,
            mask_with: String::from("***"),
            min_mask_len: args.min_mask_len,
            timeout: args.timeout,
            dry_run: false,
            audit_log: None,
            no_pty: true,
            watch: None,
            reload_on_hup: false,
            on_change: None,
            stop_signal: None,
            stop_timeout: None,
        },
        Vec::new(),
    )?;
    let outcome = crate::resolve_reporting_warnings(&prepared, true);
    // Everything printed below also passes through a masker of every value found: a last
    // line of defence, as for a run's own messages.
    let masks: Vec<(String, Secret)> = outcome
        .vars
        .iter()
        .flat_map(|v| v.masks.iter().map(|m| (v.name.clone(), m.clone())))
        .collect();
    let opts = crate::scrub::ScrubOptions {
        mask_with: String::from("***"),
        min_len: args.min_mask_len.max(1),
    };
    let scrubber = crate::launch::scrubber(&masks, &opts, false)?;

    let now = SystemTime::now();
    let mut findings = Vec::new();
    let mut variables = Vec::new();
    for var in &outcome.vars {
        let before = findings.len();
        let report = check_var(
            var,
            &prepared.manifest,
            template.as_ref(),
            &args,
            now,
            &mut findings,
        );
        let mine = &findings[before..];
        variables.push(VarReport {
            status: status(mine, args.strict),
            findings: mine.iter().map(|f| f.kind).collect(),
            ..report
        });
    }
    manifest_findings(&prepared, &outcome.vars, &mut findings);
    // Findings of the manifest as a whole that name a variable also mark it.
    for v in &mut variables {
        for f in findings
            .iter()
            .filter(|f| f.variable.as_deref() == Some(&v.name))
        {
            if !v.findings.contains(&f.kind) {
                v.findings.push(f.kind);
            }
        }
        let mine: Vec<Finding> = findings
            .iter()
            .filter(|f| f.variable.as_deref() == Some(&v.name))
            .cloned()
            .collect();
        v.status = status(&mine, args.strict);
    }
    let counts = |s: Severity| findings.iter().filter(|f| f.severity == s).count();
    let (errors, warnings) = (counts(Severity::Error), counts(Severity::Warning));
    let failed = errors > 0 || (args.strict && warnings > 0);
    let report = Report {
        manifest: prepared
            .manifest
            .path
            .as_ref()
            .map(|p| p.display().to_string()),
        tenant: prepared.ctx.tenant.clone(),
        ok: !failed,
        errors,
        warnings,
        variables,
        findings,
    };
    let text = if args.json {
        let mut s = serde_json::to_string_pretty(&report)
            .map_err(|e| Error::io("encode JSON", e.into()))?;
        s.push('\n');
        s
    } else {
        render(&report)
    };
    let bytes = match &scrubber {
        Some(s) => s.scrub_all(text.as_bytes()),
        None => text.into_bytes(),
    };
    write_stdout(&bytes)?;
    Ok(if failed { EXIT_FINDINGS } else { 0 })
}

fn status(findings: &[Finding], strict: bool) -> &'static str {
    match findings.iter().map(|f| f.severity).max() {
        None => "ok",
        Some(Severity::Error) => "error",
        Some(Severity::Warning) if strict => "error",
        Some(Severity::Warning) => "warning",
    }
}

/// The example values of a `.env.example`-style file, by name.
fn read_template(path: &Path) -> Result<BTreeMap<String, String>, Error> {
    let iter = dotenvy::from_path_iter(path).map_err(|e| {
        Error::invalid(
            format!(
                "cannot read the template {}: {}",
                path.display(),
                one_line(&e.to_string())
            ),
            "check the path given to --template",
        )
    })?;
    let mut out = BTreeMap::new();
    for item in iter {
        // The template is an example file: its values are not secrets, but an error is
        // still reported without quoting a line.
        let (k, v) = item.map_err(|_| {
            Error::invalid(
                format!("the template {} is not a valid .env file", path.display()),
                "a template holds NAME=value lines, as a .env file does",
            )
        })?;
        out.insert(k, v);
    }
    Ok(out)
}

fn one_line(s: &str) -> String {
    s.lines().next().unwrap_or_default().to_owned()
}

/// The findings of one variable, and its report (status and findings are filled in later).
fn check_var(
    var: &VarOutcome,
    manifest: &Manifest,
    template: Option<&BTreeMap<String, String>>,
    args: &CheckArgs,
    now: SystemTime,
    findings: &mut Vec<Finding>,
) -> VarReport {
    let name = &var.name;
    let mut add = |kind, severity, message: String, hint: Option<String>| {
        findings.push(Finding {
            kind,
            severity,
            variable: (name != "-").then(|| name.clone()),
            message,
            hint,
        });
    };
    let source = match manifest.as_file.contains(name) {
        // The command gets a path to an in-memory file holding the value.
        true => format!("as_file: {}", var.describe()),
        false => var.describe(),
    };
    let mut report = VarReport {
        name: name.clone(),
        source,
        status: "ok",
        secret: false,
        length: None,
        preview: None,
        updated: None,
        findings: Vec::new(),
    };
    let value = match &var.result {
        Ok(v) => v,
        Err(failures) => {
            for f in failures {
                let missing = f.reason.starts_with("not found") || f.reason.starts_with("not set");
                let kind = if missing { "missing" } else { "error" };
                // The resolver's own hint says what to do for this backend and failure.
                let hint = f.hint.clone().or_else(|| {
                    missing.then(|| {
                        String::from(
                            "create it in its backend (local store: `envrun secrets set KEY`), or fix the reference",
                        )
                    })
                });
                add(
                    kind,
                    Severity::Error,
                    format!("{}: {}", f.reference, f.reason),
                    hint,
                );
            }
            return report;
        }
    };
    report.secret = value.sensitive;
    let bytes = value.bytes.expose();
    if value.sensitive && !args.quiet_values {
        let text = String::from_utf8_lossy(bytes);
        let n = text.chars().count();
        report.length = Some(n);
        let k = match n {
            0..=7 => 0,
            8..=15 => 1,
            _ => 2,
        };
        if k > 0 {
            report.preview = Some(ui::sanitize(&text.chars().take(k).collect::<String>()));
        }
    }
    let secretish = value.sensitive || check::secret_name(name);
    if secretish {
        if let Some(why) = check::placeholder(bytes) {
            add(
                "placeholder",
                Severity::Error,
                format!("the value looks like a placeholder ({why})"),
                Some(String::from("set the real value in its backend")),
            );
        } else if let Some(t) = template {
            let text = String::from_utf8_lossy(bytes);
            let same_name = t.get(name).is_some_and(|v| !v.is_empty() && *v == text);
            let any = t.values().any(|v| v.chars().count() >= 6 && *v == text);
            if same_name || any {
                add(
                    "placeholder",
                    Severity::Error,
                    String::from("the value is still the example value of the template"),
                    Some(String::from("set the real value in its backend")),
                );
            }
        }
    }
    if check::secret_name(name)
        && check::placeholder(bytes).is_none()
        && let Some(why) = check::weak(bytes)
    {
        add(
            "weak",
            Severity::Error,
            format!("the value is weak for a password or key: {why}"),
            Some(format!(
                "replace it with a random one, e.g. `envrun secrets generate {name} --force` for the local store"
            )),
        );
    }
    if value.sensitive {
        let short = var.masks.iter().any(|m| m.len() < args.min_mask_len.max(1));
        if short {
            add(
                "too-short",
                Severity::Warning,
                format!(
                    "a secret value is shorter than {} bytes, so a run cannot mask it in the command's output",
                    args.min_mask_len
                ),
                Some(String::from(
                    "use a longer value, or lower --min-mask-len if masking such short text is acceptable",
                )),
            );
        }
    }
    // Rotation: the oldest known change time of the variable's references.
    let known: Vec<SystemTime> = var
        .sources
        .iter()
        .filter_map(|s| match s.age {
            Age::At(t) => Some(t),
            _ => None,
        })
        .collect();
    let oldest = known.iter().min().copied();
    if let Some(t) = oldest {
        report.updated = Some(humantime::format_rfc3339_seconds(t).to_string());
    }
    if let Some(policy) = manifest.rotation_for(name) {
        match oldest {
            Some(t) => {
                let age = now.duration_since(t).unwrap_or_default();
                if age > policy.max_age {
                    add(
                        "rotation-due",
                        Severity::Error,
                        format!(
                            "last changed {} ({} ago), older than its rotation policy `{}: {}`",
                            humantime::format_rfc3339_seconds(t),
                            days(age),
                            policy.pattern,
                            policy.written
                        ),
                        Some(String::from(
                            "rotate the secret in its backend (local store: `envrun secrets set` or `generate --force`)",
                        )),
                    );
                }
            }
            None => {
                let recorded_elsewhere =
                    "set it again to start its clock (local store: `envrun secrets set`)";
                let not_kept = "keep it in a backend that records change times (local, Vault KV v2, AWS, GCP, Azure), or drop the policy for it";
                let (why, hint) = var
                    .sources
                    .iter()
                    .find_map(|s| match s.age {
                        Age::NotRecorded => Some((
                            format!(
                                "{} has no recorded change time (written before envrun recorded them, or the backend did not say)",
                                s.reference
                            ),
                            recorded_elsewhere,
                        )),
                        Age::NotKept => Some((
                            match (&s.backend, s.backend_kind) {
                                (Some(b), Some(kind)) => format!(
                                    "backend `{b}` ({kind}) does not record when a value changes"
                                ),
                                _ => format!("`{}` values have no age", s.kind),
                            },
                            not_kept,
                        )),
                        _ => None,
                    })
                    .unwrap_or((String::from("the value has no known age"), not_kept));
                add(
                    "no-age",
                    Severity::Warning,
                    format!(
                        "rotation policy `{}: {}` cannot be checked: {why}",
                        policy.pattern, policy.written
                    ),
                    Some(String::from(hint)),
                );
            }
        }
    }
    report
}

/// Findings about the manifest as a whole: repeated variables, credentials written in it,
/// unused backends and rotation policies, inherited references it overrides.
fn manifest_findings(prepared: &RunConfig, vars: &[VarOutcome], findings: &mut Vec<Finding>) {
    let manifest = &prepared.manifest;
    for d in &manifest.duplicates {
        findings.push(Finding {
            kind: "duplicate",
            severity: Severity::Error,
            variable: Some(d.name.clone()),
            message: format!(
                "defined {} times in environment: (lines {}); a run refuses the manifest",
                d.lines.len(),
                d.lines
                    .iter()
                    .map(u64::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            hint: Some(String::from("keep one definition")),
        });
    }
    for name in &prepared.shadowed {
        findings.push(Finding {
            kind: "shadowed",
            severity: Severity::Warning,
            variable: Some(name.clone()),
            message: String::from(
                "also set to a secret: reference in envrun's environment; the manifest's definition wins",
            ),
            hint: Some(String::from(
                "unset the variable in the environment, or remove it from the manifest",
            )),
        });
    }
    for (name, parts) in &manifest.environment {
        for part in parts {
            if let Part::Literal(text) = part
                && let Some(what) = check::credential(text)
            {
                findings.push(Finding {
                    kind: "plaintext",
                    severity: Severity::Error,
                    variable: Some(name.clone()),
                    message: format!("the manifest holds {what} in plain text"),
                    hint: Some(format!(
                        "store it with `envrun secrets set {name}` (or in another backend) and write `{name}: secret:{name}`, or `${{secret:{name}}}` inside a longer value"
                    )),
                });
                break;
            }
        }
    }
    let used: BTreeSet<&str> = vars
        .iter()
        .flat_map(|v| v.sources.iter())
        .filter_map(|s| s.backend.as_deref())
        .collect();
    for name in manifest.backends.keys() {
        if !used.contains(name.as_str()) {
            findings.push(Finding {
                kind: "unused-backend",
                severity: Severity::Warning,
                variable: None,
                message: format!("backend `{name}` is defined and never used"),
                hint: Some(format!(
                    "remove it from backends:, or refer to it as secret@{name}:KEY"
                )),
            });
        }
    }
    if manifest.default_written
        && !manifest.backends.contains_key(DEFAULT_BACKEND)
        && !used.contains(DEFAULT_BACKEND)
    {
        findings.push(Finding {
            kind: "unused-backend",
            severity: Severity::Warning,
            variable: None,
            message: String::from(
                "the default backend (secrets:) is defined and no secret:KEY reference uses it",
            ),
            hint: Some(String::from(
                "remove secrets:, or refer to it as secret:KEY",
            )),
        });
    }
    for r in &manifest.rotation {
        if !vars.iter().any(|v| {
            manifest
                .rotation_for(&v.name)
                .is_some_and(|p| p.pattern == r.pattern)
        }) {
            findings.push(Finding {
                kind: "unused-rotation",
                severity: Severity::Warning,
                variable: None,
                message: format!("rotation policy `{}` applies to no variable", r.pattern),
                hint: Some(String::from(
                    "check the name or pattern (`*` matches any text, and a variable's exact name wins over patterns)",
                )),
            });
        }
    }
}

/// `12d` / `5h`: an age, to the day when it is a day or more.
fn days(d: Duration) -> String {
    let secs = d.as_secs();
    if secs >= 86_400 {
        format!("{}d", secs / 86_400)
    } else if secs >= 3600 {
        format!("{}h", secs / 3600)
    } else {
        format!("{}m", secs / 60)
    }
}

/// The text report: a table of variables, then the findings with their hints, then a
/// summary line.
fn render(report: &Report) -> String {
    let mut out = String::new();
    let rows: Vec<[String; 4]> = report
        .variables
        .iter()
        .map(|v| {
            let status = if v.findings.is_empty() {
                String::from("ok")
            } else {
                v.findings.join(",")
            };
            let value = match (v.secret, v.length, &v.preview) {
                (false, _, _) => String::new(),
                (true, None, _) => String::from("secret"),
                (true, Some(n), Some(p)) => format!("secret, {n} chars, {p}..."),
                (true, Some(n), None) => format!("secret, {n} chars"),
            };
            [
                ui::sanitize(&v.name),
                ui::sanitize(&v.source),
                status,
                value,
            ]
        })
        .collect();
    let header = [
        String::from("VARIABLE"),
        String::from("SOURCE"),
        String::from("STATUS"),
        String::from("VALUE"),
    ];
    let mut widths = [0usize; 3];
    for row in rows.iter().chain(std::iter::once(&header)) {
        for (w, cell) in widths.iter_mut().zip(row.iter()) {
            *w = (*w).max(cell.chars().count());
        }
    }
    for row in std::iter::once(&header).chain(rows.iter()) {
        let line = format!(
            "{:w0$}  {:w1$}  {:w2$}  {}",
            row[0],
            row[1],
            row[2],
            row[3],
            w0 = widths[0],
            w1 = widths[1],
            w2 = widths[2]
        );
        out.push_str(line.trim_end());
        out.push('\n');
    }
    if !report.findings.is_empty() {
        out.push('\n');
        for f in &report.findings {
            let level = match f.severity {
                Severity::Error => "error",
                Severity::Warning => "warning",
            };
            let about = f
                .variable
                .as_ref()
                .map(|v| format!("{}: ", ui::sanitize(v)))
                .unwrap_or_default();
            out.push_str(&format!(
                "{level}: {about}{}: {}\n",
                f.kind,
                ui::sanitize(&f.message)
            ));
            if let Some(h) = &f.hint {
                out.push_str(&format!("  hint: {}\n", ui::sanitize(h)));
            }
        }
    }
    out.push_str(&format!(
        "\n{} variable{}: {} error{}, {} warning{}\n",
        report.variables.len(),
        plural(report.variables.len()),
        report.errors,
        plural(report.errors),
        report.warnings,
        plural(report.warnings),
    ));
    out
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}
