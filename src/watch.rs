//! Live secrets: what `--watch`, `--reload-on-hup` and `watch:` in the manifest ask for, and
//! what counts as a change.
//!
//! The supervisor ([`crate::launch`]) does the watching: every `interval`, or on a SIGHUP
//! sent to envrun when `reload_on_hup` is set, it re-resolves every reference by the same
//! path as at startup ([`crate::lib`]'s reload closure), and when a value changed it acts as
//! [`OnChange`] says. This module only holds the settings, their parsing, and the
//! comparison of two resolutions ([`changed`]).

use std::time::Duration;

use crate::secret::Secret;

/// envrun's exit status after `on_change: exit`: `EX_TEMPFAIL` from `sysexits.h`, "try
/// again later", which systemd (`Restart=on-failure`) and Kubernetes both restart on.
pub const EXIT_CHANGED: i32 = 75;

/// The stop signal when none is given.
pub const DEFAULT_STOP_SIGNAL: i32 = libc::SIGTERM;

/// How long a stopped command may take to exit before SIGKILL, when nothing says.
pub const DEFAULT_STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// What a changed value does to the running command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnChange {
    /// Stop the command (stop signal, grace, SIGKILL) and start it again with the new
    /// environment.
    Restart,
    /// Send this signal to the command; its `as_file:` variables get the new content first.
    /// Its environment stays as it was (a running process's cannot change).
    Signal(i32),
    /// Stop the command and exit with [`EXIT_CHANGED`], for a supervisor to restart the
    /// whole thing.
    Exit,
}

/// The watch settings of a run, from the command line over the manifest's `watch:`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settings {
    /// Re-resolve this often; `None`: only on SIGHUP (with `reload_on_hup`).
    pub interval: Option<Duration>,
    /// A SIGHUP sent to envrun reloads instead of being passed to the command.
    pub reload_on_hup: bool,
    pub on_change: OnChange,
    /// The signal that stops the command for `Restart` and `Exit`.
    pub stop_signal: i32,
    pub stop_timeout: Duration,
}

/// The `watch:` block of a manifest, each setting optional (the command line may give it).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Partial {
    pub interval: Option<Duration>,
    pub reload_on_hup: Option<bool>,
    pub on_change: Option<OnChange>,
    pub stop_signal: Option<i32>,
    pub stop_timeout: Option<Duration>,
}

impl Partial {
    /// `self` (the command line) over `under` (the manifest); `None` when neither asks to
    /// watch (no interval and no reload on SIGHUP): the other settings then do nothing.
    pub fn over(self, under: Partial) -> Option<Settings> {
        let interval = self.interval.or(under.interval);
        let reload_on_hup = self.reload_on_hup.or(under.reload_on_hup).unwrap_or(false);
        if interval.is_none() && !reload_on_hup {
            return None;
        }
        Some(Settings {
            interval,
            reload_on_hup,
            on_change: self
                .on_change
                .or(under.on_change)
                .unwrap_or(OnChange::Restart),
            stop_signal: self
                .stop_signal
                .or(under.stop_signal)
                .unwrap_or(DEFAULT_STOP_SIGNAL),
            stop_timeout: self
                .stop_timeout
                .or(under.stop_timeout)
                .unwrap_or(DEFAULT_STOP_TIMEOUT),
        })
    }
}

/// Parses `restart`, `exit` or `signal:NAME` (`signal:SIGHUP`, `signal:usr1`, `signal:10`).
pub fn parse_on_change(text: &str) -> Result<OnChange, String> {
    let t = text.trim();
    match t.to_ascii_lowercase().as_str() {
        "restart" => return Ok(OnChange::Restart),
        "exit" => return Ok(OnChange::Exit),
        _ => {}
    }
    match t.split_once(':') {
        Some((kind, signal)) if kind.eq_ignore_ascii_case("signal") => {
            parse_signal(signal).map(OnChange::Signal)
        }
        _ => Err(format!(
            "`{text}` is not an action (use `restart`, `exit` or `signal:SIGNAL`, e.g. `signal:SIGHUP`)"
        )),
    }
}

/// Parses a signal by name (`SIGTERM`, `term`, `SIGRTMIN+3`) or number (`15`).
pub fn parse_signal(text: &str) -> Result<i32, String> {
    let bad = || {
        format!(
            "`{text}` is not a signal (use a name such as SIGTERM, SIGHUP or SIGUSR1, or a number from 1 to {})",
            libc::SIGRTMAX()
        )
    };
    let t = text.trim();
    if let Ok(n) = t.parse::<i32>() {
        return if (1..=libc::SIGRTMAX()).contains(&n) && n != 32 && n != 33 {
            Ok(n)
        } else {
            Err(bad())
        };
    }
    let upper = t.to_ascii_uppercase();
    let name = upper.strip_prefix("SIG").unwrap_or(&upper);
    if let Some(offset) = name.strip_prefix("RTMIN") {
        let n = match offset {
            "" => 0,
            o => o
                .strip_prefix('+')
                .and_then(|o| o.parse::<i32>().ok())
                .ok_or_else(bad)?,
        };
        let signo = libc::SIGRTMIN() + n;
        return if signo <= libc::SIGRTMAX() {
            Ok(signo)
        } else {
            Err(bad())
        };
    }
    format!("SIG{name}")
        .parse::<nix::sys::signal::Signal>()
        .map(|s| s as i32)
        .map_err(|_| bad())
}

