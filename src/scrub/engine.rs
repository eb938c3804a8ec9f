//! The compiled matcher: an Aho-Corasick automaton over the first [`ANCHOR_LEN`] (16) bytes
//! of every form (its *anchor*), the forms behind each anchor, and prefilters that let a
//! search jump over text that cannot start an occurrence.
//!
//! A form no longer than its anchor is complete when the automaton reports the anchor; a
//! longer one becomes a candidate that the stream ([`super::stream`]) checks byte by byte
//! against the value. So the automaton holds at most `ANCHOR_LEN` bytes per form, and
//! building it costs the same for a 40-byte token and a 128 KiB CA bundle.
//!
//! Standard (overlapping) semantics: every occurrence of every anchor is reported, and
//! each state stands for exactly one anchor prefix, which is what [`Compiled::depth`]
//! relies on. Small sets get a DFA (up to [`DFA_MAX_MEMORY`]), larger ones a contiguous
//! NFA, the same trade-off `aho_corasick::AhoCorasick` makes.

use aho_corasick::automaton::Automaton;
use aho_corasick::{AhoCorasick, MatchKind, StartKind, dfa, nfa};
use zeroize::Zeroizing;

use super::forms::{ANCHOR_LEN, Cursor, Form};

/// Which automaton was compiled.
pub(super) enum Engine {
    Empty,
    Dfa(dfa::DFA),
    Contiguous(nfa::contiguous::NFA),
    Noncontiguous(nfa::noncontiguous::NFA),
}

/// Runs `$body` with `$aut` bound to the concrete automaton, so the search loops are
/// monomorphized instead of going through a vtable per byte.
macro_rules! with_automaton {
    ($engine:expr, $aut:ident => $body:expr, empty => $empty:expr) => {
        match $engine {
            $crate::scrub::engine::Engine::Empty => $empty,
            $crate::scrub::engine::Engine::Dfa($aut) => $body,
            $crate::scrub::engine::Engine::Contiguous($aut) => $body,
            $crate::scrub::engine::Engine::Noncontiguous($aut) => $body,
        }
    };
}
pub(super) use with_automaton;

/// What an anchor stands for: a form, and whether the anchor is all of it.
#[derive(Clone, Copy)]
pub(super) struct Target {
    pub form: u32,
    pub complete: bool,
}

pub(super) struct Compiled {
    pub engine: Engine,
    /// Anchor (pattern ID) -> its targets, as a range into `targets`.
    pub anchor_targets: Vec<(u32, u32)>,
    pub targets: Vec<Target>,
    /// Anchor lengths by pattern ID.
    pub anchor_len: Vec<u32>,
    /// Leftmost searchers over the anchors' first [`FINDER_KEY_LEN`] bytes, for
    /// jumping over text that cannot start an occurrence: `MatchKind::Standard`
    /// (needed for overlapping search) gets no SIMD prefilter, leftmost kinds get
    /// Teddy, which takes up to 64 patterns, hence several shards. Empty when there
    /// would be too many shards to beat a plain automaton scan.
    pub finders: Vec<AhoCorasick>,
    /// A bit per hash of each anchor's first [`GRAM_LEN`] bytes: a position whose next
    /// bytes' bit is clear cannot start an occurrence. The prefilter when there are too
    /// many keys for the finders; with either, it also sorts out the positions just before
    /// a line break (see `stream::scan`). `None` when an anchor is shorter than that.
    pub grams: Option<Box<Grams>>,
    /// With [`Compiled::grams`] as the prefilter, when every anchor is long enough: the
    /// filter of every anchor's grams at offsets below a step, so the scan tests one
    /// position per step instead of every one (see [`next_sampled_hit`]).
    pub sampled: Option<Sampled>,
    /// The bytes an anchor can begin with: a position starting with another byte needs
    /// no walk.
    pub first: [bool; 256],
}

/// See [`Compiled::sampled`].
pub(super) struct Sampled {
    /// Each anchor's grams at offsets `0..step`.
    grams: Box<Grams>,
    /// At most the shortest anchor's length less `GRAM_LEN - 1`, so that the grams a
    /// position can show of an anchor starting up to `step - 1` bytes before it are in
    /// the filter.
    step: usize,
}

