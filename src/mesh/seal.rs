//! Datagram sealing: every mesh datagram is ChaCha20-Poly1305 (RFC 8439) under a key derived
//! from a line of `secret_file`, and carries a timestamp and a per-sender counter so replays are
//! dropped.
//!
//! Packet: `[SEAL_VERSION][sender instance: 8][counter: 8][ciphertext + 16-byte tag]`; the
//! plaintext is `[sent at, ms since the epoch: 8][payload]`. The 17-byte header is the AEAD's
//! associated data, so the instance and counter the replay check reads are authenticated.
//!
//! Keys: each non-empty line of `secret_file` is a master secret; HKDF-SHA256 (salt and info
//! fixed below) turns it into a master key, and each sender seals under
//! `HKDF-Expand(master, "sender" || instance)`, its own key, with the counter as nonce. Every
//! member shares the file, so without per-sender keys the 96-bit nonces of different senders
//! could collide; with them a nonce repeats only if one process's counter wraps (2^64). (This is
//! what XChaCha20's 192-bit nonce buys, done with the 96-bit cipher that `ring` ships.) The first
//! line seals, any line opens: rotation is "add the new key as a second line everywhere, then
//! move it first, then drop the old one".
//!
//! Why `ring` and not the RustCrypto `chacha20poly1305` crate: ring is already in the tree
//! (rustls' provider), and its cipher is compiled optimised even in test builds, while the
//! RustCrypto one is generic and so compiled at our crate's debug opt-level, where sealing
//! dominated the mesh simulation's wall time (`cargo test --test mesh_sim` is the one to time).
//!
//! Replays: a packet older (or further in the future) than [`REPLAY_WINDOW`] is dropped outright;
//! within it, each sender instance has a sliding 64-counter bitmap (the IPsec anti-replay window,
//! RFC 4303 §3.4.3), so each (instance, counter) opens at most once. Sender state older than the
//! window is forgotten: its packets would fail the timestamp check anyway.

use std::collections::HashMap;

use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, CHACHA20_POLY1305};
use ring::hkdf;
use thiserror::Error;

/// First byte of every sealed datagram; a later format bumps it and old nodes reject it.
pub const SEAL_VERSION: u8 = 2;
/// How far a packet's timestamp may be from our clock (both ways) and still open. Members'
/// clocks must agree to within this (NTP does far better).
pub const REPLAY_WINDOW_MS: u64 = 30_000;
/// The same, as a duration, for docs and callers.
pub const REPLAY_WINDOW: std::time::Duration = std::time::Duration::from_millis(REPLAY_WINDOW_MS);
/// Bytes a seal adds to a payload: header, timestamp, tag.
pub const OVERHEAD: usize = HEADER + 8 + 16;
const HEADER: usize = 1 + 8 + 8;
/// Counters this far behind a sender's highest are too old to tell apart: dropped.
const COUNTER_WINDOW: u64 = 64;
/// Shortest accepted key line of `secret_file`, in bytes (defined with the config check that
/// enforces it; see there why 32).
pub use crate::config::mesh_rules::MIN_KEY_BYTES;
/// Senders remembered at most (a flood of forged-but-valid instances cannot grow memory).
const MAX_SENDERS: usize = 4096;

const HKDF_SALT: &[u8] = b"switchyard-mesh";
const HKDF_INFO: &[u8] = b"datagram key v2";

/// Why a datagram did not open. Each is counted in `switchyard_mesh_rejected_packets_total`.
#[derive(Debug, Error, Clone, Copy, PartialEq, Eq)]
pub enum Rejected {
    /// Too short, or an unknown seal version.
    #[error("malformed datagram")]
    Malformed,
    /// No key opens it: another cluster, a wrong key, or tampering.
    #[error("authentication failed")]
    Unauthentic,
    /// Timestamp outside the replay window.
    #[error("stale or future timestamp")]
    Stale,
    /// This (instance, counter) was seen already, or is too far behind.
    #[error("replayed datagram")]
    Replayed,
}

/// 32 bytes out of HKDF (ring's output-length type).
struct Len32;

impl hkdf::KeyType for Len32 {
    fn len(&self) -> usize {
        32
    }
}

/// The master keys of a `secret_file`, first one sealing.
#[derive(Clone)]
pub struct Keys {
    masters: Vec<hkdf::Prk>,
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print key material.
        write!(f, "Keys({} keys)", self.masters.len())
    }
}

impl Keys {
    /// One master key per non-empty line of `text` (surrounding whitespace ignored). `None`
    /// when there is no line at all (the config check refuses such a file already).
    pub fn from_text(text: &str) -> Option<Self> {
        let masters: Vec<_> = text
            .lines()
            .map(str::trim)
            .filter(|line| !line.is_empty())
            .map(|line| hkdf::Salt::new(hkdf::HKDF_SHA256, HKDF_SALT).extract(line.as_bytes()))
            .collect();
        (!masters.is_empty()).then_some(Self { masters })
    }

