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
pub mod error;
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
pub mod ui;

use std::ffi::OsString;

use clap::Parser;
use clap::error::ErrorKind;

use crate::backend::Context;
use crate::cli::{Cli, Command, RunOptions};
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
        Some(Command::Completions { shell }) => commands::completions(shell),
        Some(Command::Man) => commands::man(),
        Some(Command::Shell(args)) => {
            let shell = commands::shell_program(args.shell);
            run_command(args.options, vec![shell], &[("ENVRUN_ACTIVE", "1")])
        }
        Some(Command::Export(args)) => resolve_all(&args.options)
            .and_then(|(_, resolved)| commands::export::run(&resolved, &args)),
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
    if let Err(e) = nix::sys::prctl::set_dumpable(false) {
        ui::warn(&format!("could not mark the process non-dumpable: {e}"));
    }
}

/// The main job: manifest, resolve, launch `command`, with `extra` variables added last.
fn run_command(
    args: RunOptions,
    command: Vec<OsString>,
    extra: &[(&str, &str)],
) -> Result<i32, Error> {
    let (inherited, resolved) = resolve_all(&args)?;
    let mut env: Vec<(OsString, Secret)> =
        Vec::with_capacity(inherited.len() + resolved.vars.len() + extra.len());
    for (name, value) in inherited {
        // A variable a backend read a secret from stays behind; the manifest's own variables
        // are added below and win, so `APP_TOKEN: secret:TOKEN` still passes it on.
        let consumed = name.to_str().is_some_and(|n| resolved.consumed.contains(n));
        let keep = (!args.clean_env || (name == "PATH")) && !consumed;
        if keep {
            env.push((name, Secret::from_vec(value.into_encoded_bytes())));
        }
    }
    for (name, value) in resolved.vars {
        env.push((OsString::from(name), value.bytes));
    }
    for (name, value) in extra {
        env.push((
            OsString::from(name),
            Secret::from_vec(value.as_bytes().to_vec()),
        ));
    }
    let opts = scrub::ScrubOptions {
        mask_with: args.mask_with,
        min_len: args.min_mask_len,
    };
    let scrubber = launch::scrubber(&resolved.masks, &opts, !args.no_mask)?;
    drop(resolved.masks);
    let plan = launch::Plan {
        argv: command,
        env,
        scrubber,
        mask: !args.no_mask,
        pty: !args.no_pty,
    };
    launch::launch(plan)
}

/// Manifest and resolution: envrun's inherited environment (minus what envrun keeps to
/// itself) and every resolved variable.
fn resolve_all(args: &RunOptions) -> Result<(Vec<(OsString, OsString)>, resolve::Resolved), Error> {
    let manifest = Manifest::discover(args.manifest.as_deref())?;
    let inherited: Vec<(OsString, OsString)> = std::env::vars_os()
        .filter(|(k, _)| !NOT_INHERITED.iter().any(|n| k == n))
        .collect();

    let mut requests = Vec::new();
    if !args.no_inherit_refs && !args.clean_env {
        let sets = |name: &str| manifest.environment.iter().any(|(n, _)| n == name);
        requests.extend(
            resolve::inherited_requests(&inherited)?
                .into_iter()
                .filter(|(name, _)| !sets(name)),
        );
    }
    requests.extend(manifest.environment.iter().cloned());

    let tenant = backend::tenant::choose(args.tenant.as_deref(), manifest.tenant.as_deref());
    if let Some(t) = &tenant {
        backend::tenant::check(t).map_err(Error::Usage)?;
    }
    let ctx = Context {
        base_dir: manifest.base_dir.clone(),
        tenant,
    };
    let resolved = resolve::resolve(&manifest, &requests, &ctx)?;
    Ok((inherited, resolved))
}
