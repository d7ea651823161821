//! The simulator's network: an in-memory datagram fabric that drops (a fixed loss rate),
//! delays (uniform in a range) and partitions (cut addresses), seeded, on tokio's paused clock.
//! One delivery task holds a timer heap, so a datagram costs a heap push, not a task; the heap
//! orders small keys (due time, sequence, slot) and the datagrams wait in a slab beside it, so
//! sifting moves 24 bytes rather than the addresses and buffer (at 1,000 members the heap was a
//! tenth of the simulation's CPU).

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use switchyard::mesh::node::Transport;
use tokio::sync::mpsc;
use tokio::time::Instant;

type Inbox = mpsc::Sender<(SocketAddr, Vec<u8>)>;

#[derive(Debug)]
struct State {
    rng: fastrand::Rng,
    loss: f64,
    delay_ms: (u64, u64),
    inboxes: HashMap<SocketAddr, Inbox>,
    /// Addresses cut off from everyone (killed or partitioned away).
    cut: HashSet<SocketAddr>,
    sent_bytes: HashMap<SocketAddr, u64>,
    seq: u64,
}

/// The shared fabric; clone freely.
#[derive(Debug, Clone)]
pub struct Net {
    state: Arc<Mutex<State>>,
    deliveries: mpsc::UnboundedSender<(Instant, u64, SocketAddr, SocketAddr, Vec<u8>)>,
}

impl Net {
    /// A fabric with `loss` in [0, 1) and delays in `delay_ms`, seeded with `seed`; spawns its
    /// delivery task on the current runtime.
    pub fn new(seed: u64, loss: f64, delay_ms: (u64, u64)) -> (Self, tokio::task::JoinHandle<()>) {
        let state = Arc::new(Mutex::new(State {
            rng: fastrand::Rng::with_seed(seed),
            loss,
            delay_ms,
            inboxes: HashMap::new(),
            cut: HashSet::new(),
            sent_bytes: HashMap::new(),
            seq: 0,
        }));
        let (deliveries, rx) = mpsc::unbounded_channel();
        let task = tokio::spawn(deliver(Arc::clone(&state), rx));
        (Self { state, deliveries }, task)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Registers `addr`'s inbox and returns its transport.
    pub fn attach(&self, addr: SocketAddr, inbox: Inbox) -> SimTransport {
        let mut state = self.lock();
        state.inboxes.insert(addr, inbox);
        state.cut.remove(&addr);
        SimTransport {
            from: addr,
            net: self.clone(),
        }
    }

    /// Cuts `addr` off (both directions) or reconnects it.
    pub fn set_cut(&self, addr: SocketAddr, cut: bool) {
        let mut state = self.lock();
        if cut {
            state.cut.insert(addr);
        } else {
            state.cut.remove(&addr);
        }
    }

    /// Bytes every address has sent so far.
    pub fn sent_bytes(&self) -> HashMap<SocketAddr, u64> {
        self.lock().sent_bytes.clone()
    }
}

/// One node's way out.
#[derive(Debug)]
pub struct SimTransport {
    from: SocketAddr,
    net: Net,
}

impl Transport for SimTransport {
    fn send(&mut self, to: SocketAddr, datagram: Vec<u8>) {
        let scheduled = {
            let mut state = self.net.lock();
            *state.sent_bytes.entry(self.from).or_default() += datagram.len() as u64;
            let dropped = state.cut.contains(&self.from)
                || state.cut.contains(&to)
                || state.rng.f64() < state.loss;
            if dropped {
                None
            } else {
                let (lo, hi) = state.delay_ms;
                let delay = Duration::from_millis(state.rng.u64(lo..=hi));
                state.seq += 1;
                Some((Instant::now() + delay, state.seq))
            }
        };
        if let Some((at, seq)) = scheduled {
            let _ = self.net.deliveries.send((at, seq, self.from, to, datagram));
        }
    }
}

/// A datagram in flight: (from, to, bytes).
type Datagram = (SocketAddr, SocketAddr, Vec<u8>);

async fn deliver(
    state: Arc<Mutex<State>>,
    mut rx: mpsc::UnboundedReceiver<(Instant, u64, SocketAddr, SocketAddr, Vec<u8>)>,
) {
    // Due time and sequence (FIFO among equal times), then the datagram's slot.
    let mut heap: BinaryHeap<Reverse<(Instant, u64, usize)>> = BinaryHeap::new();
    let mut slots: Vec<Option<Datagram>> = Vec::new();
    let mut free: Vec<usize> = Vec::new();
    loop {
        let next = heap.peek().map(|Reverse((at, _, _))| *at);
        tokio::select! {
            received = rx.recv() => match received {
                Some((at, seq, from, to, data)) => {
                    let slot = match free.pop() {
                        Some(slot) => {
                            slots[slot] = Some((from, to, data));
                            slot
                        }
                        None => {
                            slots.push(Some((from, to, data)));
                            slots.len() - 1
                        }
                    };
                    heap.push(Reverse((at, seq, slot)));
                }
                None => return,
            },
            () = sleep_until(next) => {
                let now = Instant::now();
                while heap.peek().is_some_and(|Reverse((at, _, _))| *at <= now) {
                    let Some(Reverse((_, _, slot))) = heap.pop() else { break };
                    free.push(slot);
                    let Some((from, to, data)) = slots.get_mut(slot).and_then(Option::take) else {
                        continue;
                    };
                    let inbox = {
                        let state = state.lock().unwrap_or_else(PoisonError::into_inner);
                        if state.cut.contains(&from) || state.cut.contains(&to) {
                            None
                        } else {
                            state.inboxes.get(&to).cloned()
                        }
                    };
                    if let Some(inbox) = inbox {
                        let _ = inbox.try_send((from, data));
                    }
                }
            }
        }
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