/// Every occurrence of an anchor starts with an occurrence of one of these keys (or has
/// a line break within its first key-length bytes; the stream handles that).
pub(super) const FINDER_KEY_LEN: usize = 8;
/// The most keys aho-corasick's packed (Teddy) prefilter takes.
const FINDER_SHARD_KEYS: usize = 64;
/// Each shard scans the whole input; past this many, a plain scan is faster.
pub(super) const FINDER_MAX_SHARDS: usize = 8;

/// A DFA is faster to walk, but its build time and table grow with states x byte classes;
/// past a few hundred anchors the contiguous NFA builds in a fraction of the time, and the
/// automaton is built while the first output waits.
const DFA_MAX_PATTERN_BYTES: usize = 4 * 1024;
pub(super) const DFA_MAX_MEMORY: usize = 32 << 20;

impl Compiled {
    /// Compiles `forms` (whose secrets are `values`), dropping forms shorter than
    /// `min_len`. Infallible: the anchors are bounded, and if even the fallback NFA
    /// cannot be built, nothing matches and the caller is told by [`Compiled::failed`].
    pub fn build(forms: &[Form], values: &[Zeroizing<Vec<u8>>], min_len: usize) -> Compiled {
        // (anchor bytes, target)
        let mut anchored: Vec<(Zeroizing<Vec<u8>>, Target)> = Vec::with_capacity(forms.len());
        for (i, form) in forms.iter().enumerate() {
            let value = &values[form.secret as usize];
            let mut cursor = Cursor::new(form);
            let mut anchor = Zeroizing::new(Vec::with_capacity(ANCHOR_LEN));
            while anchor.len() < ANCHOR_LEN {
                match cursor.next(form, value) {
                    Some(b) => anchor.push(b),
                    None => break,
                }
            }
            let complete = anchor.len() < ANCHOR_LEN || cursor.next(form, value).is_none();
            cursor.wipe();
            if anchor.is_empty() {
                continue;
            }
            if complete && anchor.len() < min_len {
                continue;
            }
            if !complete && min_len > ANCHOR_LEN && form_len(form, value) < min_len {
                continue;
            }
            anchored.push((
                anchor,
                Target {
                    form: i as u32,
                    complete,
                },
            ));
        }
        anchored.sort_by(|a, b| a.0.cmp(&b.0).then(a.1.form.cmp(&b.1.form)));

        let mut anchors: Vec<Zeroizing<Vec<u8>>> = Vec::new();
        let mut anchor_targets = Vec::new();
        let mut targets = Vec::with_capacity(anchored.len());
        for (anchor, target) in anchored {
            if anchors.last().is_none_or(|last| **last != *anchor) {
                anchors.push(anchor);
                anchor_targets.push((targets.len() as u32, targets.len() as u32));
            }
            targets.push(target);
            anchor_targets.last_mut().expect("pushed above").1 = targets.len() as u32;
        }
        let anchor_len: Vec<u32> = anchors.iter().map(|a| a.len() as u32).collect();
        let engine = if anchors.is_empty() {
            Engine::Empty
        } else {
            build_engine(&anchors)
        };
        let finders = build_finders(&anchors);
        let grams = build_grams(&anchors);
        let sampled = match (&grams, finders.is_empty()) {
            (Some(_), true) => build_sampled(&anchors),
            _ => None,
        };
        let mut first = [false; 256];
        for anchor in &anchors {
            first[usize::from(anchor[0])] = true;
        }
        Compiled {
            engine,
            anchor_targets,
            targets,
            anchor_len,
            finders,
            grams,
            sampled,
            first,
        }
    }

    /// Whether the automaton could not be built (only if the pattern set is absurdly
    /// large); the stream then masks everything rather than nothing.
    pub fn failed(&self) -> bool {
        matches!(self.engine, Engine::Empty) && !self.anchor_len.is_empty()
    }

    /// The targets of anchor `pid`.
    pub fn targets_of(&self, pid: usize) -> &[Target] {
        let (a, b) = self.anchor_targets[pid];
        &self.targets[a as usize..b as usize]
    }

