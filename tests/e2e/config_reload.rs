//! Config hot reload through the real binary: the config file rewritten in
//! place, renamed over and swapped the Kubernetes way under a continuous
//! request stream; invalid configs keep the serving one; listeners come and
//! go without dropping the connections they hold.

use crate::support::client;
use crate::support::filters::wasm;
use crate::support::load::{Load, Outcome, one_of};
use crate::support::{Running, TestProxy, Upstream, metrics, rename_over, wait_for_metric};
use std::time::{Duration, Instant};

/// Two clusters, `a` and `b`; listener `ingress` routes to `cluster`.
fn config(a: &Upstream, b: &Upstream, cluster: &str) -> String {
    format!(
        r#"admin: {{ address: 127.0.0.1:0 }}
listeners:
  - name: ingress
    address: 127.0.0.1:0
    routes:
      - {{ name: r, cluster: {cluster} }}
clusters:
  - {{ name: a, endpoints: ["{}"] }}
  - {{ name: b, endpoints: ["{}"] }}
"#,
        a.addr, b.addr
    )
}

/// Waits until a new request through `listener` is answered by upstream `name`.
async fn wait_for_upstream(proxy: &Running, listener: &str, name: &str) -> Duration {
    let start = Instant::now();
    loop {
        let reply = client::get(&client::h1(), &proxy.url(listener, "/")).await;
        if reply.header("x-upstream") == Some(name) {
            return start.elapsed();
        }
        assert!(start.elapsed() < Duration::from_secs(10), "upstream {name} never served");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn switching_a_route_between_clusters_50_times_under_load_fails_no_request() {
    let (a, b) = (Upstream::start("a").await, Upstream::start("b").await);
    let proxy = TestProxy::new(config(&a, &b, "a")).start();
    let path = proxy.config_path();
    let load = Load::start(proxy.url("ingress", "/"), 6, |r| one_of(r, "x-upstream", &["a", "b"]));

    let mut latencies = Vec::new();
    for i in 0..50 {
        let to = if i % 2 == 0 { "b" } else { "a" };
        let yaml = config(&a, &b, to);
        if i % 4 < 2 {
            rename_over(&path, yaml.as_bytes());
        } else {
            std::fs::write(&path, yaml).expect("write in place");
        }
        latencies.push(wait_for_upstream(&proxy, "ingress", to).await);
    }
    let Outcome { ok, bad } = load.finish().await;
    assert!(
        bad.is_empty(),
        "{} of {} requests failed or mixed: {:?}",
        bad.len(),
        ok + bad.len(),
        &bad[..bad.len().min(5)]
    );
    assert!(ok > 100, "the request stream ran ({ok} requests)");
    assert!(a.hits() > 25 && b.hits() > 25, "both clusters served: a {} b {}", a.hits(), b.hits());
    latencies.sort();
    eprintln!("config write to serving: p50 {:?}, max {:?}", latencies[25], latencies[49]);

    wait_for_metric(&proxy, "wasp_config_generation 51").await;
    let m = metrics(&proxy).await;
    assert!(m.contains("wasp_config_reloads_total{result=\"ok\"} 50"), "{m}");
    assert!(m.contains("wasp_config_reloads_total{result=\"error\"} 0"), "no half-written file was loaded:\n{m}");
    let served = client::get(&client::h1(), &proxy.admin_url("/config")).await.json();
    assert_eq!(served["listeners"][0]["routes"][0]["cluster"], "a", "{served}");
}

#[tokio::test]
async fn an_invalid_config_keeps_the_serving_one_and_logs_every_error() {
    let (a, b) = (Upstream::start("a").await, Upstream::start("b").await);
    let proxy = TestProxy::new(config(&a, &b, "a")).start();
    let path = proxy.config_path();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let bad = [
        ("not YAML", "listeners: [\n".to_string(), vec!["wasp.yaml"]),
        (
            "unknown cluster, bad duration",
            config(&a, &b, "nope").replace("name: r,", "name: r, timeout: 5 parsecs,"),
            vec!["listeners[0].routes[0].cluster", "listeners[0].routes[0].timeout"],
        ),
        (
            "address in use",
            config(&a, &b, "b").replace(
                "clusters:",
                &format!(
                    "  - name: second\n    address: {}\n    routes: [{{ name: r, cluster: b }}]\nclusters:",
                    taken.local_addr().expect("addr")
                ),
            ),
            vec!["listeners[1].address"],
        ),
        (
            "a missing module and an address in use: both reported",
            config(&a, &b, "b").replace(
                "clusters:",
                &format!(
                    "  - {{ name: second, address: {}, routes: [{{ name: r, cluster: b }}] }}\nclusters:",
                    taken.local_addr().expect("addr")
                ),
            ) + "filters:\n  - { name: f, module: /nonexistent/f.wasm }\n",
            vec!["filters[0].module", "listeners[1].address"],
        ),
    ];
    for (n, (what, yaml, paths)) in bad.iter().enumerate() {
        rename_over(&path, yaml.as_bytes());
        wait_for_metric(&proxy, &format!("wasp_config_reloads_total{{result=\"error\"}} {}", n + 1)).await;
        let logged: Vec<String> =
            proxy.stderr_lines().into_iter().filter(|l| l.contains("\"invalid config\"")).collect();
        for p in paths {
            assert!(logged.iter().any(|l| l.contains(p)), "{what}: no error at {p} in {logged:#?}");
        }
        let reply = client::get(&client::h1(), &proxy.url("ingress", "/")).await;
        assert_eq!(reply.header("x-upstream"), Some("a"), "{what}: the serving config stays");
        assert!(metrics(&proxy).await.contains("wasp_config_generation 1\n"), "{what}");
    }
    assert_eq!(proxy.stderr_lines().iter().filter(|l| l.contains("config reload failed")).count(), 4);

    rename_over(&path, config(&a, &b, "b").as_bytes());
    wait_for_upstream(&proxy, "ingress", "b").await;
    wait_for_metric(&proxy, "wasp_config_generation 2").await;
}

/// One route through a header-rewrite filter that sets `x-version` on responses.
fn rewrite(upstream: &Upstream, version: &str) -> String {
    format!(
        r#"admin: {{ address: 127.0.0.1:0 }}
listeners:
  - name: ingress
    address: 127.0.0.1:0
    routes:
      - {{ name: r, cluster: app, filters: [hr] }}
clusters:
  - {{ name: app, endpoints: ["{}"] }}
filters:
  - name: hr
    module: {}
    config: {{ response: {{ set: {{ x-version: "{version}" }} }} }}
"#,
        upstream.addr,
        wasm("header-rewrite").display()
    )
}

#[tokio::test]
async fn a_filter_config_change_is_a_new_version_and_a_rejected_one_keeps_the_old() {
    let upstream = Upstream::start("app").await;
    let proxy = TestProxy::new(rewrite(&upstream, "one")).start();
    let path = proxy.config_path();
    let version =
        async || client::get(&client::h1(), &proxy.url("ingress", "/")).await.header("x-version").map(String::from);
    assert_eq!(version().await.as_deref(), Some("one"));

    rename_over(&path, rewrite(&upstream, "two").as_bytes());
    wait_for_metric(&proxy, "wasp_config_generation 2").await;
    assert_eq!(version().await.as_deref(), Some("two"));
    let status = client::get(&client::h1(), &proxy.admin_url("/filters")).await.json()[0].clone();
    assert_eq!(status["generation"], 2, "{status}");

    // The filter refuses this at init: path_prefix.from must start with '/'.
    let rejected = rewrite(&upstream, "three")
        .replace("config: { response:", "config: { path_prefix: { from: nope, to: /x }, response:");
    rename_over(&path, rejected.as_bytes());
    wait_for_metric(&proxy, "wasp_config_reloads_total{result=\"error\"} 1").await;
    assert_eq!(version().await.as_deref(), Some("two"), "the serving version stays");
    let status = client::get(&client::h1(), &proxy.admin_url("/filters")).await.json()[0].clone();
    assert_eq!(status["generation"], 2, "{status}");
    assert!(status["last_error"].as_str().is_some_and(|e| e.contains("path_prefix")), "{status}");
    let m = metrics(&proxy).await;
    assert!(m.contains("wasp_filter_reloads_total{filter=\"hr\",result=\"error\"} 1"), "{m}");
    assert!(m.contains("wasp_filter_generation{filter=\"hr\"} 2"), "{m}");
    assert!(m.contains("wasp_config_generation 2\n"), "{m}");
    let log = proxy.access_log();
    assert_eq!(log.last().expect("access log")["filters"]["hr"], 2, "the access log names the generation");

    // The engine's memory slots are sized at start from the largest limits.memory (32 MiB by
    // default): raising it past that needs a restart, and the reload says so.
    let bigger = rewrite(&upstream, "four")
        .replace("    config: { response:", "    limits: { memory: 64MiB }\n    config: { response:");
    rename_over(&path, bigger.as_bytes());
    wait_for_metric(&proxy, "wasp_config_reloads_total{result=\"error\"} 2").await;
    let line = proxy.wait_stderr("restart wasp to raise it");
    assert!(line.contains("filters[0].limits.memory") && line.contains("64 MiB is more than the 32 MiB"), "{line}");
    assert_eq!(version().await.as_deref(), Some("two"), "the serving version stays");
}

#[tokio::test]
async fn listeners_are_added_and_removed_without_dropping_connections() {
    let (a, b) = (Upstream::start("a").await, Upstream::start("b").await);
    let mut proxy = TestProxy::new(config(&a, &b, "a")).start();
    let path = proxy.config_path();
    let ingress = proxy.addr("ingress");

    // A request in flight on the listener about to go, and an idle keep-alive connection on it.
    let slow = {
        let url = proxy.url("ingress", "/delay/1500");
        tokio::spawn(async move {
            client::send(&client::h1(), client::request(http::Method::GET, &url, client::empty())).await
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;

    let next = config(&a, &b, "a").replace("name: ingress", "name: egress").replace("cluster: a", "cluster: b");
    rename_over(&path, next.as_bytes());
    proxy.wait_listening("egress");
    proxy.wait_stderr("listener removed; draining its connections");
    assert_eq!(client::get(&client::h1(), &proxy.url("egress", "/")).await.header("x-upstream"), Some("b"));

    let reply = slow.await.expect("task").expect("the in-flight request on a removed listener completes");
    assert_eq!((reply.status.as_u16(), reply.header("x-upstream")), (200, Some("a")));
    let refused = tokio::net::TcpStream::connect(ingress).await;
    assert!(refused.is_err(), "the removed listener no longer accepts");

    // Added back: a listener with the old name is bound again.
    rename_over(&path, config(&a, &b, "a").as_bytes());
    wait_for_metric(&proxy, "wasp_config_generation 3").await;
    proxy.wait_listening("ingress");
    assert_eq!(client::get(&client::h1(), &proxy.url("ingress", "/")).await.header("x-upstream"), Some("a"));
}

#[tokio::test]
async fn a_kubernetes_volume_swap_and_sighup_reload_the_config() {
    // A ConfigMap volume: wasp.yaml -> ..data/wasp.yaml, ..data -> ..<timestamp>/
    let (a, b) = (Upstream::start("a").await, Upstream::start("b").await);
    let proxy = TestProxy::new(config(&a, &b, "a")).start();
    let dir = proxy.dir.path();
    let version = |name: &str, yaml: String| {
        std::fs::create_dir(dir.join(name)).expect("mkdir");
        std::fs::write(dir.join(name).join("wasp.yaml"), yaml).expect("write");
    };
    version("..2026_11_30_a", config(&a, &b, "a"));
    std::os::unix::fs::symlink("..2026_11_30_a", dir.join("..data")).expect("symlink");
    std::os::unix::fs::symlink("..data/wasp.yaml", dir.join("wasp.yaml.link")).expect("symlink");
    std::fs::rename(dir.join("wasp.yaml.link"), proxy.config_path()).expect("rename");

    version("..2026_11_30_b", config(&a, &b, "b"));
    std::os::unix::fs::symlink("..2026_11_30_b", dir.join("..data_tmp")).expect("symlink");
    std::fs::rename(dir.join("..data_tmp"), dir.join("..data")).expect("swap");
    wait_for_upstream(&proxy, "ingress", "b").await;
    wait_for_metric(&proxy, "wasp_config_generation 2").await;

    // SIGHUP looks again; unchanged content is not a new generation.
    proxy.signal("HUP");
    proxy.wait_stderr("reload requested");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(metrics(&proxy).await.contains("wasp_config_generation 2\n"));
    assert_eq!(client::get(&client::h1(), &proxy.url("ingress", "/")).await.header("x-upstream"), Some("b"));
}

#[tokio::test]
async fn restart_only_settings_keep_their_serving_values_and_say_so() {
    let (a, b) = (Upstream::start("a").await, Upstream::start("b").await);
    let proxy = TestProxy::new(config(&a, &b, "a")).start();
    let admin = proxy.addr("admin");
    let next =
        config(&a, &b, "b").replace("admin: { address: 127.0.0.1:0 }", "admin: { address: 127.0.0.1:1 }\nworkers: 3");
    rename_over(&proxy.config_path(), next.as_bytes());
    wait_for_upstream(&proxy, "ingress", "b").await;
    let warned = proxy.wait_stderr("take effect at restart");
    assert!(warned.contains("admin.address") && warned.contains("workers"), "{warned}");
    let served = client::get(&client::h1(), &format!("http://{admin}/config")).await.json();
    assert_eq!(served["admin"]["address"], "127.0.0.1:0", "{served}");
}

#[tokio::test]
async fn a_removed_listener_closes_what_is_still_open_after_the_drain_timeout() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let echo = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let upstream = echo.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = echo.accept().await {
            tokio::spawn(async move {
                let (mut r, mut w) = conn.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    let tcp = |name: &str| {
        format!(
            "admin: {{ address: 127.0.0.1:0 }}\ndrain_timeout: 1s\nlisteners:\n  - {{ name: {name}, address: 127.0.0.1:0, protocol: tcp, cluster: db }}\nclusters:\n  - {{ name: db, endpoints: [\"{upstream}\"] }}\n"
        )
    };
    let mut proxy = TestProxy::new(tcp("old")).start();
    let mut conn = tokio::net::TcpStream::connect(proxy.addr("old")).await.expect("connect");
    let echoed = async |conn: &mut tokio::net::TcpStream, text: &[u8]| {
        conn.write_all(text).await.expect("write");
        let mut buf = vec![0; text.len()];
        conn.read_exact(&mut buf).await.map(|_| buf)
    };
    assert_eq!(echoed(&mut conn, b"ping").await.expect("echo"), b"ping");

    rename_over(&proxy.config_path(), tcp("new").as_bytes());
    proxy.wait_listening("new");
    proxy.wait_stderr("listener removed; draining its connections");
    assert_eq!(echoed(&mut conn, b"still here").await.expect("open while draining"), b"still here");
    let line = proxy.wait_stderr("drain timeout passed; closing its remaining connections");
    assert!(line.contains("\"remaining\":1"), "{line}");
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(5), conn.read_to_end(&mut rest)).await;
    assert!(closed.is_ok(), "the connection is closed after the drain timeout");
}

#[tokio::test]
async fn a_config_naming_a_module_not_there_yet_is_applied_when_it_appears() {
    let (a, b) = (Upstream::start("a").await, Upstream::start("b").await);
    let proxy = TestProxy::new(config(&a, &b, "a")).start();
    let modules = tempfile::tempdir().expect("tempdir");
    let module = modules.path().join("late.wasm");
    let next = config(&a, &b, "b").replace("cluster: b }", "cluster: b, filters: [late] }")
        + &format!(
            "filters:\n  - {{ name: late, module: {}, config: {{ response: {{ set: {{ x-late: yes }} }} }} }}\n",
            module.display()
        );
    rename_over(&proxy.config_path(), next.as_bytes());
    wait_for_metric(&proxy, "wasp_config_reloads_total{result=\"error\"} 1").await;
    assert_eq!(client::get(&client::h1(), &proxy.url("ingress", "/")).await.header("x-upstream"), Some("a"));

    // The module arrives (another volume, a slower deploy step): the config is tried again.
    std::fs::copy(wasm("header-rewrite"), &module).expect("copy module");
    wait_for_upstream(&proxy, "ingress", "b").await;
    let reply = client::get(&client::h1(), &proxy.url("ingress", "/")).await;
    assert_eq!(reply.header("x-late"), Some("yes"));
    assert!(metrics(&proxy).await.contains("wasp_config_generation 2\n"));
}

#[tokio::test]
async fn a_listener_switching_protocol_is_replaced_on_the_same_port() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (a, b) = (Upstream::start("a").await, Upstream::start("b").await);
    let port = crate::support::refused_addr();
    let http = config(&a, &b, "a").replacen("    address: 127.0.0.1:0", &format!("    address: {port}"), 1);
    let proxy = TestProxy::new(http.clone()).start();
    let echo = client::get(&client::h1(), &proxy.url("ingress", "/")).await.json();
    assert!(echo["headers"]["x-forwarded-for"].is_string(), "proxied as HTTP: {echo}");

    let tcp = http.replace("    routes:\n      - { name: r, cluster: a }\n", "    protocol: tcp\n    cluster: a\n");
    assert_ne!(tcp, http);
    rename_over(&proxy.config_path(), tcp.as_bytes());
    wait_for_metric(&proxy, "wasp_config_generation 2").await;
    proxy.wait_stderr("listener removed; draining its connections");
    let listening = proxy.wait_stderr("\"protocol\":\"tcp\"");
    assert!(listening.contains(&format!("\"address\":\"{port}\"")), "the same socket: {listening}");
    let mut conn = tokio::net::TcpStream::connect(port).await.expect("connect");
    conn.write_all(b"GET / HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n").await.expect("write");
    let mut raw = String::new();
    conn.read_to_string(&mut raw).await.expect("read");
    assert!(raw.contains("x-upstream: a") && !raw.contains("x-forwarded-for"), "bytes copied as TCP: {raw}");
}
