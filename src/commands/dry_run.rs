//! `envrun --dry-run -- COMMAND`: everything a run does up to starting the command, then a
//! report of what would run, how, and which variables would be set, by name and source.
//!
//! The values are resolved (so a dry run fails exactly where a run would, exit 125) but never
//! printed; the report also passes through the scrubber, in case a value was typed into the
//! command line itself.

use crate::error::Error;
use crate::launch::Plan;
use crate::manifest::Manifest;
use crate::ui;

/// Prints the dry-run report for `plan` to stdout and returns exit status 0. `vars` are
/// each variable's name and [`crate::resolve::VarOutcome::describe`].
pub fn print(
    plan: &Plan,
    vars: &[(String, String)],
    removed: &[String],
    manifest: &Manifest,
) -> Result<i32, Error> {
    let mut out = String::new();
    out.push_str("dry run: the command was not started\n");
    out.push_str(&format!(
        "manifest: {}\n",
        ui::sanitize(&manifest.describe())
    ));
    let argv: Vec<String> = plan
        .argv
        .iter()
        .map(|a| shell_quote(&a.to_string_lossy()))
        .collect();
    out.push_str(&format!("would run: {}\n", argv.join(" ")));
    let secrets = plan.scrubber.as_ref().map_or(0, |_| 1);
    out.push_str(&format!(
        "mode: {}\n",
        if plan.supervised() {
            "supervise (envrun stays as the parent and masks secret values in the output)"
        } else if secrets > 0 {
            "exec (--no-mask: envrun is replaced by the command; output is not masked)"
        } else {
            "exec (no secret value to mask: envrun is replaced by the command)"
        }
    ));
    if let Some(w) = plan.watch.as_ref().map(|w| &w.settings) {
        out.push_str(&format!("watch: {}\n", describe_watch(w)));
    }
    let width = vars.iter().map(|(n, _)| n.len()).max().unwrap_or(0);
    out.push_str(&format!("variables set ({}):\n", vars.len()));
    for (name, from) in vars {
        out.push_str(&format!(
            "  {:width$}  {}\n",
            ui::sanitize(name),
            ui::sanitize(from)
        ));
    }
    if !removed.is_empty() {
        out.push_str(&format!(
            "not passed on (read by a backend): {}\n",
            removed.join(", ")
        ));
    }
    let bytes = match &plan.scrubber {
        Some(s) => s.scrub_all(out.as_bytes()),
        None => out.into_bytes(),
    };
    super::write_stdout(&bytes)
}

/// Quotes `arg` for a POSIX shell when it needs it, with control characters escaped.
fn shell_quote(arg: &str) -> String {
    let safe = !arg.is_empty()
        && arg
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=:,@%+".contains(c));
    if safe {
        arg.to_owned()
    } else {
        format!("'{}'", ui::sanitize(&arg.replace('\'', r"'\''")))
    }
}

/// `every 5m and on SIGHUP; on a change: restart (SIGTERM, then SIGKILL after 10s)`.
fn describe_watch(w: &crate::watch::Settings) -> String {
    use crate::watch::{OnChange, signal_name};
    let when = match (w.interval, w.reload_on_hup) {
        (Some(i), true) => format!("every {} and on SIGHUP", humantime::format_duration(i)),
        (Some(i), false) => format!("every {}", humantime::format_duration(i)),
        (None, _) => String::from("on SIGHUP"),
    };
    let stop = format!(
        "{}, then SIGKILL after {}",
        signal_name(w.stop_signal),
        humantime::format_duration(w.stop_timeout)
    );
    let action = match w.on_change {
        OnChange::Restart => format!("restart ({stop})"),
        OnChange::Signal(s) => format!("send {}", signal_name(s)),
        OnChange::Exit => format!("stop ({stop}) and exit {}", crate::watch::EXIT_CHANGED),
    };
    format!("{when}; on a change: {action}")
}

#[cfg(test)]
mod tests {
    #[test]
    fn arguments_are_quoted_only_when_needed() {
        assert_eq!(super::shell_quote("./backup.sh"), "./backup.sh");
        assert_eq!(super::shell_quote("a b"), "'a b'");
        assert_eq!(super::shell_quote("it's"), r"'it'\''s'");
        assert_eq!(super::shell_quote(""), "''");
        assert_eq!(super::shell_quote("\x1b[2J"), "'\\u{1b}[2J'");
    }
}
