//! Bodies stream through wasp byte-exact in both directions, with either
//! framing, over HTTP/1.1 and HTTP/2, without being buffered whole.

use crate::support::client::{self, TestClient, send};
use crate::support::upstream::{hex, pattern_body, pattern_sha256};
use crate::support::{Running, TestProxy, Upstream, one_route};
use http::{Method, Request};
use http_body_util::BodyExt;
use sha2::{Digest, Sha256};

const SIZES: [u64; 6] = [0, 1, 16 * 1024 - 1, 16 * 1024 + 1, 1 << 20, 100 << 20];

async fn download_sha(c: &TestClient, url: &str) -> (u64, String) {
    let resp = c.request(client::request(Method::GET, url, client::empty())).await.expect("GET");
    assert_eq!(resp.status(), 200);
    let mut body = resp.into_body();
    let (mut h, mut len) = (Sha256::new(), 0u64);
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame.expect("frame").into_data() {
            len += data.len() as u64;
            h.update(&data);
        }
    }
    (len, hex(&h.finalize()))
}

async fn upload(c: &TestClient, proxy: &Running, n: u64, chunked: bool) -> serde_json::Value {
    let mut req = Request::builder().method(Method::POST).uri(proxy.url("ingress", "/sha256"));
    if !chunked {
        req = req.header("content-length", n);
    }
    let req = req.body(pattern_body(n, 64 * 1024 - 7)).expect("request");
    let reply = send(c, req).await.expect("upload");
    assert_eq!(reply.status, 200, "{:?}", reply.body);
    reply.json()
}

async fn check_integrity(down: &str, up: &str) {
    let upstream = Upstream::start("app").await;
    let proxy = TestProxy::new(one_route(&[upstream.addr], up, "", "")).start();
    let c = if down == "h2" { client::h2() } else { client::h1() };
    for n in SIZES {
        let want = pattern_sha256(n);
        for chunked in [false, true] {
            let q = if chunked { "?chunked" } else { "" };
            let (len, sha) = download_sha(&c, &proxy.url("ingress", &format!("/bytes/{n}{q}"))).await;
            assert_eq!((len, sha.as_str()), (n, want.as_str()), "download {n} B chunked={chunked} {down}->{up}");
            let got = upload(&c, &proxy, n, chunked).await;
            assert_eq!(got["len"], n, "upload {n} B chunked={chunked} {down}->{up}");
            assert_eq!(got["sha256"], want.as_str(), "upload {n} B chunked={chunked} {down}->{up}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn byte_exact_h1_to_h1() {
    check_integrity("h1", "http1").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn byte_exact_h2_to_h2() {
    check_integrity("h2", "http2").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn byte_exact_h2_to_h1_and_h1_to_h2() {
    check_integrity("h2", "http1").await;
    check_integrity("h1", "http2").await;
}

/// 1 GiB goes up through wasp while its resident memory stays flat.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_1_gib_upload_streams_without_buffering() {
    let upstream = Upstream::start("app").await;
    let proxy = TestProxy::new(one_route(&[upstream.addr], "http1", "        timeout: 120s", "")).start();
    let c = client::h1();
    let _ = upload(&c, &proxy, 1024, false).await;
    let before = proxy.rss_kib();
    let n = 1u64 << 30;
    let peak = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(before));
    let sampler = {
        let (pid, peak) = (proxy.pid(), peak.clone());
        tokio::spawn(async move {
            while let Some(rss) = crate::support::proxy::rss_kib(pid) {
                peak.fetch_max(rss, std::sync::atomic::Ordering::Relaxed);
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
        })
    };
    let got = upload(&c, &proxy, n, true).await;
    sampler.abort();
    assert_eq!(got["len"], n);
    assert_eq!(got["sha256"], pattern_sha256(n).as_str());
    let growth = peak.load(std::sync::atomic::Ordering::Relaxed).saturating_sub(before);
    assert!(growth < 64 * 1024, "peak RSS grew by {growth} KiB while streaming 1 GiB");
}
