//! Retries and hedging as policy: what may be retried, how long to back off, when to hedge, how
//! many retries the route can afford, and how a request body is kept for a second attempt.
//!
//! One request may become several attempts, each at one endpoint: a retry after a retryable
//! failure ([`policy`]), spending the route's [`budget`], after a [`backoff`]; or a hedge, a
//! second concurrent attempt when the first is slow ([`hedge`]). Request bodies reach every
//! attempt from a bounded buffer ([`replay`]). The loop that applies all this is on the request
//! path, in `proxy::attempt`: it picks endpoints and sends, which policy does not.
//!
//! Per-route state (budget, metric handles) is built once per snapshot in a [`RouteTable`],
//! indexed like the router's routes, so the request path formats no labels and allocates no
//! per-route state.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use http::{HeaderMap, HeaderName};
use metrics::{Counter, Label};

use crate::config::{Config, RetryBudget, RouteConfig};

pub mod backoff;
pub mod budget;
pub mod hedge;
pub mod mirror;
pub mod policy;
pub mod replay;

pub use budget::Budget;
pub use policy::Reason;

// Metric names live with every other in `telemetry`, the one list the scrape describes.
pub use crate::telemetry::metrics::{HEDGES_TOTAL, RETRIES_TOTAL, RETRY_BUDGET_EXHAUSTED_TOTAL};

/// The retry/hedge state of one route in one snapshot.
#[derive(Debug)]
pub struct RouteResilience {
    route: Label,
    /// Present when the route retries or hedges; shared with the next snapshot when the route's
    /// budget settings are unchanged, so a reload does not hand out a fresh allowance.
    budget: Option<Arc<Budget>>,
    retries: [OnceLock<Counter>; Reason::ALL.len()],
    exhausted: OnceLock<Counter>,
    hedges: [OnceLock<Counter>; hedge::HedgeResult::ALL.len()],
    /// Route `mirror`, compiled; `Arc` because a copy's task outlives the request.
    mirror: Option<Arc<mirror::RouteMirror>>,
    /// The route retries only failures that reached no endpoint and never hedges (see
    /// [`policy::retries_only_unsent`]): decided here once, read per request.
    unsent_only: bool,
}

impl RouteResilience {
    fn new(route: &RouteConfig, prior: Option<&RouteResilience>) -> Self {
        // A hedge-only route spends the default retry budget (ratio 0.2, 10 per second; README,
        // "Retries and hedging").
        let settings: Option<RetryBudget> = match (&route.retry, &route.hedge) {
            (Some(retry), _) => Some(retry.budget.clone()),
            (None, Some(_)) => Some(RetryBudget {
                ratio: 0.2,
                min_per_sec: 10,
            }),
            (None, None) => None,
        };
        let budget = settings.map(|settings| {
            prior
                .and_then(|p| p.budget.as_ref())
                .filter(|b| b.matches(&settings))
                .map_or_else(|| Arc::new(Budget::new(&settings)), Arc::clone)
        });
        Self {
            route: Label::new("route", route.name.clone()),
            budget,
            retries: std::array::from_fn(|_| OnceLock::new()),
            exhausted: OnceLock::new(),
            hedges: std::array::from_fn(|_| OnceLock::new()),
            mirror: route.mirror.as_ref().map(|config| {
                let prior = prior.and_then(|p| p.mirror.as_deref());
                Arc::new(mirror::RouteMirror::new(&route.name, config, prior))
            }),
            unsent_only: route.hedge.is_none()
                && route
                    .retry
                    .as_ref()
                    .is_some_and(policy::retries_only_unsent),
        }
    }

    /// The route's mirror (route `mirror`), if it has one.
    pub fn mirror(&self) -> Option<&Arc<mirror::RouteMirror>> {
        self.mirror.as_ref()
    }

    /// Whether the route's only second attempts are retries of failures that reached no
    /// endpoint (no hedge; `retry.on` within `connect-failure` and `refused-stream`, no
    /// `statuses`, no `per_try_timeout`): the synthetic routes' policy. `proxy::attempt` then
    /// sends the first attempt without copying the request for a retry (see
    /// `crate::upstream::Unsent`).
    pub fn retries_only_unsent(&self) -> bool {
        self.unsent_only
    }

    /// The route's budget (retries or hedges configured).
    pub fn budget(&self) -> Option<&Budget> {
        self.budget.as_deref()
    }

    /// Counts one retry for `reason`.
    pub fn count_retry(&self, reason: Reason) {
        self.retries[reason.index()]
            .get_or_init(|| {
                let labels = vec![self.route.clone(), Label::new("reason", reason.as_str())];
                metrics::counter!(RETRIES_TOTAL, labels)
            })
            .increment(1);
    }

