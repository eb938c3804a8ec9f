//! The forms of a secret: every byte string that stands for it in a program's output.
//!
//! A [`Form`] is a recipe, not bytes: a slice of the value (the whole of it, without its
//! trailing newline, with the newline `echo` adds, or one line of it), optionally shifted
//! by one or two bytes (its place inside a longer base64 blob), and an [`Encoding`]. A
//! [`Cursor`] produces a form's bytes one at a time, so the engine keeps only each form's
//! first [`ANCHOR_LEN`] bytes in its automaton and checks the rest against the value
//! itself: memory and build time grow with the number of forms, not with their length.
//!
//! Carriage returns and line feeds are never part of a form: the engine skips them in the
//! output too, which is what makes wrapped base64 (`base64`, `openssl base64`, PEM, any
//! width, LF or CRLF, any starting column) and wrapped hex (`xxd -p`, `od`) match.

use zeroize::Zeroizing;

/// How many leading bytes of each form go into the automaton; the rest is verified
/// against the value by a [`Cursor`].
pub const ANCHOR_LEN: usize = 16;

/// A line of a multi-line secret is masked on its own only if it holds a word (bytes
/// other than whitespace, quotes and `,;:(){}[]<>`) at least this long, or
/// `--min-mask-len` if that is longer. See [`line_is_telling`].
pub const LINE_WORD_LEN: usize = 16;

/// Percent-encoding as each program does it: which bytes it leaves alone, and whether a
/// space becomes `+` (form encoding).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PercentSet {
    /// JavaScript `encodeURIComponent`: `A-Za-z0-9-_.!~*'()`.
    Component,
    /// Python `quote(s, safe='')`, PHP `rawurlencode`, Go `url.PathEscape` (mostly): `A-Za-z0-9-_.~`.
    Unreserved,
    /// Python `quote(s)` with its default `safe='/'`.
    PythonPath,
    /// Python `quote_plus` and `urlencode`: `A-Za-z0-9-_.~`, space as `+`.
    PythonForm,
    /// WHATWG `URLSearchParams` (browsers, Node): `A-Za-z0-9*-._`, space as `+`.
    UrlSearchParams,
    /// PHP `urlencode`, Go `url.QueryEscape`: `A-Za-z0-9-_.` (and `~` in Go), space as `+`.
    PhpForm,
    /// JavaScript `encodeURI`: also leaves `;,/?:@&=+$#` alone.
    Uri,
}

impl PercentSet {
    const ALL: [PercentSet; 7] = [
        PercentSet::Component,
        PercentSet::Unreserved,
        PercentSet::PythonPath,
        PercentSet::PythonForm,
        PercentSet::UrlSearchParams,
        PercentSet::PhpForm,
        PercentSet::Uri,
    ];

    fn keeps(self, b: u8) -> bool {
        let extra: &[u8] = match self {
            PercentSet::Component => b"-_.!~*'()",
            PercentSet::Unreserved | PercentSet::PythonForm => b"-_.~",
            PercentSet::PythonPath => b"-_.~/",
            PercentSet::UrlSearchParams => b"*-._",
            PercentSet::PhpForm => b"-_.",
            PercentSet::Uri => b"-_.!~*'();,/?:@&=+$#",
        };
        b.is_ascii_alphanumeric() || extra.contains(&b)
    }

    fn plus(self) -> bool {
        matches!(
            self,
            PercentSet::PythonForm | PercentSet::UrlSearchParams | PercentSet::PhpForm
        )
    }
}

/// The inside of a JSON string, as each family of encoders writes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum JsonStyle {
    /// serde_json, JavaScript's `JSON.stringify`, Python with `ensure_ascii=False`.
    Serde,
    /// As `Serde`, with `/` escaped (PHP's `json_encode`, some Java encoders).
    SerdeSlash,
    /// Python's `json.dumps` default: everything outside printable ASCII as `\uXXXX`.
    PythonAscii,
    /// Go's `encoding/json`: HTML-safe `<>&`, and U+2028/U+2029 escaped.
    Go,
}

/// How base64 ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tail {
    /// With `=` padding.
    Pad,
    /// Without padding; the last character carries the value's last bits and zeros.
    NoPad,
    /// Only characters made entirely of the value's bits: the value inside a longer blob.
    Bare,
}

