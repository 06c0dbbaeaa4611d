//! A real HTTP/1.1 + HTTP/2 (h2c) upstream built on hyper, with behaviours
//! chosen by path:
//!
//! - `/bytes/N` (`?chunked` for no Content-Length): N bytes of [`pattern`]
//! - `POST /sha256`: length, sha256 and trailers of the request body
//!   (counted in [`Upstream::bodies`] once read to its end)
//! - `/status/CODE`, `/delay/MS`
//! - `/scripted`: the next status from [`Upstream::script`], 200 when empty
//! - `/drop`: closes the connection without answering
//! - `/truncate/N`: promises 2N bytes, sends N, then dies
//! - `POST /reflect`: streams the request body back (and its trailers as
//!   response trailers); `x-request-length` tells the framing it came with
//! - `/trailers`: `hello` then trailers `grpc-status: 0`, `x-upstream-trailer: yes`
//! - `/authz/...`: an authorization service: `authorization: Bearer good`
//!   → 200 with `x-user: alice`; `Bearer slow` → the same after 2 s;
//!   anything else → 403 `denied by authz` with `www-authenticate`
//! - anything else: JSON echo of method, path, version and headers

use bytes::Bytes;
use futures_util::StreamExt;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, StreamBody, combinators::BoxBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use sha2::{Digest, Sha256};
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpListener;

type Error = Box<dyn std::error::Error + Send + Sync>;
/// Response body type of the test upstream.
pub type Body = BoxBody<Bytes, Error>;

/// A running test upstream; stops when dropped.
pub struct Upstream {
    /// Where it listens.
    pub addr: SocketAddr,
    state: Arc<State>,
    task: tokio::task::JoinHandle<()>,
}

struct State {
    name: String,
    hits: AtomicUsize,
    bodies: AtomicUsize,
    connections: AtomicUsize,
    open: AtomicUsize,
    peak: AtomicUsize,
    delay_ms: std::sync::atomic::AtomicU64,
    script: Mutex<VecDeque<u16>>,
}

impl Upstream {
    /// Starts an upstream named `name` (reported in echo bodies and `x-upstream`).
    pub async fn start(name: &str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind upstream");
        Self::serve(name, listener)
    }

    /// Starts an upstream on a given, already bound listener.
    pub fn serve(name: &str, listener: TcpListener) -> Self {
        Self::serve_with(name, listener, None)
    }

    /// Starts an upstream that speaks TLS with `config` (HTTP/2 if ALPN says so).
    pub async fn start_tls(name: &str, config: Arc<rustls::ServerConfig>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind upstream");
        Self::serve_with(name, listener, Some(tokio_rustls::TlsAcceptor::from(config)))
    }

