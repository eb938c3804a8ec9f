//! `envrun secrets`: managing the local encrypted store from the command line.
//!
//! Store and key paths: `-f/--file` (or `$ENVRUN_STORE`, default `./secrets.json.enc`) and
//! `--key-file` (or `$ENVRUN_KEY_FILE`, default `secrets.key` beside the store);
//! `$ENVRUN_KEY` (base64) takes precedence over any key file.
//!
//! Every command that changes the store takes the store's lock, reads it, changes the
//! decrypted contents in memory and writes them back atomically ([`store::write`]). Values
//! are printed only by `get --reveal`; everything else names secrets and counts them.
//! Exit status: 0, 1 for a "no" answer (`exists`, `get`/`delete` of a missing name), 125
//! for errors.

mod generate;
mod prompt;

use std::io::{IsTerminal, Read};
use std::path::{Path, PathBuf};

use zeroize::Zeroizing;

use super::write_stdout;
use crate::backend::local;
use crate::cli::{Charset, SecretsArgs, SecretsCommand, StoreArgs};
use crate::error::{EXIT_ABSENT, Error};
use crate::fileio::{self, FileError};
use crate::secret::Secret;
use crate::store::{self, Contents, Key, KeySource, Replace, StoreError};
use crate::ui;

use crate::secret::MAX_VALUE;

/// Where the store and its key are.
struct Location {
    store: PathBuf,
    key: KeySource,
}

pub fn run(args: SecretsArgs) -> Result<i32, Error> {
    let loc = location(&args.store);
    match args.command {
        SecretsCommand::Init => init(&loc),
        SecretsCommand::Set { name, value } => set(&loc, &name, value),
        SecretsCommand::Get { name, reveal } => get(&loc, &name, reveal),
        SecretsCommand::List { json, long } => list(&loc, json, long),
        SecretsCommand::Exists { name } => exists(&loc, &name),
        SecretsCommand::Delete { name } => delete(&loc, &name),
        SecretsCommand::Import { prefix } => import(&loc, &prefix),
        SecretsCommand::Backup { path, force } => backup(&loc, &path, force),
        SecretsCommand::Restore { path } => restore(&loc, &path),
        SecretsCommand::RotateKey { discard_old: false } => rotate_key(&loc),
        SecretsCommand::RotateKey { discard_old: true } => discard_old_key(&loc),
        SecretsCommand::Generate {
            name,
            length,
            charset,
            force,
        } => generate(&loc, &name, usize::from(length), charset, force),
    }
}

fn location(args: &StoreArgs) -> Location {
    let store = args
        .file
        .clone()
        .unwrap_or_else(|| PathBuf::from(store::DEFAULT_STORE));
    let beside = store.with_file_name(store::DEFAULT_KEY);
    let key_file = args.key_file.clone().unwrap_or(beside);
    let (_, key) = local::paths(Some(&store), Some(&key_file), Path::new(""));
    Location { store, key }
}

/// Names are what a manifest can write after `secret:` without quoting or ambiguity.
pub fn check_name(name: &str) -> Result<(), Error> {
    let ok = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-' | '/'));
    if ok {
        Ok(())
    } else {
        Err(Error::invalid(
            format!("invalid secret name `{}`", ui::sanitize(name)),
            "a name uses letters, digits, `_`, `.`, `-` and `/` (what a manifest can write after `secret:`)",
        ))
    }
}

fn refused(message: String, hint: impl Into<String>) -> Error {
    Error::refused(message, hint)
}

fn absent(loc: &Location, name: &str) -> Error {
    Error::Absent {
        name: name.to_owned(),
        store: loc.store.clone(),
    }
}

