//! HPACK (RFC 7541): our own header compression for the HTTP/2 server connection.
//!
//! Why not the `h2` crate's: its HPACK module is private (only its `server`/`client` use it),
//! and on h2c its server path was the largest cost per request (`benches/load/breakdown.py`,
//! h2c row), a good part of it HPACK: encoding the response head (SipHash lookups into its
//! dynamic-table index, Huffman on every literal, fresh buffers) and decoding the request head.
//! The `h2` crate stays a dependency for the upstream client (hyper).
//!
//! - [`Decoder`]: full RFC 7541 decoding — static and dynamic table with eviction and size
//!   updates, integers up to a safe bound, Huffman with the EOS/padding rules, never-indexed
//!   literals. Values are zero-copy slices of the block unless Huffman-coded; Huffman strings
//!   decode into the decoder's scratch buffer and are split off it, which reuses one allocation
//!   from request to request once the earlier values are dropped. Hostile input never panics,
//!   allocates at most a small multiple of the block (plus the bounded table), and does a
//!   bounded amount of work per input byte.
//! - [`Encoder`]: the cheapest correct output, see `encoder.rs` (static indices, literals without
//!   indexing, raw strings, no dynamic table).
//!
//! To re-measure in isolation: this module depends only on `bytes`, `http` and `thiserror`,
//! so a small release binary can include it with `#[path]` and loop over `encode_response` /
//! `decode`; callgrind's totals for N and 11N iterations give the instructions per call.
//!
//! Tests: `cargo test --locked --lib hpack` (RFC 7541 Appendix C, malformed input, round trips).

mod decoder;
mod encoder;
mod huffman;
mod table;
#[cfg(test)]
mod tests;

pub use decoder::Decoder;
pub use encoder::Encoder;

/// An HTTP/2 pseudo-header field name (RFC 9113 §8.3, `:protocol` from RFC 8441).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Pseudo {
    /// `:method`
    Method,
    /// `:scheme`
    Scheme,
    /// `:authority`
    Authority,
    /// `:path`
    Path,
    /// `:status`
    Status,
    /// `:protocol` (extended CONNECT)
    Protocol,
}

impl Pseudo {
    /// The name as it appears on the wire, with its colon.
    pub fn as_str(self) -> &'static str {
        match self {
            Pseudo::Method => ":method",
            Pseudo::Scheme => ":scheme",
            Pseudo::Authority => ":authority",
            Pseudo::Path => ":path",
            Pseudo::Status => ":status",
            Pseudo::Protocol => ":protocol",
        }
    }

    fn from_bytes(name: &[u8]) -> Option<Pseudo> {
        Some(match name {
            b":method" => Pseudo::Method,
            b":scheme" => Pseudo::Scheme,
            b":authority" => Pseudo::Authority,
            b":path" => Pseudo::Path,
            b":status" => Pseudo::Status,
            b":protocol" => Pseudo::Protocol,
            _ => return None,
        })
    }
}

/// A decoded field's name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FieldName {
    /// A known pseudo-header.
    Pseudo(Pseudo),
    /// A regular field with a valid, lowercase name.
    Header(http::HeaderName),
    /// Not a valid HTTP/2 field name (uppercase, an invalid character, empty) or an unknown
    /// pseudo-header: the request is malformed (RFC 9113 §8.2.1, §8.3), but the block still
    /// decodes so that the dynamic table stays in sync.
    Invalid,
}

impl FieldName {
    /// Classifies a literal name from the wire.
    fn from_wire(name: &[u8]) -> FieldName {
        if name.first() == Some(&b':') {
            return Pseudo::from_bytes(name).map_or(FieldName::Invalid, FieldName::Pseudo);
        }
        // `from_lowercase` refuses uppercase (RFC 9113 §8.2.1) and anything not a token.
        http::HeaderName::from_lowercase(name).map_or(FieldName::Invalid, FieldName::Header)
    }
}

/// Why a header block could not be decoded.
///
/// Every variant but [`DecodeError::ListTooLarge`] is a compression error: the decoder's state
/// is no longer in step with the peer's encoder, so the connection must end with
/// COMPRESSION_ERROR (RFC 9113 §4.3). `ListTooLarge` leaves the decoder in step (the block was
/// decoded to its end, only the emitting stopped), so the caller may refuse just the stream
/// (431) and keep the connection; treating it as a connection error is also safe.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// An integer longer than 5 continuation octets or above `u32::MAX` (§5.1 lets a decoder
    /// refuse integers beyond its limits).
    #[error("HPACK integer too large")]
    IntegerOverflow,
    /// The block ends inside a representation (an integer or a string).
    #[error("HPACK block truncated")]
    Truncated,
    /// Index 0, or an index past the static and dynamic tables (§2.3.3).
    #[error("HPACK index {0} out of range")]
    BadIndex(usize),
    /// Huffman padding longer than 7 bits or not a prefix of EOS (§5.2).
    #[error("HPACK Huffman string with invalid padding")]
    HuffmanPadding,
    /// The EOS symbol inside a Huffman string (§5.2).
    #[error("HPACK Huffman string contains EOS")]
    HuffmanEos,
    /// A dynamic table size update above the SETTINGS_HEADER_TABLE_SIZE we announced (§6.3).
    #[error("HPACK table size update {size} above the maximum {max}")]
    TableSizeTooLarge {
        /// The size the update asked for.
        size: usize,
        /// The maximum we announced.
        max: usize,
    },
    /// A dynamic table size update after a field representation (§4.2).
    #[error("HPACK table size update after a header field")]
    TableSizeUpdateNotAtStart,
    /// The decoded list (name + value + 32 per field, RFC 9113 §6.5.2) passed the caller's
    /// limit. Not a compression error: see the type's documentation.
    #[error("header list larger than the limit")]
    ListTooLarge,
}

impl DecodeError {
    /// Whether the connection must end with COMPRESSION_ERROR (every error but
    /// [`DecodeError::ListTooLarge`]).
    pub fn is_compression_error(self) -> bool {
        self != DecodeError::ListTooLarge
    }
}
