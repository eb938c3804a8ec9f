//! Watch mode's state in the supervisor: when to reload, the reload in progress, and what
//! a changed value does (see [`crate::watch`] for the settings).
//!
//! A reload runs [`super::Resolve`] on a thread of its own, so the supervisor keeps
//! forwarding signals and reaping while a slow backend answers (up to the resolution
//! deadline). The thread inherits envrun's blocked signal mask (it is started long after
//! `signals::block`), and it has been joined before anything is forked again: a network
//! backend's runtime and its DNS threads are gone by then (each resolution drops its
//! runtime before it returns).
//!
//! When a reload finds a change, the masks grow first (old values stay masked: output
//! already in flight may carry either), then the child is restarted, signalled, or stopped
//! for good. A failed reload changes nothing: one warning, and the next tick tries again.

use std::ffi::OsString;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Instant;

use nix::poll::PollTimeout;

use super::pump::Masks;
use super::{EnvBlock, Generation, MemFile, Watch};
use crate::error::Error;
use crate::resolve::Resolved;
use crate::scrub::Scrubber;
use crate::watch::{self, OnChange};

/// A reload running on its thread; `done` reads end of file when it has returned.
struct Worker {
    thread: JoinHandle<Result<Resolved, Error>>,
    done: OwnedFd,
}

/// The child is being stopped (stop signal sent); what comes after its exit.
pub struct Stopping {
    kill_at: Instant,
    killed: bool,
    pub then: Then,
}

pub enum Then {
    /// Start the command again with this environment and these files.
    Restart { env: EnvBlock, files: Vec<MemFile> },
    /// Exit with [`watch::EXIT_CHANGED`].
    Exit,
}

/// What the supervisor must do after a reload was applied.
pub enum Act {
    Nothing,
    /// Send this signal to the child.
    Signal(i32),
}

pub struct Live {
    watch: Watch,
    pub argv: Vec<OsString>,
    /// The scrubber the pump uses, `None` when the output is not masked.
    masks: Option<Arc<Masks>>,
    /// The current child's `as_file:` files: rewritten in place by `on_change: signal`.
    pub files: Vec<MemFile>,
    next_tick: Option<Instant>,
    worker: Option<Worker>,
    /// A reload was asked for while one was running: run another after it.
    again: bool,
    pub stopping: Option<Stopping>,
}

impl Live {
    pub fn new(
        watch: Watch,
        argv: Vec<OsString>,
        masks: Option<Arc<Masks>>,
        files: Vec<MemFile>,
    ) -> Live {
        let next_tick = watch.settings.interval.map(|i| Instant::now() + i);
        Live {
            watch,
            argv,
            masks,
            files,
            next_tick,
            worker: None,
            again: false,
            stopping: None,
        }
    }

    pub fn settings(&self) -> &watch::Settings {
        &self.watch.settings
    }

    /// How long the supervisor may sleep: until the next tick or the stop deadline.
    pub fn timeout(&self, now: Instant) -> PollTimeout {
        let kill = self
            .stopping
            .as_ref()
            .filter(|s| !s.killed)
            .map(|s| s.kill_at);
        super::pump::until_first(self.next_tick, kill, now)
    }

