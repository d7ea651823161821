//! Route `rate_limit`: the numbers, the key and the scope (`ratelimit` enforces it).

use std::time::Duration;

use toml::Spanned;

use super::ctx::Ctx;
use crate::config::defaults;
use crate::config::model::*;
use crate::config::raw::*;

/// The longest `per`: a day. Longer windows would make the per-request increment a tiny
/// fraction of a nanosecond-based clock for large `requests`, and are quotas, not rate limits.
const MAX_PER: Duration = Duration::from_secs(86_400);

const SCOPES: &[(&str, RateLimitScope)] = &[
    ("local", RateLimitScope::Local),
    ("mesh", RateLimitScope::Mesh),
];

/// Validates one route's `rate_limit` table.
pub(super) fn rate_limit(cx: &mut Ctx<'_>, raw: &Spanned<RawRateLimit>) -> RateLimitConfig {
    let r = raw.get_ref();
    let requests = match &r.requests {
        None => {
            cx.err(
                raw.span(),
                "rate_limit: needs `requests` (how many per `per`)",
            );
            1
        }
        Some(n) if *n.get_ref() == 0 => {
            cx.err(n.span(), "rate_limit.requests: must be at least 1");
            1
        }
        Some(n) => *n.get_ref(),
    };
    let per = match &r.per {
        None => {
            cx.err(raw.span(), "rate_limit: needs `per` (e.g. \"1s\")");
            Duration::from_secs(1)
        }
        Some(value) => {
            let per = cx.positive_duration(Some(value), "rate_limit.per", Duration::from_secs(1));
            if per > MAX_PER {
                cx.err(value.span(), "rate_limit.per: at most 24h");
            }
            // The bucket counts in nanoseconds: each request must cost at least one.
            if u128::from(requests) > per.as_nanos() {
                cx.err(
                    value.span(),
                    "rate_limit: more than one request per nanosecond is not a limit",
                );
            }
            per
        }
    };
    let burst = r.burst.as_ref().map_or(0, |b| *b.get_ref());
    if let Some(b) = &r.burst {
        if requests.saturating_add(*b.get_ref()) > 1 << 40 {
            cx.err(b.span(), "rate_limit.burst: requests + burst at most 2^40");
        }
    }
    let key = match &r.key {
        None => RateLimitKey::ClientIp,
        Some(k) => match k.get_ref().as_str() {
            "client_ip" => RateLimitKey::ClientIp,
            "route" => RateLimitKey::Route,
            text => match text.strip_prefix("header:") {
                Some(name) => {
                    let name = Spanned::new(k.span(), name.to_owned());
                    cx.header_name(&name, "rate_limit.key")
                        .map_or(RateLimitKey::ClientIp, RateLimitKey::Header)
                }
                None => {
                    cx.err(
                        k.span(),
                        format!(
                            "rate_limit.key: unknown value {text:?} (expected \"client_ip\", \"header:NAME\" or \"route\")"
                        ),
                    );
                    RateLimitKey::ClientIp
                }
            },
        },
    };
    let scope = cx.one_of(
        r.scope.as_ref(),
        "rate_limit.scope",
        SCOPES,
        RateLimitScope::Local,
    );
    let max_keys = match &r.max_keys {
        None => defaults::RATE_LIMIT_MAX_KEYS,
        Some(n) if *n.get_ref() == 0 || *n.get_ref() > defaults::RATE_LIMIT_MAX_KEYS_LIMIT => {
            cx.err(
                n.span(),
                format!(
                    "rate_limit.max_keys: between 1 and {}",
                    defaults::RATE_LIMIT_MAX_KEYS_LIMIT
                ),
            );
            defaults::RATE_LIMIT_MAX_KEYS
        }
        Some(n) => *n.get_ref(),
    };
    RateLimitConfig {
        requests,
        per,
        burst,
        key,
        scope,
        max_keys,
    }
}

/// `scope = "mesh"` needs the mesh member that shares the budget: without `[mesh]` it is an
/// error at the scope, not a limit silently applied per proxy.
pub(super) fn mesh_scope_without_mesh(cx: &mut Ctx<'_>, raw: &RawConfig) {
    for route in &raw.routes {
        let scope = route
            .get_ref()
            .rate_limit
            .as_ref()
            .and_then(|r| r.get_ref().scope.as_ref());
        if let Some(scope) = scope.filter(|s| s.get_ref() == "mesh") {
            cx.err(
                scope.span(),
                "rate_limit.scope: \"mesh\" needs a [mesh] section (the members share the limit)",
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::time::Duration;

    use crate::config::{RateLimitKey, RateLimitScope};

    const BASE: &str = "[[listeners]]\nname = \"l\"\nlisten = \"127.0.0.1:0\"\n\
                        [clusters.c]\nendpoints = [\"127.0.0.1:1\"]\n\
                        [[routes]]\ncluster = \"c\"\n";

    fn parse(limit: &str) -> Result<crate::config::Config, String> {
        crate::config::parse(
            &format!("{BASE}rate_limit = {limit}\n"),
            Path::new("sy.toml"),
        )
        .map_err(|e| e.to_string())
    }

    #[test]
    fn defaults_and_every_key() {
        let c = parse("{ requests = 100, per = \"1s\" }").expect("valid");
        let l = c.routes[0].rate_limit.as_ref().expect("limit");
        assert_eq!(
            (l.requests, l.per, l.burst),
            (100, Duration::from_secs(1), 0)
        );
        assert_eq!(l.key, RateLimitKey::ClientIp);
        assert_eq!(l.scope, RateLimitScope::Local);
        let c = parse(
            "{ requests = 5, per = \"1m\", burst = 2, key = \"header:X-Api-Key\", max_keys = 64 }",
        )
        .expect("valid");
        let l = c.routes[0].rate_limit.as_ref().expect("limit");
        assert_eq!(l.key.describe(), "header:x-api-key");
        assert_eq!((l.burst, l.max_keys), (2, 64));
        let c = parse("{ requests = 5, per = \"1s\", key = \"route\" }").expect("valid");
        assert_eq!(
            c.routes[0].rate_limit.as_ref().map(|l| &l.key),
            Some(&RateLimitKey::Route)
        );
    }

    #[test]
    fn bad_values_are_located_errors() {
        for (limit, message) in [
            ("{ per = \"1s\" }", "needs `requests`"),
            ("{ requests = 0, per = \"1s\" }", "at least 1"),
            ("{ requests = 1 }", "needs `per`"),
            ("{ requests = 1, per = \"0s\" }", "greater than 0"),
            ("{ requests = 1, per = \"48h\" }", "at most 24h"),
            (
                "{ requests = 1, per = \"1s\", key = \"ip\" }",
                "unknown value",
            ),
            (
                "{ requests = 1, per = \"1s\", key = \"header:a b\" }",
                "not a valid header",
            ),
            (
                "{ requests = 1, per = \"1s\", scope = \"fleet\" }",
                "unknown value",
            ),
            (
                "{ requests = 1, per = \"1s\", scope = \"mesh\" }",
                "needs a [mesh]",
            ),
            ("{ requests = 1, per = \"1s\", max_keys = 0 }", "max_keys"),
            ("{ requests = 1, per = \"1s\", rate = 2 }", "unknown field"),
        ] {
            let error = parse(limit).expect_err(limit);
            assert!(error.contains(message), "{limit}: {error}");
            assert!(error.contains("sy.toml:"), "{limit}: {error}");
        }
    }
}