/// The masked form `get` prints: a few characters at each end of long values, none of
/// short ones, so that at most 3/8 of a value is shown and its length is not.
///
/// | characters | shown                 |
/// |------------|-----------------------|
/// | 16 or more | `abc***...xyz`        |
/// | 12 to 15   | `ab***...yz`          |
/// | 8 to 11    | `a***...z`            |
/// | fewer      | `***`                 |
pub fn masked(value: &str) -> String {
    let n = value.chars().count();
    let k = match n {
        0..=7 => return String::from("***"),
        8..=11 => 1,
        12..=15 => 2,
        _ => 3,
    };
    let head: String = value.chars().take(k).collect();
    let tail: String = value.chars().skip(n - k).collect();
    format!("{}***...{}", ui::sanitize(&head), ui::sanitize(&tail))
}

/// Opens the store for a change, under `lock`: its contents and the key new writes are
/// sealed with. With `create`, a missing store starts empty, and a missing key file too is
/// generated (the first `set` needs no setup).
fn open_for_write(
    loc: &Location,
    create: bool,
    _lock: &store::Lock,
) -> Result<(Key, Contents), Error> {
    remove_stale_key_temps(loc);
    if create && !loc.store.exists() {
        return match &loc.key {
            KeySource::File(key_path) if !key_path.exists() => {
                let key = Key::generate()?;
                key.create_file(key_path)?;
                ui::info(&format!(
                    "created a new key {} and store {} (keep the key safe: without it the store cannot be opened)",
                    key_path.display(),
                    loc.store.display()
                ));
                Ok((key, Contents::default()))
            }
            source => {
                let key = source.load()?;
                ui::info(&format!("created a new store {}", loc.store.display()));
                Ok((key, Contents::default()))
            }
        };
    }
    let opened = store::read_with(&loc.store, &loc.key)?;
    if opened.with_old_key {
        ui::info(&format!(
            "{} was still encrypted with the previous key (an interrupted rotate-key); writing it with the current key",
            loc.store.display()
        ));
    }
    Ok((opened.key, opened.contents))
}

/// Key files are written under the store's lock too, so its holder can remove the temp
/// files (with key material in them) of a killed `rotate-key` or first `set`.
fn remove_stale_key_temps(loc: &Location) {
    if let KeySource::File(key_path) = &loc.key {
        store::remove_stale_temps(key_path);
        store::remove_stale_temps(&store::old_key_path(key_path));
    }
}

fn init(loc: &Location) -> Result<i32, Error> {
    let lock = store::lock(&loc.store)?;
    remove_stale_key_temps(loc);
    let start_over =
        "move the existing files away first, or add secrets with `envrun secrets set NAME`";
    if loc.store.exists() {
        return Err(refused(
            format!("store {} already exists", loc.store.display()),
            start_over,
        ));
    }
    let key = match &loc.key {
        KeySource::File(path) => {
            if path.exists() {
                return Err(refused(
                    format!("key file {} already exists", path.display()),
                    start_over,
                ));
            }
            let key = Key::generate()?;
            key.create_file(path)?;
            ui::info(&format!(
                "created a new key {} (keep it safe: without it the store cannot be opened)",
                path.display()
            ));
            key
        }
        KeySource::Env => loc.key.load()?,
    };
    store::write(&loc.store, &key, &Contents::default(), &lock)?;
    ui::info(&format!("created an empty store {}", loc.store.display()));
    Ok(0)
}

