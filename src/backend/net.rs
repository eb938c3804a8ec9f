//! The foundation every network backend stands on: a runtime per fetch, one deadline,
//! bounded concurrency and retries with jittered backoff.
//!
//! [`block_on`] creates a tokio `current_thread` runtime, runs one future on it, and drops
//! it before returning. Dropping (never `shutdown_background`) joins the runtime's blocking
//! pool, where DNS lookups run, so when `fetch` returns envrun is single-threaded again, as
//! supervise mode requires before it blocks signals and forks (and checks:
//! `launch::threads`).
//!
//! [`lookups`] answers many keys concurrently (at most `limit` in flight), in order, each
//! bounded by the deadline: a key still unanswered when it passes is an
//! [`ErrorKind::Timeout`] error naming that key. [`retry`] repeats an operation while its
//! error is transient ([`ErrorKind::is_transient`]: unreachable, throttled, unavailable),
//! with full-jitter exponential backoff, honouring `Retry-After`, never past the deadline.
//!
//! What is left to each backend: its client, how its errors map to [`ErrorKind`] (which
//! decides what is retried), and which calls it batches.

use std::future::Future;
use std::time::{Duration, Instant};

use futures_util::StreamExt;

use super::{BackendError, ErrorKind, Lookup, LookupResult};

/// The first backoff; each retry doubles it, up to [`BACKOFF_CAP`], then full jitter.
const BACKOFF_BASE: Duration = Duration::from_millis(50);
const BACKOFF_CAP: Duration = Duration::from_secs(2);

/// Runs `fut` to completion on a `current_thread` runtime made for it, and drops the
/// runtime (and every thread it started) before returning. The future should bound itself
/// by the deadline ([`lookups`], [`within`]); this does not.
pub fn block_on<T>(fut: impl Future<Output = T>) -> Result<T, BackendError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| BackendError::new(format!("cannot start the network runtime: {e}")))?;
    let out = runtime.block_on(fut);
    // Explicit: dropping joins the blocking pool (DNS). The contract of `Backend::fetch`
    // depends on it.
    drop(runtime);
    Ok(out)
}

