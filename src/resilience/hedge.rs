//! Hedging: when an attempt has no response head after `after`, another attempt starts at
//! another endpoint; the first response wins and the others are cancelled.
//!
//! Cancelling is dropping: a dropped attempt future drops its HTTP/2 stream (hyper resets it
//! with RST_STREAM CANCEL) or its HTTP/1.1 connection (never returned to the pool, so the
//! backend sees the close). Hedges only run for idempotent requests and spend the retry budget,
//! so a slow cluster gets at most `ratio` more load from them.

use std::future::{poll_fn, Future};
use std::pin::Pin;
use std::task::Poll;

use tokio::time::Sleep;

/// The `result` label of `switchyard_hedges_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HedgeResult {
    /// A hedge attempt was started.
    Sent = 0,
    /// A hedge attempt's response won.
    Won = 1,
    /// An attempt (hedge or original) lost to another and was cancelled.
    Cancelled = 2,
    /// The budget refused a hedge.
    Denied = 3,
}

impl HedgeResult {
    /// Every result, in label-table order.
    pub const ALL: [HedgeResult; 4] = [Self::Sent, Self::Won, Self::Cancelled, Self::Denied];

    /// The metric label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Sent => "sent",
            Self::Won => "won",
            Self::Cancelled => "cancelled",
            Self::Denied => "denied",
        }
    }
}

/// What woke the attempt loop.
#[derive(Debug)]
pub enum Event<T> {
    /// An attempt finished (response head or failure).
    Done(T),
    /// The hedge timer fired.
    Hedge,
}

/// An attempt in flight.
pub type InFlight<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Waits for the first attempt of `in_flight` to finish (removing it) or for `timer`.
///
/// A hand-written select (no `futures` dependency): every attempt is polled on each wake-up,
/// which is fine for the handful (`attempts + hedge.max`) a request can have.
pub async fn next<T>(
    in_flight: &mut Vec<InFlight<'_, T>>,
    timer: &mut Option<Pin<Box<Sleep>>>,
) -> Event<T> {
    poll_fn(|cx| {
        for i in 0..in_flight.len() {
            if let Poll::Ready(done) = in_flight[i].as_mut().poll(cx) {
                drop(in_flight.swap_remove(i));
                return Poll::Ready(Event::Done(done));
            }
        }
        if let Some(sleep) = timer.as_mut() {
            if sleep.as_mut().poll(cx).is_ready() {
                *timer = None;
                return Poll::Ready(Event::Hedge);
            }
        }
        Poll::Pending
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test(start_paused = true)]
    async fn first_finisher_wins_and_the_timer_fires_in_between() {
        let mut in_flight: Vec<InFlight<'_, u32>> = vec![
            Box::pin(async {
                tokio::time::sleep(Duration::from_millis(300)).await;
                1
            }),
            Box::pin(async {
                tokio::time::sleep(Duration::from_millis(100)).await;
                2
            }),
        ];
        let mut timer = Some(Box::pin(tokio::time::sleep(Duration::from_millis(50))));
        assert!(matches!(
            next(&mut in_flight, &mut timer).await,
            Event::Hedge
        ));
        assert!(timer.is_none());
        assert!(matches!(
            next(&mut in_flight, &mut timer).await,
            Event::Done(2)
        ));
        assert!(matches!(
            next(&mut in_flight, &mut timer).await,
            Event::Done(1)
        ));
        assert!(in_flight.is_empty());
    }
}
