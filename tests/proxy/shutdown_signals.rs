//! Graceful shutdown of `switchyard run` on SIGTERM, as an orchestrator drives it: readiness
//! drops at once, the proxy keeps serving for `shutdown_delay`, then refuses new connections,
//! lets requests in flight finish, and exits 0. A second signal exits at once.

use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant};

use crate::support::backend::{Action, Backend, Behavior};
use crate::support::launcher::addr_in;
use crate::support::launcher::BinProcess;
use crate::support::raw_client::RawConn;
use crate::support::{http_client, wait_until, wait_until_async, DEADLINE};
use http::StatusCode;

/// How long `/slow` takes at the backend: longer than the shutdown delay, so the request is
/// still in flight when the listeners close.
const SLOW: Duration = Duration::from_millis(3500);

fn backend() -> Backend {
    Backend::start_named(
        "app",
        Behavior::script(|req, _| {
            if req.uri.path() == "/slow" {
                Action::Delay(SLOW, Box::new(Action::respond(200, "finally")))
            } else {
                Action::respond(200, "fast")
            }
        }),
    )
}

fn write_config(dir: &Path, backend: SocketAddr, delay: &str) -> String {
    let path = dir.join("switchyard.toml");
    std::fs::write(
        &path,
        format!(
            r#"
[runtime]
workers = 1
shutdown_delay = "{delay}"
drain_timeout = "10s"

[admin]
listen = "127.0.0.1:0"

[[listeners]]
name = "public"
listen = "127.0.0.1:0"

[[routes]]
cluster = "app"
timeout = "30s"

[clusters.app]
endpoints = ["{backend}"]
"#
        ),
    )
    .expect("write config");
    path.to_string_lossy().into_owned()
}

/// Starts `switchyard run` and returns it with the proxy's and the admin API's addresses.
fn spawn(config: &str) -> (BinProcess, SocketAddr, SocketAddr) {
    let proxy = BinProcess::spawn(&["run", "-c", config]);
    // The first such line is the proxy listener's; the admin API's comes after.
    let line = proxy.expect_line("listening on http://");
    let addr = addr_in(&line);
    let admin = addr_in(&proxy.expect_line("admin API listening on http://"));
    (proxy, addr, admin)
}

async fn status(url: &str) -> Option<StatusCode> {
    http_client::get(url).await.ok().map(|r| r.status)
}

