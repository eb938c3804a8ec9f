//! Random values for `secrets generate`: characters drawn uniformly from an alphabet with
//! bytes from the OS RNG (getrandom), by rejection sampling so there is no modulo bias.

use std::io;

use zeroize::Zeroizing;

use crate::cli::Charset;
use crate::secret::Secret;

const ALNUM: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
const HEX: &[u8] = b"0123456789abcdef";
const BASE64: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
const URLSAFE: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

pub fn alphabet(charset: Charset) -> &'static [u8] {
    match charset {
        Charset::Alnum => ALNUM,
        Charset::Hex => HEX,
        Charset::Base64 => BASE64,
        Charset::Urlsafe => URLSAFE,
    }
}

/// `len` characters from `charset`.
pub fn generate(len: usize, charset: Charset) -> io::Result<Secret> {
    generate_with(len, alphabet(charset), |buf| {
        getrandom::fill(buf).map_err(|e| io::Error::other(e.to_string()))
    })
}

/// The sampler, with the byte source as a parameter so tests can drive it.
fn generate_with(
    len: usize,
    alphabet: &[u8],
    mut fill: impl FnMut(&mut [u8]) -> io::Result<()>,
) -> io::Result<Secret> {
    let n = alphabet.len();
    assert!((1..=256).contains(&n), "alphabet size {n}");
    // Accept a byte only below the largest multiple of n that fits in a byte: then `b % n`
    // is uniform. For n = 62 that is 248, so about 3% of the bytes are drawn again.
    let limit = 256 - 256 % n;
    let mut out = Zeroizing::new(Vec::with_capacity(len));
    let mut pool = Zeroizing::new([0u8; 64]);
    while out.len() < len {
        fill(&mut pool[..])?;
        for &b in pool.iter() {
            if usize::from(b) < limit && out.len() < len {
                out.push(alphabet[usize::from(b) % n]);
            }
        }
    }
    Ok(Secret::from_slice(&out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_above_the_limit_are_rejected_not_folded() {
        // 248..=255 would map to 'A'..'H' a second time if folded with a bare modulo.
        let mut calls = 0;
        let s = generate_with(4, ALNUM, |buf| {
            calls += 1;
            let fill: &[u8] = if calls == 1 {
                &[248, 255, 250]
            } else {
                &[0, 61, 1, 60]
            };
            for (i, b) in buf.iter_mut().enumerate() {
                *b = fill[i % fill.len()];
            }
            Ok(())
        })
        .unwrap();
        assert_eq!(calls, 2);
        assert_eq!(s.expose(), b"A9B8");
    }

    #[test]
    fn every_charset_produces_only_its_characters_and_covers_them() {
        for cs in [
            Charset::Alnum,
            Charset::Hex,
            Charset::Base64,
            Charset::Urlsafe,
        ] {
            let s = generate(4096, cs).unwrap();
            assert_eq!(s.len(), 4096);
            let a = alphabet(cs);
            assert!(s.expose().iter().all(|b| a.contains(b)), "{cs:?}");
            // 4096 draws from at most 64 symbols: missing one has probability < 1e-25.
            assert!(a.iter().all(|c| s.expose().contains(c)), "{cs:?}");
        }
    }

    #[test]
    fn rough_uniformity() {
        // 62 symbols, 124,000 draws: each count ~ 2000 +- 44 (1 sigma); 1700..2300 is ~7 sigma.
        let s = generate(124_000, Charset::Alnum).unwrap();
        let mut counts = [0u32; 256];
        for &b in s.expose() {
            counts[usize::from(b)] += 1;
        }
        for &c in ALNUM {
            let k = counts[usize::from(c)];
            assert!((1700..2300).contains(&k), "{} drawn {k} times", c as char);
        }
    }
}
