//! The command line, as clap definitions. Doc comments are the help text; the man page and
//! shell completions are generated from these types (`envrun man`, `envrun completions`).
//! Parsing does no I/O: [`crate::run`] turns these into actions.

use std::ffi::OsString;
use std::path::PathBuf;

use clap::builder::BoolishValueParser;
use clap::{Args, Parser, Subcommand};

// Macros rather than consts so `concat!` can build the help text from the same words the
// man page uses.
macro_rules! examples {
    () => {
        "  envrun -- ./backup.sh                    run with the variables of ./envrun.yaml
  envrun -m deploy/envrun.yaml -- make     use another manifest
  API_KEY=secret:API_KEY envrun -- app     resolve a reference from the environment
  printf %s \"$TOKEN\" | envrun secrets set TOKEN    store a secret (value from stdin)"
    };
}

macro_rules! exit_status {
    () => {
        "The command's own status. 125 if envrun fails (the command was not started), 126 if the
command cannot be run, 127 if it is not found. `envrun secrets`: 0, or 1 when the answer is
no (`exists`, `get` or `delete` of a missing name), 125 on errors."
    };
}

/// The examples shown after `--help` and in the man page.
pub const EXAMPLES: &str = examples!();
/// The exit status rules shown after `--help` and in the man page.
pub const EXIT_STATUS: &str = exit_status!();
const AFTER_HELP: &str = concat!(
    "Examples:\n",
    examples!(),
    "\n\nExit status:\n",
    exit_status!()
);

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
COMMAND's stdout and stderr, and its common encodings (base64 and hex, wrapped or not; URL;
JSON and string-literal escapes; each telling line of a multi-line value), forwards signals to COMMAND, reaps zombies when it is PID 1, and exits
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
    after_help = AFTER_HELP,
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

    /// Look up secrets for this tenant first, then globally (env: {prefix}{TENANT}_{NAME};
    /// files: {dir}/{TENANT}/NAME). Wins over the manifest's `tenant:`
    #[arg(long, env = "ENVRUN_TENANT", value_name = "TENANT")]
    pub tenant: Option<String>,

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

    /// How long resolving every reference may take in all, retries included (e.g. 500ms,
    /// 10s, 1m); past it envrun fails without starting COMMAND. Wins over the manifest's
    /// `timeout:` [default: 10s]
    #[arg(long, env = "ENVRUN_TIMEOUT", value_name = "DURATION", value_parser = parse_timeout)]
    pub timeout: Option<std::time::Duration>,

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
    /// Create a new key and an empty store (both 0600); refuses to overwrite either
    Init,
    /// Store a secret (value from stdin, or a prompt that does not echo)
    ///
    /// The value is read from standard input (one trailing newline removed), or from a prompt
    /// on the terminal that does not echo when standard input is a terminal. A new store and
    /// key (0600) are created when neither exists.
    Set {
        /// The secret's name: letters, digits, `_`, `.`, `-` and `/`
        name: String,
        /// The value on the command line: discouraged, it lands in shell history and the
        /// process list (a warning says so)
        value: Option<String>,
    },
    /// Show a secret masked, or with --reveal its value; exit 1 if it does not exist
    ///
    /// The masked form shows 3 characters at each end of a value of 16 characters or more
    /// (`123***...xyz`), 2 from 12 characters, 1 from 8, and only `***` below 8: never more
    /// than 3/8 of a value, and never its length.
    Get {
        /// The secret's name
        name: String,
        /// Print the raw value alone (a newline is added only when stdout is a terminal)
        #[arg(long)]
        reveal: bool,
    },
    /// List the names in the store, sorted (never values)
    List {
        /// Print a JSON array of names
        #[arg(long)]
        json: bool,
    },
    /// Exit 0 if the secret exists, 1 if not; prints nothing
    Exists {
        /// The secret's name
        name: String,
    },
    /// Delete a secret; exit 1 if it does not exist
    #[command(visible_alias = "rm")]
    Delete {
        /// The secret's name
        name: String,
    },
    /// Store every SECRET_* variable of the environment, without the prefix
    ///
    /// Every variable whose name starts with the prefix becomes a secret named after the rest
    /// of its name. Reports how many were added, updated or unchanged, never values. All or
    /// nothing: one invalid name or empty value and nothing is imported.
    Import {
        /// The prefix to take and strip
        #[arg(long, default_value = "SECRET_", value_name = "P")]
        prefix: String,
    },
    /// Copy the encrypted store to PATH (0600), after checking that it opens with the key
    ///
    /// The backup is the encrypted store byte for byte; the key is not in it.
    Backup {
        /// Where to write the backup
        path: PathBuf,
        /// Replace PATH if it exists
        #[arg(long)]
        force: bool,
    },
    /// Replace the store with a backup, after checking that it opens with the current key
    ///
    /// A backup made under the previous key (KEY.old, kept by rotate-key) is re-encrypted
    /// under the current one. The store is replaced atomically.
    Restore {
        /// The backup to restore
        path: PathBuf,
    },
    /// Re-encrypt the store under a new random key, keeping the previous one as KEY.old
    ///
    /// Writes KEY.old, then the new KEY, then the re-encrypted store, so that at every
    /// instant one of the two opens the store (readers try KEY.old when KEY fails). KEY.old
    /// opens older backups; `rotate-key --discard-old` deletes it. Refused when the key comes
    /// from $ENVRUN_KEY.
    RotateKey {
        /// Only delete KEY.old (after checking that the current key opens the store)
        #[arg(long)]
        discard_old: bool,
    },
    /// Store a new random value from the OS RNG; prints only the name and length
    Generate {
        /// The secret's name
        name: String,
        /// Number of characters
        #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u16).range(1..=4096), value_name = "N")]
        length: u16,
        /// Characters to draw from
        #[arg(long, value_enum, default_value_t = Charset::Alnum)]
        charset: Charset,
        /// Replace an existing secret of that name
        #[arg(long)]
        force: bool,
    },
}

/// The alphabets of `secrets generate`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Charset {
    /// A-Z a-z 0-9
    Alnum,
    /// 0-9 a-f
    Hex,
    /// A-Z a-z 0-9 + /
    Base64,
    /// A-Z a-z 0-9 - _
    Urlsafe,
}

fn parse_timeout(text: &str) -> Result<std::time::Duration, String> {
    crate::timeout::parse(text)
}

/// The clap command, for the man page and completions.
pub fn command() -> clap::Command {
    <Cli as clap::CommandFactory>::command()
}