#[tokio::test]
async fn sigterm_drains_in_flight_requests_and_exits_zero() {
    let backend = backend();
    let dir = tempfile::tempdir().expect("tempdir");
    let config = write_config(dir.path(), backend.addr(), "1500ms");
    let (mut proxy, addr, admin) = spawn(&config);
    assert_eq!(
        status(&format!("http://{admin}/readyz")).await,
        Some(StatusCode::OK)
    );

    let slow = format!("http://{addr}/slow");
    let in_flight = tokio::spawn(async move { http_client::get(&slow).await });
    assert!(
        wait_until_async(DEADLINE, || backend.request_count() == 1).await,
        "the slow request never reached the backend"
    );
    let signalled = Instant::now();
    proxy.terminate();

    // Readiness drops at once...
    let mut ready = None;
    let readyz = format!("http://{admin}/readyz");
    for _ in 0..200 {
        ready = status(&readyz).await;
        if ready == Some(StatusCode::SERVICE_UNAVAILABLE) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(ready, Some(StatusCode::SERVICE_UNAVAILABLE));
    // ...while the proxy keeps serving new connections during the delay.
    let during = http_client::get(&format!("http://{addr}/fast"))
        .await
        .expect("a request during shutdown_delay");
    assert_eq!(during.status, StatusCode::OK);
    assert!(
        signalled.elapsed() < Duration::from_millis(1500),
        "too slow to observe the delay window"
    );

    // After the delay, new connections are refused.
    assert!(
        wait_until(DEADLINE, || TcpStream::connect(addr).is_err()),
        "still accepting after shutdown_delay"
    );
    assert!(signalled.elapsed() >= Duration::from_millis(1500));

    // The request in flight completes, and the process exits 0 once it has.
    let done = in_flight
        .await
        .expect("join")
        .expect("the in-flight request completes");
    assert_eq!(done.status, StatusCode::OK);
    assert_eq!(done.text(), "finally");
    let exit = proxy.wait_exit(DEADLINE).expect("exits after the drain");
    assert!(exit.success(), "{exit:?}");
}

#[test]
fn http1_responses_during_the_drain_close_the_connection() {
    let backend = backend();
    let dir = tempfile::tempdir().expect("tempdir");
    let config = write_config(dir.path(), backend.addr(), "0s");
    let (mut proxy, addr, _) = spawn(&config);

    let mut conn = RawConn::connect(addr);
    conn.send(b"GET /slow HTTP/1.1\r\nHost: app\r\n\r\n")
        .expect("send");
    assert!(wait_until(DEADLINE, || backend.request_count() == 1));
    proxy.terminate();
    let resp = conn.read_response();
    assert_eq!(resp.status, 200);
    assert_eq!(resp.body_text(), "finally");
    assert_eq!(resp.header("connection"), Some("close"), "{resp:?}");
    assert!(resp.closed || conn.wait_closed(DEADLINE));
    let exit = proxy.wait_exit(DEADLINE).expect("exits after the drain");
    assert!(exit.success(), "{exit:?}");
}

#[tokio::test]
async fn http2_connections_get_goaway_and_finish_their_streams() {
    let backend = backend();
    let dir = tempfile::tempdir().expect("tempdir");
    let config = write_config(dir.path(), backend.addr(), "0s");
    let (mut proxy, addr, _) = spawn(&config);

    let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let (mut client, connection) = h2::client::handshake(tcp).await.expect("h2 handshake");
    let connection = tokio::spawn(connection);
    let request = |path: &str| {
        http::Request::get(format!("http://{addr}{path}"))
            .body(())
            .expect("request")
    };
    let (response, _) = client
        .send_request(request("/slow"), true)
        .expect("open a stream");
    assert!(wait_until_async(DEADLINE, || backend.request_count() == 1).await);
    proxy.terminate();

    let response = tokio::time::timeout(DEADLINE, response)
        .await
        .expect("response in time")
        .expect("the stream in flight completes");
    assert_eq!(response.status(), StatusCode::OK);
    let mut body = response.into_body();
    let mut text = Vec::new();
    while let Some(chunk) = tokio::time::timeout(DEADLINE, body.data())
        .await
        .expect("body in time")
    {
        text.extend_from_slice(&chunk.expect("body chunk"));
    }
    assert_eq!(text, b"finally");
    // GOAWAY then close: the connection ends cleanly (an abrupt close would be an error)...
    let ended = tokio::time::timeout(DEADLINE, connection)
        .await
        .expect("the connection ends after the drain")
        .expect("join");
    assert!(ended.is_ok(), "{ended:?}");
    // ...and takes no new stream.
    let refused = match client.send_request(request("/fast"), true) {
        Err(_) => true,
        Ok((response, _)) => response.await.is_err(),
    };
    assert!(refused, "a new stream was accepted after GOAWAY");
    assert_eq!(backend.request_count(), 1);
    let exit = proxy.wait_exit(DEADLINE).expect("exits after the drain");
    assert!(exit.success(), "{exit:?}");
}

#[tokio::test]
async fn a_second_signal_exits_at_once() {
    let backend = backend();
    let dir = tempfile::tempdir().expect("tempdir");
    // A delay far longer than the test may take: only the second signal can end it.
    let config = write_config(dir.path(), backend.addr(), "10m");
    let (mut proxy, _, admin) = spawn(&config);
    proxy.terminate();
    let readyz = format!("http://{admin}/readyz");
    let mut ready = None;
    for _ in 0..200 {
        ready = status(&readyz).await;
        if ready == Some(StatusCode::SERVICE_UNAVAILABLE) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(ready, Some(StatusCode::SERVICE_UNAVAILABLE));
    proxy.terminate();
    let exit = proxy
        .wait_exit(DEADLINE)
        .expect("a second signal ends the process");
    assert_eq!(exit.code(), Some(1), "{exit:?}");
}
