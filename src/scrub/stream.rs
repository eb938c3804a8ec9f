//! One stream being masked: the held-back tail, the runs of covered bytes not yet
//! written, the automaton's state and the occurrences in progress.
//!
//! Line breaks (`\r`, `\n`) are invisible to matching: the automaton and the candidates
//! skip them, so a form matches however the output wraps it, and an occurrence covers the
//! line breaks inside it. Positions are always positions in the real output.

use aho_corasick::Anchored;
use aho_corasick::automaton::{Automaton, StateID};
use zeroize::{Zeroize, Zeroizing};

use super::engine::{
    FINDER_KEY_LEN, FINDER_MAX_SHARDS, GRAM_LEN, gram_hit, next_gram_hit, next_sampled_hit,
    with_automaton,
};
use super::forms::{Cursor, Form};

/// What a stream needs from its scrubber.
pub(super) struct Ctx<'a> {
    pub compiled: &'a super::engine::Compiled,
    pub forms: &'a [Form],
    pub values: &'a [Zeroizing<Vec<u8>>],
    pub masks: &'a [Box<[u8]>],
}

/// A run of covered bytes not yet written out. Positions are relative to the start of
/// `StreamState::buf` (the first byte not yet written).
#[derive(Debug, Clone, Copy)]
struct Region {
    start: usize,
    end: usize,
    /// Index into the masks of the occurrence that starts the run...
    mask: u32,
    /// ... and that occurrence's length (the longest one wins at the same start, then
    /// the variable given first).
    lead_len: usize,
    /// The mask has already been written (the run began before the held-back tail);
    /// only its remaining bytes are still in `buf`.
    emitted: bool,
}

impl Region {
    /// Joins two overlapping or touching runs; `self` is the one earlier in the list.
    fn merge(self, later: Region) -> Region {
        let keep_self = self.emitted
            || self.start < later.start
            || (self.start == later.start
                && (self.lead_len > later.lead_len
                    || (self.lead_len == later.lead_len && self.mask <= later.mask)));
        let (mask, lead_len) = if keep_self {
            (self.mask, self.lead_len)
        } else {
            (later.mask, later.lead_len)
        };
        Region {
            start: self.start.min(later.start),
            end: self.end.max(later.end),
            mask,
            lead_len,
            emitted: self.emitted,
        }
    }
}

/// An occurrence of a form longer than its anchor, checked byte by byte.
struct Candidate {
    form: u32,
    /// Where it starts, relative to `StreamState::buf`.
    start: usize,
    /// The form's next byte; the cursor yields the ones after it.
    want: u8,
    cursor: Cursor,
}

impl Drop for Candidate {
    fn drop(&mut self) {
        self.want = 0;
        self.cursor.wipe();
    }
}

/// An anchored walk of the automaton from a position where an anchor may start, still
/// alive at the end of the held-back bytes.
#[derive(Clone, Copy)]
struct Walk {
    start: usize,
    state: StateID,
}

/// An occurrence found in this write: `start..end` in `hay`, of a form of secret `mask`.
#[derive(Clone, Copy)]
struct Occurrence {
    start: usize,
    end: usize,
    mask: u32,
}

#[derive(Default)]
pub(super) struct StreamState {
    /// Bytes received but not written out: the held-back tail.
    buf: Vec<u8>,
    /// Sorted, disjoint, not touching.
    regions: Vec<Region>,
    /// Anchored walks that reached the end of the bytes so far.
    walks: Vec<Walk>,
    candidates: Vec<Candidate>,
}

impl Drop for StreamState {
    fn drop(&mut self) {
        self.buf.zeroize();
    }
}

impl StreamState {
    pub fn pending(&self) -> usize {
        self.buf.len()
    }