fn set(loc: &Location, name: &str, arg_value: Option<String>) -> Result<i32, Error> {
    check_name(name)?;
    let value = match arg_value {
        Some(v) => {
            ui::warn(&format!(
                "the value of `{name}` was given on the command line: it is now in your shell history and was visible in the process list; pipe it on stdin or type it at the prompt instead"
            ));
            let value = Secret::from(v);
            if value.is_empty() {
                return Err(Error::invalid(
                    format!("the value of `{name}` is empty"),
                    "a secret needs a value; `envrun secrets delete NAME` removes one",
                ));
            }
            value
        }
        None if std::io::stdin().is_terminal() => prompt::read_hidden(
            &format!("Value for `{}` (input hidden): ", ui::sanitize(name)),
            MAX_VALUE as usize,
        )?,
        None => read_stdin_value()?,
    };
    if std::str::from_utf8(value.expose()).is_err() {
        return Err(StoreError::NotUtf8(name.to_owned()).into());
    }
    if value.expose().contains(&0) {
        return Err(Error::invalid(
            format!(
                "the value of `{name}` contains a NUL byte, which an environment variable cannot hold; nothing was stored"
            ),
            "remove the NUL bytes, or base64-encode binary values",
        ));
    }
    let lock = store::lock(&loc.store)?;
    let (key, mut contents) = open_for_write(loc, true, &lock)?;
    let previous = contents.set(name, value);
    store::write(&loc.store, &key, &contents, &lock)?;
    let what = match previous {
        Some(_) => format!("updated `{name}` in"),
        None => format!("added `{name}` to"),
    };
    ui::info(&format!("{what} {}", loc.store.display()));
    Ok(0)
}

/// Reads a value from stdin, removing one trailing newline (as `echo` adds).
fn read_stdin_value() -> Result<Secret, Error> {
    // Room for the largest accepted value up front, so reading never reallocates (which
    // would leave unwiped copies).
    let mut buf = Zeroizing::new(Vec::with_capacity(MAX_VALUE as usize + 1));
    std::io::stdin()
        .lock()
        .take(MAX_VALUE + 1)
        .read_to_end(&mut buf)
        .map_err(|e| Error::io("read the value from stdin", e))?;
    if buf.len() as u64 > MAX_VALUE {
        return Err(Error::invalid(
            format!("the value on stdin is larger than {MAX_VALUE} bytes"),
            "store a path to a file instead, or use `file:` in the manifest",
        ));
    }
    crate::secret::trim_one_newline(&mut buf);
    if buf.is_empty() {
        return Err(Error::invalid(
            "empty value on stdin",
            "pipe the value in, e.g. `printf %s \"$V\" | envrun secrets set NAME`",
        ));
    }
    Ok(Secret::from_slice(&buf))
}

fn get(loc: &Location, name: &str, reveal: bool) -> Result<i32, Error> {
    check_name(name)?;
    let opened = store::read_with(&loc.store, &loc.key)?;
    let value = opened
        .contents
        .secrets
        .get(name)
        .ok_or_else(|| absent(loc, name))?;
    if reveal {
        // The raw bytes alone, so `> file` and pipes get exactly the value; a newline only
        // for a person at a terminal (`"$(...)"` would strip it anyway).
        let newline = std::io::stdout().is_terminal();
        let mut out = Zeroizing::new(Vec::with_capacity(value.len() + 1));
        out.extend_from_slice(value.expose());
        if newline {
            out.push(b'\n');
        }
        return write_fd1(&out);
    }
    // The store holds only UTF-8 (checked when sealing and when parsing the JSON).
    let text = std::str::from_utf8(value.expose()).unwrap_or("");
    write_stdout(format!("{}\n", masked(text)).as_bytes())
}

/// Writes a value straight to file descriptor 1: std's stdout keeps a buffer for the life
/// of the process that would hold a copy of the value, unwiped.
fn write_fd1(mut bytes: &[u8]) -> Result<i32, Error> {
    let stdout = std::io::stdout();
    while !bytes.is_empty() {
        match nix::unistd::write(&stdout, bytes) {
            Ok(n) => bytes = &bytes[n..],
            Err(nix::errno::Errno::EINTR) => {}
            // A closed pipe (`get --reveal | head -c 3`) is not an error worth reporting.
            Err(nix::errno::Errno::EPIPE) => return Ok(0),
            Err(e) => return Err(Error::io("write to stdout", e.into())),
        }
    }
    Ok(0)
}

