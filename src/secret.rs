//! The secret value type.
//!
//! Every value envrun resolves is a [`Secret`] from the moment it is read until it is copied
//! into the child's environment block. The type prints as `[REDACTED]`, has no `Display` or
//! `Serialize`, and wipes its bytes when dropped. Whether a value must be masked in the
//! child's output is recorded beside it (a literal from the manifest is not secret, a value
//! from a backend or a file is).

use secrecy::{ExposeSecret, SecretSlice};
use std::fmt;
use zeroize::Zeroize;

/// Largest value envrun reads from a file (`file:`, the `files` backend) or accepts in
/// `secrets set`. Linux caps one environment string at 128 KiB anyway; this is far above any
/// real secret and low enough that a wrong path fails at once.
pub const MAX_VALUE: u64 = 1 << 20;

/// A byte string that is wiped on drop and never printed.
#[derive(Clone)]
pub struct Secret(SecretSlice<u8>);

impl Secret {
    /// Takes ownership of `bytes`, wiping any spare capacity so no copy is left behind.
    pub fn from_vec(mut bytes: Vec<u8>) -> Secret {
        // `into_boxed_slice` reallocates when capacity exceeds length, which would leave the
        // old allocation unwiped; copy into an exact-size box and wipe the original instead.
        let boxed: Box<[u8]> = bytes.as_slice().into();
        bytes.zeroize();
        Secret(SecretSlice::from(boxed))
    }

    /// Copies `bytes` into a new secret; the caller wipes its own copy.
    pub fn from_slice(bytes: &[u8]) -> Secret {
        Secret(SecretSlice::from(Box::<[u8]>::from(bytes)))
    }

    /// The raw bytes. Call sites are few and each one is a place a value could leak.
    pub fn expose(&self) -> &[u8] {
        self.0.expose_secret()
    }

    pub fn len(&self) -> usize {
        self.expose().len()
    }

    pub fn is_empty(&self) -> bool {
        self.expose().is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[REDACTED]")
    }
}

impl From<String> for Secret {
    fn from(s: String) -> Secret {
        Secret::from_vec(s.into_bytes())
    }
}

/// Removes one trailing newline (`\n` or `\r\n`), as files and `echo` end a value. In
/// place, so no copy of the value is left behind.
pub fn trim_one_newline(buf: &mut Vec<u8>) {
    if buf.ends_with(b"\n") {
        buf.pop();
        if buf.ends_with(b"\r") {
            buf.pop();
        }
    }
}

/// A resolved value and whether it must be masked in the child's output.
#[derive(Clone, Debug)]
pub struct Value {
    pub bytes: Secret,
    /// True for anything that came from a backend or a file; false for literals and `env:`.
    pub sensitive: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_the_value() {
        let s = Secret::from(String::from("canary-9f8e7d"));
        let v = Value {
            bytes: s.clone(),
            sensitive: true,
        };
        assert_eq!(format!("{s:?}"), "[REDACTED]");
        assert!(!format!("{v:?}").contains("canary"));
        assert_eq!(s.expose(), b"canary-9f8e7d");
    }
}
