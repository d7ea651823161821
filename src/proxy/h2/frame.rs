//! HTTP/2 frames (RFC 9113 4 and 6): the 9-byte frame header read in place from the read
//! buffer, the payload checks that do not depend on stream state, and the writers of the frames
//! the server sends (appended to the connection's one write buffer, no allocation per frame).

use bytes::{BufMut, BytesMut};

/// The frame header's length.
pub const HEADER_LEN: usize = 9;

/// Frame types (RFC 9113 6).
pub const DATA: u8 = 0x0;
pub const HEADERS: u8 = 0x1;
pub const PRIORITY: u8 = 0x2;
pub const RST_STREAM: u8 = 0x3;
pub const SETTINGS: u8 = 0x4;
pub const PUSH_PROMISE: u8 = 0x5;
pub const PING: u8 = 0x6;
pub const GOAWAY: u8 = 0x7;
pub const WINDOW_UPDATE: u8 = 0x8;
pub const CONTINUATION: u8 = 0x9;

/// Flags.
pub const END_STREAM: u8 = 0x1;
pub const ACK: u8 = 0x1;
pub const END_HEADERS: u8 = 0x4;
pub const PADDED: u8 = 0x8;
pub const PRIORITY_FLAG: u8 = 0x20;

/// Settings identifiers (RFC 9113 6.5.2).
pub const SETTINGS_HEADER_TABLE_SIZE: u16 = 0x1;
pub const SETTINGS_ENABLE_PUSH: u16 = 0x2;
pub const SETTINGS_MAX_CONCURRENT_STREAMS: u16 = 0x3;
pub const SETTINGS_INITIAL_WINDOW_SIZE: u16 = 0x4;
pub const SETTINGS_MAX_FRAME_SIZE: u16 = 0x5;
pub const SETTINGS_MAX_HEADER_LIST_SIZE: u16 = 0x6;

/// The largest flow-control window (RFC 9113 6.9.1).
pub const MAX_WINDOW: i64 = (1 << 31) - 1;
/// The initial window of a connection and of a stream before SETTINGS say otherwise.
pub const DEFAULT_WINDOW: i64 = 65_535;
/// The smallest and largest SETTINGS_MAX_FRAME_SIZE (RFC 9113 6.5.2).
pub const MIN_MAX_FRAME_SIZE: u32 = 16_384;
pub const MAX_MAX_FRAME_SIZE: u32 = (1 << 24) - 1;

/// An HTTP/2 error code (RFC 9113 7).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reason(pub u32);

impl Reason {
    pub const NO_ERROR: Reason = Reason(0x0);
    pub const PROTOCOL_ERROR: Reason = Reason(0x1);
    pub const INTERNAL_ERROR: Reason = Reason(0x2);
    pub const FLOW_CONTROL_ERROR: Reason = Reason(0x3);
    pub const STREAM_CLOSED: Reason = Reason(0x5);
    pub const FRAME_SIZE_ERROR: Reason = Reason(0x6);
    pub const REFUSED_STREAM: Reason = Reason(0x7);
    pub const CANCEL: Reason = Reason(0x8);
    pub const COMPRESSION_ERROR: Reason = Reason(0x9);
    pub const ENHANCE_YOUR_CALM: Reason = Reason(0xb);

    /// The code's name, for logs.
    pub fn name(self) -> &'static str {
        match self.0 {
            0x0 => "NO_ERROR",
            0x1 => "PROTOCOL_ERROR",
            0x2 => "INTERNAL_ERROR",
            0x3 => "FLOW_CONTROL_ERROR",
            0x4 => "SETTINGS_TIMEOUT",
            0x5 => "STREAM_CLOSED",
            0x6 => "FRAME_SIZE_ERROR",
            0x7 => "REFUSED_STREAM",
            0x8 => "CANCEL",
            0x9 => "COMPRESSION_ERROR",
            0xa => "CONNECT_ERROR",
            0xb => "ENHANCE_YOUR_CALM",
            0xc => "INADEQUATE_SECURITY",
            0xd => "HTTP_1_1_REQUIRED",
            _ => "unknown error code",
        }
    }
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Head {
    /// The payload's length.
    pub len: usize,
    pub kind: u8,
    pub flags: u8,
    /// The stream identifier, reserved bit cleared.
    pub stream: u32,
}

