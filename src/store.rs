//! The local encrypted store: `secrets.json.enc` sealed with the key in `secrets.key`.
//!
//! File format (version 2):
//!
//! ```text
//! offset  size  what
//! 0       6     magic "ENVRUN"
//! 6       1     format version (2)
//! 7       1     algorithm (1 = AES-256-GCM)
//! 8       12    nonce, fresh from the OS RNG on every write
//! 20      n+16  ciphertext and tag of the JSON document below
//! ```
//!
//! Version 2 plaintext: `{"secrets": {"NAME": "value", ...}, "updated": {"NAME": SECONDS}}`,
//! where `updated` holds when each secret was last set (Unix seconds), for `rotation:`
//! policies and `secrets list --long`. Version 1 plaintext is the `secrets` object alone;
//! such stores still open (their secrets have no recorded time) and are written back as
//! version 2 on the next change.
//!
//! The 8-byte header is bound as associated data, so changing the version or algorithm
//! byte fails authentication like any other tampering. The key file holds the 32-byte key
//! in base64 on one line; `$ENVRUN_KEY` can hold the same text instead.
//!
//! Writes are atomic and serialised: a writer takes an exclusive `flock` on `STORE.lock` (a
//! file that is never renamed), writes `.STORE.tmp.RANDOM` (created exclusively, 0600),
//! fsyncs it, checks it, renames it over the store and fsyncs the directory
//! ([`fileio::replace_file`]; key files and backups are written the same way). Temp files
//! left by a killed writer are removed by the next one, which holds the lock.
//! Plaintext exists only in memory, in buffers sized before they are filled and wiped after
//! use.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use aes_gcm::Nonce;
use aes_gcm::aead::AeadInOut;
use nix::fcntl::{Flock, FlockArg};
use zeroize::{Zeroize, Zeroizing};

use crate::fileio::{self, FileError, Follow};
use crate::secret::Secret;

pub use crate::fileio::{Replace, remove_stale_temps};

mod key;

pub use key::{KEY_LEN, KEY_VAR, Key, KeySource, Opened, old_key_path, open_with, read_with};

const MAGIC: &[u8; 6] = b"ENVRUN";
const VERSION: u8 = 2;
/// The first format: the plaintext is the object of values alone, without set times.
const VERSION_1: u8 = 1;
const ALG_AES256GCM: u8 = 1;
const HEADER_LEN: usize = 8;
const NONCE_LEN: usize = 12;
const TAG_LEN: usize = 16;

/// Default file names, next to the manifest (or in the working directory).
pub const DEFAULT_STORE: &str = "secrets.json.enc";
pub const DEFAULT_KEY: &str = "secrets.key";

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store {} not found", .0.display())]
    StoreMissing(PathBuf),
    #[error("key file {} not found", .0.display())]
    KeyMissing(PathBuf),
    #[error("cannot read {}: {source}", path.display())]
    Read { path: PathBuf, source: io::Error },
    #[error("cannot write {}: {source}", path.display())]
    Write { path: PathBuf, source: io::Error },
    #[error("{} has mode {mode:04o}; it must not be accessible by group or others", path.display())]
    Permissions { path: PathBuf, mode: u32 },
    #[error("{what} is not a valid key (expected {KEY_LEN} bytes in base64)")]
    BadKey { what: String },
    #[error("{} is not an envrun store", .0.display())]
    NotAStore(PathBuf),
    #[error("{} has store format {version}, newer than this envrun understands", path.display())]
    NewerFormat { path: PathBuf, version: u8 },
    #[error("store {} is corrupted or the key is wrong", .0.display())]
    Decrypt(PathBuf),
    #[error("store {} decrypted but its content is not a JSON object of strings", .0.display())]
    Content(PathBuf),
    /// Encoding or encrypting the contents failed (nothing was written).
    #[error("cannot encrypt the store contents: {0}")]
    Seal(String),
    #[error("cannot read random bytes from the operating system: {0}")]
    Random(io::Error),
    #[error("{0}")]
    File(#[from] FileError),
    #[error("value of `{0}` is not UTF-8; the store holds text (base64-encode binary values)")]
    NotUtf8(String),
}

