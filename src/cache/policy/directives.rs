//! `Cache-Control` and `CDN-Cache-Control` directives (RFC 9111 §5.2, RFC 9213), parsed into
//! the few fields a shared cache acts on.
//!
//! One parser serves requests and responses: a directive that means nothing on one side is
//! simply never read there. Unknown directives are ignored (§5.2.3).

use http::HeaderValue;

/// RFC 9111 §1.2.2: a delta-seconds too large to represent is taken as 2^31.
const DELTA_MAX: u64 = 1 << 31;

/// The directives of one `Cache-Control` (or `CDN-Cache-Control`) field.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Directives {
    /// `max-age` (both sides). An invalid value reads as 0 (§4.2.1: "considered stale").
    pub max_age: Option<u64>,
    /// `s-maxage` (response): the shared cache's lifetime, overriding `max-age`.
    pub s_maxage: Option<u64>,
    /// `public` (response).
    pub public: bool,
    /// `private` (response), qualified or not: a shared cache never stores it.
    pub private: bool,
    /// `no-store` (both sides).
    pub no_store: bool,
    /// `no-cache` (both sides), qualified or not (§5.2.2.4 lets the qualified form count whole).
    pub no_cache: bool,
    /// `must-revalidate` (response).
    pub must_revalidate: bool,
    /// `proxy-revalidate` (response): `must-revalidate` for shared caches.
    pub proxy_revalidate: bool,
    /// `stale-while-revalidate=N` (response, RFC 5861 §3).
    pub stale_while_revalidate: Option<u64>,
    /// `stale-if-error=N` (response, RFC 5861 §4).
    pub stale_if_error: Option<u64>,
    /// `max-stale[=N]` (request); without a value, any staleness (`u64::MAX`).
    pub max_stale: Option<u64>,
    /// `min-fresh=N` (request).
    pub min_fresh: Option<u64>,
    /// `only-if-cached` (request).
    pub only_if_cached: bool,
}

impl Directives {
    /// Parses every line of a field; `None` when the field is absent (so a caller can tell
    /// "no `CDN-Cache-Control`" from an empty one).
    pub fn parse<'a>(lines: impl IntoIterator<Item = &'a HeaderValue>) -> Option<Self> {
        let mut present = false;
        let mut out = Self::default();
        for line in lines {
            present = true;
            parse_line(line.as_bytes(), &mut out);
        }
        present.then_some(out)
    }

    /// Parses a targeted field (`CDN-Cache-Control`, RFC 9213 §2.1), which unlike
    /// `Cache-Control` is a Structured Field Dictionary (RFC 8941 §3.2). `None` when the field
    /// is absent, empty, not a valid Dictionary, or gives a known directive a value of the wrong
    /// type (`max-age="10"`): RFC 9213 §2.1 has the cache then ignore the whole field and fall
    /// back to `Cache-Control`, rather than guess at what the origin meant for CDNs.
    ///
    /// One leniency: upper-case letters in keys are accepted and read lower-case (RFC 8941 keys
    /// are lower-case only). `Cache-Control` directives are case-insensitive and origins copy
    /// them across as written; refusing `MaX-aGe` would turn a CDN-only lifetime into the
    /// browser one, which is the surprise the field exists to avoid.
    pub fn parse_targeted<'a>(lines: impl IntoIterator<Item = &'a HeaderValue>) -> Option<Self> {
        // RFC 8941 §4.2: the lines are combined with ", " and parsed as one value.
        let mut joined = Vec::new();
        for line in lines {
            if !joined.is_empty() {
                joined.extend_from_slice(b", ");
            }
            joined.extend_from_slice(line.as_bytes());
        }
        let members = structured::dictionary(&joined)?;
        if members.is_empty() {
            return None;
        }
        let mut out = Self::default();
        for (key, value) in &members {
            let value = match (key.as_slice(), value) {
                (
                    b"max-age" | b"s-maxage" | b"stale-while-revalidate" | b"stale-if-error",
                    structured::Value::Integer(n),
                ) if *n >= 0 => Some(n.to_string().into_bytes()),
                (b"max-age" | b"s-maxage" | b"stale-while-revalidate" | b"stale-if-error", _) => {
                    return None
                }
                (
                    b"no-store" | b"public" | b"must-revalidate" | b"proxy-revalidate",
                    structured::Value::True,
                ) => None,
                (b"no-store" | b"public" | b"must-revalidate" | b"proxy-revalidate", _) => {
                    return None
                }
                (b"private" | b"no-cache", structured::Value::True) => None,
                (b"private" | b"no-cache", structured::Value::String(s)) => Some(s.clone()),
                (b"private" | b"no-cache", _) => return None,
                // Extensions (and request directives, meaningless here) are ignored (§5.2.3).
                _ => continue,
            };
            apply(key, value.as_deref(), &mut out);
        }
        Some(out)
    }

    /// Whether a stored response may never be served stale (§5.2.2.2, §5.2.2.8; `s-maxage`
    /// implies `proxy-revalidate` for a shared cache, §5.2.2.10).
    pub fn forbids_stale(&self) -> bool {
        self.must_revalidate || self.proxy_revalidate || self.s_maxage.is_some() || self.no_cache
    }
}