    pub fn write(&mut self, ctx: &Ctx<'_>, input: &[u8], out: &mut Vec<u8>) {
        if input.is_empty() {
            return;
        }
        if ctx.compiled.failed() {
            // Fail closed: nothing of what could hold a secret goes out.
            out.extend_from_slice(&ctx.masks[0]);
            return;
        }
        if ctx.masks.is_empty() || ctx.compiled.anchor_len.is_empty() {
            out.extend_from_slice(input);
            return;
        }
        if self.buf.is_empty() {
            // The common case: nothing held back, search the caller's bytes directly.
            let keep = self.process(ctx, input, 0, out);
            reserve_wiping(&mut self.buf, input.len() - keep);
            self.buf.extend_from_slice(&input[keep..]);
        } else {
            let old_len = self.buf.len();
            reserve_wiping(&mut self.buf, input.len());
            self.buf.extend_from_slice(input);
            let hay = std::mem::take(&mut self.buf);
            let keep = self.process(ctx, &hay, old_len, out);
            self.buf = hay;
            // `drain` moves the tail down over the written bytes, within the buffer.
            self.buf.drain(..keep);
        }
    }

    pub fn flush(&mut self, ctx: &Ctx<'_>, out: &mut Vec<u8>) {
        let len = self.buf.len();
        emit(ctx.masks, &self.buf, len, &mut self.regions, out, true);
        self.buf.zeroize();
        self.regions.clear();
        self.candidates.clear();
        self.walks.clear();
    }

    /// Scans the held-back bytes again from their start with another automaton (whose
    /// masks extend this one's: see `ScrubStream::switch`) and writes out what is final. A
    /// run whose mask was already written (it began before the held-back bytes) stays
    /// covered, and an occurrence found again inside or across it joins it.
    pub fn rescan(&mut self, ctx: &Ctx<'_>, out: &mut Vec<u8>) {
        let covered = self.regions.first().filter(|r| r.emitted).copied();
        self.regions.clear();
        self.walks.clear();
        self.candidates.clear();
        self.regions.extend(covered);
        let hay = std::mem::take(&mut self.buf);
        let keep = self.process(ctx, &hay, 0, out);
        self.buf = hay;
        self.buf.drain(..keep);
    }

    /// Scans `hay[old_len..]` (the new bytes; the rest is the held-back tail, already
    /// scanned), writes out what is final, and returns where the new tail starts.
    fn process(&mut self, ctx: &Ctx<'_>, hay: &[u8], old_len: usize, out: &mut Vec<u8>) -> usize {
        let mut found = Vec::new();
        with_automaton!(&ctx.compiled.engine, aut => {
            scan(aut, ctx, hay, old_len, &mut self.walks, &mut self.candidates, &mut found)
        }, empty => ());
        merge(&mut self.regions, &mut found);
        let mut keep_from = hay.len();
        for start in self.walks.iter().map(|w| w.start) {
            keep_from = keep_from.min(start);
        }
        for start in self.candidates.iter().map(|c| c.start) {
            keep_from = keep_from.min(start);
        }
        let keep = emit(ctx.masks, hay, keep_from, &mut self.regions, out, false);
        for w in &mut self.walks {
            w.start -= keep;
        }
        for c in &mut self.candidates {
            c.start -= keep;
        }
        keep
    }
}

fn is_break(b: u8) -> bool {
    b == b'\n' || b == b'\r'
}

/// The position `n` bytes other than line breaks before `end`.
fn back_from(hay: &[u8], mut end: usize, mut n: usize) -> usize {
    while n > 0 && end > 0 {
        end -= 1;
        if !is_break(hay[end]) {
            n -= 1;
        }
    }
    end
}

/// Grows `buf` without leaving a stale copy of its contents in freed memory.
fn reserve_wiping(buf: &mut Vec<u8>, additional: usize) {
    let needed = buf.len() + additional;
    if needed <= buf.capacity() {
        return;
    }
    let mut grown = Vec::with_capacity(needed.max(2 * buf.capacity()));
    grown.extend_from_slice(buf);
    buf.zeroize();
    *buf = grown;
}

