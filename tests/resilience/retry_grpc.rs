//! gRPC calls are retried only on UNAVAILABLE in a trailers-only response (issue 8).

use crate::support::backend::{Action, Backend, Behavior};
use crate::support::http_client::{HttpClient, HttpResponse};
use crate::support::launcher::{Proxy, TestProxy};
use bytes::Bytes;
use http::Request;
use http_body_util::Full;

fn grpc_answer(grpc_status: &str) -> Action {
    Action::Respond {
        status: 200,
        headers: vec![
            ("content-type".into(), "application/grpc".into()),
            ("grpc-status".into(), grpc_status.into()),
        ],
        body: Bytes::new(),
    }
}

async fn call(proxy: &TestProxy, path: &str) -> HttpResponse {
    let req = Request::post(proxy.url("public", path))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(Full::new(Bytes::from_static(b"\0\0\0\0\0")))
        .expect("request");
    HttpClient::h2c().send(req).await.expect("reply")
}

#[tokio::test]
async fn only_unavailable_is_retried() {
    let flaky = Backend::start(Behavior::script(|req, _| match req.uri.path() {
        "/svc/Unavailable" => grpc_answer("14"),
        "/svc/Internal" => grpc_answer("13"),
        _ => Action::status(503),
    }));
    let good = Backend::start(Behavior::script(|_, _| grpc_answer("0")));
    let proxy = Proxy::start_toml(&format!(
        "[runtime]\nworkers = 1\ndrain_timeout = \"1s\"\n\n\
         [[listeners]]\nname = \"public\"\nlisten = \"127.0.0.1:0\"\n\n\
         [[routes]]\nlistener = \"public\"\ncluster = \"app\"\ndebug_headers = true\n\
         retry = {{ attempts = 3, backoff = \"1ms\" }}\n\n\
         [clusters.app]\nprotocol = \"h2\"\nbalance = \"round_robin\"\nendpoints = [\"{}\", \"{}\"]\n",
        flaky.addr(),
        good.addr()
    ));
    let flaky_addr = flaky.addr().to_string();
    let mut hits = [0; 3];
    for (i, (path, status_there)) in [
        ("/svc/Unavailable", "0"),
        ("/svc/Internal", "13"),
        ("/svc/Http503", ""),
    ]
    .into_iter()
    .enumerate()
    {
        for _ in 0..4 {
            let reply = call(&proxy, path).await;
            let attempts = reply.header("x-switchyard-attempts");
            if attempts == Some("2") {
                // Only UNAVAILABLE may have moved on, and then the good endpoint answered.
                assert_eq!(i, 0, "{path} was retried");
                assert_eq!(reply.header("grpc-status"), Some("0"));
                hits[i] += 1;
            } else if reply.header("x-switchyard-endpoint") == Some(flaky_addr.as_str()) {
                assert_eq!(attempts, Some("1"));
                if status_there.is_empty() {
                    assert_eq!(reply.status, 503, "{path}: not retried, relayed");
                } else {
                    assert_eq!(reply.header("grpc-status"), Some(status_there), "{path}");
                }
                hits[i] += 1;
            }
        }
    }
    assert!(
        hits.iter().all(|&n| n >= 1),
        "each call kind met the flaky endpoint: {hits:?}"
    );
    proxy.shutdown();
}
