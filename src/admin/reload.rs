//! `POST /reload`: reload the config file now and answer with the outcome.
//!
//! 200 `{"version": N, "changed": bool, "restart_required": ["[mesh]", …]}` once the new
//! snapshot is live (or the file equals the running config: `changed` false, the version
//! unchanged); `restart_required` names the sections the file changes that only a restart
//! applies (empty when none); 400 `{"errors": ["FILE:LINE:COL:
//! message", …]}` when the file is refused and the old config serves on; 503 during shutdown.

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Method, Response, StatusCode};
use http_body_util::Full;
use serde_json::json;

use super::AdminState;
use crate::state::{Reloaded, Trigger};

/// Answers a request for `/reload` (any method: others than POST get 405).
pub async fn answer(state: &AdminState, method: &Method) -> Response<Full<Bytes>> {
    if method != Method::POST {
        let mut response = json(
            StatusCode::METHOD_NOT_ALLOWED,
            &json!({ "error": "use POST" }),
        );
        response
            .headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("POST"));
        return response;
    }
    match state.reload.reload(Trigger::Admin).await {
        Ok(outcome) => json(
            StatusCode::OK,
            &json!({
                "version": outcome.version(),
                "changed": matches!(outcome, Reloaded::Published { .. }),
                "restart_required": *state.reload.restart_required(),
            }),
        ),
        Err(error) if state.shared.is_draining() => json(
            StatusCode::SERVICE_UNAVAILABLE,
            &json!({ "errors": error.errors }),
        ),
        Err(error) => json(StatusCode::BAD_REQUEST, &json!({ "errors": error.errors })),
    }
}

fn json(status: StatusCode, value: &serde_json::Value) -> Response<Full<Bytes>> {
    let mut body = value.to_string();
    body.push('\n');
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}