/// Finds every occurrence that ends in `hay[old_len..]`.
///
/// Walks and candidates left from the last write go on over the new bytes. Then every
/// position of the new bytes where an anchor may start gets an anchored walk of the
/// automaton (at most an anchor's length): the positions where a finder key or a gram
/// occurs, and, because keys are looked for in the raw bytes, the positions less than a
/// key's length before a line break or the end. Without a prefilter, every position.
fn scan<A: Automaton>(
    aut: &A,
    ctx: &Ctx<'_>,
    hay: &[u8],
    old_len: usize,
    walks: &mut Vec<Walk>,
    candidates: &mut Vec<Candidate>,
    found: &mut Vec<Occurrence>,
) {
    let compiled = ctx.compiled;
    // Both taken first: a resumed walk may start a candidate, already run.
    let (old_walks, old_candidates) = (std::mem::take(walks), std::mem::take(candidates));
    for c in old_candidates {
        run_candidate(ctx, hay, old_len, c, candidates, found);
    }
    for w in old_walks {
        walk(aut, ctx, hay, w, old_len, walks, candidates, found);
    }
    let start = aut.start_state(Anchored::Yes).expect("anchored automaton");
    let key = if !compiled.finders.is_empty() {
        FINDER_KEY_LEN
    } else if compiled.grams.is_some() {
        GRAM_LEN
    } else {
        1
    };
    // From here on, every position is walked: a key there could not be seen whole.
    let end_zone = hay.len().saturating_sub(key - 1).max(old_len);
    let mut next_key: [Option<usize>; FINDER_MAX_SHARDS] = [None; FINDER_MAX_SHARDS];
    let mut next_break: Option<usize> = None;
    let mut p = old_len;
    while p < hay.len() {
        let nl = match next_break {
            Some(at) if at >= p => at,
            _ => {
                let at = memchr::memchr2(b'\n', b'\r', &hay[p..]).map_or(usize::MAX, |i| p + i);
                next_break = Some(at);
                at
            }
        };
        let limit = nl.saturating_sub(key - 1).min(end_zone);
        let at = if p >= limit || key == 1 {
            p
        } else if compiled.finders.is_empty() {
            let grams = compiled
                .grams
                .as_ref()
                .expect("the prefilter when there are no finders");
            match &compiled.sampled {
                Some(sampled) => next_sampled_hit(sampled, grams, hay, p, limit, nl),
                None => next_gram_hit(grams, hay, p, limit),
            }
        } else {
            let mut q = usize::MAX;
            for (finder, next) in compiled.finders.iter().zip(next_key.iter_mut()) {
                let at = match *next {
                    Some(at) if at >= p => at,
                    _ => {
                        let at = finder
                            .find(aho_corasick::Input::new(hay).range(p..))
                            .map_or(usize::MAX, |m| m.start());
                        *next = Some(at);
                        at
                    }
                };
                q = q.min(at);
            }
            q.min(limit)
        };
        if at >= hay.len() {
            break;
        }
        p = at;
        // Past `limit` the prefilter cannot see a key whole in the raw bytes; the gram of
        // the next bytes other than line breaks still rules out most positions (a log has
        // a line break every hundred bytes or so, and each would cost `key - 1` walks).
        if compiled.first[usize::from(hay[p])]
            && (p < limit || may_start_across_breaks(compiled, hay, p))
        {
            let w = Walk {
                start: p,
                state: start,
            };
            walk(aut, ctx, hay, w, p, walks, candidates, found);
        }
        p += 1;
    }
}

/// Whether an anchor may start at `p`, by the gram filter over the next [`GRAM_LEN`]
/// bytes that are not line breaks (as the walk sees them). True without a filter, or
/// when fewer such bytes have arrived: the walk then waits for the rest.
fn may_start_across_breaks(compiled: &super::engine::Compiled, hay: &[u8], p: usize) -> bool {
    let Some(grams) = &compiled.grams else {
        return true;
    };
    let mut gram = [0u8; GRAM_LEN];
    let mut n = 0;
    for &b in hay[p..].iter().filter(|b| !is_break(**b)) {
        gram[n] = b;
        n += 1;
        if n == GRAM_LEN {
            return gram_hit(grams, &gram);
        }
    }
    true
}

