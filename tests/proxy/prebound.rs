//! Starting with sockets the caller bound itself (`runtime::start_prebound`): the proxy serves
//! listeners and the admin API on exactly the handed-in sockets, whatever port the config names.
//!
//! Self-contained on purpose (a plain-thread backend and client over 127.0.0.1), so it needs
//! nothing from `tests/support`.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::time::Duration;

use switchyard::runtime::{start_prebound, Prebound, StartError, Trigger};

const BACKEND_BODY: &str = "served by the prebound test backend";

/// A backend on 127.0.0.1 answering every request with [`BACKEND_BODY`] and closing.
fn backend() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind backend");
    let addr = listener.local_addr().expect("backend addr");
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            std::thread::spawn(move || {
                let _ = read_head(&mut stream);
                let response = format!(
                    "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{BACKEND_BODY}",
                    BACKEND_BODY.len()
                );
                let _ = stream.write_all(response.as_bytes());
            });
        }
    });
    addr
}

/// Reads until the end of a request head (the test's requests have no body).
fn read_head(stream: &mut TcpStream) -> std::io::Result<Vec<u8>> {
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if stream.read(&mut byte)? == 0 {
            break;
        }
        head.push(byte[0]);
    }
    Ok(head)
}

/// One `GET path` to `addr` with `Connection: close`; the whole response as text.
fn get(addr: SocketAddr, path: &str) -> String {
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("read timeout");
    let request = format!("GET {path} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).expect("send request");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("read response");
    response
}

fn config(dir: &Path, backend: SocketAddr) -> switchyard::config::Config {
    // Port 0 in the config: were the handed-in sockets ignored, the proxy would listen on
    // ports of its own choosing, and the requests below to the handed-in ones would fail.
    let text = format!(
        r#"
[runtime]
workers = 2

[admin]
listen = "127.0.0.1:0"

[[listeners]]
name = "public"
listen = "127.0.0.1:0"

[[routes]]
listener = "public"
cluster = "app"

[clusters.app]
endpoints = ["{backend}"]
"#
    );
    let path = dir.join("switchyard.toml");
    std::fs::write(&path, &text).expect("write config");
    switchyard::config::parse(&text, &path).expect("valid config")
}

#[test]
fn the_proxy_serves_on_the_sockets_it_is_handed() {
    let dir = tempfile::tempdir().expect("temp dir");
    let backend = backend();
    let public = TcpListener::bind("127.0.0.1:0").expect("bind public");
    let admin = TcpListener::bind("127.0.0.1:0").expect("bind admin");
    let public_addr = public.local_addr().expect("public addr");
    let admin_addr = admin.local_addr().expect("admin addr");

    let handle = start_prebound(
        config(dir.path(), backend),
        Prebound::new().listener("public", public).admin(admin),
    )
    .expect("start");
    assert_eq!(handle.listener_addr("public"), Some(public_addr));
    assert_eq!(handle.admin_addr(), admin_addr);

    // Several connections, so both workers (each accepting from the same handed-in socket)
    // get their chance to serve one.
    for _ in 0..4 {
        let response = get(public_addr, "/");
        assert!(response.starts_with("HTTP/1.1 200"), "{response}");
        assert!(response.ends_with(BACKEND_BODY), "{response}");
    }
    let health = get(admin_addr, "/healthz");
    assert!(health.starts_with("HTTP/1.1 200"), "{health}");

    // A reload that keeps the listener's configured address keeps the handed-in socket.
    let path = dir.path().join("switchyard.toml");
    let mut text = std::fs::read_to_string(&path).expect("read config");
    text.push_str("# edited\n");
    std::fs::write(&path, text).expect("write config");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    // `Unchanged` when the folder watcher reloaded the edit first; either way it is live.
    runtime
        .block_on(handle.reloader().reload(Trigger::Admin))
        .expect("reload");
    assert_eq!(handle.shared().snapshot().version(), 2);
    assert_eq!(handle.listener_addr("public"), Some(public_addr));
    let response = get(public_addr, "/");
    assert!(response.ends_with(BACKEND_BODY), "{response}");
    handle.shutdown();
}

#[test]
fn a_socket_for_a_listener_the_config_lacks_is_refused() {
    let dir = tempfile::tempdir().expect("temp dir");
    let stray = TcpListener::bind("127.0.0.1:0").expect("bind stray");
    let error = start_prebound(
        config(dir.path(), backend()),
        Prebound::new().listener("private", stray),
    )
    .expect_err("start must fail");
    assert!(
        matches!(&error, StartError::UnknownListener(name) if name == "private"),
        "{error}"
    );
}