/// The name of a signal for messages: `SIGUSR1`, `SIGRTMIN+3`, or its number.
pub fn signal_name(signo: i32) -> String {
    match nix::sys::signal::Signal::try_from(signo) {
        Ok(s) => s.as_str().to_owned(),
        Err(_) if signo >= libc::SIGRTMIN() => format!("SIGRTMIN+{}", signo - libc::SIGRTMIN()),
        Err(_) => signo.to_string(),
    }
}

/// Each variable's value (a file's content, not its path), as [`changed`] compares them.
pub fn values_of(vars: &[(String, crate::secret::Value)]) -> Vec<(String, Secret)> {
    vars.iter()
        .map(|(name, value)| (name.clone(), value.bytes.clone()))
        .collect()
}

/// The variables whose value differs between two resolutions, added and removed ones
/// included, sorted by name. Values are compared, never shown.
pub fn changed(old: &[(String, Secret)], new: &[(String, Secret)]) -> Vec<String> {
    let mut names = std::collections::BTreeSet::new();
    for (name, value) in old {
        match new.iter().rev().find(|(n, _)| n == name) {
            Some((_, v)) if v.expose() == value.expose() => {}
            _ => {
                names.insert(name.clone());
            }
        }
    }
    for (name, _) in new {
        if !old.iter().any(|(n, _)| n == name) {
            names.insert(name.clone());
        }
    }
    names.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn actions_parse() {
        assert_eq!(parse_on_change("restart"), Ok(OnChange::Restart));
        assert_eq!(parse_on_change("EXIT"), Ok(OnChange::Exit));
        assert_eq!(
            parse_on_change("signal:SIGHUP"),
            Ok(OnChange::Signal(libc::SIGHUP))
        );
        assert_eq!(
            parse_on_change("signal:usr1"),
            Ok(OnChange::Signal(libc::SIGUSR1))
        );
        assert_eq!(parse_on_change("signal:10"), Ok(OnChange::Signal(10)));
        for bad in [
            "",
            "reload",
            "signal:",
            "signal:SIGFOO",
            "signal:0",
            "signal:99",
        ] {
            assert!(parse_on_change(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn signals_parse_by_name_and_number() {
        assert_eq!(parse_signal("SIGTERM"), Ok(libc::SIGTERM));
        assert_eq!(parse_signal("term"), Ok(libc::SIGTERM));
        assert_eq!(parse_signal("9"), Ok(9));
        assert_eq!(parse_signal("SIGRTMIN+2"), Ok(libc::SIGRTMIN() + 2));
        assert!(parse_signal("SIGRTMIN+99").is_err());
        assert!(parse_signal("32").is_err());
        assert_eq!(signal_name(libc::SIGUSR1), "SIGUSR1");
        assert_eq!(signal_name(libc::SIGRTMIN() + 1), "SIGRTMIN+1");
    }

    #[test]
    fn command_line_wins_and_nothing_means_no_watch() {
        let cli = Partial {
            interval: Some(Duration::from_secs(1)),
            ..Partial::default()
        };
        let manifest = Partial {
            interval: Some(Duration::from_secs(60)),
            on_change: Some(OnChange::Exit),
            ..Partial::default()
        };
        let s = cli.over(manifest).unwrap();
        assert_eq!(s.interval, Some(Duration::from_secs(1)));
        assert_eq!(s.on_change, OnChange::Exit);
        assert_eq!(s.stop_signal, libc::SIGTERM);
        assert_eq!(s.stop_timeout, DEFAULT_STOP_TIMEOUT);
        assert_eq!(Partial::default().over(Partial::default()), None);
        let hup = Partial {
            reload_on_hup: Some(true),
            ..Partial::default()
        };
        assert_eq!(hup.over(Partial::default()).unwrap().interval, None);
    }

    #[test]
    fn changes_name_added_removed_and_changed_variables() {
        let s = |v: &str| Secret::from_slice(v.as_bytes());
        let old = vec![
            ("A".to_owned(), s("1")),
            ("B".to_owned(), s("2")),
            ("C".to_owned(), s("3")),
        ];
        let new = vec![
            ("A".to_owned(), s("1")),
            ("B".to_owned(), s("two")),
            ("D".to_owned(), s("4")),
        ];
        assert_eq!(changed(&old, &new), ["B", "C", "D"]);
        assert!(changed(&old, &old).is_empty());
    }
}
