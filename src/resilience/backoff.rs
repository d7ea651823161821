//! The pause before a retry: exponential with full jitter, capped, or a 503's `retry-after`.
//!
//! Full jitter (a uniform pick in `[0, base × 2^n]`) spreads the retries of many clients that
//! failed together, which plain exponential backoff would synchronise (AWS Architecture Blog,
//! "Exponential Backoff And Jitter"). The cap keeps a retry cheap compared to the route timeout.

use std::time::Duration;

use http::header::RETRY_AFTER;
use http::{HeaderMap, StatusCode};

/// No retry waits longer than this for backoff.
pub const MAX_BACKOFF: Duration = Duration::from_millis(250);

/// The longest `retry-after` a 503 may ask for and still be honoured; longer means the endpoint
/// wants a rest we should not spend the client's time on (the retry goes elsewhere at once).
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(1);

/// Backoff before retry number `retry` (1 for the first retry) with base `base`; `random` is a
/// uniform `u64` (so tests can pin it).
pub fn delay(base: Duration, retry: u32, random: u64) -> Duration {
    if base.is_zero() {
        return Duration::ZERO;
    }
    let shift = retry.saturating_sub(1).min(16);
    let ceiling = base.saturating_mul(1 << shift).min(MAX_BACKOFF);
    let nanos = u64::try_from(ceiling.as_nanos()).unwrap_or(u64::MAX);
    // `random % (n + 1)` is within `[0, n]`; the modulo bias is irrelevant for jitter.
    Duration::from_nanos(random % nanos.saturating_add(1))
}

/// A 503's `retry-after` in whole seconds (the HTTP-date form is not honoured: a date is for
/// clients that come back much later), when it is at most [`MAX_RETRY_AFTER`].
pub fn retry_after(status: StatusCode, headers: &HeaderMap) -> Option<Duration> {
    if status != StatusCode::SERVICE_UNAVAILABLE {
        return None;
    }
    let seconds: u64 = headers
        .get(RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()?;
    let wait = Duration::from_secs(seconds);
    (wait <= MAX_RETRY_AFTER).then_some(wait)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    #[test]
    fn grows_exponentially_and_caps() {
        let base = Duration::from_millis(25);
        assert_eq!(
            delay(base, 1, u64::MAX - 1),
            Duration::from_nanos((u64::MAX - 1) % 25_000_001)
        );
        assert!(delay(base, 1, u64::MAX) <= base);
        assert!(delay(base, 3, u64::MAX) <= base * 4);
        for retry in 1..40 {
            for random in [0, 7, u64::MAX / 3, u64::MAX] {
                assert!(delay(base, retry, random) <= MAX_BACKOFF);
            }
        }
        assert_eq!(delay(Duration::ZERO, 5, 123), Duration::ZERO);
        assert_eq!(delay(base, 2, 0), Duration::ZERO);
    }

    #[test]
    fn retry_after_only_for_short_503s() {
        let mut h = HeaderMap::new();
        h.insert(RETRY_AFTER, HeaderValue::from_static("1"));
        assert_eq!(
            retry_after(StatusCode::SERVICE_UNAVAILABLE, &h),
            Some(Duration::from_secs(1))
        );
        assert_eq!(retry_after(StatusCode::BAD_GATEWAY, &h), None);
        h.insert(RETRY_AFTER, HeaderValue::from_static("5"));
        assert_eq!(retry_after(StatusCode::SERVICE_UNAVAILABLE, &h), None);
        h.insert(
            RETRY_AFTER,
            HeaderValue::from_static("Wed, 21 Oct 2015 07:28:00 GMT"),
        );
        assert_eq!(retry_after(StatusCode::SERVICE_UNAVAILABLE, &h), None);
    }
}
