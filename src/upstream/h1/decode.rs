//! The response body's framing (RFC 9112 6 and 7.1): a Content-Length count, chunked transfer
//! coding (extensions skipped, trailers parsed), or everything until the backend closes.
//!
//! A pure state machine over the connection's read buffer: [`Decoder::decode`] takes what the
//! buffer holds and says what it found (data, trailers, the end, or "need more bytes"). Data is
//! split off the buffer without a copy. Malformed framing is an error, never a panic, and an
//! error leaves the state where it was (the connection is dropped by the caller anyway).

use bytes::{Buf, Bytes, BytesMut};
use http::{HeaderMap, HeaderName, HeaderValue};

/// Bytes of chunk extensions one body may carry (hyper's limit too): they are skipped, and an
/// unbounded skip would let a backend keep the body "in progress" forever without data.
const MAX_CHUNK_EXTENSIONS: usize = 16 * 1024;
/// Size of the trailer section; it is parsed once whole, so it must fit in the buffer.
const MAX_TRAILER_BYTES: usize = 16 * 1024;
/// Trailer fields per body.
const MAX_TRAILERS: usize = 64;
/// Hex digits of a chunk size: 16 fill a u64, more can only overflow.
const MAX_SIZE_DIGITS: u8 = 16;

/// How the response body is delimited, as the head's status and headers say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Framing {
    /// Exactly this many bytes (0 for HEAD, 204, 304, 101).
    Length(u64),
    /// Chunked transfer coding.
    Chunked,
    /// Until the backend closes the connection (never reusable).
    Close,
}

/// A body whose framing broke: the connection is dropped, the downstream stream aborted.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub(crate) enum DecodeError {
    #[error("invalid chunk size line")]
    ChunkSize,
    #[error("chunk size overflows")]
    ChunkSizeOverflow,
    #[error("chunk extensions longer than {MAX_CHUNK_EXTENSIONS} bytes")]
    ChunkExtensions,
    #[error("chunk data not followed by CRLF")]
    ChunkDataEnd,
    #[error("invalid trailer section")]
    Trailers,
    #[error("trailer section larger than {MAX_TRAILER_BYTES} bytes")]
    TrailersTooLarge,
    #[error("connection closed before the response body ended")]
    Incomplete,
}

/// What [`Decoder::decode`] found in the buffer.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Decoded {
    Data(Bytes),
    Trailers(HeaderMap),
    End,
    /// The buffer holds no more of the body: read from the socket, then call again.
    NeedMore,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Content-Length bytes left.
    Length(u64),
    Close,
    /// Reading the hex chunk size.
    Size {
        size: u64,
        digits: u8,
    },
    /// Whitespace after the size, before `;` or CR.
    SizeSpace {
        size: u64,
    },
    /// Skipping a chunk extension up to CR.
    Extension {
        size: u64,
    },
    /// Expecting the LF of the size line.
    SizeLf {
        size: u64,
    },
    /// Chunk data bytes left.
    Data(u64),
    DataCr,
    DataLf,
    /// After the last chunk: the (possibly empty) trailer section.
    Trailers,
    End,
}

/// One response body's decoder.
#[derive(Debug)]
pub(crate) struct Decoder {
    state: State,
    extension_bytes: usize,
    /// Parsed trailers not yet handed out (boxed: rare, and the decoder lives in every body).
    trailers: Option<Box<HeaderMap>>,
}

impl Decoder {
    pub(crate) fn new(framing: Framing) -> Self {
        let state = match framing {
            Framing::Length(0) => State::End,
            Framing::Length(n) => State::Length(n),
            Framing::Chunked => State::Size { size: 0, digits: 0 },
            Framing::Close => State::Close,
        };
        Self {
            state,
            extension_bytes: 0,
            trailers: None,
        }
    }

    /// The body has ended and everything in it was handed out.
    pub(crate) fn is_end(&self) -> bool {
        self.state == State::End && self.trailers.is_none()
    }

    /// Body bytes still to come, when the framing says so.
    pub(crate) fn remaining(&self) -> Option<u64> {
        match self.state {
            State::Length(n) => Some(n),
            State::End if self.trailers.is_none() => Some(0),
            _ => None,
        }
    }