    /// Counts one retry or hedge refused by the budget.
    pub fn count_exhausted(&self) {
        self.exhausted
            .get_or_init(|| {
                metrics::counter!(RETRY_BUDGET_EXHAUSTED_TOTAL, vec![self.route.clone()])
            })
            .increment(1);
    }

    /// Counts `n` hedge events of kind `result`.
    pub fn count_hedge(&self, result: hedge::HedgeResult, n: u64) {
        if n == 0 {
            return;
        }
        self.hedges[result as usize]
            .get_or_init(|| {
                let labels = vec![self.route.clone(), Label::new("result", result.as_str())];
                metrics::counter!(HEDGES_TOTAL, labels)
            })
            .increment(n);
    }
}

/// Every route's [`RouteResilience`], by route index (config order, as the router numbers them).
#[derive(Debug, Default)]
pub struct RouteTable {
    routes: Vec<RouteResilience>,
}

impl RouteTable {
    /// Builds the table of `config`, keeping the budgets of `prior` routes (by name) whose
    /// budget settings did not change.
    pub fn build(config: &Config, prior: Option<&RouteTable>) -> Self {
        // By name: a reload may reorder routes. A map keeps 10k-route reloads linear.
        let before: std::collections::HashMap<&str, &RouteResilience> = prior
            .map(|p| p.routes.iter().map(|r| (r.route.value(), r)).collect())
            .unwrap_or_default();
        let routes = config
            .routes
            .iter()
            .map(|route| RouteResilience::new(route, before.get(route.name.as_str()).copied()))
            .collect();
        Self { routes }
    }

    /// The state of route `index`.
    pub fn get(&self, index: usize) -> Option<&RouteResilience> {
        self.routes.get(index)
    }
}

static GRPC_TIMEOUT: HeaderName = HeaderName::from_static("grpc-timeout");

/// A gRPC client's deadline (`grpc-timeout`: up to 8 digits and a unit H, M, S, m, u, n), which
/// the exchange must never outlast.
pub fn grpc_timeout(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get(&GRPC_TIMEOUT)?.to_str().ok()?;
    if value.len() < 2 || value.len() > 9 {
        return None;
    }
    let (digits, unit) = value.split_at(value.len() - 1);
    let amount: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(amount.saturating_mul(3600)),
        "M" => Duration::from_secs(amount.saturating_mul(60)),
        "S" => Duration::from_secs(amount),
        "m" => Duration::from_millis(amount),
        "u" => Duration::from_micros(amount),
        "n" => Duration::from_nanos(amount),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(budget: &str) -> Config {
        let text = format!(
            "[[listeners]]\nname = \"l\"\nlisten = \"127.0.0.1:0\"\n\
             [[routes]]\nname = \"a\"\ncluster = \"c\"\nretry = {{ budget = {budget} }}\n\
             [[routes]]\nname = \"b\"\ncluster = \"c\"\n\
             [clusters.c]\nendpoints = [\"127.0.0.1:9\"]\n"
        );
        crate::config::parse(&text, std::path::Path::new("t.toml")).expect("config")
    }

    #[test]
    fn a_reload_keeps_an_unchanged_budget_only() {
        let first = RouteTable::build(&config("{ ratio = 0.2 }"), None);
        let same = RouteTable::build(&config("{ ratio = 0.2 }"), Some(&first));
        let changed = RouteTable::build(&config("{ ratio = 0.5 }"), Some(&first));
        let budget = |t: &RouteTable| t.get(0).and_then(|r| r.budget.clone()).expect("budget");
        assert!(Arc::ptr_eq(&budget(&first), &budget(&same)));
        assert!(!Arc::ptr_eq(&budget(&first), &budget(&changed)));
        assert!(
            first.get(1).expect("route b").budget().is_none(),
            "no retry, no budget"
        );
    }

    #[test]
    fn grpc_timeout_units() {
        let mut h = HeaderMap::new();
        for (v, d) in [
            ("100m", Duration::from_millis(100)),
            ("2S", Duration::from_secs(2)),
            ("1M", Duration::from_secs(60)),
            ("5u", Duration::from_micros(5)),
        ] {
            h.insert(&GRPC_TIMEOUT, v.parse().expect("value"));
            assert_eq!(grpc_timeout(&h), Some(d));
        }
        for bad in ["m", "10x", "123456789S", "-1S"] {
            h.insert(&GRPC_TIMEOUT, bad.parse().expect("value"));
            assert_eq!(grpc_timeout(&h), None, "{bad}");
        }
    }
}
