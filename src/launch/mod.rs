//! Starting the child: what its environment is and how it runs.
//!
//! [`Plan`] is everything the child needs; [`launch`] picks the mode, in one place
//! ([`Mode::of`]):
//! - exec ([`exec`]): envrun replaces itself with the command, when nothing needs masking
//!   or masking is off (`--no-mask`);
//! - supervise ([`supervise`]): envrun spawns the command, stays as its parent and masks its
//!   output, when at least one value is secret.
//!
//! In both, the environment block is built in buffers that are wiped: after a failed exec,
//! or right after the spawn. [`ChildStdio::of`] is the one place that decides what the
//! child's fds 0/1/2 are in supervise mode.

mod env_block;
mod exec;
mod pump;
mod signals;
mod supervise;
mod threads;

use std::ffi::OsString;
use std::sync::Arc;

use crate::error::Error;
use crate::scrub::{ScrubOptions, Scrubber};
use crate::secret::Secret;

pub use env_block::EnvBlock;

/// What to run and with what environment.
pub struct Plan {
    /// The command and its arguments; `argv[0]` is looked up in the child's `PATH`.
    pub argv: Vec<OsString>,
    /// The child's whole environment, in order; later entries win over earlier ones.
    pub env: Vec<(OsString, Secret)>,
    /// The compiled secret values, `None` when no value is secret (see [`scrubber`]).
    pub scrubber: Option<Arc<Scrubber>>,
    /// Whether the child's output is masked (false with `--no-mask`).
    pub mask: bool,
}

/// How the child runs.
enum Mode {
    Exec,
    Supervise(Arc<Scrubber>),
}

impl Mode {
    /// The one place the mode is chosen: supervise when there is a secret to mask and
    /// masking is on. A value too short to mask still counts (it is reported instead):
    /// whether envrun stays must not depend on how long a secret happens to be.
    fn of(plan: &Plan) -> Mode {
        match &plan.scrubber {
            Some(s) if plan.mask => Mode::Supervise(Arc::clone(s)),
            _ => Mode::Exec,
        }
    }
}

/// What the child's fds 0, 1 and 2 are in supervise mode.
pub enum ChildStdio {
    /// fd 0 is envrun's own, untouched (interactive tools and pipes work); 1 and 2 are
    /// pipes that envrun reads, masks and copies to its own 1 and 2.
    Pipes,
}

impl ChildStdio {
    /// The one place this is decided. (A pseudo-terminal when envrun's stdout is a
    /// terminal is planned: it becomes another variant chosen here.)
    fn of() -> ChildStdio {
        ChildStdio::Pipes
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
    let mode = Mode::of(&plan);
    let block = EnvBlock::build(&plan.env)?;
    drop(plan.env);
    match mode {
        Mode::Exec => Err(exec::exec(&plan.argv, &block)),
        Mode::Supervise(scrubber) => {
            supervise::supervise(&plan.argv, block, &scrubber, ChildStdio::of())
        }
    }
}
