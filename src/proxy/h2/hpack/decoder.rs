//! The header block decoder (RFC 7541 §3, §6).

use bytes::{Bytes, BytesMut};

use super::table::{DynamicTable, Entry, ENTRY_OVERHEAD};
use super::{huffman, DecodeError, FieldName};

/// Integers may use at most this many continuation octets (7 bits each: 35 bits, then bounded
/// by `u32::MAX`); anything longer is refused (§5.1), so a run of 0x80 octets cannot spin.
const MAX_CONTINUATION: u32 = 5;

/// The scratch buffer grows by at least this much, so that a few requests' Huffman values
/// share one allocation.
const SCRATCH_CHUNK: usize = 512;

/// A scratch buffer with more room than this is dropped after the block (an idle connection
/// keeps at most this much).
const SCRATCH_KEEP: usize = 4096;

/// Decodes header blocks from one peer; holds the dynamic table, so one per connection.
pub struct Decoder {
    table: DynamicTable,
    /// The SETTINGS_HEADER_TABLE_SIZE we announce: the most a size update may ask for.
    max_table_size: usize,
    /// Where Huffman strings decode. Values are split off it (they share its allocation);
    /// names and table copies are read and cleared. Kept from block to block: once the values
    /// split off earlier have been dropped, `reserve` takes the same allocation back, so a
    /// connection's requests decode their Huffman strings without allocating.
    scratch: BytesMut,
}

/// A string's place in the block.
struct Str {
    huffman: bool,
    start: usize,
    end: usize,
}

/// One block's read position.
struct Reader<'a> {
    block: &'a Bytes,
    pos: usize,
    scratch: &'a mut BytesMut,
}

impl Reader<'_> {
    #[inline]
    fn byte(&self) -> Result<u8, DecodeError> {
        self.block
            .get(self.pos)
            .copied()
            .ok_or(DecodeError::Truncated)
    }

    /// §5.1: an integer with an N-bit prefix (the representation bits above it are ignored).
    #[inline]
    fn int(&mut self, prefix_bits: u32) -> Result<usize, DecodeError> {
        let mask = (1u32 << prefix_bits) - 1;
        let first = u32::from(self.byte()?) & mask;
        self.pos += 1;
        if first < mask {
            return Ok(first as usize);
        }
        self.int_rest(mask)
    }

    /// The continuation octets of an integer whose prefix is all ones.
    #[cold]
    fn int_rest(&mut self, prefix: u32) -> Result<usize, DecodeError> {
        let mut value = u64::from(prefix);
        let mut shift = 0;
        loop {
            let b = self.byte()?;
            self.pos += 1;
            value += u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                break;
            }
            shift += 7;
            if shift >= 7 * MAX_CONTINUATION {
                return Err(DecodeError::IntegerOverflow);
            }
        }
        u32::try_from(value)
            .ok()
            .and_then(|v| usize::try_from(v).ok())
            .ok_or(DecodeError::IntegerOverflow)
    }

    /// §5.2: a string literal's position (not yet decoded).
    #[inline]
    fn str(&mut self) -> Result<Str, DecodeError> {
        let huffman = self.byte()? & 0x80 != 0;
        let len = self.int(7)?;
        let start = self.pos;
        let end = start
            .checked_add(len)
            .filter(|&end| end <= self.block.len())
            .ok_or(DecodeError::Truncated)?;
        self.pos = end;
        Ok(Str {
            huffman,
            start,
            end,
        })
    }

    fn raw(&self, s: &Str) -> Result<&[u8], DecodeError> {
        self.block.get(s.start..s.end).ok_or(DecodeError::Truncated)
    }

    /// Huffman-decodes `s` into the (empty) scratch buffer.
    fn huffman(&mut self, s: &Str) -> Result<(), DecodeError> {
        let src = self
            .block
            .get(s.start..s.end)
            .ok_or(DecodeError::Truncated)?;
        let max = huffman::max_decoded_len(src.len());
        if self.scratch.capacity() < max {
            self.scratch.reserve(max.max(SCRATCH_CHUNK));
        }
        self.scratch.clear();
        self.scratch.resize(max, 0);
        match huffman::decode(src, self.scratch) {
            Ok(n) => {
                self.scratch.truncate(n);
                Ok(())
            }
            Err(e) => {
                self.scratch.clear();
                Err(e)
            }
        }
    }

    /// A string as a value: a slice of the block, or Huffman-decoded and split off the scratch.
    fn value(&mut self, s: &Str) -> Result<Bytes, DecodeError> {
        if !s.huffman {
            return Ok(self.block.slice(s.start..s.end));
        }
        self.huffman(s)?;
        Ok(self.scratch.split().freeze())
    }

    /// A string as a value with an allocation of its own, for the dynamic table (a slice would
    /// keep the whole block, or the scratch, alive for as long as the entry stays there).
    fn owned_value(&mut self, s: &Str) -> Result<Bytes, DecodeError> {
        if !s.huffman {
            return Ok(Bytes::copy_from_slice(self.raw(s)?));
        }
        self.huffman(s)?;
        let value = Bytes::copy_from_slice(self.scratch);
        self.scratch.clear();
        Ok(value)
    }

    /// A literal name and its length.
    fn name(&mut self, s: &Str) -> Result<(FieldName, usize), DecodeError> {
        if !s.huffman {
            let raw = self.raw(s)?;
            return Ok((FieldName::from_wire(raw), raw.len()));
        }
        self.huffman(s)?;
        let name = (FieldName::from_wire(self.scratch), self.scratch.len());
        self.scratch.clear();
        Ok(name)
    }
}

