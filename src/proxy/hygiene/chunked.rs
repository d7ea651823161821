//! Decoding a chunked request body (RFC 9112 7.1) to find where it ends, without buffering it.
//!
//! The HTTP/1 reader (`GuardedIo::poll_body`) hands the data on itself and passes the framing
//! here ([`Chunked::skip_framing`]), one slice at a time, as it arrives. The grammar is strict:
//! a size line is 1–16 hex digits, optionally followed by `;extensions`, then CRLF; data is
//! followed by CRLF; trailer lines end with CRLF. Anything else is [`ChunkError::Malformed`], so
//! no lenient reading elsewhere can find a different end of the body.

/// Longest chunk-size line with its extensions. Extensions are almost never used; 4 KiB is
/// far beyond any real one and keeps a drip-fed size line from growing without bound.
const MAX_SIZE_LINE: usize = 4096;

/// Why a chunked body is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChunkError {
    /// Broken framing.
    Malformed,
    /// The data exceeds `max_body_bytes`.
    TooLarge,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Reading a size line: digits seen, whether in extensions, bytes so far.
    Size { digits: u8, ext: bool, len: usize },
    /// The CR of a size line was seen; LF must follow.
    SizeLf { last: bool },
    /// Inside chunk data.
    Data(u64),
    /// After data: CR expected.
    DataCr,
    /// After data's CR: LF expected.
    DataLf,
    /// In the trailer section: bytes on the current line, whether its CR was seen.
    Trailer { line: usize, cr: bool },
    /// The last CRLF is consumed.
    Done,
}

/// Where a chunked body is, across calls to [`Chunked::skip_framing`] and
/// [`Chunked::took_data`].
#[derive(Debug, Clone)]
pub struct Chunked {
    state: State,
    size: u64,
    /// Data bytes so far (sizes declared, so the limit trips before the data arrives).
    total: u64,
    max_body: Option<u64>,
    /// Trailer bytes so far, bounded by `max_trailer`.
    trailer: usize,
    max_trailer: usize,
}

impl Chunked {
    /// A validator at the start of a body; trailers may take `max_trailer` bytes.
    pub fn new(max_body: Option<u64>, max_trailer: usize) -> Self {
        Self {
            state: State::Size {
                digits: 0,
                ext: false,
                len: 0,
            },
            size: 0,
            total: 0,
            max_body,
            trailer: 0,
            max_trailer,
        }
    }

    /// Whether the body is complete.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Consumes the framing at the start of `input` (size lines, the CRLF after data, the
    /// trailer section), stopping at the first data byte or at the end of the body: returns
    /// how many bytes it took. The data itself is taken by the reader ([`Chunked::data_left`],
    /// [`Chunked::took_data`]).
    pub fn skip_framing(&mut self, input: &[u8]) -> Result<usize, ChunkError> {
        let mut i = 0;
        while i < input.len() && !matches!(self.state, State::Data(_) | State::Done) {
            self.step(input[i])?;
            i += 1;
        }
        Ok(i)
    }

    /// Data bytes of the current chunk still to come (0 outside chunk data).
    pub fn data_left(&self) -> u64 {
        match self.state {
            State::Data(left) => left,
            _ => 0,
        }
    }

    /// `n` (at most [`Chunked::data_left`]) data bytes were taken.
    pub fn took_data(&mut self, n: u64) {
        if let State::Data(left) = self.state {
            let left = left - n.min(left);
            self.state = if left == 0 {
                State::DataCr
            } else {
                State::Data(left)
            };
        }
    }