    /// Approximate heap bytes held by the automata and tables.
    pub fn memory_usage(&self) -> usize {
        let engine = with_automaton!(&self.engine, aut => aut.memory_usage(), empty => 0);
        let finder: usize = self.finders.iter().map(AhoCorasick::memory_usage).sum();
        engine
            + finder
            + self.targets.len() * 8
            + self.anchor_targets.len() * 12
            + self.grams.as_ref().map_or(0, |g| g.len() * 8)
            + self.sampled.as_ref().map_or(0, |s| s.grams.len() * 8)
    }

    pub fn kind(&self) -> &'static str {
        match self.engine {
            Engine::Empty => "empty",
            Engine::Dfa(_) => "dfa",
            Engine::Contiguous(_) => "contiguous-nfa",
            Engine::Noncontiguous(_) => "noncontiguous-nfa",
        }
    }
}

/// The full length of a form (only needed when `--min-mask-len` exceeds the anchor).
fn form_len(form: &Form, value: &[u8]) -> usize {
    let mut cursor = Cursor::new(form);
    let mut n = 0;
    while cursor.next(form, value).is_some() {
        n += 1;
    }
    cursor.wipe();
    n
}

fn build_engine(anchors: &[Zeroizing<Vec<u8>>]) -> Engine {
    let Ok(nnfa) = nfa::noncontiguous::Builder::new()
        .match_kind(MatchKind::Standard)
        .prefilter(true)
        .build(anchors.iter().map(|p| p.as_slice()))
    else {
        return Engine::Empty;
    };
    // A DFA is about 1.5-2x faster than the contiguous NFA here, but its table is
    // states x byte classes x 4 bytes, with about as many states as anchor bytes.
    let total_bytes: usize = anchors.iter().map(|p| p.len()).sum();
    let mut seen = [false; 256];
    anchors
        .iter()
        .flat_map(|p| p.iter())
        .for_each(|&b| seen[usize::from(b)] = true);
    // An upper bound of the table, cheap enough to skip a doomed build: one class
    // per distinct byte plus one for the rest, rounded up to the stride.
    let classes = seen.iter().filter(|&&s| s).count() + 1;
    let estimate = total_bytes * classes.next_power_of_two() * 4;
    if total_bytes <= DFA_MAX_PATTERN_BYTES
        && estimate <= 2 * DFA_MAX_MEMORY
        && let Ok(dfa) = dfa::Builder::new()
            .match_kind(MatchKind::Standard)
            .start_kind(StartKind::Anchored)
            .prefilter(true)
            .build_from_noncontiguous(&nnfa)
        && dfa.memory_usage() <= DFA_MAX_MEMORY
    {
        return Engine::Dfa(dfa);
    }
    match nfa::contiguous::Builder::new()
        .match_kind(MatchKind::Standard)
        .prefilter(true)
        .build_from_noncontiguous(&nnfa)
    {
        Ok(cnfa) => Engine::Contiguous(cnfa),
        Err(_) => Engine::Noncontiguous(nnfa),
    }
}

fn build_finders(anchors: &[Zeroizing<Vec<u8>>]) -> Vec<AhoCorasick> {
    let mut keys: Vec<Zeroizing<Vec<u8>>> = anchors
        .iter()
        .map(|p| Zeroizing::new(p[..p.len().min(FINDER_KEY_LEN)].to_vec()))
        .collect();
    keys.sort_unstable_by(|a, b| a.as_slice().cmp(b.as_slice()));
    keys.dedup_by(|a, b| a.as_slice() == b.as_slice());
    if keys.len() > FINDER_SHARD_KEYS * FINDER_MAX_SHARDS {
        return Vec::new();
    }
    let finders: Option<Vec<AhoCorasick>> = keys
        .chunks(FINDER_SHARD_KEYS)
        .map(|shard| {
            AhoCorasick::builder()
                .match_kind(MatchKind::LeftmostFirst)
                .prefilter(true)
                .build(shard.iter().map(|k| k.as_slice()))
                .ok()
        })
        .collect();
    finders.unwrap_or_default()
}

/// Bytes per gram, and bits in the gram filter (128 KiB: it stays in a core's cache,
/// and 10,000 grams set about 1% of it).
pub(super) const GRAM_LEN: usize = 4;
const GRAM_BITS: u32 = 20;

/// The gram filter: a fixed size, so an index made from a `GRAM_BITS`-bit hash needs no
/// bounds check in the scan loop.
pub(super) type Grams = [u64; (1 << GRAM_BITS) / 64];

