//! A route's `headers` rules applied to a request or response head.
//!
//! Removal runs before addition, so a name that is both removed and added ends up with exactly
//! the configured value. Additions overwrite (`insert`): a client cannot smuggle a second value
//! next to the one the route sets.

use http::{HeaderMap, HeaderName, HeaderValue};

pub(crate) fn apply(
    headers: &mut HeaderMap,
    remove: &[HeaderName],
    add: &[(HeaderName, HeaderValue)],
) {
    for name in remove {
        headers.remove(name);
    }
    for (name, value) in add {
        // `HeaderValue` clones share their bytes: no copy per request.
        headers.insert(name.clone(), value.clone());
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn removes_then_overwrites() {
        let mut headers = HeaderMap::new();
        headers.append("x-env", HeaderValue::from_static("dev"));
        headers.append("x-env", HeaderValue::from_static("test"));
        headers.insert("x-internal", HeaderValue::from_static("secret"));
        headers.insert("x-keep", HeaderValue::from_static("yes"));
        let remove = [
            HeaderName::from_static("x-internal"),
            HeaderName::from_static("x-both"),
        ];
        let add = [
            (
                HeaderName::from_static("x-env"),
                HeaderValue::from_static("prod"),
            ),
            (
                HeaderName::from_static("x-both"),
                HeaderValue::from_static("added"),
            ),
        ];
        apply(&mut headers, &remove, &add);
        let env: Vec<_> = headers.get_all("x-env").iter().collect();
        assert_eq!(env, [HeaderValue::from_static("prod")]);
        assert!(headers.get("x-internal").is_none());
        assert_eq!(headers["x-both"], "added");
        assert_eq!(headers["x-keep"], "yes");
    }
}
