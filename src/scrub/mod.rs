//! The streaming scrubber: masks every secret value, and the common encodings of
//! it, in a byte stream such as a child's stdout or stderr.
//!
//! Three parts, one file each:
//! - [`forms`]: which byte strings stand for a secret (the value, its base64, hex,
//!   percent-encodings, JSON and string-literal escapes, its telling lines) as
//!   recipes that produce their bytes on demand;
//! - [`engine`]: the compiled matcher, an Aho-Corasick automaton over the first
//!   16 bytes of every form plus prefilters;
//! - [`stream`]: masking a stream that arrives in arbitrary pieces.
//!
//! This module ties them together ([`Scrubber`], [`ScrubStream`]). It knows nothing
//! about processes, pipes or timers: the supervisor reads, feeds
//! [`ScrubStream::write`], writes out what it gets back, and calls
//! [`ScrubStream::flush`] at EOF and after a short idle time.
//!
//! # Built on first use
//!
//! [`Scrubber::new`] only copies the values (and reports the ones too short to mask).
//! The automaton is compiled the first time something is masked: the first output of
//! the child, or the first message envrun prints. `envrun -- true` never builds it,
//! and the child is started before it is built.
//!
//! # What gets masked
//!
//! Line breaks (`\r`, `\n`) are invisible to matching: a form matches however the
//! output wraps it (base64 at 64 or 76 columns, `xxd -p`, `od`), and an occurrence
//! covers the line breaks inside it. Every byte covered by *any* occurrence of *any*
//! form is masked, and each maximal run of covered bytes (occurrences that overlap or
//! touch) becomes exactly one mask, [`ScrubOptions::mask_with`] with `{name}` replaced
//! by the variable whose occurrence starts the run (the longest one, if several start
//! there; the variable given first, if they are as long). The result is the same
//! whether the input arrives in one piece or a byte at a time; `tests/scrub_prop.rs`
//! checks that against a brute-force model.
//!
//! # Holding bytes back
//!
//! A write's tail that could still be the beginning of an occurrence is held back,
//! and only that: the automaton's current anchor prefix (under 16 bytes), or
//! everything since the start of a longer form still being checked. A run of masked
//! bytes is written (as its mask) once nothing can extend it; a run that grows for a
//! long time does not pile up: its mask is written as soon as its start falls before
//! the held-back tail, and the covered bytes are dropped.
//!
//! # Idle flushes split secrets
//!
//! [`ScrubStream::flush`] writes out the held-back bytes (masking the complete
//! occurrences among them) and forgets them. If the child then writes the rest of a
//! secret that was cut by the flush, neither half is a complete occurrence, and the
//! first half has already gone out: a flush is a hard boundary, and masking after it
//! is exactly as if the stream had started anew. The supervisor only flushes after
//! the child has been silent for a while (about 50 ms) and at EOF.
//!
//! # Cost
//!
//! Building is O(number of forms x 16) plus a few passes over each value: a 128 KiB
//! value costs about what a 40-byte token does (its telling lines aside, one form
//! each). Scanning costs the same per byte whatever the secrets' lengths; an occurrence
//! in progress costs one comparison per byte. The exception is a value that repeats
//! itself with a short period (`aaaa...`, `abab...`) in output that repeats it too:
//! every position then starts an occurrence in progress, and the cost per byte grows
//! with the value's length. `benches/scrub.rs`, `scripts/bench-scrub.sh` and
//! `scripts/bench-masks.sh` measure it.
//!
//! # Memory
//!
//! The scrubber holds one copy of each value, and the automaton the first 16 bytes of
//! each form, for as long as it lives; there is no way around that. Every copy made
//! here is wiped when it is dropped, and `Debug` never shows a value.

mod engine;
pub mod forms;
mod stream;

use std::fmt;
use std::sync::{Arc, OnceLock};

use zeroize::Zeroizing;

use engine::Compiled;
use forms::Form;
use stream::{Ctx, StreamState};

/// How secrets are masked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScrubOptions {
    /// The text written in place of a secret; `{name}` is replaced by the name of the
    /// variable that matched.
    pub mask_with: String,
    /// Values shorter than this (after dropping one trailing newline) are not masked,
    /// because masking them would mangle ordinary output; they are reported by
    /// [`Scrubber::too_short`] instead. Derived forms shorter than this are dropped.
    /// Treated as at least 1.
    pub min_len: usize,
}

impl Default for ScrubOptions {
    fn default() -> Self {
        ScrubOptions {
            mask_with: "***".to_owned(),
            min_len: 4,
        }
    }
}

/// The most bytes of values one scrubber takes. Far above anything an environment can
/// hold (Linux takes 128 KiB per variable and a few MiB in all).
pub const MAX_TOTAL_BYTES: usize = 256 << 20;

/// The scrubber could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ScrubError {
    #[error("scrubber: {bytes} bytes of secret values is more than the {limit} bytes it takes")]
    TooLarge { bytes: usize, limit: usize },
}

/// A set of secrets to mask. `Send + Sync`; share it with [`Arc`] and give each output
/// stream its own [`ScrubStream`]. The automaton is compiled on first use.
pub struct Scrubber {
    /// One per masked variable, in the order given; the index is the mask's.
    values: Vec<Zeroizing<Vec<u8>>>,
    /// The mask text for each masked variable, `{name}` already substituted.
    masks: Vec<Box<[u8]>>,
    too_short: Vec<String>,
    min_len: usize,
    compiled: OnceLock<Built>,
}

struct Built {
    forms: Vec<Form>,
    compiled: Compiled,
}

impl fmt::Debug for Scrubber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Scrubber");
        d.field("masked_variables", &self.masks.len())
            .field("too_short", &self.too_short);
        match self.compiled.get() {
            Some(built) => d
                .field("engine", &built.compiled.kind())
                .field("forms", &built.forms.len())
                .field("anchors", &built.compiled.anchor_len.len())
                .field("finder_shards", &built.compiled.finders.len())
                .field("memory_usage", &self.memory_usage()),
            None => d.field("engine", &"not built yet"),
        };
        d.finish_non_exhaustive()
    }
}

