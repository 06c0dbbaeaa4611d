//! Upstream failures: retries (and when they must not happen), the circuit
//! breaker, timeouts, refused and dying upstreams, load balancing and the
//! pending-request cap.

use crate::support::client::{self, get, request, send};
use crate::support::metrics;
use crate::support::{TestProxy, Upstream, one_route, refused_addr};
use http::Method;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

fn metric(text: &str, name_and_labels: &str) -> Option<f64> {
    text.lines().find_map(|l| l.strip_prefix(name_and_labels)?.trim().parse().ok())
}

#[tokio::test]
async fn retries_on_listed_status_reach_success_and_are_counted() {
    let upstream = Upstream::start("app").await;
    let route = "        retries: { attempts: 2, on: [503], backoff: 5ms }";
    let proxy = TestProxy::new(one_route(&[upstream.addr], "http1", route, "")).start();
    upstream.script(&[503, 503]);
    let reply = get(&client::h1(), &proxy.url("ingress", "/scripted")).await;
    assert_eq!(reply.status, 200, "third attempt succeeds");
    assert_eq!(upstream.hits(), 3);
    let log = proxy.wait_access_log(1);
    assert_eq!(log[0]["attempts"], 3);
    let m = metrics(&proxy).await;
    assert_eq!(metric(&m, "wasp_upstream_retries_total{cluster=\"app\"}"), Some(2.0));

    upstream.script(&[503, 503, 503]);
    let reply = get(&client::h1(), &proxy.url("ingress", "/scripted")).await;
    assert_eq!(reply.status, 503, "attempts exhausted: the last answer is passed on");
    assert_eq!(upstream.hits(), 6);
}

#[tokio::test]
async fn non_idempotent_requests_are_not_retried_on_status() {
    let upstream = Upstream::start("app").await;
    let route = "        retries: { attempts: 3, on: [503], backoff: 1ms }";
    let proxy = TestProxy::new(one_route(&[upstream.addr], "http1", route, "")).start();
    upstream.script(&[503]);
    let reply = send(&client::h1(), request(Method::POST, &proxy.url("ingress", "/scripted"), client::full("x")))
        .await
        .expect("POST");
    assert_eq!(reply.status, 503);
    assert_eq!(upstream.hits(), 1, "POST is not idempotent");
}

#[tokio::test]
async fn connect_failures_move_to_the_next_endpoint() {
    let upstream = Upstream::start("good").await;
    let dead = refused_addr();
    let route = "        retries: { attempts: 1, on: [connect-failure], backoff: 1ms }";
    let proxy = TestProxy::new(one_route(&[dead, upstream.addr], "http1", route, "")).start();
    for _ in 0..6 {
        let r = send(&client::h1(), request(Method::POST, &proxy.url("ingress", "/echo"), client::full("body")))
            .await
            .expect("POST");
        assert_eq!(r.status, 200, "a POST may retry a connect failure: nothing was sent");
    }
    let m = metrics(&proxy).await;
    assert!(metric(&m, "wasp_upstream_errors_total{cluster=\"app\",kind=\"connect_failure\"}").unwrap_or(0.0) >= 1.0);
}

#[tokio::test]
async fn resets_before_response_are_retried_for_idempotent_requests() {
    let upstream = Upstream::start("app").await;
    let route = "        retries: { attempts: 1, on: [reset], backoff: 1ms }";
    let proxy = TestProxy::new(one_route(&[upstream.addr], "http1", route, "")).start();
    let reply = get(&client::h1(), &proxy.url("ingress", "/drop")).await;
    assert_eq!(reply.status, 502);
    assert_eq!(upstream.hits(), 2, "GET /drop was tried twice");
    let log = proxy.wait_access_log(1);
    assert_eq!(log[0]["reason"], "wasp_upstream_reset");
}

/// A request whose body was already streamed upstream is never re-sent.
#[tokio::test]
async fn a_streamed_body_is_never_retried() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let seen = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let s = seen.clone();
    tokio::spawn(async move {
        // Reads the request (headers and body), then resets without answering.
        while let Ok((mut conn, _)) = listener.accept().await {
            s.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let mut buf = vec![0u8; 64 * 1024];
            let _ = tokio::time::timeout(Duration::from_millis(300), conn.read(&mut buf)).await;
            drop(conn);
        }
    });
    let route = "        retries: { attempts: 3, on: [reset, connect-failure], backoff: 1ms }";
    let proxy = TestProxy::new(one_route(&[addr], "http1", route, "")).start();
    let reply = send(&client::h1(), request(Method::PUT, &proxy.url("ingress", "/put"), client::full(vec![7u8; 4096])))
        .await
        .expect("PUT");
    assert_eq!(reply.status, 502);
    assert_eq!(seen.load(std::sync::atomic::Ordering::SeqCst), 1, "the body went out once: no retry");
}

