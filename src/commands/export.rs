//! `envrun export`: the resolved environment printed for other tools (direnv, `eval`, a
//! JSON consumer), secret values masked unless the user asks for them.
//!
//! Revealed values are written from wiped buffers straight to stdout, and never to a
//! terminal without `--force` (a screen is a log that other people read).

use std::io::{IsTerminal, Write};

use zeroize::Zeroizing;

use crate::cli::{ExportArgs, ExportFormat};
use crate::error::Error;
use crate::resolve::Resolved;

/// Prints `resolved` as `args` says.
pub fn run(resolved: &Resolved, args: &ExportArgs) -> Result<i32, Error> {
    if args.reveal && !args.force && std::io::stdout().is_terminal() {
        return Err(Error::refused(
            "refusing to print secret values to a terminal; redirect stdout to a file or pipe, or add --force",
            "`envrun export --reveal > .env.local`, or add --force to show them on the screen",
        ));
    }
    let mut out = Zeroizing::new(Vec::new());
    if args.format == ExportFormat::Json {
        out.push(b'{');
    }
    for (i, (name, value)) in resolved.vars.iter().enumerate() {
        let masked;
        let shown: &[u8] = if value.sensitive && !args.reveal {
            masked = args.options.mask_with.replace("{name}", name);
            masked.as_bytes()
        } else {
            value.bytes.expose()
        };
        match args.format {
            ExportFormat::Dotenv => dotenv_line(name, shown, &mut out),
            ExportFormat::Shell => shell_line(name, shown, &mut out),
            ExportFormat::Json => {
                if i > 0 {
                    out.push(b',');
                }
                json_member(name, shown, &mut out)?;
            }
        }
    }
    if args.format == ExportFormat::Json {
        out.extend_from_slice(b"}\n");
    }
    let mut stdout = std::io::stdout().lock();
    match stdout.write_all(&out).and_then(|()| stdout.flush()) {
        Ok(()) => Ok(0),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(0),
        Err(e) => Err(Error::io("write to stdout", e)),
    }
}

/// `NAME="value"`: double quotes, with `\`, `"`, `$` and `` ` `` escaped and a newline as
/// `\n`, which dotenv readers (and direnv's `dotenv`) turn back into the value.
fn dotenv_line(name: &str, value: &[u8], out: &mut Vec<u8>) {
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b"=\"");
    for &b in value {
        match b {
            b'\\' | b'"' | b'$' | b'`' => out.extend_from_slice(&[b'\\', b]),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            _ => out.push(b),
        }
    }
    out.extend_from_slice(b"\"\n");
}

/// `export NAME='value'`: single quotes keep every byte literal in a POSIX shell; a quote
/// in the value becomes `'\''`.
fn shell_line(name: &str, value: &[u8], out: &mut Vec<u8>) {
    out.extend_from_slice(b"export ");
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b"='");
    for &b in value {
        if b == b'\'' {
            out.extend_from_slice(b"'\\''");
        } else {
            out.push(b);
        }
    }
    out.extend_from_slice(b"'\n");
}

/// `"NAME":"value"`. JSON strings are Unicode: a value that is not UTF-8 cannot be one.
fn json_member(name: &str, value: &[u8], out: &mut Vec<u8>) -> Result<(), Error> {
    let Ok(text) = std::str::from_utf8(value) else {
        return Err(Error::invalid(
            format!(
                "the value of `{name}` is not UTF-8 and cannot be a JSON string; use --format shell or dotenv"
            ),
            "--format shell or --format dotenv can hold any bytes but NUL",
        ));
    };
    json_string(name, out);
    out.push(b':');
    json_string(text, out);
    Ok(())
}

/// A JSON string literal, written byte by byte (no intermediate `String` copy of a value).
fn json_string(text: &str, out: &mut Vec<u8>) {
    out.push(b'"');
    for c in text.chars() {
        match c {
            '"' => out.extend_from_slice(b"\\\""),
            '\\' => out.extend_from_slice(b"\\\\"),
            '\n' => out.extend_from_slice(b"\\n"),
            '\r' => out.extend_from_slice(b"\\r"),
            '\t' => out.extend_from_slice(b"\\t"),
            c if (c as u32) < 0x20 => {
                out.extend_from_slice(format!("\\u{:04x}", c as u32).as_bytes());
            }
            c => {
                let mut buf = [0u8; 4];
                out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
            }
        }
    }
    out.push(b'"');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dotenv_escapes_what_a_reader_would_expand() {
        let mut out = Vec::new();
        dotenv_line("A", b"x\"$y`\\\nz", &mut out);
        assert_eq!(out, b"A=\"x\\\"\\$y\\`\\\\\\nz\"\n");
    }

    #[test]
    fn shell_quotes_a_single_quote() {
        let mut out = Vec::new();
        shell_line("A", b"it's $HOME", &mut out);
        assert_eq!(out, b"export A='it'\\''s $HOME'\n");
    }

    #[test]
    fn json_escapes_controls_and_rejects_non_utf8() {
        let mut out = Vec::new();
        json_member("A", b"a\"b\x01", &mut out).unwrap();
        assert_eq!(out, b"\"A\":\"a\\\"b\\u0001\"");
        assert!(json_member("B", b"\xff", &mut Vec::new()).is_err());
    }
}
