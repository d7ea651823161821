//! RFC 7541 Appendix C examples, malformed blocks, and round trips through our encoder.

use bytes::{Bytes, BytesMut};
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use proptest::prelude::*;

use super::encoder::encode_int;
use super::huffman;
use super::*;

fn hex(s: &str) -> Bytes {
    let s: String = s.chars().filter(|c| !c.is_whitespace()).collect();
    let bytes: Vec<u8> = (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect();
    Bytes::from(bytes)
}

fn name_str(name: &FieldName) -> String {
    match name {
        FieldName::Pseudo(p) => p.as_str().to_owned(),
        FieldName::Header(h) => h.as_str().to_owned(),
        FieldName::Invalid => "<invalid>".to_owned(),
    }
}

fn decode(d: &mut Decoder, block: &Bytes) -> Result<Vec<(String, String)>, DecodeError> {
    let mut out = Vec::new();
    d.decode(block, usize::MAX, &mut |n, v| {
        out.push((name_str(&n), String::from_utf8_lossy(&v).into_owned()))
    })?;
    Ok(out)
}

fn fields(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
        .collect()
}

fn check(d: &mut Decoder, block: &str, expect: &[(&str, &str)], table_size: usize, entries: usize) {
    assert_eq!(decode(d, &hex(block)).unwrap(), fields(expect));
    assert_eq!(d.table().size(), table_size);
    assert_eq!(d.table().len(), entries);
}

/// C.1: integer representation.
#[test]
fn c1_integers() {
    for (value, prefix, bytes) in [
        (10usize, 5u32, &[0x0a][..]),
        (1337, 5, &[0x1f, 0x9a, 0x0a][..]),
        (42, 8, &[0x2a][..]),
        (31, 5, &[0x1f, 0x00][..]),
        (30, 5, &[0x1e][..]),
    ] {
        let mut dst = BytesMut::new();
        encode_int(value, prefix, 0, &mut dst);
        assert_eq!(&dst[..], bytes, "encode {value}");
    }
    // Decoding through the table size update (5-bit prefix): 10 and 1337.
    let mut d = Decoder::new(4096);
    d.decode(&Bytes::from_static(&[0x2a]), usize::MAX, &mut |_, _| {})
        .unwrap();
    d.decode(
        &Bytes::from_static(&[0x3f, 0x9a, 0x0a]),
        usize::MAX,
        &mut |_, _| {},
    )
    .unwrap();
}

#[test]
fn c2_literals_and_indexed() {
    let mut d = Decoder::new(4096);
    check(
        &mut d,
        "400a 6375 7374 6f6d 2d6b 6579 0d63 7573 746f 6d2d 6865 6164 6572",
        &[("custom-key", "custom-header")],
        55,
        1,
    );
    let mut d = Decoder::new(4096);
    check(
        &mut d,
        "040c 2f73 616d 706c 652f 7061 7468",
        &[(":path", "/sample/path")],
        0,
        0,
    );
    let mut d = Decoder::new(4096);
    check(
        &mut d,
        "1008 7061 7373 776f 7264 0673 6563 7265 74",
        &[("password", "secret")],
        0,
        0,
    );
    let mut d = Decoder::new(4096);
    check(&mut d, "82", &[(":method", "GET")], 0, 0);
}

const REQ1: &[(&str, &str)] = &[
    (":method", "GET"),
    (":scheme", "http"),
    (":path", "/"),
    (":authority", "www.example.com"),
];
const REQ2: &[(&str, &str)] = &[
    (":method", "GET"),
    (":scheme", "http"),
    (":path", "/"),
    (":authority", "www.example.com"),
    ("cache-control", "no-cache"),
];
const REQ3: &[(&str, &str)] = &[
    (":method", "GET"),
    (":scheme", "https"),
    (":path", "/index.html"),
    (":authority", "www.example.com"),
    ("custom-key", "custom-value"),
];

#[test]
fn c3_requests_without_huffman() {
    let mut d = Decoder::new(4096);
    check(
        &mut d,
        "8286 8441 0f77 7777 2e65 7861 6d70 6c65 2e63 6f6d",
        REQ1,
        57,
        1,
    );
    check(&mut d, "8286 84be 5808 6e6f 2d63 6163 6865", REQ2, 110, 2);
    check(
        &mut d,
        "8287 85bf 400a 6375 7374 6f6d 2d6b 6579 0c63 7573 746f 6d2d 7661 6c75 65",
        REQ3,
        164,
        3,
    );
}

#[test]
fn c4_requests_with_huffman() {
    let mut d = Decoder::new(4096);
    check(
        &mut d,
        "8286 8441 8cf1 e3c2 e5f2 3a6b a0ab 90f4 ff",
        REQ1,
        57,
        1,
    );
    check(&mut d, "8286 84be 5886 a8eb 1064 9cbf", REQ2, 110, 2);
    check(
        &mut d,
        "8287 85bf 4088 25a8 49e9 5ba9 7d7f 8925 a849 e95b b8e8 b4bf",
        REQ3,
        164,
        3,
    );
}

const RESP1: &[(&str, &str)] = &[
    (":status", "302"),
    ("cache-control", "private"),
    ("date", "Mon, 21 Oct 2013 20:13:21 GMT"),
    ("location", "https://www.example.com"),
];
const RESP2: &[(&str, &str)] = &[
    (":status", "307"),
    ("cache-control", "private"),
    ("date", "Mon, 21 Oct 2013 20:13:21 GMT"),
    ("location", "https://www.example.com"),
];
const RESP3: &[(&str, &str)] = &[
    (":status", "200"),
    ("cache-control", "private"),
    ("date", "Mon, 21 Oct 2013 20:13:22 GMT"),
    ("location", "https://www.example.com"),
    ("content-encoding", "gzip"),
    (
        "set-cookie",
        "foo=ASDJKHQKBZXOQWEOPIUAXQWEOIU; max-age=3600; version=1",
    ),
];

/// C.5/C.6 use a 256-octet table, so entries are evicted along the way.
#[test]
fn c5_responses_without_huffman() {
    let mut d = Decoder::new(256);
    check(
        &mut d,
        "4803 3330 3258 0770 7269 7661 7465 611d 4d6f 6e2c 2032 3120 4f63 7420 3230 3133 2032
         303a 3133 3a32 3120 474d 546e 1768 7474 7073 3a2f 2f77 7777 2e65 7861 6d70 6c65 2e63
         6f6d",
        RESP1,
        222,
        4,
    );
    check(&mut d, "4803 3330 37c1 c0bf", RESP2, 222, 4);
    check(
        &mut d,
        "88c1 611d 4d6f 6e2c 2032 3120 4f63 7420 3230 3133 2032 303a 3133 3a32 3220 474d 54c0
         5a04 677a 6970 7738 666f 6f3d 4153 444a 4b48 514b 425a 584f 5157 454f 5049 5541 5851
         5745 4f49 553b 206d 6178 2d61 6765 3d33 3630 303b 2076 6572 7369 6f6e 3d31",
        RESP3,
        215,
        3,
    );
}

#[test]
fn c6_responses_with_huffman() {
    let mut d = Decoder::new(256);
    check(
        &mut d,
        "4882 6402 5885 aec3 771a 4b61 96d0 7abe 9410 54d4 44a8 2005 9504 0b81 66e0 82a6 2d1b
         ff6e 919d 29ad 1718 63c7 8f0b 97c8 e9ae 82ae 43d3",
        RESP1,
        222,
        4,
    );
    check(&mut d, "4883 640e ffc1 c0bf", RESP2, 222, 4);
    check(
        &mut d,
        "88c1 6196 d07a be94 1054 d444 a820 0595 040b 8166 e084 a62d 1bff c05a 839b d9ab 77ad
         94e7 821d d7f2 e6c7 b335 dfdf cd5b 3960 d5af 2708 7f36 72c1 ab27 0fb5 291f 9587 3160
         65c0 03ed 4ee5 b106 3d50 07",
        RESP3,
        215,
        3,
    );
}

#[test]
fn values_are_zero_copy_slices_of_the_block() {
    let block = hex("040c 2f73 616d 706c 652f 7061 7468");
    let mut d = Decoder::new(4096);
    let mut got = None;
    d.decode(&block, usize::MAX, &mut |_, v| got = Some(v))
        .unwrap();
    let v = got.unwrap();
    assert_eq!(v.as_ptr(), block[2..].as_ptr());
}

#[test]
fn invalid_names_are_reported_and_the_table_stays_in_sync() {
    let mut d = Decoder::new(4096);
    // Literal with indexing, new name "X-Up" (uppercase), value "a"; then ":foo" without
    // indexing; then the indexed entry 62.
    let mut block = vec![0x40, 4];
    block.extend_from_slice(b"X-Up");
    block.extend_from_slice(&[1, b'a', 0x00, 4]);
    block.extend_from_slice(b":foo");
    block.extend_from_slice(&[1, b'b', 0xbe]);
    assert_eq!(
        decode(&mut d, &Bytes::from(block)).unwrap(),
        fields(&[("<invalid>", "a"), ("<invalid>", "b"), ("<invalid>", "a")])
    );
    assert_eq!(d.table().size(), 4 + 1 + 32);
}

#[test]
fn malformed_blocks_are_errors() {
    let cases: &[(&str, DecodeError)] = &[
        // Indexed field with index 0.
        ("80", DecodeError::BadIndex(0)),
        // Index past the static table with an empty dynamic table.
        ("be", DecodeError::BadIndex(62)),
        // Literal with a name index past the table.
        ("7f00 0161", DecodeError::BadIndex(63)),
        // Truncated integer (continuation bit set, then nothing).
        ("ff80", DecodeError::Truncated),
        // String length past the end of the block.
        ("0005 6162", DecodeError::Truncated),
        ("0401", DecodeError::Truncated),
        // Literal with no value at all.
        ("04", DecodeError::Truncated),
        // Huffman value with 8 bits of padding.
        ("0482 1fff", DecodeError::HuffmanPadding),
        // Huffman value with padding that is not ones ('a' + 000).
        ("0481 18", DecodeError::HuffmanPadding),
        // Huffman value holding EOS.
        ("0484 ffff ffff", DecodeError::HuffmanEos),
        // Size update after a field.
        ("82 20", DecodeError::TableSizeUpdateNotAtStart),
        // Size update above the 4096 we announce (4097 = 31 + 0x62 + 0x1f << 7).
        (
            "3fe2 1f",
            DecodeError::TableSizeTooLarge {
                size: 4097,
                max: 4096,
            },
        ),
        // Integer overflow: too many continuation octets, and a value above u32::MAX.
        ("ff80 8080 8080 8001", DecodeError::IntegerOverflow),
        ("ffff ffff ff7f", DecodeError::IntegerOverflow),
    ];
    for (block, err) in cases {
        let mut d = Decoder::new(4096);
        assert_eq!(decode(&mut d, &hex(block)), Err(*err), "{block}");
    }
    // 4096 itself is fine, and so are two updates at the start.
    let mut d = Decoder::new(4096);
    assert_eq!(
        decode(&mut d, &hex("3fe1 1f 20 82")).unwrap(),
        fields(&[(":method", "GET")])
    );
}

#[test]
fn size_update_evicts_and_zero_empties_the_table() {
    let mut d = Decoder::new(4096);
    check(
        &mut d,
        "8286 8441 0f77 7777 2e65 7861 6d70 6c65 2e63 6f6d",
        REQ1,
        57,
        1,
    );
    check(&mut d, "20 82", &[(":method", "GET")], 0, 0);
    assert_eq!(decode(&mut d, &hex("be")), Err(DecodeError::BadIndex(62)));
    // The table now has room for nothing: an indexed literal is emitted but not kept.
    check(&mut d, "4001 6101 62", &[("a", "b")], 0, 0);
    // And a size update back up (still within 4096) lets entries in again.
    check(&mut d, "3f e1 1f 4001 6101 62", &[("a", "b")], 34, 1);
}

#[test]
fn an_entry_larger_than_the_table_empties_it() {
    let mut d = Decoder::new(64);
    check(&mut d, "4001 6101 62", &[("a", "b")], 34, 1);
    // 1 + 40 + 32 > 64.
    let mut block = vec![0x40, 1, b'c', 40];
    block.extend_from_slice(&[b'x'; 40]);
    decode(&mut d, &Bytes::from(block)).unwrap();
    assert_eq!(d.table().size(), 0);
    assert_eq!(d.table().len(), 0);
}

#[test]
fn list_too_large_stops_emitting_but_keeps_the_table_in_sync() {
    let mut d = Decoder::new(4096);
    let block = hex("8286 8441 0f77 7777 2e65 7861 6d70 6c65 2e63 6f6d");
    let mut n = 0;
    // :method GET (7 + 3 + 32 = 42) fits, :scheme http (7 + 4 + 32 = 43) passes 80.
    let r = d.decode(&block, 80, &mut |_, _| n += 1);
    assert_eq!(r, Err(DecodeError::ListTooLarge));
    assert!(!DecodeError::ListTooLarge.is_compression_error());
    assert_eq!(n, 1);
    // The :authority literal was still inserted: the next C.3 block decodes.
    check(&mut d, "8286 84be 5808 6e6f 2d63 6163 6865", REQ2, 110, 2);
}

#[test]
fn huffman_names_and_values_mixed() {
    // Literal without indexing, Huffman name "x-a", raw value "1", Huffman value "hello".
    let mut block = BytesMut::new();
    for (name, value, hn, hv) in [("x-a", "1", true, false), ("x-b", "hello", false, true)] {
        block.extend_from_slice(&[0x00]);
        for (s, h) in [(name, hn), (value, hv)] {
            let mut enc = Vec::new();
            if h {
                huffman::encode(s.as_bytes(), &mut enc);
            } else {
                enc.extend_from_slice(s.as_bytes());
            }
            let mut len = BytesMut::new();
            encode_int(enc.len(), 7, if h { 0x80 } else { 0 }, &mut len);
            block.extend_from_slice(&len);
            block.extend_from_slice(&enc);
        }
    }
    let mut d = Decoder::new(4096);
    assert_eq!(
        decode(&mut d, &block.freeze()).unwrap(),
        fields(&[("x-a", "1"), ("x-b", "hello")])
    );
}

fn roundtrip(enc: &mut Encoder, d: &mut Decoder, status: StatusCode, headers: &HeaderMap) {
    let mut dst = BytesMut::new();
    enc.encode_response(status, headers, &mut dst);
    let mut got = Vec::new();
    d.decode(&dst.freeze(), usize::MAX, &mut |n, v| got.push((n, v)))
        .unwrap();
    let mut expect = vec![(
        FieldName::Pseudo(Pseudo::Status),
        Bytes::copy_from_slice(status.as_str().as_bytes()),
    )];
    for (n, v) in headers {
        expect.push((
            FieldName::Header(n.clone()),
            Bytes::copy_from_slice(v.as_bytes()),
        ));
    }
    assert_eq!(got, expect);
}

#[test]
fn encoder_output_is_compact_and_decodes() {
    let mut enc = Encoder::new();
    let mut headers = HeaderMap::new();
    headers.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain"),
    );
    headers.insert("x-request-id", HeaderValue::from_static("abc"));
    let mut dst = BytesMut::new();
    enc.encode_response(StatusCode::OK, &headers, &mut dst);
    let mut expect = vec![0x88, 0x0f, 31 - 15, 10];
    expect.extend_from_slice(b"text/plain");
    expect.extend_from_slice(&[0x00, 12]);
    expect.extend_from_slice(b"x-request-id");
    expect.extend_from_slice(&[3]);
    expect.extend_from_slice(b"abc");
    assert_eq!(&dst[..], &expect[..]);

    let mut d = Decoder::new(4096);
    roundtrip(
        &mut enc,
        &mut d,
        StatusCode::from_u16(302).unwrap(),
        &headers,
    );
    // Sensitive values go out never-indexed.
    let mut headers = HeaderMap::new();
    let mut v = HeaderValue::from_static("secret");
    v.set_sensitive(true);
    headers.insert(http::header::SET_COOKIE, v);
    let mut dst = BytesMut::new();
    enc.encode_trailers(&headers, &mut dst);
    assert_eq!(&dst[..2], &[0x1f, 55 - 15]);
}