fn list(loc: &Location, json: bool, long: bool) -> Result<i32, Error> {
    let opened = store::read_with(&loc.store, &loc.key)?;
    let names: Vec<&String> = opened.contents.secrets.keys().collect();
    if long {
        return list_long(&opened.contents, json);
    }
    let out = if json {
        let mut s =
            serde_json::to_string(&names).map_err(|e| Error::io("encode JSON", e.into()))?;
        s.push('\n');
        s
    } else {
        names
            .iter()
            .map(|n| format!("{}\n", ui::sanitize(n)))
            .collect()
    };
    write_stdout(out.as_bytes())
}

/// `list --long`: each name with when it was last set and its age (never a value).
fn list_long(contents: &Contents, json: bool) -> Result<i32, Error> {
    #[derive(serde::Serialize)]
    struct Entry<'a> {
        name: &'a str,
        /// RFC 3339, or `null` for a secret set before envrun recorded times.
        updated: Option<String>,
        age_seconds: Option<u64>,
    }
    let now = std::time::SystemTime::now();
    let entries: Vec<Entry> = contents
        .secrets
        .keys()
        .map(|name| {
            let t = contents.updated.get(name);
            Entry {
                name,
                updated: t.map(|t| humantime::format_rfc3339_seconds(*t).to_string()),
                age_seconds: t.map(|t| now.duration_since(*t).unwrap_or_default().as_secs()),
            }
        })
        .collect();
    if json {
        let mut s =
            serde_json::to_string(&entries).map_err(|e| Error::io("encode JSON", e.into()))?;
        s.push('\n');
        return write_stdout(s.as_bytes());
    }
    let width = entries
        .iter()
        .map(|e| e.name.len())
        .chain(std::iter::once(4))
        .max()
        .unwrap_or(4);
    let mut out = format!("{:width$}  {:20}  AGE\n", "NAME", "LAST SET");
    for e in &entries {
        let (when, age) = match (&e.updated, e.age_seconds) {
            (Some(t), Some(a)) => (t.clone(), age(a)),
            _ => (String::from("-"), String::from("(not recorded)")),
        };
        out.push_str(&format!(
            "{:width$}  {when:20}  {age}\n",
            ui::sanitize(e.name)
        ));
    }
    write_stdout(out.as_bytes())
}

/// An age in the largest whole unit: `3d`, `5h`, `12m`, `40s`.
fn age(secs: u64) -> String {
    match secs {
        86_400.. => format!("{}d", secs / 86_400),
        3600.. => format!("{}h", secs / 3600),
        60.. => format!("{}m", secs / 60),
        _ => format!("{secs}s"),
    }
}

fn exists(loc: &Location, name: &str) -> Result<i32, Error> {
    check_name(name)?;
    let opened = store::read_with(&loc.store, &loc.key)?;
    Ok(if opened.contents.secrets.contains_key(name) {
        0
    } else {
        EXIT_ABSENT
    })
}

fn delete(loc: &Location, name: &str) -> Result<i32, Error> {
    check_name(name)?;
    let lock = store::lock(&loc.store)?;
    let (key, mut contents) = open_for_write(loc, false, &lock)?;
    if contents.remove(name).is_none() {
        return Err(absent(loc, name));
    }
    store::write(&loc.store, &key, &contents, &lock)?;
    ui::info(&format!("deleted `{name}` from {}", loc.store.display()));
    Ok(0)
}

