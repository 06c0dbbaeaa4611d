//! SIGTERM: stop accepting, let in-flight requests finish (HTTP/2 clients get
//! GOAWAY), exit 0 — or exit at the drain deadline.

use crate::support::client::{self, get};
use crate::support::{TestProxy, Upstream, one_route};
use std::time::{Duration, Instant};

fn with_drain(yaml: String, timeout: &str) -> String {
    format!("drain_timeout: {timeout}\n{yaml}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_flight_requests_finish_and_new_connections_are_refused() {
    let upstream = Upstream::start("app").await;
    let mut proxy = TestProxy::new(with_drain(one_route(&[upstream.addr], "http1", "", ""), "10s")).start();
    let (h1, h2) = (client::h1(), client::h2());
    // Warm both connections so the in-flight requests below use them.
    assert_eq!(get(&h1, &proxy.url("ingress", "/")).await.status, 200);
    assert_eq!(get(&h2, &proxy.url("ingress", "/")).await.status, 200);
    let slow = |c: crate::support::client::TestClient, url: String| tokio::spawn(async move { get(&c, &url).await });
    let a = slow(h1.clone(), proxy.url("ingress", "/delay/800"));
    let b = slow(h2.clone(), proxy.url("ingress", "/delay/800"));
    tokio::time::sleep(Duration::from_millis(200)).await;
    proxy.signal("TERM");
    tokio::time::sleep(Duration::from_millis(200)).await;
    let refused = tokio::net::TcpStream::connect(proxy.addr("ingress")).await;
    assert!(refused.is_err(), "no new connections while draining");
    let ready = get(&client::h1(), &proxy.admin_url("/readyz")).await;
    assert_eq!(ready.status, 503, "readiness drops during drain");
    assert_eq!(a.await.expect("join").status, 200, "HTTP/1.1 in-flight request completes");
    assert_eq!(b.await.expect("join").status, 200, "HTTP/2 in-flight request completes");
    let status = proxy.wait_exit(Duration::from_secs(5));
    assert!(status.success(), "{status}");
    let log = proxy.access_log();
    assert_eq!(log.iter().filter(|l| l["status"] == 200).count(), 4, "every request was logged before exit");
}

#[tokio::test]
async fn the_drain_deadline_bounds_shutdown() {
    let upstream = Upstream::start("app").await;
    let mut proxy = TestProxy::new(with_drain(one_route(&[upstream.addr], "http1", "", ""), "300ms")).start();
    let url = proxy.url("ingress", "/delay/10000");
    let stuck = tokio::spawn(async move {
        client::send(&client::h1(), client::request(http::Method::GET, &url, client::empty())).await
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let start = Instant::now();
    proxy.signal("INT");
    let status = proxy.wait_exit(Duration::from_secs(5));
    assert!(status.success(), "{status}");
    assert!(start.elapsed() < Duration::from_secs(3), "exit at the deadline, took {:?}", start.elapsed());
    assert!(stuck.await.expect("join").is_err(), "the request that outlived the deadline is cut, not completed");
}
