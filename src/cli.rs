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
  envrun shell                             an interactive shell with the variables set
  envrun export --format shell             print the variables, secrets masked
  API_KEY=secret:API_KEY envrun -- app     resolve a reference from the environment
  printf %s \"$TOKEN\" | envrun secrets set TOKEN    store a secret (value from stdin)
  envrun check                             report missing, weak and overdue secrets
  envrun --dry-run -- ./backup.sh          show what would run, start nothing"
    };
}

macro_rules! exit_status {
    () => {
        "The command's own status (after a death by signal N, envrun dies by N too; 128+N as
PID 1). 125 if envrun fails: the command was not started, or envrun could not write the
command's output (a full disk, an I/O error; not a closed pipe). 126 if the command cannot
be run, 127 if it is not found. `envrun secrets`: 0, or 1 when the answer is no (`exists`,
`get` or `delete` of a missing name), 125 on errors. `envrun check`: 0, 1 when a finding is
an error, 125 when the manifest cannot be read. `--dry-run`: 0, or 125 when a run would
fail."
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
JSON and string-literal escapes; each telling line of a multi-line value), forwards every
signal sent to it to COMMAND, reaps zombies, and exits
with COMMAND's status (dying by the same signal if COMMAND was killed by one; 128+N as
PID 1). When envrun's stdout is a terminal, COMMAND runs on a pseudo-terminal of its own
(colours, prompts, job control and window size work; --no-pty gives it pipes); otherwise
its stdout and stderr are pipes (one pipe when they are the same file, as after 2>&1).
Otherwise, or with --no-mask, envrun replaces itself with COMMAND (exec): same PID, and its
output, secrets included, is shown as it is. As PID 1 (a container's init) envrun never
execs: it stays as COMMAND's parent, masking or not.";

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
    #[command(flatten)]
    pub options: RunOptions,

    /// The command to run and its arguments, after `--`
    #[arg(last = true, required = true, value_name = "COMMAND")]
    pub command: Vec<OsString>,
}

/// How the environment is resolved and the command run: shared by running a command,
/// `shell` and `export`.
#[derive(Debug, Clone, Args)]
pub struct RunOptions {
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
    /// stdout and stderr, as when no value is secret (as PID 1 envrun still stays as init)
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

    /// Resolve everything and print what would run and which variables would be set (names
    /// and sources, never values); do not start COMMAND. Exits 0, or 125 if a run would fail
    #[arg(long)]
    pub dry_run: bool,

    /// Append one JSON line per run to FILE (created 0600), or send it to the system log
    /// with `syslog`; in addition to the manifest's `audit:`. A failing write stops the run
    #[arg(long, env = "ENVRUN_AUDIT_LOG", value_name = "FILE")]
    pub audit_log: Option<PathBuf>,

    /// How long resolving every reference may take in all, retries included (e.g. 500ms,
    /// 10s, 1m); past it envrun fails without starting COMMAND. Wins over the manifest's
    /// `timeout:` [default: 10s]
    #[arg(long, env = "ENVRUN_TIMEOUT", value_name = "DURATION", value_parser = parse_timeout)]
    pub timeout: Option<std::time::Duration>,

    /// Give COMMAND pipes instead of a pseudo-terminal when envrun's stdout is a terminal
    #[arg(long, env = "ENVRUN_NO_PTY", value_parser = BoolishValueParser::new(), default_value_t = false, num_args = 0, default_missing_value = "true")]
    pub no_pty: bool,

    /// Resolve every reference again every DURATION while COMMAND runs (e.g. 30s, 5m), and
    /// act on a changed value as --on-change says. envrun stays as COMMAND's parent
    #[arg(long, env = "ENVRUN_WATCH", value_name = "DURATION", value_parser = parse_timeout, help_heading = "Live secrets")]
    pub watch: Option<std::time::Duration>,

    /// A SIGHUP sent to envrun resolves every reference again at once, as a --watch tick
    /// does, instead of being passed on to COMMAND
    #[arg(long, env = "ENVRUN_RELOAD_ON_HUP", value_parser = BoolishValueParser::new(), default_value_t = false, num_args = 0, default_missing_value = "true", help_heading = "Live secrets")]
    pub reload_on_hup: bool,

