//! HTTP clients for tests: hyper-util's pooled client over HTTP/1.1 or
//! HTTP/2 prior knowledge, plus one-shot helpers.

use super::upstream::Body;
use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::{BodyExt, Empty, Full};
use hyper_util::client::legacy::{Client, connect::HttpConnector};
use hyper_util::rt::TokioExecutor;

/// A pooled test client.
pub type TestClient = Client<HttpConnector, Body>;

/// HTTP/1.1 keep-alive client.
pub fn h1() -> TestClient {
    Client::builder(TokioExecutor::new()).build_http()
}

/// HTTP/2 prior-knowledge client.
pub fn h2() -> TestClient {
    Client::builder(TokioExecutor::new()).http2_only(true).build_http()
}

/// An empty request body.
pub fn empty() -> Body {
    Empty::new().map_err(|e| match e {}).boxed()
}

/// A fixed request body.
pub fn full(b: impl Into<Bytes>) -> Body {
    Full::new(b.into()).map_err(|e| match e {}).boxed()
}

/// A whole response.
pub struct Reply {
    /// Status.
    pub status: StatusCode,
    /// Headers.
    pub headers: HeaderMap,
    /// Body.
    pub body: Bytes,
    /// Trailers, if any came.
    pub trailers: Option<HeaderMap>,
}

impl Reply {
    /// The body as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|_| panic!("not JSON: {:?}", self.body))
    }

    /// A header as text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// Sends a request and reads the whole response.
pub async fn send(client: &TestClient, req: Request<Body>) -> Result<Reply, String> {
    let resp = client.request(req).await.map_err(|e| format!("request failed: {e:?}"))?;
    let (parts, body) = resp.into_parts();
    let collected = body.collect().await.map_err(|e| format!("body failed: {e:?}"))?;
    let trailers = collected.trailers().cloned();
    Ok(Reply { status: parts.status, headers: parts.headers, body: collected.to_bytes(), trailers })
}

/// GET `url` and read the whole response; panics on transport errors.
pub async fn get(client: &TestClient, url: &str) -> Reply {
    send(client, request(Method::GET, url, empty())).await.expect("GET")
}

/// A request with no extra headers.
pub fn request(method: Method, url: &str, body: Body) -> Request<Body> {
    Request::builder().method(method).uri(url).body(body).expect("request")
}

/// Sends `req` over a new HTTP/2 (prior knowledge) connection to `addr`,
/// whatever authority its URI names (the `:authority` a client chose).
pub async fn h2_to(addr: std::net::SocketAddr, req: Request<Body>) -> Reply {
    let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), hyper_util::rt::TokioIo::new(stream))
            .await
            .expect("h2 handshake");
    tokio::spawn(conn);
    let resp = sender.send_request(req).await.expect("h2 request");
    let (parts, body) = resp.into_parts();
    let collected = body.collect().await.expect("h2 body");
    let trailers = collected.trailers().cloned();
    Reply { status: parts.status, headers: parts.headers, body: collected.to_bytes(), trailers }
}