    /// The next piece of the body out of `buf`.
    pub(crate) fn decode(&mut self, buf: &mut BytesMut) -> Result<Decoded, DecodeError> {
        self.skip_framing(buf)?;
        match self.state {
            State::Length(left) | State::Data(left) => {
                if buf.is_empty() {
                    return Ok(Decoded::NeedMore);
                }
                let n = usize::try_from(left).map_or(buf.len(), |left| left.min(buf.len()));
                let data = buf.split_to(n).freeze();
                let left = left - n as u64;
                self.state = match (self.state, left) {
                    (State::Length(_), 0) => State::End,
                    (State::Length(_), left) => State::Length(left),
                    (_, 0) => State::DataCr,
                    (_, left) => State::Data(left),
                };
                // Consume the framing that follows (CRLF, the next size line, the last chunk)
                // now, so a body whose end is already buffered reports its end with its last
                // data. An error here surfaces again, unchanged, on the next call.
                let _ = self.skip_framing(buf);
                Ok(Decoded::Data(data))
            }
            State::Close if buf.is_empty() => Ok(Decoded::NeedMore),
            State::Close => Ok(Decoded::Data(buf.split().freeze())),
            State::End => Ok(match self.trailers.take() {
                Some(trailers) => Decoded::Trailers(*trailers),
                None => Decoded::End,
            }),
            _ => Ok(Decoded::NeedMore),
        }
    }

    /// The backend closed the connection: the end of a close-delimited body, an error for
    /// any other body that has not ended.
    pub(crate) fn eof(&mut self) -> Result<Decoded, DecodeError> {
        match self.state {
            State::Close => {
                self.state = State::End;
                Ok(Decoded::End)
            }
            State::End => Ok(match self.trailers.take() {
                Some(trailers) => Decoded::Trailers(*trailers),
                None => Decoded::End,
            }),
            _ => Err(DecodeError::Incomplete),
        }
    }

    /// Consumes framing bytes (everything but data) until data, the end, or an empty buffer.
    fn skip_framing(&mut self, buf: &mut BytesMut) -> Result<(), DecodeError> {
        // Bounded by the buffer: every pass consumes a byte, or returns.
        loop {
            let state = match self.state {
                State::Length(_) | State::Close | State::Data(_) | State::End => return Ok(()),
                State::Trailers => return self.trailers(buf),
                state => state,
            };
            let Some(&byte) = buf.first() else {
                return Ok(());
            };
            self.state = match (state, byte) {
                (State::Size { size, digits }, _) if byte.is_ascii_hexdigit() => {
                    if digits >= MAX_SIZE_DIGITS {
                        return Err(DecodeError::ChunkSizeOverflow);
                    }
                    let digit = u64::from(hex_value(byte));
                    let size = size
                        .checked_mul(16)
                        .and_then(|s| s.checked_add(digit))
                        .ok_or(DecodeError::ChunkSizeOverflow)?;
                    State::Size {
                        size,
                        digits: digits + 1,
                    }
                }
                (State::Size { digits: 0, .. }, _) => return Err(DecodeError::ChunkSize),
                (State::Size { size, .. } | State::SizeSpace { size }, b' ' | b'\t') => {
                    State::SizeSpace { size }
                }
                (State::Size { size, .. } | State::SizeSpace { size }, b';') => {
                    State::Extension { size }
                }
                (
                    State::Size { size, .. }
                    | State::SizeSpace { size }
                    | State::Extension { size },
                    b'\r',
                ) => State::SizeLf { size },
                (State::Extension { .. }, b'\n') => return Err(DecodeError::ChunkSize),
                (State::Extension { size }, _) => {
                    self.extension_bytes += 1;
                    if self.extension_bytes > MAX_CHUNK_EXTENSIONS {
                        return Err(DecodeError::ChunkExtensions);
                    }
                    State::Extension { size }
                }
                (State::SizeLf { size: 0 }, b'\n') => State::Trailers,
                (State::SizeLf { size }, b'\n') => State::Data(size),
                (State::DataCr, b'\r') => State::DataLf,
                (State::DataLf, b'\n') => State::Size { size: 0, digits: 0 },
                (State::DataCr | State::DataLf, _) => return Err(DecodeError::ChunkDataEnd),
                _ => return Err(DecodeError::ChunkSize),
            };
            buf.advance(1);
        }
    }