impl StoreError {
    pub fn hint(&self) -> Option<String> {
        Some(match self {
            StoreError::StoreMissing(_) => {
                "create it with `envrun secrets set NAME`, or point $ENVRUN_STORE / `secrets: {path: ...}` at it".into()
            }
            StoreError::KeyMissing(_) => {
                "set $ENVRUN_KEY_FILE or $ENVRUN_KEY, or `key_file:` in the manifest".into()
            }
            StoreError::Permissions { path, .. } => format!("run `chmod 600 {}`", path.display()),
            StoreError::BadKey { .. } => {
                "a key file holds one line of base64 (44 characters), as `envrun secrets set` creates it".into()
            }
            StoreError::NotAStore(_) | StoreError::Content(_) => {
                "check the path; restore from a backup if the file was overwritten".into()
            }
            StoreError::NewerFormat { .. } => "upgrade envrun".into(),
            StoreError::Decrypt(_) => {
                "check that the key matches this store ($ENVRUN_KEY, $ENVRUN_KEY_FILE, key_file:); if it does, restore the store from a backup".into()
            }
            StoreError::NotUtf8(_) => return None,
            StoreError::Seal(_) => "nothing was written; this is a bug in envrun, please report it".into(),
            StoreError::Random(_) => {
                "the kernel's random source (getrandom) failed; nothing was written".into()
            }
            StoreError::Read { .. } | StoreError::Write { .. } => {
                "check the path and its permissions".into()
            }
            StoreError::File(e) => return e.hint(),
        })
    }
}

/// Refuses a file that group or others can read or write.
pub fn check_private(file: &File, path: &Path) -> Result<(), StoreError> {
    let meta = file.metadata().map_err(|e| StoreError::Read {
        path: path.to_owned(),
        source: e,
    })?;
    check_mode(meta.permissions().mode(), path)
}

fn check_mode(mode: u32, path: &Path) -> Result<(), StoreError> {
    let mode = mode & 0o7777;
    if mode & 0o077 != 0 {
        return Err(StoreError::Permissions {
            path: path.to_owned(),
            mode,
        });
    }
    Ok(())
}

/// The decrypted content of a store: names and values, and when each was last set.
#[derive(Debug, Default)]
pub struct Contents {
    pub secrets: BTreeMap<String, Secret>,
    /// When each secret was last set. A name may be missing here: a store of format 1 or a
    /// value imported without a time. Names not in `secrets` are dropped when sealing.
    pub updated: BTreeMap<String, SystemTime>,
}

impl Contents {
    /// Sets `name` to `value`, recording now as its set time; returns the previous value.
    pub fn set(&mut self, name: &str, value: Secret) -> Option<Secret> {
        self.updated.insert(name.to_owned(), SystemTime::now());
        self.secrets.insert(name.to_owned(), value)
    }

    /// Removes `name` and its set time; returns the value.
    pub fn remove(&mut self, name: &str) -> Option<Secret> {
        self.updated.remove(name);
        self.secrets.remove(name)
    }
}

/// The version 2 plaintext, as read.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Plain {
    secrets: BTreeMap<String, SecretField>,
    #[serde(default)]
    updated: BTreeMap<String, u64>,
}

/// The version 2 plaintext, as written.
#[derive(serde::Serialize)]
struct PlainOut<'a> {
    secrets: BTreeMap<&'a str, &'a str>,
    updated: BTreeMap<&'a str, u64>,
}

/// Reads and decrypts the store at `path`.
pub fn read(path: &Path, key: &Key) -> Result<Contents, StoreError> {
    open(&read_raw(path)?, key, path)
}

/// Largest store envrun reads: far above any real one, low enough that a wrong path (a
/// device, a huge file) fails at once instead of filling memory.
pub const MAX_STORE: u64 = 64 << 20;

/// Reads the sealed bytes of the store at `path`, refusing a file others can access.
pub fn read_raw(path: &Path) -> Result<Vec<u8>, StoreError> {
    read_private(path, MAX_STORE, |p| StoreError::StoreMissing(p.to_owned())).map(|z| z.to_vec())
}

