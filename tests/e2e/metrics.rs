//! The metrics an SRE dashboard reads: status codes by who answered, wasp's
//! own replies by reason, the upstream wait, breaker openings, process
//! metrics, and series that exist at 0 before anything happens.

use crate::support::client::{self, get};
use crate::support::{TestProxy, Upstream, metrics, refused_addr};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The value of the sample `name{labels}` (labels in Prometheus' sorted order).
fn value(text: &str, sample: &str) -> Option<f64> {
    text.lines().find_map(|l| l.strip_prefix(sample)?.strip_prefix(' ')?.parse().ok())
}

fn must(text: &str, sample: &str) -> f64 {
    value(text, sample).unwrap_or_else(|| panic!("no sample {sample} in\n{text}"))
}

/// Routes by path prefix to a good cluster, a refused one, one whose breaker
/// opens after one failure, and a slow one behind a short route timeout.
fn config(good: &Upstream, slow: &Upstream) -> String {
    let (good, slow, dead) = (good.addr, slow.addr, refused_addr());
    format!(
        "admin: {{ address: 127.0.0.1:0 }}
listeners:
  - name: ingress
    address: 127.0.0.1:0
    routes:
      - {{ name: good, match: {{ prefix: /status }}, cluster: app }}
      - {{ name: refused, match: {{ prefix: /refused }}, cluster: dead }}
      - {{ name: fragile, match: {{ prefix: /fragile }}, cluster: fragile }}
      - {{ name: slow, match: {{ prefix: /slow }}, cluster: slow, timeout: 200ms }}
clusters:
  - {{ name: app, endpoints: [\"{good}\"] }}
  - {{ name: dead, endpoints: [\"{dead}\"], circuit_breaker: {{ consecutive_failures: 100 }} }}
  - {{ name: fragile, endpoints: [\"{dead}\"], circuit_breaker: {{ consecutive_failures: 1, open_for: 60s }} }}
  - {{ name: slow, endpoints: [\"{slow}\"] }}
"
    )
}

#[tokio::test]
async fn status_codes_are_counted_by_who_answered_and_local_replies_by_reason() {
    let (good, slow) = (Upstream::start("app").await, Upstream::start("slow").await);
    slow.set_delay(Duration::from_secs(2));
    let proxy = TestProxy::new(config(&good, &slow)).start();
    let c = client::h1();

    // Before any request: the per-cluster series that alerts use are there, at 0.
    let m = metrics(&proxy).await;
    for cluster in ["app", "dead", "fragile", "slow"] {
        assert_eq!(must(&m, &format!("wasp_circuit_breaker_opened_total{{cluster=\"{cluster}\"}}")), 0.0);
        assert_eq!(must(&m, &format!("wasp_upstream_wait_seconds_count{{cluster=\"{cluster}\"}}")), 0.0);
        for kind in ["connect_failure", "timeout", "circuit_open", "overflow", "reset", "tls"] {
            assert_eq!(must(&m, &format!("wasp_upstream_errors_total{{cluster=\"{cluster}\",kind=\"{kind}\"}}")), 0.0);
        }
    }

    let statuses = [
        get(&c, &proxy.url("ingress", "/status/200")).await.status,
        get(&c, &proxy.url("ingress", "/status/503")).await.status,
        get(&c, &proxy.url("ingress", "/status/503")).await.status,
        get(&c, &proxy.url("ingress", "/nowhere")).await.status,
        get(&c, &proxy.url("ingress", "/refused")).await.status,
        get(&c, &proxy.url("ingress", "/fragile")).await.status,
        get(&c, &proxy.url("ingress", "/fragile")).await.status,
        get(&c, &proxy.url("ingress", "/slow")).await.status,
    ];
    assert_eq!(statuses.map(|s| s.as_u16()), [200, 503, 503, 404, 503, 503, 503, 504]);
    proxy.wait_access_log(statuses.len());

    let m = metrics(&proxy).await;
    let requests = |route: &str, cluster: &str, code: u16, source: &str| {
        let class = format!("{}xx", code / 100);
        let sample = format!(
            "wasp_requests_total{{class=\"{class}\",cluster=\"{cluster}\",code=\"{code}\",listener=\"ingress\",\
             route=\"{route}\",source=\"{source}\"}}"
        );
        value(&m, &sample)
    };
    let local = |route: &str, cluster: &str, code: u16, reason: &str| {
        let sample = format!(
            "wasp_local_replies_total{{cluster=\"{cluster}\",code=\"{code}\",listener=\"ingress\",reason=\"{reason}\",\
             route=\"{route}\"}}"
        );
        value(&m, &sample)
    };
    assert_eq!(requests("good", "app", 200, "upstream"), Some(1.0));
    assert_eq!(requests("good", "app", 503, "upstream"), Some(2.0), "the upstream's own 503s");
    assert_eq!(requests("good", "app", 503, "wasp"), None);
    assert_eq!(requests("", "", 404, "wasp"), Some(1.0));
    assert_eq!(local("", "", 404, "wasp_no_route"), Some(1.0));
    assert_eq!(requests("refused", "dead", 503, "wasp"), Some(1.0));
    assert_eq!(local("refused", "dead", 503, "wasp_upstream_connect_failure"), Some(1.0));
    assert_eq!(requests("fragile", "fragile", 503, "wasp"), Some(2.0));
    assert_eq!(local("fragile", "fragile", 503, "wasp_upstream_connect_failure"), Some(1.0));
    assert_eq!(local("fragile", "fragile", 503, "wasp_circuit_open"), Some(1.0), "the breaker opened after one");
    assert_eq!(requests("slow", "slow", 504, "wasp"), Some(1.0));
    assert_eq!(local("slow", "slow", 504, "wasp_request_timeout"), Some(1.0));
    assert!(!m.contains("wasp_local_replies_total{cluster=\"app\""), "the upstream's 503s are not wasp's:\n{m}");

    assert_eq!(must(&m, "wasp_circuit_breaker_opened_total{cluster=\"fragile\"}"), 1.0);
    assert_eq!(must(&m, "wasp_circuit_breaker_opened_total{cluster=\"dead\"}"), 0.0);
    assert_eq!(must(&m, "wasp_upstream_errors_total{cluster=\"fragile\",kind=\"circuit_open\"}"), 1.0);
    assert_eq!(must(&m, "wasp_upstream_errors_total{cluster=\"slow\",kind=\"timeout\"}"), 1.0);
    // One sample per attempt that reached an endpoint's connection pool.
    assert_eq!(must(&m, "wasp_upstream_wait_seconds_count{cluster=\"app\"}"), 3.0);
    assert_eq!(must(&m, "wasp_upstream_wait_seconds_count{cluster=\"dead\"}"), 1.0, "a failed dial is a wait too");
}

#[tokio::test]
async fn the_upstream_wait_histogram_sees_requests_queue_for_a_connection() {
    let upstream = Upstream::start("app").await;
    upstream.set_delay(Duration::from_millis(300));
    let cluster = "    max_connections_per_endpoint: 1";
    let yaml = crate::support::one_route(&[upstream.addr], "http1", "", cluster);
    let proxy = TestProxy::new(yaml).start();
    let url = proxy.url("ingress", "/");
    let (c1, c2) = (client::h1(), client::h1());
    let (a, b) = tokio::join!(get(&c1, &url), get(&c2, &url));
    assert_eq!((a.status.as_u16(), b.status.as_u16()), (200, 200));

    let m = metrics(&proxy).await;
    assert_eq!(must(&m, "wasp_upstream_wait_seconds_count{cluster=\"app\"}"), 2.0);
    let quick = must(&m, "wasp_upstream_wait_seconds_bucket{cluster=\"app\",le=\"0.1\"}");
    assert_eq!(quick, 1.0, "one request dialed at once, the other waited for its connection:\n{m}");
    assert!(must(&m, "wasp_upstream_wait_seconds_sum{cluster=\"app\"}") >= 0.25);
}

#[tokio::test]
async fn process_metrics_are_exported_and_plausible() {
    let upstream = Upstream::start("app").await;
    let proxy = TestProxy::new(crate::support::one_route(&[upstream.addr], "http1", "", "")).start();
    let m = metrics(&proxy).await;
    let now = SystemTime::now().duration_since(UNIX_EPOCH).expect("clock").as_secs_f64();
    let started = must(&m, "process_start_time_seconds");
    assert!((now - started).abs() < 60.0, "started at {started}, now is {now}");
    let rss = must(&m, "process_resident_memory_bytes");
    assert!(rss > 1e6 && rss < 4e9, "rss {rss}");
    assert!((rss / 1024.0 - proxy.rss_kib() as f64).abs() < 64.0 * 1024.0, "rss {rss} vs /proc");
    assert!(must(&m, "process_open_fds") >= 5.0, "stdio, listeners, epoll");
    assert!(must(&m, "process_cpu_seconds_total") >= 0.0);
    assert!(must(&m, "process_max_fds") > 0.0);
}
