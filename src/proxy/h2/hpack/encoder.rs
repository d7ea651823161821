//! The response head encoder.
//!
//! Output choice (cost against bytes), as HAProxy's encoder does:
//!
//! - `:status` is one indexed octet for 200, 204, 206, 304, 400, 404 and 500, else a literal
//!   with the static name index 8 and the three digits.
//! - Every other field is a "literal without indexing" (§6.2.2), or "never indexed" (§6.2.3)
//!   when the `HeaderValue` is marked sensitive, so an intermediary downstream keeps it out of
//!   its tables too; the name is a static-table index when the name is in the static table (a
//!   switch on the length, no hashing), else a literal; strings are raw, never Huffman.
//! - No dynamic table: nothing to look up, nothing to evict, no per-connection memory.
//!
//! What it costs in bytes: Huffman saves about a fifth of each string and indexing makes a
//! repeated field one or two octets, so a typical response head is up to about twice as long.
//! That is a few dozen octets inside a frame we send anyway, against a Huffman pass
//! over every byte and a hash lookup per field (most of the `h2` crate's encode cost). Any
//! decoder accepts this output: every representation here is mandatory to support.
//!
//! Table size updates (§4.2, §6.3): the peer's decoder starts with a 4096-octet table and
//! shrinks it only when told. We never insert, so our table is always empty and a larger limit
//! needs no update; but when the peer's SETTINGS_HEADER_TABLE_SIZE drops below the size its
//! decoder believes we use, the next block must start with a size update no larger than the
//! smallest value seen since the previous block (nghttp2 refuses the block otherwise), so we
//! send that smallest value and it becomes the size we use from then on.

use bytes::{BufMut, BytesMut};
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};

use super::table::static_name_index;

/// The table size both sides assume before any SETTINGS (RFC 9113 §6.5.2).
const DEFAULT_TABLE_SIZE: usize = 4096;

/// Encodes header blocks for one peer (one per connection: it tracks the size updates owed).
#[derive(Debug)]
pub struct Encoder {
    /// The table size the peer's decoder assumes we use (only ever lowered).
    size: usize,
    /// A size update is owed at the start of the next block.
    update_pending: bool,
}

impl Default for Encoder {
    fn default() -> Self {
        Self::new()
    }
}

impl Encoder {
    /// An encoder for a new connection (the peer's table size at its default, 4096).
    pub fn new() -> Self {
        Encoder {
            size: DEFAULT_TABLE_SIZE,
            update_pending: false,
        }
    }

    /// The peer's SETTINGS_HEADER_TABLE_SIZE changed (call when applying its SETTINGS frame).
    /// A value below the size the peer's decoder assumes makes the next block start with a
    /// size update; a larger one changes nothing (we never use the table).
    pub fn set_max_table_size(&mut self, size: usize) {
        if size < self.size {
            self.size = size;
            self.update_pending = true;
        }
    }

    /// Appends the block for a response head: `:status`, then each field of `headers` in its
    /// iteration order.
    pub fn encode_response(&mut self, status: StatusCode, headers: &HeaderMap, dst: &mut BytesMut) {
        self.start_block(dst);
        let indexed = match status.as_u16() {
            200 => 8,
            204 => 9,
            206 => 10,
            304 => 11,
            400 => 12,
            404 => 13,
            500 => 14,
            _ => 0,
        };
        if indexed != 0 {
            dst.reserve(1);
            dst.put_u8(0x80 | indexed);
        } else {
            // Literal without indexing, name index 8 (`:status`), a raw 3-digit value.
            dst.reserve(5);
            dst.put_u8(0x08);
            dst.put_u8(3);
            dst.put_slice(status.as_str().as_bytes());
        }
        for (name, value) in headers {
            field(name, value, dst);
        }
    }

    /// Appends a trailers block (regular fields only).
    pub fn encode_trailers(&mut self, headers: &HeaderMap, dst: &mut BytesMut) {
        self.start_block(dst);
        for (name, value) in headers {
            field(name, value, dst);
        }
    }

    fn start_block(&mut self, dst: &mut BytesMut) {
        if self.update_pending {
            self.update_pending = false;
            dst.reserve(6);
            int(self.size, 5, 0x20, dst);
        }
    }
}

/// One field as a literal without indexing (never indexed when sensitive), raw strings.
#[inline]
fn field(name: &HeaderName, value: &HeaderValue, dst: &mut BytesMut) {
    let repr = if value.is_sensitive() { 0x10 } else { 0x00 };
    let name = name.as_str();
    let value = value.as_bytes();
    // Two 5-octet integers at most (lengths below 2^28) plus the index octets.
    dst.reserve(name.len() + value.len() + 12);
    match static_name_index(name) {
        Some(index) => int(index, 4, repr, dst),
        None => {
            dst.put_u8(repr);
            string(name.as_bytes(), dst);
        }
    }
    string(value, dst);
}

/// §5.2 with H = 0.
#[inline]
fn string(s: &[u8], dst: &mut BytesMut) {
    int(s.len(), 7, 0x00, dst);
    dst.put_slice(s);
}

/// §5.1: `value` with an N-bit prefix under the representation bits `repr`.
#[inline]
fn int(value: usize, prefix_bits: u32, repr: u8, dst: &mut BytesMut) {
    let max = (1usize << prefix_bits) - 1;
    if value < max {
        dst.put_u8(repr | value as u8);
        return;
    }
    dst.put_u8(repr | max as u8);
    let mut rest = value - max;
    while rest >= 0x80 {
        dst.put_u8(0x80 | (rest & 0x7f) as u8);
        rest >>= 7;
    }
    dst.put_u8(rest as u8);
}

#[cfg(test)]
pub(super) fn encode_int(value: usize, prefix_bits: u32, repr: u8, dst: &mut BytesMut) {
    int(value, prefix_bits, repr, dst)
}
