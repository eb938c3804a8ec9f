//! The resolution deadline: `--timeout`, `$ENVRUN_TIMEOUT`, `timeout:` in the manifest.
//!
//! One deadline bounds the whole resolution, every backend and every retry inside it, so a
//! cron job or a container start never waits on a dead server longer than the user said.

use std::time::Duration;

/// The deadline when nothing sets one.
pub const DEFAULT: Duration = Duration::from_secs(10);

/// Parses `500ms`, `10s`, `2m`, `1h`, a bare number of seconds (`10`, `2.5`), or a sum such
/// as `1m30s`. Zero is refused: nothing could ever be fetched.
pub fn parse(text: &str) -> Result<Duration, String> {
    let bad = || {
        format!(
            "`{text}` is not a duration (examples: 500ms, 10s, 2m, 1m30s; a bare number is seconds)"
        )
    };
    let t = text.trim();
    if t.is_empty() {
        return Err(bad());
    }
    let total = if let Ok(secs) = t.parse::<f64>() {
        if !secs.is_finite() || !(0.0..=1e9).contains(&secs) {
            return Err(bad());
        }
        Duration::from_secs_f64(secs)
    } else {
        let mut total = Duration::ZERO;
        let mut rest = t;
        while !rest.is_empty() {
            let digits = rest
                .find(|c: char| !(c.is_ascii_digit() || c == '.'))
                .ok_or_else(bad)?;
            if digits == 0 {
                return Err(bad());
            }
            let number: f64 = rest[..digits].parse().map_err(|_| bad())?;
            rest = &rest[digits..];
            let unit_len = rest
                .find(|c: char| c.is_ascii_digit() || c == '.')
                .unwrap_or(rest.len());
            let scale = match &rest[..unit_len] {
                "ms" => 0.001,
                "s" => 1.0,
                "m" => 60.0,
                "h" => 3600.0,
                _ => return Err(bad()),
            };
            rest = &rest[unit_len..];
            let secs = number * scale;
            if !secs.is_finite() || secs > 1e9 {
                return Err(bad());
            }
            total += Duration::from_secs_f64(secs);
        }
        total
    };
    if total.is_zero() {
        return Err(format!("`{text}`: the timeout must be more than zero"));
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_and_sums() {
        assert_eq!(parse("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse("10s").unwrap(), Duration::from_secs(10));
        assert_eq!(parse("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse("1m30s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse("1h").unwrap(), Duration::from_secs(3600));
        assert_eq!(parse("10").unwrap(), Duration::from_secs(10));
        assert_eq!(parse("2.5").unwrap(), Duration::from_millis(2500));
        assert_eq!(parse(" 3s ").unwrap(), Duration::from_secs(3));
    }

    #[test]
    fn nonsense_and_zero_are_refused() {
        for bad in [
            "", "s", "10x", "-1", "ms10", "1e400", "nan", "0", "0s", "1s2",
        ] {
            assert!(parse(bad).is_err(), "{bad:?} accepted");
        }
        assert!(parse("10x").unwrap_err().contains("500ms"));
    }
}