    fn step(&mut self, b: u8) -> Result<(), ChunkError> {
        use ChunkError::Malformed;
        self.state = match self.state {
            State::Size { digits, ext, len } => {
                if len >= MAX_SIZE_LINE {
                    return Err(Malformed);
                }
                let len = len + 1;
                match b {
                    b'\r' if digits > 0 => State::SizeLf {
                        last: self.size == 0,
                    },
                    _ if ext => {
                        if b == b'\n' || (b < 0x20 && b != b'\t') || b == 0x7f {
                            return Err(Malformed);
                        }
                        State::Size { digits, ext, len }
                    }
                    b';' if digits > 0 => State::Size {
                        digits,
                        ext: true,
                        len,
                    },
                    _ => {
                        let d = (b as char).to_digit(16).ok_or(Malformed)?;
                        if digits >= 16 {
                            return Err(Malformed);
                        }
                        self.size = self.size << 4 | u64::from(d);
                        State::Size {
                            digits: digits + 1,
                            ext,
                            len,
                        }
                    }
                }
            }
            State::SizeLf { last } => {
                if b != b'\n' {
                    return Err(Malformed);
                }
                if last {
                    State::Trailer { line: 0, cr: false }
                } else {
                    self.total = self.total.saturating_add(self.size);
                    if self.max_body.is_some_and(|max| self.total > max) {
                        return Err(ChunkError::TooLarge);
                    }
                    let size = std::mem::take(&mut self.size);
                    State::Data(size)
                }
            }
            // Data is taken in bulk (`took_data`); `skip_framing` never hands a data byte here.
            State::Data(left) => State::Data(left),
            State::DataCr if b == b'\r' => State::DataLf,
            State::DataLf if b == b'\n' => State::Size {
                digits: 0,
                ext: false,
                len: 0,
            },
            State::DataCr | State::DataLf => return Err(Malformed),
            State::Trailer { line, cr } => {
                self.trailer += 1;
                if self.trailer > self.max_trailer {
                    return Err(ChunkError::TooLarge);
                }
                match (b, cr) {
                    (b'\n', true) if line == 0 => State::Done,
                    (b'\n', true) => State::Trailer { line: 0, cr: false },
                    (b'\r', false) => State::Trailer { line, cr: true },
                    (b'\r' | b'\n', _) | (_, true) | (0, _) => return Err(Malformed),
                    _ => State::Trailer {
                        line: line + 1,
                        cr: false,
                    },
                }
            }
            State::Done => State::Done,
        };
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// How many bytes at the start of `input` belong to the body (all of them unless it ends
    /// inside `input`), taken as the HTTP/1 reader takes them: framing by `skip_framing`,
    /// data by `data_left`/`took_data`.
    fn feed(c: &mut Chunked, input: &[u8]) -> Result<usize, ChunkError> {
        let mut i = 0;
        while i < input.len() && !c.is_done() {
            let left = c.data_left();
            if left > 0 {
                let n = usize::try_from(left)
                    .unwrap_or(usize::MAX)
                    .min(input.len() - i);
                c.took_data(n as u64);
                i += n;
            } else {
                i += c.skip_framing(&input[i..])?;
            }
        }
        Ok(i)
    }

    fn feed_all(body: &[u8], max: Option<u64>) -> Result<(usize, bool), ChunkError> {
        let mut c = Chunked::new(max, 1024);
        let mut used = 0;
        // One byte at a time: framing must not depend on how reads split the stream.
        for b in body {
            if c.is_done() {
                break;
            }
            used += feed(&mut c, std::slice::from_ref(b))?;
        }
        Ok((used, c.is_done()))
    }

    #[test]
    fn finds_the_end_of_a_valid_body() {
        let body = b"5\r\nhello\r\n1;ext=1\r\n!\r\n0\r\nx-sum: 1\r\n\r\nGET /next";
        let end = body.len() - b"GET /next".len();
        assert_eq!(feed_all(body, None), Ok((end, true)));
        let mut c = Chunked::new(None, 1024);
        assert_eq!(feed(&mut c, body), Ok(end));
        assert!(c.is_done());
        assert_eq!(
            feed_all(b"A\r\n0123456789\r\n0\r\n\r\n", None),
            Ok((20, true))
        );
        assert_eq!(feed_all(b"5\r\nhel", None), Ok((6, false)));
    }

    #[test]
    fn broken_framing_is_refused() {
        for bad in [
            &b"x\r\n"[..],
            b"\r\n",
            b"5\nhello",
            b" 5\r\n",
            b"5\r\nhelloX\r\n",
            b"5\r\nhello\r\r",
            b"0\r\nbad\nline\r\n\r\n",
            b"11111111111111111\r\n",
            b"0x5\r\n",
        ] {
            assert_eq!(feed_all(bad, None), Err(ChunkError::Malformed), "{bad:?}");
        }
    }

    #[test]
    fn declared_sizes_count_against_the_limit() {
        assert_eq!(
            feed_all(b"64\r\n", Some(99)),
            Err(ChunkError::TooLarge),
            "100 bytes declared"
        );
        assert!(feed_all(b"63\r\n", Some(99)).is_ok());
    }
}