#[test]
fn encoder_sends_the_smallest_table_size_once() {
    let mut enc = Encoder::new();
    let headers = HeaderMap::new();
    // A larger limit needs no update.
    enc.set_max_table_size(65536);
    let mut dst = BytesMut::new();
    enc.encode_response(StatusCode::OK, &headers, &mut dst);
    assert_eq!(&dst[..], &[0x88]);
    // 100 then 1000 before the next block: one update to 100.
    enc.set_max_table_size(100);
    enc.set_max_table_size(1000);
    let mut dst = BytesMut::new();
    enc.encode_response(StatusCode::OK, &headers, &mut dst);
    assert_eq!(&dst[..], &[0x3f, 100 - 31, 0x88]);
    let mut d = Decoder::new(4096);
    d.decode(&dst.freeze(), usize::MAX, &mut |_, _| {}).unwrap();
    // Only once.
    let mut dst = BytesMut::new();
    enc.encode_trailers(&headers, &mut dst);
    assert!(dst.is_empty());
    enc.set_max_table_size(0);
    enc.encode_trailers(&headers, &mut dst);
    assert_eq!(&dst[..], &[0x20]);
}

fn header_name() -> impl Strategy<Value = HeaderName> {
    prop_oneof![
        prop::sample::select(vec![
            "content-type",
            "content-length",
            "date",
            "server",
            "set-cookie",
            "via",
            "x-request-id",
            "access-control-allow-origin",
            "strict-transport-security",
        ])
        .prop_map(HeaderName::from_static),
        "[a-z0-9!#$%&'*+.^_`|~-]{1,40}"
            .prop_map(|s| HeaderName::from_lowercase(s.as_bytes()).unwrap()),
    ]
}