    /// What a changed value does: `restart` stops COMMAND and starts it again with the new
    /// environment; `signal:SIGNAL` sends SIGNAL to COMMAND after giving its as_file:
    /// variables the new content; `exit` stops COMMAND and exits 75 [default: restart]
    #[arg(long, env = "ENVRUN_ON_CHANGE", value_name = "ACTION", value_parser = crate::watch::parse_on_change, help_heading = "Live secrets")]
    pub on_change: Option<crate::watch::OnChange>,

    /// The signal that stops COMMAND for a restart or an exit [default: SIGTERM]
    #[arg(long, env = "ENVRUN_STOP_SIGNAL", value_name = "SIGNAL", value_parser = crate::watch::parse_signal, help_heading = "Live secrets")]
    pub stop_signal: Option<i32>,

    /// How long COMMAND may take to exit after the stop signal before envrun sends SIGKILL
    /// [default: 10s]
    #[arg(long, env = "ENVRUN_STOP_TIMEOUT", value_name = "DURATION", value_parser = parse_timeout, help_heading = "Live secrets")]
    pub stop_timeout: Option<std::time::Duration>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Manage the local encrypted store (secrets.json.enc + secrets.key)
    Secrets(SecretsArgs),

    /// Resolve every reference as a run would and report what is wrong, never a value
    ///
    /// One line per variable: name, source, status and, for secrets, a masked preview (the
    /// length and at most 2 leading characters). Findings: missing or failing references,
    /// placeholder values, weak passwords and keys, credentials written in the manifest,
    /// values too short to mask, variables defined twice, unused backends, and values older
    /// than their `rotation:` policy. Exit 0 when nothing is an error, 1 when something is,
    /// 125 when the manifest itself cannot be read.
    Check(CheckArgs),
    /// Start an interactive shell with the resolved environment, its output masked
    ///
    /// Runs $SHELL (or --shell, or /bin/sh) as `envrun -- SHELL` would, on a pseudo-terminal
    /// when envrun's stdout is a terminal, with ENVRUN_ACTIVE=1 set so a prompt can show it.
    /// Exits with the shell's status.
    Shell(ShellArgs),

    /// Print the resolved environment (for direnv and the like), secret values masked
    ///
    /// Prints each variable of the manifest (and each reference resolved from envrun's own
    /// environment). Secret values are masked unless --reveal is given; envrun refuses to
    /// reveal them to a terminal without --force.
    Export(ExportArgs),

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
pub struct CheckArgs {
    /// Manifest to check [default: ./envrun.yaml, if present]
    #[arg(short, long, env = "ENVRUN_MANIFEST", value_name = "PATH")]
    pub manifest: Option<PathBuf>,

    /// Check the secrets of this tenant (as `envrun --tenant`)
    #[arg(long, env = "ENVRUN_TENANT", value_name = "TENANT")]
    pub tenant: Option<String>,

    /// Print one JSON document (the shape is in the README) instead of text
    #[arg(long)]
    pub json: bool,

    /// A `.env.example`-style file: a secret whose value is still the example's is a
    /// placeholder
    #[arg(long, value_name = "FILE")]
    pub template: Option<PathBuf>,

    /// Show no preview of secret values, not even their length
    #[arg(long)]
    pub quiet_values: bool,

    /// Treat warnings (unused backend, value too short to mask, no known age) as errors
    #[arg(long)]
    pub strict: bool,

    /// Do not check secret: references found in envrun's own environment
    #[arg(long)]
    pub no_inherit_refs: bool,

    /// How long resolving every reference may take in all (as `envrun --timeout`)
    #[arg(long, env = "ENVRUN_TIMEOUT", value_name = "DURATION", value_parser = parse_timeout)]
    pub timeout: Option<std::time::Duration>,

    /// Values shorter than N bytes cannot be masked (as `envrun --min-mask-len`)
    #[arg(
        long,
        env = "ENVRUN_MIN_MASK_LEN",
        value_name = "N",
        default_value_t = 4
    )]
    pub min_mask_len: usize,
}

