//! Property tests for the cache rules (STYLE.md: proptest for cache rules): the directive
//! parser reads any generated directive list back, never panics on arbitrary bytes, and
//! reuse decisions are monotonic in age.

use http::HeaderValue;
use proptest::prelude::*;
use switchyard::cache::policy::freshness::{reuse, stale_if_error};
use switchyard::cache::policy::{Directives, Reuse};

fn parse(text: &str) -> Directives {
    match HeaderValue::from_str(text) {
        Ok(v) => Directives::parse([&v]).unwrap_or_default(),
        Err(_) => Directives::default(),
    }
}

proptest! {
    #![proptest_config(crate::support::proptest_config(ProptestConfig::default().cases))]
    #[test]
    fn generated_directives_read_back(
        max_age in proptest::option::of(0u64..1_000_000),
        s_maxage in proptest::option::of(0u64..1_000_000),
        swr in proptest::option::of(0u64..1_000_000),
        public: bool, private: bool, no_store: bool, no_cache: bool, must: bool,
        spaces in 0usize..3,
        upper: bool,
    ) {
        let mut parts = Vec::new();
        if let Some(v) = max_age { parts.push(format!("max-age={v}")); }
        if let Some(v) = s_maxage { parts.push(format!("s-maxage=\"{v}\"")); }
        if let Some(v) = swr { parts.push(format!("stale-while-revalidate={v}")); }
        if public { parts.push("public".into()); }
        if private { parts.push("private=\"set-cookie, x-a\"".into()); }
        if no_store { parts.push("no-store".into()); }
        if no_cache { parts.push("no-cache".into()); }
        if must { parts.push("must-revalidate".into()); }
        parts.push("x-unknown=\"a,b\"".into());
        let sep = format!("{},", " ".repeat(spaces));
        let mut text = parts.join(&sep);
        if upper { text = text.to_uppercase(); }
        let d = parse(&text);
        prop_assert_eq!(d.max_age, max_age);
        prop_assert_eq!(d.s_maxage, s_maxage);
        prop_assert_eq!(d.stale_while_revalidate, swr);
        prop_assert_eq!((d.public, d.private, d.no_store, d.no_cache, d.must_revalidate),
            (public, private, no_store, no_cache, must));
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        if let Ok(v) = HeaderValue::from_bytes(&bytes) {
            let _ = Directives::parse([&v]);
        }
    }

    #[test]
    fn fresh_stays_fresh_at_a_younger_age(
        age in 0u64..10_000, younger in 0u64..10_000, lifetime in 0u64..10_000,
        req_max_age in proptest::option::of(0u64..10_000),
        min_fresh in proptest::option::of(0u64..10_000),
        must: bool, swr in proptest::option::of(0u64..10_000),
    ) {
        let response = Directives { must_revalidate: must, stale_while_revalidate: swr, ..Directives::default() };
        let request = Directives { max_age: req_max_age, min_fresh, ..Directives::default() };
        let younger = younger.min(age);
        if reuse(age, lifetime, &response, &request) == Reuse::Fresh {
            prop_assert_eq!(reuse(younger, lifetime, &response, &request), Reuse::Fresh);
        }
        // must-revalidate: never anything stale.
        if must && age >= lifetime {
            prop_assert_eq!(reuse(age, lifetime, &response, &request), Reuse::Validate);
            let sie = Directives { stale_if_error: Some(u64::MAX), ..response };
            prop_assert!(!stale_if_error(age, lifetime, &sie));
        }
    }
}
