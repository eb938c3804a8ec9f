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
    Compiled, FINDER_KEY_LEN, FINDER_MAX_SHARDS, GRAM_LEN, gram_hit, with_automaton,
};
use super::forms::{Cursor, Form};

/// What a stream needs from its scrubber.
pub(super) struct Ctx<'a> {
    pub compiled: &'a Compiled,
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

#[derive(Default)]
pub(super) struct StreamState {
    /// Bytes received but not written out: the held-back tail.
    buf: Vec<u8>,
    /// Sorted, disjoint, not touching.
    regions: Vec<Region>,
    /// The automaton's state after everything since the last flush; `None` is the
    /// start state.
    sid: Option<StateID>,
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
        self.sid = None;
    }

    /// Scans `hay[old_len..]` (the new bytes; the rest is the held-back tail, already
    /// scanned), writes out what is final, and returns where the new tail starts.
    fn process(&mut self, ctx: &Ctx<'_>, hay: &[u8], old_len: usize, out: &mut Vec<u8>) -> usize {
        let depth = with_automaton!(&ctx.compiled.engine, aut => {
            scan(aut, ctx, hay, old_len, &mut self.sid, &mut self.candidates, &mut self.regions)
        }, empty => 0);
        let mut keep_from = back_from(hay, hay.len(), depth);
        for c in &self.candidates {
            keep_from = keep_from.min(c.start);
        }
        let keep = emit(ctx.masks, hay, keep_from, &mut self.regions, out, false);
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

/// Feeds `hay[old_len..]` to the automaton and the candidates, merging every
/// occurrence that ends there into `regions`; returns the automaton's depth at the end.
///
/// While the automaton is in its start state and nothing is in progress, the finders
/// jump to the next place an anchor could start: where one of their keys occurs, or
/// `FINDER_KEY_LEN - 1` bytes before a line break (an anchor whose first bytes are
/// wrapped is not one of the keys in the raw bytes).
fn scan<A: Automaton>(
    aut: &A,
    ctx: &Ctx<'_>,
    hay: &[u8],
    old_len: usize,
    sid: &mut Option<StateID>,
    candidates: &mut Vec<Candidate>,
    regions: &mut Vec<Region>,
) -> usize {
    let compiled = ctx.compiled;
    let start = aut.start_state(Anchored::No).expect("unanchored automaton");
    let mut state = sid.unwrap_or(start);
    let jumps = !compiled.finders.is_empty() || compiled.grams.is_some();
    // Each shard's leftmost key at or after where it was last asked; asked again only
    // once the walk has passed it, so each shard reads `hay` once.
    let mut next_key: [Option<usize>; FINDER_MAX_SHARDS] = [None; FINDER_MAX_SHARDS];
    let mut next_break: Option<usize> = None;
    // The state at the end depends only on the last `window` bytes: never jump past
    // where they begin, or a prefix of an anchor at the very end would go unseen.
    let tail = back_from(hay, hay.len(), compiled.window);
    let mut pos = old_len;
    while pos < hay.len() {
        if jumps && state == start && candidates.is_empty() {
            let nl = match next_break {
                Some(at) if at >= pos => at,
                _ => {
                    let at =
                        memchr::memchr2(b'\n', b'\r', &hay[pos..]).map_or(usize::MAX, |i| pos + i);
                    next_break = Some(at);
                    at
                }
            };
            // An anchor whose first bytes are wrapped starts at most a key's length
            // before the line break.
            let before_break = nl.saturating_sub(FINDER_KEY_LEN - 1).max(pos);
            let mut to = before_break;
            for (finder, next) in compiled.finders.iter().zip(next_key.iter_mut()) {
                let at = match *next {
                    Some(at) if at >= pos => at,
                    _ => {
                        let at = finder
                            .find(aho_corasick::Input::new(hay).range(pos..))
                            .map_or(usize::MAX, |m| m.start());
                        *next = Some(at);
                        at
                    }
                };
                to = to.min(at);
            }
            if let Some(grams) = &compiled.grams {
                let stop = to.min(hay.len().saturating_sub(GRAM_LEN - 1));
                let mut p = pos;
                while p < stop && !gram_hit(grams, &hay[p..p + GRAM_LEN]) {
                    p += 1;
                }
                // A hit, or `stop`: nothing of four bytes or more starts before it.
                to = p;
            }
            pos = to.min(tail.max(pos));
        }
        let b = hay[pos];
        pos += 1;
        if is_break(b) {
            continue;
        }
        if !candidates.is_empty() {
            advance(ctx, candidates, b, pos, regions);
        }
        state = aut.next_state(Anchored::No, state, b);
        if aut.is_match(state) {
            for k in 0..aut.match_len(state) {
                let pid = aut.match_pattern(state, k).as_usize();
                let len = compiled.anchor_len[pid] as usize;
                let from = back_from(hay, pos, len);
                for target in compiled.targets_of(pid) {
                    let form = &ctx.forms[target.form as usize];
                    if target.complete {
                        add_occurrence(regions, from, pos, form.secret);
                        continue;
                    }
                    let value = &ctx.values[form.secret as usize];
                    let mut cursor = Cursor::new(form);
                    for _ in 0..len {
                        cursor.next(form, value);
                    }
                    if let Some(want) = cursor.next(form, value) {
                        candidates.push(Candidate {
                            form: target.form,
                            start: from,
                            want,
                            cursor,
                        });
                    }
                }
            }
        }
    }
    *sid = Some(state);
    compiled.depth(state)
}

/// Checks byte `b` (ending at `end`) against every candidate: a mismatch drops it, the
/// last byte of its form makes it an occurrence.
fn advance(
    ctx: &Ctx<'_>,
    candidates: &mut Vec<Candidate>,
    b: u8,
    end: usize,
    regions: &mut Vec<Region>,
) {
    candidates.retain_mut(|c| {
        if c.want != b {
            return false;
        }
        let form = &ctx.forms[c.form as usize];
        match c.cursor.next(form, &ctx.values[form.secret as usize]) {
            Some(next) => {
                c.want = next;
                true
            }
            None => {
                add_occurrence(regions, c.start, end, form.secret);
                false
            }
        }
    });
}

/// Merges the occurrence `start..end` of a form of secret `mask` into the runs.
/// Occurrences come in order of their end, so a new one can only touch runs at the back.
fn add_occurrence(regions: &mut Vec<Region>, start: usize, end: usize, mask: u32) {
    let mut region = Region {
        start,
        end,
        mask,
        lead_len: end - start,
        emitted: false,
    };
    while let Some(last) = regions.last() {
        if last.end < region.start {
            break;
        }
        region = last.merge(region);
        regions.pop();
    }
    regions.push(region);
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
        let mut regions = Vec::new();
        add_occurrence(&mut regions, 2, 6, 1);
        add_occurrence(&mut regions, 2, 6, 0);
        assert_eq!(regions.len(), 1);
        assert_eq!(regions[0].mask, 0);
        add_occurrence(&mut regions, 0, 7, 2);
        assert_eq!(
            (regions[0].start, regions[0].end, regions[0].mask),
            (0, 7, 2)
        );
        add_occurrence(&mut regions, 9, 12, 1);
        assert_eq!(regions.len(), 2);
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
