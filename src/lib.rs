//! envrun: run a command with secrets in its environment and nowhere else.
//!
//! [`run`] is the whole program: parse the command line ([`cli`]), read the manifest
//! ([`manifest`]), resolve every reference ([`resolve`], [`backend`]), then start the
//! command ([`launch`]). `main.rs` only turns the result into an exit status.
//!
//! `unsafe` is forbidden in every module but two: `launch::sys`, which holds the raw
//! syscalls, and `wipe_alloc`, the global allocator.

#[forbid(unsafe_code)]
pub mod audit;
#[forbid(unsafe_code)]
pub mod backend;
#[forbid(unsafe_code)]
pub mod check;
#[forbid(unsafe_code)]
pub mod cli;
#[forbid(unsafe_code)]
pub mod commands;
#[forbid(unsafe_code)]
pub mod config;
#[forbid(unsafe_code)]
pub mod error;
#[forbid(unsafe_code)]
pub mod fileio;
pub mod launch;
#[forbid(unsafe_code)]
pub mod manifest;
#[forbid(unsafe_code)]
pub mod reference;
#[forbid(unsafe_code)]
pub mod resolve;
#[forbid(unsafe_code)]
pub mod scrub;
#[forbid(unsafe_code)]
pub mod secret;
#[forbid(unsafe_code)]
pub mod store;
#[forbid(unsafe_code)]
pub mod timeout;
#[forbid(unsafe_code)]
pub mod ui;
#[forbid(unsafe_code)]
pub mod watch;
pub mod wipe_alloc;

/// Every heap block is wiped before it is freed (see [`wipe_alloc`]).
#[global_allocator]
static ALLOCATOR: wipe_alloc::Wiping = wipe_alloc::Wiping;

use std::ffi::OsString;
use std::sync::Arc;

use clap::error::ErrorKind;

use crate::cli::{Command, RunOptions};
use crate::config::RunConfig;
use crate::error::{EXIT_ENVRUN, Error};

/// Runs envrun with the process arguments and returns the exit status.
pub fn run() -> i32 {
    harden();
    let cli = match cli::parse() {
        Ok(cli) => cli,
        Err(e) => return usage_error(e),
    };
    let result = match cli.command {
        Some(Command::Secrets(args)) => commands::secrets::run(args),
        Some(Command::Check(args)) => commands::check::run(args),
        Some(Command::Completions { shell }) => commands::completions(shell),
        Some(Command::Man) => commands::man(),
        Some(Command::Shell(args)) => {
            let shell = commands::shell_program(args.shell);
            run_command(args.options, vec![shell], &[("ENVRUN_ACTIVE", "1")])
        }
        Some(Command::Export(args)) => export(args),
        None => run_command(cli.run.options, cli.run.command, &[]),
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
            ui::error(&cli_error(&e));
            EXIT_ENVRUN
        }
    }
}

/// clap's message and tips as envrun's error, with three corrections: a value that came
/// from an `ENVRUN_*` variable names the variable, not the option; a command given without
/// `--` gets the line that would run it; clap's own usage lines are left out.
fn cli_error(e: &clap::Error) -> Error {
    use clap::error::{ContextKind, ContextValue};
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
            None => message.push(line.to_owned()),
        }
    }
    let context = |kind| match e.get(kind) {
        Some(ContextValue::String(s)) => Some(s.clone()),
        _ => None,
    };
    if matches!(
        e.kind(),
        ErrorKind::InvalidValue | ErrorKind::ValueValidation
    ) && let Some(arg) = context(ContextKind::InvalidArg)
        && let Some(var) = cli::env_source(&arg)
    {
        let value = context(ContextKind::InvalidValue).unwrap_or_default();
        let reason = message
            .first()
            .and_then(|m| m.split_once(&format!("'{arg}': ")))
            .map(|(_, r)| r.to_owned())
            .unwrap_or_else(|| String::from("not a valid value"));
        return Error::invalid(
            format!(
                "invalid value '{}' in ${var}: {reason}",
                ui::sanitize(&value)
            ),
            format!(
                "fix or unset {var} (it stands for {}; see `envrun --help`)",
                arg.split_whitespace().next().unwrap_or(&arg)
            ),
        );
    }
    if matches!(
        e.kind(),
        ErrorKind::UnknownArgument | ErrorKind::InvalidSubcommand
    ) && let Some(run) = command_without_dashes()
    {
        tips.insert(0, format!("to run a command, put `--` before it: `{run}`"));
    }
    Error::Cli {
        message: message.join("\n"),
        tips,
    }
}