fn import(loc: &Location, prefix: &str) -> Result<i32, Error> {
    if prefix.is_empty() {
        return Err(Error::Usage(String::from(
            "--prefix must not be empty (that would import the whole environment)",
        )));
    }
    // All or nothing: every matching variable is checked before the store is touched.
    let mut found: Vec<(String, Secret)> = Vec::new();
    for (var, value) in std::env::vars_os() {
        let Some(var) = var.to_str() else { continue };
        let Some(name) = var.strip_prefix(prefix) else {
            continue;
        };
        // The store's own key is never a secret to store in it.
        if var == "ENVRUN_KEY" {
            continue;
        }
        let fix = "rename or unset the variable, or choose another --prefix";
        if check_name(name).is_err() {
            return Err(refused(
                format!(
                    "cannot import ${}: `{}` is not a valid secret name (letters, digits, `_`, `.`, `-`, `/`); nothing was imported",
                    ui::sanitize(var),
                    ui::sanitize(name)
                ),
                fix,
            ));
        }
        let value = Secret::from_vec(value.into_encoded_bytes());
        if value.is_empty() || std::str::from_utf8(value.expose()).is_err() {
            return Err(refused(
                format!(
                    "cannot import ${}: its value is empty or not UTF-8; nothing was imported",
                    ui::sanitize(var)
                ),
                fix,
            ));
        }
        found.push((name.to_owned(), value));
    }
    if found.is_empty() {
        ui::info(&format!(
            "no variables starting with `{}` in the environment; nothing imported",
            ui::sanitize(prefix)
        ));
        return Ok(0);
    }
    let lock = store::lock(&loc.store)?;
    let (key, mut contents) = open_for_write(loc, true, &lock)?;
    let (mut added, mut updated, mut unchanged) = (0, 0, 0);
    for (name, value) in found {
        // An unchanged value keeps its set time: rotation age is about the value.
        match contents.secrets.get(&name) {
            None => added += 1,
            Some(old) if old.expose() == value.expose() => {
                unchanged += 1;
                continue;
            }
            Some(_) => updated += 1,
        }
        contents.set(&name, value);
    }
    if added + updated > 0 {
        store::write(&loc.store, &key, &contents, &lock)?;
    }
    ui::info(&format!(
        "imported from ${}*: {added} added, {updated} updated, {unchanged} unchanged in {}",
        ui::sanitize(prefix),
        loc.store.display()
    ));
    Ok(0)
}

fn backup(loc: &Location, dest: &Path, force: bool) -> Result<i32, Error> {
    if dest.is_dir() {
        return Err(Error::Usage(format!(
            "backup destination {} is a directory; give a file name",
            dest.display()
        )));
    }
    refuse_store_files(loc, dest)?;
    // One read: the bytes that are checked are the bytes that are copied.
    let bytes = store::read_raw(&loc.store)?;
    let contents = store::open_with(&bytes, &loc.key, &loc.store)?.contents;
    let is_link = std::fs::symlink_metadata(dest).is_ok_and(|m| m.file_type().is_symlink());
    // With --force a symlink is replaced by the backup (the link itself, never its target).
    let mode = if force {
        Replace::OverwriteLink
    } else {
        Replace::NoClobber
    };
    match store::replace_file(dest, &bytes, mode) {
        Err(StoreError::File(FileError::Exists(_))) if is_link => {
            return Err(refused(
                format!(
                    "{} is a symbolic link; the backup was not written through it",
                    dest.display()
                ),
                "give the path of a new file, or pass --force to replace the link itself (its target is left alone)",
            ));
        }
        Err(StoreError::File(FileError::Exists(_))) => {
            return Err(refused(
                format!("{} already exists", dest.display()),
                "pass --force to replace it, or choose another path",
            ));
        }
        other => other?,
    }
    ui::info(&format!(
        "backed up {} secrets from {} to {} (encrypted; the key is not in it: keep the key too)",
        contents.secrets.len(),
        loc.store.display(),
        dest.display()
    ));
    Ok(0)
}

/// Refuses, even with --force, a backup destination that is the store, its key, the previous
/// key or the lock file: compared by device and inode (and through a symlink), not by name,
/// so `./secrets.key`, a hard link or a symlink to the key are caught too.
fn refuse_store_files(loc: &Location, dest: &Path) -> Result<(), Error> {
    let ids = |p: &Path| {
        [std::fs::metadata(p), std::fs::symlink_metadata(p)]
            .into_iter()
            .flatten()
            .map(|m| fileio::identity(&m))
            .collect::<Vec<_>>()
    };
    let dest_ids = ids(dest);
    if dest_ids.is_empty() {
        return Ok(());
    }
    let mut protected = vec![
        ("the store", loc.store.clone()),
        ("the store's lock file", store::lock_path(&loc.store)),
    ];
    if let KeySource::File(key) = &loc.key {
        protected.push(("the store's key file", key.clone()));
        protected.push((
            "the store's previous key (KEY.old)",
            store::old_key_path(key),
        ));
    }
    for (what, path) in protected {
        if ids(&path).iter().any(|id| dest_ids.contains(id)) {
            return Err(refused(
                format!(
                    "{} is {what} ({}); a backup there would destroy it",
                    dest.display(),
                    path.display()
                ),
                "write the backup to a new file, e.g. `envrun secrets backup secrets.backup`",
            ));
        }
    }
    Ok(())
}

