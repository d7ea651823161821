//! `rewrite.path_prefix`: the upstream path for a matched route.
//!
//! What is replaced depends on how the route matched the path:
//! - `path_prefix`: the matched prefix (`/api` + rewrite `/v2` turns `/api/users` into
//!   `/v2/users`), segment-unaware like the match itself;
//! - no path condition: the empty prefix, so the rewrite value is prepended (mounts the whole
//!   route under it);
//! - `path_regex`: the leftmost match of the regex (`^/v[0-9]+/` + rewrite `/` strips a
//!   version segment), as `sed 's/re/value/'` would;
//! - exact `path`: the whole path.
//!
//! Where the pieces meet, a doubled `/` is collapsed, and the result is normalised again so a
//! prefix cut mid-segment cannot produce `./` or `../` segments: the backend always receives a
//! canonical path.

use std::borrow::Cow;

use super::normalize::{normalize, Normalized, PathError};
use crate::config::PathMatch;

/// Builds `path + "?" + query` for upstream, after the route's rewrite if it has one. `None`:
/// the request's own target goes upstream unchanged (its path was canonical and the route has
/// no rewrite), so nothing is built.
pub(crate) fn upstream_target(
    normalized: Normalized<'_>,
    path_match: Option<&PathMatch>,
    rewrite: Option<&str>,
) -> Result<Option<String>, PathError> {
    let Normalized { path, query } = normalized;
    let mut target = match (rewrite, path) {
        (None, Cow::Borrowed(_)) => return Ok(None),
        (None, Cow::Owned(path)) => path,
        (Some(replacement), path) => {
            let (start, end) = replaced_span(&path, path_match);
            let spliced = splice(&path, start, end, replacement);
            let rewritten = match normalize(&spliced)?.path {
                Cow::Owned(rewritten) => Some(rewritten),
                Cow::Borrowed(_) => None,
            };
            let mut renormalized = rewritten.unwrap_or(spliced);
            renormalized.reserve(query.map_or(0, |q| q.len() + 1));
            renormalized
        }
    };
    if let Some(query) = query {
        target.push('?');
        target.push_str(query);
    }
    Ok(Some(target))
}

/// [`upstream_target`] always spelled out: `path + "?" + query` when the request's target goes
/// upstream unchanged (for `explain` and tests, not the request path).
pub(crate) fn upstream_target_text(
    normalized: Normalized<'_>,
    path_match: Option<&PathMatch>,
    rewrite: Option<&str>,
) -> Result<String, PathError> {
    let Normalized { path, query } = normalized.clone();
    Ok(
        upstream_target(normalized, path_match, rewrite)?.unwrap_or_else(|| match query {
            Some(query) => format!("{path}?{query}"),
            None => path.into_owned(),
        }),
    )
}

/// The byte range of `path` that the rewrite value replaces.
fn replaced_span(path: &str, path_match: Option<&PathMatch>) -> (usize, usize) {
    match path_match {
        None => (0, 0),
        // The route matched, so the path starts with the prefix; `min` keeps a misuse in
        // bounds instead of panicking.
        Some(PathMatch::Prefix(prefix)) => (0, prefix.len().min(path.len())),
        Some(PathMatch::Exact(_)) => (0, path.len()),
        Some(PathMatch::Regex(regex)) => regex
            .find(path)
            .map_or((0, path.len()), |m| (m.start(), m.end())),
    }
}

fn splice(path: &str, start: usize, end: usize, replacement: &str) -> String {
    let mut out = String::with_capacity(path.len() + replacement.len() + 1);
    out.push('/');
    for piece in [path.get(..start), Some(replacement), path.get(end..)]
        .into_iter()
        .flatten()
    {
        let piece = if out.ends_with('/') {
            piece.trim_start_matches('/')
        } else {
            piece
        };
        out.push_str(piece);
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use regex::Regex;

    fn rewritten(path_and_query: &str, path_match: Option<PathMatch>, rewrite: &str) -> String {
        let normalized = normalize(path_and_query).unwrap();
        upstream_target_text(normalized, path_match.as_ref(), Some(rewrite)).unwrap()
    }

    fn prefix(p: &str) -> Option<PathMatch> {
        Some(PathMatch::Prefix(p.into()))
    }

    #[test]
    fn prefix_rewrites() {
        assert_eq!(
            rewritten("/api/users?x=1", prefix("/api"), "/v2"),
            "/v2/users?x=1"
        );
        assert_eq!(rewritten("/api/users", prefix("/api"), "/"), "/users");
        assert_eq!(rewritten("/api/users", prefix("/api/"), "/"), "/users");
        assert_eq!(
            rewritten("/api/users", prefix("/api/"), "/v2/"),
            "/v2/users"
        );
        assert_eq!(rewritten("/api", prefix("/api"), "/"), "/");
        assert_eq!(rewritten("/api", prefix("/api"), "/v2"), "/v2");
        assert_eq!(rewritten("/api/", prefix("/api"), "/v2/"), "/v2/");
        assert_eq!(rewritten("/api/users", prefix("/api/"), ""), "/users");
    }

    #[test]
    fn prefix_cut_mid_segment_is_renormalised() {
        assert_eq!(rewritten("/a./x", prefix("/a"), "/b/"), "/b/x");
        assert_eq!(rewritten("/a../x", prefix("/a"), "/b/c/"), "/b/x");
    }

    #[test]
    fn no_path_condition_prepends() {
        assert_eq!(rewritten("/users?q", None, "/v2"), "/v2/users?q");
        assert_eq!(rewritten("/users", None, "/v2/"), "/v2/users");
        assert_eq!(rewritten("/", None, "/"), "/");
    }

    #[test]
    fn exact_replaces_the_whole_path_and_keeps_the_query() {
        let exact = Some(PathMatch::Exact("/old".into()));
        assert_eq!(rewritten("/old?a=b", exact, "/new/place"), "/new/place?a=b");
    }

    #[test]
    fn regex_replaces_the_leftmost_match() {
        let version = Some(PathMatch::Regex(Regex::new("^/v[0-9]+/").unwrap()));
        assert_eq!(rewritten("/v12/users", version.clone(), "/"), "/users");
        assert_eq!(rewritten("/v1/users", version, "/api/"), "/api/users");
        let middle = Some(PathMatch::Regex(Regex::new("/internal/").unwrap()));
        assert_eq!(
            rewritten("/a/internal/b", middle, "/public/"),
            "/a/public/b"
        );
    }

    #[test]
    fn without_rewrite_the_normalised_path_goes_upstream() {
        let n = normalize("//a/./b?x=/..").unwrap();
        assert_eq!(
            upstream_target(n, prefix("/a").as_ref(), None).unwrap(),
            Some("/a/b?x=/..".to_owned())
        );
    }

    #[test]
    fn a_canonical_target_without_rewrite_goes_upstream_as_received() {
        let n = normalize("/a/b?x=/..").unwrap();
        assert_eq!(
            upstream_target(n.clone(), prefix("/a").as_ref(), None).unwrap(),
            None
        );
        assert_eq!(
            upstream_target_text(n, prefix("/a").as_ref(), None).unwrap(),
            "/a/b?x=/.."
        );
    }
}