fn header_value() -> impl Strategy<Value = HeaderValue> {
    (
        prop::collection::vec(
            prop_oneof![Just(b'\t'), 0x20u8..0x7f, 0x80u8..=0xff],
            0..300,
        ),
        any::<bool>(),
    )
        .prop_map(|(bytes, sensitive)| {
            let mut v = HeaderValue::from_bytes(&bytes).unwrap();
            v.set_sensitive(sensitive);
            v
        })
}

proptest! {
    #[test]
    fn any_response_head_round_trips(
        status in 100u16..1000,
        fields in prop::collection::vec((header_name(), header_value()), 0..20),
        table_size in prop::option::of(0usize..5000),
    ) {
        let mut headers = HeaderMap::new();
        for (n, v) in fields {
            headers.append(n, v);
        }
        let mut enc = Encoder::new();
        if let Some(size) = table_size {
            enc.set_max_table_size(size);
        }
        let mut d = Decoder::new(4096);
        let status = StatusCode::from_u16(status).unwrap();
        roundtrip(&mut enc, &mut d, status, &headers);
        roundtrip(&mut enc, &mut d, status, &headers);
    }

    #[test]
    fn huffman_round_trips(s in prop::collection::vec(any::<u8>(), 0..200)) {
        let mut enc = Vec::new();
        huffman::encode(&s, &mut enc);
        let mut out = vec![0; huffman::max_decoded_len(enc.len())];
        let n = huffman::decode(&enc, &mut out).unwrap();
        prop_assert_eq!(&out[..n], &s[..]);
    }

    /// Hostile input: never a panic, whatever the bytes (and the table survives errors).
    #[test]
    fn arbitrary_blocks_never_panic(blocks in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..200), 1..4)) {
        let mut d = Decoder::new(256);
        for b in blocks {
            let _ = d.decode(&Bytes::from(b), 1000, &mut |_, _| {});
        }
    }
}

