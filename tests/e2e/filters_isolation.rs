//! Untrusted filters: each misbehaving filter gets its failure policy within
//! its limits, is counted by reason, leaks nothing to clients, and never
//! disturbs a concurrent stream of normal requests on another route.

use crate::support::client::{self, get};
use crate::support::filters::wasm;
use crate::support::metrics;
use crate::support::{TestProxy, Upstream, refused};
use std::time::{Duration, Instant};

fn config(upstream: std::net::SocketAddr, instances: u32) -> String {
    let route = |name: &str, filter: &str| {
        format!("      - {{ name: {name}, match: {{ prefix: /{name} }}, cluster: app, filters: [{filter}] }}\n")
    };
    // The memory bomb and the recursion get a generous time limit, so that on
    // a busy machine their memory or stack limit trips, not the clock.
    let filter = |name: &str, module: &str, extra: &str| {
        let timeout = if matches!(name, "grow" | "recurse") { "5s" } else { "20ms" };
        format!(
            "  - {{ name: {name}, module: {}, limits: {{ memory: 16MiB, timeout: {timeout} }}{extra} }}\n",
            wasm(module).display()
        )
    };
    format!(
        "admin: {{ address: 127.0.0.1:0 }}\nfilter_instances: {instances}\nlisteners:\n  - name: ingress\n    address: 127.0.0.1:0\n    routes:\n{}{}{}{}{}{}      - {{ name: ok, match: {{ prefix: / }}, cluster: app }}\n\
         clusters:\n  - {{ name: app, endpoints: [\"{upstream}\"] }}\nfilters:\n{}{}{}{}{}{}",
        route("spin", "spin"),
        route("grow", "grow"),
        route("recurse", "recurse"),
        route("trap", "trap"),
        route("open", "trap-open"),
        route("bad", "bad"),
        filter("spin", "test-spin", ""),
        filter("grow", "test-grow", ""),
        filter("recurse", "test-recurse", ""),
        filter("trap", "test-trap", ""),
        filter("trap-open", "test-trap", ", on_error: fail-open"),
        filter("bad", "test-bad-output", ""),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn misbehaving_filters_get_their_policy_while_other_routes_keep_serving() {
    let proxy = misbehaving_filters_are_contained(&[]).await;
    assert!(proxy.stderr_lines().iter().all(|l| !l.contains("cannot reserve")), "4 GiB slots were reserved");
}

/// Under an address-space limit the pool cannot reserve 4 GiB per memory
/// slot: it falls back to slots sized from the config, where the guest code
/// checks its bounds, and every vector is still contained.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn misbehaving_filters_are_contained_with_bounds_checked_slots() {
    let proxy = misbehaving_filters_are_contained(&["prlimit", "--as=34359738368", "--"]).await;
    proxy.wait_stderr("cannot reserve 4 GiB per filter memory");
}

/// Runs wasp (through `prefix`) with a filter per misbehaviour and checks
/// each gets its policy while a steady stream on another route is served.
async fn misbehaving_filters_are_contained(prefix: &[&str]) -> crate::support::Running {
    let upstream = Upstream::start("app").await;
    let proxy = TestProxy::new(config(upstream.addr, 64)).through(prefix).start();
    let ok_url = proxy.url("ingress", "/healthy");
    let steady = tokio::spawn(async move {
        let c = client::h1();
        let mut statuses = Vec::new();
        let until = Instant::now() + Duration::from_secs(3);
        while Instant::now() < until {
            statuses.push(get(&c, &ok_url).await.status.as_u16());
        }
        statuses
    });
    let c = client::h1();
    let cases = [
        ("/spin", "spin", "timeout"),
        ("/grow", "grow", "memory"),
        ("/recurse", "recurse", "stack_overflow"),
        ("/trap/boom", "trap", "trap"),
        ("/trap/oob", "trap", "trap"),
        ("/bad", "bad", "invalid_output"),
        ("/bad/header", "bad", "invalid_output"),
    ];
    for round in 0..2 {
        for (path, _, _) in cases {
            let start = Instant::now();
            let r = get(&c, &proxy.url("ingress", path)).await;
            assert_eq!(r.status, 500, "{path} (round {round})");
            assert_eq!(r.body, "wasp: request failed in a filter\n", "no guest text reaches the client");
            assert!(start.elapsed() < Duration::from_secs(2), "{path} took {:?}", start.elapsed());
        }
        let open = get(&c, &proxy.url("ingress", "/open/boom")).await;
        assert_eq!(open.status, 200, "fail-open skips the failing filter");
        let open = get(&c, &proxy.url("ingress", "/open/oob")).await;
        assert_eq!(open.status, 200, "fail-open skips the filter that read out of bounds");
        assert!(open.json()["headers"].get("x-leaked").is_none(), "the upstream got no edit from it: {:?}", open.body);
        assert_eq!(
            get(&c, &proxy.url("ingress", "/trap/fine")).await.status,
            200,
            "a new instance serves after a trap"
        );
    }
    let statuses = steady.await.expect("join");
    assert!(statuses.len() > 20, "the steady stream made progress: {}", statuses.len());
    assert!(statuses.iter().all(|s| *s == 200), "steady stream failed: {statuses:?}");

    let m = metrics(&proxy).await;
    for (_, filter, reason) in cases {
        let line = format!("wasp_filter_errors_total{{filter=\"{filter}\",reason=\"{reason}\"}}");
        let count: f64 = m.lines().find_map(|l| l.strip_prefix(&line)?.trim().parse().ok()).unwrap_or(0.0);
        assert!(count >= 2.0, "{line} = {count}\n{m}");
    }
    assert!(m.contains("wasp_filter_errors_total{filter=\"trap\",reason=\"trap\"} 4"), "boom and oob, twice: {m}");
    assert!(m.contains("wasp_filter_errors_total{filter=\"trap-open\",reason=\"trap\"} 4"), "{m}");
    let log = proxy.access_log();
    let failed: Vec<_> = log.iter().filter(|l| l["status"] == 500).collect();
    assert!(failed.iter().all(|l| l["reason"] == "wasp_filter_failed" && l["filter"].is_string()), "{failed:?}");
    proxy
}

fn one_filter(module: &str) -> String {
    format!(
        "admin: {{ address: 127.0.0.1:0 }}\nlisteners:\n  - {{ name: i, address: 127.0.0.1:0, routes: [{{ name: r, cluster: c, filters: [f] }}] }}\n\
         clusters:\n  - {{ name: c, endpoints: [\"127.0.0.1:1\"] }}\n\
         filters:\n  - {{ name: f, module: {} }}\n",
        wasm(module).display()
    )
}

#[tokio::test]
async fn a_component_for_another_wit_version_is_refused_naming_both() {
    for stderr in refused(&one_filter("test-wrong-version")) {
        assert!(
            stderr.contains("built for wasp:filter@9.0.0, but this wasp provides wasp:filter@0.2.0 (and serves 0.1.0)"),
            "{stderr}"
        );
        assert!(stderr.contains("filters[0].module: "), "{stderr}");
    }
}

/// A component built against a pre-release text of 0.2.0 (whose
/// `registration` had no standing edits) names 0.2.0 but does not fit it.
#[tokio::test]
async fn a_component_for_a_pre_release_0_2_text_is_refused_asking_for_a_rebuild() {
    for stderr in refused(&one_filter("test-draft-0-2")) {
        assert!(stderr.contains("filters[0].module: cannot instantiate: "), "{stderr}");
        assert!(stderr.contains("expected record of 6 fields, found 4 fields"), "{stderr}");
        assert!(stderr.contains("rebuild it with this wasp's wasp-sdk"), "{stderr}");
    }
}

#[tokio::test]
async fn a_filter_that_traps_in_init_is_refused_at_load() {
    for stderr in refused(&one_filter("test-init-trap")) {
        assert!(stderr.contains("filters[0].module: init failed (trap)"), "{stderr}");
    }
}

/// With every filter instance slot taken, further requests get a prompt 503
/// (fail-closed), never a hang; capacity comes back when requests finish.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instance_exhaustion_is_a_prompt_503() {
    let upstream = Upstream::start("app").await;
    let yaml = format!(
        "filter_instances: 2\nadmin: {{ address: 127.0.0.1:0 }}\nlisteners:\n  - name: ingress\n    address: 127.0.0.1:0\n    routes:\n      - {{ name: api, cluster: app, filters: [rw] }}\n\
         clusters:\n  - {{ name: app, endpoints: [\"{}\"] }}\nfilters:\n  - {{ name: rw, module: {} }}\n",
        upstream.addr,
        // A filter with a response phase holds its instance for the whole round trip.
        wasm("test-marker-a").display()
    );
    let proxy = TestProxy::new(yaml).start();
    let url = proxy.url("ingress", "/delay/800");
    let mut slow = Vec::new();
    for _ in 0..2 {
        let u = url.clone();
        slow.push(tokio::spawn(async move { get(&client::h1(), &u).await.status.as_u16() }));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(150)).await;
    let start = Instant::now();
    let over = get(&client::h1(), &proxy.url("ingress", "/")).await;
    assert_eq!(over.status, 503);
    assert_eq!(over.body, "wasp: filter capacity exhausted\n");
    assert!(start.elapsed() < Duration::from_millis(500), "took {:?}", start.elapsed());
    for s in slow {
        assert_eq!(s.await.expect("join"), 200, "requests holding instances complete");
    }
    assert_eq!(get(&client::h1(), &proxy.url("ingress", "/")).await.status, 200, "capacity comes back");
    let m = metrics(&proxy).await;
    assert!(m.contains("wasp_filter_errors_total{filter=\"rw\",reason=\"unavailable\"} 1"), "{m}");
    let log = proxy.access_log();
    assert!(log.iter().any(|l| l["status"] == 503 && l["reason"] == "wasp_filter_unavailable"), "{log:?}");
}
