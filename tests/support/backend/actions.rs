//! Carrying out an [`Action`]: building the response, or stalling, or cutting the connection.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::{Body, Frame};
use tokio::sync::{mpsc, Notify};

use super::{Action, RecordedRequest, DIE_MID_BODY_LEN, DIE_MID_BODY_SENT};

/// Every response body the backend sends: complete, streamed, or failing part-way.
pub(super) type RespBody = BoxBody<Bytes, io::Error>;

/// Runs `action`; `kill` asks the connection task to reset the socket.
pub(super) async fn perform(
    mut action: Action,
    rec: &RecordedRequest,
    kill: &Notify,
) -> Response<RespBody> {
    loop {
        match action {
            Action::Delay(d, next) => {
                tokio::time::sleep(d).await;
                action = *next;
            }
            Action::Respond {
                status,
                headers,
                body,
            } => {
                let mut resp = Response::new(full(body));
                *resp.status_mut() = StatusCode::from_u16(status).expect("valid status");
                for (k, v) in headers {
                    let name: http::HeaderName = k.parse().expect("header name");
                    resp.headers_mut()
                        .append(name, v.parse().expect("header value"));
                }
                return resp;
            }
            Action::Echo => return echo(rec),
            Action::Hang => return std::future::pending().await,
            Action::Reset => {
                kill.notify_one();
                // The connection task drops this future when it acts on the notification.
                return std::future::pending().await;
            }
            Action::SlowBody {
                chunk,
                interval,
                chunks,
            } => {
                let (tx, body) = ChanBody::new();
                tokio::spawn(async move {
                    for i in 0..chunks {
                        if i > 0 {
                            tokio::time::sleep(interval).await;
                        }
                        if tx.send(Ok(chunk.clone())).await.is_err() {
                            return;
                        }
                    }
                });
                return Response::new(body.boxed());
            }
            Action::DieMidBody => {
                let (tx, body) = ChanBody::new();
                tokio::spawn(async move {
                    let _ = tx.send(Ok(Bytes::from_static(DIE_MID_BODY_SENT))).await;
                    // Give hyper a moment to flush the partial body before the abort, so the
                    // client sees bytes and then the cut rather than only the cut.
                    tokio::time::sleep(Duration::from_millis(30)).await;
                    let _ = tx.send(Err(io::Error::other("die mid body"))).await;
                });
                let mut resp = Response::new(body.boxed());
                resp.headers_mut()
                    .insert(http::header::CONTENT_LENGTH, DIE_MID_BODY_LEN.into());
                return resp;
            }
        }
    }
}

fn echo(rec: &RecordedRequest) -> Response<RespBody> {
    let mut resp = Response::new(full(rec.body.clone()));
    let host = rec
        .headers
        .get(http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_string)
        .or_else(|| rec.uri.authority().map(ToString::to_string))
        .unwrap_or_default();
    let info = [
        ("x-echo-method", rec.method.to_string()),
        ("x-echo-uri", rec.uri.to_string()),
        ("x-echo-version", format!("{:?}", rec.version)),
        ("x-echo-host", host),
    ];
    for (k, v) in info {
        if let Ok(v) = v.parse() {
            resp.headers_mut().insert(k, v);
        }
    }
    resp
}

fn full(b: Bytes) -> RespBody {
    Full::new(b).map_err(|never| match never {}).boxed()
}

/// A response body fed from a channel, so bodies can be slow or fail part-way.
struct ChanBody {
    rx: mpsc::Receiver<Result<Bytes, io::Error>>,
}

impl ChanBody {
    fn new() -> (mpsc::Sender<Result<Bytes, io::Error>>, Self) {
        let (tx, rx) = mpsc::channel(1);
        (tx, Self { rx })
    }
}

impl Body for ChanBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        self.rx
            .poll_recv(cx)
            .map(|item| item.map(|r| r.map(Frame::data)))
    }
}