impl Head {
    /// The header at the start of `buf`, if all 9 bytes are there.
    pub fn parse(buf: &[u8]) -> Option<Head> {
        let b: &[u8; HEADER_LEN] = buf.get(..HEADER_LEN)?.try_into().ok()?;
        Some(Head {
            len: (usize::from(b[0]) << 16) | (usize::from(b[1]) << 8) | usize::from(b[2]),
            kind: b[3],
            flags: b[4],
            stream: u32::from_be_bytes([b[5], b[6], b[7], b[8]]) & 0x7fff_ffff,
        })
    }

    pub fn has(&self, flag: u8) -> bool {
        self.flags & flag != 0
    }
}

/// A big-endian u32 at `at` of `payload` (the caller checked the length).
pub fn u32_at(payload: &[u8], at: usize) -> u32 {
    let mut word = [0u8; 4];
    if let Some(bytes) = payload.get(at..at + 4) {
        word.copy_from_slice(bytes);
    }
    u32::from_be_bytes(word)
}

/// The range of `payload` left once padding (and, for HEADERS, the priority fields) is taken
/// off; `None` when the padding is as long as the payload or longer (PROTOCOL_ERROR,
/// RFC 9113 6.1 and 6.2). Also returns the stream dependency when `priority` is set.
pub fn strip(
    head: &Head,
    payload: &[u8],
    priority: bool,
) -> Option<(std::ops::Range<usize>, Option<u32>)> {
    let mut start = 0;
    let mut end = payload.len();
    if head.has(PADDED) {
        let pad = usize::from(*payload.first()?);
        start = 1;
        end = end.checked_sub(pad)?;
    }
    let mut dependency = None;
    if priority {
        if end < start + 5 {
            return None;
        }
        dependency = Some(u32_at(payload, start) & 0x7fff_ffff);
        start += 5;
    }
    if start > end {
        return None;
    }
    Some((start..end, dependency))
}

