//! Subcommands other than running a command: `secrets`, `completions`, `man`.

pub mod secrets;

use std::io::Write;

use crate::error::Error;

/// Prints a completion script for `shell` to stdout.
pub fn completions(shell: clap_complete::Shell) -> Result<i32, Error> {
    let mut cmd = crate::cli::command();
    let mut out = Vec::new();
    clap_complete::generate(shell, &mut cmd, "envrun", &mut out);
    write_stdout(&out)
}

/// Renders the man page (roff) from the clap definition.
pub fn man_page() -> Vec<u8> {
    let mut out = Vec::new();
    clap_mangen::Man::new(crate::cli::command())
        .render(&mut out)
        .expect("writing to a Vec cannot fail");
    out
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
