//! envrun: run a command with secrets in its environment and nowhere else.
//!
//! [`run`] is the whole program: parse the command line ([`cli`]), read the manifest
//! ([`manifest`]), resolve every reference ([`resolve`], [`backend`]), then start the
//! command ([`launch`]). `main.rs` only turns the result into an exit status.

pub mod backend;
pub mod cli;
pub mod commands;
pub mod config;
pub mod error;
pub mod fileio;
pub mod launch;
pub mod manifest;
pub mod reference;
pub mod resolve;
pub mod scrub;
pub mod secret;
pub mod store;
pub mod timeout;
pub mod ui;

use clap::Parser;
use clap::error::ErrorKind;

use crate::cli::{Cli, Command, RunArgs};
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

/// The main job: configuration, resolution, masking, launch.
fn run_command(args: RunArgs) -> Result<i32, Error> {
    let config = RunConfig::build(args)?;
    let resolved = resolve_reporting_warnings(&config)?;
    let scrubber = launch::scrubber(&resolved.masks, &config.scrub, config.mask)?;
    drop(resolved.masks);
    let env = RunConfig::child_env(config.inherited, &resolved.consumed, resolved.vars);
    launch::launch(launch::Plan {
        argv: config.argv,
        env,
        scrubber,
        mask: config.mask,
    })
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
