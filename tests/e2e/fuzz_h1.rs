//! A few thousand randomly mutated HTTP/1.1 requests at the real binary:
//! no panic, no hang, and the upstream never sees a request wasp did not
//! answer as its own (no smuggled second request, no request split in two).
//! The mutations are seeded: a failure names its seed and case to replay.

use crate::support::client::{self, get};
use crate::support::{TestProxy, Upstream, one_route};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Well-formed requests the mutations start from.
const SEEDS: &[&[u8]] = &[
    b"GET /a/b?x=1 HTTP/1.1\r\nhost: app.local\r\nx-one: 1\r\n\r\n",
    b"POST /sha256 HTTP/1.1\r\nhost: app.local\r\ncontent-length: 5\r\n\r\nhello",
    b"POST /sha256 HTTP/1.1\r\nhost: app.local\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    b"GET http://app.local/a/../b HTTP/1.1\r\nhost: other.local\r\n\r\n",
    b"GET /%61/./b//c HTTP/1.1\r\nhost: app.local\r\nconnection: keep-alive, x-one\r\nx-one: 1\r\n\r\n",
    b"GET /ws HTTP/1.1\r\nhost: app.local\r\nconnection: upgrade\r\nupgrade: h2c\r\n\r\n",
];

/// Bytes and lines that tend to matter to a parser.
const BYTES: &[u8] = b"\r\n \t:;,/%.\\\0\x7f\xff0aA9-";
const LINES: &[&str] = &[
    "transfer-encoding: chunked",
    "transfer-encoding: chunked, chunked",
    "transfer-encoding: gzip",
    "content-length: 0",
    "content-length: 5",
    "content-length: -1",
    "content-length: 99999999999999999999",
    "host: evil.local",
    "host:",
    " folded",
    "expect: 100-continue",
    "connection: close",
    "upgrade: websocket",
];

fn mutate(rng: &mut fastrand::Rng, seed: &[u8]) -> Vec<u8> {
    let mut req = seed.to_vec();
    for _ in 0..rng.usize(1..4) {
        let at = rng.usize(..=req.len());
        match rng.u8(..5) {
            0 if !req.is_empty() => {
                let i = rng.usize(..req.len());
                req[i] = BYTES[rng.usize(..BYTES.len())];
            }
            1 if !req.is_empty() => {
                let end = (at + rng.usize(1..8)).min(req.len());
                req.drain(at.min(end)..end);
            }
            2 => req.splice(at..at, [BYTES[rng.usize(..BYTES.len())]]).for_each(drop),
            3 => {
                // A header line, inserted after the request line.
                let line_end = req.windows(2).position(|w| w == b"\r\n").map_or(0, |p| p + 2);
                let line = format!("{}\r\n", LINES[rng.usize(..LINES.len())]);
                req.splice(line_end..line_end, line.bytes()).for_each(drop);
            }
            _ => {
                // A second request glued on: only ever answered as one more exchange.
                req.extend_from_slice(SEEDS[rng.usize(..SEEDS.len())]);
            }
        }
    }
    req
}

/// What came back on one connection: how many responses, and how many of
/// them the upstream produced (it marks its own with `x-upstream`).
fn count(reply: &[u8]) -> (usize, usize) {
    let text = String::from_utf8_lossy(reply);
    let responses = text.matches("HTTP/1.1 ").count() + text.matches("HTTP/1.0 ").count();
    let upstream = text.to_ascii_lowercase().matches("\r\nx-upstream: app\r\n").count();
    (responses, upstream)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutated_requests_never_crash_hang_or_desync() {
    let upstream = Upstream::start("app").await;
    let proxy = TestProxy::new(one_route(&[upstream.addr], "http1", "", "")).start();
    let addr = proxy.addr("ingress");
    let seed = std::env::var("WASP_FUZZ_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(0x5eed_0001);
    let mut rng = fastrand::Rng::with_seed(seed);
    for case in 0..3000 {
        let start = SEEDS[rng.usize(..SEEDS.len())];
        let req = mutate(&mut rng, start);
        let hits = upstream.hits();
        let mut conn = TcpStream::connect(addr).await.expect("connect");
        conn.write_all(&req).await.expect("write");
        // The client is done: wasp must finish the exchange and close, never wait.
        conn.shutdown().await.expect("shutdown");
        let mut reply = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(10), conn.read_to_end(&mut reply)).await;
        let what = || {
            format!(
                "seed {seed:#x} case {case}: {:?}\n-> {:?}",
                String::from_utf8_lossy(&req),
                String::from_utf8_lossy(&reply)
            )
        };
        assert!(read.is_ok(), "hang: {}", what());
        let (_, from_upstream) = count(&reply);
        // The upstream may still be finishing a request wasp gave up on
        // (the client's half-sent body); let it.
        tokio::time::sleep(Duration::from_millis(1)).await;
        let seen = upstream.hits() - hits;
        assert!(
            seen <= count(&reply).0 && from_upstream <= seen,
            "upstream saw {seen} request(s), wasp answered {} ({from_upstream} from the upstream): {}",
            count(&reply).0,
            what()
        );
    }
    assert_eq!(get(&client::h1(), &proxy.url("ingress", "/")).await.status, 200, "still serving");
    assert!(!proxy.stderr_lines().iter().any(|l| l.contains("panicked")), "no panic");
}