#[derive(Debug, Args)]
pub struct ShellArgs {
    #[command(flatten)]
    pub options: RunOptions,

    /// The shell to start [default: $SHELL, or /bin/sh]
    #[arg(long, value_name = "PATH")]
    pub shell: Option<OsString>,
}

#[derive(Debug, Args)]
pub struct ExportArgs {
    #[command(flatten)]
    pub options: RunOptions,

    /// Output format
    #[arg(long, value_enum, default_value_t = ExportFormat::Dotenv)]
    pub format: ExportFormat,

    /// Print secret values as they are, not masked
    #[arg(long)]
    pub reveal: bool,

    /// With --reveal: print the values even when stdout is a terminal
    #[arg(long, requires = "reveal")]
    pub force: bool,
}

/// The formats of `export`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ExportFormat {
    /// NAME="value", one a line (double-quoted, with \n, \", \\ and \$ escapes)
    Dotenv,
    /// export NAME='value', one a line, for `eval` in sh, bash and zsh
    Shell,
    /// One JSON object of names to values
    Json,
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
        /// Print JSON: an array of names, or with --long of objects
        #[arg(long)]
        json: bool,
        /// Also show when each secret was last set, and its age
        #[arg(short, long)]
        long: bool,
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

/// Parses the process's command line. An `ENVRUN_*` variable that is set but empty counts
/// as unset (as `ENVRUN_TENANT=` always did): `ENVRUN_MANIFEST= envrun -- cmd` in a
/// container or a CI step that blanks a variable must not turn into an error.
pub fn parse() -> Result<Cli, clap::Error> {
    use clap::FromArgMatches;
    let mut cmd = command();
    // Walking the tree costs more than the look at the environment that usually skips it.
    let blank = std::env::vars_os()
        .any(|(k, v)| v.is_empty() && k.as_encoded_bytes().starts_with(b"ENVRUN_"));
    if blank {
        cmd = ignore_empty_env(cmd);
    }
    let mut matches = cmd.try_get_matches()?;
    Cli::from_arg_matches_mut(&mut matches)
}

/// Drops the `env = ...` of every argument whose variable is set to the empty string.
fn ignore_empty_env(mut cmd: clap::Command) -> clap::Command {
    let empty: Vec<clap::Id> = cmd
        .get_arguments()
        .filter(|a| {
            a.get_env()
                .and_then(std::env::var_os)
                .is_some_and(|v| v.is_empty())
        })
        .map(|a| a.get_id().clone())
        .collect();
    for id in empty {
        cmd = cmd.mut_arg(id, |a| a.env(None));
    }
    let subs: Vec<String> = cmd
        .get_subcommands()
        .map(|s| s.get_name().to_owned())
        .collect();
    for name in subs {
        cmd = cmd.mut_subcommand(name, ignore_empty_env);
    }
    cmd
}

/// For an invalid value: the variable it came from, when the option is not on the command
/// line but its `env = ...` variable is set (`--min-mask-len <N>` -> `ENVRUN_MIN_MASK_LEN`).
pub fn env_source(invalid_arg: &str) -> Option<String> {
    let long = invalid_arg.split_whitespace().next()?.strip_prefix("--")?;
    let arg = find_long(&command(), long)?;
    let var = arg.get_env()?.to_str()?.to_owned();
    let on_command_line = std::env::args_os()
        .skip(1)
        .take_while(|a| a != "--")
        .any(|a| {
            let a = a.to_string_lossy();
            a == format!("--{long}")
                || a.starts_with(&format!("--{long}="))
                || arg
                    .get_short()
                    .is_some_and(|c| a.starts_with(&format!("-{c}")))
        });
    (!on_command_line && std::env::var_os(&var).is_some()).then_some(var)
}

fn find_long(cmd: &clap::Command, long: &str) -> Option<clap::Arg> {
    cmd.get_arguments()
        .find(|a| a.get_long() == Some(long))
        .cloned()
        .or_else(|| cmd.get_subcommands().find_map(|s| find_long(s, long)))
}
