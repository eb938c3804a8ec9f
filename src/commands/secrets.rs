//! `envrun secrets`: managing the local encrypted store from the command line.
//!
//! Store and key paths: `-f/--file` (or `$ENVRUN_STORE`, default `./secrets.json.enc`) and
//! `--key-file` (or `$ENVRUN_KEY_FILE`, default `secrets.key` beside the store);
//! `$ENVRUN_KEY` (base64) takes precedence over any key file.

use std::io::Read;
use std::path::{Path, PathBuf};

use zeroize::Zeroizing;

use crate::backend::local::{self, KeySource};
use crate::cli::{SecretsArgs, SecretsCommand, StoreArgs};
use crate::error::Error;
use crate::secret::Secret;
use crate::store::{self, Contents, Key};
use crate::ui;

/// Largest value `set` accepts from stdin.
const MAX_VALUE: u64 = 1 << 20;

pub fn run(args: SecretsArgs) -> Result<i32, Error> {
    let (store_path, key_source) = paths(&args.store);
    match args.command {
        SecretsCommand::Set { name } => set(&store_path, &key_source, &name),
        SecretsCommand::List => {
            let key = local::load_key(&key_source)?;
            let contents = store::read(&store_path, &key)?;
            let mut out = String::new();
            for name in contents.secrets.keys() {
                out.push_str(&ui::sanitize(name));
                out.push('\n');
            }
            print!("{out}");
            Ok(0)
        }
    }
}

fn paths(args: &StoreArgs) -> (PathBuf, KeySource) {
    let store = args
        .file
        .clone()
        .unwrap_or_else(|| PathBuf::from(store::DEFAULT_STORE));
    let beside = store.with_file_name(store::DEFAULT_KEY);
    let key_file = args.key_file.clone().unwrap_or(beside);
    let (_, key) = local::paths(Some(&store), Some(&key_file), Path::new(""));
    (store, key)
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
        Err(Error::Usage(format!(
            "invalid secret name `{}`: use letters, digits, `_`, `.`, `-` and `/`",
            ui::sanitize(name)
        )))
    }
}

fn set(store_path: &Path, key_source: &KeySource, name: &str) -> Result<i32, Error> {
    check_name(name)?;
    let value = read_stdin_value()?;
    let lock = store::lock(store_path)?;
    let (key, mut contents) = open_or_create(store_path, key_source)?;
    contents.secrets.insert(name.to_owned(), value);
    store::write(store_path, &key, &contents, &lock)?;
    ui::info(&format!("stored `{name}` in {}", store_path.display()));
    Ok(0)
}

/// Opens the store, or creates a key and an empty store when neither exists.
fn open_or_create(store_path: &Path, key_source: &KeySource) -> Result<(Key, Contents), Error> {
    let store_exists = store_path.exists();
    match (key_source, store_exists) {
        (KeySource::File(key_path), false) if !key_path.exists() => {
            let key = Key::generate().map_err(|e| Error::io("generate a key", e))?;
            key.create_file(key_path)?;
            ui::info(&format!(
                "created a new key {} and store {} (keep the key safe: without it the store cannot be opened)",
                key_path.display(),
                store_path.display()
            ));
            Ok((key, Contents::default()))
        }
        (_, false) => Ok((local::load_key(key_source)?, Contents::default())),
        (_, true) => {
            let key = local::load_key(key_source)?;
            let contents = store::read(store_path, &key)?;
            Ok((key, contents))
        }
    }
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
        return Err(Error::Usage(format!(
            "the value is larger than {MAX_VALUE} bytes"
        )));
    }
    if buf.ends_with(b"\n") {
        buf.pop();
        if buf.ends_with(b"\r") {
            buf.pop();
        }
    }
    if buf.is_empty() {
        return Err(Error::Usage(String::from(
            "empty value on stdin: pipe the value in, e.g. `printf %s \"$V\" | envrun secrets set NAME`",
        )));
    }
    Ok(Secret::from_slice(&buf))
}
