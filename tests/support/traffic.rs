//! Which backends answer a URL: for tests where the set changes (discovery, reload, mesh) and
//! every backend answers its own name.

use std::time::Duration;

use super::http_client::get;
use super::wait_until_check;

/// The bodies of `n` GETs, one after the other; an error or a non-200 is `"!STATUS"` or
/// `"!ERROR"`, so an empty cluster reads as `"!503"`.
pub async fn bodies(url: &str, n: usize) -> Vec<String> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        out.push(match get(url).await {
            Ok(r) if r.status == 200 => r.text(),
            Ok(r) => format!("!{}", r.status.as_u16()),
            Err(e) => format!("!{e:?}"),
        });
    }
    out
}

/// Waits until a batch of requests is answered by exactly `names`: each body one of them, each
/// of them seen. On timeout, the bodies of one more batch, for the failure message.
pub async fn wait_for_bodies(
    url: &str,
    names: &[&str],
    deadline: Duration,
) -> Result<(), Vec<String>> {
    let exactly = |got: &[String]| {
        got.iter().all(|b| names.contains(&b.as_str()))
            && names.iter().all(|n| got.iter().any(|b| b == n))
    };
    if wait_until_check(deadline, || async move { exactly(&bodies(url, 12).await) }).await {
        Ok(())
    } else {
        Err(bodies(url, 12).await)
    }
}