    /// Checks a `secret_file`'s text before use (see [`crate::config::mesh_rules::check_secret_text`]):
    /// the config check and the mesh start both call it, so `switchyard check` and a start agree.
    pub fn check_text(text: &str) -> Result<(), String> {
        crate::config::mesh_rules::check_secret_text(text)
    }

    /// Master key `index`'s key for sender `instance`.
    fn sender_key(&self, index: usize, instance: u64) -> Option<LessSafeKey> {
        let mut key = [0u8; 32];
        let id = instance.to_be_bytes();
        let info = [HKDF_INFO, &id[..]];
        // 32 bytes is far below HKDF-SHA256's 255 × 32 limit: neither step can fail.
        self.masters
            .get(index)?
            .expand(&info, Len32)
            .ok()?
            .fill(&mut key)
            .ok()?;
        UnboundKey::new(&CHACHA20_POLY1305, &key)
            .ok()
            .map(LessSafeKey::new)
    }
}

fn nonce(counter: u64) -> Nonce {
    let mut bytes = [0u8; 12];
    bytes[4..].copy_from_slice(&counter.to_be_bytes());
    Nonce::assume_unique_for_key(bytes)
}

/// Seals outgoing datagrams for one sender instance.
pub struct Sealer {
    key: Option<LessSafeKey>,
    instance: u64,
    counter: u64,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Sealer({:016x}, {})", self.instance, self.counter)
    }
}

impl Sealer {
    /// A sealer for a process whose random instance id is `instance`, under `keys`' first key.
    pub fn new(keys: Keys, instance: u64) -> Self {
        Self {
            key: keys.sender_key(0, instance),
            instance,
            counter: 0,
        }
    }

    /// `payload` sealed, stamped `now_ms` (wall clock, ms since the epoch).
    pub fn seal(&mut self, payload: &[u8], now_ms: u64) -> Vec<u8> {
        self.counter += 1;
        let mut out = Vec::with_capacity(OVERHEAD + payload.len());
        out.push(SEAL_VERSION);
        out.extend_from_slice(&self.instance.to_be_bytes());
        out.extend_from_slice(&self.counter.to_be_bytes());
        let mut body = Vec::with_capacity(8 + payload.len() + 16);
        body.extend_from_slice(&now_ms.to_be_bytes());
        body.extend_from_slice(payload);
        let sealed = self.key.as_ref().is_some_and(|key| {
            key.seal_in_place_append_tag(nonce(self.counter), Aad::from(&out[..HEADER]), &mut body)
                .is_ok()
        });
        // Sealing fails only for absurd lengths; an unsealed datagram is never sent.
        if !sealed {
            return Vec::new();
        }
        out.extend_from_slice(&body);
        out
    }
}

/// A sender's anti-replay window and its derived keys.
struct Sender {
    highest: u64,
    /// Bit i set = counter `highest - i` was seen.
    seen: u64,
    last_ms: u64,
    /// The key that opened its first datagram (index into the masters) and its derived key.
    key: (usize, LessSafeKey),
}

/// Opens incoming datagrams and remembers what it opened, to drop replays.
pub struct Opener {
    keys: Keys,
    senders: HashMap<u64, Sender>,
}

impl std::fmt::Debug for Opener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Opener({} senders)", self.senders.len())
    }
}

impl Opener {
    /// An opener accepting any of `keys`.
    pub fn new(keys: Keys) -> Self {
        Self {
            keys,
            senders: HashMap::new(),
        }
    }

    /// The payload of `packet` if it is authentic, fresh and not seen before.
    pub fn open(&mut self, packet: &[u8], now_ms: u64) -> Result<Vec<u8>, Rejected> {
        if packet.len() < OVERHEAD || packet[0] != SEAL_VERSION {
            return Err(Rejected::Malformed);
        }
        let field = |at: usize| {
            packet[at..at + 8]
                .try_into()
                .map(u64::from_be_bytes)
                .map_err(|_| Rejected::Malformed)
        };
        let (instance, counter) = (field(1)?, field(9)?);
        let aad = &packet[..HEADER];
        let mut body = packet[HEADER..].to_vec();
        // A known sender's key first; otherwise every configured key in turn.
        let known = self.senders.get(&instance).map(|s| s.key.0);
        let order = known
            .into_iter()
            .chain((0..self.keys.masters.len()).filter(|&i| Some(i) != known));
        let mut opened = None;
        for index in order {
            let cached = self
                .senders
                .get(&instance)
                .filter(|s| s.key.0 == index)
                .map(|s| &s.key.1);
            let derived;
            let key = match cached {
                Some(key) => key,
                None => match self.keys.sender_key(index, instance) {
                    Some(key) => {
                        derived = key;
                        &derived
                    }
                    None => continue,
                },
            };
            let mut attempt = body.clone();
            if let Ok(plain) = key.open_in_place(nonce(counter), Aad::from(aad), &mut attempt) {
                let len = plain.len();
                attempt.truncate(len);
                opened = Some((index, attempt));
                break;
            }
        }
        let (index, plain) = opened.ok_or(Rejected::Unauthentic)?;
        body.clear();
        let sent = plain
            .get(..8)
            .and_then(|b| b.try_into().ok())
            .map(u64::from_be_bytes)
            .ok_or(Rejected::Malformed)?;
        if sent.abs_diff(now_ms) > REPLAY_WINDOW_MS {
            return Err(Rejected::Stale);
        }
        self.check_replay(instance, counter, index, now_ms)?;
        Ok(plain[8..].to_vec())
    }