/// One way of writing a value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Encoding {
    /// The bytes themselves.
    Raw,
    Base64 {
        url_safe: bool,
        tail: Tail,
    },
    /// Two digits per byte; `sep` (0 for none) between bytes: `od -An -tx1`, `ab:cd:ef`.
    Hex {
        upper: bool,
        sep: u8,
    },
    Percent {
        set: PercentSet,
        upper: bool,
    },
    Json(JsonStyle),
    /// Python's `repr()` of a `str` (and so `print(os.environ)`), inside the quotes;
    /// `quote` is the quote character Python picks for this value.
    PythonRepr {
        quote: u8,
    },
    /// Python's `repr()` of `bytes` (`os.environb`, `b'...'`), inside the quotes.
    PythonBytes {
        quote: u8,
    },
    /// Node's `util.inspect` (`console.log({v})`), inside the quotes.
    Node {
        quote: u8,
    },
    /// Go's `%q` (`strconv.Quote`), or `%+q` (ASCII only), inside the quotes.
    GoQuote {
        ascii: bool,
    },
    /// bash `printf %q` of a value without control characters: backslashes.
    ShellBackslash,
    /// bash `printf %q` / `${v@Q}` of a value with control characters: the inside of
    /// `$'...'`; `octal` writes every non-ASCII byte as `\NNN` (the C locale).
    ShellAnsiC {
        octal: bool,
    },
    /// `${v@Q}` and most shell quoting libraries: `'` written `'\''`.
    ShellSingle,
}

/// A recipe for one form of one secret.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Form {
    /// Which secret (index into the scrubber's values).
    pub secret: u32,
    /// The slice of the value that is encoded.
    pub start: u32,
    pub end: u32,
    /// Zero bytes before the slice: its offset inside a 3-byte base64 group.
    pub shift: u8,
    /// A `\n` after the slice, as `echo "$SECRET" | base64` encodes it.
    pub newline: bool,
    /// Encoded bytes dropped at the start (those that mix with the shift).
    pub skip: u8,
    pub encoding: Encoding,
}

/// The bytes a form encodes: `shift` zeros, the slice, maybe a newline.
#[derive(Clone, Copy)]
struct Source<'a> {
    shift: usize,
    body: &'a [u8],
    newline: bool,
}

impl Source<'_> {
    fn len(&self) -> usize {
        self.shift + self.body.len() + usize::from(self.newline)
    }

    fn get(&self, i: usize) -> u8 {
        if i < self.shift {
            0
        } else if i - self.shift < self.body.len() {
            self.body[i - self.shift]
        } else {
            b'\n'
        }
    }

    /// The UTF-8 character starting at `i`, if it is one (for the newline: `\n`).
    fn char_at(&self, i: usize) -> Option<(char, usize)> {
        let b = self.get(i);
        if b < 0x80 {
            return Some((char::from(b), 1));
        }
        let width = match b {
            0xc2..=0xdf => 2,
            0xe0..=0xef => 3,
            0xf0..=0xf4 => 4,
            _ => return None,
        };
        if i + width > self.len() {
            return None;
        }
        let mut bytes = [0u8; 4];
        for (k, slot) in bytes.iter_mut().enumerate().take(width) {
            *slot = self.get(i + k);
        }
        let c = std::str::from_utf8(&bytes[..width]).ok()?.chars().next();
        bytes.fill(0);
        c.map(|c| (c, width))
    }
}

/// Produces a form's bytes one at a time. Small and `Copy`: the engine keeps one per
/// occurrence in progress.
#[derive(Clone, Copy)]
pub struct Cursor {
    /// Next byte of the source to expand.
    pos: u32,
    /// The expansion of the last unit, and how much of it was handed out.
    unit: [u8; 16],
    unit_len: u8,
    unit_pos: u8,
    /// Encoded bytes still to drop at the start.
    skip: u8,
}

impl Cursor {
    pub fn new(form: &Form) -> Cursor {
        Cursor {
            pos: 0,
            unit: [0; 16],
            unit_len: 0,
            unit_pos: 0,
            skip: form.skip,
        }
    }

    /// The next byte of `form` (whose secret is `value`), or `None` at its end.
    pub fn next(&mut self, form: &Form, value: &[u8]) -> Option<u8> {
        let src = Source {
            shift: usize::from(form.shift),
            body: &value[form.start as usize..form.end as usize],
            newline: form.newline,
        };
        loop {
            if self.unit_pos < self.unit_len {
                let b = self.unit[usize::from(self.unit_pos)];
                self.unit_pos += 1;
                // Line breaks are skipped in the output, so never part of a form.
                if b == b'\r' || b == b'\n' {
                    continue;
                }
                if self.skip > 0 {
                    self.skip -= 1;
                    continue;
                }
                return Some(b);
            }
            let pos = self.pos as usize;
            if pos >= src.len() {
                return None;
            }
            let mut next = pos;
            let n = expand(form.encoding, &src, &mut next, &mut self.unit);
            self.pos = u32::try_from(next).expect("values are shorter than 4 GiB");
            self.unit_len = n as u8;
            self.unit_pos = 0;
        }
    }

