//! Route `mirror` (shadow traffic) as policy: which requests are copied (one random draw
//! against a threshold compiled from `percent`), how many copies may be in flight at once, and
//! the outcome counters. The copying and sending are `proxy::mirror`'s; this part is built with
//! the snapshot (per route, in [`super::RouteTable`]) so a request only draws and compares.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use metrics::{Counter, Label};

use crate::config::MirrorConfig;
pub use crate::telemetry::metrics::MIRRORED_REQUESTS_TOTAL;

/// Copies of one route's requests that may be in flight at once (buffering their body, or
/// waiting for the shadow's answer), process-wide. Over it a sampled request is not copied
/// (outcome `dropped`): a slow or hung shadow then costs at most this many copies of memory
/// (each up to `max_body`) and sockets, never an unbounded pile.
pub const MAX_IN_FLIGHT: usize = 128;

/// How a mirrored request ended, the `outcome` label of
/// `switchyard_mirrored_requests_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MirrorOutcome {
    /// The shadow answered 1xx or 2xx.
    Status2xx,
    /// The shadow answered 3xx.
    Status3xx,
    /// The shadow answered 4xx.
    Status4xx,
    /// The shadow answered 5xx.
    Status5xx,
    /// No answer: no endpoint, connect failure, reset, malformed response, cluster limits.
    Error,
    /// No response head within the mirror's time limit.
    Timeout,
    /// Not sent: the body is over `max_body` (declared up front, or found while streaming).
    SkippedBody,
    /// Not sent: [`MAX_IN_FLIGHT`] copies of the route were already in flight.
    Dropped,
}

impl MirrorOutcome {
    /// Every outcome, in label order.
    pub const ALL: [Self; 8] = [
        Self::Status2xx,
        Self::Status3xx,
        Self::Status4xx,
        Self::Status5xx,
        Self::Error,
        Self::Timeout,
        Self::SkippedBody,
        Self::Dropped,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Status2xx => "2xx",
            Self::Status3xx => "3xx",
            Self::Status4xx => "4xx",
            Self::Status5xx => "5xx",
            Self::Error => "error",
            Self::Timeout => "timeout",
            Self::SkippedBody => "skipped_body",
            Self::Dropped => "dropped",
        }
    }

    /// The outcome of a shadow's response status.
    pub fn of_status(status: u16) -> Self {
        match status {
            0..=299 => Self::Status2xx,
            300..=399 => Self::Status3xx,
            400..=499 => Self::Status4xx,
            _ => Self::Status5xx,
        }
    }
}

/// One route's mirror as compiled for a snapshot.
#[derive(Debug)]
pub struct RouteMirror {
    config: MirrorConfig,
    /// A draw `< threshold` is copied; `percent` scaled to the full `u64` range at build time.
    threshold: u64,
    /// `percent = 100`: every request (no `u64` threshold covers the whole range).
    all: bool,
    /// Copies in flight; shared with the next snapshot of a route of the same name, so a
    /// reload neither resets the bound nor lets copies of the old version escape it.
    in_flight: Arc<AtomicUsize>,
    route: Label,
    cluster: Label,
    outcomes: [OnceLock<Counter>; MirrorOutcome::ALL.len()],
}

impl RouteMirror {
    /// Compiles `config` for route `route`, taking the in-flight count of `prior` (the same
    /// route's mirror in the snapshot before) when there is one.
    pub fn new(route: &str, config: &MirrorConfig, prior: Option<&RouteMirror>) -> Self {
        let fraction = (config.percent / 100.0).clamp(0.0, 1.0);
        // `as` saturates; 2^64 as f64 is exact, so the threshold is the fraction of the range.
        let threshold = (fraction * 18_446_744_073_709_551_616.0) as u64;
        Self {
            config: config.clone(),
            threshold,
            all: fraction >= 1.0,
            in_flight: prior.map_or_else(
                || Arc::new(AtomicUsize::new(0)),
                |p| Arc::clone(&p.in_flight),
            ),
            route: Label::new("route", route.to_owned()),
            cluster: Label::new("cluster", config.cluster.clone()),
            outcomes: std::array::from_fn(|_| OnceLock::new()),
        }
    }