    fn check_replay(
        &mut self,
        instance: u64,
        counter: u64,
        index: usize,
        now_ms: u64,
    ) -> Result<(), Rejected> {
        if self.senders.len() >= MAX_SENDERS && !self.senders.contains_key(&instance) {
            self.senders
                .retain(|_, s| now_ms.saturating_sub(s.last_ms) <= REPLAY_WINDOW_MS);
            if self.senders.len() >= MAX_SENDERS {
                return Err(Rejected::Replayed);
            }
        }
        let sender = match self.senders.entry(instance) {
            std::collections::hash_map::Entry::Occupied(entry) => entry.into_mut(),
            std::collections::hash_map::Entry::Vacant(entry) => {
                let Some(key) = self.keys.sender_key(index, instance) else {
                    return Err(Rejected::Unauthentic);
                };
                entry.insert(Sender {
                    highest: 0,
                    seen: 0,
                    last_ms: now_ms,
                    key: (index, key),
                })
            }
        };
        if counter > sender.highest {
            let shift = counter - sender.highest;
            sender.seen = if shift >= COUNTER_WINDOW {
                0
            } else {
                sender.seen << shift
            } | 1;
            sender.highest = counter;
        } else {
            let behind = sender.highest - counter;
            if behind >= COUNTER_WINDOW || sender.seen & (1 << behind) != 0 {
                return Err(Rejected::Replayed);
            }
            sender.seen |= 1 << behind;
        }
        sender.last_ms = now_ms;
        if sender.key.0 != index {
            // The sender moved to another key (rotation): follow it.
            if let Some(key) = self.keys.sender_key(index, instance) {
                sender.key = (index, key);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(text: &str) -> Keys {
        Keys::from_text(text).expect("a key")
    }

    #[test]
    fn round_trip_and_rotation() {
        let mut sealer = Sealer::new(keys("new\nold\n"), 7);
        let packet = sealer.seal(b"hello", 1_000_000);
        assert_eq!(packet.len(), b"hello".len() + OVERHEAD);
        // A node that still seals with `old` but already accepts `new` opens it.
        let mut opener = Opener::new(keys("old\n\n  new  \n"));
        assert_eq!(
            opener.open(&packet, 1_000_100).as_deref(),
            Ok(&b"hello"[..])
        );
        let mut stranger = Opener::new(keys("other"));
        assert_eq!(
            stranger.open(&packet, 1_000_100),
            Err(Rejected::Unauthentic)
        );
        assert!(Keys::from_text(" \n\n").is_none());
    }

    #[test]
    fn tampering_staleness_and_replays_are_rejected() {
        let mut sealer = Sealer::new(keys("k"), 1);
        let mut opener = Opener::new(keys("k"));
        let first = sealer.seal(b"a", 50_000);
        let second = sealer.seal(b"b", 50_000);
        assert!(opener.open(&second, 50_000).is_ok());
        assert!(
            opener.open(&first, 50_000).is_ok(),
            "out of order within the window"
        );
        assert_eq!(opener.open(&first, 50_000), Err(Rejected::Replayed));
        assert_eq!(opener.open(&second, 50_001), Err(Rejected::Replayed));

        let mut flipped = sealer.seal(b"c", 50_000);
        let last = flipped.len() - 1;
        flipped[last] ^= 1;
        assert_eq!(opener.open(&flipped, 50_000), Err(Rejected::Unauthentic));
        // The nonce is authenticated: forging another counter breaks the tag.
        let mut forged = sealer.seal(b"d", 50_000);
        forged[16] ^= 1; // the counter, in the authenticated header
        assert_eq!(opener.open(&forged, 50_000), Err(Rejected::Unauthentic));

        let old = sealer.seal(b"e", 50_000);
        assert_eq!(
            opener.open(&old, 50_000 + REPLAY_WINDOW_MS + 1),
            Err(Rejected::Stale)
        );
        assert_eq!(
            opener.open(&[SEAL_VERSION; 10], 0),
            Err(Rejected::Malformed)
        );
        let mut future = sealer.seal(b"f", 50_000);
        future[0] = 9;
        assert_eq!(opener.open(&future, 50_000), Err(Rejected::Malformed));
    }

    #[test]
    fn counters_far_behind_are_dropped() {
        let mut sealer = Sealer::new(keys("k"), 3);
        let mut opener = Opener::new(keys("k"));
        let early = sealer.seal(b"x", 10);
        for _ in 0..COUNTER_WINDOW {
            let p = sealer.seal(b"y", 10);
            assert!(opener.open(&p, 10).is_ok());
        }
        assert_eq!(opener.open(&early, 10), Err(Rejected::Replayed));
    }
}
