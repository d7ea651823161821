//! `examples/embed`: switchyard's retry, balancer and outlier layers around a hyper-util client,
//! run against loopback backends of which one answers 503. Every request must still get a 200
//! (retried at another endpoint), and the failing endpoint must be ejected after exactly the
//! outlier policy's consecutive failures and see no request after that.

#[allow(dead_code, reason = "the example's `main` is not called here")]
#[path = "../../examples/embed/main.rs"]
mod example;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use http::StatusCode;
use switchyard::proxy::layers::OutlierPolicy;

#[tokio::test]
async fn layers_retry_around_and_eject_a_failing_endpoint() {
    let good_hits = [Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0))];
    let bad_hits = Arc::new(AtomicUsize::new(0));
    let one = example::backend(StatusCode::OK, "one", Arc::clone(&good_hits[0]))
        .await
        .expect("backend one");
    let bad = example::backend(
        StatusCode::SERVICE_UNAVAILABLE,
        "down",
        Arc::clone(&bad_hits),
    )
    .await
    .expect("failing backend");
    let three = example::backend(StatusCode::OK, "three", Arc::clone(&good_hits[1]))
        .await
        .expect("backend three");

    let requests = 30;
    let report = example::run(&[one, bad, three], requests)
        .await
        .expect("the embedded client runs");

    assert_eq!(report.failed, Vec::<StatusCode>::new(), "every 503 retried");
    assert_eq!(report.ok.len(), requests);
    assert!(report.ok.iter().all(|b| b == "one" || b == "three"));
    assert_eq!(report.ejected, vec![bad], "the failing endpoint is ejected");
    let consecutive = OutlierPolicy::default().consecutive as usize;
    assert_eq!(
        bad_hits.load(Ordering::Relaxed),
        consecutive,
        "no request reaches the failing endpoint once it is ejected"
    );
    // Both healthy endpoints share the load.
    for hits in &good_hits {
        assert!(hits.load(Ordering::Relaxed) >= requests / 4);
    }
}

/// A loopback backend that accepts each connection, reads a little and closes it without
/// answering (the client sees the connection end before a response), counting connections.
async fn resetting_backend(hits: Arc<AtomicUsize>) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let address = listener.local_addr().expect("local address");
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            hits.fetch_add(1, Ordering::Relaxed);
            let mut buf = [0u8; 1024];
            let _ = tokio::io::AsyncReadExt::read(&mut stream, &mut buf).await;
            drop(stream);
        }
    });
    address
}

#[tokio::test]
async fn layers_retry_around_and_eject_a_resetting_endpoint() {
    let reset_hits = Arc::new(AtomicUsize::new(0));
    let one = example::backend(StatusCode::OK, "one", Arc::default())
        .await
        .expect("backend one");
    let reset = resetting_backend(Arc::clone(&reset_hits)).await;
    let three = example::backend(StatusCode::OK, "three", Arc::default())
        .await
        .expect("backend three");

    let requests = 30;
    let report = example::run(&[one, reset, three], requests)
        .await
        .expect("every reset is retried at another endpoint");

    assert_eq!(report.failed, Vec::<StatusCode>::new());
    assert_eq!(report.ok.len(), requests);
    assert_eq!(
        report.ejected,
        vec![reset],
        "the resetting endpoint is ejected"
    );
    assert_eq!(
        reset_hits.load(Ordering::Relaxed),
        OutlierPolicy::default().consecutive as usize,
        "no connection reaches the resetting endpoint once it is ejected"
    );
}