/// Reads a private file (the store, a key file) of at most `limit` bytes: a regular file
/// ([`fileio::read_regular`]) that group and others cannot access. `missing` is the error
/// for a file that does not exist.
fn read_private(
    path: &Path,
    limit: u64,
    missing: impl Fn(&Path) -> StoreError,
) -> Result<Zeroizing<Vec<u8>>, StoreError> {
    let (file, meta) = fileio::open_regular(path, Follow::Yes).map_err(|e| match e {
        FileError::NotFound(_) => missing(path),
        e => StoreError::File(e),
    })?;
    check_mode(meta.permissions().mode(), path)?;
    Ok(fileio::read_capped(file, &meta, path, limit)?)
}

/// Decrypts store bytes; `path` is only used in error messages.
pub fn open(data: &[u8], key: &Key, path: &Path) -> Result<Contents, StoreError> {
    if data.len() < HEADER_LEN + NONCE_LEN + TAG_LEN || &data[..6] != MAGIC {
        return Err(StoreError::NotAStore(path.to_owned()));
    }
    // A version or algorithm byte from the future gets its own message; a flipped bit that
    // lands here on an existing store fails authentication below like any other.
    if data[6] > VERSION {
        return Err(StoreError::NewerFormat {
            path: path.to_owned(),
            version: data[6],
        });
    }
    let (header, rest) = data.split_at(HEADER_LEN);
    let (nonce, sealed) = rest.split_at(NONCE_LEN);
    let nonce = Nonce::try_from(nonce).map_err(|_| StoreError::NotAStore(path.to_owned()))?;
    let mut plain = Zeroizing::new(Vec::with_capacity(sealed.len()));
    plain.extend_from_slice(sealed);
    key.cipher()
        .decrypt_in_place(&nonce, header, &mut *plain)
        .map_err(|_| StoreError::Decrypt(path.to_owned()))?;
    if !matches!(data[6], VERSION_1 | VERSION) || data[7] != ALG_AES256GCM {
        return Err(StoreError::NotAStore(path.to_owned()));
    }
    let content = || StoreError::Content(path.to_owned());
    let (map, times) = if data[6] == VERSION_1 {
        let map: BTreeMap<String, SecretField> =
            serde_json::from_slice(&plain).map_err(|_| content())?;
        (map, BTreeMap::new())
    } else {
        let p: Plain = serde_json::from_slice(&plain).map_err(|_| content())?;
        (p.secrets, p.updated)
    };
    let updated = times
        .into_iter()
        .filter(|(name, _)| map.contains_key(name))
        .filter_map(|(name, secs)| {
            let t = SystemTime::UNIX_EPOCH.checked_add(Duration::from_secs(secs))?;
            Some((name, t))
        })
        .collect();
    Ok(Contents {
        secrets: map.into_iter().map(|(k, v)| (k, v.0)).collect(),
        updated,
    })
}

/// Encrypts `contents` into the store file format, under a fresh nonce.
pub fn seal(contents: &Contents, key: &Key) -> Result<Vec<u8>, StoreError> {
    let mut entries = Vec::with_capacity(contents.secrets.len());
    for (name, value) in &contents.secrets {
        let text =
            std::str::from_utf8(value.expose()).map_err(|_| StoreError::NotUtf8(name.clone()))?;
        entries.push((name.as_str(), text));
    }
    let map = PlainOut {
        secrets: entries.into_iter().collect(),
        updated: contents
            .updated
            .iter()
            .filter(|(name, _)| contents.secrets.contains_key(*name))
            .map(|(name, t)| {
                let secs = t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
                (name.as_str(), secs.as_secs())
            })
            .collect(),
    };
    // Size the buffer exactly before filling it: a growing Vec leaves unwiped copies.
    let mut counter = Counter(0);
    let encode = |e: serde_json::Error| {
        StoreError::Seal(format!("JSON encoding failed ({:?})", e.classify()))
    };
    serde_json::to_writer(&mut counter, &map).map_err(encode)?;
    let total = HEADER_LEN + NONCE_LEN + counter.0 + TAG_LEN;
    let mut plain = Zeroizing::new(Vec::with_capacity(counter.0 + TAG_LEN));
    serde_json::to_writer(&mut *plain, &map).map_err(encode)?;

    let mut out = Vec::with_capacity(total);
    out.extend_from_slice(MAGIC);
    out.push(VERSION);
    out.push(ALG_AES256GCM);
    // The nonce MUST be unique for every message under one key: 96 fresh random bits per
    // write keep the collision chance negligible for any realistic number of writes.
    let mut nonce = [0u8; NONCE_LEN];
    getrandom::fill(&mut nonce).map_err(|e| StoreError::Random(io::Error::other(e.to_string())))?;
    out.extend_from_slice(&nonce);
    let nonce = Nonce::from(nonce);
    let header = out[..HEADER_LEN].to_vec();
    key.cipher()
        .encrypt_in_place(&nonce, &header, &mut *plain)
        .map_err(|_| StoreError::Seal(String::from("AES-GCM refused the message")))?;
    out.extend_from_slice(&plain);
    Ok(out)
}