    /// The trailer section after the last chunk, parsed once it is whole.
    fn trailers(&mut self, buf: &mut BytesMut) -> Result<(), DecodeError> {
        if buf.starts_with(b"\r\n") {
            buf.advance(2);
            self.state = State::End;
            return Ok(());
        }
        let mut fields = [httparse::EMPTY_HEADER; MAX_TRAILERS];
        let (len, map) = match httparse::parse_headers(buf, &mut fields) {
            Ok(httparse::Status::Complete((len, fields))) => {
                let mut map = HeaderMap::with_capacity(fields.len());
                for field in fields.iter() {
                    let name = HeaderName::from_bytes(field.name.as_bytes())
                        .map_err(|_| DecodeError::Trailers)?;
                    let value =
                        HeaderValue::from_bytes(field.value).map_err(|_| DecodeError::Trailers)?;
                    map.append(name, value);
                }
                (len, map)
            }
            Ok(httparse::Status::Partial) if buf.len() > MAX_TRAILER_BYTES => {
                return Err(DecodeError::TrailersTooLarge)
            }
            Ok(httparse::Status::Partial) => return Ok(()),
            Err(httparse::Error::TooManyHeaders) => return Err(DecodeError::TrailersTooLarge),
            Err(_) => return Err(DecodeError::Trailers),
        };
        if len > MAX_TRAILER_BYTES {
            return Err(DecodeError::TrailersTooLarge);
        }
        buf.advance(len);
        self.trailers = (!map.is_empty()).then(|| Box::new(map));
        self.state = State::End;
        Ok(())
    }
}

