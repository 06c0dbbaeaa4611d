//! Abusive clients cannot starve others: readers that stall are cut off
//! and release what they held, a flood of streams queues in wasp instead of
//! in a small app's accept backlog (and its cancellation never trips the
//! breaker), and HTTP/2 reset floods end in GOAWAY.

use crate::support::client::{self, get};
use crate::support::{TestProxy, Upstream, metrics, one_route, wait_for_metric};
use std::time::{Duration, Instant};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

/// `n` clients that each ask for far more than the socket buffers hold and
/// never read; the first `admitted` are waited for until they reach the upstream.
async fn stalled_readers(addr: std::net::SocketAddr, upstream: &Upstream, n: usize, admitted: usize) -> Vec<TcpStream> {
    let mut stalled = Vec::new();
    for i in 0..n {
        let mut c = TcpStream::connect(addr).await.expect("connect");
        c.write_all(b"GET /bytes/200000000 HTTP/1.1\r\nhost: x\r\n\r\n").await.expect("write");
        stalled.push(c);
        let deadline = Instant::now() + Duration::from_secs(5);
        while i < admitted && upstream.hits() <= i {
            assert!(Instant::now() < deadline, "stalled reader {i} never reached the upstream");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    stalled
}

#[tokio::test]
async fn clients_that_stop_reading_are_cut_off_and_others_are_served() {
    let upstream = Upstream::start("app").await;
    let yaml = one_route(&[upstream.addr], "http1", "", "    circuit_breaker: { max_pending: 2 }")
        .replace("    routes:\n", "    limits: { write_timeout: 1s }\n    routes:\n");
    let proxy = TestProxy::new(yaml).start();
    let addr = proxy.addr("ingress");
    // More stalled readers than max_pending; the first two are admitted.
    let stalled = stalled_readers(addr, &upstream, 4, 2).await;
    // They hold both pending slots: others are refused for now...
    let deadline = Instant::now() + Duration::from_secs(10);
    while get(&client::h1(), &proxy.url("ingress", "/echo")).await.status != 503 {
        assert!(Instant::now() < deadline, "the stalled readers never held the pending slots");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // ...until the stalled readers are cut off and release them.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let reply = get(&client::h1(), &proxy.url("ingress", "/echo")).await;
        if reply.status == 200 {
            break;
        }
        assert_eq!(reply.status, 503, "only the pending cap may refuse meanwhile");
        assert!(Instant::now() < deadline, "stalled readers kept the pending slots");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let m = metrics(&proxy).await;
    let stalls = m
        .lines()
        .find(|l| l.starts_with("wasp_timeouts_total{kind=\"write_stall\",listener=\"ingress\"}"))
        .and_then(|l| l.rsplit(' ').next()?.parse::<u64>().ok());
    assert!(stalls.is_some_and(|n| n >= 1), "{m}");
    drop(stalled);
}

/// An app with an accept backlog of 5 that answers slowly.
async fn small_app() -> Upstream {
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket.bind("127.0.0.1:0".parse().expect("addr")).expect("bind");
    let app = Upstream::serve("small", socket.listen(5).expect("listen"));
    app.set_delay(Duration::from_millis(100));
    app
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_flood_queues_for_connections_and_never_trips_the_breaker() {
    let app = small_app().await;
    let cluster = "    connect_timeout: 1s\n    max_connections_per_endpoint: 4\n    circuit_breaker: { consecutive_failures: 3, open_for: 30s }";
    let proxy = TestProxy::new(one_route(&[app.addr], "http1", "", cluster)).start();
    let url = proxy.url("ingress", "/echo");
    let flood = client::h2();
    let tasks: Vec<_> = (0..1000)
        .map(|_| {
            let (c, url) = (flood.clone(), url.clone());
            tokio::spawn(
                async move { client::send(&c, client::request(http::Method::GET, &url, client::empty())).await },
            )
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(800)).await;
    let peak = app.peak_connections();
    assert!(peak <= 4, "wasp had {peak} connections open to an app capped at 4");
    // The flooding client goes away: its streams are reset mid-wait.
    for t in &tasks {
        t.abort();
    }
    drop(flood);
    // Served as soon as the flood's cancelled streams have left the queue
    // (on a loaded machine that can take a moment): never refused by a
    // breaker the flood opened, which would hold for open_for (30 s).
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let reply = get(&client::h1(), &url).await;
        if reply.status == 200 {
            break;
        }
        let body = String::from_utf8_lossy(&reply.body).to_string();
        assert!(!body.contains("circuit breaker"), "the flood opened the breaker: {body}");
        assert!(Instant::now() < deadline, "an ordinary client was not served: {} {body}", reply.status);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // (The flood's in-flight requests were cut off mid-response: their
    // connections cannot be reused, so the next waiters dial again; on a
    // busy machine one of those dials may time out in the small backlog.
    // The cap is what keeps them from piling up: asserted above.)
    let m = metrics(&proxy).await;
    assert!(m.contains(&format!("wasp_circuit_breaker_state{{cluster=\"app\",endpoint=\"{}\"}} 0", app.addr)), "{m}");
}

/// HTTP/2 frame: 9-byte header, then `payload`.
fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut f = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
    f.extend_from_slice(&stream.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// The GOAWAY error code wasp sent, if any, in what it wrote before closing.
fn goaway_code(mut bytes: &[u8]) -> Option<u32> {
    while bytes.len() >= 9 {
        let len = usize::from(bytes[0]) << 16 | usize::from(bytes[1]) << 8 | usize::from(bytes[2]);
        let (kind, payload) = (bytes[3], bytes.get(9..9 + len)?);
        if kind == 0x7 {
            return Some(u32::from_be_bytes(payload.get(4..8)?.try_into().ok()?));
        }
        bytes = &bytes[9 + len..];
    }
    None
}

/// HEADERS then RST_STREAM(CANCEL), thousands of times in a few writes
/// (rapid reset, CVE-2023-44487): wasp ends the connection with GOAWAY and
/// serves others meanwhile. h2 answers ENHANCE_YOUR_CALM (0xb) when resets
/// pile up faster than wasp takes streams; when wasp keeps up, its own check
/// ends the connection (GOAWAY NO_ERROR, as hyper's graceful shutdown sends).
#[tokio::test]
async fn rapid_reset_gets_goaway() {
    let upstream = Upstream::start("app").await;
    let proxy = TestProxy::new(one_route(&[upstream.addr], "http1", "", "")).start();
    // Thousands in a few writes: h2's pending-reset limit.
    assert_eq!(reset_flood(&proxy, 200, Duration::ZERO).await.0, 0xb);
    // One at a time, slower than wasp takes them: wasp's premature-reset check.
    let (code, sent) = reset_flood(&proxy, 1, Duration::from_millis(2)).await;
    assert_eq!(code, 0x0);
    assert!(sent < 1000, "ended after {sent} resets");
    wait_for_metric(&proxy, "wasp_http2_abuse_total{kind=\"early_resets\",listener=\"ingress\"} 1").await;
}

/// Sends up to 10,000 HEADERS + RST_STREAM pairs, `batch` per write, and
/// returns the GOAWAY error code wasp answered with before closing, and how
/// many pairs were written before it closed.
async fn reset_flood(proxy: &crate::support::Running, batch: usize, pause: Duration) -> (u32, usize) {
    use tokio::io::AsyncReadExt;
    let mut tcp = TcpStream::connect(proxy.addr("ingress")).await.expect("connect");
    tcp.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").await.expect("preface");
    tcp.write_all(&frame(0x4, 0, 0, &[])).await.expect("settings");
    // GET / for authority "x", from HPACK's static table; END_STREAM | END_HEADERS.
    let block = [0x82, 0x86, 0x84, 0x01, 0x01, b'x'];
    let (mut sent, mut stream) = (0, 1u32);
    while sent < 10_000 {
        let mut bytes = Vec::new();
        for _ in 0..batch {
            bytes.extend(frame(0x1, 0x5, stream, &block));
            bytes.extend(frame(0x3, 0, stream, &0x8u32.to_be_bytes()));
            stream += 2;
        }
        if tcp.write_all(&bytes).await.is_err() {
            break;
        }
        sent += batch;
        tokio::time::sleep(pause).await;
    }
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), tcp.read_to_end(&mut answer)).await;
    assert!(read.is_ok(), "wasp did not close the connection after {sent} resets");
    assert_eq!(get(&client::h1(), &proxy.url("ingress", "/echo")).await.status, 200, "others are served");
    wait_for_metric(proxy, "wasp_active_connections{listener=\"ingress\"} 0").await;
    (goaway_code(&answer).unwrap_or_else(|| panic!("no GOAWAY after {sent} resets")), sent)
}

/// Many clients share one HTTP/2 connection to an upstream: a few that stop
/// reading hold only their streams' windows, never the connection's, so the
/// others are still served (until write_timeout cuts the stalled ones off).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_readers_do_not_stall_a_shared_http2_upstream_connection() {
    let upstream = Upstream::start("app").await;
    let yaml = one_route(&[upstream.addr], "http2", "", "")
        .replace("    routes:\n", "    limits: { write_timeout: 60s }\n    routes:\n");
    let proxy = TestProxy::new(yaml).start();
    let addr = proxy.addr("ingress");
    let stalled = stalled_readers(addr, &upstream, 4, 4).await;
    tokio::time::sleep(Duration::from_millis(300)).await; // their windows fill up
    let c = client::h1();
    for _ in 0..20 {
        let reply = tokio::time::timeout(Duration::from_secs(5), get(&c, &proxy.url("ingress", "/bytes/100000")))
            .await
            .expect("served while others stall");
        assert_eq!((reply.status.as_u16(), reply.body.len()), (200, 100_000));
    }
    drop(stalled);
}

/// A client that sends its body slowly makes the route time out; that is
/// not the endpoint's failure, and the breaker stays closed for others.
#[tokio::test]
async fn slow_uploads_do_not_trip_the_breaker() {
    let upstream = Upstream::start("app").await;
    let yaml = one_route(
        &[upstream.addr],
        "http1",
        "        timeout: 300ms",
        "    circuit_breaker: { consecutive_failures: 1 }",
    );
    let proxy = TestProxy::new(yaml).start();
    let mut slow = Vec::new();
    for _ in 0..3 {
        let mut c = TcpStream::connect(proxy.addr("ingress")).await.expect("connect");
        c.write_all(b"POST /sha256 HTTP/1.1\r\nhost: x\r\ncontent-length: 100\r\n\r\nab").await.expect("write");
        slow.push(c);
    }
    tokio::time::sleep(Duration::from_millis(600)).await; // past the route timeout
    let reply = get(&client::h1(), &proxy.url("ingress", "/echo")).await;
    assert_eq!(reply.status, 200, "the breaker stayed closed");
    let m = metrics(&proxy).await;
    assert!(m.contains("kind=\"timeout\"} 3"), "the slow uploads timed out: {m}");
    drop(slow);
}

/// An HTTP/2 client that keeps reading its socket but grants its streams
/// no window holds their responses (and their upstream connections and
/// pending slots) just as a stalled reader does: after write_timeout its
/// connection is ended too, and others are served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_streams_without_window_are_cut_off_too() {
    let upstream = Upstream::start("app").await;
    let yaml = one_route(&[upstream.addr], "http1", "", "    circuit_breaker: { max_pending: 2 }")
        .replace("    routes:\n", "    limits: { write_timeout: 500ms }\n    routes:\n");
    let proxy = TestProxy::new(yaml).start();
    let addr = proxy.addr("ingress");
    let tcp = TcpStream::connect(addr).await.expect("connect");
    let (h2, conn) = h2::client::handshake(tcp).await.expect("h2 handshake");
    let driver = tokio::spawn(conn);
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut h2 = h2.clone().ready().await.expect("ready");
        let req = http::Request::builder().uri(format!("http://{addr}/bytes/50000000")).body(()).expect("request");
        let (resp, _) = h2.send_request(req, true).expect("send");
        // The response head arrives; its body is never read, so no window is granted.
        held.push(resp.await.expect("response head"));
    }
    assert_eq!(get(&client::h1(), &proxy.url("ingress", "/echo")).await.status, 503, "both pending slots are held");
    let deadline = Instant::now() + Duration::from_secs(10);
    while get(&client::h1(), &proxy.url("ingress", "/echo")).await.status != 200 {
        assert!(Instant::now() < deadline, "streams without window kept their pending slots");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let ended = tokio::time::timeout(Duration::from_secs(5), driver).await;
    assert!(ended.is_ok(), "the stalling client's connection was ended");
    wait_for_metric(&proxy, "wasp_timeouts_total{kind=\"write_stall\",listener=\"ingress\"} 1").await;
    drop(held);
}

/// SETTINGS and PING floods (each frame answered with an ACK): hyper/h2
/// have no limit, wasp counts them and ends a connection over
/// `http2.max_control_frames` a second (GOAWAY, then closed).
#[tokio::test]
async fn control_frame_floods_are_ended() {
    use tokio::io::AsyncReadExt;
    let upstream = Upstream::start("app").await;
    let proxy = TestProxy::new(one_route(&[upstream.addr], "http1", "", "")).start();
    for (kind, payload, name) in [(0x6u8, vec![0u8; 8], "PING"), (0x4, vec![], "SETTINGS")] {
        let tcp = TcpStream::connect(proxy.addr("ingress")).await.expect("connect");
        let (mut rx, mut tx) = tcp.into_split();
        // Read everything wasp sends (its ACKs), as a flooding client would.
        let reader = tokio::spawn(async move {
            let mut all = Vec::new();
            let _ = tokio::time::timeout(Duration::from_secs(10), rx.read_to_end(&mut all)).await;
            all
        });
        tx.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").await.expect("preface");
        let mut sent = 0;
        for _ in 0..100 {
            let batch: Vec<u8> = (0..100).flat_map(|_| frame(kind, 0, 0, &payload)).collect();
            if tx.write_all(&batch).await.is_err() {
                break;
            }
            sent += 100;
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let answer = reader.await.expect("reader");
        assert_eq!(goaway_code(&answer), Some(0), "{name} flood: GOAWAY after {sent} frames");
        assert!(sent < 10_000, "{name} flood: the connection was ended ({sent} frames sent)");
    }
    assert_eq!(get(&client::h1(), &proxy.url("ingress", "/echo")).await.status, 200, "others are served");
    wait_for_metric(&proxy, "wasp_http2_abuse_total{kind=\"control_frames\",listener=\"ingress\"} 2").await;
}
