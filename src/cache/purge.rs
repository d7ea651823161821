//! Purging on demand: `POST /cache/purge?key=URL` or `?prefix=/path` on the admin API, and the
//! same [`Cache::purge`] for the mesh, which spreads purges to peer sidecars.

use serde::{Deserialize, Serialize};

use super::{key, Cache};

/// What to purge.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Purge {
    /// One URL (every `Vary` variant of it), as a client would request it:
    /// `http://host/path?query`.
    Key(String),
    /// Every URL whose path (and query) starts with this, on any host.
    Prefix(String),
}

/// Why a purge request is refused (400).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BadPurge {
    /// Neither `key` nor `prefix`, or both.
    #[error("give exactly one of ?key=URL or ?prefix=/path")]
    Missing,
    /// `key` is not an absolute http(s) URL.
    #[error("key must be an absolute http:// or https:// URL")]
    NotUrl,
    /// `prefix` does not start with `/`.
    #[error("prefix must start with /")]
    NotPath,
}

impl Purge {
    /// Reads the admin query string (`key=` or `prefix=`, percent-encoded).
    pub fn from_query(query: Option<&str>) -> Result<Self, BadPurge> {
        let mut found = None;
        for pair in query
            .unwrap_or_default()
            .split('&')
            .filter(|p| !p.is_empty())
        {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            let value = percent_encoding::percent_decode_str(&value.replace('+', " "))
                .decode_utf8_lossy()
                .into_owned();
            let purge = match name {
                "key" => Purge::Key(value),
                "prefix" => Purge::Prefix(value),
                _ => continue,
            };
            if found.replace(purge).is_some() {
                return Err(BadPurge::Missing);
            }
        }
        let purge = found.ok_or(BadPurge::Missing)?;
        match &purge {
            Purge::Key(url) if key::of_url(url).is_none() => Err(BadPurge::NotUrl),
            Purge::Prefix(p) if !p.starts_with('/') => Err(BadPurge::NotPath),
            _ => Ok(purge),
        }
    }
}

impl Cache {
    /// Removes what `purge` selects; returns how many URLs were removed. The mesh calls this
    /// for purges its peers announce.
    pub fn purge(&self, purge: &Purge) -> usize {
        let removed = match purge {
            Purge::Key(url) => key::of_url(url).map_or(0, |k| usize::from(self.store.remove(&k))),
            Purge::Prefix(prefix) => self
                .store
                .remove_where(|k| key::target(k).starts_with(prefix.as_str())),
        };
        self.store.settle();
        tracing::info!(?purge, removed, "cache purge");
        removed
    }
}

/// `POST /cache/purge?key=URL|prefix=/path` on the admin API: the status and JSON body.
/// 200 `{"purged": N}`, 400 for a bad query, 404 without `[cache]`, 405 for other methods.
pub fn admin_answer(
    cache: Option<&Cache>,
    method: &http::Method,
    query: Option<&str>,
) -> (http::StatusCode, serde_json::Value) {
    use http::StatusCode;
    if method != http::Method::POST {
        return (
            StatusCode::METHOD_NOT_ALLOWED,
            serde_json::json!({ "error": "use POST" }),
        );
    }
    let Some(cache) = cache else {
        return (
            StatusCode::NOT_FOUND,
            serde_json::json!({ "error": "no [cache] configured" }),
        );
    };
    match Purge::from_query(query) {
        Ok(purge) => (
            StatusCode::OK,
            serde_json::json!({ "purged": cache.purge(&purge) }),
        ),
        Err(error) => (
            StatusCode::BAD_REQUEST,
            serde_json::json!({ "error": error.to_string() }),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_forms() {
        assert_eq!(
            Purge::from_query(Some("key=http%3A%2F%2Fh%2Fa%3Fb%3D1")),
            Ok(Purge::Key("http://h/a?b=1".into()))
        );
        assert_eq!(
            Purge::from_query(Some("prefix=/a/")),
            Ok(Purge::Prefix("/a/".into()))
        );
        assert_eq!(Purge::from_query(None), Err(BadPurge::Missing));
        assert_eq!(
            Purge::from_query(Some("key=x&prefix=/")),
            Err(BadPurge::Missing)
        );
        assert_eq!(Purge::from_query(Some("key=/a")), Err(BadPurge::NotUrl));
        assert_eq!(Purge::from_query(Some("prefix=a")), Err(BadPurge::NotPath));
    }
}
