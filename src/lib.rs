//! envrun: run a command with secrets in its environment and nowhere else.
//!
//! [`run`] is the whole program: parse the command line ([`cli`]), read the manifest
//! ([`manifest`]), resolve every reference ([`resolve`], [`backend`]), then start the
//! command ([`launch`]). `main.rs` only turns the result into an exit status.

pub mod audit;
pub mod backend;
pub mod check;
pub mod cli;
pub mod commands;
pub mod error;
pub mod launch;
pub mod manifest;
pub mod reference;
pub mod resolve;
pub mod scrub;
pub mod secret;
pub mod store;
pub mod timeout;
pub mod ui;

use std::ffi::OsString;

use clap::Parser;
use clap::error::ErrorKind;

use crate::backend::Context;
use crate::cli::{Cli, Command, RunArgs};
use crate::error::{EXIT_ENVRUN, Error};
use crate::manifest::Manifest;
use crate::secret::Secret;

/// Variables envrun reads for itself and never passes on: `ENVRUN_KEY` is key material.
const NOT_INHERITED: &[&str] = &["ENVRUN_KEY"];

/// Runs envrun with the process arguments and returns the exit status.
pub fn run() -> i32 {
    harden();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return usage_error(e),
    };
    let result = match cli.command {
        Some(Command::Secrets(args)) => commands::secrets::run(args),
        Some(Command::Check(args)) => commands::check::run(args),
        Some(Command::Completions { shell }) => commands::completions(shell),
        Some(Command::Man) => commands::man(),
        None => run_command(cli.run),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            ui::error(&e);
            e.exit_code()
        }
    }
}

/// Help and version go to stdout with status 0; real usage errors exit 125, not clap's 2,
/// so a caller can tell envrun's failure from the command's.
fn usage_error(e: clap::Error) -> i32 {
    match e.kind() {
        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => {
            let _ = e.print();
            0
        }
        // `envrun secrets` alone: the help is the most useful answer, but it is still an error.
        ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            let _ = e.print();
            EXIT_ENVRUN
        }
        _ => {
            let text = e.render().to_string();
            let text = text.strip_prefix("error: ").unwrap_or(&text);
            let (mut message, mut tips) = (Vec::new(), Vec::new());
            for line in text
                .lines()
                .take_while(|l| !l.starts_with("Usage:") && !l.starts_with("For more information"))
                .filter(|l| !l.trim().is_empty())
            {
                match line.trim_start().strip_prefix("tip: ") {
                    Some(tip) => tips.push(tip.to_owned()),
                    None => message.push(line),
                }
            }
            ui::error(&Error::Cli {
                message: message.join("\n"),
                tips,
            });
            EXIT_ENVRUN
        }
    }
}

/// Marks the process non-dumpable: no core file and no ptrace by other processes of the same
/// user while envrun holds secrets. exec resets this for the command.
fn harden() {
    // A panic message could hold anything the code had at hand, a value included: say where
    // it happened, never what it said.
    std::panic::set_hook(Box::new(|info| {
        let at = info
            .location()
            .map(|l| format!(" at {}:{}", l.file(), l.line()))
            .unwrap_or_default();
        ui::error(&Error::Internal(format!(
            "internal error{at} (a bug in envrun; its message is not shown, as it could hold a secret)"
        )));
    }));
    if let Err(e) = nix::sys::prctl::set_dumpable(false) {
        ui::warn(&format!("could not mark the process non-dumpable: {e}"));
    }
}

/// What a run (or `--dry-run`, or `envrun check`) resolves: the manifest, every request
/// (the manifest's variables and references inherited from envrun's environment) and where
/// backends are built. One function, so that `check` sees exactly what a run would.
pub struct Prepared {
    pub manifest: Manifest,
    pub requests: Vec<resolve::Request>,
    pub ctx: Context,
    /// envrun's environment, less what it never passes on.
    pub inherited: Vec<(OsString, OsString)>,
    /// Inherited `NAME=secret:...` references that the manifest overrides with its own `NAME`.
    pub shadowed: Vec<String>,
}

/// Reads the environment and the tenant for `manifest`; see [`Prepared`].
/// `timeout` is `--timeout`; the manifest's `timeout:` and then the default apply without it.
pub fn prepare(
    manifest: Manifest,
    tenant: Option<&str>,
    timeout: Option<std::time::Duration>,
    inherit_refs: bool,
) -> Result<Prepared, Error> {
    let inherited: Vec<(OsString, OsString)> = std::env::vars_os()
        .filter(|(k, _)| !NOT_INHERITED.iter().any(|n| k == n))
        .collect();

    let mut requests = Vec::new();
    let mut shadowed = Vec::new();
    if inherit_refs {
        let sets = |name: &str| manifest.environment.iter().any(|(n, _)| n == name);
        for (name, parts) in resolve::inherited_requests(&inherited)? {
            if sets(&name) {
                shadowed.push(name);
            } else {
                requests.push((name, parts));
            }
        }
    }
    requests.extend(manifest.environment.iter().cloned());

    let tenant = backend::tenant::choose(tenant, manifest.tenant.as_deref());
    if let Some(t) = &tenant {
        backend::tenant::check(t).map_err(Error::Usage)?;
    }
    let timeout = timeout.or(manifest.timeout).unwrap_or(timeout::DEFAULT);
    let ctx = Context {
        base_dir: manifest.base_dir.clone(),
        tenant,
        deadline: std::time::Instant::now() + timeout,
    };
    Ok(Prepared {
        manifest,
        requests,
        ctx,
        inherited,
        shadowed,
    })
}

