//! `wasp` with no arguments: a built-in demo upstream on localhost behind an
//! ingress listener with a demo filter (header-rewrite), so a newcomer sees a
//! request go through a Wasm filter with one command.

use crate::config;
use crate::server::{self, StartError};
use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use std::convert::Infallible;
use std::path::Path;
use tokio::net::TcpListener;

/// The demo's config, with `@UPSTREAM@` standing for the demo upstream's
/// address and `@FILTER@` for the demo filter's file.
pub const DEMO_CONFIG: &str = include_str!("demo.yaml");

/// The header-rewrite filter, built by `build.rs` (empty when the
/// wasm32-wasip2 target was missing at build time).
const DEMO_FILTER: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/demo-filter.wasm"));

/// The demo config for an upstream at `upstream`, with the filter written
/// to `dir` (or left out when this build has no demo filter).
fn demo_config(upstream: &str, dir: &Path) -> Result<String, String> {
    let text = DEMO_CONFIG.replace("@UPSTREAM@", upstream);
    if DEMO_FILTER.is_empty() {
        eprintln!("wasp demo: built without the demo filter; `rustup target add wasm32-wasip2` and rebuild to see it");
        let without = text.replace("        filters: [demo-rewrite]\n", "");
        return Ok(without[..without.find("filters:\n").unwrap_or(without.len())].to_string());
    }
    let path = dir.join("demo-filter.wasm");
    std::fs::write(&path, DEMO_FILTER)
        .map_err(|e| format!("cannot write the demo filter to {}: {e}", path.display()))?;
    Ok(text.replace("@FILTER@", &path.display().to_string()))
}

/// Runs the demo until SIGTERM/SIGINT.
pub fn run() -> Result<(), String> {
    let runtime = server::runtime(0).map_err(|e| e.to_string())?;
    let result = runtime.block_on(async {
        let upstream = TcpListener::bind("127.0.0.1:0").await.map_err(|e| format!("demo upstream: {e}"))?;
        let address = upstream.local_addr().map_err(|e| e.to_string())?;
        let dir = std::env::temp_dir().join(format!("wasp-demo-{}", std::process::id()));
        std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        let text = demo_config(&address.to_string(), &dir)?;
        let config = config::parse(&text, Path::new(".")).map_err(|e| format!("embedded demo config: {e}"))?;
        tokio::spawn(serve_upstream(upstream));
        eprintln!(
            "\nwasp demo: an ingress listener on 127.0.0.1:15006 forwards to a demo app on {address}.\n  \
             try:     curl -i http://127.0.0.1:15006/hello   (see x-greeting and x-wasp-filter)\n  \
             metrics: curl http://127.0.0.1:9901/metrics\n  \
             stop:    Ctrl-C\n"
        );
        server::serve(config, None, server::shutdown_signal()).await.map_err(|e: StartError| e.to_string())
    });
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    result
}

async fn serve_upstream(socket: TcpListener) {
    while let Ok((stream, _)) = socket.accept().await {
        tokio::spawn(async move {
            let svc = service_fn(|req: Request<Incoming>| async move { Ok::<_, Infallible>(describe(&req)) });
            let _ = auto::Builder::new(TokioExecutor::new()).serve_connection(TokioIo::new(stream), svc).await;
        });
    }
}

/// The demo app answers with what it received, so the proxy's work shows.
fn describe(req: &Request<Incoming>) -> Response<Full<Bytes>> {
    let headers: serde_json::Map<String, serde_json::Value> =
        req.headers().iter().map(|(k, v)| (k.to_string(), String::from_utf8_lossy(v.as_bytes()).into())).collect();
    let body = serde_json::json!({
        "message": "hello from the wasp demo app",
        "method": req.method().as_str(),
        "path": req.uri().path(),
        "headers_received": headers,
    });
    let mut resp = Response::new(Full::new(Bytes::from(format!("{body:#}\n"))));
    resp.headers_mut().insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("application/json"));
    resp
}
