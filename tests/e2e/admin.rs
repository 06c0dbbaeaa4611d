//! The admin listener: health, readiness, effective config and metrics.

use crate::support::client::{self, get, request, send};
use crate::support::metrics;
use crate::support::{TestProxy, Upstream, one_route, refused_addr};
use http::Method;

fn with_ready_cluster(yaml: String) -> String {
    yaml.replace("admin: { address: 127.0.0.1:0 }", "admin: { address: 127.0.0.1:0, ready_cluster: app }")
}

#[tokio::test]
async fn health_readiness_config_and_metrics() {
    let upstream = Upstream::start("app").await;
    let proxy = TestProxy::new(with_ready_cluster(one_route(&[upstream.addr], "http1", "", ""))).start();
    let c = client::h1();
    let health = get(&c, &proxy.admin_url("/healthz")).await;
    assert_eq!((health.status.as_u16(), &health.body[..]), (200, &b"ok\n"[..]));
    assert_eq!(get(&c, &proxy.admin_url("/readyz")).await.status, 200);

    let config = get(&c, &proxy.admin_url("/config")).await.json();
    assert_eq!(config["listeners"][0]["routes"][0]["timeout"], "15s", "defaults are shown");
    assert_eq!(config["clusters"][0]["circuit_breaker"]["consecutive_failures"], 5);

    get(&c, &proxy.url("ingress", "/")).await;
    get(&c, &proxy.url("ingress", "/status/503")).await;
    let m = metrics(&proxy).await;
    for line in [
        "wasp_requests_total{class=\"2xx\",cluster=\"app\",code=\"200\",listener=\"ingress\",route=\"main\",source=\"upstream\"} 1",
        "wasp_requests_total{class=\"5xx\",cluster=\"app\",code=\"503\",listener=\"ingress\",route=\"main\",source=\"upstream\"} 1",
        "wasp_request_duration_seconds_count{cluster=\"app\",listener=\"ingress\",route=\"main\"} 2",
        "wasp_connections_total{listener=\"ingress\"}",
        "wasp_active_connections{listener=\"ingress\"}",
        "wasp_circuit_breaker_state{cluster=\"app\"",
        "wasp_build_info{version=",
    ] {
        assert!(m.contains(line), "missing {line} in\n{m}");
    }
    assert_eq!(get(&c, &proxy.admin_url("/nope")).await.status, 404);
    let post = send(&c, request(Method::POST, &proxy.admin_url("/healthz"), client::empty())).await.expect("POST");
    assert_eq!(post.status, 405);
}

#[tokio::test]
async fn not_ready_while_the_local_app_is_down() {
    let proxy = TestProxy::new(with_ready_cluster(one_route(&[refused_addr()], "http1", "", ""))).start();
    let ready = get(&client::h1(), &proxy.admin_url("/readyz")).await;
    assert_eq!(ready.status, 503);
    assert_eq!(ready.body, "not ready: cluster \"app\" does not accept connections\n");
    assert_eq!(get(&client::h1(), &proxy.admin_url("/healthz")).await.status, 200, "alive all the same");
}

#[tokio::test]
async fn config_hides_filter_secrets_unless_asked() {
    let upstream = Upstream::start("app").await;
    let module = crate::support::filters::wasm("header-rewrite");
    let yaml = |admin: &str| {
        one_route(&[upstream.addr], "http1", "", "").replace("admin: { address: 127.0.0.1:0 }", admin)
            + &format!(
                "filters:\n  - name: rw\n    module: {}\n    config: {{ request: {{ set: {{ authorization: \"Bearer s3cret-token\" }} }} }}\n",
                module.display()
            )
    };
    let hidden = TestProxy::new(yaml("admin: { address: 127.0.0.1:0 }")).start();
    let config = get(&client::h1(), &hidden.admin_url("/config")).await;
    let text = String::from_utf8_lossy(&config.body).to_string();
    assert!(!text.contains("s3cret-token"), "{text}");
    let redacted = config.json()["filters"][0]["config"]["redacted"].as_str().map(str::to_string);
    assert!(redacted.as_deref().is_some_and(|r| r.starts_with("sha256:") && r.len() == 71), "{text}");

    let shown = TestProxy::new(yaml("admin: { address: 127.0.0.1:0, show_secrets: true }")).start();
    let text = String::from_utf8_lossy(&get(&client::h1(), &shown.admin_url("/config")).await.body).to_string();
    assert!(text.contains("s3cret-token"), "opted in: {text}");
}

/// `wasp probe URL` (the image's health check): exit 0 on 2xx, 1 otherwise.
fn probe(url: &str) -> (bool, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_wasp")).args(["probe", url]).output().expect("run probe");
    (out.status.success(), String::from_utf8_lossy(&out.stderr).to_string())
}

#[tokio::test]
async fn wasp_probe_answers_the_admin_endpoints_exit_code() {
    let proxy = TestProxy::new(with_ready_cluster(one_route(&[refused_addr()], "http1", "", ""))).start();
    assert_eq!(probe(&proxy.admin_url("/healthz")), (true, String::new()));
    let (ok, why) = probe(&proxy.admin_url("/readyz"));
    assert!(!ok);
    assert!(why.ends_with("/readyz: 503\n"), "{why}");
    let (ok, why) = probe(&format!("http://{}/healthz", refused_addr()));
    assert!(!ok && why.contains("cannot connect"), "{why}");
}