    fn serve_with(name: &str, listener: TcpListener, tls: Option<tokio_rustls::TlsAcceptor>) -> Self {
        let addr = listener.local_addr().expect("addr");
        let state = Arc::new(State {
            name: name.into(),
            hits: AtomicUsize::new(0),
            bodies: AtomicUsize::new(0),
            open: AtomicUsize::new(0),
            peak: AtomicUsize::new(0),
            connections: AtomicUsize::new(0),
            delay_ms: Default::default(),
            script: Mutex::new(VecDeque::new()),
        });
        let s = state.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { return };
                s.connections.fetch_add(1, Ordering::SeqCst);
                let open = s.open.fetch_add(1, Ordering::SeqCst) + 1;
                s.peak.fetch_max(open, Ordering::SeqCst);
                let (s, tls) = (s.clone(), tls.clone());
                tokio::spawn(async move {
                    let svc = {
                        let s = s.clone();
                        service_fn(move |req| answer(s.clone(), req))
                    };
                    let builder = auto::Builder::new(TokioExecutor::new());
                    match tls {
                        None => {
                            let _ = builder.serve_connection_with_upgrades(TokioIo::new(stream), svc).await;
                        }
                        Some(acceptor) => {
                            if let Ok(stream) = acceptor.accept(stream).await {
                                let _ = builder.serve_connection_with_upgrades(TokioIo::new(stream), svc).await;
                            }
                        }
                    }
                    s.open.fetch_sub(1, Ordering::SeqCst);
                });
            }
        });
        Upstream { addr, state, task }
    }

    /// Requests received so far.
    pub fn hits(&self) -> usize {
        self.state.hits.load(Ordering::SeqCst)
    }

    /// `/sha256` request bodies received whole.
    pub fn bodies(&self) -> usize {
        self.state.bodies.load(Ordering::SeqCst)
    }

    /// The most connections that were open at once.
    pub fn peak_connections(&self) -> usize {
        self.state.peak.load(Ordering::SeqCst)
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> usize {
        self.state.connections.load(Ordering::SeqCst)
    }

    /// Delays every answer by `d` from now on.
    pub fn set_delay(&self, d: Duration) {
        self.state.delay_ms.store(d.as_millis() as u64, Ordering::SeqCst);
    }

    /// Statuses for the next `/scripted` requests.
    pub fn script(&self, statuses: &[u16]) {
        self.state.script.lock().expect("lock").extend(statuses);
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Byte `i` of every test body: a pattern that catches reordering and loss.
pub fn pattern(offset: u64, len: usize) -> Bytes {
    (0..len as u64).map(|i| ((offset + i) % 251) as u8).collect::<Vec<u8>>().into()
}

/// sha256 of `pattern(0, n)`, as hex.
pub fn pattern_sha256(n: u64) -> String {
    let mut h = Sha256::new();
    let mut off = 0;
    while off < n {
        let len = (n - off).min(1 << 20) as usize;
        h.update(pattern(off, len));
        off += len as u64;
    }
    hex(&h.finalize())
}

/// Lower-case hex.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A body streaming `pattern(0, n)` in chunks of `chunk` bytes.
pub fn pattern_body(n: u64, chunk: usize) -> Body {
    let stream = futures_util::stream::unfold(0u64, move |off| async move {
        (off < n).then(|| {
            let len = (n - off).min(chunk as u64) as usize;
            (Ok::<_, Error>(Frame::data(pattern(off, len))), off + len as u64)
        })
    });
    BodyExt::boxed(StreamBody::new(stream))
}

fn full(status: u16, body: impl Into<Bytes>) -> Response<Body> {
    let mut r = Response::new(http_body_util::Full::new(body.into()).map_err(|e| match e {}).boxed());
    *r.status_mut() = StatusCode::from_u16(status).expect("status");
    r
}

async fn answer(state: Arc<State>, req: Request<Incoming>) -> Result<Response<Body>, Error> {
    state.hits.fetch_add(1, Ordering::SeqCst);
    let delay = state.delay_ms.load(Ordering::SeqCst);
    if delay > 0 {
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }
    let path = req.uri().path().to_string();
    let mut parts = path.trim_start_matches('/').splitn(2, '/');
    let (head, arg) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let mut resp = match head {
        "bytes" => {
            let n: u64 = arg.parse()?;
            let mut r = Response::new(pattern_body(n, 16 * 1024 + 3));
            if req.uri().query() != Some("chunked") {
                r.headers_mut().insert(http::header::CONTENT_LENGTH, n.into());
            }
            r
        }
        "sha256" => {
            let version = format!("{:?}", req.version());
            let framing = if req.headers().contains_key(http::header::CONTENT_LENGTH) { "length" } else { "stream" };
            let mut body = req.into_body();
            let (mut h, mut len, mut trailers) = (Sha256::new(), 0u64, serde_json::Map::new());
            while let Some(frame) = body.frame().await {
                match frame?.into_data() {
                    Ok(data) => {
                        len += data.len() as u64;
                        h.update(&data);
                    }
                    Err(frame) => {
                        for (k, v) in frame.into_trailers().iter().flatten() {
                            trailers.insert(k.to_string(), String::from_utf8_lossy(v.as_bytes()).into());
                        }
                    }
                }
            }
            state.bodies.fetch_add(1, Ordering::SeqCst);
            let json = serde_json::json!({ "len": len, "sha256": hex(&h.finalize()), "version": version, "framing": framing, "trailers": trailers });
            full(200, json.to_string())
        }
        "status" => full(arg.parse()?, format!("status {arg}\n")),
        "delay" => {
            tokio::time::sleep(Duration::from_millis(arg.parse()?)).await;
            full(200, "slow hello\n")
        }
        "scripted" => {
            let status = state.script.lock().expect("lock").pop_front().unwrap_or(200);
            full(status, format!("scripted {status}\n"))
        }
        "drop" => return Err("dropping the connection on purpose".into()),
        "reflect" => {
            let length = req.headers().get(http::header::CONTENT_LENGTH).cloned();
            let mut r = Response::new(BodyExt::boxed(req.into_body().map_err(Error::from)));
            r.headers_mut()
                .insert("x-request-length", length.unwrap_or_else(|| http::HeaderValue::from_static("none")));
            r
        }
        "trailers" => {
            let mut trailers = http::HeaderMap::new();
            trailers.insert("grpc-status", http::HeaderValue::from_static("0"));
            trailers.insert("x-upstream-trailer", http::HeaderValue::from_static("yes"));
            let frames = vec![Ok::<_, Error>(Frame::data(Bytes::from("hello"))), Ok(Frame::trailers(trailers))];
            Response::new(BodyExt::boxed(StreamBody::new(futures_util::stream::iter(frames))))
        }
        "authz" => {
            let auth = req.headers().get(http::header::AUTHORIZATION).map(|v| v.as_bytes().to_vec());
            match auth.as_deref() {
                Some(b"Bearer good") | Some(b"Bearer slow") => {
                    if auth.as_deref() == Some(b"Bearer slow") {
                        tokio::time::sleep(Duration::from_secs(2)).await;
                    }
                    let mut r = full(200, "ok\n");
                    r.headers_mut().insert("x-user", http::HeaderValue::from_static("alice"));
                    r
                }
                _ => {
                    let mut r = full(403, "denied by authz\n");
                    r.headers_mut()
                        .insert("www-authenticate", http::HeaderValue::from_static("Bearer realm=\"authz\""));
                    r
                }
            }
        }
        "truncate" => {
            let n: u64 = arg.parse()?;
            let stream = futures_util::stream::iter(vec![
                Ok::<_, Error>(Frame::data(pattern(0, n as usize))),
                Err("upstream died mid-body".into()),
            ])
            .then(|item| async move {
                tokio::time::sleep(Duration::from_millis(20)).await;
                item
            });
            let mut r = Response::new(BodyExt::boxed(StreamBody::new(stream)));
            r.headers_mut().insert(http::header::CONTENT_LENGTH, (2 * n).into());
            r
        }
        _ => {
            let mut headers = serde_json::Map::new();
            for (k, v) in req.headers() {
                let v = String::from_utf8_lossy(v.as_bytes()).to_string();
                match headers.get_mut(k.as_str()) {
                    Some(serde_json::Value::String(prev)) => *prev = format!("{prev}|{v}"),
                    _ => {
                        headers.insert(k.to_string(), v.into());
                    }
                }
            }
            let json = serde_json::json!({
                "upstream": state.name,
                "method": req.method().as_str(),
                "path": req.uri().path_and_query().map(|p| p.as_str()),
                "version": format!("{:?}", req.version()),
                "headers": headers,
            });
            full(200, json.to_string())
        }
    };
    resp.headers_mut().insert("x-upstream", state.name.parse()?);
    Ok(resp)
}