impl Decoder {
    /// `max_table_size`: the SETTINGS_HEADER_TABLE_SIZE we announce (4096), which is also the
    /// table's initial size (RFC 7541 §4.2 with RFC 9113 §6.5.2).
    pub fn new(max_table_size: usize) -> Self {
        Decoder {
            table: DynamicTable::new(max_table_size),
            max_table_size,
            scratch: BytesMut::new(),
        }
    }

    /// Decodes one complete header block (HEADERS + CONTINUATION payloads already joined),
    /// calling `emit` for each field in order.
    ///
    /// A value is a zero-copy `block.slice(..)` when not Huffman-coded; Huffman-coded strings
    /// decode into the decoder's scratch buffer and are split off it (no allocation per field;
    /// see [`Decoder`]'s `scratch`). A name that is not a valid lowercase HTTP/2 field name, or
    /// an unknown pseudo-header, comes as [`FieldName::Invalid`] (the request is malformed;
    /// decoding goes on so that the table stays in sync). Never-indexed literals (§6.2.3)
    /// decode like the others: nothing here re-encodes them.
    ///
    /// `max_list_size`: once the RFC 9113 list size (name + value + 32 per field) passes it,
    /// nothing more is emitted, the block is still decoded to its end (the dynamic table stays
    /// in step with the peer's) and the result is [`DecodeError::ListTooLarge`]. Every other
    /// error is a connection error (COMPRESSION_ERROR), see [`DecodeError`].
    pub fn decode(
        &mut self,
        block: &Bytes,
        max_list_size: usize,
        emit: &mut dyn FnMut(FieldName, Bytes),
    ) -> Result<(), DecodeError> {
        let result = self.decode_block(block, max_list_size, emit);
        if self.scratch.capacity() > SCRATCH_KEEP {
            self.scratch = BytesMut::new();
        }
        result
    }

    fn decode_block(
        &mut self,
        block: &Bytes,
        max_list_size: usize,
        emit: &mut dyn FnMut(FieldName, Bytes),
    ) -> Result<(), DecodeError> {
        let mut r = Reader {
            block,
            pos: 0,
            scratch: &mut self.scratch,
        };
        let mut list_size = 0usize;
        let mut too_large = false;
        let mut at_start = true;
        let mut field = |name: FieldName, name_len: usize, value: Bytes| {
            list_size = list_size.saturating_add(name_len + value.len() + ENTRY_OVERHEAD);
            if list_size > max_list_size {
                too_large = true;
            }
            if !too_large {
                emit(name, value);
            }
        };
        while let Some(&b) = block.get(r.pos) {
            if b & 0x80 != 0 {
                // §6.1 Indexed Header Field.
                let index = r.int(7)?;
                let e = self.table.get(index)?;
                at_start = false;
                field(e.name.clone(), e.name_len, e.value.clone());
            } else if b & 0xe0 == 0x20 {
                // §6.3 Dynamic Table Size Update: only before the first field (§4.2).
                if !at_start {
                    return Err(DecodeError::TableSizeUpdateNotAtStart);
                }
                let size = r.int(5)?;
                if size > self.max_table_size {
                    return Err(DecodeError::TableSizeTooLarge {
                        size,
                        max: self.max_table_size,
                    });
                }
                self.table.set_max_size(size);
            } else {
                // §6.2 Literal Header Field: with incremental indexing (01, 6-bit index),
                // without indexing (0000) or never indexed (0001), both with a 4-bit index.
                let indexing = b & 0x40 != 0;
                let index = r.int(if indexing { 6 } else { 4 })?;
                at_start = false;
                let (name, name_len) = if index == 0 {
                    let s = r.str()?;
                    r.name(&s)?
                } else {
                    let e = self.table.get(index)?;
                    (e.name.clone(), e.name_len)
                };
                let s = r.str()?;
                if indexing {
                    let value = r.owned_value(&s)?;
                    self.table.insert(Entry {
                        name: name.clone(),
                        name_len,
                        value: value.clone(),
                    });
                    field(name, name_len, value);
                } else {
                    field(name, name_len, r.value(&s)?);
                }
            }
        }
        if too_large {
            return Err(DecodeError::ListTooLarge);
        }
        Ok(())
    }

    #[cfg(test)]
    pub(super) fn table(&self) -> &DynamicTable {
        &self.table
    }
}