impl Scrubber {
    /// Takes the `(name, value)` pairs to mask. Cheap: copies the values and sorts out
    /// the ones too short to mask; the automaton is compiled on first use. When two
    /// variables hold the same value, the one given first names it.
    pub fn new<I, N, V>(secrets: I, opts: &ScrubOptions) -> Result<Scrubber, ScrubError>
    where
        I: IntoIterator<Item = (N, V)>,
        N: AsRef<str>,
        V: AsRef<[u8]>,
    {
        let min_len = opts.min_len.max(1);
        let mut values: Vec<Zeroizing<Vec<u8>>> = Vec::new();
        let mut masks: Vec<Box<[u8]>> = Vec::new();
        let mut too_short: Vec<String> = Vec::new();
        let mut total = 0usize;
        // Hash -> the values with it, to find a repeated value without comparing each
        // with all before it (1,000 secrets would be half a million comparisons).
        let hasher = std::hash::RandomState::new();
        let mut seen: std::collections::HashMap<u64, Vec<usize>> = Default::default();
        for (name, value) in secrets {
            let (name, value) = (name.as_ref(), value.as_ref());
            if forms::strip_one_newline(value).len() < min_len {
                if !too_short.iter().any(|n| n == name) {
                    too_short.push(name.to_owned());
                }
                continue;
            }
            let same_hash = seen
                .entry(std::hash::BuildHasher::hash_one(&hasher, value))
                .or_default();
            if same_hash.iter().any(|&i| values[i].as_slice() == value) {
                continue;
            }
            same_hash.push(values.len());
            total += value.len();
            if total > MAX_TOTAL_BYTES {
                return Err(ScrubError::TooLarge {
                    bytes: total,
                    limit: MAX_TOTAL_BYTES,
                });
            }
            values.push(Zeroizing::new(value.to_vec()));
            masks.push(opts.mask_with.replace("{name}", name).into_bytes().into());
        }
        Ok(Scrubber {
            values,
            masks,
            too_short,
            min_len,
            compiled: OnceLock::new(),
        })
    }

    /// Names of the variables whose value was shorter than `min_len` and is therefore
    /// not masked. The caller warns once per name, and never prints the value.
    pub fn too_short(&self) -> &[String] {
        &self.too_short
    }

    /// True when nothing will ever be masked (no variable, or all too short).
    pub fn is_empty(&self) -> bool {
        self.masks.is_empty()
    }

    /// Whether the automaton has been compiled yet (it is on first use).
    pub fn is_built(&self) -> bool {
        self.compiled.get().is_some()
    }

    /// Approximate heap bytes held: the values, and the automata once built.
    pub fn memory_usage(&self) -> usize {
        let values: usize = self.values.iter().map(|v| v.capacity()).sum();
        let built = self.compiled.get().map_or(0, |b| {
            b.compiled.memory_usage() + b.forms.len() * std::mem::size_of::<Form>()
        });
        values + built
    }

    /// Compiles the automaton now if it is not yet (benchmarks, and callers that would
    /// rather pay before the first byte).
    pub fn build(&self) {
        self.built();
    }

    fn built(&self) -> &Built {
        self.compiled.get_or_init(|| {
            let mut forms = Vec::new();
            for (i, value) in self.values.iter().enumerate() {
                forms::forms_of(i as u32, value, self.min_len, &mut forms);
            }
            let compiled = Compiled::build(&forms, &self.values, self.min_len);
            Built { forms, compiled }
        })
    }

    fn ctx(&self) -> Ctx<'_> {
        let built = self.built();
        Ctx {
            compiled: &built.compiled,
            forms: &built.forms,
            values: &self.values,
            masks: &self.masks,
        }
    }

    /// Starts masking one stream (one per stdout, stderr, pty, ...).
    pub fn stream(self: &Arc<Self>) -> ScrubStream {
        ScrubStream {
            scrubber: Arc::clone(self),
            state: StreamState::default(),
        }
    }

    /// Masks a whole buffer at once, as if it were a complete stream. Meant for
    /// envrun's own messages.
    pub fn scrub_all(&self, input: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(input.len());
        if self.is_empty() {
            out.extend_from_slice(input);
            return out;
        }
        let ctx = self.ctx();
        let mut state = StreamState::default();
        state.write(&ctx, input, &mut out);
        state.flush(&ctx, &mut out);
        out
    }
}

/// One stream being masked: an owned handle that can move to the thread pumping it.
pub struct ScrubStream {
    scrubber: Arc<Scrubber>,
    state: StreamState,
}

impl fmt::Debug for ScrubStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScrubStream")
            .field("pending", &self.pending())
            .finish_non_exhaustive()
    }
}

impl ScrubStream {
    /// Feeds bytes and appends to `out` everything that can no longer be part of a
    /// secret (masked where it was one). The first write compiles the automaton.
    pub fn write(&mut self, input: &[u8], out: &mut Vec<u8>) {
        if self.scrubber.is_empty() {
            out.extend_from_slice(input);
            return;
        }
        let ctx = self.scrubber.ctx();
        self.state.write(&ctx, input, out);
    }