fn restore(loc: &Location, src: &Path) -> Result<i32, Error> {
    let (_, bytes) =
        fileio::read_regular(src, store::MAX_STORE, fileio::Follow::Yes).map_err(|e| match e {
            FileError::NotFound(_) => Error::invalid(
                format!("cannot read backup {}: not found", src.display()),
                "give the path of a file written by `envrun secrets backup`",
            ),
            e => StoreError::File(e).into(),
        })?;
    let lock = store::lock(&loc.store)?;
    let store::Opened {
        key,
        contents,
        with_old_key: with_old,
    } = match store::open_with(&bytes, &loc.key, src) {
        Ok(opened) => opened,
        Err(StoreError::Decrypt(_)) => {
            return Err(refused(
                format!(
                    "backup {} does not open with the current key (it was made with another key, or it is damaged); the store was not changed",
                    src.display()
                ),
                "to restore it under the key it was made with, pass that key with --key-file or $ENVRUN_KEY",
            ));
        }
        Err(e) => return Err(e.into()),
    };
    if with_old {
        // A backup from before the last rotate-key: bring it under the current key.
        store::write(&loc.store, &key, &contents, &lock)?;
    } else {
        store::write_sealed(&loc.store, &bytes, &lock)?;
    }
    ui::info(&format!(
        "restored {} secrets from {} into {}{}",
        contents.secrets.len(),
        src.display(),
        loc.store.display(),
        if with_old {
            " (re-encrypted from the previous key to the current one)"
        } else {
            ""
        }
    ));
    Ok(0)
}

fn key_file_for_rotation(loc: &Location) -> Result<&Path, Error> {
    match &loc.key {
        KeySource::File(path) => Ok(path),
        KeySource::Env => Err(refused(
            String::from(
                "rotate-key cannot update $ENVRUN_KEY: the key comes from the environment",
            ),
            "write the key to a file (0600), unset ENVRUN_KEY and pass --key-file; after rotating, put the new key wherever $ENVRUN_KEY comes from",
        )),
    }
}

fn rotate_key(loc: &Location) -> Result<i32, Error> {
    let key_path = key_file_for_rotation(loc)?;
    let old_path = store::old_key_path(key_path);
    let lock = store::lock(&loc.store)?;
    remove_stale_key_temps(loc);
    let bytes = store::read_raw(&loc.store)?;
    // The order of the three writes keeps the store readable with `KEY` or `KEY.old` at
    // every instant, whatever the moment a crash happens:
    //   1. KEY.old := the key the store is encrypted with   (store opens with KEY.old)
    //   2. KEY     := the new key                            (store still opens with KEY.old)
    //   3. store   := re-encrypted under the new key         (store opens with KEY)
    // Each write is a complete file renamed into place, so no step leaves a partial file.
    // Readers try KEY.old when KEY fails, so jobs starting between 2 and 3 still run.
    let opened = store::open_with(&bytes, &loc.key, &loc.store)?;
    if !opened.with_old_key {
        if old_path.exists() {
            return Err(refused(
                format!(
                    "{} exists from an earlier rotation; rotating again would overwrite it",
                    old_path.display()
                ),
                "delete it with `envrun secrets rotate-key --discard-old` (keep a copy first if backups older than that rotation still matter), then rotate again",
            ));
        }
        opened.key.write_file(&old_path, Replace::NoClobber)?; // step 1
    }
    // Otherwise step 2 of an earlier rotation happened but not step 3: the store is still
    // under KEY.old, which stays; finish with a fresh key.
    let contents = opened.contents;
    let new = Key::generate()?;
    new.write_file(key_path, Replace::Overwrite)?; // step 2
    store::write(&loc.store, &new, &contents, &lock)?; // step 3
    ui::info(&format!(
        "rotated the key: {} is new and {} is re-encrypted with it; the previous key is in {} (backups made before now need it) until `envrun secrets rotate-key --discard-old`",
        key_path.display(),
        loc.store.display(),
        old_path.display()
    ));
    Ok(0)
}

