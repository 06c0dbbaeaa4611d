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
    let no_route =
        "wasp_local_replies_total{cluster=\"\",code=\"404\",listener=\"ingress\",reason=\"wasp_no_route\",route=\"\"}";
    assert_eq!(must(&m, no_route), 0.0);
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
async fn overflow_tls_and_filter_failures_are_wasp_reasons_and_a_filter_reply_is_the_filter_s() {
    let (good, slow) = (Upstream::start("app").await, Upstream::start("slow").await);
    slow.set_delay(Duration::from_millis(500));
    let ca = crate::support::tls::Ca::new("other-ca");
    let dir = tempfile::tempdir().expect("tempdir");
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, &ca.pem).expect("write CA");
    let yaml = format!(
        "admin: {{ address: 127.0.0.1:0 }}
listeners:
  - name: ingress
    address: 127.0.0.1:0
    routes:
      - {{ name: busy, match: {{ prefix: /busy }}, cluster: busy }}
      - {{ name: tls, match: {{ prefix: /tls }}, cluster: tls }}
      - {{ name: trap, match: {{ prefix: /trap }}, cluster: app, filters: [trap] }}
      - {{ name: limited, match: {{ prefix: /limited }}, cluster: app, filters: [limit] }}
clusters:
  - {{ name: app, endpoints: [\"{good}\"] }}
  - {{ name: busy, endpoints: [\"{slow}\"], circuit_breaker: {{ max_pending: 1 }} }}
  - {{ name: tls, endpoints: [\"{good}\"], tls: {{ ca: {ca}, sni: app.local }} }}
filters:
  - {{ name: trap, module: {trap} }}
  - name: limit
    module: {limit}
    config: {{ rate: 0.001, burst: 1, key: \"header:x-api-key\" }}
    allow: [log, metrics, clock, kv]
",
        good = good.addr,
        slow = slow.addr,
        ca = ca_file.display(),
        trap = crate::support::filters::wasm("test-trap").display(),
        limit = crate::support::filters::wasm("rate-limit").display(),
    );
    let proxy = TestProxy::new(yaml).start();
    let url = |path: &str| proxy.url("ingress", path);
    let (c1, c2, busy) = (client::h1(), client::h1(), url("/busy"));
    let (first, second) = tokio::join!(get(&c1, &busy), async {
        tokio::time::sleep(Duration::from_millis(100)).await;
        get(&c2, &busy).await
    });
    assert_eq!((first.status.as_u16(), second.status.as_u16()), (200, 503), "max_pending 1");
    let c = client::h1();
    assert_eq!(get(&c, &url("/tls")).await.status, 503, "a plain upstream fails the TLS handshake");
    assert_eq!(get(&c, &url("/trap/boom")).await.status, 500, "a fail-closed filter trapped");
    let limited = |key: &'static str| {
        let req = http::Request::get(url("/limited")).header("x-api-key", key).body(client::empty());
        client::send(&c, req.expect("request"))
    };
    assert_eq!(limited("k").await.expect("first").status, 200);
    assert_eq!(limited("k").await.expect("second").status, 429);
    proxy.wait_access_log(6);

    let m = metrics(&proxy).await;
    let local = |route: &str, cluster: &str, code: u16, reason: &str| {
        let sample = format!(
            "wasp_local_replies_total{{cluster=\"{cluster}\",code=\"{code}\",listener=\"ingress\",reason=\"{reason}\",\
             route=\"{route}\"}}"
        );
        value(&m, &sample)
    };
    assert_eq!(local("busy", "busy", 503, "wasp_overflow"), Some(1.0));
    assert_eq!(local("tls", "tls", 503, "wasp_upstream_tls_failure"), Some(1.0));
    assert_eq!(local("trap", "app", 500, "wasp_filter_failed"), Some(1.0));
    let requests = |route: &str, code: u16, source: &str| {
        let class = format!("{}xx", code / 100);
        let sample = format!(
            "wasp_requests_total{{class=\"{class}\",cluster=\"app\",code=\"{code}\",listener=\"ingress\",\
             route=\"{route}\",source=\"{source}\"}}"
        );
        value(&m, &sample)
    };
    assert_eq!(requests("trap", 500, "wasp"), Some(1.0));
    assert_eq!(requests("limited", 200, "upstream"), Some(1.0));
    assert_eq!(requests("limited", 429, "filter"), Some(1.0), "a filter's reply is the filter's, not wasp's");
    assert!(!m.contains("reason=\"wasp_filter_reply\""), "a filter's reply is no local reply of wasp's:\n{m}");
    assert_eq!(must(&m, "wasp_upstream_errors_total{cluster=\"busy\",kind=\"overflow\"}"), 1.0);
    assert_eq!(must(&m, "wasp_upstream_errors_total{cluster=\"tls\",kind=\"tls\"}"), 1.0);
    assert_eq!(must(&m, "wasp_filter_errors_total{filter=\"trap\",reason=\"trap\"}"), 1.0);
    assert_eq!(must(&m, "wasp_filter_errors_total{filter=\"limit\",reason=\"timeout\"}"), 0.0, "at 0 from load");
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