#[tokio::test]
async fn route_timeout_gives_504() {
    let upstream = Upstream::start("app").await;
    let proxy = TestProxy::new(one_route(&[upstream.addr], "http1", "        timeout: 200ms", "")).start();
    let start = Instant::now();
    let reply = get(&client::h1(), &proxy.url("ingress", "/delay/3000")).await;
    assert_eq!(reply.status, 504);
    assert_eq!(reply.body, "wasp: upstream did not respond in time\n");
    assert!(start.elapsed() < Duration::from_secs(2));
    let log = proxy.wait_access_log(1);
    assert_eq!(log[0]["reason"], "wasp_request_timeout");
}

/// A route timeout longer than the connection's check period is kept by the
/// HTTP/1.1 connection's own check (no timer a request): it still ends the
/// request with a 504, and the next request on the connection is not cut by it.
#[tokio::test]
async fn route_timeout_kept_by_the_connection_check_gives_504() {
    let upstream = Upstream::start("app").await;
    let config = one_route(&[upstream.addr], "http1", "        timeout: 400ms", "")
        .replace("    routes:\n", "    limits: { header_read_timeout: 100ms }\n    routes:\n");
    let proxy = TestProxy::new(config).start();
    let h1 = client::h1();
    let start = Instant::now();
    let reply = get(&h1, &proxy.url("ingress", "/delay/3000")).await;
    assert_eq!(reply.status, 504);
    assert!(start.elapsed() >= Duration::from_millis(400), "not before the deadline");
    assert!(start.elapsed() < Duration::from_secs(2));
    let log = proxy.wait_access_log(1);
    assert_eq!(log[0]["reason"], "wasp_request_timeout");
    // Slower than the check period, within the deadline: answered.
    let reply = get(&h1, &proxy.url("ingress", "/delay/250")).await;
    assert_eq!(reply.status, 200);
}

#[tokio::test]
async fn refused_upstream_fails_fast_with_503() {
    let proxy = TestProxy::new(one_route(&[refused_addr()], "http1", "", "")).start();
    let start = Instant::now();
    let reply = get(&client::h1(), &proxy.url("ingress", "/")).await;
    assert_eq!(reply.status, 503);
    assert_eq!(reply.body, "wasp: upstream connection failed\n");
    assert!(start.elapsed() < Duration::from_secs(1));
    let log = proxy.wait_access_log(1);
    assert_eq!(log[0]["reason"], "wasp_upstream_connect_failure");
}

#[tokio::test]
async fn circuit_breaker_opens_rejects_then_half_opens() {
    let upstream = Upstream::start("app").await;
    let cluster = "    circuit_breaker: { consecutive_failures: 3, open_for: 400ms }";
    let proxy = TestProxy::new(one_route(&[upstream.addr], "http1", "", cluster)).start();
    let h1 = client::h1();
    for _ in 0..3 {
        assert_eq!(get(&h1, &proxy.url("ingress", "/status/500")).await.status, 500);
    }
    let hits = upstream.hits();
    let open = get(&h1, &proxy.url("ingress", "/status/200")).await;
    assert_eq!(open.status, 503, "open: rejected without asking the upstream");
    assert_eq!(open.body, "wasp: upstream circuit breaker is open\n");
    assert_eq!(upstream.hits(), hits);
    let m = metrics(&proxy).await;
    let state = format!("wasp_circuit_breaker_state{{cluster=\"app\",endpoint=\"{}\"}}", upstream.addr);
    assert_eq!(metric(&m, &state), Some(1.0));

    tokio::time::sleep(Duration::from_millis(450)).await;
    assert_eq!(get(&h1, &proxy.url("ingress", "/status/500")).await.status, 500, "the half-open probe goes through");
    assert_eq!(get(&h1, &proxy.url("ingress", "/status/200")).await.status, 503, "a failed probe re-opens");
    tokio::time::sleep(Duration::from_millis(450)).await;
    assert_eq!(get(&h1, &proxy.url("ingress", "/status/200")).await.status, 200, "a good probe closes it");
    assert_eq!(get(&h1, &proxy.url("ingress", "/status/200")).await.status, 200);
    assert_eq!(metric(&metrics(&proxy).await, &state), Some(0.0));
    let log = proxy.wait_access_log(8);
    assert_eq!(log[3]["reason"], "wasp_circuit_open");
}

