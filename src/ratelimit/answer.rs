//! What a refused request's 429 carries, after draft-ietf-httpapi-ratelimit-headers (the
//! 2025 drafts' syntax, structured fields):
//!
//! - `Retry-After: S`: seconds until a request would be admitted, rounded up (RFC 9110);
//! - `RateLimit-Policy: "ROUTE";q=Q;w=W`: the quota, `requests` per `per` (as whole seconds);
//!   precomputed with the snapshot;
//! - `RateLimit: "ROUTE";r=0;t=S`: nothing remains, and the quota allows a request again in
//!   `S` seconds (the bucket refills continuously, so that is when the next unit is back).
//!
//! Only refused requests carry them: adding two fields to every admitted response would cost
//! every request on a limited route formatting and header bytes (the per-request budget is
//! measured against a plain route, see docs/rate-limits.md, "Cost").

use http::header::{HeaderName, HeaderValue, RETRY_AFTER};

use crate::config::RateLimitConfig;

use super::gcra::Refused;

/// `RateLimit-Policy`.
pub static RATELIMIT_POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");
/// `RateLimit`.
pub static RATELIMIT: HeaderName = HeaderName::from_static("ratelimit");

/// The route's fields, rendered once per snapshot.
#[derive(Debug)]
pub struct Fields {
    /// The policy's name as a structured-field string, quotes included.
    name: String,
    policy: HeaderValue,
}

impl Fields {
    /// The fields of route `route`'s `config`.
    pub fn new(route: &str, config: &RateLimitConfig) -> Self {
        let name = sf_string(route);
        let per = config.per.as_secs_f64();
        // `w` is whole seconds: a window that is not is restated per second.
        let (quota, window) = if config.per.subsec_nanos() == 0 {
            (config.requests, config.per.as_secs())
        } else {
            (((config.requests as f64 / per).round() as u64).max(1), 1)
        };
        let policy = HeaderValue::from_str(&format!("{name};q={quota};w={window}"))
            .unwrap_or_else(|_| HeaderValue::from_static("\"default\""));
        Self { name, policy }
    }

    /// The three header fields of a 429 for `refused`.
    pub fn refusal(&self, refused: Refused) -> [(&'static HeaderName, HeaderValue); 3] {
        let wait = refused.retry_after_secs();
        let state = HeaderValue::from_str(&format!("{};r=0;t={wait}", self.name))
            .unwrap_or_else(|_| HeaderValue::from_static("\"default\";r=0"));
        [
            (&RETRY_AFTER, HeaderValue::from(wait)),
            (&RATELIMIT_POLICY, self.policy.clone()),
            (&RATELIMIT, state),
        ]
    }
}

/// `s` as a structured-field string (RFC 8941 3.3.3): quoted, `"` and `\` escaped; a name with
/// characters a string cannot hold is called `"default"`.
fn sf_string(s: &str) -> String {
    if s.is_empty() || !s.bytes().all(|b| (0x20..0x7f).contains(&b)) {
        return "\"default\"".to_owned();
    }
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{RateLimitKey, RateLimitScope};
    use std::time::Duration;

    fn config(requests: u64, per: Duration) -> RateLimitConfig {
        RateLimitConfig {
            requests,
            per,
            burst: 0,
            key: RateLimitKey::ClientIp,
            scope: RateLimitScope::Local,
            max_keys: 16,
        }
    }

    #[test]
    fn fields_follow_the_draft_syntax() {
        let f = Fields::new("api", &config(100, Duration::from_secs(1)));
        let [retry, policy, state] = f.refusal(Refused {
            wait_ns: 1_500_000_000,
        });
        assert_eq!(retry.1, "2");
        assert_eq!(policy.1, "\"api\";q=100;w=1");
        assert_eq!(state.1, "\"api\";r=0;t=2");
        let sub = Fields::new("a\"b", &config(5, Duration::from_millis(100)));
        assert_eq!(sub.policy, "\"a\\\"b\";q=50;w=1");
        assert_eq!(sf_string("é"), "\"default\"");
    }
}
