//! The body types every layer passes around, type-erased so a layer can wrap a body (retry
//! buffers, limits, idle tracking, the cache's tee) without changing the seam.

use bytes::Bytes;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Empty, Full};

use super::outcome::BoxError;

/// A request body on its way upstream: streamed, type-erased so later layers (retry buffers,
/// limits, idle tracking) can wrap the downstream body without changing this seam.
pub type Body = UnsyncBoxBody<Bytes, BoxError>;

/// Every downstream response body: a streamed upstream body or a small generated one.
pub type ProxyBody = UnsyncBoxBody<Bytes, BoxError>;

/// An empty request body (rebuilt requests, tests).
pub fn empty_body() -> Body {
    Empty::new().map_err(|never| match never {}).boxed_unsync()
}

/// A fixed body (error pages).
pub fn full(bytes: impl Into<Bytes>) -> ProxyBody {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}