fn discard_old_key(loc: &Location) -> Result<i32, Error> {
    let key_path = key_file_for_rotation(loc)?;
    let old_path = store::old_key_path(key_path);
    let _lock = store::lock(&loc.store)?;
    if !old_path.exists() {
        ui::info(&format!(
            "no previous key {} to discard",
            old_path.display()
        ));
        return Ok(0);
    }
    // Never delete the only key that opens the store.
    let current = Key::load(key_path)?;
    match store::read(&loc.store, &current) {
        Ok(_) => {}
        Err(StoreError::Decrypt(_)) => {
            return Err(refused(
                format!(
                    "{} does not open with {}; {} may be the key that does, so it was kept",
                    loc.store.display(),
                    key_path.display(),
                    old_path.display()
                ),
                "if a rotation was interrupted, run `envrun secrets rotate-key` to finish it",
            ));
        }
        Err(e) => return Err(e.into()),
    }
    store::remove_file(&old_path)?;
    ui::info(&format!("deleted the previous key {}", old_path.display()));
    Ok(0)
}

fn generate(
    loc: &Location,
    name: &str,
    length: usize,
    charset: Charset,
    force: bool,
) -> Result<i32, Error> {
    check_name(name)?;
    let value = generate::generate(length, charset).map_err(|e| Error::io("read the OS RNG", e))?;
    let lock = store::lock(&loc.store)?;
    let (key, mut contents) = open_for_write(loc, true, &lock)?;
    if contents.secrets.contains_key(name) && !force {
        return Err(refused(
            format!("secret `{name}` already exists"),
            "pass --force to replace it with a new random value",
        ));
    }
    contents.set(name, value);
    store::write(&loc.store, &key, &contents, &lock)?;
    let charset = format!("{charset:?}").to_lowercase();
    ui::info(&format!(
        "generated `{name}`: {length} random characters ({charset}) in {}",
        loc.store.display()
    ));
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::masked;

    #[test]
    fn masked_shows_at_most_three_eighths_and_never_the_length() {
        assert_eq!(masked("1234567"), "***");
        assert_eq!(masked("12345678"), "1***...8");
        assert_eq!(masked("12345678901"), "1***...1");
        assert_eq!(masked("123456789012"), "12***...12");
        assert_eq!(masked("123456789012345"), "12***...45");
        assert_eq!(masked("1234567890abcdef"), "123***...def");
        assert_eq!(masked("123-a-very-long-token-xyz"), "123***...xyz");
        // The examples of docs/secrets.md.
        assert_eq!(masked("sk_live_4eC39HqLyjWDarjtT1zdp7dc"), "sk_***...7dc");
        assert_eq!(masked("correcthorse"), "co***...se");
        assert_eq!(masked("hunter22"), "h***...2");
        assert_eq!(masked("123456"), "***");
        assert_eq!(
            masked("\u{e9}\u{e9}\u{e9}45678\u{fc}\u{fc}\u{fc}\u{fc}\u{fc}\u{fc}\u{fc}\u{fc}"),
            "\u{e9}\u{e9}\u{e9}***...\u{fc}\u{fc}\u{fc}"
        );
        assert_eq!(masked("\x1b[31m-12345678"), "\\u{1b}[***...78");
    }
}
