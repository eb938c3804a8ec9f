//! Manifest errors in the user's terms: what was written wrong, where exactly, and how to
//! fix it.
//!
//! The YAML library reports some mistakes at the start of the enclosing mapping (serde
//! buffers a `secrets:` entry to read its `type:` first, and forgets positions) and words
//! others for Rust programmers ("use Option<String>", "set DuplicateKeyPolicy in Options").
//! [`explain`] rewrites each kind of error it knows, and finds the exact line and column of
//! an offending key from the document's own events ([`keys`]); anything it does not know is
//! reduced to its position and a plain sentence, never the library's wording.

use serde_saphyr::Error as YamlError;
use serde_saphyr::granit_parser::{Event, Parser};

/// A mapping key as written, with where it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyAt {
    pub name: String,
    /// The keys (and `[index]`es) that lead to it, e.g. `secrets` or `backends.prod`.
    pub parent: String,
    pub line: u64,
    pub column: u64,
}

/// Every string key of every mapping of `text`, in document order. Empty if the text does
/// not parse (the parse error is reported instead).
pub fn keys(text: &str) -> Vec<KeyAt> {
    enum Frame {
        Map {
            path: String,
            expect_key: bool,
            key: Option<String>,
        },
        Seq {
            path: String,
            index: usize,
        },
    }
    // The path a child node of the innermost frame gets; advances that frame past the node.
    fn child_path(stack: &mut [Frame]) -> String {
        match stack.last_mut() {
            None => String::new(),
            Some(Frame::Map {
                path,
                expect_key,
                key,
            }) => {
                let p = if *expect_key {
                    // A mapping or sequence used as a key: not a name a user can misspell.
                    format!("{path}.?")
                } else {
                    join(path, key.as_deref().unwrap_or("?"))
                };
                *expect_key = !*expect_key;
                p
            }
            Some(Frame::Seq { path, index }) => {
                let p = format!("{path}[{index}]");
                *index += 1;
                p
            }
        }
    }
    let mut out = Vec::new();
    let mut stack: Vec<Frame> = Vec::new();
    for item in Parser::new_from_str(text) {
        let Ok((event, span)) = item else {
            return Vec::new();
        };
        match event {
            Event::MappingStart(..) => {
                let path = child_path(&mut stack);
                stack.push(Frame::Map {
                    path,
                    expect_key: true,
                    key: None,
                });
            }
            Event::SequenceStart(..) => {
                let path = child_path(&mut stack);
                stack.push(Frame::Seq { path, index: 0 });
            }
            Event::MappingEnd | Event::SequenceEnd => {
                stack.pop();
            }
            Event::Scalar(value, ..) => {
                if let Some(Frame::Map {
                    path,
                    expect_key: true,
                    key,
                }) = stack.last_mut()
                {
                    out.push(KeyAt {
                        name: value.to_string(),
                        parent: path.clone(),
                        line: span.start.line() as u64,
                        column: span.start.col() as u64 + 1,
                    });
                    *key = Some(value.to_string());
                }
                child_path(&mut stack);
            }
            Event::Alias(..) => {
                child_path(&mut stack);
            }
            _ => {}
        }
    }
    out
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    }
}

/// The closest of `candidates` to `word`, if it is close enough to be a likely typo.
pub fn did_you_mean<'a>(word: &str, candidates: &[&'a str]) -> Option<&'a str> {
    candidates
        .iter()
        .map(|c| (strsim::jaro_winkler(word, c), *c))
        .filter(|(score, _)| *score >= 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, c)| c)
}

