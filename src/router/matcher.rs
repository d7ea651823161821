//! A route's conditions, compiled once: hosts lower-cased and bare, so matching a request
//! allocates nothing.
//!
//! Every condition reports a [`Mismatch`] instead of a bare `false`: the request path stops at
//! the first one, `explain` collects them all, and both run the same code.

use std::fmt;
use std::ops::ControlFlow;

use http::{HeaderName, HeaderValue, Method};

use super::RequestView;
use crate::config::{HostMatch, PathMatch, RouteMatch};

/// A [`RouteMatch`] prepared for matching.
#[derive(Debug, Clone)]
pub(crate) struct CompiledMatch {
    host: Option<CompiledHost>,
    path: Option<PathMatch>,
    method: Option<Method>,
    headers: Vec<(HeaderName, HeaderValue)>,
    client_identity: Option<String>,
}

/// A host condition in the form requests are compared in: lower-case, no trailing dot, IPv6
/// literals without brackets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum CompiledHost {
    Exact(String),
    /// Holds the leading dot (`.example.com`), so the apex never matches.
    Suffix(String),
}

/// Why a request fails one condition of a route; `Display` is the line `explain` prints.
#[derive(Debug, Clone)]
pub(crate) enum Mismatch<'a> {
    NoHost(&'a CompiledHost),
    Host(&'a str, &'a CompiledHost),
    Path(&'a str, &'a PathMatch),
    Method(&'a Method, &'a Method),
    HeaderMissing(&'a HeaderName),
    HeaderDiffers(&'a HeaderName, &'a HeaderValue),
    NoIdentity(&'a str),
    Identity(&'a str, &'a str),
}

impl CompiledMatch {
    pub(crate) fn new(matcher: &RouteMatch) -> Self {
        let host = matcher.host.as_ref().map(|host| match host {
            HostMatch::Exact(name) => {
                CompiledHost::Exact(canonical_host(name).to_ascii_lowercase())
            }
            HostMatch::Suffix(suffix) => {
                CompiledHost::Suffix(canonical_host(suffix).to_ascii_lowercase())
            }
        });
        Self {
            host,
            path: matcher.path.clone(),
            method: matcher.method.clone(),
            headers: matcher.headers.clone(),
            client_identity: matcher.client_identity.clone(),
        }
    }

    /// Whether every condition holds for `req`, whose normalised path is `path`.
    pub(crate) fn matches(&self, req: &RequestView<'_>, path: &str) -> bool {
        self.each_mismatch(req, path, |_| ControlFlow::Break(()))
            .is_continue()
    }

    /// Every condition that fails, in a fixed order (host, path, method, headers, identity).
    pub(crate) fn mismatches<'a>(
        &'a self,
        req: &'a RequestView<'_>,
        path: &'a str,
    ) -> Vec<Mismatch<'a>> {
        let mut found = Vec::new();
        let _ = self.each_mismatch(req, path, |m| {
            found.push(m);
            ControlFlow::Continue(())
        });
        found
    }

    /// Calls `on_mismatch` for each failing condition until it breaks. Cheap checks (method,
    /// host) run before the regex.
    fn each_mismatch<'a>(
        &'a self,
        req: &'a RequestView<'_>,
        path: &'a str,
        mut on_mismatch: impl FnMut(Mismatch<'a>) -> ControlFlow<()>,
    ) -> ControlFlow<()> {
        if let Some(want) = &self.host {
            match req.host.map(canonical_host) {
                None => on_mismatch(Mismatch::NoHost(want))?,
                Some(got) if !want.matches(got) => on_mismatch(Mismatch::Host(got, want))?,
                Some(_) => {}
            }
        }
        if let Some(want) = &self.method {
            if want != req.method {
                on_mismatch(Mismatch::Method(req.method, want))?;
            }
        }
        if let Some(want) = &self.path {
            if !path_matches(want, path) {
                on_mismatch(Mismatch::Path(path, want))?;
            }
        }
        for (name, want) in &self.headers {
            let mut values = req.headers.get_all(name).iter().peekable();
            if values.peek().is_none() {
                on_mismatch(Mismatch::HeaderMissing(name))?;
            } else if !values.any(|got| got == want) {
                on_mismatch(Mismatch::HeaderDiffers(name, want))?;
            }
        }
        if let Some(want) = &self.client_identity {
            match req.client_identity {
                None => on_mismatch(Mismatch::NoIdentity(want))?,
                Some(got) if got != want => on_mismatch(Mismatch::Identity(got, want))?,
                Some(_) => {}
            }
        }
        ControlFlow::Continue(())
    }
}

