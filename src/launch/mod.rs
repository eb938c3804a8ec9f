//! Starting the child: what its environment is and how it runs.
//!
//! [`Plan`] is everything the child needs; [`launch`] picks the mode, in one place
//! ([`Mode::of`]):
//! - exec ([`exec`]): envrun replaces itself with the command, when nothing needs masking
//!   (or masking is off) and envrun is not PID 1;
//! - supervise ([`supervise`]): envrun spawns the command and stays as its parent, when it
//!   masks the output or when it is PID 1 (a container's init must forward signals and reap
//!   orphans, masking or not).
//!
//! In both, the environment block is built in buffers that are wiped: after a failed exec,
//! or right after the spawn. [`ChildStdio::of`] is the one place that decides what the
//! child's fds 0/1/2 are in supervise mode. Raw system calls live in [`sys`], the only
//! module allowed `unsafe`.

#[forbid(unsafe_code)]
mod env_block;
#[forbid(unsafe_code)]
mod exec;
#[forbid(unsafe_code)]
mod live;
#[forbid(unsafe_code)]
mod memfile;
#[forbid(unsafe_code)]
mod pty;
#[forbid(unsafe_code)]
mod pump;
#[forbid(unsafe_code)]
mod signals;
#[forbid(unsafe_code)]
mod supervise;
#[allow(unsafe_code)]
mod sys;
#[forbid(unsafe_code)]
mod threads;

use std::ffi::OsString;
use std::io::IsTerminal;
use std::os::fd::AsFd;
use std::sync::Arc;

use crate::error::Error;
use crate::scrub::{ScrubOptions, Scrubber};
use crate::secret::Secret;

pub use env_block::EnvBlock;
pub use memfile::MemFile;

/// What to run and with what environment.
pub struct Plan {
    /// The command and its arguments; `argv[0]` is looked up in the child's `PATH`.
    pub argv: Vec<OsString>,
    /// The child's whole environment, in order; later entries win over earlier ones.
    pub env: Vec<(OsString, Secret)>,
    /// The in-memory files of `as_file:` variables, which the child inherits.
    pub files: Vec<MemFile>,
    /// The compiled secret values, `None` when no value is secret (see [`scrubber`]).
    pub scrubber: Option<Arc<Scrubber>>,
    /// Whether the child's output is masked (false with `--no-mask`).
    pub mask: bool,
    /// Whether the child may get a pseudo-terminal (false with `--no-pty`).
    pub pty: bool,
    /// Called with how the child ended, in supervise mode, before envrun ends the same way
    /// (the audit log records it here: after a signal death envrun re-raises the signal).
    pub on_exit: Option<OnExit>,
    /// Watch mode: re-resolve and act on changes while the child runs.
    pub watch: Option<Watch>,
}

/// One resolution made ready to run: what the child gets, and the values behind it.
pub struct Generation {
    /// The child's whole environment (`as_file:` variables hold their files' paths).
    pub env: Vec<(OsString, Secret)>,
    pub files: Vec<MemFile>,
    /// The values to mask, with the variable each belongs to.
    pub masks: Vec<(String, Secret)>,
}

/// Resolves every reference again, as at startup: called on a thread of its own.
pub type Resolve = Arc<dyn Fn() -> Result<crate::resolve::Resolved, Error> + Send + Sync>;

/// Makes a resolution ready to run, as at startup; `true`: seal the files.
pub type Prepare = Box<dyn Fn(crate::resolve::Resolved, bool) -> Result<Generation, Error>>;

/// What watch mode needs besides the plan (see [`crate::watch`]).
pub struct Watch {
    pub settings: crate::watch::Settings,
    pub resolve: Resolve,
    pub prepare: Prepare,
    /// The values the child was started with ([`crate::watch::values_of`]).
    pub values: Vec<(String, Secret)>,
    /// The values masked so far ([`Generation::masks`]); reloads add to them.
    pub masks: Vec<(String, Secret)>,
    pub scrub: ScrubOptions,
}

/// See [`Plan::on_exit`].
pub type OnExit = Box<dyn FnOnce(Status)>;

pub use supervise::Status;

impl Plan {
    /// Whether envrun stays as the command's parent (supervise) rather than exec'ing it.
    pub fn supervised(&self) -> bool {
        matches!(Mode::of(self, is_pid_1()), Mode::Supervise(_))
    }
}

/// Whether envrun is PID 1 (a container's init): then it never execs.
fn is_pid_1() -> bool {
    nix::unistd::getpid().as_raw() == 1
}

/// How the child runs.
enum Mode {
    Exec,
    /// With the scrubber when the output is masked.
    Supervise(Option<Arc<Scrubber>>),
}

