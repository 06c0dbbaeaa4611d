//! The admin listener: `/healthz` (alive), `/readyz` (listeners bound, not
//! draining, local app reachable), `/config` (effective config as JSON),
//! `/filters` (each filter's serving version), `/certs` (every loaded TLS
//! certificate: subject, SANs, serial, validity, SHA-256) and `/metrics` (Prometheus text). It keeps serving while the proxy drains, so
//! `/readyz` reports 503 and `/metrics` stays observable until exit.

use crate::live::Live;
use crate::metrics::Metrics;
use bytes::Bytes;
use http::header::CONTENT_TYPE;
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

/// What the admin endpoints report on.
pub struct Admin {
    /// The serving configuration (config, clusters, filters).
    pub live: Arc<Live>,
    /// All metrics.
    pub metrics: Arc<Metrics>,
    /// Fires when the proxy starts draining.
    pub draining: CancellationToken,
}

impl Admin {
    /// Serves the admin endpoints on `socket` until the process exits.
    pub async fn run(self: Arc<Self>, socket: TcpListener) {
        loop {
            let (stream, _) = match socket.accept().await {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(error = %e, "admin accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let admin = self.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req| {
                    let admin = admin.clone();
                    async move { Ok::<_, Infallible>(admin.answer(req).await) }
                });
                let _ = auto::Builder::new(TokioExecutor::new()).serve_connection(TokioIo::new(stream), svc).await;
            });
        }
    }

    async fn answer(&self, req: Request<Incoming>) -> Response<Full<Bytes>> {
        if req.method() != Method::GET && req.method() != Method::HEAD {
            return text(StatusCode::METHOD_NOT_ALLOWED, "only GET and HEAD\n");
        }
        match req.uri().path() {
            "/healthz" => text(StatusCode::OK, "ok\n"),
            "/readyz" => match self.readiness().await {
                Ok(()) => text(StatusCode::OK, "ready\n"),
                Err(why) => text(StatusCode::SERVICE_UNAVAILABLE, &format!("not ready: {why}\n")),
            },
            "/config" => body(StatusCode::OK, "application/json", self.live.current().config_json.clone()),
            "/metrics" => body(StatusCode::OK, "text/plain; version=0.0.4", Bytes::from(self.metrics.render())),
            "/filters" => {
                let statuses = self.live.current().filters.as_ref().map(|r| r.statuses()).unwrap_or_default();
                body(
                    StatusCode::OK,
                    "application/json",
                    serde_json::to_vec_pretty(&statuses).unwrap_or_default().into(),
                )
            }
            "/certs" => {
                let certs: Vec<_> = self.live.current().tls.iter().flat_map(|t| t.report()).collect();
                body(StatusCode::OK, "application/json", serde_json::to_vec_pretty(&certs).unwrap_or_default().into())
            }
            _ => text(
                StatusCode::NOT_FOUND,
                "unknown admin path; try /healthz /readyz /config /filters /certs /metrics\n",
            ),
        }
    }

    async fn readiness(&self) -> Result<(), String> {
        if self.draining.is_cancelled() {
            return Err("draining".into());
        }
        let live = self.live.current();
        let Some(cluster) = live.config.admin.ready_cluster.as_ref().and_then(|n| live.clusters.get(n)) else {
            return Ok(());
        };
        for ep in &cluster.endpoints {
            let probe = tokio::time::timeout(Duration::from_secs(1), TcpStream::connect(&*ep.address));
            if let Ok(Ok(_)) = probe.await {
                return Ok(());
            }
        }
        Err(format!("cluster {:?} does not accept connections", &*cluster.name))
    }
}

fn text(status: StatusCode, msg: &str) -> Response<Full<Bytes>> {
    body(status, "text/plain; charset=utf-8", Bytes::copy_from_slice(msg.as_bytes()))
}

fn body(status: StatusCode, content_type: &'static str, bytes: Bytes) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(bytes));
    *resp.status_mut() = status;
    resp.headers_mut().insert(CONTENT_TYPE, http::HeaderValue::from_static(content_type));
    resp
}