fn parse_line(line: &[u8], out: &mut Directives) {
    let mut rest = line;
    // Bounded: every pass consumes at least one byte (a name, a value or the separator).
    while !rest.is_empty() {
        rest = trim_start(rest);
        let name_len = rest
            .iter()
            .position(|&b| b == b'=' || b == b',')
            .unwrap_or(rest.len());
        let name = trim_end(&rest[..name_len]);
        rest = &rest[name_len..];
        let mut value: Option<Vec<u8>> = None;
        if rest.first() == Some(&b'=') {
            let (parsed, after) = parse_value(trim_start(&rest[1..]));
            value = Some(parsed);
            rest = after;
        }
        // Skip to the next separator (garbage after a value is ignored).
        let next = rest
            .iter()
            .position(|&b| b == b',')
            .map_or(rest.len(), |i| i + 1);
        rest = &rest[next..];
        apply(name, value.as_deref(), out);
    }
}

/// A token or a quoted string (with `\` escapes); returns the value and what follows it.
fn parse_value(input: &[u8]) -> (Vec<u8>, &[u8]) {
    if input.first() == Some(&b'"') {
        let mut value = Vec::new();
        let mut i = 1;
        while i < input.len() {
            match input[i] {
                b'\\' if i + 1 < input.len() => {
                    value.push(input[i + 1]);
                    i += 2;
                }
                b'"' => return (value, &input[i + 1..]),
                b => {
                    value.push(b);
                    i += 1;
                }
            }
        }
        (value, &[])
    } else {
        let end = input.iter().position(|&b| b == b',').unwrap_or(input.len());
        (trim_end(&input[..end]).to_vec(), &input[end..])
    }
}

fn apply(name: &[u8], value: Option<&[u8]>, out: &mut Directives) {
    let seconds = || value.map_or(Some(0), delta_seconds);
    // The first occurrence of a repeated directive wins (§4.2.1 allows it).
    let first = |slot: &mut Option<u64>, v: Option<u64>| {
        if slot.is_none() {
            *slot = Some(v.unwrap_or(0));
        }
    };
    match name.to_ascii_lowercase().as_slice() {
        b"max-age" => first(&mut out.max_age, seconds()),
        b"s-maxage" => first(&mut out.s_maxage, seconds()),
        b"stale-while-revalidate" => first(&mut out.stale_while_revalidate, seconds()),
        b"stale-if-error" => first(&mut out.stale_if_error, seconds()),
        b"min-fresh" => first(&mut out.min_fresh, seconds()),
        // Without a value the client takes a response of any staleness (§5.2.1.2); a
        // malformed one is read as no extra staleness at all.
        b"max-stale" if out.max_stale.is_none() => {
            out.max_stale = Some(value.map_or(u64::MAX, |v| delta_seconds(v).unwrap_or(0)));
        }
        b"public" => out.public = true,
        b"private" => out.private = true,
        b"no-store" => out.no_store = true,
        b"no-cache" => out.no_cache = true,
        b"must-revalidate" => out.must_revalidate = true,
        b"proxy-revalidate" => out.proxy_revalidate = true,
        b"only-if-cached" => out.only_if_cached = true,
        _ => {}
    }
}

/// RFC 9111 §1.2.2 delta-seconds: digits only; `None` when invalid. Values past 2^31 read
/// as 2^31.
pub(super) fn delta_seconds(value: &[u8]) -> Option<u64> {
    if value.is_empty() || !value.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let mut n: u64 = 0;
    for &d in value {
        n = n.saturating_mul(10).saturating_add(u64::from(d - b'0'));
    }
    Some(n.min(DELTA_MAX))
}

fn trim_start(s: &[u8]) -> &[u8] {
    let start = s
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(s.len());
    &s[start..]
}

fn trim_end(s: &[u8]) -> &[u8] {
    let end = s
        .iter()
        .rposition(|b| !b.is_ascii_whitespace())
        .map_or(0, |i| i + 1);
    &s[..end]
}

/// The part of RFC 8941 (Structured Field Values) that a targeted cache field needs: parsing a
/// Dictionary and telling the type of each member's value. Parameters are checked for syntax
/// and dropped (RFC 9213 §2.1 ignores them).
mod structured {
    use crate::wire::headers::is_tchar;

