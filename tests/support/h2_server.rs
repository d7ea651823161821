//! Hand-driven HTTP/2 upstreams (the h2 crate's server), for faults the scripted
//! [`super::backend::Backend`] cannot produce.

use std::net::SocketAddr;
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;

use bytes::Bytes;
use http::Response;

/// An h2 server that answers `ok` and ends every connection with a GOAWAY after `per_conn`
/// streams (graceful: streams it accepted are still answered, later ones are refused).
pub async fn goaway_backend(per_conn: usize) -> (SocketAddr, Arc<AtomicUsize>) {
    super::tcp_server::bind_counting(move |stream| async move {
        let Ok(mut conn) = h2::server::handshake(stream).await else {
            return;
        };
        let mut served = 0;
        // Bounded by the client: `accept` ends once the connection closes.
        while let Some(Ok((_req, mut respond))) = conn.accept().await {
            served += 1;
            if served == per_conn {
                conn.graceful_shutdown();
            }
            tokio::spawn(async move {
                let Ok(mut send) = respond.send_response(Response::new(()), false) else {
                    return;
                };
                let _ = send.send_data(Bytes::from_static(b"ok"), true);
            });
        }
    })
    .await
}
