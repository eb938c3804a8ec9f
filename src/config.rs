//! The validated run configuration: everything `envrun [OPTIONS] -- COMMAND` needs, built
//! once from the command line, envrun's own environment and the manifest.
//!
//! [`RunConfig::build`] reads the manifest and checks every setting but contacts no backend
//! and reads no secret file; resolution ([`crate::resolve`]) and the launch
//! ([`crate::launch`]) then work only from this. Values of envrun's environment are held as
//! [`Secret`]s from the moment they are read (one may be a secret another backend consumes).

use std::collections::BTreeSet;
use std::ffi::OsString;

use crate::backend::{Context, tenant};
use crate::cli::RunOptions;
use crate::error::Error;
use crate::manifest::Manifest;
use crate::resolve::{self, Request};
use crate::scrub::ScrubOptions;
use crate::secret::{Secret, Value};
use crate::timeout;

/// Variables envrun reads for itself and never passes on: `ENVRUN_KEY` is key material.
const NOT_INHERITED: &[&str] = &[crate::store::KEY_VAR];

/// What a run does, checked.
#[derive(Debug)]
pub struct RunConfig {
    /// The command and its arguments.
    pub argv: Vec<OsString>,
    pub manifest: Manifest,
    /// Where backends are built: the manifest's directory and the tenant.
    pub ctx: Context,
    /// The variables to resolve, in order: references found in envrun's environment, then
    /// the manifest's `environment:` (which wins for a name both set).
    pub requests: Vec<Request>,
    /// envrun's environment as the command inherits it (before resolution removes what
    /// backends consumed): everything but [`NOT_INHERITED`], or only `PATH` with
    /// `--clean-env`.
    pub inherited: Vec<(OsString, Secret)>,
    /// Inherited `NAME=secret:...` references that the manifest overrides with its own
    /// `NAME` (reported by `envrun check`).
    pub shadowed: Vec<String>,
    /// Whether the command's output is masked (`--no-mask` turns it off).
    pub mask: bool,
    /// Whether the command may get a pseudo-terminal (`--no-pty` turns it off).
    pub pty: bool,
    pub scrub: ScrubOptions,
    /// Variables whose value the command gets as a file (`as_file:`), by name.
    pub files: BTreeSet<String>,
    /// How long one resolution may take (each reload gets a fresh deadline).
    pub timeout: std::time::Duration,
    /// `--watch` / `--reload-on-hup` / `watch:`; `None` when nothing is watched.
    pub watch: Option<crate::watch::Settings>,
}

impl RunConfig {
    /// Builds and checks the configuration of a run of `command`.
    pub fn build(args: RunOptions, command: Vec<OsString>) -> Result<RunConfig, Error> {
        let manifest = Manifest::discover(args.manifest.as_deref())?;
        // ENVRUN_KEY is dropped (and wiped) at once; the rest below, with --clean-env.
        let environment: Vec<(OsString, Secret)> = std::env::vars_os()
            .map(|(k, v)| (k, Secret::from_vec(v.into_encoded_bytes())))
            .filter(|(k, _)| !NOT_INHERITED.iter().any(|n| k == n))
            .collect();
        let mut requests = Vec::new();
        let mut shadowed = Vec::new();
        let mut files = manifest.as_file.clone();
        if !args.no_inherit_refs && !args.clean_env {
            let sets = |name: &str| manifest.environment.iter().any(|(n, _)| n == name);
            for ((name, parts), as_file) in resolve::inherited_requests(&environment)? {
                if sets(&name) {
                    shadowed.push(name);
                } else {
                    if as_file {
                        files.insert(name.clone());
                    }
                    requests.push((name, parts));
                }
            }
        }
        requests.extend(manifest.environment.iter().cloned());
        let inherited = environment
            .into_iter()
            .filter(|(k, _)| !args.clean_env || k == "PATH")
            .collect();

        let tenant = tenant::choose(args.tenant.as_deref(), manifest.tenant.as_deref());
        if let Some(t) = &tenant {
            // The manifest's own `tenant:` was checked when it was parsed.
            let from = crate::cli::env_source("--tenant")
                .map_or_else(|| String::from("--tenant"), |var| format!("${var}"));
            tenant::check(t).map_err(|e| Error::Invalid {
                message: format!("{from}: {e}"),
                hint: e.hint.clone(),
            })?;
        }
        let timeout = args
            .timeout
            .or(manifest.timeout)
            .unwrap_or(timeout::DEFAULT);
        let ctx = Context {
            base_dir: manifest.base_dir.clone(),
            tenant,
            deadline: std::time::Instant::now() + timeout,
        };
        let cli_watch = crate::watch::Partial {
            interval: args.watch,
            reload_on_hup: args.reload_on_hup.then_some(true),
            on_change: args.on_change,
            stop_signal: args.stop_signal,
            stop_timeout: args.stop_timeout,
        };
        let watch = cli_watch.over(manifest.watch);
        if watch.is_none() {
            // What a change would do, with nothing to look for one: say so, rather than
            // leave the user waiting for a restart that never comes.
            let given: Vec<&str> = [
                (cli_watch.on_change.is_some(), "--on-change"),
                (cli_watch.stop_signal.is_some(), "--stop-signal"),
                (cli_watch.stop_timeout.is_some(), "--stop-timeout"),
                (manifest.watch.on_change.is_some(), "watch.on_change"),
                (manifest.watch.stop_signal.is_some(), "watch.stop_signal"),
                (manifest.watch.stop_timeout.is_some(), "watch.stop_timeout"),
            ]
            .into_iter()
            .filter_map(|(set, name)| set.then_some(name))
            .collect();
            if !given.is_empty() {
                crate::ui::warn(&format!(
                    "{} does nothing without --watch or --reload-on-hup (or `interval:` / `reload_on_hup:` under `watch:`)",
                    given.join(", ")
                ));
            }
        }
        Ok(RunConfig {
            argv: command,
            files,
            timeout,
            watch,
            manifest,
            ctx,
            requests,
            inherited,
            shadowed,
            mask: !args.no_mask,
            pty: !args.no_pty,
            scrub: ScrubOptions {
                mask_with: args.mask_with,
                min_len: args.min_mask_len,
            },
        })
    }

    /// The command's whole environment: what it inherits, less the variables a backend read
    /// a secret from (`consumed`), then the resolved variables, which win. So
    /// `APP_TOKEN: secret:TOKEN` still passes `APP_TOKEN` on.
    pub fn child_env(
        inherited: Vec<(OsString, Secret)>,
        consumed: &BTreeSet<String>,
        vars: Vec<(String, Value)>,
    ) -> Vec<(OsString, Secret)> {
        let mut env = Vec::with_capacity(inherited.len() + vars.len());
        env.extend(
            inherited
                .into_iter()
                .filter(|(name, _)| !name.to_str().is_some_and(|n| consumed.contains(n))),
        );
        env.extend(
            vars.into_iter()
                .map(|(name, value)| (OsString::from(name), value.bytes)),
        );
        env
    }
}