    /// The type of a member's value, as far as a cache directive cares.
    #[derive(Debug, PartialEq, Eq)]
    pub(super) enum Value {
        Integer(i64),
        String(Vec<u8>),
        /// A bare key, or `?1`.
        True,
        /// A valid value of any other type (decimal, token, byte sequence, `?0`, inner list).
        Other,
    }

    /// §4.2.2: the members in order, a repeated key keeping its last value in the first
    /// key's place; `None` on any syntax error.
    pub(super) fn dictionary(input: &[u8]) -> Option<Vec<(Vec<u8>, Value)>> {
        let mut p = Parser { input, at: 0 };
        p.skip(|b| b == b' ');
        let mut members: Vec<(Vec<u8>, Value)> = Vec::new();
        // Bounded: every pass consumes a key (at least one byte) or returns.
        while p.at < input.len() {
            let key = p.key()?;
            let value = if p.eat(b'=') {
                if p.peek() == Some(b'(') {
                    p.inner_list()?;
                    Value::Other
                } else {
                    let value = p.bare_item()?;
                    p.parameters()?;
                    value
                }
            } else {
                p.parameters()?;
                Value::True
            };
            match members.iter_mut().find(|(k, _)| *k == key) {
                Some(slot) => slot.1 = value,
                None => members.push((key, value)),
            }
            p.skip(|b| b == b' ' || b == b'\t');
            if p.at == input.len() {
                break;
            }
            if !p.eat(b',') {
                return None;
            }
            p.skip(|b| b == b' ' || b == b'\t');
            if p.at == input.len() {
                // A trailing comma.
                return None;
            }
        }
        Some(members)
    }