    /// Overwrites the buffered expansion, which holds bytes of a secret's encoding.
    pub fn wipe(&mut self) {
        self.unit.fill(0);
    }
}

/// Writes `form` out in full (tests and `derive_patterns`; the engine never does this).
pub fn materialize(form: &Form, value: &[u8]) -> Zeroizing<Vec<u8>> {
    // Enough for every encoding but the widest escapes, so growth is rare.
    let guess = 4 * (form.end - form.start) as usize + 8;
    let mut out = Zeroizing::new(Vec::with_capacity(guess));
    let mut cursor = Cursor::new(form);
    while let Some(b) = cursor.next(form, value) {
        if out.len() == out.capacity() {
            // Grow by hand so no unwiped copy is left behind.
            let mut grown = Zeroizing::new(Vec::with_capacity(out.capacity().max(32) * 2));
            grown.extend_from_slice(&out);
            out = grown;
        }
        out.push(b);
    }
    cursor.wipe();
    out
}

const HEX_LOWER: &[u8; 16] = b"0123456789abcdef";
const HEX_UPPER: &[u8; 16] = b"0123456789ABCDEF";
const B64_STD: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
const B64_URL: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/// Collects one unit's expansion.
struct Unit<'a> {
    out: &'a mut [u8; 16],
    n: usize,
}

impl Unit<'_> {
    fn push(&mut self, b: u8) {
        self.out[self.n] = b;
        self.n += 1;
    }

    fn extend(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.push(b);
        }
    }

    /// `prefix` and then `digits` hex digits of `v`.
    fn hex(&mut self, prefix: &[u8], v: u32, digits: u32, table: &[u8; 16]) {
        self.extend(prefix);
        for k in (0..digits).rev() {
            self.push(table[((v >> (4 * k)) & 0xf) as usize]);
        }
    }

    fn utf8(&mut self, c: char) {
        let mut buf = [0u8; 4];
        self.extend(c.encode_utf8(&mut buf).as_bytes());
        buf.fill(0);
    }
}

