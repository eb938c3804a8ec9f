//! The command line, as clap definitions. Doc comments are the help text; the man page and
//! shell completions are generated from these types (`envrun man`, `envrun completions`).
//! Parsing does no I/O: [`crate::run`] turns these into actions.

use std::ffi::OsString;
use std::path::PathBuf;

use clap::builder::BoolishValueParser;
use clap::{Args, Parser, Subcommand};

const EXAMPLES: &str = "\
Examples:
  envrun -- ./backup.sh                    run with the variables of ./envrun.yaml
  envrun -m deploy/envrun.yaml -- make     use another manifest
  API_KEY=secret:API_KEY envrun -- app     resolve a reference from the environment
  printf %s \"$TOKEN\" | envrun secrets set TOKEN    store a secret (value from stdin)

Exit status: the command's own; 125 if envrun fails (nothing was started), 126 if the
command cannot be run, 127 if it is not found.";

const ABOUT: &str = "Run a command with secrets in its environment and nowhere else";

const LONG_ABOUT: &str = "\
Run a command with secrets in its environment and nowhere else.

envrun reads a manifest (--manifest, $ENVRUN_MANIFEST or ./envrun.yaml) that maps variable
names to references (secret:KEY, secret@BACKEND:KEY#FIELD, env:VAR, file:PATH, literals and
${...} interpolation), resolves all of them, and only then runs COMMAND with the result. If
any reference fails, COMMAND is not started and envrun exits 125. Values of the form
secret:KEY in envrun's own environment are resolved too.

Masking: when at least one value is secret (from secret: or file:), envrun starts COMMAND
as its child and stays as its parent (supervise mode). It masks every secret value in
COMMAND's stdout and stderr, and its common encodings (base64, hex, URL, JSON, each line of
a multi-line value), forwards signals to COMMAND, reaps zombies when it is PID 1, and exits
with COMMAND's status (dying by the same signal if COMMAND was killed by one; 128+N as
PID 1). In this version COMMAND's stdout and stderr are then pipes, not the terminal:
programs that check for a terminal (colours, progress bars) behave as when piped.
Otherwise, or with --no-mask, envrun replaces itself with COMMAND (exec): same PID, and its
output, secrets included, is shown as it is.";

#[derive(Debug, Parser)]
#[command(
    name = "envrun",
    version,
    about = ABOUT,
    long_about = LONG_ABOUT,
    after_help = EXAMPLES,
    args_conflicts_with_subcommands = true,
    subcommand_negates_reqs = true,
    max_term_width = 100
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,

    #[command(flatten)]
    pub run: RunArgs,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Manifest to read [default: ./envrun.yaml, if present]
    #[arg(short, long, env = "ENVRUN_MANIFEST", value_name = "PATH")]
    pub manifest: Option<PathBuf>,

    /// Start COMMAND from an empty environment plus the manifest's variables (PATH is kept
    /// unless the manifest sets it)
    #[arg(long)]
    pub clean_env: bool,

    /// Do not resolve secret: references found in envrun's own environment
    #[arg(long)]
    pub no_inherit_refs: bool,

    /// Do not mask secret values in COMMAND's output: run it directly (exec), on envrun's own
    /// stdout and stderr, as when no value is secret
    #[arg(long, env = "ENVRUN_NO_MASK", value_parser = BoolishValueParser::new(), default_value_t = false, num_args = 0, default_missing_value = "true")]
    pub no_mask: bool,

    /// Text written in place of a secret in COMMAND's output; `{name}` stands for the
    /// variable's name, e.g. `[{name}]`
    #[arg(
        long,
        env = "ENVRUN_MASK_WITH",
        value_name = "TEXT",
        default_value = "***"
    )]
    pub mask_with: String,

    /// Secret values shorter than N bytes are not masked (masking `no` or `1` would mangle
    /// ordinary output); envrun warns, naming each such variable
    #[arg(
        long,
        env = "ENVRUN_MIN_MASK_LEN",
        value_name = "N",
        default_value_t = 4
    )]
    pub min_mask_len: usize,

    /// The command to run and its arguments, after `--`
    #[arg(last = true, required = true, value_name = "COMMAND")]
    pub command: Vec<OsString>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Manage the local encrypted store (secrets.json.enc + secrets.key)
    Secrets(SecretsArgs),

    /// Print a shell completion script
    Completions {
        /// The shell to generate for
        shell: clap_complete::Shell,
    },

    /// Print the man page (roff)
    #[command(hide = true)]
    Man,
}

#[derive(Debug, Args)]
pub struct StoreArgs {
    /// The store file [default: ./secrets.json.enc]
    #[arg(
        short = 'f',
        long = "file",
        env = "ENVRUN_STORE",
        value_name = "STORE",
        global = true
    )]
    pub file: Option<PathBuf>,

    /// The key file [default: secrets.key beside the store]; $ENVRUN_KEY (base64) wins
    #[arg(long, env = "ENVRUN_KEY_FILE", value_name = "KEY", global = true)]
    pub key_file: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct SecretsArgs {
    #[command(flatten)]
    pub store: StoreArgs,

    #[command(subcommand)]
    pub command: SecretsCommand,
}

#[derive(Debug, Subcommand)]
pub enum SecretsCommand {
    /// Store a secret; the value is read from standard input (one trailing newline removed).
    /// A new store and key (0600) are created when neither exists
    Set {
        /// Letters, digits, `_`, `.`, `-` and `/`
        name: String,
    },
    /// List the names in the store, sorted (never values)
    List,
}

/// The clap command, for the man page and completions.
pub fn command() -> clap::Command {
    <Cli as clap::CommandFactory>::command()
}
