//! wasp's own HTTP/1.1 upstream client against a hostile upstream: a raw
//! TCP server that answers each request with scripted bytes and records
//! every byte it received. Each test is one vector: what the client sees,
//! what the upstream received, and whether a connection was reused after
//! something that should have closed it.

use crate::support::client::{self, get};
use crate::support::raw::{self, Conn};
use crate::support::{Running, TestProxy, one_route};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// What a scripted upstream saw: one entry per connection, the bytes of
/// each request (head and, per its content-length, body) on it.
#[derive(Clone, Default)]
struct Seen(Arc<Mutex<Vec<Vec<Vec<u8>>>>>);

impl Seen {
    fn connections(&self) -> usize {
        self.0.lock().expect("seen").len()
    }

    fn requests(&self) -> Vec<String> {
        let seen = self.0.lock().expect("seen");
        seen.iter().flatten().map(|r| String::from_utf8_lossy(r).to_string()).collect()
    }
}

/// An upstream that answers the n-th request it receives (over all
/// connections) with `answers[n]` (the last one repeats), then closes the
/// connection if the answer ends with `CLOSE`.
async fn scripted(answers: &[&[u8]]) -> (SocketAddr, Seen) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let answers: Arc<Vec<Vec<u8>>> = Arc::new(answers.iter().map(|a| a.to_vec()).collect());
    let seen = Seen::default();
    let count = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let record = seen.clone();
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            let (answers, seen, count) = (answers.clone(), record.clone(), count.clone());
            let index = {
                let mut s = seen.0.lock().expect("seen");
                s.push(Vec::new());
                s.len() - 1
            };
            tokio::spawn(async move {
                let mut buf = Vec::new();
                loop {
                    let Some(request) = read_request(&mut conn, &mut buf).await else { return };
                    seen.0.lock().expect("seen")[index].push(request);
                    let n = count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    let answer = &answers[n.min(answers.len() - 1)];
                    let (bytes, close) = match answer.strip_suffix(CLOSE) {
                        Some(bytes) => (bytes, true),
                        None => (&answer[..], false),
                    };
                    if conn.write_all(bytes).await.is_err() || close {
                        return;
                    }
                }
            });
        }
    });
    (addr, seen)
}

/// Marks a scripted answer after which the upstream closes the connection.
const CLOSE: &[u8] = b"<close>";

/// One request: its head, then as many body bytes as its content-length
/// says, or its chunked body up to the last chunk.
async fn read_request(conn: &mut tokio::net::TcpStream, buf: &mut Vec<u8>) -> Option<Vec<u8>> {
    let mut chunk = [0u8; 16 * 1024];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            let length = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse::<usize>().ok())
                .unwrap_or(0);
            let chunked = head.contains("transfer-encoding: chunked");
            let total = if chunked {
                // The last chunk, then its trailer section up to the empty line.
                let body = &buf[end + 2..];
                body.windows(5).position(|w| w == b"\r\n0\r\n").and_then(|last| {
                    let trailers = &body[last + 3..];
                    trailers.windows(4).position(|w| w == b"\r\n\r\n").map(|e| end + 2 + last + 3 + e + 4)
                })
            } else {
                (buf.len() >= end + 4 + length).then_some(end + 4 + length)
            };
            if let Some(total) = total {
                return Some(buf.drain(..total).collect());
            }
        }
        match conn.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

fn start(upstream: SocketAddr) -> Running {
    TestProxy::new(one_route(&[upstream], "http1", "", "")).start()
}

/// Sends a GET on a fresh raw connection and reads everything back.
async fn raw_get(proxy: &Running, path: &str) -> String {
    let request = format!("GET {path} HTTP/1.1\r\nhost: app\r\nconnection: close\r\n\r\n");
    raw::exchange(proxy.addr("ingress"), request.as_bytes(), Duration::from_secs(5)).await
}