    struct Parser<'a> {
        input: &'a [u8],
        at: usize,
    }

    impl Parser<'_> {
        fn peek(&self) -> Option<u8> {
            self.input.get(self.at).copied()
        }

        fn eat(&mut self, byte: u8) -> bool {
            let hit = self.peek() == Some(byte);
            if hit {
                self.at += 1;
            }
            hit
        }

        fn skip(&mut self, what: impl Fn(u8) -> bool) {
            while self.peek().is_some_and(&what) {
                self.at += 1;
            }
        }

        /// §4.2.3.3, with upper-case letters read as lower-case (see `parse_targeted`).
        fn key(&mut self) -> Option<Vec<u8>> {
            let first = self.peek()?;
            if !(first.is_ascii_alphabetic() || first == b'*') {
                return None;
            }
            let start = self.at;
            self.skip(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b'*'));
            Some(self.input[start..self.at].to_ascii_lowercase())
        }

        /// §4.2.3.1.
        fn bare_item(&mut self) -> Option<Value> {
            match self.peek()? {
                b'-' | b'0'..=b'9' => self.number(),
                b'"' => self.string().map(Value::String),
                b'*' | b'A'..=b'Z' | b'a'..=b'z' => {
                    self.at += 1;
                    self.skip(|b| is_tchar(b) || b == b':' || b == b'/');
                    Some(Value::Other)
                }
                b':' => {
                    self.at += 1;
                    self.skip(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'='));
                    self.eat(b':').then_some(Value::Other)
                }
                b'?' => {
                    self.at += 1;
                    match self.peek()? {
                        b'1' => {
                            self.at += 1;
                            Some(Value::True)
                        }
                        b'0' => {
                            self.at += 1;
                            Some(Value::Other)
                        }
                        _ => None,
                    }
                }
                _ => None,
            }
        }

        /// §4.2.4: an Integer (at most 15 digits) or a Decimal (at most 12 + 3 digits).
        fn number(&mut self) -> Option<Value> {
            let negative = self.eat(b'-');
            let start = self.at;
            self.skip(|b| b.is_ascii_digit());
            let whole = self.at - start;
            if whole == 0 {
                return None;
            }
            if self.eat(b'.') {
                let frac_start = self.at;
                self.skip(|b| b.is_ascii_digit());
                let frac = self.at - frac_start;
                return (whole <= 12 && (1..=3).contains(&frac)).then_some(Value::Other);
            }
            if whole > 15 {
                return None;
            }
            let digits = std::str::from_utf8(&self.input[start..self.at]).ok()?;
            let n: i64 = digits.parse().ok()?;
            Some(Value::Integer(if negative { -n } else { n }))
        }

        /// §4.2.5: printable ASCII, `\` escaping only `"` and `\`.
        fn string(&mut self) -> Option<Vec<u8>> {
            self.at += 1;
            let mut out = Vec::new();
            loop {
                let b = self.peek()?;
                self.at += 1;
                match b {
                    b'"' => return Some(out),
                    b'\\' => {
                        let escaped = self.peek()?;
                        if escaped != b'"' && escaped != b'\\' {
                            return None;
                        }
                        self.at += 1;
                        out.push(escaped);
                    }
                    0x20..=0x7e => out.push(b),
                    _ => return None,
                }
            }
        }

        /// §4.2.3.2: `;key[=item]`, repeated.
        fn parameters(&mut self) -> Option<()> {
            while self.eat(b';') {
                self.skip(|b| b == b' ');
                self.key()?;
                if self.eat(b'=') {
                    self.bare_item()?;
                }
            }
            Some(())
        }

        /// §4.2.1.2: `( item item … )` with parameters.
        fn inner_list(&mut self) -> Option<()> {
            self.at += 1;
            // Bounded: every pass consumes an item or the closing parenthesis.
            loop {
                self.skip(|b| b == b' ');
                if self.eat(b')') {
                    return self.parameters();
                }
                self.bare_item()?;
                self.parameters()?;
                if !matches!(self.peek()?, b' ' | b')') {
                    return None;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Directives {
        Directives::parse([&HeaderValue::from_str(s).expect("value")]).expect("present")
    }

    #[test]
    fn reads_every_directive_a_shared_cache_uses() {
        let d = parse("public, max-age=60, s-maxage=30, must-revalidate, stale-while-revalidate=5, stale-if-error=7");
        assert_eq!(d.max_age, Some(60));
        assert_eq!(d.s_maxage, Some(30));
        assert!(d.public && d.must_revalidate);
        assert_eq!(d.stale_while_revalidate, Some(5));
        assert_eq!(d.stale_if_error, Some(7));
        assert!(d.forbids_stale());
    }

    #[test]
    fn quoted_values_and_case_and_unknown_directives() {
        let d = parse(r#"Private="set-cookie, x", No-Cache="a\"b", foo=bar, MAX-AGE="10""#);
        assert!(d.private && d.no_cache);
        assert_eq!(d.max_age, Some(10));
    }

    #[test]
    fn invalid_or_repeated_values() {
        // §4.2.1: an invalid max-age makes the response stale; the first of two wins.
        assert_eq!(parse("max-age=abc").max_age, Some(0));
        assert_eq!(parse("max-age=5, max-age=100").max_age, Some(5));
        assert_eq!(
            parse("max-age=99999999999999999999").max_age,
            Some(DELTA_MAX)
        );
        assert_eq!(parse("max-stale").max_stale, Some(u64::MAX));
        assert_eq!(parse("max-stale=3, min-fresh=2").max_stale, Some(3));
        assert!(parse("only-if-cached").only_if_cached);
    }

    fn targeted(s: &str) -> Option<Directives> {
        Directives::parse_targeted([&HeaderValue::from_str(s).expect("value")])
    }

    #[test]
    fn a_valid_targeted_field_is_read_as_a_dictionary() {
        let d = targeted("max-age=3600, foobar, x-ext=\"a, b\";p=1, private=\"set-cookie\"")
            .expect("valid");
        assert_eq!(d.max_age, Some(3600));
        assert!(d.private);
        assert_eq!(targeted("MaX-aGe=60").map(|d| d.max_age), Some(Some(60)));
        assert_eq!(
            targeted("max-age=99999999999").map(|d| d.max_age),
            Some(Some(DELTA_MAX))
        );
        assert!(targeted("no-store").is_some_and(|d| d.no_store));
        assert!(targeted("none").is_some_and(|d| d == Directives::default()));
        // A repeated key keeps its last value (RFC 8941 §4.2.2).
        assert_eq!(
            targeted("max-age=5, max-age=10").map(|d| d.max_age),
            Some(Some(10))
        );
        // Lines combine into one Dictionary.
        let lines = [
            HeaderValue::from_static("no-cache"),
            HeaderValue::from_static("max-age=7"),
        ];
        let d = Directives::parse_targeted(lines.iter()).expect("valid");
        assert!(d.no_cache);
        assert_eq!(d.max_age, Some(7));
    }

    #[test]
    fn an_invalid_targeted_field_is_ignored_whole() {
        // RFC 9213 §2.1: a parsing error or a wrong type means "as if the field were absent".
        for invalid in [
            "max-age=10000, &&&&&",
            "max-age=\"10000\"",
            "max-age =100",
            "max-age= 100",
            "max-age=-1",
            "max-age=1.5",
            "max-age=10,",
            "no-store=?0",
            "public=1",
            "private=token",
            "max-age=10 no-store",
            "x=\"unterminated",
            "",
        ] {
            assert_eq!(targeted(invalid), None, "{invalid:?}");
        }
        assert_eq!(Directives::parse_targeted(std::iter::empty()), None);
    }

    #[test]
    fn absent_field_is_none() {
        assert!(Directives::parse(std::iter::empty::<&HeaderValue>()).is_none());
        assert_eq!(parse(""), Directives::default());
    }
}
