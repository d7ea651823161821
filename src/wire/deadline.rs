//! Attempt time limits without a tokio timer per attempt: one deadline queue per worker thread.
//!
//! Every upstream attempt is bounded by a deadline (route `timeout`, `per_try_timeout`). A
//! tokio `Sleep` per attempt costs a timer-wheel insert when the attempt first waits and a
//! remove when its response head arrives, almost always long before the deadline. Deadlines of
//! one limit arrive in the order they were set, so a worker keeps them in one queue sorted by
//! deadline (a new one goes at the back in the common case) and one tokio timer, owned by a
//! small driver task, armed at the earliest deadline. An attempt that ends takes its entry out
//! of service at once (its slot is freed; the queue drops stale entries when they reach its
//! front, or in a compaction when they pile up behind a long-lived one). The driver's timer is
//! not moved when the front entry goes: it fires at the old deadline, finds nothing due and
//! re-arms at the new front, which happens about once per limit, not once per attempt. A new
//! deadline earlier than the armed one (a shorter limit) wakes the driver to re-arm.
//!
//! The queue is a thread-local, so it is only used on threads that [`enable_on_this_thread`]
//! marked: the workers' current-thread runtimes, where a future is polled only by the thread
//! that first polled it. Anywhere else (a multi-thread runtime, a runtime embedding the proxy)
//! [`timeout_at`] is tokio's own timeout. Both fire at the same deadline, at tokio's timer
//! resolution (the driver's timer is a tokio `Sleep`).
//!
//! To re-measure the difference, build both (swap [`timeout_at`] for
//! `tokio::time::timeout_at`) and compare the "attempt + timers" layer of
//! `python3 benches/load/breakdown.py --switchyard BIN`.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};
use std::time::Instant;

use pin_project_lite::pin_project;
use tokio::time::Sleep;

/// The deadline passed before the future finished.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Elapsed;

thread_local! {
    static QUEUE: RefCell<Option<Queue>> = const { RefCell::new(None) };
}

/// Marks the calling thread as a current-thread runtime's only thread: [`timeout_at`] futures
/// first polled here use the thread's deadline queue. Call it on the thread that drives the
/// runtime, before it runs anything.
pub fn enable_on_this_thread() {
    QUEUE.with(|queue| *queue.borrow_mut() = Some(Queue::default()));
}

/// Runs `future` until `at`: `Err(Elapsed)` if the deadline passes first (the future is then
/// dropped by the caller, as with `tokio::time::timeout_at`).
pub fn timeout_at<F: Future>(at: Instant, future: F) -> Timeout<F> {
    Timeout {
        inner: future,
        at,
        state: State::Unregistered,
    }
}

#[derive(Debug)]
enum State {
    /// Not polled yet, or finished on its first poll: nothing registered.
    Unregistered,
    /// Entry `slot` of this thread's queue, while its generation is `generation`.
    Queued { slot: u32, generation: u32 },
    /// Not on a worker thread: tokio's own timer.
    Tokio(Pin<Box<Sleep>>),
    /// Finished: the entry, if any, is already released.
    Done,
}

pin_project! {
    /// The future of [`timeout_at`].
    pub struct Timeout<F> {
        #[pin]
        inner: F,
        at: Instant,
        state: State,
    }

    impl<F> PinnedDrop for Timeout<F> {
        fn drop(this: Pin<&mut Self>) {
            let this = this.project();
            if let State::Queued { slot, generation } = *this.state {
                release(slot, generation);
            }
        }
    }
}

impl<F: Future> Future for Timeout<F> {
    type Output = Result<F::Output, Elapsed>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        if let Poll::Ready(output) = this.inner.poll(cx) {
            if let State::Queued { slot, generation } = *this.state {
                release(slot, generation);
            }
            *this.state = State::Done;
            return Poll::Ready(Ok(output));
        }
        let expired = match this.state {
            State::Unregistered => match register(*this.at, cx.waker()) {
                Some((slot, generation)) => {
                    *this.state = State::Queued { slot, generation };
                    false
                }
                None => {
                    let mut sleep = Box::pin(tokio::time::sleep_until((*this.at).into()));
                    let expired = sleep.as_mut().poll(cx).is_ready();
                    *this.state = State::Tokio(sleep);
                    expired
                }
            },
            State::Queued { slot, generation } => poll_entry(*slot, *generation, cx.waker()),
            State::Tokio(sleep) => sleep.as_mut().poll(cx).is_ready(),
            State::Done => false,
        };
        if !expired {
            return Poll::Pending;
        }
        if let State::Queued { slot, generation } = *this.state {
            release(slot, generation);
        }
        *this.state = State::Done;
        Poll::Ready(Err(Elapsed))
    }
}