/// Responses whose framing two readers could take differently are refused
/// with a 502 and never passed on, and the connection is not reused.
#[tokio::test]
async fn ambiguous_response_framing_is_a_502_and_the_connection_is_closed() {
    for (answer, what) in [
        (
            &b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"[..],
            "cl+te",
        ),
        (b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\ncontent-length: 4\r\n\r\nabcd", "two lengths"),
        (b"HTTP/1.1 200 OK\r\ncontent-length: 3, 4\r\n\r\nabcd", "a length list"),
        (b"HTTP/1.1 200 OK\r\ncontent-length: +3\r\n\r\nabc", "a signed length"),
        (b"HTTP/1.1 200 OK\r\ntransfer-encoding: gzip\r\n\r\nabc", "gzip coding"),
        (b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked, chunked\r\n\r\n0\r\n\r\n", "chunked twice"),
        (b"HTTP/1.1 200 OK\r\nx-folded: a\r\n b\r\ncontent-length: 0\r\n\r\n", "obs-fold"),
        (b"HTTP/1.1 200 OK\r\nbad name: x\r\ncontent-length: 0\r\n\r\n", "space in a name"),
        (b"HTTP/1.1 2000 OK\r\ncontent-length: 0\r\n\r\n", "a 4-digit status"),
        (b"HTTP/1.1 101 Switching Protocols\r\nupgrade: evil\r\nconnection: upgrade\r\n\r\n", "unasked 101"),
        (b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nx: \x01\r\n\r\n", "a control byte"),
    ] {
        let (addr, seen) = scripted(&[answer, b"HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\nfine"]).await;
        let proxy = start(addr);
        let c = client::h1();
        let first = get(&c, &proxy.url("ingress", "/")).await;
        assert_eq!(first.status, 502, "{what}: {:?}", first.body);
        let second = get(&c, &proxy.url("ingress", "/")).await;
        assert_eq!((second.status.as_u16(), &second.body[..]), (200, &b"fine"[..]), "{what}");
        assert_eq!(seen.connections(), 2, "{what}: the connection of the refused response was closed");
        let log = proxy.wait_access_log(2);
        assert_eq!(log[0]["reason"], "wasp_upstream_protocol_error", "{what}");
    }
}

/// Bytes an upstream sends beyond the end of its response (a second,
/// unasked response) are never served as the answer to the next request.
#[tokio::test]
async fn bytes_after_a_response_are_never_the_next_requests_answer() {
    let smuggling = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nokHTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nevil!";
    let (addr, seen) = scripted(&[smuggling, b"HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\nreal"]).await;
    let proxy = start(addr);
    let c = client::h1();
    let first = get(&c, &proxy.url("ingress", "/one")).await;
    assert_eq!((first.status.as_u16(), &first.body[..]), (200, &b"ok"[..]));
    let second = get(&c, &proxy.url("ingress", "/two")).await;
    assert_eq!((second.status.as_u16(), &second.body[..]), (200, &b"real"[..]));
    assert_eq!(seen.connections(), 2, "the connection with extra bytes on it was not reused");
}

/// Interim 1xx responses are skipped; the final response follows on a
/// connection that is then reused.
#[tokio::test]
async fn interim_responses_are_skipped_and_the_final_one_served() {
    let answer = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nlink: </a.css>\r\n\r\nHTTP/1.1 200 OK\r\ncontent-length: 5\r\nx-final: yes\r\n\r\nfinal";
    let (addr, seen) = scripted(&[answer]).await;
    let proxy = start(addr);
    let c = client::h1();
    for _ in 0..2 {
        let r = get(&c, &proxy.url("ingress", "/")).await;
        assert_eq!((r.status.as_u16(), &r.body[..], r.header("x-final")), (200, &b"final"[..], Some("yes")));
    }
    assert_eq!(seen.connections(), 1);
}

/// A response head over 64 KiB is refused, not buffered without end.
#[tokio::test]
async fn a_response_head_over_64_kib_is_a_502() {
    let huge = format!("HTTP/1.1 200 OK\r\nx-big: {}\r\ncontent-length: 0\r\n\r\n", "a".repeat(70 * 1024));
    let (addr, _) = scripted(&[huge.as_bytes()]).await;
    let proxy = start(addr);
    assert_eq!(get(&client::h1(), &proxy.url("ingress", "/")).await.status, 502);
}

/// A body delimited by the upstream closing arrives whole; a chunked body
/// with trailers arrives byte-exact with its trailers; a HEAD response's
/// length is not read as a body, and its connection is reused.
#[tokio::test]
async fn close_delimited_chunked_and_head_responses_arrive_exact() {
    let (addr, seen) = scripted(&[b"HTTP/1.1 200 OK\r\n\r\nuntil the end<close>"]).await;
    let proxy = start(addr);
    let r = get(&client::h1(), &proxy.url("ingress", "/")).await;
    assert_eq!((r.status.as_u16(), &r.body[..]), (200, &b"until the end"[..]));
    let r = get(&client::h1(), &proxy.url("ingress", "/")).await;
    assert_eq!(&r.body[..], b"until the end");
    assert_eq!(seen.connections(), 2);

    let chunked = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\n1\r\n \r\n5\r\nworld\r\n0\r\nx-sum: 42\r\n\r\n";
    let (addr, seen) = scripted(&[chunked]).await;
    let proxy = start(addr);
    let mut conn = Conn::open(proxy.addr("ingress")).await;
    for _ in 0..2 {
        conn.send(b"GET / HTTP/1.1\r\nhost: app\r\nte: trailers\r\n\r\n").await;
        let r = conn.response(false).await.expect("response");
        assert_eq!((r.status, r.text()), (200, "hello world".to_string()));
    }
    assert_eq!(seen.connections(), 1, "a cleanly ended chunked response leaves the connection reusable");
    let h2 = client::h2();
    let r = client::send(&h2, client::request(http::Method::GET, &proxy.url("ingress", "/"), client::empty()))
        .await
        .expect("h2");
    assert_eq!(&r.body[..], b"hello world");

    let (addr, seen) = scripted(&[b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n"]).await;
    let proxy = start(addr);
    let mut conn = Conn::open(proxy.addr("ingress")).await;
    for _ in 0..2 {
        conn.send(b"HEAD / HTTP/1.1\r\nhost: app\r\n\r\n").await;
        let r = conn.response(true).await.expect("HEAD response");
        assert_eq!((r.status, r.header("content-length")), (200, Some("5")));
    }
    assert_eq!(seen.connections(), 1);
}

/// Broken chunking after the head has been passed on aborts the client's
/// response: it never looks complete, and the connection is not reused.
#[tokio::test]
async fn broken_chunking_mid_body_is_never_seen_as_complete() {
    for (answer, what) in [
        (&b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\nzz\r\n"[..], "bad size"),
        (b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\nhello\r\n0\r\n\r\n", "data past its size"),
        (b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\nhello\r\n0\r\n\r\n", "bare LF"),
        (b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nfffffffffffffffff\r\n", "size overflow"),
        (b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nhalf<close>", "short body"),
    ] {
        let (addr, seen) = scripted(&[answer, b"HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\nfine"]).await;
        let proxy = start(addr);
        let got = raw_get(&proxy, "/").await;
        // The head may or may not have been flushed before the body failed.
        assert!(got.is_empty() || got.starts_with("HTTP/1.1 200"), "{what}: {got}");
        // Complete would be a last chunk, or as many bytes as the length promised.
        let (head, body) = got.split_once("\r\n\r\n").unwrap_or((&got, ""));
        let promised = head.lines().find_map(|l| l.strip_prefix("content-length: ")).map(|n| n.parse::<usize>());
        let complete = got.ends_with("0\r\n\r\n") || promised.is_some_and(|n| n == Ok(body.len()));
        assert!(!complete, "{what}: looks complete: {got:?}");
        let r = get(&client::h1(), &proxy.url("ingress", "/")).await;
        assert_eq!(&r.body[..], b"fine", "{what}");
        assert_eq!(seen.connections(), 2, "{what}");
        assert_eq!(proxy.wait_access_log(2)[0]["reason"], "wasp_upstream_reset_mid_body", "{what}");
    }
}

/// What the upstream receives: an empty GET carries no framing; a body of
/// known length carries its content-length; a chunked upload is re-chunked
/// byte-exact; a client's transfer-encoding never reaches it beside a length.
#[tokio::test]
async fn the_upstream_receives_exact_framing() {
    let (addr, seen) = scripted(&[b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n"]).await;
    let proxy = start(addr);
    let mut conn = Conn::open(proxy.addr("ingress")).await;
    conn.send(b"GET /a HTTP/1.1\r\nhost: app\r\n\r\n").await;
    assert_eq!(conn.response(false).await.expect("a").status, 200);
    conn.send(b"POST /b HTTP/1.1\r\nhost: app\r\ncontent-length: 5\r\n\r\nhello").await;
    assert_eq!(conn.response(false).await.expect("b").status, 200);
    conn.send(b"POST /c HTTP/1.1\r\nhost: app\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n")
        .await;
    assert_eq!(conn.response(false).await.expect("c").status, 200);
    // One length repeated in two fields (RFC 9110 §8.6 lets a recipient take it) goes on as one field
    // (the server side collapses them; a list in one field is the client's 400).
    conn.send(b"POST /d HTTP/1.1\r\nhost: app\r\ncontent-length: 5\r\ncontent-length: 5\r\n\r\nworld").await;
    assert_eq!(conn.response(false).await.expect("d").status, 200);
    let got = seen.requests();
    assert_eq!(got.len(), 4, "{got:?}");
    let lower: Vec<String> = got.iter().map(|r| r.to_ascii_lowercase()).collect();
    assert!(lower[0].starts_with("get /a http/1.1\r\n"), "{}", got[0]);
    assert!(!lower[0].contains("content-length") && !lower[0].contains("transfer-encoding"), "{}", got[0]);
    assert!(lower[1].contains("\r\ncontent-length: 5\r\n") && got[1].ends_with("\r\n\r\nhello"), "{}", got[1]);
    assert!(!lower[1].contains("transfer-encoding"), "{}", got[1]);
    assert!(lower[2].contains("\r\ntransfer-encoding: chunked\r\n"), "{}", got[2]);
    let body = &got[2][got[2].find("\r\n\r\n").expect("head end") + 4..];
    let mut decoded = String::new();
    let mut rest = body;
    loop {
        let (size, after) = rest.split_once("\r\n").expect("chunk line");
        let size = usize::from_str_radix(size, 16).expect("hex size");
        if size == 0 {
            assert_eq!(after, "\r\n", "no trailers, one last CRLF");
            break;
        }
        decoded.push_str(&after[..size]);
        rest = after[size..].strip_prefix("\r\n").expect("CRLF after data");
    }
    assert_eq!(decoded, "abcde");
    assert!(!lower[2].contains("content-length"), "{}", got[2]);
    assert!(lower[3].contains("\r\ncontent-length: 5\r\n") && got[3].ends_with("\r\n\r\nworld"), "{}", got[3]);
    assert_eq!(lower[3].matches("content-length").count(), 1, "{}", got[3]);
}

/// An upstream that answers before reading the request body (and closes)
/// is answered to the client as it said, not as a 502.
#[tokio::test]
async fn an_early_answer_before_the_body_is_read_reaches_the_client() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 1024];
                let _ = conn.read(&mut buf).await;
                let _ = conn
                    .write_all(
                        b"HTTP/1.1 413 Payload Too Large\r\ncontent-length: 8\r\nconnection: close\r\n\r\ntoo big!",
                    )
                    .await;
                tokio::time::sleep(Duration::from_millis(200)).await;
            });
        }
    });
    let proxy = start(addr);
    let body = bytes::Bytes::from(vec![b'x'; 256 * 1024]);
    let r = client::send(
        &client::h1(),
        client::request(http::Method::POST, &proxy.url("ingress", "/"), client::full(body)),
    )
    .await
    .expect("response");
    assert_eq!((r.status.as_u16(), &r.body[..]), (413, &b"too big!"[..]));
}

/// A client's request trailers reach the upstream without the fields a
/// trailer may not carry or wasp vouches for: a forged host, length,
/// credential or client certificate in a trailer is dropped, the rest kept.
#[tokio::test]
async fn forged_fields_in_request_trailers_never_reach_the_upstream() {
    let (addr, seen) = scripted(&[b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n"]).await;
    let proxy = start(addr);
    let mut conn = Conn::open(proxy.addr("ingress")).await;
    conn.send(
        b"POST / HTTP/1.1\r\nhost: app\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\nhost: evil.example\r\n\
          content-length: 99\r\nauthorization: Bearer forged\r\nx-forwarded-client-cert: URI=spiffe://x/admin\r\n\
          x-request-id: forged\r\nx-checksum: 900150983cd24fb0\r\n\r\n",
    )
    .await;
    assert_eq!(conn.response(false).await.expect("response").status, 200);
    let got = seen.requests();
    let trailers = got[0].rsplit_once("\r\n0\r\n").expect("last chunk").1.to_ascii_lowercase();
    assert_eq!(trailers, "x-checksum: 900150983cd24fb0\r\n\r\n", "{}", got[0]);
}

/// An upgraded (WebSocket) connection leaves the endpoint's HTTP
/// connection cap: with `max_connections_per_endpoint: 1`, plain requests
/// still get through while a tunnel is open.
#[tokio::test]
async fn an_open_tunnel_does_not_hold_an_http_connection_slot() {
    let (addr, _) = scripted(&[
        b"HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: upgrade\r\n\r\nhello from the tunnel",
        b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok",
    ])
    .await;
    let yaml = one_route(&[addr], "http1", "        timeout: 2s", "    max_connections_per_endpoint: 1");
    let proxy = TestProxy::new(yaml).start();
    let mut ws = TcpStream::connect(proxy.addr("ingress")).await.expect("connect");
    ws.write_all(b"GET /ws HTTP/1.1\r\nhost: app\r\nconnection: upgrade\r\nupgrade: websocket\r\n\r\n")
        .await
        .expect("write");
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    while !String::from_utf8_lossy(&got).contains("hello from the tunnel") {
        let n = tokio::time::timeout(Duration::from_secs(5), ws.read(&mut buf)).await.expect("tunnel").expect("read");
        assert!(n > 0, "closed: {}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&buf[..n]);
    }
    assert!(got.starts_with(b"HTTP/1.1 101"), "{}", String::from_utf8_lossy(&got));
    let r = raw_get(&proxy, "/").await;
    assert!(r.starts_with("HTTP/1.1 200"), "a plain GET while the tunnel is open: {r:?}");
    drop(ws);
}

/// An idle pooled connection the upstream closes is closed by wasp too,
/// within seconds rather than at the end of its 90 s idle time (no socket
/// left half-closed, no connection slot held for it).
#[tokio::test]
async fn an_idle_connection_the_upstream_closed_is_closed_by_wasp_soon() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (tx, rx) = tokio::sync::oneshot::channel::<Duration>();
    tokio::spawn(async move {
        let (mut conn, _) = listener.accept().await.expect("accept");
        let mut buf = Vec::new();
        read_request(&mut conn, &mut buf).await.expect("request");
        conn.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok").await.expect("answer");
        // Half-close, as an upstream's keep-alive timeout does, and wait for wasp's side.
        conn.shutdown().await.expect("shutdown");
        let closed = std::time::Instant::now();
        let mut byte = [0u8; 1];
        let eof = conn.read(&mut byte).await;
        assert!(matches!(eof, Ok(0)), "{eof:?}");
        let _ = tx.send(closed.elapsed());
    });
    let proxy = start(addr);
    let r = get(&client::h1(), &proxy.url("ingress", "/")).await;
    assert_eq!((r.status.as_u16(), &r.body[..]), (200, &b"ok"[..]));
    let after =
        tokio::time::timeout(Duration::from_secs(10), rx).await.expect("wasp closed within 10 s").expect("upstream");
    assert!(after < Duration::from_secs(5), "closed after {after:?}");
}
