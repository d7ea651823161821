//! The static table (RFC 7541 Appendix A) and the decoder's dynamic table (§2.3.2, §4).

use std::collections::VecDeque;

use bytes::Bytes;
use http::HeaderName;

use super::{DecodeError, FieldName, Pseudo};

/// An entry's size overhead (§4.1), also the per-field overhead of RFC 9113's list size.
pub(super) const ENTRY_OVERHEAD: usize = 32;

/// Number of static table entries; dynamic indices start right after.
pub(super) const STATIC_LEN: usize = 61;

/// One table entry as the decoder emits it.
pub(super) struct Entry {
    pub(super) name: FieldName,
    /// The name's length in octets (kept because an `Invalid` name has none to measure).
    pub(super) name_len: usize,
    pub(super) value: Bytes,
}

impl Entry {
    /// §4.1: name + value + 32.
    pub(super) fn size(&self) -> usize {
        self.name_len + self.value.len() + ENTRY_OVERHEAD
    }
}

const fn header(name: &'static str, value: &'static str) -> Entry {
    Entry {
        name: FieldName::Header(HeaderName::from_static(name)),
        name_len: name.len(),
        value: Bytes::from_static(value.as_bytes()),
    }
}

const fn pseudo(p: Pseudo, name: &'static str, value: &'static str) -> Entry {
    Entry {
        name: FieldName::Pseudo(p),
        name_len: name.len(),
        value: Bytes::from_static(value.as_bytes()),
    }
}

/// RFC 7541 Appendix A, index 1 first.
pub(super) static STATIC: [Entry; STATIC_LEN] = [
    pseudo(Pseudo::Authority, ":authority", ""),
    pseudo(Pseudo::Method, ":method", "GET"),
    pseudo(Pseudo::Method, ":method", "POST"),
    pseudo(Pseudo::Path, ":path", "/"),
    pseudo(Pseudo::Path, ":path", "/index.html"),
    pseudo(Pseudo::Scheme, ":scheme", "http"),
    pseudo(Pseudo::Scheme, ":scheme", "https"),
    pseudo(Pseudo::Status, ":status", "200"),
    pseudo(Pseudo::Status, ":status", "204"),
    pseudo(Pseudo::Status, ":status", "206"),
    pseudo(Pseudo::Status, ":status", "304"),
    pseudo(Pseudo::Status, ":status", "400"),
    pseudo(Pseudo::Status, ":status", "404"),
    pseudo(Pseudo::Status, ":status", "500"),
    header("accept-charset", ""),
    header("accept-encoding", "gzip, deflate"),
    header("accept-language", ""),
    header("accept-ranges", ""),
    header("accept", ""),
    header("access-control-allow-origin", ""),
    header("age", ""),
    header("allow", ""),
    header("authorization", ""),
    header("cache-control", ""),
    header("content-disposition", ""),
    header("content-encoding", ""),
    header("content-language", ""),
    header("content-length", ""),
    header("content-location", ""),
    header("content-range", ""),
    header("content-type", ""),
    header("cookie", ""),
    header("date", ""),
    header("etag", ""),
    header("expect", ""),
    header("expires", ""),
    header("from", ""),
    header("host", ""),
    header("if-match", ""),
    header("if-modified-since", ""),
    header("if-none-match", ""),
    header("if-range", ""),
    header("if-unmodified-since", ""),
    header("last-modified", ""),
    header("link", ""),
    header("location", ""),
    header("max-forwards", ""),
    header("proxy-authenticate", ""),
    header("proxy-authorization", ""),
    header("range", ""),
    header("referer", ""),
    header("refresh", ""),
    header("retry-after", ""),
    header("server", ""),
    header("set-cookie", ""),
    header("strict-transport-security", ""),
    header("transfer-encoding", ""),
    header("user-agent", ""),
    header("vary", ""),
    header("via", ""),
    header("www-authenticate", ""),
];

