//! A minimal authoritative DNS server on 127.0.0.1 (UDP) for the discovery tests: answers A,
//! AAAA and SRV questions from a table the test edits while it runs, with the TTL it sets.
//! Names not in the table get NXDOMAIN; [`DnsServer::set_failing`] makes every answer SERVFAIL.
//! Point the proxy at it with `SWITCHYARD_DNS_SERVER=ADDR`.

use std::collections::HashMap;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use hickory_proto::op::{Message, MessageType, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA, SRV};
use hickory_proto::rr::{Name, RData, Record, RecordType};

/// One answer record as a test writes it.
#[derive(Debug, Clone)]
pub enum Answer {
    A(Ipv4Addr),
    Aaaa(Ipv6Addr),
    /// priority, weight, port, target
    Srv(u16, u16, u16, String),
}

#[derive(Default)]
struct Zone {
    /// (lower-case name with trailing dot, type) -> answers
    records: HashMap<(String, RecordType), Vec<Answer>>,
    ttl: u32,
}

/// The running server; stops on drop.
pub struct DnsServer {
    addr: SocketAddr,
    zone: Arc<Mutex<Zone>>,
    failing: Arc<AtomicBool>,
    queries: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

fn key(name: &str) -> String {
    let mut name = name.to_ascii_lowercase();
    if !name.ends_with('.') {
        name.push('.');
    }
    name
}

impl DnsServer {
    /// Binds 127.0.0.1:0 and serves until dropped. Every answer carries `ttl` seconds.
    pub fn start(ttl: u32) -> Self {
        let socket = UdpSocket::bind("127.0.0.1:0").expect("bind dns");
        socket
            .set_read_timeout(Some(Duration::from_millis(50)))
            .expect("read timeout");
        let addr = socket.local_addr().expect("dns addr");
        let zone = Arc::new(Mutex::new(Zone {
            ttl,
            ..Zone::default()
        }));
        let failing = Arc::new(AtomicBool::new(false));
        let queries = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (zone, failing, queries, stop) = (
                Arc::clone(&zone),
                Arc::clone(&failing),
                Arc::clone(&queries),
                Arc::clone(&stop),
            );
            std::thread::spawn(move || {
                let mut buf = [0u8; 1500];
                while !stop.load(Ordering::Relaxed) {
                    let Ok((n, peer)) = socket.recv_from(&mut buf) else {
                        continue;
                    };
                    queries.fetch_add(1, Ordering::Relaxed);
                    if let Some(reply) = answer(&buf[..n], &zone, failing.load(Ordering::Relaxed)) {
                        let _ = socket.send_to(&reply, peer);
                    }
                }
            })
        };
        Self {
            addr,
            zone,
            failing,
            queries,
            stop,
            thread: Some(thread),
        }
    }

    /// Where to send queries (`SWITCHYARD_DNS_SERVER`).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Replaces the answers of `name`/`kind`; an empty list removes the name (NXDOMAIN).
    pub fn set(&self, name: &str, kind: RecordType, answers: Vec<Answer>) {
        let mut zone = self.zone.lock().unwrap_or_else(PoisonError::into_inner);
        if answers.is_empty() {
            zone.records.remove(&(key(name), kind));
        } else {
            zone.records.insert((key(name), kind), answers);
        }
    }

    /// Makes every answer SERVFAIL (true) or normal again (false).
    pub fn set_failing(&self, failing: bool) {
        self.failing.store(failing, Ordering::Relaxed);
    }

    /// Queries received so far.
    pub fn queries(&self) -> usize {
        self.queries.load(Ordering::Relaxed)
    }
}

impl Drop for DnsServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn answer(query: &[u8], zone: &Mutex<Zone>, failing: bool) -> Option<Vec<u8>> {
    let request = Message::from_vec(query).ok()?;
    let mut reply = Message::new();
    reply
        .set_id(request.id())
        .set_message_type(MessageType::Response)
        .set_op_code(request.op_code())
        .set_recursion_desired(request.recursion_desired())
        .set_recursion_available(true)
        .set_authoritative(true);
    reply.add_queries(request.queries().to_vec());
    if failing {
        reply.set_response_code(ResponseCode::ServFail);
        return reply.to_vec().ok();
    }
    let zone = zone.lock().unwrap_or_else(PoisonError::into_inner);
    let mut known = false;
    for q in request.queries() {
        let name = q.name().to_ascii();
        let name_key = key(&name);
        known |= zone.records.keys().any(|(n, _)| *n == name_key);
        for a in zone
            .records
            .get(&(name_key, q.query_type()))
            .into_iter()
            .flatten()
        {
            let rdata = match a {
                Answer::A(ip) => RData::A(A(*ip)),
                Answer::Aaaa(ip) => RData::AAAA(AAAA(*ip)),
                Answer::Srv(priority, weight, port, target) => RData::SRV(SRV::new(
                    *priority,
                    *weight,
                    *port,
                    Name::from_ascii(key(target)).ok()?,
                )),
            };
            reply.add_answer(Record::from_rdata(q.name().clone(), zone.ttl, rdata));
        }
    }
    // A known name without records of the asked type is NOERROR with no answers (NODATA).
    reply.set_response_code(if known {
        ResponseCode::NoError
    } else {
        ResponseCode::NXDomain
    });
    reply.to_vec().ok()
}