/// Goes on with the anchored walk `w` from `hay[from..]`: reports the anchors it
/// completes, starts candidates for the longer forms, and keeps it if it is alive at the
/// end.
#[allow(clippy::too_many_arguments)]
fn walk<A: Automaton>(
    aut: &A,
    ctx: &Ctx<'_>,
    hay: &[u8],
    w: Walk,
    from: usize,
    walks: &mut Vec<Walk>,
    candidates: &mut Vec<Candidate>,
    found: &mut Vec<Occurrence>,
) {
    let compiled = ctx.compiled;
    let mut state = w.state;
    let mut i = from;
    while i < hay.len() {
        let b = hay[i];
        i += 1;
        if is_break(b) {
            continue;
        }
        state = aut.next_state(Anchored::Yes, state, b);
        if aut.is_dead(state) {
            return;
        }
        if !aut.is_match(state) {
            continue;
        }
        for k in 0..aut.match_len(state) {
            let pid = aut.match_pattern(state, k).as_usize();
            let len = compiled.anchor_len[pid] as usize;
            // A state also reports anchors that are suffixes of its own; those start
            // later and are found by the walk from where they start.
            if back_from(hay, i, len) != w.start {
                continue;
            }
            for target in compiled.targets_of(pid) {
                let form = &ctx.forms[target.form as usize];
                if target.complete {
                    found.push(Occurrence {
                        start: w.start,
                        end: i,
                        mask: form.secret,
                    });
                    continue;
                }
                let value = &ctx.values[form.secret as usize];
                let mut cursor = Cursor::new(form);
                for _ in 0..len {
                    cursor.next(form, value);
                }
                if let Some(want) = cursor.next(form, value) {
                    let c = Candidate {
                        form: target.form,
                        start: w.start,
                        want,
                        cursor,
                    };
                    run_candidate(ctx, hay, i, c, candidates, found);
                }
            }
        }
    }
    walks.push(Walk { state, ..w });
}

/// Checks candidate `c` against `hay[from..]`: dropped at the first mismatch, an
/// occurrence at its form's last byte, kept if it reaches the end.
fn run_candidate(
    ctx: &Ctx<'_>,
    hay: &[u8],
    from: usize,
    mut c: Candidate,
    candidates: &mut Vec<Candidate>,
    found: &mut Vec<Occurrence>,
) {
    let form = &ctx.forms[c.form as usize];
    let value = &ctx.values[form.secret as usize];
    for (i, &b) in hay.iter().enumerate().skip(from) {
        if is_break(b) {
            continue;
        }
        if b != c.want {
            return;
        }
        match c.cursor.next(form, value) {
            Some(next) => c.want = next,
            None => {
                found.push(Occurrence {
                    start: c.start,
                    end: i + 1,
                    mask: form.secret,
                });
                return;
            }
        }
    }
    candidates.push(c);
}

/// Merges this write's occurrences (in any order) into the runs.
fn merge(regions: &mut Vec<Region>, found: &mut Vec<Occurrence>) {
    if found.is_empty() {
        return;
    }
    let mut all: Vec<Region> = std::mem::take(regions);
    all.extend(found.drain(..).map(|o| Region {
        start: o.start,
        end: o.end,
        mask: o.mask,
        lead_len: o.end - o.start,
        emitted: false,
    }));
    // By start; at the same start an emitted run first, so it keeps its name.
    all.sort_by(|a, b| a.start.cmp(&b.start).then(b.emitted.cmp(&a.emitted)));
    let mut iter = all.into_iter();
    let mut current = iter.next().expect("not empty");
    for next in iter {
        if next.start <= current.end {
            current = current.merge(next);
        } else {
            regions.push(current);
            current = next;
        }
    }
    regions.push(current);
}