/// §4.4: a literal with incremental indexing whose name is a dynamic entry that the insertion
/// itself evicts still gets that name.
#[test]
fn inserting_can_evict_the_entry_whose_name_it_uses() {
    let mut d = Decoder::new(70);
    // custom-key: a (10 + 1 + 32 = 43).
    check(
        &mut d,
        "400a 6375 7374 6f6d 2d6b 6579 0161",
        &[("custom-key", "a")],
        43,
        1,
    );
    // Name index 62 (that entry), value "b": 43 + 43 > 70 evicts it first.
    check(&mut d, "7e01 62", &[("custom-key", "b")], 43, 1);
    check(&mut d, "be", &[("custom-key", "b")], 43, 1);
}

#[test]
fn empty_strings_raw_and_huffman() {
    let mut d = Decoder::new(4096);
    // Literal without indexing, new name "a", empty raw value; then an empty Huffman value.
    check(&mut d, "0001 6100 0001 6180", &[("a", ""), ("a", "")], 0, 0);
    // An empty name is invalid.
    check(&mut d, "0000 0178", &[("<invalid>", "x")], 0, 0);
}

/// One field for the model encoder below: which name, which value, and how to send it.
#[derive(Debug, Clone)]
struct ModelField {
    name: usize,
    value: Vec<u8>,
    /// 0 indexed if possible, 1 incremental indexing, 2 without indexing, 3 never indexed.
    repr: u8,
    huffman: bool,
    name_indexed: bool,
}