    /// The fd that becomes readable when a running reload is done.
    pub fn worker_done(&self) -> Option<BorrowedFd<'_>> {
        self.worker.as_ref().map(|w| w.done.as_fd())
    }

    /// A tick that is due starts a reload (one in progress, or a child being stopped,
    /// makes it wait for the next). Returns the child to SIGKILL when its stop deadline
    /// has passed.
    pub fn on_time(&mut self, now: Instant) -> Result<bool, Error> {
        if let (Some(tick), Some(interval)) = (self.next_tick, self.watch.settings.interval)
            && now >= tick
        {
            self.next_tick = Some(now + interval);
            if self.worker.is_none() && self.stopping.is_none() {
                self.start_reload()?;
            }
        }
        if let Some(s) = self.stopping.as_mut()
            && !s.killed
            && now >= s.kill_at
        {
            s.killed = true;
            return Ok(true);
        }
        Ok(false)
    }

    /// A SIGHUP asked for a reload now.
    pub fn request(&mut self) -> Result<(), Error> {
        if self.worker.is_some() {
            self.again = true;
            Ok(())
        } else if self.stopping.is_some() {
            // The child is being replaced already; the new one gets the latest values.
            Ok(())
        } else {
            self.start_reload()
        }
    }

    fn start_reload(&mut self) -> Result<(), Error> {
        let (done, done_w) = super::supervise::pipe()?;
        let resolve = Arc::clone(&self.watch.resolve);
        let thread = std::thread::Builder::new()
            .name(String::from("envrun-reload"))
            .spawn(move || {
                let resolved = resolve();
                drop(done_w);
                resolved
            })
            .map_err(|e| Error::io("start the reload thread", e))?;
        self.worker = Some(Worker { thread, done });
        Ok(())
    }

    /// The reload has returned: joins its thread and acts on what it found. `Err` only for
    /// what must end envrun; a failed reload is a warning.
    pub fn reloaded(&mut self, stop_requested: bool) -> Result<Act, Error> {
        let Some(worker) = self.worker.take() else {
            return Ok(Act::Nothing);
        };
        drop(worker.done);
        let result = match worker.thread.join() {
            Ok(r) => r,
            // The panic hook has said where; the child keeps running.
            Err(_) => Err(Error::Invalid {
                message: String::from("the reload stopped on an internal error"),
                hint: Some(String::from("please report this bug")),
            }),
        };
        let act = match result {
            // Asked to stop meanwhile: the child is going, nothing to start.
            _ if stop_requested => Act::Nothing,
            Ok(resolved) => match self.apply(resolved) {
                Ok(act) => act,
                Err(e) => {
                    failed(&e);
                    Act::Nothing
                }
            },
            Err(e) => {
                failed(&e);
                Act::Nothing
            }
        };
        if std::mem::take(&mut self.again) && !stop_requested && self.stopping.is_none() {
            self.start_reload()?;
        }
        Ok(act)
    }

    /// Compares a fresh resolution with the last one and, when something changed, grows
    /// the masks and starts what `on_change` says. Nothing is changed when this fails.
    fn apply(&mut self, resolved: Resolved) -> Result<Act, Error> {
        let values = watch::values_of(&resolved.vars);
        let names = watch::changed(&self.watch.values, &values);
        if names.is_empty() {
            return Ok(Act::Nothing);
        }
        let on_change = self.watch.settings.on_change;
        let new_masks = resolved.masks.clone();
        // Everything that can fail first: the new environment, then the new masks.
        let restart = match on_change {
            OnChange::Restart => {
                let Generation { env, files, .. } = (self.watch.prepare)(resolved, true)?;
                let env = EnvBlock::build(&env)?;
                // A command that would not start leaves the running one alone.
                super::exec::Program::prepare(&self.argv, &env)?.check_runnable()?;
                Some(Then::Restart { env, files })
            }
            OnChange::Exit | OnChange::Signal(_) => None,
        };
        // The old values first, in the same order: the streams rescan what they hold back
        // with the new automaton (see `ScrubStream::switch`).
        let mut all = self.watch.masks.clone();
        for (name, value) in new_masks {
            if !all.iter().any(|(_, m)| m.expose() == value.expose()) {
                all.push((name, value));
            }
        }
        let grown = Arc::new(
            Scrubber::new(
                all.iter().map(|(n, v)| (n.as_str(), v.expose())),
                &self.watch.scrub,
            )
            .map_err(|e| Error::Invalid {
                message: e.to_string(),
                hint: Some(String::from("fewer or shorter secret values")),
            })?,
        );
        // From here on, every byte of output is masked with the old and the new values.
        if let Some(m) = &self.masks {
            m.replace(Arc::clone(&grown));
        }
        let for_ui = Arc::clone(&grown);
        crate::ui::set_mask(Box::new(move |bytes| for_ui.scrub_all(bytes)));
        self.watch.masks = all;
        let list = names.join(", ");
        let act = match on_change {
            OnChange::Restart => {
                crate::ui::info(&format!("{list} changed; restarting the command"));
                self.stop(restart.expect("prepared above"));
                Act::Signal(self.watch.settings.stop_signal)
            }
            OnChange::Exit => {
                crate::ui::info(&format!(
                    "{list} changed; stopping the command and exiting {}",
                    watch::EXIT_CHANGED
                ));
                self.stop(Then::Exit);
                Act::Signal(self.watch.settings.stop_signal)
            }
            OnChange::Signal(signo) => {
                for file in &self.files {
                    if let Some((_, value)) = values.iter().rev().find(|(n, _)| *n == file.var)
                        && names.contains(&file.var)
                    {
                        file.replace(value)?;
                    }
                }
                crate::ui::info(&format!(
                    "{list} changed; sending {} to the command",
                    watch::signal_name(signo)
                ));
                Act::Signal(signo)
            }
        };
        self.watch.values = values;
        Ok(act)
    }

    fn stop(&mut self, then: Then) {
        self.stopping = Some(Stopping {
            kill_at: Instant::now() + self.watch.settings.stop_timeout,
            killed: false,
            then,
        });
    }
}

/// One warning per failed reload, on one line.
fn failed(e: &Error) {
    let mut text: Vec<String> = e.to_string().lines().map(str::to_owned).collect();
    // A resolution's hint is about a run that did not start; here one is running.
    if let Some(hint) = e.hint().filter(|_| !matches!(e, Error::Resolve { .. })) {
        text.extend(hint.lines().map(|l| format!("hint: {l}")));
    }
    crate::ui::warn(&format!(
        "reload failed; the command keeps running with the environment it has: {}",
        text.join("; ")
    ));
}
