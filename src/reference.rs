//! Reference syntax: what a manifest value (or an inherited environment value) asks for.
//!
//! `secret[@BACKEND]:KEY[?param=value&...][#FIELD]`, `env:VAR`, `file:PATH`, a plain
//! literal, or a template with `${...}` references inside a longer string (`$$` is a literal
//! `$`). Parsing is pure: nothing is fetched or read here.

use std::fmt;

/// One reference to a value held somewhere else.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reference {
    Secret(SecretRef),
    Env(String),
    File(String),
}

/// `secret[@BACKEND]:KEY[?params][#FIELD]`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SecretRef {
    /// `None` means the default backend (`secrets:` in the manifest).
    pub backend: Option<String>,
    pub key: String,
    /// Backend-specific parameters, in the order written; each backend validates its own.
    pub params: Vec<(String, String)>,
    pub field: Option<String>,
}

/// A manifest value: literal text and references, joined in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Part {
    Literal(String),
    Ref(Reference),
}

/// Why a value could not be parsed; the message quotes the reference, never a resolved value.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SyntaxError {
    #[error("`{0}` has an empty key")]
    EmptyKey(String),
    #[error("`{0}` has an empty backend name after `@`")]
    EmptyBackend(String),
    #[error("`{0}` has no `:` after the backend name")]
    MissingColon(String),
    #[error("`{0}` has an empty field after `#`")]
    EmptyField(String),
    #[error("`{reference}` has a malformed parameter `{param}` (expected name=value)")]
    BadParam { reference: String, param: String },
    #[error("`{reference}` gives parameter `{param}` twice")]
    DuplicateParam { reference: String, param: String },
    #[error("`${{` at byte {0} is never closed with `}}`")]
    Unclosed(usize),
    #[error(
        "`${{{0}}}` is not a reference (use `${{env:{0}}}`, `${{secret:{0}}}`, or `$${{` for a literal `${{`)"
    )]
    NotAReference(String),
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reference::Secret(s) => s.fmt(f),
            Reference::Env(v) => write!(f, "env:{v}"),
            Reference::File(p) => write!(f, "file:{p}"),
        }
    }
}

impl fmt::Display for SecretRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("secret")?;
        if let Some(b) = &self.backend {
            write!(f, "@{b}")?;
        }
        write!(f, ":{}", self.key)?;
        for (i, (k, v)) in self.params.iter().enumerate() {
            write!(f, "{}{k}={v}", if i == 0 { '?' } else { '&' })?;
        }
        if let Some(field) = &self.field {
            write!(f, "#{field}")?;
        }
        Ok(())
    }
}

/// Parses `s` if the whole of it is one reference (`secret:`, `secret@`, `env:`, `file:`).
pub fn parse_reference(s: &str) -> Option<Result<Reference, SyntaxError>> {
    if s.starts_with("secret:") || s.starts_with("secret@") {
        Some(parse_secret(s).map(Reference::Secret))
    } else if let Some(var) = s.strip_prefix("env:") {
        Some(if var.is_empty() {
            Err(SyntaxError::EmptyKey(s.to_owned()))
        } else {
            Ok(Reference::Env(var.to_owned()))
        })
    } else {
        s.strip_prefix("file:").map(|path| {
            if path.is_empty() {
                Err(SyntaxError::EmptyKey(s.to_owned()))
            } else {
                Ok(Reference::File(path.to_owned()))
            }
        })
    }
}

/// Parses a manifest value: a whole reference, or a template of literals and `${...}`.
pub fn parse_value(s: &str) -> Result<Vec<Part>, SyntaxError> {
    if let Some(r) = parse_reference(s) {
        return Ok(vec![Part::Ref(r?)]);
    }
    let mut parts = Vec::new();
    let mut literal = String::new();
    let mut rest = s;
    let mut offset = 0;
    while let Some(i) = rest.find('$') {
        literal.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            literal.push('$');
            offset += i + 2;
            rest = tail;
        } else if let Some(inner) = after.strip_prefix('{') {
            let end = inner.find('}').ok_or(SyntaxError::Unclosed(offset + i))?;
            let body = &inner[..end];
            let reference = parse_reference(body)
                .ok_or_else(|| SyntaxError::NotAReference(body.to_owned()))??;
            if !literal.is_empty() {
                parts.push(Part::Literal(std::mem::take(&mut literal)));
            }
            parts.push(Part::Ref(reference));
            offset += i + 2 + end + 1;
            rest = &inner[end + 1..];
        } else {
            // A lone `$` (as in `$HOME` or a price) stays as written.
            literal.push('$');
            offset += i + 1;
            rest = after;
        }
    }
    literal.push_str(rest);
    if !literal.is_empty() || parts.is_empty() {
        parts.push(Part::Literal(literal));
    }
    Ok(parts)
}

