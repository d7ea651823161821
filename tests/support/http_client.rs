//! A small HTTP client for async tests (hyper-util's legacy client): HTTP/1.1, or h2c with prior
//! knowledge. Every call has an overall deadline, so a broken proxy fails a test instead of
//! hanging it.

use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Method, Request, Response, StatusCode, Version};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::{Body, Incoming};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use super::DEADLINE;

/// Any failure: connect, protocol, body cut short, or the deadline.
pub type ClientError = Box<dyn std::error::Error + Send + Sync>;

/// The request body type the client sends.
pub type ReqBody = BoxBody<Bytes, ClientError>;

/// A complete response, body read to the end.
#[derive(Debug, Clone)]
pub struct HttpResponse {
    pub status: StatusCode,
    pub version: Version,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl HttpResponse {
    /// The body as (lossy) UTF-8.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// A header's value, if present and visible ASCII.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// A client with its own connection pool: calls on one `HttpClient` reuse connections.
#[derive(Clone)]
pub struct HttpClient {
    inner: Client<HttpConnector, ReqBody>,
    timeout: Duration,
}

impl HttpClient {
    /// HTTP/1.1 with keep-alive.
    pub fn http1() -> Self {
        Self::build(false)
    }

    /// HTTP/2 over cleartext with prior knowledge (no upgrade dance).
    pub fn h2c() -> Self {
        Self::build(true)
    }

    fn build(h2: bool) -> Self {
        let inner = Client::builder(TokioExecutor::new())
            .http2_only(h2)
            .build_http();
        Self {
            inner,
            timeout: DEADLINE,
        }
    }

    /// Overrides the overall per-call deadline (default [`DEADLINE`]).
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// GET with an empty body.
    pub async fn get(&self, url: &str) -> Result<HttpResponse, ClientError> {
        self.send(request(Method::GET, url, Bytes::new())?).await
    }

    /// POST with a complete body.
    pub async fn post(
        &self,
        url: &str,
        body: impl Into<Bytes>,
    ) -> Result<HttpResponse, ClientError> {
        self.send(request(Method::POST, url, body.into())?).await
    }

    /// Sends any request (custom method, headers, streaming body) and reads the whole response.
    pub async fn send<B>(&self, req: Request<B>) -> Result<HttpResponse, ClientError>
    where
        B: Body<Data = Bytes> + Send + Sync + 'static,
        B::Error: Into<ClientError>,
    {
        let call = async {
            let resp = self.inner.request(req.map(box_body)).await?;
            let (parts, body) = resp.into_parts();
            let body = body.collect().await?.to_bytes();
            Ok::<_, ClientError>(HttpResponse {
                status: parts.status,
                version: parts.version,
                headers: parts.headers,
                body,
            })
        };
        tokio::time::timeout(self.timeout, call)
            .await
            .map_err(|_| ClientError::from("http_client: deadline passed"))?
    }

    /// Sends a request and returns as soon as the response head arrives, for tests that read
    /// a slow or broken body themselves. The deadline covers only the head.
    pub async fn send_streaming<B>(
        &self,
        req: Request<B>,
    ) -> Result<Response<Incoming>, ClientError>
    where
        B: Body<Data = Bytes> + Send + Sync + 'static,
        B::Error: Into<ClientError>,
    {
        let call = self.inner.request(req.map(box_body));
        match tokio::time::timeout(self.timeout, call).await {
            Ok(resp) => Ok(resp?),
            Err(_) => Err("http_client: deadline passed".into()),
        }
    }
}

fn box_body<B>(body: B) -> ReqBody
where
    B: Body<Data = Bytes> + Send + Sync + 'static,
    B::Error: Into<ClientError>,
{
    body.map_err(Into::into).boxed()
}

/// A request with a complete body; errors on an unparsable URL.
pub fn request(
    method: Method,
    url: &str,
    body: Bytes,
) -> Result<Request<Full<Bytes>>, ClientError> {
    Ok(Request::builder()
        .method(method)
        .uri(url)
        .body(Full::new(body))?)
}

/// GET over a fresh HTTP/1.1 connection.
pub async fn get(url: &str) -> Result<HttpResponse, ClientError> {
    HttpClient::http1().get(url).await
}

/// POST over a fresh HTTP/1.1 connection.
pub async fn post(url: &str, body: impl Into<Bytes>) -> Result<HttpResponse, ClientError> {
    HttpClient::http1().post(url, body).await
}

/// GET over a fresh h2c (prior knowledge) connection.
pub async fn get_h2(url: &str) -> Result<HttpResponse, ClientError> {
    HttpClient::h2c().get(url).await
}

/// POST over a fresh h2c (prior knowledge) connection.
pub async fn post_h2(url: &str, body: impl Into<Bytes>) -> Result<HttpResponse, ClientError> {
    HttpClient::h2c().post(url, body).await
}
