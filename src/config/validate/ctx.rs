//! The validation context: collects every error (with its position) and holds the small value
//! checks every section shares (durations, sizes, fractions, addresses, enums, header names).

use std::net::SocketAddr;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use http::{HeaderName, HeaderValue};
use toml::Spanned;

use crate::config::error::{ConfigError, Locator};
use crate::config::raw::Str;
use crate::config::units::{parse_duration, parse_size};

/// Accumulates errors instead of stopping at the first, so `check` reports them all.
pub(crate) struct Ctx<'a> {
    loc: &'a Locator<'a>,
    /// The config file's folder: relative paths inside the file resolve against it.
    base: PathBuf,
    errors: Vec<ConfigError>,
}

impl<'a> Ctx<'a> {
    pub(crate) fn new(loc: &'a Locator<'a>) -> Self {
        let base = loc
            .file()
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_default();
        Self {
            loc,
            base,
            errors: Vec::new(),
        }
    }

    pub(crate) fn err(&mut self, span: Range<usize>, message: impl Into<String>) {
        self.errors.push(self.loc.error(&span, message));
    }

    /// The collected errors, sorted by position (stable, so same-position errors keep order).
    pub(crate) fn finish(mut self) -> Vec<ConfigError> {
        self.errors.sort_by_key(|e| (e.line, e.col));
        std::mem::take(&mut self.errors)
    }

    /// A path from the file, resolved against the config file's folder when relative.
    pub(crate) fn path(&self, p: &str) -> PathBuf {
        let p = Path::new(p);
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.base.join(p)
        }
    }

    pub(crate) fn duration(
        &mut self,
        value: Option<&Str>,
        key: &str,
        default: Duration,
    ) -> Duration {
        let Some(value) = value else { return default };
        match parse_duration(value.get_ref()) {
            Ok(d) => d,
            Err(e) => {
                self.err(value.span(), format!("{key}: {e}"));
                default
            }
        }
    }

    /// A duration that must not be zero (intervals, connect timeouts).
    pub(crate) fn positive_duration(
        &mut self,
        value: Option<&Str>,
        key: &str,
        default: Duration,
    ) -> Duration {
        let d = self.duration(value, key, default);
        if d.is_zero() {
            if let Some(value) = value {
                self.err(value.span(), format!("{key}: must be greater than 0"));
            }
            return default;
        }
        d
    }

    /// A duration where 0 means "none".
    pub(crate) fn optional_duration(
        &mut self,
        value: Option<&Str>,
        key: &str,
        default: Duration,
    ) -> Option<Duration> {
        Some(self.duration(value, key, default)).filter(|d| !d.is_zero())
    }

    pub(crate) fn size(&mut self, value: Option<&Str>, key: &str, default: u64) -> u64 {
        let Some(value) = value else { return default };
        match parse_size(value.get_ref()) {
            Ok(n) => n,
            Err(e) => {
                self.err(value.span(), format!("{key}: {e}"));
                default
            }
        }
    }

    /// A fraction in `0.0..=1.0`.
    pub(crate) fn fraction(
        &mut self,
        value: Option<&Spanned<f64>>,
        key: &str,
        default: f64,
    ) -> f64 {
        let Some(value) = value else { return default };
        let v = *value.get_ref();
        if (0.0..=1.0).contains(&v) {
            v
        } else {
            self.err(
                value.span(),
                format!("{key}: must be between 0 and 1 (got {v})"),
            );
            default
        }
    }

    /// A count that must be at least 1.
    pub(crate) fn at_least_one(
        &mut self,
        value: Option<&Spanned<u32>>,
        key: &str,
        default: u32,
    ) -> u32 {
        let Some(value) = value else { return default };
        if *value.get_ref() == 0 {
            self.err(value.span(), format!("{key}: must be at least 1"));
            return default;
        }
        *value.get_ref()
    }

    /// An IP socket address: `"127.0.0.1:8080"` or `"[::1]:8080"` (no host names).
    pub(crate) fn socket_addr(&mut self, value: &Str, key: &str) -> Option<SocketAddr> {
        match value.get_ref().parse::<SocketAddr>() {
            Ok(addr) => Some(addr),
            Err(_) => {
                self.err(
                    value.span(),
                    format!(
                        "{key}: {:?} is not an IP socket address (expected \"127.0.0.1:8080\" or \"[::1]:8080\")",
                        value.get_ref()
                    ),
                );
                None
            }
        }
    }

    /// One of a fixed set of spellings; the error lists them all.
    pub(crate) fn one_of<T: Copy>(
        &mut self,
        value: Option<&Str>,
        key: &str,
        options: &[(&str, T)],
        default: T,
    ) -> T {
        let Some(value) = value else { return default };
        if let Some(&(_, v)) = options
            .iter()
            .find(|(name, _)| *name == value.get_ref().as_str())
        {
            return v;
        }
        let names: Vec<String> = options
            .iter()
            .map(|(name, _)| format!("{name:?}"))
            .collect();
        self.err(
            value.span(),
            format!(
                "{key}: unknown value {:?} (expected one of {})",
                value.get_ref(),
                names.join(", ")
            ),
        );
        default
    }

    pub(crate) fn header_name(&mut self, value: &Str, key: &str) -> Option<HeaderName> {
        match HeaderName::from_bytes(value.get_ref().as_bytes()) {
            Ok(name) => Some(name),
            Err(_) => {
                self.err(
                    value.span(),
                    format!("{key}: {:?} is not a valid header name", value.get_ref()),
                );
                None
            }
        }
    }

    pub(crate) fn header_value(&mut self, value: &Str, key: &str) -> Option<HeaderValue> {
        match HeaderValue::from_str(value.get_ref()) {
            Ok(v) => Some(v),
            Err(_) => {
                self.err(
                    value.span(),
                    format!("{key}: {:?} is not a valid header value (visible ASCII, spaces and tabs only)", value.get_ref()),
                );
                None
            }
        }
    }

    /// A name that must not be empty (listener, route, cluster, service names).
    pub(crate) fn non_empty(&mut self, value: &Str, key: &str) -> bool {
        if value.get_ref().trim().is_empty() {
            self.err(value.span(), format!("{key}: must not be empty"));
            return false;
        }
        true
    }
}

/// Whether `s` is a DNS host name: dot-separated labels of letters, digits, `-` and `_`.
///
/// `_` is allowed because SRV names (`_http._tcp.x`) and some internal names use it.
pub(crate) fn is_host_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}