/// A held exclusive lock on a store's lock file; released on drop.
pub struct Lock(#[allow(dead_code)] Flock<File>);

/// Takes the writer lock for `store` (`STORE.lock`, created 0600, never renamed).
pub fn lock(store: &Path) -> Result<Lock, StoreError> {
    let path = lock_path(store);
    // O_NOFOLLOW: a symlink planted as the lock file must not make envrun create or open
    // a file elsewhere.
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(&path)
        .map_err(|e| StoreError::Write {
            path: path.clone(),
            source: e,
        })?;
    Flock::lock(file, FlockArg::LockExclusive)
        .map(Lock)
        .map_err(|(_, errno)| StoreError::Write {
            path,
            source: errno.into(),
        })
}

/// Replaces the store atomically with `contents` sealed under `key`. Hold [`lock`] first.
pub fn write(store: &Path, key: &Key, contents: &Contents, lock: &Lock) -> Result<(), StoreError> {
    let sealed = seal(contents, key)?;
    write_sealed(store, &sealed, lock)
}

/// Replaces the store atomically with already sealed bytes (a verified backup).
pub fn write_sealed(store: &Path, sealed: &[u8], _lock: &Lock) -> Result<(), StoreError> {
    fileio::remove_stale_temps(store);
    replace_file(store, sealed, Replace::Overwrite)
}

/// Replaces `path` atomically with `bytes` ([`fileio::replace_file`]).
pub fn replace_file(path: &Path, bytes: &[u8], mode: Replace) -> Result<(), StoreError> {
    fileio::replace_file(path, bytes, mode).map_err(StoreError::from)
}

/// Removes `path` and makes the removal durable.
pub fn remove_file(path: &Path) -> Result<(), StoreError> {
    fileio::remove_file(path).map_err(StoreError::from)
}

/// `STORE` -> `STORE.lock`.
pub fn lock_path(store: &Path) -> PathBuf {
    let mut name = store.file_name().unwrap_or_default().to_owned();
    name.push(".lock");
    store.with_file_name(name)
}

/// Deserializes a JSON string straight into a [`Secret`], without an intermediate `String`.
struct SecretField(Secret);

impl<'de> serde::Deserialize<'de> for SecretField {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = SecretField;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a string")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<SecretField, E> {
                Ok(SecretField(Secret::from_slice(v.as_bytes())))
            }
            fn visit_string<E: serde::de::Error>(self, mut v: String) -> Result<SecretField, E> {
                let s = Secret::from_slice(v.as_bytes());
                v.zeroize();
                Ok(SecretField(s))
            }
        }
        d.deserialize_str(V)
    }
}

/// Counts the bytes a serializer would write, to size a buffer before filling it.
struct Counter(usize);