impl Mode {
    /// The one place the mode is chosen: supervise when there is a secret to mask and
    /// masking is on, when envrun is PID 1, or when it watches; exec otherwise. A value too short to mask
    /// still counts (it is reported instead): whether envrun stays must not depend on how
    /// long a secret happens to be.
    fn of(plan: &Plan, pid_1: bool) -> Mode {
        match &plan.scrubber {
            Some(s) if plan.mask => Mode::Supervise(Some(Arc::clone(s))),
            // Watching needs a parent that stays.
            _ if pid_1 || plan.watch.is_some() => Mode::Supervise(None),
            _ => Mode::Exec,
        }
    }
}

/// What the child's fds 0, 1 and 2 are in supervise mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChildStdio {
    /// Nothing to mask (envrun is PID 1 only to be init): envrun's own fds 0/1/2, untouched.
    Inherit,
    /// fd 0 is envrun's own; 1 and 2 are pipes that envrun reads, masks and copies to its
    /// own 1 and 2, or one pipe for both when envrun's 1 and 2 are the same open file
    /// (`2>&1`), so the reader sees the order the child wrote in.
    Pipes { merged: bool },
    /// A new pseudo-terminal, the child's controlling terminal and its fd 1; also its fd 0
    /// and fd 2 where envrun's are terminals (`stdin`, `stderr`). A stream that is not a
    /// terminal stays as in `Pipes`: fd 0 envrun's own, fd 2 a masked pipe.
    Pty { stdin: bool, stderr: bool },
}

impl ChildStdio {
    /// The one place this is decided, from envrun's own fds 0/1/2.
    fn of(mask: bool, pty_allowed: bool) -> ChildStdio {
        if !mask {
            return ChildStdio::Inherit;
        }
        let (stdin, stdout, stderr) = (std::io::stdin(), std::io::stdout(), std::io::stderr());
        if pty_allowed && stdout.is_terminal() {
            return ChildStdio::Pty {
                stdin: stdin.is_terminal(),
                stderr: stderr.is_terminal(),
            };
        }
        ChildStdio::Pipes {
            merged: same_file(stdout.as_fd(), stderr.as_fd()),
        }
    }
}

/// Whether fds 1 and 2 lead to the same place: the same open file description (`2>&1`),
/// or, when the kernel cannot say, the same file (device and inode).
fn same_file(a: std::os::fd::BorrowedFd<'_>, b: std::os::fd::BorrowedFd<'_>) -> bool {
    if let Some(same) = sys::same_open_file(a, b) {
        return same;
    }
    match (nix::sys::stat::fstat(a), nix::sys::stat::fstat(b)) {
        (Ok(x), Ok(y)) => x.st_dev == y.st_dev && x.st_ino == y.st_ino,
        _ => false,
    }
}

/// The masker for the secret values, or `None` if there are none. Cheap: the automaton is
/// compiled on first use (the child's first output, or envrun's first message), so exec
/// mode and a silent child never pay for it. Installs the masker for envrun's own
/// messages, and (when `mask` is on) warns once for each variable whose value is too short
/// to mask.
pub fn scrubber(
    masks: &[(String, Secret)],
    opts: &ScrubOptions,
    mask: bool,
) -> Result<Option<Arc<Scrubber>>, Error> {
    if masks.is_empty() {
        return Ok(None);
    }
    let scrubber = Arc::new(Scrubber::new(
        masks
            .iter()
            .map(|(name, value)| (name.as_str(), value.expose())),
        opts,
    )?);
    let for_ui = Arc::clone(&scrubber);
    crate::ui::set_mask(Box::new(move |bytes| for_ui.scrub_all(bytes)));
    if mask {
        for name in scrubber.too_short() {
            crate::ui::warn(&format!(
                "a secret value in `{name}` is shorter than {} bytes and is not masked in the command's output (see --min-mask-len)",
                opts.min_len
            ));
        }
    }
    Ok(Some(scrubber))
}

/// Runs the plan. In exec mode this returns only if the command could not be started; in
/// supervise mode it returns the status envrun should exit with.
pub fn launch(plan: Plan) -> Result<i32, Error> {
    let mode = Mode::of(&plan, is_pid_1());
    let block = EnvBlock::build(&plan.env)?;
    drop(plan.env);
    match mode {
        Mode::Exec => Err(exec::exec(&plan.argv, &block, &plan.files)),
        Mode::Supervise(scrubber) => {
            let stdio = ChildStdio::of(scrubber.is_some(), plan.pty);
            supervise::supervise(supervise::Start {
                argv: plan.argv,
                env: block,
                files: plan.files,
                scrubber,
                stdio,
                on_exit: plan.on_exit,
                watch: plan.watch,
            })
        }
    }
}