/// The static-table index of a regular field name, for the encoder's "literal with name
/// reference": a switch on the length, then a few comparisons (no hashing).
pub(super) fn static_name_index(name: &str) -> Option<usize> {
    let i = match name.len() {
        3 => match name {
            "age" => 21,
            "via" => 60,
            _ => return None,
        },
        4 => match name {
            "date" => 33,
            "etag" => 34,
            "from" => 37,
            "host" => 38,
            "link" => 45,
            "vary" => 59,
            _ => return None,
        },
        5 => match name {
            "allow" => 22,
            "range" => 50,
            _ => return None,
        },
        6 => match name {
            "accept" => 19,
            "cookie" => 32,
            "expect" => 35,
            "server" => 54,
            _ => return None,
        },
        7 => match name {
            "expires" => 36,
            "referer" => 51,
            "refresh" => 52,
            _ => return None,
        },
        8 => match name {
            "if-match" => 39,
            "if-range" => 42,
            "location" => 46,
            _ => return None,
        },
        10 => match name {
            "set-cookie" => 55,
            "user-agent" => 58,
            _ => return None,
        },
        11 => match name {
            "retry-after" => 53,
            _ => return None,
        },
        12 => match name {
            "content-type" => 31,
            "max-forwards" => 47,
            _ => return None,
        },
        13 => match name {
            "accept-ranges" => 18,
            "authorization" => 23,
            "cache-control" => 24,
            "content-range" => 30,
            "if-none-match" => 41,
            "last-modified" => 44,
            _ => return None,
        },
        14 => match name {
            "accept-charset" => 15,
            "content-length" => 28,
            _ => return None,
        },
        15 => match name {
            "accept-encoding" => 16,
            "accept-language" => 17,
            _ => return None,
        },
        16 => match name {
            "content-encoding" => 26,
            "content-language" => 27,
            "content-location" => 29,
            "www-authenticate" => 61,
            _ => return None,
        },
        17 => match name {
            "if-modified-since" => 40,
            "transfer-encoding" => 57,
            _ => return None,
        },
        18 => match name {
            "proxy-authenticate" => 48,
            _ => return None,
        },
        19 => match name {
            "content-disposition" => 25,
            "if-unmodified-since" => 43,
            "proxy-authorization" => 49,
            _ => return None,
        },
        25 => match name {
            "strict-transport-security" => 56,
            _ => return None,
        },
        27 => match name {
            "access-control-allow-origin" => 20,
            _ => return None,
        },
        _ => return None,
    };
    Some(i)
}

/// The decoder's dynamic table: newest entry first (index 62).
pub(super) struct DynamicTable {
    entries: VecDeque<Entry>,
    /// Sum of the entries' sizes (§4.1).
    size: usize,
    /// The current maximum (the last size update, initially the SETTINGS value).
    max_size: usize,
}

impl DynamicTable {
    pub(super) fn new(max_size: usize) -> Self {
        DynamicTable {
            entries: VecDeque::new(),
            size: 0,
            max_size,
        }
    }

    /// The entry at HPACK index `index` (1-based, static then dynamic).
    pub(super) fn get(&self, index: usize) -> Result<&Entry, DecodeError> {
        if index == 0 {
            return Err(DecodeError::BadIndex(0));
        }
        if index <= STATIC_LEN {
            return STATIC.get(index - 1).ok_or(DecodeError::BadIndex(index));
        }
        self.entries
            .get(index - STATIC_LEN - 1)
            .ok_or(DecodeError::BadIndex(index))
    }

    /// §4.4: evicts until the entry fits, then inserts it; an entry larger than the table empties
    /// it and is not inserted.
    pub(super) fn insert(&mut self, entry: Entry) {
        let size = entry.size();
        if size > self.max_size {
            self.entries.clear();
            self.size = 0;
            return;
        }
        self.evict_to(self.max_size - size);
        self.size += size;
        self.entries.push_front(entry);
    }

    /// §4.3: a dynamic table size update (already checked against the SETTINGS value).
    pub(super) fn set_max_size(&mut self, max_size: usize) {
        self.max_size = max_size;
        self.evict_to(max_size);
    }

    fn evict_to(&mut self, target: usize) {
        while self.size > target {
            match self.entries.pop_back() {
                Some(e) => self.size -= e.size(),
                None => {
                    self.size = 0;
                    break;
                }
            }
        }
    }

    #[cfg(test)]
    pub(super) fn size(&self) -> usize {
        self.size
    }

    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.entries.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn static_name_index_matches_the_static_table() {
        for (i, e) in STATIC.iter().enumerate() {
            if let FieldName::Header(name) = &e.name {
                assert_eq!(static_name_index(name.as_str()), Some(i + 1), "{name}");
                assert_eq!(e.name_len, name.as_str().len());
            }
        }
        assert_eq!(static_name_index("x-request-id"), None);
        assert_eq!(static_name_index(""), None);
    }
}