impl Write for Counter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0 += buf.len();
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn contents(pairs: &[(&str, &str)]) -> Contents {
        Contents {
            secrets: pairs
                .iter()
                .map(|(k, v)| (k.to_string(), Secret::from_slice(v.as_bytes())))
                .collect(),
            updated: BTreeMap::new(),
        }
    }

    /// Seals `plain` as format 1 did: the object of values alone under version byte 1.
    fn seal_v1(plain: &[u8], key: &Key) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(MAGIC);
        out.push(VERSION_1);
        out.push(ALG_AES256GCM);
        let nonce = [7u8; NONCE_LEN];
        out.extend_from_slice(&nonce);
        let header = out[..HEADER_LEN].to_vec();
        let mut buf = plain.to_vec();
        key.cipher()
            .encrypt_in_place(&Nonce::from(nonce), &header, &mut buf)
            .unwrap();
        out.extend_from_slice(&buf);
        out
    }

    #[test]
    fn format_1_stores_open_without_times_and_are_written_as_format_2() {
        let key = Key::generate().unwrap();
        let old = seal_v1(br#"{"A":"one","B":"two"}"#, &key);
        let mut c = open(&old, &key, Path::new("s")).unwrap();
        assert_eq!(c.secrets["A"].expose(), b"one");
        assert!(c.updated.is_empty());
        c.set("B", Secret::from_slice(b"three"));
        let new = seal(&c, &key).unwrap();
        assert_eq!(new[6], VERSION);
        let back = open(&new, &key, Path::new("s")).unwrap();
        assert_eq!(back.secrets["B"].expose(), b"three");
        assert!(back.updated.contains_key("B") && !back.updated.contains_key("A"));
    }

    #[test]
    fn set_times_round_trip_to_the_second() {
        let key = Key::generate().unwrap();
        let mut c = contents(&[("A", "one")]);
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_600_000_000);
        c.updated.insert("A".into(), t + Duration::from_millis(400));
        c.updated.insert("GONE".into(), t);
        let back = open(&seal(&c, &key).unwrap(), &key, Path::new("s")).unwrap();
        assert_eq!(back.updated.get("A"), Some(&t));
        assert!(!back.updated.contains_key("GONE"));
        c.remove("A");
        assert!(!c.updated.contains_key("A") && c.secrets.is_empty());
    }

    #[test]
    fn seal_open_round_trip_with_fresh_nonces() {
        let key = Key::generate().unwrap();
        let c = contents(&[("A", "one"), ("B", "two \"quoted\" \\ \u{e9}")]);
        let a = seal(&c, &key).unwrap();
        let b = seal(&c, &key).unwrap();
        assert_ne!(a[8..20], b[8..20], "nonce reused");
        let back = open(&a, &key, Path::new("s")).unwrap();
        assert_eq!(
            back.secrets["B"].expose(),
            "two \"quoted\" \\ \u{e9}".as_bytes()
        );
        assert!(!a.windows(3).any(|w| w == b"one"));
    }

    #[test]
    fn every_flipped_bit_is_rejected() {
        let key = Key::generate().unwrap();
        let sealed = seal(&contents(&[("A", "xyzzy")]), &key).unwrap();
        for bit in 0..sealed.len() * 8 {
            let mut t = sealed.clone();
            t[bit / 8] ^= 1 << (bit % 8);
            assert!(
                open(&t, &key, Path::new("s")).is_err(),
                "bit {bit} accepted"
            );
        }
    }

    #[test]
    fn wrong_key_is_a_clear_error() {
        let sealed = seal(&contents(&[("A", "xyzzy")]), &Key::generate().unwrap()).unwrap();
        let err = open(&sealed, &Key::generate().unwrap(), Path::new("s")).unwrap_err();
        assert_eq!(err.to_string(), "store s is corrupted or the key is wrong");
    }

    #[test]
    fn key_text_round_trips_and_rejects_bad_lengths() {
        let key = Key::generate().unwrap();
        let text = key.to_base64();
        assert!(Key::from_base64(text.as_bytes(), "k").is_ok());
        assert!(Key::from_base64(b"c2hvcnQ=", "k").is_err());
        assert!(Key::from_base64(format!("{}AAAA", &*text).as_bytes(), "k").is_err());
        assert!(Key::from_base64(b"!!!", "k").is_err());
    }
}