/// The filter's bit for the gram `g` (four bytes, little-endian).
#[inline(always)]
fn gram_bit(g: u32) -> usize {
    (g.wrapping_mul(0x9e37_79b1) >> (32 - GRAM_BITS)) as usize
}

/// 1 if the gram `g` may start an anchor, else 0.
#[inline(always)]
fn gram_bit_set(grams: &Grams, g: u32) -> u32 {
    let bit = gram_bit(g);
    ((grams[bit / 64] >> (bit % 64)) & 1) as u32
}

/// Whether the gram of the first [`GRAM_LEN`] bytes of `bytes` is in the filter.
pub(super) fn gram_hit(grams: &Grams, bytes: &[u8]) -> bool {
    gram_bit_set(
        grams,
        u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]),
    ) == 1
}

/// The first position in `q..limit` whose gram is in the filter, or `limit`. Every gram
/// that starts before `limit` lies within `hay` (`limit + GRAM_LEN - 1 <= hay.len()`).
///
/// This loop is most of the cost of masking with many secrets (past the finders' key
/// limit), so it tests eight positions per step from two 8-byte loads: eight independent
/// hashes and lookups, one branch.
#[inline]
pub(super) fn next_gram_hit(grams: &Grams, hay: &[u8], mut q: usize, limit: usize) -> usize {
    debug_assert!(limit + GRAM_LEN - 1 <= hay.len());
    while q + 8 <= limit && q + 12 <= hay.len() {
        let lo = u64::from_le_bytes(hay[q..q + 8].try_into().expect("8 bytes"));
        let hi = u64::from_le_bytes(hay[q + 4..q + 12].try_into().expect("8 bytes"));
        let mut hits = 0u32;
        for k in 0..4 {
            hits |= gram_bit_set(grams, (lo >> (8 * k)) as u32) << k;
            hits |= gram_bit_set(grams, (hi >> (8 * k)) as u32) << (k + 4);
        }
        if hits != 0 {
            return q + hits.trailing_zeros() as usize;
        }
        q += 8;
    }
    while q < limit {
        let g = u32::from_le_bytes([hay[q], hay[q + 1], hay[q + 2], hay[q + 3]]);
        if gram_bit_set(grams, g) == 1 {
            return q;
        }
        q += 1;
    }
    limit
}

/// Like [`next_gram_hit`], testing one position per `step` while that is safe: the next
/// `step + GRAM_LEN - 1` bytes hold no line break (`nl`, the next one or the end of
/// `hay`). An anchor that starts at `p` in `q..q + step` then shows its gram at offset
/// `q + step - 1 - p` at `q + step - 1`, a gram of the sampled filter; only a window
/// whose sample is in it is tested position by position. The rest of the line goes
/// position by position.
#[inline]
pub(super) fn next_sampled_hit(
    sampled: &Sampled,
    grams: &Grams,
    hay: &[u8],
    mut q: usize,
    limit: usize,
    nl: usize,
) -> usize {
    let step = sampled.step;
    let nl = nl.min(hay.len());
    while q < limit && q + step + GRAM_LEN - 1 <= nl {
        let a = q + step - 1;
        let g = u32::from_le_bytes([hay[a], hay[a + 1], hay[a + 2], hay[a + 3]]);
        if gram_bit_set(&sampled.grams, g) == 1 {
            let end = (q + step).min(limit);
            let hit = next_gram_hit(grams, hay, q, end);
            if hit < end {
                return hit;
            }
        }
        q += step;
    }
    next_gram_hit(grams, hay, q.min(limit), limit)
}

/// The sampled filter, if every anchor is long enough for a step of 2 or more; the step
/// shrinks so the filter stays about 6% full at most (false hits cost a window's tests).
fn build_sampled(anchors: &[Zeroizing<Vec<u8>>]) -> Option<Sampled> {
    // At most 13: anchors are at most ANCHOR_LEN (16) bytes.
    let shortest = anchors.iter().map(|a| a.len()).min()?;
    let mut step = (shortest + 1).saturating_sub(GRAM_LEN);
    while step > 1 && anchors.len() * step > (1 << GRAM_BITS) / 16 {
        step -= 1;
    }
    if step < 2 {
        return None;
    }
    let mut grams: Box<Grams> = vec![0u64; (1 << GRAM_BITS) / 64]
        .into_boxed_slice()
        .try_into()
        .expect("the filter's size");
    for anchor in anchors {
        for w in anchor[..step + GRAM_LEN - 1].windows(GRAM_LEN) {
            let bit = gram_bit(u32::from_le_bytes([w[0], w[1], w[2], w[3]]));
            grams[bit / 64] |= 1 << (bit % 64);
        }
    }
    Some(Sampled { grams, step })
}