#[tokio::test]
async fn upstream_dying_mid_response_is_never_seen_as_complete() {
    let upstream = Upstream::start("app").await;
    let proxy = TestProxy::new(one_route(&[upstream.addr], "http1", "", "")).start();
    // Raw HTTP/1.1 client: the response must end before the promised length.
    let mut conn = TcpStream::connect(proxy.addr("ingress")).await.expect("connect");
    conn.write_all(b"GET /truncate/1000 HTTP/1.1\r\nhost: x\r\n\r\n").await.expect("write");
    let mut got = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), conn.read_to_end(&mut got)).await;
    let got = String::from_utf8_lossy(&got).to_string();
    assert!(read.is_ok(), "connection must be closed, not left hanging");
    assert!(got.contains("content-length: 2000"), "{got}");
    let body_len = got.split("\r\n\r\n").nth(1).map_or(0, str::len);
    assert!(body_len < 2000, "body of {body_len} bytes must fall short of 2000");
    // HTTP/2: the stream is reset, so the client sees an error.
    let h2 = client::h2();
    let result = send(&h2, request(Method::GET, &proxy.url("ingress", "/truncate/1000"), client::empty())).await;
    assert!(result.is_err(), "HTTP/2 client must see a reset: {:?}", result.map(|r| r.body.len()));
    let log = proxy.wait_access_log(2);
    assert!(log.iter().all(|l| l["reason"] == "wasp_upstream_reset_mid_body"), "{log:?}");
}

#[tokio::test]
async fn round_robin_and_least_request_spread_load() {
    let (a, b, c) = tokio::join!(Upstream::start("a"), Upstream::start("b"), Upstream::start("c"));
    let proxy = TestProxy::new(one_route(&[a.addr, b.addr, c.addr], "http1", "", "")).start();
    let h1 = client::h1();
    for _ in 0..30 {
        get(&h1, &proxy.url("ingress", "/")).await;
    }
    assert_eq!((a.hits(), b.hits(), c.hits()), (10, 10, 10));

    // least-request: an endpoint that answers slowly holds requests in flight,
    // so new requests go to the other one; round-robin would split them evenly.
    let (slow, fast) = tokio::join!(Upstream::start("slow"), Upstream::start("fast"));
    slow.set_delay(Duration::from_millis(400));
    let proxy = TestProxy::new(one_route(&[slow.addr, fast.addr], "http1", "", "    lb: least-request")).start();
    let mut all = Vec::new();
    for _ in 0..20 {
        let (c, u) = (h1.clone(), proxy.url("ingress", "/"));
        all.push(tokio::spawn(async move { get(&c, &u).await.status }));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for r in all {
        assert_eq!(r.await.expect("join"), 200);
    }
    assert_eq!(slow.hits() + fast.hits(), 20);
    assert!(slow.hits() <= 3, "least-request sent {} of 20 to the slow endpoint", slow.hits());
}

#[tokio::test]
async fn max_pending_overflow_is_503() {
    let upstream = Upstream::start("app").await;
    let cluster = "    circuit_breaker: { max_pending: 2 }";
    let proxy = TestProxy::new(one_route(&[upstream.addr], "http1", "", cluster)).start();
    let h1 = client::h1();
    let url = proxy.url("ingress", "/delay/500");
    let slow: Vec<_> = (0..2)
        .map(|_| {
            let (c, u) = (h1.clone(), url.clone());
            tokio::spawn(async move { get(&c, &u).await.status })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(150)).await;
    let over = get(&h1, &proxy.url("ingress", "/")).await;
    assert_eq!(over.status, 503);
    assert_eq!(over.body, "wasp: too many requests pending for this upstream\n");
    for s in slow {
        assert_eq!(s.await.expect("join"), 200);
    }
    assert_eq!(get(&h1, &proxy.url("ingress", "/")).await.status, 200, "capacity comes back");
}