/// Expands the unit of `src` at `*pos` (one byte, one base64 group, or one character),
/// advances `*pos` past it and returns how many bytes it wrote into `out`.
fn expand(encoding: Encoding, src: &Source<'_>, pos: &mut usize, out: &mut [u8; 16]) -> usize {
    let mut u = Unit { out, n: 0 };
    let i = *pos;
    let b = src.get(i);
    *pos = i + 1;
    match encoding {
        Encoding::Raw => {
            if b != b'\r' && b != b'\n' {
                u.push(b);
            }
        }
        Encoding::Base64 { url_safe, tail } => {
            let table = if url_safe { B64_URL } else { B64_STD };
            let n = (src.len() - i).min(3);
            let mut group = u32::from(b) << 16;
            if n > 1 {
                group |= u32::from(src.get(i + 1)) << 8;
            }
            if n > 2 {
                group |= u32::from(src.get(i + 2));
            }
            *pos = i + n;
            // Characters whose six bits all come from the source, then (unless Bare)
            // the one that mixes in zero padding, then (Pad) the `=`.
            let whole = [0, 1, 2, 4][n];
            for k in 0..whole {
                u.push(table[((group >> (18 - 6 * k)) & 0x3f) as usize]);
            }
            if n < 3 && tail != Tail::Bare {
                u.push(table[((group >> (18 - 6 * whole)) & 0x3f) as usize]);
                if tail == Tail::Pad {
                    u.extend(&b"=="[..3 - n]);
                }
            }
        }
        Encoding::Hex { upper, sep } => {
            if sep != 0 && i > 0 {
                u.push(sep);
            }
            let table = if upper { HEX_UPPER } else { HEX_LOWER };
            u.hex(b"", u32::from(b), 2, table);
        }
        Encoding::Percent { set, upper } => {
            if set.keeps(b) {
                u.push(b);
            } else if b == b' ' && set.plus() {
                u.push(b'+');
            } else {
                let table = if upper { HEX_UPPER } else { HEX_LOWER };
                u.hex(b"%", u32::from(b), 2, table);
            }
        }
        Encoding::Json(style) => json(style, src, i, pos, &mut u),
        Encoding::PythonRepr { quote } => match src.char_at(i) {
            Some((c, width)) => {
                *pos = i + width;
                match c {
                    '\\' => u.extend(b"\\\\"),
                    '\n' => u.extend(b"\\n"),
                    '\r' => u.extend(b"\\r"),
                    '\t' => u.extend(b"\\t"),
                    c if c as u32 == u32::from(quote) => u.extend(&[b'\\', quote]),
                    c if is_printable(c) => u.utf8(c),
                    c if (c as u32) < 0x100 => u.hex(b"\\x", c as u32, 2, HEX_LOWER),
                    c if (c as u32) < 0x10000 => u.hex(b"\\u", c as u32, 4, HEX_LOWER),
                    c => u.hex(b"\\U", c as u32, 8, HEX_LOWER),
                }
            }
            // os.environ decodes with surrogateescape: a stray byte is U+DC80..U+DCFF.
            None => u.hex(b"\\u", 0xdc00 | u32::from(b), 4, HEX_LOWER),
        },
        Encoding::PythonBytes { quote } => match b {
            b'\\' => u.extend(b"\\\\"),
            b'\n' => u.extend(b"\\n"),
            b'\r' => u.extend(b"\\r"),
            b'\t' => u.extend(b"\\t"),
            b if b == quote => u.extend(&[b'\\', quote]),
            b' '..=b'~' => u.push(b),
            b => u.hex(b"\\x", u32::from(b), 2, HEX_LOWER),
        },
        Encoding::Node { quote } => match src.char_at(i) {
            Some((c, width)) => {
                *pos = i + width;
                match c {
                    '\\' => u.extend(b"\\\\"),
                    '\u{8}' => u.extend(b"\\b"),
                    '\t' => u.extend(b"\\t"),
                    '\n' => u.extend(b"\\n"),
                    '\u{c}' => u.extend(b"\\f"),
                    '\r' => u.extend(b"\\r"),
                    '\'' if quote == b'\'' => u.extend(b"\\'"),
                    '\0'..='\u{1f}' | '\u{7f}'..='\u{9f}' => {
                        u.hex(b"\\x", c as u32, 2, HEX_UPPER);
                    }
                    c => u.utf8(c),
                }
            }
            None => u.utf8(char::REPLACEMENT_CHARACTER),
        },
        Encoding::GoQuote { ascii } => match src.char_at(i) {
            Some((c, width)) => {
                *pos = i + width;
                match c {
                    '"' => u.extend(b"\\\""),
                    '\\' => u.extend(b"\\\\"),
                    '\u{7}' => u.extend(b"\\a"),
                    '\u{8}' => u.extend(b"\\b"),
                    '\u{c}' => u.extend(b"\\f"),
                    '\n' => u.extend(b"\\n"),
                    '\r' => u.extend(b"\\r"),
                    '\t' => u.extend(b"\\t"),
                    '\u{b}' => u.extend(b"\\v"),
                    '\0'..='\u{1f}' | '\u{7f}' => u.hex(b"\\x", c as u32, 2, HEX_LOWER),
                    c if (c.is_ascii() || !ascii) && is_printable(c) => u.utf8(c),
                    c if (c as u32) < 0x10000 => u.hex(b"\\u", c as u32, 4, HEX_LOWER),
                    c => u.hex(b"\\U", c as u32, 8, HEX_LOWER),
                }
            }
            None => u.hex(b"\\x", u32::from(b), 2, HEX_LOWER),
        },
        Encoding::ShellBackslash => {
            // bash's sh_backslash_quote, as `printf %q` calls it.
            let special = b"\t\n !\"$&'()*,;<>?[\\]^`{|}".contains(&b)
                || (b == b'#' && i == 0)
                || (b == b'~' && (i == 0 || matches!(src.get(i - 1), b':' | b'=')));
            if special {
                u.push(b'\\');
            }
            u.push(b);
        }
        Encoding::ShellAnsiC { octal } => {
            let octal_byte = |u: &mut Unit<'_>, b: u8| {
                u.extend(&[
                    b'\\',
                    b'0' + (b >> 6),
                    b'0' + ((b >> 3) & 7),
                    b'0' + (b & 7),
                ]);
            };
            match b {
                0x1b => u.extend(b"\\E"),
                0x07 => u.extend(b"\\a"),
                0x0b => u.extend(b"\\v"),
                0x08 => u.extend(b"\\b"),
                0x0c => u.extend(b"\\f"),
                b'\n' => u.extend(b"\\n"),
                b'\r' => u.extend(b"\\r"),
                b'\t' => u.extend(b"\\t"),
                b'\\' | b'\'' => u.extend(&[b'\\', b]),
                b' '..=b'~' => u.push(b),
                0..=0x7f => octal_byte(&mut u, b),
                _ if octal => octal_byte(&mut u, b),
                _ => match src.char_at(i) {
                    Some((c, width)) if is_printable(c) => {
                        *pos = i + width;
                        u.utf8(c);
                    }
                    // One byte at a time: each byte of the character becomes `\NNN`.
                    _ => octal_byte(&mut u, b),
                },
            }
        }
        Encoding::ShellSingle => {
            if b == b'\'' {
                u.extend(b"'\\''");
            } else {
                u.push(b);
            }
        }
    }
    u.n
}

