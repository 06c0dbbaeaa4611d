//! Protective defaults: header size and count (431), request-target length
//! (414), slow-loris header timeout, idle timeout and max connections.

use crate::support::client::{self, get};
use crate::support::raw::exchange;
use crate::support::{TestProxy, Upstream, one_route};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn with_limits(upstream: std::net::SocketAddr, limits: &str) -> String {
    one_route(&[upstream], "http1", "", "")
        .replace("    routes:\n", &format!("    limits: {{ {limits} }}\n    routes:\n"))
}

#[tokio::test]
async fn oversized_headers_get_431_and_long_targets_get_414() {
    let upstream = Upstream::start("app").await;
    let proxy =
        TestProxy::new(with_limits(upstream.addr, "max_header_bytes: 16KiB, max_headers: 20, max_uri_bytes: 1KiB"))
            .start();
    let addr = proxy.addr("ingress");
    let big = format!("GET / HTTP/1.1\r\nhost: x\r\nx-big: {}\r\n\r\n", "a".repeat(20 * 1024));
    let reply = exchange(addr, big.as_bytes(), Duration::from_secs(3)).await;
    assert!(reply.starts_with("HTTP/1.1 431"), "{reply}");

    let mut many = String::from("GET / HTTP/1.1\r\nhost: x\r\n");
    for i in 0..30 {
        many.push_str(&format!("x-h{i}: v\r\n"));
    }
    many.push_str("\r\n");
    let reply = exchange(addr, many.as_bytes(), Duration::from_secs(3)).await;
    assert!(reply.starts_with("HTTP/1.1 431"), "{reply}");

    let long = format!("GET /{} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n", "p".repeat(2000));
    let reply = exchange(addr, long.as_bytes(), Duration::from_secs(3)).await;
    assert!(reply.starts_with("HTTP/1.1 414"), "{reply}");
    assert_eq!(upstream.hits(), 0);

    let ok = get(&client::h1(), &proxy.url("ingress", &format!("/{}", "p".repeat(900)))).await;
    assert_eq!(ok.status, 200, "within limits");
}

#[tokio::test]
async fn slow_loris_connections_are_closed() {
    let upstream = Upstream::start("app").await;
    let proxy = TestProxy::new(with_limits(upstream.addr, "header_read_timeout: 300ms")).start();
    let mut conn = TcpStream::connect(proxy.addr("ingress")).await.expect("connect");
    conn.write_all(b"GET / HTTP/1.1\r\nhost: x\r\n").await.expect("write");
    let closed = tokio::time::timeout(Duration::from_secs(3), async {
        let mut buf = [0u8; 1024];
        loop {
            // Keep trickling a byte at a time, as a slow-loris client does.
            if conn.write_all(b"x").await.is_err() {
                return;
            }
            match tokio::time::timeout(Duration::from_millis(100), conn.read(&mut buf)).await {
                Ok(Ok(0)) | Ok(Err(_)) => return,
                _ => {}
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "a client that never finishes its headers must be cut off");
    crate::support::wait_for_metric(&proxy, "wasp_timeouts_total{kind=\"header_read\",listener=\"ingress\"} 1").await;
}

#[tokio::test]
async fn idle_keep_alive_connections_are_closed() {
    let upstream = Upstream::start("app").await;
    let proxy = TestProxy::new(with_limits(upstream.addr, "idle_timeout: 300ms")).start();
    let mut conn = TcpStream::connect(proxy.addr("ingress")).await.expect("connect");
    conn.write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n").await.expect("write");
    let mut buf = vec![0u8; 64 * 1024];
    let n = conn.read(&mut buf).await.expect("response");
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    let closed = tokio::time::timeout(Duration::from_secs(3), async {
        loop {
            match conn.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "idle connection must be closed after idle_timeout");
    crate::support::wait_for_metric(&proxy, "wasp_timeouts_total{kind=\"idle\",listener=\"ingress\"} 1").await;
}

#[tokio::test]
async fn max_connections_holds_further_clients_back() {
    let upstream = Upstream::start("app").await;
    let proxy = TestProxy::new(with_limits(upstream.addr, "max_connections: 2")).start();
    let addr = proxy.addr("ingress");
    let req = b"GET / HTTP/1.1\r\nhost: x\r\n\r\n";
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut c = TcpStream::connect(addr).await.expect("connect");
        c.write_all(req).await.expect("write");
        let mut buf = vec![0u8; 64 * 1024];
        let n = c.read(&mut buf).await.expect("read");
        assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
        held.push(c);
    }
    let mut third = TcpStream::connect(addr).await.expect("connect (backlog)");
    third.write_all(req).await.expect("write");
    let mut buf = vec![0u8; 64 * 1024];
    let waited = tokio::time::timeout(Duration::from_millis(400), third.read(&mut buf)).await;
    assert!(waited.is_err(), "the third connection must wait while two are open");
    drop(held.pop());
    let n = tokio::time::timeout(Duration::from_secs(3), third.read(&mut buf)).await.expect("served").expect("read");
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
}
