//! The single-thread rule, checked: supervise mode blocks every signal it forwards and then
//! forks. A second thread alive at that point (a runtime or DNS thread a backend left
//! behind) would not have those signals blocked, so the kernel could deliver a signal meant
//! for the child to it, with the default action: envrun would die, or the signal would be
//! lost. Backends promise to leave no thread behind (`Backend::fetch`); this makes sure.

use crate::error::Error;

/// Fails unless envrun has exactly one thread, as counted in `/proc/self/task`.
pub fn ensure_single() -> Result<(), Error> {
    let count = std::fs::read_dir("/proc/self/task")
        .map_err(|e| {
            Error::Internal(format!(
                "cannot count envrun's threads in /proc/self/task before starting the command: {e} (is /proc mounted?)"
            ))
        })?
        .count();
    if count == 1 {
        Ok(())
    } else {
        Err(Error::Internal(format!(
            "envrun has {count} threads before starting the command, and must have 1: a thread left running could take a signal meant for the command; the command was not started"
        )))
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn counts_threads() {
        // The test harness itself runs on several threads: the check must see them.
        let _hold = std::thread::spawn(|| std::thread::sleep(std::time::Duration::from_secs(1)));
        let err = super::ensure_single().unwrap_err().to_string();
        assert!(err.contains("threads before starting the command"), "{err}");
    }
}