fn json(style: JsonStyle, src: &Source<'_>, i: usize, pos: &mut usize, u: &mut Unit<'_>) {
    let escape = |u: &mut Unit<'_>, c: u32| u.hex(b"\\u", c, 4, HEX_LOWER);
    let b = src.get(i);
    match b {
        b'"' => return u.extend(b"\\\""),
        b'\\' => return u.extend(b"\\\\"),
        b'/' if style == JsonStyle::SerdeSlash => return u.extend(b"\\/"),
        0x08 => return u.extend(b"\\b"),
        0x0c => return u.extend(b"\\f"),
        b'\n' => return u.extend(b"\\n"),
        b'\r' => return u.extend(b"\\r"),
        b'\t' => return u.extend(b"\\t"),
        0..=0x1f => return escape(u, u32::from(b)),
        _ => {}
    }
    match style {
        JsonStyle::Serde | JsonStyle::SerdeSlash => u.push(b),
        JsonStyle::PythonAscii => match src.char_at(i) {
            Some((c, width)) if c > '~' => {
                *pos = i + width;
                let mut units = [0u16; 2];
                for &unit in c.encode_utf16(&mut units).iter() {
                    escape(u, u32::from(unit));
                }
                units.fill(0);
            }
            _ => u.push(b),
        },
        JsonStyle::Go => match src.char_at(i) {
            Some((c @ ('<' | '>' | '&' | '\u{2028}' | '\u{2029}'), width)) => {
                *pos = i + width;
                escape(u, c as u32);
            }
            Some((c, width)) => {
                *pos = i + width;
                u.utf8(c);
            }
            None => u.push(b),
        },
    }
}

/// Whether Python (`str.isprintable`) and Go (`unicode.IsPrint`) print a character as
/// it is. Both escape control and format characters and separators other than the
/// ASCII space; this knows the ones text actually contains (unassigned code points are
/// taken as printable).
fn is_printable(c: char) -> bool {
    !matches!(c as u32,
        0..=0x1f | 0x7f..=0xa0 | 0xad | 0x600..=0x605 | 0x61c | 0x6dd | 0x70f | 0x1680
        | 0x180e | 0x2000..=0x200f | 0x2028..=0x202f | 0x205f..=0x2064 | 0x2066..=0x206f
        | 0x3000 | 0xd800..=0xf8ff | 0xfeff | 0xfff9..=0xfffb | 0x110bd | 0x1d173..=0x1d17a
        | 0xe0001 | 0xe0020..=0xe007f | 0xf0000..)
}

/// Whether a line of a multi-line secret is masked on its own: it holds a word of at
/// least [`LINE_WORD_LEN`] (or `min_len`) bytes. Lines such as `{`, `},` or
/// `"type": "service_account",` are not: masking them would mask the same lines in
/// unrelated output. They are still masked as part of the whole value.
pub fn line_is_telling(line: &[u8], min_len: usize) -> bool {
    let need = LINE_WORD_LEN.max(min_len);
    line.split(|b| b.is_ascii_whitespace() || b"\"'`,;:(){}[]<>".contains(b))
        .any(|word| word.len() >= need)
}