fn parse_secret(s: &str) -> Result<SecretRef, SyntaxError> {
    let body = &s["secret".len()..];
    let (backend, rest) = if let Some(b) = body.strip_prefix('@') {
        let colon = b
            .find(':')
            .ok_or_else(|| SyntaxError::MissingColon(s.to_owned()))?;
        if colon == 0 {
            return Err(SyntaxError::EmptyBackend(s.to_owned()));
        }
        (Some(b[..colon].to_owned()), &b[colon + 1..])
    } else {
        (None, &body[1..])
    };
    // As in a URL: the field comes last, the parameters before it.
    let (rest, field) = match rest.split_once('#') {
        Some((_, "")) => return Err(SyntaxError::EmptyField(s.to_owned())),
        Some((r, f)) => (r, Some(f.to_owned())),
        None => (rest, None),
    };
    let (key, query) = match rest.split_once('?') {
        Some((k, q)) => (k, Some(q)),
        None => (rest, None),
    };
    if key.is_empty() {
        return Err(SyntaxError::EmptyKey(s.to_owned()));
    }
    let mut params: Vec<(String, String)> = Vec::new();
    for param in query.into_iter().flat_map(|q| q.split('&')) {
        let bad = || SyntaxError::BadParam {
            reference: s.to_owned(),
            param: param.to_owned(),
        };
        let (name, value) = param.split_once('=').ok_or_else(bad)?;
        if name.is_empty() || value.is_empty() {
            return Err(bad());
        }
        if params.iter().any(|(n, _)| n == name) {
            return Err(SyntaxError::DuplicateParam {
                reference: s.to_owned(),
                param: name.to_owned(),
            });
        }
        params.push((name.to_owned(), value.to_owned()));
    }
    Ok(SecretRef {
        backend,
        key: key.to_owned(),
        params,
        field,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret(s: &str) -> SecretRef {
        match parse_reference(s) {
            Some(Ok(Reference::Secret(r))) => r,
            other => panic!("{s}: {other:?}"),
        }
    }

    #[test]
    fn full_form_round_trips() {
        let r = secret("secret@prod:apps/billing?version=3&x=y#password");
        assert_eq!(r.backend.as_deref(), Some("prod"));
        assert_eq!(r.key, "apps/billing");
        assert_eq!(
            r.params,
            vec![("version".into(), "3".into()), ("x".into(), "y".into())]
        );
        assert_eq!(r.field.as_deref(), Some("password"));
        assert_eq!(
            r.to_string(),
            "secret@prod:apps/billing?version=3&x=y#password"
        );
    }

    #[test]
    fn keys_keep_colons_and_slashes() {
        let arn = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:db-AbCdEf";
        let r = secret(&format!("secret:{arn}#user"));
        assert_eq!(r.backend, None);
        assert_eq!(r.key, arn);
        assert_eq!(r.field.as_deref(), Some("user"));
    }

    #[test]
    fn malformed_references_are_errors() {
        for bad in [
            "secret:",
            "secret@:x",
            "secret@prod",
            "secret:x#",
            "secret:x?v",
            "secret:x?v=1&v=2",
            "env:",
            "file:",
        ] {
            assert!(matches!(parse_reference(bad), Some(Err(_))), "{bad}");
        }
    }

    #[test]
    fn templates() {
        let parts = parse_value("postgres://app:${secret:DB}@db/$$x$y").unwrap();
        assert_eq!(
            parts,
            vec![
                Part::Literal("postgres://app:".into()),
                Part::Ref(Reference::Secret(secret("secret:DB"))),
                Part::Literal("@db/$x$y".into()),
            ]
        );
        assert_eq!(
            parse_value("plain").unwrap(),
            vec![Part::Literal("plain".into())]
        );
        assert_eq!(parse_value("").unwrap(), vec![Part::Literal(String::new())]);
        assert_eq!(parse_value("a${x").unwrap_err(), SyntaxError::Unclosed(1));
        assert!(matches!(
            parse_value("${HOME}"),
            Err(SyntaxError::NotAReference(_))
        ));
    }
}
