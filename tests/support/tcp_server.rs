//! A bare TCP accept loop for tests that must drive an upstream byte by byte or frame by frame
//! (raw HTTP/1 replies, hand-driven HTTP/2), where the scripted [`super::backend::Backend`] is
//! too high-level.
//!
//! Unlike the other helpers it runs on the caller's tokio runtime: its users are async tests
//! whose handlers are async code, and the server ends with the test's runtime.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::net::{TcpListener, TcpStream};

/// Accepts on `listener` until the runtime ends, counting each connection and handling it with
/// `serve` on a task of its own. Returns the accepted-connection count.
pub fn serve_counting<F, Fut>(listener: TcpListener, serve: F) -> Arc<AtomicUsize>
where
    F: Fn(TcpStream) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = Arc::clone(&accepted);
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(serve(stream));
        }
    });
    accepted
}

/// Binds `127.0.0.1:0` and serves it with [`serve_counting`]; returns the address and the
/// accepted-connection count.
pub async fn bind_counting<F, Fut>(serve: F) -> (SocketAddr, Arc<AtomicUsize>)
where
    F: Fn(TcpStream) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    (addr, serve_counting(listener, serve))
}