/// The forms of the secret `index` whose value is `value`, appended to `out`. The caller
/// has checked that the value (without one trailing newline) is at least `min_len` long.
pub fn forms_of(index: u32, value: &[u8], min_len: usize, out: &mut Vec<Form>) {
    let len = u32::try_from(value.len()).expect("values are shorter than 4 GiB");
    let trimmed = strip_one_newline(value).len() as u32;
    let mut cores = vec![(len, false)];
    if trimmed != len {
        cores.push((trimmed, false));
    } else {
        // `echo "$SECRET" | base64`: only base64 needs it, the other encodings write the
        // newline as bytes of its own.
        cores.push((len, true));
    }
    let mut seen = [false; 256];
    value.iter().for_each(|&b| seen[usize::from(b)] = true);
    // The distinct bytes of the value, so each question below costs at most 256 steps.
    let present: Vec<u8> = (0..=255u8).filter(|&b| seen[usize::from(b)]).collect();
    let has = |pred: &dyn Fn(u8) -> bool| present.iter().any(|&b| pred(b));
    let utf8 = std::str::from_utf8(value).is_ok();
    let non_ascii = has(&|b| b >= 0x80);
    let control = has(&|b| b < 0x20 || b == 0x7f);

    for (end, newline) in cores {
        let form = |shift: u8, skip: u8, encoding| Form {
            secret: index,
            start: 0,
            end,
            shift,
            newline,
            skip,
            encoding,
        };
        for url_safe in [false, true] {
            for tail in [Tail::Pad, Tail::NoPad, Tail::Bare] {
                for shift in 0..3u8 {
                    // The first characters mix the value's first bits with the bytes
                    // before it: 0, 2 or 3 of them.
                    let skip = (8 * shift).div_ceil(6);
                    out.push(form(shift, skip, Encoding::Base64 { url_safe, tail }));
                }
            }
        }
        if newline {
            continue;
        }
        out.push(form(0, 0, Encoding::Raw));
        for upper in [false, true] {
            for sep in [0, b' ', b':'] {
                out.push(form(0, 0, Encoding::Hex { upper, sep }));
            }
            for set in PercentSet::ALL {
                if has(&|b| !set.keeps(b)) && (upper || has(&|b| needs_hex_letter(set, b))) {
                    out.push(form(0, 0, Encoding::Percent { set, upper }));
                }
            }
        }
        let json_changes = has(&|b| b < 0x20 || b == b'"' || b == b'\\');
        if json_changes {
            out.push(form(0, 0, Encoding::Json(JsonStyle::Serde)));
        }
        if seen[usize::from(b'/')] {
            out.push(form(0, 0, Encoding::Json(JsonStyle::SerdeSlash)));
        }
        if utf8 && (json_changes || has(&|b| b >= 0x7f)) {
            out.push(form(0, 0, Encoding::Json(JsonStyle::PythonAscii)));
        }
        if utf8 && (json_changes || has(&|b| b"<>&".contains(&b) || b >= 0x80)) {
            out.push(form(0, 0, Encoding::Json(JsonStyle::Go)));
        }
        let (single, double) = (seen[usize::from(b'\'')], seen[usize::from(b'"')]);
        let python_quote = if single && !double { b'"' } else { b'\'' };
        let escapes_any = has(&|b| !(0x20..0x7f).contains(&b) || b == b'\\');
        if escapes_any || (single && double) {
            out.push(form(
                0,
                0,
                Encoding::PythonRepr {
                    quote: python_quote,
                },
            ));
            out.push(form(
                0,
                0,
                Encoding::PythonBytes {
                    quote: python_quote,
                },
            ));
        }
        if utf8 {
            let node_quote = if !single {
                b'\''
            } else if !double {
                b'"'
            } else if !seen[usize::from(b'`')] && !value.windows(2).any(|w| w == b"${") {
                b'`'
            } else {
                b'\''
            };
            if escapes_any || node_quote == b'\'' && single {
                out.push(form(0, 0, Encoding::Node { quote: node_quote }));
            }
        }
        if escapes_any || double {
            out.push(form(0, 0, Encoding::GoQuote { ascii: false }));
        }
        if non_ascii {
            out.push(form(0, 0, Encoding::GoQuote { ascii: true }));
        }
        // bash quotes with `$'...'` when a character is not printable: a control
        // character, or (in a UTF-8 locale) a non-printable one such as U+2028, or (in
        // the C locale) any non-ASCII byte.
        if !control {
            out.push(form(0, 0, Encoding::ShellBackslash));
        }
        if control || non_ascii {
            out.push(form(0, 0, Encoding::ShellAnsiC { octal: false }));
            out.push(form(0, 0, Encoding::ShellAnsiC { octal: true }));
        }
        if single {
            out.push(form(0, 0, Encoding::ShellSingle));
        }
    }
    let body = &value[..trimmed as usize];
    if body.contains(&b'\n') {
        let mut start = 0;
        for line in body.split(|&b| b == b'\n') {
            let end = start + line.len();
            // Without its indentation and trailing blanks (and `\r`): the same line
            // logged with other indentation is still the secret's.
            let lead = line.iter().take_while(|b| b.is_ascii_whitespace()).count();
            let trail = line[lead..]
                .iter()
                .rev()
                .take_while(|b| b.is_ascii_whitespace())
                .count();
            if line_is_telling(line, min_len) {
                out.push(Form {
                    secret: index,
                    start: (start + lead) as u32,
                    end: (end - trail) as u32,
                    shift: 0,
                    newline: false,
                    skip: 0,
                    encoding: Encoding::Raw,
                });
            }
            start = end + 1;
        }
    }
}