    /// The route's `mirror` settings.
    pub fn config(&self) -> &MirrorConfig {
        &self.config
    }

    /// Whether the request whose random draw is `draw` (uniform over `u64`) is copied.
    pub fn sampled(&self, draw: u64) -> bool {
        self.all || draw < self.threshold
    }

    /// Takes an in-flight slot for one copy, or `None` when [`MAX_IN_FLIGHT`] are taken (the
    /// caller counts `dropped`). The slot is given back when the [`InFlight`] drops.
    pub fn try_start(self: &Arc<Self>) -> Option<InFlight> {
        let before = self.in_flight.fetch_add(1, Ordering::AcqRel);
        if before >= MAX_IN_FLIGHT {
            self.in_flight.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        Some(InFlight {
            mirror: Arc::clone(self),
        })
    }

    /// Copies in flight now (for tests and views).
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Acquire)
    }

    /// Counts one mirrored request's `outcome`.
    pub fn count(&self, outcome: MirrorOutcome) {
        // The enum's order is `ALL`'s.
        self.outcomes[outcome as usize]
            .get_or_init(|| {
                let labels = vec![
                    self.route.clone(),
                    self.cluster.clone(),
                    Label::new("outcome", outcome.as_str()),
                ];
                metrics::counter!(MIRRORED_REQUESTS_TOTAL, labels)
            })
            .increment(1);
    }
}

/// One copy's in-flight slot: held from the sampling decision until the shadow's answer is
/// discarded (or the copy is abandoned), then given back.
#[derive(Debug)]
pub struct InFlight {
    mirror: Arc<RouteMirror>,
}

impl InFlight {
    /// The route's mirror this slot belongs to.
    pub fn mirror(&self) -> &RouteMirror {
        &self.mirror
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.mirror.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mirror(percent: f64) -> Arc<RouteMirror> {
        let config = MirrorConfig {
            cluster: "shadow".into(),
            percent,
            max_body: 64 * 1024,
        };
        Arc::new(RouteMirror::new("r", &config, None))
    }

    #[test]
    fn thresholds_cover_the_share_of_draws() {
        let none = mirror(0.0);
        assert!(!none.sampled(0) && !none.sampled(u64::MAX));
        let all = mirror(100.0);
        assert!(all.sampled(0) && all.sampled(u64::MAX));
        let half = mirror(50.0);
        assert!(half.sampled(u64::MAX / 2 - 1));
        assert!(!half.sampled(u64::MAX / 2 + 1));
        let tenth = mirror(10.0);
        let mut rng = fastrand::Rng::with_seed(7);
        let hits = (0..100_000).filter(|_| tenth.sampled(rng.u64(..))).count();
        assert!((9_500..=10_500).contains(&hits), "{hits}");
    }

    #[test]
    fn in_flight_is_bounded_and_given_back() {
        let m = mirror(100.0);
        let slots: Vec<InFlight> = (0..MAX_IN_FLIGHT)
            .map(|_| m.try_start().expect("slot"))
            .collect();
        assert!(m.try_start().is_none(), "over the bound");
        assert_eq!(m.in_flight(), MAX_IN_FLIGHT);
        drop(slots);
        assert_eq!(m.in_flight(), 0);
        let next = RouteMirror::new("r", m.config(), Some(&m));
        let _held = m.try_start().expect("slot");
        assert_eq!(next.in_flight(), 1, "a reload shares the count");
    }

    #[test]
    fn statuses_map_to_classes() {
        assert_eq!(MirrorOutcome::of_status(204), MirrorOutcome::Status2xx);
        assert_eq!(MirrorOutcome::of_status(302), MirrorOutcome::Status3xx);
        assert_eq!(MirrorOutcome::of_status(404), MirrorOutcome::Status4xx);
        assert_eq!(MirrorOutcome::of_status(503), MirrorOutcome::Status5xx);
    }
}