/// The audit targets of a run: the manifest's `audit:` and `--audit-log`/`$ENVRUN_AUDIT_LOG`.
fn audit_targets(manifest: &Manifest, cli: Option<&std::path::Path>) -> Vec<audit::Target> {
    let mut targets = Vec::new();
    if let Some(a) = &manifest.audit {
        targets.push(audit::Target {
            path: a.path.clone(),
            required: a.required,
        });
    }
    if let Some(path) = cli.filter(|p| !p.as_os_str().is_empty()) {
        let path = if path == std::path::Path::new(audit::SYSLOG) {
            path.to_owned()
        } else {
            std::path::absolute(path).unwrap_or_else(|_| path.to_owned())
        };
        if !targets.iter().any(|t| t.path == path) {
            // The command line has no `required: false`: what a user asks for, they get.
            targets.push(audit::Target {
                path,
                required: true,
            });
        }
    }
    targets
}

/// The main job: manifest, resolve, launch.
fn run_command(args: RunArgs) -> Result<i32, Error> {
    let manifest = Manifest::discover(args.manifest.as_deref())?.for_run()?;
    let targets = if args.dry_run {
        Vec::new()
    } else {
        audit_targets(&manifest, args.audit_log.as_deref())
    };
    let record_argv = manifest.audit.as_ref().is_some_and(|a| a.argv);
    // Opened before anything is resolved: a log that cannot be written stops the run here.
    let mut audit = audit::Audit::open(&targets, record_argv)?;
    if let Some(a) = audit.as_mut() {
        a.command = args
            .command
            .iter()
            .map(|c| c.to_string_lossy().into_owned())
            .collect();
        a.manifest = manifest.path.clone();
    }
    let inherit_refs = !args.no_inherit_refs && !args.clean_env;
    let prepared = match prepare(manifest, args.tenant.as_deref(), args.timeout, inherit_refs) {
        Ok(p) => p,
        Err(e) => return Err(not_started(audit.as_ref(), e)),
    };
    if let Some(a) = audit.as_mut() {
        a.tenant = prepared.ctx.tenant.clone();
    }
    let outcome =
        resolve::resolve_each(&prepared.manifest, &prepared.requests, &prepared.ctx, false);
    if let Some(a) = audit.as_mut() {
        a.variables = outcome
            .vars
            .iter()
            .filter(|v| v.name != "-")
            .map(|v| audit::Variable::new(&v.name, &v.sources))
            .collect();
    }
    let sources: Vec<(String, String)> = if args.dry_run {
        outcome
            .vars
            .iter()
            .map(|v| (v.name.clone(), v.describe()))
            .collect()
    } else {
        Vec::new()
    };
    let resolved = match resolve::into_resolved(outcome) {
        Ok(r) => r,
        Err(e) => return Err(not_started(audit.as_ref(), e)),
    };

    let mut env: Vec<(OsString, Secret)> =
        Vec::with_capacity(prepared.inherited.len() + resolved.vars.len());
    for (name, value) in prepared.inherited {
        // A variable a backend read a secret from stays behind; the manifest's own variables
        // are added below and win, so `APP_TOKEN: secret:TOKEN` still passes it on.
        let consumed = name.to_str().is_some_and(|n| resolved.consumed.contains(n));
        let keep = (!args.clean_env || (name == "PATH")) && !consumed;
        if keep {
            env.push((name, Secret::from_vec(value.into_encoded_bytes())));
        }
    }
    let removed: Vec<String> = resolved.consumed.iter().cloned().collect();
    for (name, value) in resolved.vars {
        env.push((OsString::from(name), value.bytes));
    }
    let opts = scrub::ScrubOptions {
        mask_with: args.mask_with,
        min_len: args.min_mask_len,
    };
    let scrubber = match launch::scrubber(&resolved.masks, &opts, !args.no_mask) {
        Ok(s) => s,
        Err(e) => return Err(not_started(audit.as_ref(), e)),
    };
    drop(resolved.masks);
    let mut plan = launch::Plan {
        argv: args.command,
        env,
        scrubber,
        mask: !args.no_mask,
        on_exit: None,
    };
    if args.dry_run {
        return commands::dry_run::print(&plan, &sources, &removed, &prepared.manifest);
    }
    if let Some(a) = audit {
        if plan.supervised() {
            plan.on_exit = Some(Box::new(move |status| {
                let outcome = match status {
                    launch::Status::Exited(code) => audit::Outcome::Exited { code },
                    launch::Status::Signaled(signal) => audit::Outcome::Signaled {
                        signal,
                        name: audit::signal_name(signal),
                    },
                };
                // The command has run: its status stands, and the failure is reported.
                if let Err(e) = a.record(&outcome) {
                    ui::error(&e);
                }
            }));
        } else {
            // exec: envrun is about to be replaced, so the record is written now, and a
            // failure still stops the command.
            a.record(&audit::Outcome::Exec)?;
        }
    }
    launch::launch(plan)
}

/// Records that the command was not started because of `err` (when auditing), and returns
/// the error to report. A failing record is reported too, after it.
fn not_started(audit: Option<&audit::Audit>, err: Error) -> Error {
    if let Some(a) = audit {
        let error = err.to_string();
        if let Err(e) = a.record(&audit::Outcome::NotStarted { error }) {
            ui::error(&err);
            return e;
        }
    }
    err
}
