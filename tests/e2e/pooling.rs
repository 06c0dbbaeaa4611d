//! The upstream HTTP/1.1 pool: connections are reused, and one the upstream
//! closed while idle is never the reason a request fails.

use crate::support::client::{self, get};
use crate::support::{TestProxy, Upstream, one_route};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

#[tokio::test]
async fn sequential_requests_reuse_one_upstream_connection() {
    let upstream = Upstream::start("app").await;
    let proxy = TestProxy::new(one_route(&[upstream.addr], "http1", "", "")).start();
    let c = client::h1();
    for _ in 0..20 {
        assert_eq!(get(&c, &proxy.url("ingress", "/bytes/100")).await.status, 200);
    }
    assert_eq!(upstream.hits(), 20);
    assert_eq!(upstream.connections(), 1, "keep-alive pool reuses the connection");
}

/// An upstream that answers one request per connection with keep-alive,
/// then closes the connection 50 ms later (a short keep-alive timeout).
async fn closes_idle_connections() -> (std::net::SocketAddr, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let accepted = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            tokio::spawn(async move {
                let mut buf = vec![0u8; 8192];
                let mut got = Vec::new();
                while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                    match conn.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => got.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = conn.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok").await;
                tokio::time::sleep(Duration::from_millis(50)).await;
            });
        }
    });
    (addr, accepted)
}

#[tokio::test]
async fn a_connection_closed_by_the_upstream_while_idle_is_replaced() {
    let (addr, accepted) = closes_idle_connections().await;
    let proxy = TestProxy::new(one_route(&[addr], "http1", "", "")).start();
    let c = client::h1();
    for _ in 0..5 {
        let r = get(&c, &proxy.url("ingress", "/")).await;
        assert_eq!((r.status.as_u16(), &r.body[..]), (200, &b"ok"[..]));
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 5, "each request needed a fresh connection");
    let log = proxy.wait_access_log(5);
    assert!(log.iter().all(|l| l["attempts"] == 1 && l["reason"].is_null()), "{log:?}");
}

/// HTTP/1.1 upstreams get origin-form targets (`GET /path`), so they take
/// the host from the client's Host header, never from an absolute URI.
#[tokio::test]
async fn http1_upstreams_get_origin_form_and_the_client_host() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (tx, rx) = tokio::sync::oneshot::channel::<String>();
    tokio::spawn(async move {
        let (mut conn, _) = listener.accept().await.expect("accept");
        let mut got = Vec::new();
        let mut buf = vec![0u8; 8192];
        while !got.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = conn.read(&mut buf).await.expect("read");
            got.extend_from_slice(&buf[..n]);
        }
        let _ = conn.write_all(b"HTTP/1.1 204 No Content\r\n\r\n").await;
        let _ = tx.send(String::from_utf8_lossy(&got).to_string());
    });
    let proxy = TestProxy::new(one_route(&[addr], "http1", "", "")).start();
    let req = http::Request::builder()
        .uri(proxy.url("ingress", "/x?y=1"))
        .header("host", "app.example")
        .body(client::empty())
        .expect("request");
    assert_eq!(client::send(&client::h1(), req).await.expect("send").status, 204);
    let head = rx.await.expect("request head");
    assert!(head.starts_with("GET /x?y=1 HTTP/1.1\r\n"), "{head}");
    assert!(head.to_ascii_lowercase().contains("\r\nhost: app.example\r\n"), "{head}");
}