    /// Goes on with another scrubber (a reload added values): `to` must hold every value of
    /// the current one, first and in the same order, as [`Scrubber::new`] of the old
    /// `(name, value)` list with the new ones appended makes it. The held-back bytes are
    /// scanned again with `to`, so an occurrence of an old or a new value that began before
    /// the switch is still masked; what becomes final is appended to `out`.
    pub fn switch(&mut self, to: &Arc<Scrubber>, out: &mut Vec<u8>) {
        if Arc::ptr_eq(&self.scrubber, to) {
            return;
        }
        let from = std::mem::replace(&mut self.scrubber, Arc::clone(to));
        if self.state.pending() == 0 || from.is_empty() || !from.is_built() {
            // Nothing held back (or nothing ever scanned): no state to carry over.
            self.state = StreamState::default();
            return;
        }
        if to.is_empty() {
            self.state.flush(&from.ctx(), out);
            return;
        }
        let ctx = to.ctx();
        self.state.rescan(&ctx, out);
    }

    /// How many bytes are held back because they could begin a secret. When this is
    /// non-zero and the child stays silent, the caller should [`flush`](Self::flush).
    pub fn pending(&self) -> usize {
        self.state.pending()
    }

    /// Idle flush or EOF: appends the held-back bytes to `out` (masking complete
    /// matches among them) and starts afresh. See the module docs: a secret that
    /// continues after a flush is not recognised.
    pub fn flush(&mut self, out: &mut Vec<u8>) {
        if !self.scrubber.is_built() {
            // Nothing was ever written through any stream: there is no state to flush,
            // and a child that printed nothing must not pay for the automaton.
            return;
        }
        let ctx = self.scrubber.ctx();
        self.state.flush(&ctx, out);
    }
}