/// `envrun [OPTIONS] -- COMMAND...` for a command line that has a command but no `--`
/// (`envrun echo hi` -> `envrun -- echo hi`), if the first word is not a subcommand.
fn command_without_dashes() -> Option<String> {
    let args: Vec<String> = std::env::args_os()
        .skip(1)
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    if args.iter().any(|a| a == "--") {
        return None;
    }
    let cmd = cli::command();
    // Options before the command, with their values (`-m FILE`, `--tenant=acme`).
    let mut i = 0;
    while i < args.len() && args[i].starts_with('-') {
        let takes_value = cmd.get_arguments().any(|a| {
            let named = args[i].strip_prefix("--").map_or_else(
                || a.get_short().is_some_and(|c| args[i] == format!("-{c}")),
                |l| a.get_long() == Some(l),
            );
            named && a.get_action().takes_values()
        });
        i += if takes_value { 2 } else { 1 };
    }
    let first = args.get(i)?;
    if cmd.get_subcommands().any(|s| s.get_name() == first) {
        return None;
    }
    let quote = |s: &String| {
        if s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=:@%+,".contains(c))
        {
            s.clone()
        } else {
            format!("'{}'", s.replace('\'', "'\\''"))
        }
    };
    let before: Vec<String> = args[..i].iter().map(quote).collect();
    let after: Vec<String> = args[i..].iter().map(quote).collect();
    let mut line = vec![String::from("envrun")];
    line.extend(before);
    line.push(String::from("--"));
    line.extend(after);
    Some(line.join(" "))
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
        ui::panic_report(&format!(
            "internal error{at} (a bug in envrun; its message is not shown, as it could hold a secret)"
        ));
    }));
    if let Err(e) = nix::sys::prctl::set_dumpable(false) {
        ui::warn(&format!("could not mark the process non-dumpable: {e}"));
    }
}