/// `line L column C: what is wrong and how to fix it`, for a YAML or schema error.
pub fn explain(e: &YamlError, text: &str) -> String {
    let at = e.location().map(|l| (l.line(), l.column()));
    let position = |at: Option<(u64, u64)>| match at {
        Some((line, column)) if line > 0 => format!("line {line} column {column}: "),
        _ => String::new(),
    };
    // The first key named `name` at or after the (coarse) position the library gave.
    let find_key = |name: &str| {
        let from = at.unwrap_or((0, 0));
        keys(text)
            .into_iter()
            .find(|k| k.name == name && (k.line, k.column) >= from)
    };
    let (at, message) = match e {
        YamlError::SerdeUnknownField {
            field, expected, ..
        } => {
            let key = find_key(field);
            let under = match key.as_ref().map(|k| k.parent.as_str()) {
                Some("") | None => String::from("at the top level"),
                Some(parent) => format!("under `{parent}`"),
            };
            let suggestion = match did_you_mean(field, expected) {
                Some(s) => format!("; did you mean `{s}`?"),
                None => String::new(),
            };
            (
                key.map(|k| (k.line, k.column)).or(at),
                format!(
                    "unknown key `{field}` {under}{suggestion} (allowed here: {})",
                    expected.join(", ")
                ),
            )
        }
        YamlError::SerdeUnknownVariant {
            variant, expected, ..
        } => {
            let suggestion = match did_you_mean(variant, expected) {
                Some(s) => format!("; did you mean `{s}`?"),
                None => String::new(),
            };
            (
                at,
                format!(
                    "unknown type `{variant}`{suggestion} (one of: {})",
                    expected.join(", ")
                ),
            )
        }
        YamlError::SerdeMissingField { field, .. } => (
            at,
            format!("`{field}:` is missing here; add it (see `man envrun` for the keys)"),
        ),
        YamlError::DuplicateMappingKey { key, .. } => (
            at,
            match key {
                Some(k) => format!("key `{k}` appears twice in the same mapping; keep one"),
                None => String::from("a key appears twice in the same mapping; keep one"),
            },
        ),
        YamlError::NullIntoString { .. } => (
            at,
            String::from("a value is missing after `:`; write one, or `\"\"` for an empty string"),
        ),
        YamlError::Unexpected { expected, .. } => (
            at,
            match *expected {
                "string scalar" => String::from(
                    "expected one value (text or a number) here, not a list or a mapping",
                ),
                "mapping start" => String::from("expected `key: value` entries here"),
                "sequence start" => String::from("expected a list (`- item` lines) here"),
                other => format!("expected {}", plain(other)),
            },
        ),
        YamlError::SerdeInvalidType {
            unexpected,
            expected,
            ..
        } => (
            at,
            format!("found {unexpected}, expected {}", plain(expected)),
        ),
        YamlError::SerdeInvalidValue {
            unexpected,
            expected,
            ..
        } => (
            at,
            format!("found {unexpected}, expected {}", plain(expected)),
        ),
        YamlError::Budget { .. }
        | YamlError::AliasReplayLimitExceeded { .. }
        | YamlError::AliasExpansionLimitExceeded { .. }
        | YamlError::AliasReplayStackDepthExceeded { .. }
        | YamlError::AliasReplayCounterOverflow { .. } => (
            at,
            String::from(
                "the manifest is too large or nests or repeats aliases (`*name`) too much; write the values out",
            ),
        ),
        YamlError::UnknownAnchor { .. } => (
            at,
            String::from("an alias (`*name`) refers to no anchor (`&name`) defined before it"),
        ),
        YamlError::MultipleDocuments { .. } => (
            at,
            String::from("the manifest holds several YAML documents (`---`); keep one"),
        ),
        // serde's own message for a key given twice in a struct it buffered first.
        YamlError::Message { msg, .. } if msg.starts_with("duplicate field `") => {
            let field = msg["duplicate field `".len()..].trim_end_matches('`');
            let from = at.unwrap_or((0, 0));
            let all = keys(text);
            let mut same = all
                .iter()
                .filter(|k| k.name == field && (k.line, k.column) >= from);
            let first = same.next();
            let second = first.and_then(|f| same.find(|k| k.parent == f.parent));
            let under = match first.map(|k| k.parent.as_str()) {
                Some("") => String::from(" at the top level"),
                None => String::new(),
                Some(parent) => format!(" under `{parent}`"),
            };
            (
                second.map(|k| (k.line, k.column)).or(at),
                format!("key `{field}` appears twice{under}; keep one"),
            )
        }
        other => (at, library_message(other)),
    };
    format!("{}{message}", position(at))
}

/// The library's own message, first line, without its position; reduced to a plain sentence
/// if it still speaks of Rust types or library settings.
fn library_message(e: &YamlError) -> String {
    let text = e.to_string();
    let text = text.strip_prefix("error: ").unwrap_or(&text);
    let text = text.lines().next().unwrap_or_default();
    let text = text.rfind(" at line ").map_or(text, |i| &text[..i]);
    if is_internal(text) {
        String::from("this is not valid here (check the indentation and the value's type)")
    } else {
        text.to_owned()
    }
}

/// An `expected ...` phrase from serde, with Rust's names for types made plain.
fn plain(expected: &str) -> String {
    if is_internal(expected) {
        String::from("another kind of value")
    } else {
        expected.to_owned()
    }
}

/// Words that belong to Rust or to the YAML library, never to a manifest's author.
pub const INTERNAL_WORDS: &[&str] = &[
    "Option<",
    "DuplicateKeyPolicy",
    "Options",
    "untagged",
    "enum ",
    "struct ",
    "AliasAnchorRatio",
    "budget",
    "Budget",
    "serde",
    "saphyr",
    "Vec<",
    "String",
    "PathBuf",
    "variant",
    "internal",
];

fn is_internal(text: &str) -> bool {
    INTERNAL_WORDS.iter().any(|w| text.contains(w))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_have_exact_positions_and_paths() {
        let k = keys("secrets: {type: local, bogus: 1}\nbackends:\n  p:\n    prefx: A\n");
        let find = |n: &str| k.iter().find(|k| k.name == n).unwrap();
        assert_eq!((find("bogus").line, find("bogus").column), (1, 24));
        assert_eq!(find("bogus").parent, "secrets");
        assert_eq!((find("prefx").line, find("prefx").column), (4, 5));
        assert_eq!(find("prefx").parent, "backends.p");
        let k = keys("a:\n  - path: x\n    requird: false\n");
        let r = k.iter().find(|k| k.name == "requird").unwrap();
        assert_eq!((r.parent.as_str(), r.line, r.column), ("a[0]", 3, 5));
    }

    #[test]
    fn suggestions_only_for_close_words() {
        assert_eq!(
            did_you_mean("requird", &["path", "required"]),
            Some("required")
        );
        assert_eq!(did_you_mean("zzz", &["path", "required"]), None);
    }
}
