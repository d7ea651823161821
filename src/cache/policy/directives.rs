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

/// RFC 9111 §1.2.2 delta-seconds: digits only; `None` when invalid.
fn delta_seconds(value: &[u8]) -> Option<u64> {
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

    #[test]
    fn absent_field_is_none() {
        assert!(Directives::parse(std::iter::empty::<&HeaderValue>()).is_none());
        assert_eq!(parse(""), Directives::default());
    }
}
