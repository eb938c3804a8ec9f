//! The child's environment as `NAME=VALUE\0` strings, in buffers wiped on drop.

use std::collections::HashMap;
use std::ffi::{CStr, OsStr, OsString};
use std::os::unix::ffi::OsStrExt;

use zeroize::Zeroizing;

use crate::error::Error;
use crate::secret::Secret;

/// The most bytes Linux takes for one environment string, `NAME=VALUE` and its NUL
/// included (`MAX_ARG_STRLEN`, 32 pages); `execve` fails with `E2BIG` past it.
pub const MAX_ENV_STRING: usize = 32 * 4096;

pub struct EnvBlock {
    entries: Vec<Zeroizing<Vec<u8>>>,
}

impl EnvBlock {
    /// Checks that every entry can be passed to `execve`: a valid name, no NUL in the
    /// value, at most [`MAX_ENV_STRING`] bytes. Cheap; the caller runs it before building
    /// anything, so a value the kernel would refuse fails closed at once (exit 125).
    pub fn check(env: &[(OsString, Secret)]) -> Result<(), Error> {
        for (name, value) in env {
            let n = name.as_bytes();
            if n.is_empty() || n.contains(&b'=') || n.contains(&0) {
                return Err(Error::invalid(
                    format!(
                        "`{}` is not a valid environment variable name",
                        name.to_string_lossy()
                    ),
                    "a name must be non-empty and contain no `=` or NUL; rename it in the manifest",
                ));
            }
            if value.expose().contains(&0) {
                return Err(Error::invalid(
                    format!(
                        "the value of `{}` contains a NUL byte, which an environment variable cannot hold; the command was not started",
                        name.to_string_lossy()
                    ),
                    "store the value without NUL bytes (base64-encode binary data), or pass it as a file",
                ));
            }
            let size = n.len() + 1 + value.len() + 1;
            if size > MAX_ENV_STRING {
                return Err(Error::invalid(
                    format!(
                        "the value of `{}` is {} bytes; Linux takes at most {MAX_ENV_STRING} bytes (128 KiB) for one environment variable, `NAME=` and the final NUL included; the command was not started",
                        name.to_string_lossy(),
                        value.len()
                    ),
                    "pass a value this large as a file: give the command a path to read (e.g. with a plain value in the manifest) instead of the content",
                ));
            }
        }
        Ok(())
    }

    /// Builds the block (after [`check`](Self::check)); a later entry for a name replaces
    /// an earlier one in place.
    pub fn build(env: &[(OsString, Secret)]) -> Result<EnvBlock, Error> {
        Self::check(env)?;
        let mut entries: Vec<Zeroizing<Vec<u8>>> = Vec::with_capacity(env.len());
        // Name -> its entry: a manifest of 1,000 variables over an inherited environment
        // would cost a million comparisons with a list.
        let mut names: HashMap<&OsStr, usize> = HashMap::with_capacity(env.len());
        for (name, value) in env {
            let n = name.as_bytes();
            // Sized before it is filled: growth would leave unwiped copies of the value.
            let mut buf = Zeroizing::new(Vec::with_capacity(n.len() + 1 + value.len() + 1));
            buf.extend_from_slice(n);
            buf.push(b'=');
            buf.extend_from_slice(value.expose());
            buf.push(0);
            match names.get(name.as_os_str()) {
                Some(&i) => entries[i] = buf,
                None => {
                    names.insert(name, entries.len());
                    entries.push(buf);
                }
            }
        }
        Ok(EnvBlock { entries })
    }

    /// The entries as C strings, for execve.
    pub fn as_cstrs(&self) -> Vec<&CStr> {
        self.entries
            .iter()
            .map(|e| CStr::from_bytes_with_nul(e).expect("built with one NUL at the end"))
            .collect()
    }

    /// The value of `name`, if set (for PATH lookup).
    pub fn get(&self, name: &str) -> Option<&[u8]> {
        self.entries.iter().find_map(|e| {
            let e = &e[..e.len() - 1];
            e.strip_prefix(name.as_bytes())?.strip_prefix(b"=")
        })
    }
}
