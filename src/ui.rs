//! The one place envrun prints its own messages.
//!
//! Every line passes through the masker installed with [`set_mask`] once values are known,
//! as a last line of defence (the error types never carry values in the first place), then
//! has control characters escaped (text from outside, such as a key or path from a
//! manifest, must not drive the terminal), and starts with `envrun:`. Masking comes first
//! so a secret containing a control character still matches.

use std::io::Write;
use std::sync::{Mutex, OnceLock};

use crate::error::Error;

type Mask = Box<dyn Fn(&[u8]) -> Vec<u8> + Send + Sync>;

static MASK: OnceLock<Mutex<Option<Mask>>> = OnceLock::new();

/// Installs the function that masks secret values in envrun's own messages.
pub fn set_mask(mask: Mask) {
    *MASK
        .get_or_init(|| Mutex::new(None))
        .lock()
        .unwrap_or_else(|e| e.into_inner()) = Some(mask);
}

/// Prints `envrun: error: ...` lines and a hint line to stderr.
pub fn error(err: &Error) {
    for line in err.to_string().lines() {
        emit("error", line);
    }
    if let Some(hint) = err.hint() {
        for line in hint.lines() {
            emit("hint", line);
        }
    }
}

pub fn warn(msg: &str) {
    emit("warning", msg);
}

pub fn info(msg: &str) {
    emit("", msg);
}

/// Prints a panic report without taking the masker's lock: the panic may have happened
/// inside the masker, on this thread, with that lock held, and taking it again would hang.
/// The text is envrun's own (a source location), never a value, so it needs no mask.
pub fn panic_report(msg: &str) {
    let line = format!(
        "envrun: error: {}\nenvrun: hint: please report this bug (the message above names no value)\n",
        sanitize(msg)
    );
    let _ = std::io::stderr().write_all(line.as_bytes());
}

fn emit(level: &str, msg: &str) {
    // Masked first, then escaped: a secret that contains ESC or a newline must still match
    // the text as it is, before escaping rewrites those bytes.
    let masked = match MASK
        .get()
        .map(|m| m.lock().unwrap_or_else(|e| e.into_inner()))
    {
        Some(guard) => match guard.as_ref() {
            Some(mask) => String::from_utf8_lossy(&mask(msg.as_bytes())).into_owned(),
            None => msg.to_owned(),
        },
        None => msg.to_owned(),
    };
    let mut line = String::from("envrun: ");
    if !level.is_empty() {
        line.push_str(level);
        line.push_str(": ");
    }
    line.push_str(&sanitize(&masked));
    line.push('\n');
    // Nothing useful can be done if stderr is gone.
    let _ = std::io::stderr().write_all(line.as_bytes());
}

/// Escapes control characters so outside text cannot move the cursor or change colours.
pub fn sanitize(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn control_characters_are_escaped() {
        assert_eq!(super::sanitize("a\x1b[31mb\nc"), "a\\u{1b}[31mb\\nc");
    }
}
