//! Starting the child: what its environment is and how it runs.
//!
//! [`Plan`] is everything the child needs; [`launch`] picks the mode. In this version the
//! only mode is exec ([`exec`]): envrun replaces itself with the command. The environment
//! block is built in buffers that are wiped if exec fails (on success the whole process
//! image, buffers included, is gone).

mod env_block;
mod exec;

use std::ffi::OsString;

use crate::error::Error;
use crate::secret::Secret;

pub use env_block::EnvBlock;

/// What to run and with what environment.
pub struct Plan {
    /// The command and its arguments; `argv[0]` is looked up in the child's `PATH`.
    pub argv: Vec<OsString>,
    /// The child's whole environment, in order; later entries win over earlier ones.
    pub env: Vec<(OsString, Secret)>,
}

/// Runs the plan. Returns only if the command could not be started.
pub fn launch(plan: Plan) -> Error {
    let block = match EnvBlock::build(&plan.env) {
        Ok(b) => b,
        Err(e) => return e,
    };
    drop(plan.env);
    exec::exec(&plan.argv, &block)
}
