//! Store keys: the key type, where a key comes from (`$ENVRUN_KEY` or a key file), key files,
//! and the one place that applies the rule "try KEY, then KEY.old".
//!
//! `KEY.old` is the previous key, kept by `envrun secrets rotate-key`. A store (or a backup)
//! that does not open with the current key is tried with it too: that is the state a reader
//! sees in the middle of a rotation (or after one that was interrupted), and the next write
//! re-encrypts it under the current key. [`open_with`] is that rule; every reader and writer
//! of the store goes through it.

use std::io;
use std::path::{Path, PathBuf};

use aes_gcm::Aes256Gcm;
use aes_gcm::aead::KeyInit;
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use secrecy::{ExposeSecret, SecretBox};
use zeroize::Zeroizing;

use super::{Contents, Replace, StoreError};

pub const KEY_LEN: usize = 32;

/// The variable that holds the key itself, in base64; it wins over any key file.
pub const KEY_VAR: &str = "ENVRUN_KEY";

/// A 256-bit store key, wiped on drop.
pub struct Key(SecretBox<[u8; KEY_LEN]>);

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Key([REDACTED])")
    }
}

impl Key {
    /// A new random key from the OS RNG.
    pub fn generate() -> Result<Key, StoreError> {
        let mut key = SecretBox::new(Box::new([0u8; KEY_LEN]));
        getrandom::fill(&mut *secrecy::ExposeSecretMut::expose_secret_mut(&mut key))
            .map_err(|e| StoreError::Random(io::Error::other(e.to_string())))?;
        Ok(Key(key))
    }

    /// Parses base64 text (surrounding whitespace ignored). `what` names the source in errors.
    pub fn from_base64(text: &[u8], what: &str) -> Result<Key, StoreError> {
        let bad = || StoreError::BadKey {
            what: what.to_owned(),
        };
        let text = text.trim_ascii();
        // Decode into a buffer one block larger than the key so an over-long key is caught.
        let mut buf = Zeroizing::new([0u8; KEY_LEN + 3]);
        let n = B64.decode_slice(text, &mut buf[..]).map_err(|_| bad())?;
        if n != KEY_LEN {
            return Err(bad());
        }
        let mut key = SecretBox::new(Box::new([0u8; KEY_LEN]));
        secrecy::ExposeSecretMut::expose_secret_mut(&mut key).copy_from_slice(&buf[..KEY_LEN]);
        Ok(Key(key))
    }

    /// Reads a key file, refusing one that group or others can access.
    pub fn load(path: &Path) -> Result<Key, StoreError> {
        let text = super::read_private(path, 4096, |p| StoreError::KeyMissing(p.to_owned()))?;
        Key::from_base64(&text, &format!("key file {}", path.display()))
    }

    /// The key as base64 text, for writing a key file.
    pub fn to_base64(&self) -> Zeroizing<String> {
        Zeroizing::new(B64.encode(self.0.expose_secret()))
    }

    /// Writes a new key file (0600) atomically; fails if one exists.
    pub fn create_file(&self, path: &Path) -> Result<(), StoreError> {
        self.write_file(path, Replace::NoClobber)
    }

    /// Writes the key to `path` (0600) through a temp file, so a crash leaves either no file
    /// (or the previous one) or the whole key, never a partial key.
    pub fn write_file(&self, path: &Path, mode: Replace) -> Result<(), StoreError> {
        let mut line = Zeroizing::new(String::with_capacity(KEY_LEN * 2));
        line.push_str(&self.to_base64());
        line.push('\n');
        super::replace_file(path, line.as_bytes(), mode)
    }

    pub(super) fn cipher(&self) -> Aes256Gcm {
        Aes256Gcm::new(self.0.expose_secret().into())
    }
}

/// Where the key comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeySource {
    /// `$ENVRUN_KEY`.
    Env,
    File(PathBuf),
}

impl KeySource {
    /// `$ENVRUN_KEY` when it is set and not empty, else the key file `file`.
    pub fn choose(file: PathBuf) -> KeySource {
        if std::env::var_os(KEY_VAR).is_some_and(|v| !v.is_empty()) {
            KeySource::Env
        } else {
            KeySource::File(file)
        }
    }

    /// Loads the current key.
    pub fn load(&self) -> Result<Key, StoreError> {
        match self {
            KeySource::Env => {
                let text = Zeroizing::new(
                    std::env::var_os(KEY_VAR)
                        .unwrap_or_default()
                        .into_encoded_bytes(),
                );
                Key::from_base64(&text, "$ENVRUN_KEY")
            }
            KeySource::File(path) => Key::load(path),
        }
    }

    /// The previous key's file (`KEY.old`), when the key comes from a file.
    pub fn old_path(&self) -> Option<PathBuf> {
        match self {
            KeySource::Env => None,
            KeySource::File(path) => Some(old_key_path(path)),
        }
    }
}

/// `secrets.key` -> `secrets.key.old`: the previous key, kept by `rotate-key`.
pub fn old_key_path(key: &Path) -> PathBuf {
    let mut name = key.file_name().unwrap_or_default().to_owned();
    name.push(".old");
    key.with_file_name(name)
}

/// An opened store: its contents and the current key (the one new writes are sealed with).
#[derive(Debug)]
pub struct Opened {
    pub key: Key,
    pub contents: Contents,
    /// It opened only with the previous key (`KEY.old`): a rotation was interrupted, or a
    /// backup predates the last one.
    pub with_old_key: bool,
}

/// Decrypts sealed store bytes with the current key, else with `KEY.old` (see the module
/// documentation). `what` names the bytes in errors; the errors are those of the current key.
pub fn open_with(bytes: &[u8], source: &KeySource, what: &Path) -> Result<Opened, StoreError> {
    open_loaded(bytes, source.load()?, source, what)
}

/// [`open_with`] with the current key already loaded.
fn open_loaded(
    bytes: &[u8],
    key: Key,
    source: &KeySource,
    what: &Path,
) -> Result<Opened, StoreError> {
    match super::open(bytes, &key, what) {
        Ok(contents) => Ok(Opened {
            key,
            contents,
            with_old_key: false,
        }),
        Err(err @ StoreError::Decrypt(_)) => {
            let Some(old) = source.old_path() else {
                return Err(err);
            };
            match Key::load(&old).and_then(|old| super::open(bytes, &old, what)) {
                Ok(contents) => Ok(Opened {
                    key,
                    contents,
                    with_old_key: true,
                }),
                Err(_) => Err(err),
            }
        }
        Err(err) => Err(err),
    }
}

/// Reads the store at `path` and opens it with [`open_with`]. The key is loaded first, so a
/// missing key is reported before a missing store.
pub fn read_with(path: &Path, source: &KeySource) -> Result<Opened, StoreError> {
    let key = source.load()?;
    open_loaded(&super::read_raw(path)?, key, source, path)
}