const MODEL_NAMES: &[&str] = &[
    ":method",
    ":path",
    ":authority",
    "accept",
    "user-agent",
    "cookie",
    "x-custom",
    "x-another-longer-name",
];

/// A plain encoder with its own copy of the dynamic table (newest first), written from RFC 7541
/// independently of `DynamicTable`, choosing every representation the RFC has.
struct Model {
    table: Vec<(String, Vec<u8>)>,
    max: usize,
}

impl Model {
    fn size(&self) -> usize {
        self.table.iter().map(|(n, v)| n.len() + v.len() + 32).sum()
    }

    fn evict(&mut self, max: usize) {
        while self.size() > max {
            self.table.pop();
        }
    }

    fn entry(&self, index: usize) -> (String, Vec<u8>) {
        if index <= 61 {
            let e = &super::table::STATIC[index - 1];
            (name_str(&e.name), e.value.to_vec())
        } else {
            self.table[index - 62].clone()
        }
    }

    fn find(&self, name: &str, value: Option<&[u8]>) -> Option<usize> {
        (1..=61 + self.table.len()).find(|&i| {
            let (n, v) = self.entry(i);
            n == name && value.is_none_or(|value| v == value)
        })
    }

    fn string(s: &[u8], huffman: bool, out: &mut BytesMut) {
        if huffman {
            let mut enc = Vec::new();
            huffman::encode(s, &mut enc);
            encode_int(enc.len(), 7, 0x80, out);
            out.extend_from_slice(&enc);
        } else {
            encode_int(s.len(), 7, 0, out);
            out.extend_from_slice(s);
        }
    }

