//! envrun: run a command with secrets in its environment and nowhere else.
//!
//! [`run`] is the whole program: parse the command line ([`cli`]), read the manifest
//! ([`manifest`]), resolve every reference ([`resolve`], [`backend`]), then start the
//! command ([`launch`]). `main.rs` only turns the result into an exit status.
//!
//! `unsafe` is forbidden in every module but `launch::sys`, which holds the raw syscalls.

#[forbid(unsafe_code)]
pub mod backend;
#[forbid(unsafe_code)]
pub mod cli;
#[forbid(unsafe_code)]
pub mod commands;
#[forbid(unsafe_code)]
pub mod config;
#[forbid(unsafe_code)]
pub mod error;
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

use clap::Parser;
use clap::error::ErrorKind;

use std::ffi::OsString;

use crate::cli::{Cli, Command, RunOptions};
use crate::config::RunConfig;
use crate::error::{EXIT_ENVRUN, Error};

/// Runs envrun with the process arguments and returns the exit status.
pub fn run() -> i32 {
    harden();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return usage_error(e),
    };
    let result = match cli.command {
        Some(Command::Secrets(args)) => commands::secrets::run(args),
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

/// The main job: configuration, resolution, masking, launch of `command`, with `extra`
/// variables added last (they win).
fn run_command(
    args: RunOptions,
    command: Vec<OsString>,
    extra: &[(&str, &str)],
) -> Result<i32, Error> {
    let config = RunConfig::build(args, command)?;
    let resolved = resolve_reporting_warnings(&config)?;
    let scrubber = launch::scrubber(&resolved.masks, &config.scrub, config.mask)?;
    drop(resolved.masks);
    let mut env = RunConfig::child_env(config.inherited, &resolved.consumed, resolved.vars);
    env.extend(
        extra
            .iter()
            .map(|(k, v)| (OsString::from(k), secret::Secret::from_slice(v.as_bytes()))),
    );
    launch::launch(launch::Plan {
        argv: config.argv,
        env,
        scrubber,
        mask: config.mask,
        pty: config.pty,
    })
}

/// `envrun export`: the same configuration and resolution, printed instead of run.
fn export(args: cli::ExportArgs) -> Result<i32, Error> {
    let config = RunConfig::build(args.options.clone(), Vec::new())?;
    let resolved = resolve_reporting_warnings(&config)?;
    commands::export::run(&resolved, &args)
}
/// Resolves every request; what backends warn about is printed whether or not it succeeds.
fn resolve_reporting_warnings(config: &RunConfig) -> Result<resolve::Resolved, Error> {
    let mut warnings = Vec::new();
    let resolved = resolve::resolve(
        &config.manifest,
        &config.requests,
        &config.ctx,
        &mut warnings,
    );
    for warning in &warnings {
        ui::warn(warning);
    }
    resolved
}
