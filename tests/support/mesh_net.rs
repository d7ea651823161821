//! The simulator's network: an in-memory datagram fabric that drops (a fixed loss rate),
//! delays (uniform in a range) and partitions (cut addresses), seeded, on tokio's paused clock.
//! One delivery task holds a timer heap, so a datagram costs a heap push, not a task.

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

type Pending = (Reverse<(Instant, u64)>, SocketAddr, SocketAddr, Vec<u8>);

async fn deliver(
    state: Arc<Mutex<State>>,
    mut rx: mpsc::UnboundedReceiver<(Instant, u64, SocketAddr, SocketAddr, Vec<u8>)>,
) {
    let mut heap: BinaryHeap<HeapItem> = BinaryHeap::new();
    loop {
        let next = heap.peek().map(|item| item.0 .0 .0 .0);
        tokio::select! {
            received = rx.recv() => match received {
                Some((at, seq, from, to, data)) => heap.push(HeapItem((Reverse((at, seq)), from, to, data))),
                None => return,
            },
            () = sleep_until(next) => {
                let now = Instant::now();
                while heap.peek().is_some_and(|item| item.0 .0 .0 .0 <= now) {
                    let Some(HeapItem((_, from, to, data))) = heap.pop() else { break };
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

/// Orders by due time only (the payload has no order).
struct HeapItem(Pending);

impl PartialEq for HeapItem {
    fn eq(&self, other: &Self) -> bool {
        self.0 .0 == other.0 .0
    }
}
impl Eq for HeapItem {}
impl PartialOrd for HeapItem {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for HeapItem {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.0 .0.cmp(&other.0 .0)
    }
}
