//! Our own HTTP/2 server connection: HPACK ([`hpack`]), frames, streams and flow control.

pub mod hpack;