/// Writes out `hay[..keep_from]`: raw bytes, and one mask per run that is final. A
/// run is final when no later occurrence can start at or before its end, and later
/// occurrences start inside the held-back tail. With `eof`, everything is final.
/// Returns `keep_from` and leaves the remaining runs relative to it.
fn emit(
    masks: &[Box<[u8]>],
    hay: &[u8],
    keep_from: usize,
    regions: &mut Vec<Region>,
    out: &mut Vec<u8>,
    eof: bool,
) -> usize {
    let mut cursor = 0;
    let mut finished = 0;
    for region in regions.iter_mut() {
        if eof || region.end < keep_from {
            out.extend_from_slice(&hay[cursor..region.start]);
            if !region.emitted {
                out.extend_from_slice(&masks[region.mask as usize]);
            }
            cursor = region.end;
            finished += 1;
        } else {
            if region.start < keep_from {
                // Write the mask now and drop the covered bytes we no longer need;
                // this keeps the carry bounded even for an endless run.
                out.extend_from_slice(&hay[cursor..region.start]);
                if !region.emitted {
                    out.extend_from_slice(&masks[region.mask as usize]);
                    region.emitted = true;
                }
                region.start = keep_from;
                cursor = keep_from;
            }
            break;
        }
    }
    if cursor < keep_from {
        out.extend_from_slice(&hay[cursor..keep_from]);
    }
    regions.drain(..finished);
    for region in regions.iter_mut() {
        region.start -= keep_from;
        region.end -= keep_from;
    }
    keep_from
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn back_from_skips_line_breaks() {
        let hay = b"ab\r\ncd\nef";
        assert_eq!(back_from(hay, hay.len(), 0), hay.len());
        assert_eq!(back_from(hay, hay.len(), 2), 7);
        assert_eq!(back_from(hay, hay.len(), 3), 5);
        assert_eq!(back_from(hay, hay.len(), 5), 1);
        assert_eq!(back_from(hay, 6, 4), 0);
    }

    #[test]
    fn regions_merge_by_start_then_length_then_variable() {
        let occ = |start, end, mask| Occurrence { start, end, mask };
        let mut regions = Vec::new();
        merge(&mut regions, &mut vec![occ(2, 6, 1), occ(2, 6, 0)]);
        assert_eq!(regions.len(), 1);
        assert_eq!(regions[0].mask, 0);
        // found out of order: a later start, then one that swallows it
        merge(&mut regions, &mut vec![occ(9, 12, 1), occ(0, 7, 2)]);
        assert_eq!(regions.len(), 2);
        assert_eq!(
            (regions[0].start, regions[0].end, regions[0].mask),
            (0, 7, 2)
        );
        // does not reach the gap between two runs
        merge(&mut regions, &mut vec![occ(13, 15, 0), occ(7, 8, 3)]);
        let spans: Vec<_> = regions.iter().map(|r| (r.start, r.end)).collect();
        assert_eq!(spans, [(0, 8), (9, 12), (13, 15)]);
    }

    #[test]
    fn emit_writes_final_runs_and_keeps_the_rest() {
        let masks: Vec<Box<[u8]>> = vec![b"*".to_vec().into()];
        let mut regions = vec![
            Region {
                start: 1,
                end: 3,
                mask: 0,
                lead_len: 2,
                emitted: false,
            },
            Region {
                start: 5,
                end: 8,
                mask: 0,
                lead_len: 3,
                emitted: false,
            },
        ];
        let mut out = Vec::new();
        let keep = emit(&masks, b"abcdefghij", 6, &mut regions, &mut out, false);
        assert_eq!(keep, 6);
        assert_eq!(out, b"a*de*");
        assert_eq!(
            (regions[0].start, regions[0].end, regions[0].emitted),
            (0, 2, true)
        );
    }
}