impl CompiledHost {
    /// `host` is already canonical (see [`canonical_host`]) but may have any case.
    fn matches(&self, host: &str) -> bool {
        match self {
            Self::Exact(want) => host.eq_ignore_ascii_case(want),
            Self::Suffix(suffix) => {
                host.len() > suffix.len()
                    && host
                        .get(host.len() - suffix.len()..)
                        .is_some_and(|tail| tail.eq_ignore_ascii_case(suffix))
            }
        }
    }
}

fn path_matches(want: &PathMatch, path: &str) -> bool {
    match want {
        PathMatch::Exact(exact) => path == exact,
        PathMatch::Prefix(prefix) => path.starts_with(prefix.as_str()),
        PathMatch::Regex(regex) => regex.is_match(path),
    }
}

/// The host part of a `Host` header or URI authority: userinfo and port stripped, brackets
/// removed from IPv6 literals (`[::1]:8080` -> `::1`), one trailing dot removed (`a.com.` is the
/// fully qualified `a.com`). Case is left alone; comparisons ignore it.
pub(crate) fn canonical_host(raw: &str) -> &str {
    let raw = raw.rsplit_once('@').map_or(raw, |(_, host)| host);
    let host = if let Some(rest) = raw.strip_prefix('[') {
        rest.split_once(']')
            .map_or(rest, |(literal, _port)| literal)
    } else {
        match raw.rsplit_once(':') {
            // Exactly one colon: `name:port`. More than one is a bare IPv6 address.
            Some((name, _port)) if !name.contains(':') => name,
            _ => raw,
        }
    };
    host.strip_suffix('.').unwrap_or(host)
}

impl fmt::Display for CompiledHost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Exact(name) => f.write_str(name),
            Self::Suffix(suffix) => write!(f, "*{suffix}"),
        }
    }
}

impl fmt::Display for Mismatch<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NoHost(want) => write!(f, "no host in the request (route wants {want})"),
            Self::Host(got, CompiledHost::Exact(want)) => write!(f, "host {got} != {want}"),
            Self::Host(got, CompiledHost::Suffix(suffix)) => {
                let apex = suffix.strip_prefix('.').unwrap_or(suffix);
                write!(f, "host {got} is not a subdomain of {apex}")
            }
            Self::Path(path, PathMatch::Exact(want)) => write!(f, "path {path} != {want}"),
            Self::Path(path, PathMatch::Prefix(prefix)) => {
                write!(f, "path {path} does not start with {prefix}")
            }
            Self::Path(path, PathMatch::Regex(regex)) => {
                write!(f, "path {path} does not match regex {}", regex.as_str())
            }
            Self::Method(got, want) => write!(f, "method {got} != {want}"),
            Self::HeaderMissing(name) => write!(f, "header {name} missing"),
            Self::HeaderDiffers(name, want) => {
                write!(f, "header {name} differs (route wants {want:?})")
            }
            Self::NoIdentity(want) => write!(f, "no client identity (route wants {want})"),
            Self::Identity(got, want) => write!(f, "client identity {got} != {want}"),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn canonical_host_strips_port_brackets_userinfo_and_dot() {
        for (raw, want) in [
            ("api.example.com", "api.example.com"),
            ("API.Example.com:8080", "API.Example.com"),
            ("api.example.com.", "api.example.com"),
            ("api.example.com.:443", "api.example.com"),
            ("[::1]:8080", "::1"),
            ("[::1]", "::1"),
            ("::1", "::1"),
            ("user:pw@host:1", "host"),
            ("127.0.0.1:80", "127.0.0.1"),
        ] {
            assert_eq!(canonical_host(raw), want, "{raw}");
        }
    }

    #[test]
    fn suffix_needs_a_label_before_it() {
        let suffix = CompiledHost::Suffix(".example.com".into());
        assert!(suffix.matches("a.example.com"));
        assert!(suffix.matches("X.Y.EXAMPLE.com"));
        assert!(!suffix.matches("example.com"));
        assert!(!suffix.matches(".example.com"));
        assert!(!suffix.matches("badexample.com"));
        // The tail of the suffix's length starts inside a character: no match, no panic.
        assert!(!suffix.matches(&format!("{}a", "\u{e9}".repeat(6))));
    }
}