/// One attempt's place in the queue.
#[derive(Debug, Default)]
struct Slot {
    /// Bumped when the slot is released, so a stale queue entry or handle no longer matches.
    generation: u32,
    waker: Option<Waker>,
    expired: bool,
}

#[derive(Debug, Default)]
struct Queue {
    /// `(deadline, slot, generation)`, earliest first; entries whose generation no longer
    /// matches their slot's are stale (the attempt ended) and are skipped.
    order: VecDeque<(Instant, u32, u32)>,
    slots: Vec<Slot>,
    free: Vec<u32>,
    /// Entries still live (registered, not released).
    live: usize,
    /// The deadline the driver's timer is armed at; `None` when it is not armed.
    armed: Option<Instant>,
    /// The driver task, once started; woken when a deadline earlier than `armed` arrives.
    driver: Option<Waker>,
    driver_started: bool,
}

impl Queue {
    fn is_live(&self, slot: u32, generation: u32) -> bool {
        self.slots
            .get(slot as usize)
            .is_some_and(|s| s.generation == generation)
    }

    /// Drops stale entries from the front; returns the earliest live deadline.
    fn front(&mut self) -> Option<Instant> {
        while let Some(&(at, slot, generation)) = self.order.front() {
            if self.is_live(slot, generation) {
                return Some(at);
            }
            self.order.pop_front();
        }
        None
    }
}

/// Puts a deadline in this thread's queue (`None`: the thread has none).
fn register(at: Instant, waker: &Waker) -> Option<(u32, u32)> {
    QUEUE.with(|queue| {
        let mut queue = queue.borrow_mut();
        let queue = queue.as_mut()?;
        let slot = match queue.free.pop() {
            Some(slot) => slot,
            None => {
                let slot = u32::try_from(queue.slots.len()).ok()?;
                queue.slots.push(Slot::default());
                slot
            }
        };
        let entry = queue.slots.get_mut(slot as usize)?;
        entry.waker = Some(waker.clone());
        entry.expired = false;
        let generation = entry.generation;
        // Sorted insert from the back: deadlines of one limit arrive in order, so this is a
        // push in the common case.
        let mut index = queue.order.len();
        while index > 0 && queue.order.get(index - 1).is_some_and(|e| e.0 > at) {
            index -= 1;
        }
        queue.order.insert(index, (at, slot, generation));
        queue.live += 1;
        // Entries released behind a long-lived one stay until it goes; drop them in bulk when
        // they outnumber the live ones (amortised: a compaction at least halves the queue).
        if queue.order.len() > 64 && queue.order.len() > 4 * queue.live {
            let slots = &queue.slots;
            queue.order.retain(|&(_, slot, generation)| {
                slots
                    .get(slot as usize)
                    .is_some_and(|s| s.generation == generation)
            });
        }
        if queue.armed.is_none_or(|armed| at < armed) {
            if let Some(driver) = &queue.driver {
                driver.wake_by_ref();
            } else if !queue.driver_started {
                queue.driver_started = true;
                tokio::spawn(Driver { sleep: None });
            }
        }
        Some((slot, generation))
    })
}

/// Whether entry `slot` has expired; stores `waker` to be woken when it does.
fn poll_entry(slot: u32, generation: u32, waker: &Waker) -> bool {
    QUEUE.with(|queue| {
        let mut queue = queue.borrow_mut();
        let Some(entry) = queue
            .as_mut()
            .and_then(|q| q.slots.get_mut(slot as usize))
            .filter(|s| s.generation == generation)
        else {
            // Not ours any more (cannot happen while the handle is held): treat as expired
            // rather than wait for a wake-up that will never come.
            return true;
        };
        if entry.expired {
            return true;
        }
        match &mut entry.waker {
            Some(held) if held.will_wake(waker) => {}
            held => *held = Some(waker.clone()),
        }
        false
    })
}

/// Frees entry `slot`: the attempt ended (answered, expired or dropped).
fn release(slot: u32, generation: u32) {
    // `try_with`: a future dropped while the thread's locals are being destroyed. The waker is
    // dropped after the borrow ends.
    let _waker = QUEUE.try_with(|queue| {
        let mut queue = queue.try_borrow_mut().ok()?;
        let queue = queue.as_mut()?;
        let entry = queue
            .slots
            .get_mut(slot as usize)
            .filter(|s| s.generation == generation)?;
        entry.generation = entry.generation.wrapping_add(1);
        let waker = entry.waker.take();
        queue.free.push(slot);
        queue.live -= 1;
        // Stale entries at the front go now, so the queue holds about the attempts in flight.
        queue.front();
        waker
    });
}

/// The task that owns the thread's one tokio timer: armed at the earliest deadline (or an
/// earlier one it has not re-armed from yet), it wakes the attempts whose deadlines passed.
struct Driver {
    sleep: Option<Pin<Box<Sleep>>>,
}

