//! Validation (RFC 9111 §4.3): freshening a stored response from a 304 (§4.3.4), and the
//! background refresh of `stale-while-revalidate` (RFC 5861 §3), spawned once per URL.

use std::sync::Arc;
use std::time::{Instant, SystemTime};

use http::header::{self, HeaderMap};
use http::request::Parts;
use http::{Method, StatusCode};

use super::coalesce::{self, Join};
use super::key::{self, Variant};
use super::policy::{conditional, freshness};
use super::store::Stored;
use super::{tee, Cache, Refresh};

/// §3.2 / §4.3.4: the stored response with the 304's header fields replacing its own, except
/// the ones a 304 cannot speak for (`Content-Length`, RFC 9110 §15.4.5) and our own `Age` and
/// `Cache-Status` bookkeeping. Freshness and age start over from the 304.
pub fn freshen(
    stored: &Stored,
    not_modified: &HeaderMap,
    request_time: SystemTime,
    response_time: SystemTime,
) -> Stored {
    let mut headers = stored.headers.clone();
    for name in not_modified.keys() {
        if *name == header::CONTENT_LENGTH
            || *name == header::AGE
            || name == super::status::CACHE_STATUS
        {
            continue;
        }
        headers.remove(name);
        for value in not_modified.get_all(name) {
            headers.append(name.clone(), value.clone());
        }
    }
    let (directives, cdn) = freshness::response_directives(&headers);
    Stored {
        status: stored.status,
        lifetime: freshness::lifetime(stored.status, &directives, cdn, &headers, response_time),
        initial_age: freshness::initial_age(not_modified, request_time, response_time),
        headers,
        body: stored.body.clone(),
        directives,
        received: Instant::now(),
        variant: stored.variant.clone(),
        authorized_ok: stored.authorized_ok && freshness::allows_authorized(&directives),
    }
}

/// Puts a freshened response in place of `stale`, or drops it when the 304 made it
/// unstorable (`no-store`, `private`, `Vary: *`).
pub fn keep(cache: &Cache, key: &str, stale: &Arc<Stored>, fresh: &Stored) {
    let (directives, cdn) = freshness::response_directives(&fresh.headers);
    let request = freshness::request_directives(&HeaderMap::new());
    let storable = freshness::storable(
        &request,
        false,
        fresh.status,
        &directives,
        cdn,
        &fresh.headers,
    );
    if storable.is_ok() {
        cache.store().put(key, Arc::new(clone_stored(fresh)));
    } else {
        cache.store().remove_variant(key, stale);
    }
}

fn clone_stored(s: &Stored) -> Stored {
    Stored {
        status: s.status,
        headers: s.headers.clone(),
        body: s.body.clone(),
        directives: s.directives,
        lifetime: s.lifetime,
        initial_age: s.initial_age,
        received: s.received,
        variant: s.variant.clone(),
        authorized_ok: s.authorized_ok,
    }
}

/// Starts one background revalidation of `stored` (unless one for the URL is running): a
/// conditional GET through the route as it is configured now; a 304 freshens the entry, a
/// storable 200 replaces it.
pub fn refresh_in_background(
    cache: &Arc<Cache>,
    refetch: super::serve::Refetch<'_>,
    key: &str,
    stored: &Arc<Stored>,
    mut parts: Parts,
) {
    let Join::Leader(flight) =
        coalesce::join(&cache.flights, &key::flight_in(stored.variant.scope(), key))
    else {
        return;
    };
    let request_headers = parts.headers.clone();
    conditional::set_validators(&mut parts.headers, &stored.headers);
    parts.method = Method::GET;
    parts.extensions.insert(Refresh);
    // Made here, before the spawn: the future owns what it needs, the request can end.
    let fetch = refetch(parts);
    let (cache, key, stored) = (Arc::clone(cache), key.to_owned(), Arc::clone(stored));
    tokio::spawn(async move {
        let request_time = SystemTime::now();
        let response = match fetch.await {
            Ok(response) => response,
            Err(error) => {
                tracing::debug!(%error, %key, "background revalidation failed");
                return;
            }
        };
        let (head, body) = response.into_parts();
        if head.status == StatusCode::NOT_MODIFIED {
            let fresh = freshen(&stored, &head.headers, request_time, SystemTime::now());
            keep(&cache, &key, &stored, &fresh);
            return;
        }
        let request = freshness::request_directives(&request_headers);
        let authorized = request_headers.contains_key(header::AUTHORIZATION);
        let (directives, cdn) = freshness::response_directives(&head.headers);
        if freshness::storable(
            &request,
            authorized,
            head.status,
            &directives,
            cdn,
            &head.headers,
        )
        .is_err()
        {
            return;
        }
        let Some(bytes) = tee::collect(body, cache.config().max_object).await else {
            return;
        };
        let response_time = SystemTime::now();
        let mut headers = head.headers.clone();
        headers.remove(header::AGE);
        let fresh = Stored {
            status: head.status,
            lifetime: freshness::lifetime(
                head.status,
                &directives,
                cdn,
                &head.headers,
                response_time,
            ),
            initial_age: freshness::initial_age(&head.headers, request_time, response_time),
            headers,
            body: bytes,
            directives,
            received: Instant::now(),
            variant: Variant::capture_in(
                stored.variant.scope().clone(),
                &head.headers,
                &request_headers,
            ),
            authorized_ok: freshness::allows_authorized(&directives),
        };
        cache.store().put(&key, Arc::new(fresh));
        drop(flight);
    });
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use http::HeaderValue;

    use super::*;
    use crate::cache::policy::Directives;

    #[test]
    fn a_304_replaces_headers_but_not_content_length() {
        let mut headers = HeaderMap::new();
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from_static("5"));
        headers.insert("x-version", HeaderValue::from_static("1"));
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("max-age=1"));
        let stored = Stored {
            status: StatusCode::OK,
            headers,
            body: Bytes::from_static(b"hello"),
            directives: Directives::default(),
            lifetime: 1,
            initial_age: 0,
            received: Instant::now(),
            variant: Variant::default(),
            authorized_ok: false,
        };
        let mut update = HeaderMap::new();
        update.insert(header::CONTENT_LENGTH, HeaderValue::from_static("0"));
        update.insert("x-version", HeaderValue::from_static("2"));
        update.insert(
            header::CACHE_CONTROL,
            HeaderValue::from_static("max-age=300"),
        );
        let now = SystemTime::now();
        let fresh = freshen(&stored, &update, now, now);
        assert_eq!(fresh.headers["x-version"], "2");
        assert_eq!(fresh.headers[header::CONTENT_LENGTH], "5");
        assert_eq!(fresh.lifetime, 300);
        assert_eq!(fresh.body, "hello");
    }
}