fn hex_value(byte: u8) -> u8 {
    match byte {
        b'0'..=b'9' => byte - b'0',
        b'a'..=b'f' => byte - b'a' + 10,
        b'A'..=b'F' => byte - b'A' + 10,
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Everything a decoder makes of `input` fed in pieces cut at `cuts`, then EOF.
    fn run(
        framing: Framing,
        input: &[u8],
        cuts: &[usize],
    ) -> (Vec<u8>, Option<HeaderMap>, Result<(), DecodeError>) {
        let mut decoder = Decoder::new(framing);
        let mut buf = BytesMut::new();
        let mut body = Vec::new();
        let mut trailers = None;
        let mut pieces = Vec::new();
        let mut start = 0;
        for &cut in cuts {
            let cut = cut.clamp(start, input.len());
            pieces.push(&input[start..cut]);
            start = cut;
        }
        pieces.push(&input[start..]);
        let mut pieces = pieces.into_iter();
        loop {
            match decoder.decode(&mut buf) {
                Ok(Decoded::Data(data)) => body.extend_from_slice(&data),
                Ok(Decoded::Trailers(t)) => trailers = Some(t),
                Ok(Decoded::End) => return (body, trailers, Ok(())),
                Ok(Decoded::NeedMore) => match pieces.next() {
                    Some(piece) => buf.extend_from_slice(piece),
                    None => match decoder.eof() {
                        Ok(Decoded::Trailers(t)) => trailers = Some(t),
                        Ok(_) => return (body, trailers, Ok(())),
                        Err(e) => return (body, trailers, Err(e)),
                    },
                },
                Err(e) => return (body, trailers, Err(e)),
            }
        }
    }

    #[test]
    fn chunked_with_extensions_and_trailers() {
        let input = b"5;ext=1\r\nhello\r\n6 \r\n world\r\n0\r\nx-check: 1\r\nx-other: b\r\n\r\n";
        let (body, trailers, result) = run(Framing::Chunked, input, &[]);
        assert_eq!(result, Ok(()));
        assert_eq!(body, b"hello world");
        let trailers = trailers.expect("trailers");
        assert_eq!(trailers["x-check"], "1");
        assert_eq!(trailers["x-other"], "b");
    }

    #[test]
    fn the_end_is_known_with_the_last_data_when_buffered() {
        let mut decoder = Decoder::new(Framing::Chunked);
        let mut buf = BytesMut::from(&b"3\r\nabc\r\n0\r\n\r\n"[..]);
        assert_eq!(
            decoder.decode(&mut buf),
            Ok(Decoded::Data(Bytes::from_static(b"abc")))
        );
        assert!(decoder.is_end());
        assert!(buf.is_empty());
        let mut decoder = Decoder::new(Framing::Length(3));
        let mut buf = BytesMut::from(&b"abcextra"[..]);
        assert_eq!(
            decoder.decode(&mut buf),
            Ok(Decoded::Data(Bytes::from_static(b"abc")))
        );
        assert!(decoder.is_end());
        assert_eq!(
            &buf[..],
            b"extra",
            "bytes after the body stay for the caller to judge"
        );
    }

    #[test]
    fn bad_framing_is_an_error() {
        for input in [
            &b"5\r\nhello\r\nzz\r\n"[..],
            b"5\r\nhelloX\r\n0\r\n\r\n",
            b"\r\n",
            b"5\nhello\r\n0\r\n\r\n",
            b"11111111111111111\r\n",
            b"0\r\nbad header\r\n\r\n",
        ] {
            let (_, _, result) = run(Framing::Chunked, input, &[]);
            assert!(result.is_err(), "{}", String::from_utf8_lossy(input));
        }
        let (_, _, result) = run(Framing::Length(10), b"short", &[]);
        assert_eq!(result, Err(DecodeError::Incomplete));
        let (_, _, result) = run(Framing::Chunked, b"5\r\nhel", &[]);
        assert_eq!(result, Err(DecodeError::Incomplete));
    }

    #[test]
    fn close_delimited_ends_at_eof() {
        let (body, _, result) = run(Framing::Close, b"all of it", &[3]);
        assert_eq!((body.as_slice(), result), (&b"all of it"[..], Ok(())));
    }

    #[test]
    fn endless_extensions_are_refused() {
        let mut input = b"1;".to_vec();
        input.extend(std::iter::repeat_n(b'a', MAX_CHUNK_EXTENSIONS + 1));
        let (_, _, result) = run(Framing::Chunked, &input, &[]);
        assert_eq!(result, Err(DecodeError::ChunkExtensions));
    }

    fn chunked(chunks: &[Vec<u8>], trailer: bool) -> Vec<u8> {
        let mut out = Vec::new();
        for chunk in chunks.iter().filter(|c| !c.is_empty()) {
            out.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
            out.extend_from_slice(chunk);
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"0\r\n");
        if trailer {
            out.extend_from_slice(b"x-t: v\r\n");
        }
        out.extend_from_slice(b"\r\n");
        out
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn arbitrary_bytes_never_panic(
            input in proptest::collection::vec(any::<u8>(), 0..256),
            cuts in proptest::collection::vec(0usize..256, 0..6),
            which in 0u8..3,
        ) {
            let framing = match which {
                0 => Framing::Chunked,
                1 => Framing::Length(100),
                _ => Framing::Close,
            };
            let _ = run(framing, &input, &cuts);
        }

        #[test]
        fn split_reads_give_the_same_body(
            chunks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..40), 0..5),
            trailer in any::<bool>(),
        ) {
            let input = chunked(&chunks, trailer);
            let whole = run(Framing::Chunked, &input, &[]);
            prop_assert_eq!(&whole.2, &Ok(()));
            prop_assert_eq!(&whole.0, &chunks.concat());
            prop_assert_eq!(whole.1.is_some(), trailer);
            for cut in 0..=input.len() {
                let split = run(Framing::Chunked, &input, &[cut]);
                prop_assert_eq!(&split.0, &whole.0);
                prop_assert_eq!(&split.1, &whole.1);
                prop_assert_eq!(&split.2, &whole.2);
            }
            let bytewise: Vec<usize> = (1..input.len()).collect();
            let split = run(Framing::Chunked, &input, &bytewise);
            prop_assert_eq!(&split.0, &whole.0);
        }
    }
}