/// Every byte string masked for one secret value, written out, de-duplicated, each at
/// least `min_len` (at least 1) bytes long; empty when the value, without one trailing
/// newline, is shorter than `min_len`. Line breaks are never part of a form (they are
/// skipped in the output too). For tests and documentation: the scrubber itself never
/// writes the forms out.
///
/// For the value, the value without one trailing `\n` or `\r\n`, and (base64 only) the
/// value with the newline `echo` adds:
/// - the bytes themselves;
/// - base64, standard and URL-safe alphabets, with and without padding, and the
///   characters that depend only on the value when it starts 0, 1 or 2 bytes into a
///   3-byte group of a longer blob, with or without the end of the blob;
/// - hex, lower and upper case, plain and with a space or `:` between bytes;
/// - percent-encoding as `encodeURIComponent`, `encodeURI`, `URLSearchParams`, Python's
///   `quote` (default and `safe=''`), `quote_plus`/`urlencode` and PHP's `urlencode`
///   write it, with upper- and lower-case hex digits;
/// - the inside of a JSON string (serde_json/JavaScript, `\/`, Python's ASCII default,
///   Go's HTML-safe);
/// - the inside of a string literal as Python `repr()` (of `str` and of `bytes`), Node's
///   `util.inspect`, Go's `%q` and `%+q`, and bash's `printf %q` / `${v@Q}` (in a
///   UTF-8 and in the C locale) write it.
///
/// And each telling line of a multi-line value ([`forms::line_is_telling`]).
pub fn derive_patterns(value: &[u8], min_len: usize) -> Vec<Zeroizing<Vec<u8>>> {
    let min_len = min_len.max(1);
    if forms::strip_one_newline(value).len() < min_len {
        return Vec::new();
    }
    let mut list = Vec::new();
    forms::forms_of(0, value, min_len, &mut list);
    let mut out: Vec<Zeroizing<Vec<u8>>> = list
        .iter()
        .map(|f| forms::materialize(f, value))
        .filter(|f| f.len() >= min_len)
        .collect();
    out.sort_by(|a, b| a.as_slice().cmp(b.as_slice()));
    out.dedup_by(|a, b| a.as_slice() == b.as_slice());
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine as _;
    use base64::engine::general_purpose::STANDARD;

    fn hex(value: &[u8], digits: &[u8; 16]) -> Vec<u8> {
        value
            .iter()
            .flat_map(|&b| [digits[usize::from(b >> 4)], digits[usize::from(b & 0xf)]])
            .collect()
    }

    fn finder_shards(sc: &Scrubber) -> usize {
        sc.built().compiled.finders.len()
    }

    fn opts(mask: &str) -> ScrubOptions {
        ScrubOptions {
            mask_with: mask.to_owned(),
            min_len: 4,
        }
    }

    fn scrubber(secrets: &[(&str, &[u8])], mask: &str) -> Arc<Scrubber> {
        Arc::new(Scrubber::new(secrets.iter().copied(), &opts(mask)).unwrap())
    }

    fn forms(value: &[u8]) -> Vec<Vec<u8>> {
        derive_patterns(value, 4)
            .iter()
            .map(|f| f.to_vec())
            .collect()
    }

    fn has(forms: &[Vec<u8>], want: &str) -> bool {
        forms.iter().any(|f| f == want.as_bytes())
    }

    /// Feeds `input` in the given pieces and flushes at the end.
    fn stream_in_pieces(sc: &Arc<Scrubber>, pieces: &[&[u8]]) -> Vec<u8> {
        let mut stream = sc.stream();
        let mut out = Vec::new();
        for piece in pieces {
            stream.write(piece, &mut out);
        }
        stream.flush(&mut out);
        assert_eq!(stream.pending(), 0);
        out
    }

    // The expected strings below come from Python's base64, binascii, urllib.parse
    // and json modules, not from this code.
    const TRICKY: &str = "p\u{e4}/ss w\"rd\\<&>\u{2028}\u{1f600}\t!*";

    #[test]
    fn base64_forms() {
        let f = forms(TRICKY.as_bytes());
        assert!(has(&f, "cMOkL3NzIHcicmRcPCY+4oCo8J+YgAkhKg=="));
        assert!(has(&f, "cMOkL3NzIHcicmRcPCY+4oCo8J+YgAkhKg"));
        assert!(has(&f, "cMOkL3NzIHcicmRcPCY-4oCo8J-YgAkhKg=="));
        assert!(has(&f, "cMOkL3NzIHcicmRcPCY-4oCo8J-YgAkhKg"));
    }

    #[test]
    fn base64_forms_inside_a_longer_blob() {
        let f = forms(TRICKY.as_bytes());
        // base64(prefix + value + suffix) for 0, 1 and 2 prefix bytes: the
        // characters that are the same whatever the surrounding bytes are.
        assert!(has(&f, "cMOkL3NzIHcicmRcPCY+4oCo8J+YgAkhK"));
        assert!(has(&f, "DDpC9zcyB3InJkXDwmPuKAqPCfmIAJIS"));
        assert!(has(&f, "ww6Qvc3MgdyJyZFw8Jj7igKjwn5iACSEq"));
        // and the same in the URL-safe alphabet
        assert!(has(&f, "cMOkL3NzIHcicmRcPCY-4oCo8J-YgAkhK"));

        let sc = scrubber(&[("K", TRICKY.as_bytes())], "[{name}]");
        let blob = |prefix: &[u8]| {
            let mut raw = prefix.to_vec();
            raw.extend_from_slice(TRICKY.as_bytes());
            raw.extend_from_slice(b"trailing data");
            STANDARD.encode(raw)
        };
        for prefix in [&b""[..], b"x", b"xy", b"xyz", b"user:"] {
            let out = sc.scrub_all(blob(prefix).as_bytes());
            let out = String::from_utf8(out).unwrap();
            assert!(out.contains("[K]"), "{prefix:?}: {out}");
            assert!(!out.contains("PCY"), "{prefix:?}: {out}");
        }
    }

    #[test]
    fn hex_forms() {
        let f = forms(TRICKY.as_bytes());
        assert!(has(
            &f,
            "70c3a42f737320772272645c3c263ee280a8f09f988009212a"
        ));
        assert!(has(
            &f,
            "70C3A42F737320772272645C3C263EE280A8F09F988009212A"
        ));
    }

    #[test]
    fn percent_forms() {
        let f = forms(TRICKY.as_bytes());
        // Python quote(safe='')
        assert!(has(
            &f,
            "p%C3%A4%2Fss%20w%22rd%5C%3C%26%3E%E2%80%A8%F0%9F%98%80%09%21%2A"
        ));
        // encodeURIComponent leaves !*'() alone
        assert!(has(
            &f,
            "p%C3%A4%2Fss%20w%22rd%5C%3C%26%3E%E2%80%A8%F0%9F%98%80%09!*"
        ));
        assert!(has(
            &f,
            "p%c3%a4%2fss%20w%22rd%5c%3c%26%3e%e2%80%a8%f0%9f%98%80%09!*"
        ));
    }

    #[test]
    fn json_forms() {
        let f = forms(TRICKY.as_bytes());
        // serde_json / JSON.stringify / json.dumps(ensure_ascii=False)
        let serde = serde_json::to_string(TRICKY).unwrap();
        assert!(has(&f, &serde[1..serde.len() - 1]));
        assert!(has(&f, "p\u{e4}/ss w\\\"rd\\\\<&>\u{2028}\u{1f600}\\t!*"));
        assert!(has(&f, "p\u{e4}\\/ss w\\\"rd\\\\<&>\u{2028}\u{1f600}\\t!*"));
        // json.dumps default
        assert!(has(
            &f,
            "p\\u00e4/ss w\\\"rd\\\\<&>\\u2028\\ud83d\\ude00\\t!*"
        ));
        // Go encoding/json
        assert!(has(
            &f,
            "p\u{e4}/ss w\\\"rd\\\\\\u003c\\u0026\\u003e\\u2028\u{1f600}\\t!*"
        ));
        // control characters
        let f = forms(b"a\x01b\x08c\x0c\x7f");
        assert!(has(&f, "a\\u0001b\\bc\\f\x7f"));
        assert!(has(&f, "a\\u0001b\\bc\\f\\u007f"));
    }

    #[test]
    fn non_utf8_values_get_bytewise_forms() {
        let value = b"\xff\xfe\"\x00secret";
        let f = forms(value);
        assert!(f.iter().any(|p| p == value));
        assert!(f.iter().any(|p| p == b"\xff\xfe\\\"\\u0000secret"));
        assert!(has(&f, "fffe2200736563726574"));
        assert!(has(&f, "%FF%FE%22%00secret"));
    }

    #[test]
    fn forms_equal_to_the_value_are_not_repeated() {
        let f = forms(b"abcd1234");
        // raw, base64 (x4 -> 1 distinct, since no padding/+/ differences... and
        // the aligned parts), hex x2; percent and JSON equal the raw value.
        assert_eq!(f.iter().filter(|p| p.as_slice() == b"abcd1234").count(), 1);
        assert!(!f.iter().any(|p| p.starts_with(b"abcd1234") && p.len() > 8));
    }

    #[test]
    fn trailing_newline_and_lines() {
        let pem =
            "-----BEGIN KEY-----\r\nMIIBVgIBADANBgkqhkiG9w0B\r\nAQEFAASC\r\n-----END KEY-----\r\n";
        let f = forms(pem.as_bytes());
        // Line breaks are never part of a form: they are skipped in the output too.
        assert!(!f.iter().any(|p| p.contains(&b'\n') || p.contains(&b'\r')));
        assert!(has(&f, &pem.replace("\r\n", "")));
        // A telling line on its own; lines of punctuation and short lines are not.
        assert!(has(&f, "MIIBVgIBADANBgkqhkiG9w0B"));
        assert!(!has(&f, "AQEFAASC"));
        assert!(!has(&f, "-----END KEY-----"));
        assert!(!f.iter().any(|p| p.is_empty()));
        let f = forms(b"token\n");
        assert!(has(&f, "token"));
        assert!(has(&f, &STANDARD.encode("token")));
        assert!(has(&f, &STANDARD.encode("token\n")));
    }

    #[test]
    fn short_values_are_reported_not_masked() {
        let sc = scrubber(
            &[
                ("SHORT", b"abc"),
                ("NL", b"abc\n"),
                ("EMPTY", b""),
                ("OK", b"abcd"),
            ],
            "***",
        );
        assert_eq!(sc.too_short(), ["SHORT", "NL", "EMPTY"]);
        assert_eq!(sc.scrub_all(b"abc abcd"), b"abc ***");
        let none = scrubber(&[("SHORT", b"abc")], "***");
        assert!(none.is_empty());
        assert_eq!(none.scrub_all(b"abc"), b"abc");
        assert!(derive_patterns(b"abc", 4).iter().all(|f| f.len() >= 4));
        // encoded forms shorter than min_len are dropped too
        assert!(derive_patterns(b"abcd", 4).iter().all(|f| f.len() >= 4));
    }

    #[test]
    fn empty_input_and_no_secrets() {
        let sc = scrubber(&[("A", b"secret")], "***");
        assert_eq!(sc.scrub_all(b""), b"");
        assert_eq!(stream_in_pieces(&sc, &[b"", b""]), b"");
        let none = Arc::new(Scrubber::new(Vec::<(&str, &[u8])>::new(), &opts("***")).unwrap());
        assert!(none.is_empty());
        assert_eq!(
            stream_in_pieces(&none, &[b"plain", b" text"]),
            b"plain text"
        );
    }

    #[test]
    fn pattern_at_start_end_and_whole() {
        let sc = scrubber(&[("A", b"secret")], "<{name}>");
        assert_eq!(sc.scrub_all(b"secret"), b"<A>");
        assert_eq!(sc.scrub_all(b"secret tail"), b"<A> tail");
        assert_eq!(sc.scrub_all(b"head secret"), b"head <A>");
        assert_eq!(sc.scrub_all(b"secresecret"), b"secre<A>");
        assert_eq!(sc.scrub_all(b"secre"), b"secre");
    }

    #[test]
    fn split_at_every_boundary() {
        let sc = scrubber(&[("A", b"s3cr3t-value"), ("B", b"other")], "<{name}>");
        let input = b"x s3cr3t-value y otheros3cr3t-values3cr3t-valu z s3cr3t-value";
        let expected = sc.scrub_all(input);
        assert_eq!(expected, b"x <A> y <B>o<A>s3cr3t-valu z <A>".to_vec());
        for i in 0..=input.len() {
            for j in i..=input.len() {
                let out = stream_in_pieces(&sc, &[&input[..i], &input[i..j], &input[j..]]);
                assert_eq!(out, expected, "split at {i} and {j}");
            }
        }
        let bytes: Vec<&[u8]> = input.chunks(1).collect();
        assert_eq!(stream_in_pieces(&sc, &bytes), expected);
    }

    #[test]
    fn holds_back_only_a_possible_prefix() {
        let sc = scrubber(&[("A", b"secret")], "***");
        let mut stream = sc.stream();
        let mut out = Vec::new();
        stream.write(b"Password: ", &mut out);
        assert_eq!(out, b"Password: ");
        assert_eq!(stream.pending(), 0);
        stream.write(b"my sec", &mut out);
        assert_eq!(out, b"Password: my ");
        assert_eq!(stream.pending(), 3);
        stream.write(b"ret", &mut out);
        // a complete run that could still touch a following match is not written yet
        assert_eq!(out, b"Password: my ");
        stream.write(b"!", &mut out);
        assert_eq!(out, b"Password: my ***!");
        assert_eq!(stream.pending(), 0);
    }

    #[test]
    fn adjacent_and_overlapping_secrets_make_one_mask() {
        let sc = scrubber(
            &[("A", b"abcd"), ("B", b"cdef"), ("C", b"wxyz")],
            "<{name}>",
        );
        // overlapping: leftmost-longest alone would leak "ef"
        assert_eq!(sc.scrub_all(b"_abcdef_"), b"_<A>_");
        // adjacent
        assert_eq!(sc.scrub_all(b"_abcdwxyz_"), b"_<A>_");
        assert_eq!(sc.scrub_all(b"_wxyzabcd_"), b"_<C>_");
        // chains
        assert_eq!(sc.scrub_all(b"_abcdefwxyzcdef_"), b"_<A>_");
        // separated by one byte: two masks
        assert_eq!(sc.scrub_all(b"abcd_wxyz"), b"<A>_<C>");
        // a later, longer occurrence that starts earlier swallows earlier runs
        let sc = scrubber(
            &[("S", b"bcde"), ("T", b"ghij"), ("L", b"abcdefghijkl")],
            "<{name}>",
        );
        assert_eq!(sc.scrub_all(b"_abcdefghijkl_"), b"_<L>_");
        assert_eq!(sc.scrub_all(b"_abcdefghijk_"), b"_a<S>f<T>k_");
        // same start: the longest names the run
        let sc = scrubber(&[("SHORT", b"abcd"), ("LONG", b"abcdefgh")], "<{name}>");
        assert_eq!(sc.scrub_all(b"abcdefgh"), b"<LONG>");
        assert_eq!(sc.scrub_all(b"abcdefg"), b"<SHORT>efg");
    }

    #[test]
    fn same_value_twice_is_named_by_the_first() {
        let sc = scrubber(
            &[("FIRST", b"samevalue"), ("SECOND", b"samevalue")],
            "<{name}>",
        );
        assert_eq!(sc.scrub_all(b"samevalue"), b"<FIRST>");
    }

    #[test]
    fn multi_line_pem() {
        let pem = b"-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\nBKcwggSjAgEAAoIBAQC7\n-----END PRIVATE KEY-----\n";
        let sc = scrubber(&[("KEY", pem)], "<{name}>");
        // whole, in any pieces
        let mut input = b"key: ".to_vec();
        input.extend_from_slice(pem);
        input.extend_from_slice(b"done\n");
        for size in [1, 2, 3, 7, 64] {
            let pieces: Vec<&[u8]> = input.chunks(size).collect();
            // the value's own trailing newline is a line break, left as it is
            assert_eq!(stream_in_pieces(&sc, &pieces), b"key: <KEY>\ndone\n");
        }
        // one line logged on its own
        assert_eq!(
            sc.scrub_all(b"line=BKcwggSjAgEAAoIBAQC7\n"),
            b"line=<KEY>\n"
        );
        // JSON-escaped
        let json = serde_json::to_string(std::str::from_utf8(pem).unwrap()).unwrap();
        assert_eq!(sc.scrub_all(json.as_bytes()), b"\"<KEY>\"");
    }

    #[test]
    fn binary_output_passes_through() {
        let sc = scrubber(&[("A", b"\x00\xffsecret\x80")], "***");
        let input: Vec<u8> = (0..=255u8)
            .chain(*b"\x00\xffsecret\x80")
            .chain(0..=255u8)
            .collect();
        let mut expected: Vec<u8> = (0..=255u8).collect();
        expected.extend_from_slice(b"***");
        expected.extend(0..=255u8);
        assert_eq!(sc.scrub_all(&input), expected);
    }

    #[test]
    fn endless_run_does_not_grow_the_carry() {
        let sc = scrubber(&[("A", b"aaaa")], "***");
        let mut stream = sc.stream();
        let mut out = Vec::new();
        for _ in 0..1000 {
            stream.write(&[b'a'; 100], &mut out);
            // at most the longest pattern (8: hex, base64) - 1
            assert!(stream.pending() <= 7);
        }
        stream.write(b"b", &mut out);
        stream.flush(&mut out);
        assert_eq!(out, b"***b");
    }

    /// Idle flushes are hard boundaries: what went out before cannot be taken back.
    /// This pins that documented limit; the supervisor only flushes when idle.
    #[test]
    fn flush_in_the_middle_of_a_secret_splits_it() {
        let sc = scrubber(&[("A", b"secret")], "***");
        let mut stream = sc.stream();
        let mut out = Vec::new();
        stream.write(b"x secr", &mut out);
        stream.flush(&mut out);
        stream.write(b"et y", &mut out);
        stream.flush(&mut out);
        assert_eq!(out, b"x secret y");
        // ... while a complete match is masked by the flush.
        let mut out = Vec::new();
        stream.write(b"x secret", &mut out);
        assert_eq!(out, b"x ");
        stream.flush(&mut out);
        assert_eq!(out, b"x ***");
        // and a flush ends a run: an adjacent match after it gets its own mask.
        stream.write(b"secret", &mut out);
        stream.flush(&mut out);
        assert_eq!(out, b"x ******");
    }

    #[test]
    fn debug_never_shows_patterns() {
        let sc = scrubber(&[("API_KEY", b"supersecretvalue")], "***");
        let shown = format!("{sc:?} {:?}", sc.stream());
        assert!(shown.contains("Scrubber"));
        for form in forms(b"supersecretvalue") {
            assert!(
                !shown
                    .as_bytes()
                    .windows(form.len())
                    .any(|w| w == form.as_slice())
            );
        }
    }

    #[test]
    fn the_automaton_is_built_on_first_use_only() {
        let sc = scrubber(&[("A", b"secret-value")], "***");
        assert!(!sc.is_built());
        let _stream = sc.stream();
        assert!(
            !sc.is_built(),
            "a stream that has seen nothing builds nothing"
        );
        assert!(format!("{sc:?}").contains("not built"));
        let mut stream = sc.stream();
        let mut out = Vec::new();
        stream.flush(&mut out);
        assert!(!sc.is_built(), "flushing nothing builds nothing");
        stream.write(b"x secret-value y", &mut out);
        assert!(sc.is_built());
        stream.flush(&mut out);
        assert_eq!(out, b"x *** y");
        let sc = scrubber(&[("A", b"secret-value")], "***");
        assert_eq!(sc.scrub_all(b"secret-value"), b"***");
        assert!(sc.is_built());
        // nothing to mask: nothing is ever built
        let none = scrubber(&[("SHORT", b"abc")], "***");
        assert_eq!(none.scrub_all(b"abc"), b"abc");
        assert!(!none.is_built());
    }

    #[test]
    fn wrapped_base64_at_any_width_and_column_is_masked() {
        let value = b"postgres://app:s3cr3t-p4ssw0rd-0123456789@db.internal:5432/app";
        let sc = scrubber(&[("DB", value)], "***");
        let encoded = STANDARD.encode(value);
        for width in [4, 8, 60, 64, 76, 1024] {
            for column in [0, 1, 3, 10] {
                for eol in ["\n", "\r\n"] {
                    let mut text = "x".repeat(column);
                    let mut col = column % width;
                    for c in encoded.chars() {
                        if col == width {
                            text.push_str(eol);
                            col = 0;
                        }
                        text.push(c);
                        col += 1;
                    }
                    text.push_str(eol);
                    let expected = format!("{}***{eol}", "x".repeat(column));
                    for size in [1, 7, 4096] {
                        let pieces: Vec<&[u8]> = text.as_bytes().chunks(size).collect();
                        let out = stream_in_pieces(&sc, &pieces);
                        assert_eq!(
                            String::from_utf8_lossy(&out),
                            expected,
                            "width {width} column {column} pieces of {size}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn many_secrets_use_the_sampled_filter_and_still_mask_everywhere() {
        // Enough secrets for more keys than the finders take: the gram filter, sampled
        // one position in a step. Occurrences at every column, wrapped at every width,
        // each fed in pieces, must be masked as with the position-by-position scan.
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        const ALNUM: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
        let values: Vec<Vec<u8>> = (0..300)
            .map(|_| {
                (0..24)
                    .map(|_| ALNUM[next() as usize % ALNUM.len()])
                    .collect()
            })
            .collect();
        let named: Vec<(String, &[u8])> = values
            .iter()
            .enumerate()
            .map(|(i, v)| (format!("S{i}"), v.as_slice()))
            .collect();
        let sc = Arc::new(
            Scrubber::new(named.iter().map(|(n, v)| (n.as_str(), *v)), &opts("***")).unwrap(),
        );
        let ctx = sc.ctx();
        assert!(ctx.compiled.finders.is_empty() && ctx.compiled.sampled.is_some());
        for (k, value) in values.iter().enumerate().step_by(37) {
            let encoded = STANDARD.encode(value);
            for column in 0..9 {
                for width in [4, 5, 9, 64, 76, 1000] {
                    let mut text = "- ".repeat(column / 2) + &" ".repeat(column % 2);
                    let expected = format!("{text}*** and ***\n- .\n");
                    text.push_str(std::str::from_utf8(value).unwrap());
                    text.push_str(" and ");
                    let mut col = 0;
                    for c in encoded.chars() {
                        if col == width {
                            text.push('\n');
                            col = 0;
                        }
                        text.push(c);
                        col += 1;
                    }
                    text.push_str("\n- .\n");
                    for size in [1, 7, 4096] {
                        let pieces: Vec<&[u8]> = text.as_bytes().chunks(size).collect();
                        let out = stream_in_pieces(&sc, &pieces);
                        assert_eq!(
                            String::from_utf8_lossy(&out),
                            expected,
                            "secret {k} column {column} width {width} pieces of {size}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn a_long_value_is_checked_past_its_anchor() {
        let value: Vec<u8> = (0..5000u32).map(|i| b'!' + (i * 7 % 90) as u8).collect();
        let sc = scrubber(&[("BIG", &value)], "***");
        let mut almost = value.clone();
        *almost.last_mut().unwrap() ^= 1;
        let mut input = b"a ".to_vec();
        input.extend_from_slice(&value);
        input.extend_from_slice(b" b ");
        input.extend_from_slice(&almost);
        input.extend_from_slice(b" c");
        let mut expected = b"a *** b ".to_vec();
        expected.extend_from_slice(&almost);
        expected.extend_from_slice(b" c");
        for size in [1, 100, 10_000] {
            let pieces: Vec<&[u8]> = input.chunks(size).collect();
            assert_eq!(stream_in_pieces(&sc, &pieces), expected, "pieces of {size}");
        }
        // hex of it, wrapped as `xxd -p` does (60 columns)
        let hex = hex(&value, b"0123456789abcdef");
        let wrapped: Vec<u8> = hex.chunks(60).flat_map(|l| [l, b"\n"].concat()).collect();
        assert_eq!(sc.scrub_all(&wrapped), b"***\n");
    }

    #[test]
    fn scrubber_is_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<Scrubber>();
        check::<ScrubStream>();
    }

    #[test]
    fn many_secrets_use_an_nfa_and_still_mask() {
        // enough pattern bytes that a DFA would be too large
        let values: Vec<(String, Vec<u8>)> = (0..600)
            .map(|i| {
                (
                    format!("S{i}"),
                    format!("value-{i:04}-xyz-{:0>48}", i * 7).into_bytes(),
                )
            })
            .collect();
        let sc = Scrubber::new(
            values.iter().map(|(n, v)| (n.as_str(), v.as_slice())),
            &opts("<{name}>"),
        )
        .unwrap();
        assert!(format!("{sc:?}").contains("not built"));
        sc.build();
        assert!(format!("{sc:?}").contains("contiguous-nfa"));
        let v150 = format!("a value-0150-xyz-{:0>48} b", 150 * 7);
        assert_eq!(sc.scrub_all(v150.as_bytes()), b"a <S150> b");
        let hex = hex(
            format!("value-0007-xyz-{:0>48}", 49).as_bytes(),
            b"0123456789abcdef",
        );
        let mut input = b"h=".to_vec();
        input.extend_from_slice(&hex);
        assert_eq!(sc.scrub_all(&input), b"h=<S7>");
    }

    /// Three ways to find occurrences (walking small writes from the saved state,
    /// jumping with the sharded finders, aho-corasick's overlapping search when
    /// there are too many keys for the finders) must agree.
    #[test]
    fn search_paths_agree() {
        let mut seed = 0x2545_f491_u64;
        let mut rand = move || {
            seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            seed >> 33
        };
        let values: Vec<(String, Vec<u8>)> = (0..150)
            .map(|i| {
                let v: String = (0..12)
                    .map(|_| char::from(b'!' + (rand() % 90) as u8))
                    .collect();
                (format!("S{i}"), v.into_bytes())
            })
            .collect();
        let few = Arc::new(
            Scrubber::new(values[..20].iter().map(|(n, v)| (n, v)), &opts("<{name}>")).unwrap(),
        );
        let many =
            Arc::new(Scrubber::new(values.iter().map(|(n, v)| (n, v)), &opts("<{name}>")).unwrap());
        assert!(finder_shards(&few) > 1, "{few:?}");
        assert_eq!(finder_shards(&many), 0, "{many:?}");
        let mut input = Vec::new();
        for i in 0..400 {
            let (_, v) = &values[rand() as usize % 20];
            input.extend_from_slice(format!("line {i} ").as_bytes());
            match rand() % 4 {
                0 => input.extend_from_slice(v),
                1 => input.extend_from_slice(STANDARD.encode(v).as_bytes()),
                2 => input.extend_from_slice(&hex(v, b"0123456789ABCDEF")),
                _ => input.extend_from_slice(&v[..v.len() / 2]),
            }
            input.push(if rand() % 2 == 0 { b'\n' } else { b' ' });
        }
        let expected = few.scrub_all(&input);
        assert_eq!(many.scrub_all(&input), expected);
        assert!(expected.windows(3).filter(|w| w == b"<S1").count() > 10);
        for sc in [&few, &many] {
            for size in [1, 5, 63, 64, 65, 200, 4096] {
                let pieces: Vec<&[u8]> = input.chunks(size).collect();
                assert_eq!(stream_in_pieces(sc, &pieces), expected, "size {size}");
            }
        }
    }

    /// Regression: `echo "$SECRET" | base64` and a value at the end of a longer blob left
    /// their last base64 characters, which carry the value's last bits, unmasked. Expected
    /// encodings come from Python's base64 module.
    #[test]
    fn base64_of_echoed_value_and_of_a_value_ending_a_blob_is_masked_whole() {
        let s = scrubber(&[("T", b"tok-5f1c2e9a-77aa")], "***");
        let cases: [(&[u8], &[u8]); 4] = [
            (b"dG9rLTVmMWMyZTlhLTc3YWEK\n", b"***\n"),
            (b"eHl0b2stNWYxYzJlOWEtNzdhYQ==\n", b"eHl***\n"),
            (b"eHRvay01ZjFjMmU5YS03N2FhCg==\n", b"eH***\n"),
            (b"eHl0b2stNWYxYzJlOWEtNzdhYQ\n", b"eHl***\n"),
        ];
        for (input, expected) in cases {
            assert_eq!(
                s.scrub_all(input),
                expected,
                "{}",
                String::from_utf8_lossy(input)
            );
        }
    }

    /// A reload switches a stream to a scrubber with the old values and new ones, at every
    /// split point of an old value, a new value, and a base64 form running across it.
    #[test]
    fn switching_scrubbers_mid_stream_keeps_old_and_new_values_masked() {
        let old: &[u8] = b"old-secret-value-1234";
        let new: &[u8] = b"new-secret-value-5678";
        let before = scrubber(&[("A", old)], "[A]");
        let after = scrubber(&[("A", old), ("A", new)], "[A]");
        let b64 = STANDARD.encode(old);
        let texts: Vec<Vec<u8>> = vec![
            [b"x ".as_slice(), old, b" y ", new, b" z"].concat(),
            [b"line ".as_slice(), b64.as_bytes(), b"\n", new, b"\n"].concat(),
            [old, old, new].concat(),
        ];
        for text in &texts {
            // The new value reaches the output only after the switch (the child gets it
            // after the reload): cut anywhere before it, inside the old forms included.
            let first_new = text.windows(new.len()).position(|w| w == new).unwrap();
            for cut in 0..=first_new {
                let mut stream = before.stream();
                let mut out = Vec::new();
                stream.write(&text[..cut], &mut out);
                stream.switch(&after, &mut out);
                stream.write(&text[cut..], &mut out);
                stream.flush(&mut out);
                let shown = String::from_utf8_lossy(&out);
                for value in [old, new] {
                    let value = String::from_utf8_lossy(value);
                    assert!(!shown.contains(&value[..12]), "cut {cut}: {shown}");
                }
                assert!(
                    !shown.contains(&b64[2..b64.len() - 2]),
                    "cut {cut}: {shown}"
                );
            }
        }
        // A stream with nothing held back starts afresh with the new scrubber.
        let mut stream = before.stream();
        let mut out = Vec::new();
        stream.switch(&after, &mut out);
        stream.write(new, &mut out);
        stream.flush(&mut out);
        assert_eq!(out, b"[A]");
    }

    /// Rotations as watch mode makes them: each switch adds a value (random length, the
    /// same long tail), lines of old and new values in random chunks around it.
    #[test]
    fn switching_through_many_rotations_in_random_chunks() {
        const TAIL: &str = "CANARY-7f3e9b1c-d00d-4bad-a55e-0123456789ab";
        let mut rng: u64 = 0x7665397724301891;
        let mut next = move || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        };
        for round in 0..60 {
            let mut values: Vec<Vec<u8>> = Vec::new();
            let mut masks: Vec<(String, crate::secret::Secret)> = Vec::new();
            let add = |values: &mut Vec<Vec<u8>>,
                       masks: &mut Vec<(String, crate::secret::Secret)>,
                       i: usize,
                       r: u64| {
                let pad = format!("{:032x}", r);
                let v = format!("r{i}:{}{TAIL}", &pad[..(r % 33) as usize]).into_bytes();
                masks.push(("TOKEN".into(), crate::secret::Secret::from_slice(&v)));
                values.push(v);
            };
            add(&mut values, &mut masks, 0, next());
            let build = |masks: &[(String, crate::secret::Secret)]| {
                Arc::new(
                    Scrubber::new(
                        masks.iter().map(|(n, v)| (n.as_str(), v.expose())),
                        &opts("***"),
                    )
                    .unwrap(),
                )
            };
            let mut current = build(&masks);
            let mut stream = current.stream();
            let mut out = Vec::new();
            for i in 1..40 {
                // Lines with the current value, cut into random chunks.
                let mut text = Vec::new();
                for _ in 0..(next() % 40) {
                    let v = values.last().unwrap();
                    text.extend_from_slice(b"env=");
                    text.extend_from_slice(v);
                    text.extend_from_slice(b" file=");
                    text.extend_from_slice(v);
                    text.extend_from_slice(format!(" fg=r{i}\n").as_bytes());
                }
                let mut at = 0;
                while at < text.len() {
                    let n = 1 + (next() % 600) as usize;
                    let end = (at + n).min(text.len());
                    stream.write(&text[at..end], &mut out);
                    at = end;
                }
                add(&mut values, &mut masks, i, next());
                current = build(&masks);
                stream.switch(&current, &mut out);
            }
            stream.flush(&mut out);
            let shown = String::from_utf8_lossy(&out);
            for piece in TAIL.as_bytes().windows(8) {
                let piece = std::str::from_utf8(piece).unwrap();
                assert!(!shown.contains(piece), "round {round}: {piece} in {shown}");
            }
        }
    }
}