/// Appends a frame header.
pub fn put_head(dst: &mut BytesMut, len: usize, kind: u8, flags: u8, stream: u32) {
    let len = len as u32;
    dst.put_slice(&[(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags]);
    dst.put_u32(stream & 0x7fff_ffff);
}

/// Rewrites the length of the frame whose header starts at `at`.
pub fn set_len(dst: &mut BytesMut, at: usize, len: usize) {
    let len = len as u32;
    if let Some(bytes) = dst.get_mut(at..at + 3) {
        bytes.copy_from_slice(&[(len >> 16) as u8, (len >> 8) as u8, len as u8]);
    }
}

/// Appends a SETTINGS frame with `pairs`.
pub fn put_settings(dst: &mut BytesMut, pairs: &[(u16, u32)]) {
    put_head(dst, pairs.len() * 6, SETTINGS, 0, 0);
    for &(id, value) in pairs {
        dst.put_u16(id);
        dst.put_u32(value);
    }
}

/// Appends a WINDOW_UPDATE frame.
pub fn put_window_update(dst: &mut BytesMut, stream: u32, increment: u32) {
    put_head(dst, 4, WINDOW_UPDATE, 0, stream);
    dst.put_u32(increment & 0x7fff_ffff);
}

/// Appends a RST_STREAM frame.
pub fn put_reset(dst: &mut BytesMut, stream: u32, reason: Reason) {
    put_head(dst, 4, RST_STREAM, 0, stream);
    dst.put_u32(reason.0);
}

/// Appends a GOAWAY frame (no debug data).
pub fn put_goaway(dst: &mut BytesMut, last_stream: u32, reason: Reason) {
    put_head(dst, 8, GOAWAY, 0, 0);
    dst.put_u32(last_stream & 0x7fff_ffff);
    dst.put_u32(reason.0);
}

/// Appends a PING frame.
pub fn put_ping(dst: &mut BytesMut, flags: u8, payload: [u8; 8]) {
    put_head(dst, 8, PING, flags, 0);
    dst.put_slice(&payload);
}

/// Appends a DATA frame carrying `data`.
pub fn put_data(dst: &mut BytesMut, stream: u32, data: &[u8], end: bool) {
    put_head(
        dst,
        data.len(),
        DATA,
        if end { END_STREAM } else { 0 },
        stream,
    );
    dst.put_slice(data);
}

/// Appends the header block `block` as a HEADERS frame and as many CONTINUATION frames as
/// `max_frame` requires.
pub fn put_block(
    dst: &mut BytesMut,
    stream: u32,
    block: &[u8],
    end_stream: bool,
    max_frame: usize,
) {
    let max_frame = max_frame.max(1);
    let mut chunks = block.chunks(max_frame).peekable();
    let end = if end_stream { END_STREAM } else { 0 };
    let first = chunks.next().unwrap_or(&[]);
    let last = chunks.peek().is_none();
    put_head(
        dst,
        first.len(),
        HEADERS,
        end | if last { END_HEADERS } else { 0 },
        stream,
    );
    dst.put_slice(first);
    while let Some(chunk) = chunks.next() {
        let last = chunks.peek().is_none();
        put_head(
            dst,
            chunk.len(),
            CONTINUATION,
            if last { END_HEADERS } else { 0 },
            stream,
        );
        dst.put_slice(chunk);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_header_round_trips_and_the_reserved_bit_is_cleared() {
        let mut buf = BytesMut::new();
        put_head(&mut buf, 0x01_02_03, HEADERS, END_HEADERS, 7);
        let mut bytes = buf.to_vec();
        assert_eq!(
            Head::parse(&bytes),
            Some(Head {
                len: 0x01_02_03,
                kind: HEADERS,
                flags: END_HEADERS,
                stream: 7
            })
        );
        bytes[5] |= 0x80;
        assert_eq!(Head::parse(&bytes).map(|h| h.stream), Some(7));
        assert_eq!(Head::parse(&bytes[..8]), None);
    }

    #[test]
    fn padding_and_priority_are_stripped_or_refused() {
        let head = |flags| Head {
            len: 0,
            kind: HEADERS,
            flags,
            stream: 1,
        };
        // Pad length 2, then data "ab", then 2 bytes of padding.
        let padded = [2, b'a', b'b', 0, 0];
        assert_eq!(strip(&head(PADDED), &padded, false), Some((1..3, None)));
        // Padding as long as the rest: refused.
        assert_eq!(strip(&head(PADDED), &[4, 0, 0, 0], false), None);
        assert_eq!(strip(&head(PADDED), &[], false), None);
        // Priority: dependency 3 (exclusive bit cleared), weight, then the block.
        let prio = [0x80, 0, 0, 3, 16, b'x'];
        assert_eq!(
            strip(&head(PRIORITY_FLAG), &prio, true),
            Some((5..6, Some(3)))
        );
        assert_eq!(strip(&head(PRIORITY_FLAG), &prio[..4], true), None);
        assert_eq!(strip(&head(0), b"xyz", false), Some((0..3, None)));
    }

    #[test]
    fn a_block_larger_than_a_frame_is_split_into_continuations() {
        let mut buf = BytesMut::new();
        put_block(&mut buf, 3, &[9u8; 10], true, 4);
        let mut at = 0;
        let mut frames = Vec::new();
        while let Some(head) = Head::parse(&buf[at..]) {
            frames.push((head.kind, head.flags, head.len));
            at += HEADER_LEN + head.len;
        }
        assert_eq!(
            frames,
            vec![
                (HEADERS, END_STREAM, 4),
                (CONTINUATION, 0, 4),
                (CONTINUATION, END_HEADERS, 2)
            ]
        );
        let mut one = BytesMut::new();
        put_block(&mut one, 3, &[], false, 16_384);
        assert_eq!(
            Head::parse(&one).map(|h| (h.flags, h.len)),
            Some((END_HEADERS, 0))
        );
    }
}