/// `value` without one trailing `\n` or `\r\n`.
pub fn strip_one_newline(value: &[u8]) -> &[u8] {
    value
        .strip_suffix(b"\r\n")
        .or_else(|| value.strip_suffix(b"\n"))
        .unwrap_or(value)
}

/// Whether percent-encoding `b` under `set` writes a hex letter (so upper and lower
/// case differ).
fn needs_hex_letter(set: PercentSet, b: u8) -> bool {
    !(set.keeps(b) || b == b' ' && set.plus()) && (b >> 4 >= 10 || b & 0xf >= 10)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encode(value: &[u8], encoding: Encoding) -> String {
        let form = Form {
            secret: 0,
            start: 0,
            end: value.len() as u32,
            shift: 0,
            newline: false,
            skip: 0,
            encoding,
        };
        String::from_utf8(materialize(&form, value).to_vec()).unwrap()
    }

    fn all_forms(value: &[u8]) -> Vec<String> {
        let mut forms = Vec::new();
        forms_of(0, value, 4, &mut forms);
        forms
            .iter()
            .map(|f| String::from_utf8_lossy(&materialize(f, value)).into_owned())
            .collect()
    }

    // Expected strings come from the real programs: bash 5.2 `printf %q` and `${v@Q}`
    // (LC_ALL=C.UTF-8 and LC_ALL=C), Python 3.11 `repr()`, Node 18 `console.log({v})`.
    // Go was not at hand: its expectations follow strconv.Quote's documented rules.
    const TRICKY: &str = "p\u{e4}/ss w\"rd\\<&>\u{2028}\u{1f600}\t!*'$#~=;";

    #[test]
    fn python_repr() {
        let v = TRICKY.as_bytes();
        let f = all_forms(v);
        assert!(f.contains(&"p\u{e4}/ss w\"rd\\\\<&>\\u2028\u{1f600}\\t!*\\'$#~=;".into()));
        assert!(f.contains(
            &"p\\xc3\\xa4/ss w\"rd\\\\<&>\\xe2\\x80\\xa8\\xf0\\x9f\\x98\\x80\\t!*\\'$#~=;".into()
        ));
        assert_eq!(
            encode(
                "a\x01b\x1bc\x7fd\u{a0}e\u{85}f\u{200b}g".as_bytes(),
                Encoding::PythonRepr { quote: b'\'' }
            ),
            "a\\x01b\\x1bc\\x7fd\\xa0e\\x85f\\u200bg"
        );
        // "it's" is written with double quotes, and the ' is not escaped
        assert!(all_forms(b"it's a \\ secret").contains(&"it's a \\\\ secret".into()));
        assert_eq!(
            encode(b"ab\xffcd", Encoding::PythonRepr { quote: b'\'' }),
            "ab\\udcffcd"
        );
    }

    #[test]
    fn node_inspect() {
        let f = all_forms(TRICKY.as_bytes());
        assert!(f.contains(&"p\u{e4}/ss w\"rd\\\\<&>\u{2028}\u{1f600}\\t!*'$#~=;".into()));
        assert_eq!(
            encode(
                "a\x01b\x1bc\x7fd\u{a0}e\u{85}f\u{200b}g".as_bytes(),
                Encoding::Node { quote: b'\'' }
            ),
            "a\\x01b\\x1Bc\\x7Fd\u{a0}e\\x85f\u{200b}g"
        );
        assert!(all_forms(b"it's \"q\" `x`").contains(&"it\\'s \"q\" `x`".into()));
    }

    #[test]
    fn go_quote() {
        let f = all_forms(TRICKY.as_bytes());
        assert!(f.contains(&"p\u{e4}/ss w\\\"rd\\\\<&>\\u2028\u{1f600}\\t!*'$#~=;".into()));
        assert!(f.contains(&"p\\u00e4/ss w\\\"rd\\\\<&>\\u2028\\U0001f600\\t!*'$#~=;".into()));
        assert_eq!(
            encode(b"a\x07\x0b\x01\xff", Encoding::GoQuote { ascii: false }),
            "a\\a\\v\\x01\\xff"
        );
    }

    #[test]
    fn shell_quote() {
        let f = all_forms(TRICKY.as_bytes());
        // printf %q and ${v@Q} in a UTF-8 locale
        assert!(f.contains(&"p\u{e4}/ss w\"rd\\\\<&>\\342\\200\\250\u{1f600}\\t!*\\'$#~=;".into()));
        assert_eq!(encode(b"a=b~c #d", Encoding::ShellBackslash), "a=b~c\\ #d");
        assert_eq!(
            encode(b"#a~b:~c=~d", Encoding::ShellBackslash),
            "\\#a~b:\\~c=\\~d"
        );
        assert!(all_forms(b"p\"w'd\\x").contains(&"p\\\"w\\'d\\\\x".into()));
        assert_eq!(
            encode(
                "a\x01b\x1bc\x7fd\u{e4}".as_bytes(),
                Encoding::ShellAnsiC { octal: false }
            ),
            "a\\001b\\Ec\\177d\u{e4}"
        );
        // the C locale
        assert!(all_forms("a\u{e4}bcd".as_bytes()).contains(&"a\\303\\244bcd".into()));
        assert!(all_forms(b"it's").contains(&"it'\\''s".into()));
    }

    #[test]
    fn percent_variants() {
        let f = all_forms(b"a b/c+d~e*f'g");
        for want in [
            "a%20b%2Fc%2Bd~e*f'g",     // encodeURIComponent
            "a%20b%2Fc%2Bd~e%2Af%27g", // quote(safe='')
            "a%20b/c%2Bd~e%2Af%27g",   // quote()
            "a+b%2Fc%2Bd~e%2Af%27g",   // quote_plus, urlencode
            "a+b%2Fc%2Bd%7Ee*f%27g",   // URLSearchParams
            "a+b%2Fc%2Bd%7Ee%2Af%27g", // PHP urlencode
            "a%20b/c+d~e*f'g",         // encodeURI
            "a%20b%2fc%2bd~e*f'g",     // lower case
        ] {
            assert!(f.contains(&want.into()), "{want}: {f:?}");
        }
    }

    #[test]
    fn hex_with_separators() {
        let f = all_forms(b"\x01\xabcd");
        assert!(f.contains(&"01ab6364".into()));
        assert!(f.contains(&"01AB6364".into()));
        assert!(f.contains(&"01 ab 63 64".into()));
        assert!(f.contains(&"01:ab:63:64".into()));
        assert!(f.contains(&"01:AB:63:64".into()));
    }

    #[test]
    fn base64_tails_and_shifts() {
        use base64::Engine as _;
        use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
        let v = TRICKY.as_bytes();
        let f = all_forms(v);
        assert!(f.contains(&STANDARD.encode(v)));
        assert!(f.contains(&URL_SAFE_NO_PAD.encode(v)));
        let mut echoed = v.to_vec();
        echoed.push(b'\n');
        assert!(f.contains(&STANDARD.encode(&echoed)));
        // one byte before it: the first two characters mix, the rest is the value's
        let shifted = STANDARD.encode([b"x", v].concat());
        assert!(f.contains(&shifted[2..].to_owned()));
    }

    #[test]
    fn lines_are_masked_alone_only_when_telling() {
        assert!(!line_is_telling(b"},", 4));
        assert!(!line_is_telling(b"  \"enabled\": true,", 4));
        assert!(!line_is_telling(b"  \"type\": \"service_account\",", 4));
        assert!(!line_is_telling(b"-----BEGIN PRIVATE KEY-----", 4));
        assert!(line_is_telling(b"MIIEvQIBADANBgkqhkiG9w0BAQEFAASC", 4));
        assert!(line_is_telling(
            b"  \"private_key_id\": \"1f2e3d4c5b6a79880f1e2d3c\",",
            4
        ));
        assert!(!line_is_telling(b"short-but-ok", 4));
        assert!(!line_is_telling(b"0123456789abcdef", 20));
    }

    #[test]
    fn cursor_skips_line_breaks_in_raw_values() {
        assert_eq!(encode(b"ab\r\ncd\n", Encoding::Raw), "abcd");
    }
}
