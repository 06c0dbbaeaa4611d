//! The access log: one JSON line per request, to a file if configured, and a
//! failing sink never fails a request.

use crate::support::client::{self, get};
use crate::support::metrics;
use crate::support::{TestProxy, Upstream, one_route};

#[tokio::test]
async fn lines_go_to_a_file_with_the_request_details() {
    let upstream = Upstream::start("app").await;
    let yaml = format!("access_log: access.log\n{}", one_route(&[upstream.addr], "http1", "", ""));
    let proxy = TestProxy::new(yaml).start();
    let c = client::h1();
    assert_eq!(get(&c, &proxy.url("ingress", "/bytes/1234?x=y")).await.status, 200);
    let path = proxy.dir.path().join("access.log");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    let text = loop {
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        if text.ends_with('\n') || std::time::Instant::now() > deadline {
            break text;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    let line: serde_json::Value = serde_json::from_str(text.trim()).expect("one JSON line");
    assert_eq!(line["method"], "GET");
    assert_eq!(line["path"], "/bytes/1234?x=y");
    assert_eq!(line["status"], 200);
    assert_eq!(line["bytes_out"], 1234);
    assert_eq!(line["route"], "main");
    assert_eq!(line["cluster"], "app");
    assert_eq!(line["upstream"], upstream.addr.to_string());
    assert_eq!(line["protocol"], "HTTP/1.1");
    assert!(line["duration_ms"].as_f64().is_some());
    assert!(line["ts"].as_str().is_some_and(|t| t.ends_with('Z')));
    assert!(proxy.access_log().is_empty(), "nothing on stdout when logging to a file");
}

#[tokio::test]
async fn a_failing_sink_never_fails_requests() {
    let upstream = Upstream::start("app").await;
    let yaml = format!("access_log: /dev/full\n{}", one_route(&[upstream.addr], "http1", "", ""));
    let proxy = TestProxy::new(yaml).start();
    let c = client::h1();
    for _ in 0..50 {
        assert_eq!(get(&c, &proxy.url("ingress", "/")).await.status, 200);
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let m = metrics(&proxy).await;
        let errors = m
            .lines()
            .find_map(|l| l.strip_prefix("wasp_access_log_errors_total "))
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0);
        if errors > 0.0 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "write errors must be counted:\n{m}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}
