//! Subcommands other than running a command: `secrets`, `export`, `completions`, `man`,
//! and the choice of program for `shell`.

pub mod check;
pub mod dry_run;
pub mod export;
pub mod secrets;

use std::ffi::OsString;

use std::io::Write;

use crate::error::Error;

/// The program `envrun shell` starts: `--shell`, else `$SHELL`, else `/bin/sh`.
pub fn shell_program(chosen: Option<OsString>) -> OsString {
    chosen
        .or_else(|| std::env::var_os("SHELL"))
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| OsString::from("/bin/sh"))
}

/// Prints a completion script for `shell` to stdout.
pub fn completions(shell: clap_complete::Shell) -> Result<i32, Error> {
    let mut cmd = crate::cli::command();
    let mut out = Vec::new();
    clap_complete::generate(shell, &mut cmd, "envrun", &mut out);
    write_stdout(&out)
}

/// Renders the man page (roff) from the clap definition: the main page, then one section
/// per subcommand with its options, so `man envrun` covers everything.
pub fn man_page() -> Vec<u8> {
    let cmd = crate::cli::command();
    let man = clap_mangen::Man::new(cmd.clone());
    let mut out = Vec::new();
    let io = (|| -> std::io::Result<()> {
        man.render_title(&mut out)?;
        man.render_name_section(&mut out)?;
        man.render_synopsis_section(&mut out)?;
        man.render_description_section(&mut out)?;
        man.render_options_section(&mut out)?;
        man.render_subcommands_section(&mut out)?;
        render_subcommands(&cmd, "envrun", &mut out)?;
        writeln!(
            out,
            ".SH EXAMPLES\n.nf\n{}\n.fi",
            roff_text(crate::cli::EXAMPLES)
        )?;
        writeln!(
            out,
            ".SH \"EXIT STATUS\"\n{}",
            roff_text(crate::cli::EXIT_STATUS)
        )?;
        man.render_version_section(&mut out)
    })();
    io.expect("writing to a Vec cannot fail");
    out
}

fn render_subcommands(cmd: &clap::Command, prefix: &str, out: &mut Vec<u8>) -> std::io::Result<()> {
    for sub in cmd
        .get_subcommands()
        .filter(|s| !s.is_hide_set() && s.get_name() != "help")
    {
        let name = format!("{prefix} {}", sub.get_name());
        let sub = sub.clone().bin_name(&name).display_name(&name);
        let man = clap_mangen::Man::new(sub.clone());
        let mut synopsis = Vec::new();
        man.render_synopsis_section(&mut synopsis)?;
        let mut options = Vec::new();
        man.render_options_section(&mut options)?;
        writeln!(out, ".SH \"{}\"", name.to_uppercase())?;
        // Each part begins with its own `.SH` heading; here they become sub-headings.
        out.extend(
            String::from_utf8_lossy(&synopsis)
                .replacen(".SH SYNOPSIS", ".SS Synopsis", 1)
                .bytes(),
        );
        if let Some(about) = sub.get_long_about().or(sub.get_about()) {
            writeln!(out, ".PP\n{}", roff_text(&about.to_string()))?;
        }
        if sub
            .get_arguments()
            .any(|a| !a.is_hide_set() && a.get_id() != "help")
        {
            out.extend(
                String::from_utf8_lossy(&options)
                    .replacen(".SH OPTIONS", ".SS Options", 1)
                    .bytes(),
            );
        }
        render_subcommands(&sub, &name, out)?;
    }
    Ok(())
}

/// Escapes text for roff: backslashes, and dashes and dots where roff would read them.
fn roff_text(s: &str) -> String {
    let s = s.replace('\\', "\\e").replace('-', "\\-");
    s.lines()
        .map(|l| {
            if l.starts_with('.') || l.starts_with('\'') {
                format!("\\&{l}")
            } else {
                l.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

pub fn man() -> Result<i32, Error> {
    write_stdout(&man_page())
}

fn write_stdout(bytes: &[u8]) -> Result<i32, Error> {
    let mut stdout = std::io::stdout().lock();
    match stdout.write_all(bytes).and_then(|()| stdout.flush()) {
        Ok(()) => Ok(0),
        // A closed pipe (`envrun man | head`) is not an error worth reporting.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(0),
        Err(e) => Err(Error::io("write to stdout", e)),
    }
}