impl Future for Driver {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let mut due = Vec::new();
        // Bounded: a pass that finds the armed deadline passed removes every entry due by then;
        // the next one re-arms at the new front, and returns unless that one is due too.
        let poll = loop {
            let fired = QUEUE.with(|queue| {
                let mut queue = queue.borrow_mut();
                let queue = queue.as_mut()?;
                match &queue.driver {
                    Some(held) if held.will_wake(cx.waker()) => {}
                    _ => queue.driver = Some(cx.waker().clone()),
                }
                let Some(front) = queue.front() else {
                    queue.armed = None;
                    return Some(None);
                };
                // Re-armed only to an earlier deadline, or once the armed one has passed.
                let keep = self.sleep.is_some() && queue.armed.is_some_and(|a| a <= front);
                if !keep {
                    queue.armed = Some(front);
                    match &mut self.sleep {
                        Some(sleep) => sleep.as_mut().reset(front.into()),
                        None => self.sleep = Some(Box::pin(tokio::time::sleep_until(front.into()))),
                    }
                }
                let Some(sleep) = self.sleep.as_mut() else {
                    return Some(None);
                };
                if sleep.as_mut().poll(cx).is_pending() {
                    return Some(None);
                }
                // The armed deadline has passed: every entry due by then expires.
                let Some(armed) = queue.armed.take() else {
                    return Some(None);
                };
                while let Some(&(at, slot, generation)) = queue.order.front() {
                    if at > armed {
                        break;
                    }
                    queue.order.pop_front();
                    if let Some(entry) = queue
                        .slots
                        .get_mut(slot as usize)
                        .filter(|s| s.generation == generation)
                    {
                        entry.expired = true;
                        if let Some(waker) = entry.waker.take() {
                            due.push(waker);
                        }
                    }
                }
                Some(Some(()))
            });
            match fired {
                // The thread has no queue (cannot happen: the driver starts from one).
                None => break Poll::Ready(()),
                Some(None) => break Poll::Pending,
                // Woken outside the borrow: a waker may run code that uses the queue.
                Some(Some(())) => due.drain(..).for_each(Waker::wake),
            }
        };
        if poll.is_ready() {
            return poll;
        }
        due.drain(..).for_each(Waker::wake);
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn worker() -> tokio::runtime::Runtime {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        enable_on_this_thread();
        runtime
    }

    #[test]
    fn a_finished_future_releases_its_entry() {
        worker().block_on(async {
            let at = Instant::now() + Duration::from_secs(5);
            let out = timeout_at(at, async {
                tokio::task::yield_now().await;
                7
            })
            .await;
            assert_eq!(out, Ok(7));
            QUEUE.with(|q| {
                let q = q.borrow();
                let q = q.as_ref().expect("queue");
                assert_eq!(q.live, 0);
                assert!(q.order.is_empty());
            });
        });
    }

    #[test]
    fn deadlines_fire_in_order_whatever_order_they_were_set_in() {
        worker().block_on(async {
            let start = Instant::now();
            let never = std::future::pending::<()>;
            let long = timeout_at(start + Duration::from_millis(300), never());
            let short = timeout_at(start + Duration::from_millis(50), never());
            let (long, short) = tokio::join!(
                async {
                    let r = long.await;
                    (r, start.elapsed())
                },
                async {
                    let r = short.await;
                    (r, start.elapsed())
                }
            );
            assert_eq!(short.0, Err(Elapsed));
            assert_eq!(long.0, Err(Elapsed));
            assert!(short.1 >= Duration::from_millis(50), "{:?}", short.1);
            assert!(short.1 < Duration::from_millis(300), "{:?}", short.1);
            assert!(long.1 >= Duration::from_millis(300), "{:?}", long.1);
        });
    }

    #[test]
    fn a_released_front_entry_does_not_fire_the_next_one_early() {
        worker().block_on(async {
            let start = Instant::now();
            // Arms the driver at +50 ms, then goes away.
            let first = timeout_at(start + Duration::from_millis(50), async {
                tokio::time::sleep(Duration::from_millis(10)).await;
            });
            let second = timeout_at(
                start + Duration::from_millis(200),
                std::future::pending::<()>(),
            );
            let (first, second) = tokio::join!(first, async {
                let r = second.await;
                (r, start.elapsed())
            });
            assert_eq!(first, Ok(()));
            assert_eq!(second.0, Err(Elapsed));
            assert!(second.1 >= Duration::from_millis(200), "{:?}", second.1);
        });
    }

    #[test]
    fn off_a_worker_thread_tokio_times_it() {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        runtime.block_on(async {
            let at = Instant::now() + Duration::from_millis(20);
            let out = tokio::spawn(timeout_at(at, std::future::pending::<()>()))
                .await
                .expect("task");
            assert_eq!(out, Err(Elapsed));
        });
    }
}