/// The main job: configuration, audit log, resolution, masking, launch of `command` with
/// `extra` variables added last (they win); or, with `--dry-run`, a report of what would run.
fn run_command(
    args: RunOptions,
    command: Vec<OsString>,
    extra: &[(&str, &str)],
) -> Result<i32, Error> {
    let dry_run = args.dry_run;
    let audit_log = args.audit_log.clone();
    let config = RunConfig::build(args, command)?;
    config.manifest.refuse_duplicates()?;
    // Opened before anything is resolved: a log that cannot be written stops the run here.
    let audit = match dry_run {
        true => None,
        false => open_audit(&config, audit_log.as_deref())?,
    };
    let outcome = resolve_reporting_warnings(&config, false);
    let described: Vec<(String, String)> = outcome
        .vars
        .iter()
        .map(|v| match config.files.contains(&v.name) {
            true => (v.name.clone(), format!("as_file: {}", v.describe())),
            false => (v.name.clone(), v.describe()),
        })
        .collect();
    let audit = audit.map(|mut a| {
        a.variables = outcome
            .vars
            .iter()
            .filter(|v| v.name != "-")
            .map(|v| audit::Variable::new(&v.name, &v.sources))
            .collect();
        a
    });
    let resolved = match resolve::into_resolved(outcome) {
        Ok(r) => r,
        Err(e) => return Err(not_started(audit.as_ref(), e)),
    };
    let removed: Vec<String> = resolved.consumed.iter().cloned().collect();
    let RunConfig {
        argv,
        manifest,
        ctx,
        requests,
        inherited,
        mask,
        pty,
        scrub,
        files,
        timeout,
        watch,
        ..
    } = config;
    // Only watch mode resolves again: a run without it keeps no copy of the environment
    // nor of the values it started with.
    let values = watch.map(|_| crate::watch::values_of(&resolved.vars));
    let for_reloads = match watch {
        Some(_) => inherited.clone(),
        None => Vec::new(),
    };
    let source = Arc::new(Source {
        manifest,
        requests,
        base_dir: ctx.base_dir,
        tenant: ctx.tenant,
        timeout,
        inherited: for_reloads,
        files,
        extra: extra
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    });
    // With `on_change: signal` envrun rewrites the files in place; otherwise they are sealed.
    let seal = !matches!(
        watch.map(|w| w.on_change),
        Some(crate::watch::OnChange::Signal(_))
    );
    // A value the kernel would refuse fails here, before any mask is built.
    let generation = match source.prepare_with(inherited, resolved, seal) {
        Ok(g) => g,
        Err(e) => return Err(not_started(audit.as_ref(), e)),
    };
    let scrubber = match launch::scrubber(&generation.masks, &scrub, mask) {
        Ok(s) => s,
        Err(e) => return Err(not_started(audit.as_ref(), e)),
    };
    let launch::Generation { env, files, masks } = generation;
    let watch = watch.zip(values).map(|(settings, values)| {
        let (resolving, preparing) = (Arc::clone(&source), Arc::clone(&source));
        launch::Watch {
            settings,
            resolve: Arc::new(move || resolving.resolve()),
            prepare: Box::new(move |resolved, seal| preparing.prepare(resolved, seal)),
            values,
            masks,
            scrub: scrub.clone(),
        }
    });
    let mut plan = launch::Plan {
        argv,
        env,
        files,
        scrubber,
        mask,
        pty,
        on_exit: None,
        watch,
    };
    if dry_run {
        return commands::dry_run::print(&plan, &described, &removed, &source.manifest);
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

/// Everything a resolution needs, kept for the reloads of watch mode: each resolves every
/// reference again exactly as the first one did ([`Source::resolve`]) and makes the result
/// ready to run the same way ([`Source::prepare`]).
struct Source {
    manifest: manifest::Manifest,
    requests: Vec<resolve::Request>,
    base_dir: std::path::PathBuf,
    tenant: Option<String>,
    /// Each resolution gets this long from its start.
    timeout: std::time::Duration,
    /// envrun's environment as the command inherits it (see [`RunConfig::inherited`]), for
    /// reloads; empty when nothing is watched.
    inherited: Vec<(OsString, secret::Secret)>,
    /// Variables the command gets as in-memory files (`as_file:`).
    files: std::collections::BTreeSet<String>,
    /// Added last (`ENVRUN_ACTIVE=1` for `envrun shell`).
    extra: Vec<(String, String)>,
}

impl Source {
    /// Resolves every reference again (a reload), with a fresh deadline. What backends warn
    /// about was said at startup and is not repeated on every reload.
    fn resolve(&self) -> Result<resolve::Resolved, Error> {
        let ctx = backend::Context {
            base_dir: self.base_dir.clone(),
            tenant: self.tenant.clone(),
            deadline: std::time::Instant::now() + self.timeout,
        };
        let mut warnings = Vec::new();
        resolve::into_resolved(resolve::resolve_each(
            &self.manifest,
            &self.requests,
            &ctx,
            false,
            &mut warnings,
        ))
    }

    /// The command's environment for `resolved`: `as_file:` values put in in-memory files
    /// (sealed when `seal`) and their variables set to the files' paths; checked against the
    /// kernel's limits.
    fn prepare(
        &self,
        resolved: resolve::Resolved,
        seal: bool,
    ) -> Result<launch::Generation, Error> {
        self.prepare_with(self.inherited.clone(), resolved, seal)
    }

    /// [`Source::prepare`] with envrun's environment given: the first launch moves it in,
    /// reloads clone the copy kept in `self`.
    fn prepare_with(
        &self,
        inherited: Vec<(OsString, secret::Secret)>,
        resolved: resolve::Resolved,
        seal: bool,
    ) -> Result<launch::Generation, Error> {
        let resolve::Resolved {
            vars,
            masks,
            consumed,
        } = resolved;
        let mut files = Vec::new();
        let mut set = Vec::with_capacity(vars.len());
        for (name, value) in vars {
            if self.files.contains(&name) {
                let file = launch::MemFile::new(&name, value.bytes.expose(), seal)?;
                let path = secret::Value {
                    bytes: secret::Secret::from_slice(file.path().as_bytes()),
                    sensitive: false,
                };
                files.push(file);
                set.push((name, path));
            } else {
                set.push((name, value));
            }
        }
        let mut env = RunConfig::child_env(inherited, &consumed, set);
        env.extend(
            self.extra
                .iter()
                .map(|(k, v)| (OsString::from(k), secret::Secret::from_slice(v.as_bytes()))),
        );
        launch::EnvBlock::check(&env)?;
        Ok(launch::Generation { env, files, masks })
    }
}

/// Opens the audit log of a run, if the manifest or the command line asks for one.
fn open_audit(
    config: &RunConfig,
    cli: Option<&std::path::Path>,
) -> Result<Option<audit::Audit>, Error> {
    let manifest = &config.manifest;
    let targets = audit::targets(manifest.audit.as_ref(), cli);
    let argv = manifest.audit.as_ref().is_some_and(|a| a.argv);
    let Some(mut audit) = audit::Audit::open(&targets, argv)? else {
        return Ok(None);
    };
    audit.command = config
        .argv
        .iter()
        .map(|c| c.to_string_lossy().into_owned())
        .collect();
    audit.manifest = manifest.path.clone();
    audit.tenant = config.ctx.tenant.clone();
    Ok(Some(audit))
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

/// `envrun export`: the same configuration and resolution, printed instead of run.
fn export(args: cli::ExportArgs) -> Result<i32, Error> {
    let config = RunConfig::build(args.options.clone(), Vec::new())?;
    let mut resolved = resolve::into_resolved(resolve_reporting_warnings(&config, false))?;
    // An `as_file:` variable is a path to a file that exists only in a command envrun
    // starts: exporting its value instead would hand a PEM to what expects a path.
    resolved.vars.retain(|(name, _)| {
        let file = config.files.contains(name);
        if file {
            ui::warn(&format!(
                "`{name}` is left out: it is an as_file: variable, whose file exists only in a command envrun starts (use `envrun -- COMMAND` or `envrun shell`)"
            ));
        }
        !file
    });
    commands::export::run(&resolved, &args)
}

/// Resolves every request (see [`resolve::resolve_each`]); what backends warn about is
/// printed whether or not it succeeds. `envrun check` resolves through here too.
pub fn resolve_reporting_warnings(config: &RunConfig, fetch_all: bool) -> resolve::Outcome {
    let mut warnings = Vec::new();
    let outcome = resolve::resolve_each(
        &config.manifest,
        &config.requests,
        &config.ctx,
        fetch_all,
        &mut warnings,
    );
    for warning in &warnings {
        ui::warn(warning);
    }
    outcome
}