/// Answers every lookup with `answer`, at most `limit` at a time, in the order given. A
/// lookup that has not answered by `deadline` gets an [`ErrorKind::Timeout`] error.
pub async fn lookups<'a, F, Fut>(
    lookups: &'a [Lookup],
    limit: usize,
    deadline: Instant,
    answer: F,
) -> Vec<LookupResult>
where
    F: Fn(&'a Lookup) -> Fut,
    Fut: Future<Output = LookupResult> + 'a,
{
    // Unordered, so one slow key does not hold the window of `limit` for the keys after it;
    // the index puts the answers back in order.
    let mut answers: Vec<(usize, LookupResult)> =
        futures_util::stream::iter(lookups.iter().enumerate())
            .map(|(i, lookup)| {
                let fut = answer(lookup);
                async move {
                    let result = match within(deadline, fut).await {
                        Some(result) => result,
                        None => Err(timed_out(&lookup.key)),
                    };
                    (i, result)
                }
            })
            .buffer_unordered(limit.max(1))
            .collect()
            .await;
    answers.sort_by_key(|(i, _)| *i);
    answers.into_iter().map(|(_, result)| result).collect()
}

/// Runs `fut` until `deadline`; `None` if it passed first.
pub async fn within<T>(deadline: Instant, fut: impl Future<Output = T>) -> Option<T> {
    tokio::time::timeout_at(deadline.into(), fut).await.ok()
}

/// Runs a step every lookup waits on (building a client, a login) by `deadline`; past it,
/// an [`ErrorKind::Timeout`] error naming `what`.
pub async fn setup<T>(
    deadline: Instant,
    what: &str,
    fut: impl Future<Output = Result<T, BackendError>>,
) -> Result<T, BackendError> {
    within(deadline, fut).await.unwrap_or_else(|| {
        Err(BackendError::of(
            ErrorKind::Timeout,
            format!("no {what} before the deadline (--timeout)"),
        ))
    })
}

/// The error for a key the deadline cut off.
pub fn timed_out(key: &str) -> BackendError {
    BackendError::of(
        ErrorKind::Timeout,
        format!("`{key}`: no answer before the deadline (--timeout)"),
    )
}

/// Runs `op` until it succeeds, fails for good, or the next attempt could not start before
/// `deadline`. Only transient errors are retried; the last error is returned, saying how
/// many attempts were made.
pub async fn retry<T, F, Fut>(deadline: Instant, mut op: F) -> Result<T, BackendError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, BackendError>>,
{
    let mut attempt: u32 = 0;
    loop {
        attempt += 1;
        let err = match op().await {
            Ok(v) => return Ok(v),
            Err(e) if !e.kind.is_transient() => return Err(e),
            Err(e) => e,
        };
        let wait = backoff(attempt).max(err.retry_after.unwrap_or_default());
        if Instant::now() + wait >= deadline {
            let mut err = err;
            if attempt > 1 {
                err.message = format!("{} (gave up after {attempt} attempts)", err.message);
            }
            return Err(err);
        }
        tokio::time::sleep(wait).await;
    }
}

/// Full jitter: a random wait between 0 and `min(cap, base * 2^(attempt-1))`.
fn backoff(attempt: u32) -> Duration {
    let ceiling = BACKOFF_BASE
        .saturating_mul(1u32 << attempt.saturating_sub(1).min(16))
        .min(BACKOFF_CAP);
    let mut bytes = [0u8; 8];
    // A failed RNG only loses the jitter, not the backoff.
    let r = getrandom::fill(&mut bytes).map_or(u64::MAX / 2, |()| u64::from_le_bytes(bytes));
    ceiling.mul_f64(r as f64 / u64::MAX as f64)
}

/// Classifies an HTTP status the way every backend should unless it knows better:
/// 401/403 denied, 404 not found, 429 throttled, 5xx except 501 unavailable, the rest a
/// bad response.
pub fn kind_of_status(status: u16) -> ErrorKind {
    match status {
        401 | 403 => ErrorKind::Denied,
        404 => ErrorKind::NotFound,
        408 | 429 => ErrorKind::Throttled,
        501 => ErrorKind::BadResponse,
        500..=599 => ErrorKind::Unavailable,
        _ => ErrorKind::BadResponse,
    }
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;

    use super::*;

    fn lookup(key: &str) -> Lookup {
        Lookup {
            key: key.into(),
            params: Vec::new(),
        }
    }

    #[test]
    fn backoff_is_bounded_and_grows() {
        for attempt in 1..40 {
            let ceiling = BACKOFF_BASE
                .saturating_mul(1u32 << (attempt - 1).min(16))
                .min(BACKOFF_CAP);
            assert!(backoff(attempt) <= ceiling);
        }
        assert!(BACKOFF_CAP <= Duration::from_secs(2));
    }

    #[test]
    fn status_kinds() {
        assert_eq!(kind_of_status(403), ErrorKind::Denied);
        assert_eq!(kind_of_status(404), ErrorKind::NotFound);
        assert_eq!(kind_of_status(429), ErrorKind::Throttled);
        assert_eq!(kind_of_status(503), ErrorKind::Unavailable);
        assert_eq!(kind_of_status(501), ErrorKind::BadResponse);
        assert_eq!(kind_of_status(400), ErrorKind::BadResponse);
        assert!(!kind_of_status(400).is_transient());
        assert!(kind_of_status(500).is_transient());
    }

    #[test]
    fn retry_repeats_transient_errors_only() {
        let calls = Cell::new(0);
        let out = block_on(retry(Instant::now() + Duration::from_secs(5), || {
            calls.set(calls.get() + 1);
            let n = calls.get();
            async move {
                if n < 3 {
                    Err(BackendError::of(ErrorKind::Unavailable, "503"))
                } else {
                    Ok(n)
                }
            }
        }))
        .unwrap();
        assert_eq!(out.unwrap(), 3);

        calls.set(0);
        let out = block_on(retry(Instant::now() + Duration::from_secs(5), || {
            calls.set(calls.get() + 1);
            async { Err::<(), _>(BackendError::of(ErrorKind::Denied, "403")) }
        }))
        .unwrap();
        assert_eq!(out.unwrap_err().kind, ErrorKind::Denied);
        assert_eq!(calls.get(), 1, "a denied request is not retried");
    }

    #[test]
    fn retry_stops_at_the_deadline() {
        let start = Instant::now();
        let out = block_on(retry(start + Duration::from_millis(300), || async {
            Err::<(), _>(BackendError::of(ErrorKind::Unreachable, "refused"))
        }))
        .unwrap();
        let err = out.unwrap_err();
        assert_eq!(err.kind, ErrorKind::Unreachable);
        assert!(err.message.contains("attempts"), "{}", err.message);
        assert!(start.elapsed() < Duration::from_secs(2));
    }

    #[test]
    fn lookups_keep_order_bound_concurrency_and_time_out_each_key() {
        let keys: Vec<Lookup> = (0..20).map(|i| lookup(&format!("k{i}"))).collect();
        let in_flight = Cell::new(0usize);
        let max = Cell::new(0usize);
        let deadline = Instant::now() + Duration::from_millis(500);
        let results = block_on(lookups(&keys, 4, deadline, |l| {
            let (in_flight, max) = (&in_flight, &max);
            async move {
                in_flight.set(in_flight.get() + 1);
                max.set(max.get().max(in_flight.get()));
                if l.key == "k7" {
                    // Never answers: the deadline must cut it off.
                    std::future::pending::<()>().await;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
                in_flight.set(in_flight.get() - 1);
                Ok(Some(super::super::Found::Value(
                    crate::secret::Secret::from(l.key.clone()),
                )))
            }
        }))
        .unwrap();
        assert_eq!(results.len(), 20);
        assert!(
            max.get() <= 4 && max.get() >= 2,
            "max in flight {}",
            max.get()
        );
        for (i, r) in results.iter().enumerate() {
            if i == 7 {
                let e = r.as_ref().unwrap_err();
                assert_eq!(e.kind, ErrorKind::Timeout);
                assert!(e.message.contains("`k7`"));
            } else {
                assert!(r.is_ok(), "k{i}");
            }
        }
    }
}