    fn encode(&mut self, update: Option<usize>, fields: &[ModelField], out: &mut BytesMut) {
        if let Some(size) = update {
            self.max = size;
            self.evict(size);
            encode_int(size, 5, 0x20, out);
        }
        for f in fields {
            let name = MODEL_NAMES[f.name];
            if f.repr == 0 {
                if let Some(i) = self.find(name, Some(&f.value)) {
                    encode_int(i, 7, 0x80, out);
                    continue;
                }
            }
            let (prefix, repr) = match f.repr {
                0 | 1 => (6, 0x40),
                2 => (4, 0x00),
                _ => (4, 0x10),
            };
            match self.find(name, None).filter(|_| f.name_indexed) {
                Some(i) => encode_int(i, prefix, repr, out),
                None => {
                    encode_int(0, prefix, repr, out);
                    Self::string(name.as_bytes(), f.huffman, out);
                }
            }
            Self::string(&f.value, f.huffman, out);
            if repr == 0x40 {
                let size = name.len() + f.value.len() + 32;
                if size > self.max {
                    self.table.clear();
                } else {
                    self.evict(self.max - size);
                    self.table.insert(0, (name.to_owned(), f.value.clone()));
                }
            }
        }
    }
}

fn model_field() -> impl Strategy<Value = ModelField> {
    (
        0..MODEL_NAMES.len(),
        prop_oneof![
            prop::sample::select(vec![b"GET".to_vec(), b"/".to_vec(), b"a".to_vec()]),
            prop::collection::vec(0x20u8..0x7f, 0..40),
            prop::collection::vec(any::<u8>(), 0..100),
        ],
        0u8..4,
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(|(name, value, repr, huffman, name_indexed)| ModelField {
            name,
            value,
            repr,
            huffman,
            name_indexed,
        })
}

proptest! {
    /// Blocks using every representation (indexed, the three literals, Huffman or not, name by
    /// index or literal, size updates) decode to the fields the model sent, and the table ends
    /// each block the same size as the model's.
    #[test]
    fn dynamic_table_matches_an_independent_model(
        max in prop::sample::select(vec![0usize, 64, 100, 256, 4096]),
        blocks in prop::collection::vec(
            (prop::option::of(0usize..300), prop::collection::vec(model_field(), 0..12)),
            1..6,
        ),
    ) {
        let mut model = Model { table: Vec::new(), max };
        let mut d = Decoder::new(max);
        for (update, fields) in blocks {
            let update = update.map(|u| u.min(max));
            let mut out = BytesMut::new();
            model.encode(update, &fields, &mut out);
            let mut got = Vec::new();
            d.decode(&out.freeze(), usize::MAX, &mut |n, v| got.push((name_str(&n), v.to_vec())))
                .unwrap();
            let expect: Vec<(String, Vec<u8>)> = fields
                .iter()
                .map(|f| (MODEL_NAMES[f.name].to_owned(), f.value.clone()))
                .collect();
            prop_assert_eq!(got, expect);
            prop_assert_eq!(d.table().size(), model.size());
            prop_assert_eq!(d.table().len(), model.table.len());
        }
    }
}