fn build_grams(anchors: &[Zeroizing<Vec<u8>>]) -> Option<Box<Grams>> {
    if anchors.iter().any(|a| a.len() < GRAM_LEN) {
        return None;
    }
    let mut grams: Box<Grams> = vec![0u64; (1 << GRAM_BITS) / 64]
        .into_boxed_slice()
        .try_into()
        .expect("the filter's size");
    for anchor in anchors {
        let bit = gram_bit(u32::from_le_bytes([
            anchor[0], anchor[1], anchor[2], anchor[3],
        ]));
        grams[bit / 64] |= 1 << (bit % 64);
    }
    Some(grams)
}

#[cfg(test)]
mod tests {
    use super::super::forms::{Encoding, forms_of};
    use super::*;

    fn compile(values: &[&[u8]]) -> Compiled {
        let values: Vec<Zeroizing<Vec<u8>>> =
            values.iter().map(|v| Zeroizing::new(v.to_vec())).collect();
        let mut forms = Vec::new();
        for (i, v) in values.iter().enumerate() {
            forms_of(i as u32, v, 4, &mut forms);
        }
        Compiled::build(&forms, &values, 4)
    }

    #[test]
    fn anchors_are_bounded_whatever_the_value_length() {
        let small = compile(&[&[b'x'; 200]]);
        let large = compile(&[&vec![b'y'; 128 * 1024]]);
        assert!(large.anchor_len.iter().all(|&l| l as usize <= ANCHOR_LEN));
        // the same number of forms, so about the same automaton
        assert!(large.memory_usage() < 2 * small.memory_usage() + 4096);
        assert!(large.targets.iter().any(|t| !t.complete));
    }

    #[test]
    fn identical_anchors_share_one_pattern() {
        // padded and unpadded base64 of a short value start alike; one anchor, two forms
        let c = compile(&[b"secretvalue"]);
        assert!(c.anchor_targets.iter().any(|(a, b)| b - a > 1));
        assert_eq!(c.anchor_len.len(), c.anchor_targets.len());
    }

    #[test]
    fn short_forms_are_dropped() {
        let values = [Zeroizing::new(b"abcd".to_vec())];
        let form = Form {
            secret: 0,
            start: 0,
            end: 4,
            shift: 0,
            newline: false,
            skip: 0,
            encoding: Encoding::Raw,
        };
        assert!(Compiled::build(&[form], &values, 5).anchor_len.is_empty());
        assert_eq!(Compiled::build(&[form], &values, 4).anchor_len, [4]);
    }

    #[test]
    fn too_many_keys_for_the_finders_get_the_gram_filter() {
        let few = compile(&[b"secretvalue"]);
        // the finders, and the filter for the positions before a line break
        assert!(!few.finders.is_empty() && few.grams.is_some());
        let many: Vec<Vec<u8>> = (0..600)
            .map(|i| format!("{i:04}-{}", i * 7919).into_bytes())
            .collect();
        let refs: Vec<&[u8]> = many.iter().map(Vec::as_slice).collect();
        let c = compile(&refs);
        assert!(c.finders.is_empty());
        let grams = c.grams.as_ref().expect("anchors of 4 bytes or more");
        assert!(gram_hit(grams, b"0123"));
    }

    #[test]
    fn small_sets_get_a_dfa_and_large_ones_an_nfa() {
        assert_eq!(compile(&[b"secretvalue"]).kind(), "dfa");
        let many: Vec<Vec<u8>> = (0..600)
            .map(|i| format!("value-{i:04}-xyz-{:0>48}", i * 7).into_bytes())
            .collect();
        let refs: Vec<&[u8]> = many.iter().map(Vec::as_slice).collect();
        assert_eq!(compile(&refs).kind(), "contiguous-nfa");
    }
}
