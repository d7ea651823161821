//! switchyard's balancer, retry and outlier layers around a plain hyper-util client, with no
//! proxy in between: the program sends requests itself and the layers spread them over a few
//! endpoints, retry a failed answer at another endpoint and eject the endpoint that keeps
//! failing.
//!
//! ```text
//! cargo run --example embed                                # three loopback backends, one answers 503
//! cargo run --example embed -- 127.0.0.1:8081 127.0.0.1:8082   # your own endpoints
//! ```
//!
//! `tests/proxy/embed.rs` builds this file and runs [`run`] against loopback backends.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use switchyard::config::{RetryBudget, RetryOn, RetryPolicy};
use switchyard::proxy::layers::{BalanceLayer, Endpoints, OutlierLayer, OutlierPolicy, RetryLayer};
use tower_layer::Layer;
use tower_service::Service;

/// What [`run`] saw.
#[derive(Debug, Default)]
pub struct Report {
    /// Answers with status 200, each with its body.
    pub ok: Vec<String>,
    /// Answers with any other status.
    pub failed: Vec<StatusCode>,
    /// The endpoints ejected at the end.
    pub ejected: Vec<SocketAddr>,
}

/// Sends `requests` GETs, one after another, through retry → balancer → outlier → a hyper-util
/// client over `addresses`.
pub async fn run(
    addresses: &[SocketAddr],
    requests: usize,
) -> Result<Report, Box<dyn std::error::Error>> {
    let endpoints = Endpoints::round_robin("embed", addresses);
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let retry = RetryLayer::new(RetryPolicy {
        attempts: 3,
        on: vec![
            RetryOn::ConnectFailure,
            RetryOn::Reset,
            RetryOn::GatewayError,
        ],
        statuses: Vec::new(),
        per_try_timeout: None,
        backoff: Duration::from_millis(5),
        // The proxy's own settings; the layer does not read them.
        buffer: 0,
        budget: RetryBudget {
            ratio: 0.2,
            min_per_sec: 10,
        },
    });
    let outlier = OutlierLayer::new(Arc::clone(&endpoints), OutlierPolicy::default());
    let balance = BalanceLayer::new(Arc::clone(&endpoints));
    // Outermost first, as in the proxy: retry, balancer, outlier, the client.
    let mut service = retry.layer(balance.layer(outlier.layer(client)));

    let mut report = Report::default();
    for _ in 0..requests {
        let request = Request::get("/").body(Full::new(Bytes::new()))?;
        std::future::poll_fn(|cx| service.poll_ready(cx)).await?;
        let response = service.call(request).await?;
        let status = response.status();
        let body = response.into_body().collect().await?.to_bytes();
        if status == StatusCode::OK {
            report.ok.push(String::from_utf8_lossy(&body).into_owned());
        } else {
            report.failed.push(status);
        }
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_millis();
    let now = u64::try_from(now)?;
    report.ejected = endpoints
        .states()
        .iter()
        .filter(|state| state.is_ejected(now))
        .map(|state| state.address())
        .collect();
    Ok(report)
}

/// A loopback backend answering every request with `status` and `body`, counting them in
/// `hits`. Serves until the runtime ends.
pub async fn backend(
    status: StatusCode,
    body: &'static str,
    hits: Arc<AtomicUsize>,
) -> std::io::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let address = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let hits = Arc::clone(&hits);
            let answer = service_fn(move |_: Request<Incoming>| {
                hits.fetch_add(1, Ordering::Relaxed);
                let mut response = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
                *response.status_mut() = status;
                async move { Ok::<_, std::convert::Infallible>(response) }
            });
            tokio::spawn(async move {
                let connection = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), answer);
                // A client that goes away mid-request is its own business.
                let _ = connection.await;
            });
        }
    });
    Ok(address)
}

#[allow(
    dead_code,
    reason = "tests/proxy/embed.rs includes this file for `run` and `backend`"
)]
#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut addresses: Vec<SocketAddr> = std::env::args()
        .skip(1)
        .map(|a| a.parse())
        .collect::<Result<_, _>>()?;
    if addresses.is_empty() {
        for (status, body) in [
            (StatusCode::OK, "one"),
            (StatusCode::SERVICE_UNAVAILABLE, "down"),
            (StatusCode::OK, "three"),
        ] {
            addresses.push(backend(status, body, Arc::default()).await?);
        }
    }
    let report = run(&addresses, 12).await?;
    println!("answered 200: {:?}", report.ok);
    println!("other statuses: {:?}", report.failed);
    println!("ejected: {:?}", report.ejected);
    Ok(())
}
