//! `examples/observability/`: every metric the Grafana dashboard and the
//! Prometheus alert rules query is one a running wasp exports, once it has
//! served some traffic (HTTP, TLS, a filter, a failed handshake).

use crate::support::client::{self, get};
use crate::support::tls::{self, Ca, Names};
use crate::support::{TestProxy, Upstream, metrics, wait_for_metric};
use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;
use tokio::io::AsyncWriteExt;

fn kit(file: &str) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples/observability").join(file);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Aggregations and operators: words in PromQL that name no metric.
const KEYWORDS: [&str; 19] = [
    "sum",
    "min",
    "max",
    "avg",
    "count",
    "stddev",
    "stdvar",
    "topk",
    "bottomk",
    "quantile",
    "count_values",
    "group",
    "and",
    "or",
    "unless",
    "bool",
    "offset",
    "inf",
    "nan",
];
/// Words followed by a list of label names.
const GROUPING: [&str; 6] = ["by", "without", "on", "ignoring", "group_left", "group_right"];
/// Series Prometheus makes itself for every scrape target.
const PROMETHEUS_OWN: [&str; 1] = ["up"];

/// The metric names a PromQL expression reads (with Grafana's `$variables`).
fn metric_names(expr: &str) -> Vec<String> {
    // Label matchers, ranges and strings name no metric: keep what is outside them.
    let (mut plain, mut braces, mut brackets, mut quote, mut escaped) = (String::new(), 0, 0, None, false);
    for c in expr.chars() {
        match (quote, c) {
            (Some(_), _) if escaped => escaped = false,
            (Some(_), '\\') => escaped = true,
            (Some(q), c) if c == q => quote = None,
            (Some(_), _) => {}
            (None, '"' | '\'' | '`') => quote = Some(c),
            (None, '{') => braces += 1,
            (None, '}') => braces -= 1,
            (None, '[') => brackets += 1,
            (None, ']') => brackets -= 1,
            (None, c) if braces == 0 && brackets == 0 => plain.push(c),
            _ => {}
        }
        if !plain.ends_with(' ') && (braces > 0 || brackets > 0 || quote.is_some()) {
            plain.push(' ');
        }
    }
    let chars: Vec<char> = plain.chars().collect();
    let next_visible = |mut i: usize| {
        while chars.get(i).is_some_and(|c| c.is_whitespace()) {
            i += 1;
        }
        i
    };
    let (mut names, mut i) = (Vec::new(), 0);
    while i < chars.len() {
        let c = chars[i];
        let word_char = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == ':';
        if c.is_ascii_digit() || c == '.' || c == '$' {
            // A number (0.99, 1e3, 86400) or a Grafana variable.
            i += 1;
            while chars.get(i).is_some_and(|&c| word_char(c) || c == '.') {
                i += 1;
            }
            continue;
        }
        if !(c.is_ascii_alphabetic() || c == '_' || c == ':') {
            i += 1;
            continue;
        }
        let start = i;
        while chars.get(i).is_some_and(|&c| word_char(c)) {
            i += 1;
        }
        let word: String = chars[start..i].iter().collect();
        let after = next_visible(i);
        if GROUPING.contains(&word.as_str()) {
            if chars.get(after) == Some(&'(') {
                i = after + chars[after..].iter().position(|&c| c == ')').unwrap_or(0);
            }
            continue;
        }
        let function = chars.get(after) == Some(&'(');
        if !function && !KEYWORDS.contains(&word.to_ascii_lowercase().as_str()) {
            names.push(word);
        }
    }
    names
}

/// A Grafana template query's PromQL: `label_values(SELECTOR, label)` reads SELECTOR.
fn template_query(query: &str) -> Option<&str> {
    match query.strip_prefix("label_values(") {
        Some(args) => args.rsplit_once(',').map(|(selector, _)| selector),
        None => Some(query),
    }
}

/// Every PromQL expression of the dashboard: panel targets (rows included),
/// annotations, and the template variables' queries.
fn dashboard_exprs(dashboard: &serde_json::Value) -> Vec<String> {
    fn walk(v: &serde_json::Value, out: &mut Vec<String>) {
        match v {
            serde_json::Value::Object(map) => {
                for (k, v) in map {
                    match (k.as_str(), v) {
                        ("expr", serde_json::Value::String(e)) => out.push(e.clone()),
                        _ => walk(v, out),
                    }
                }
            }
            serde_json::Value::Array(items) => items.iter().for_each(|v| walk(v, out)),
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk(dashboard, &mut out);
    for var in dashboard["templating"]["list"].as_array().expect("templating.list") {
        if var["type"] == "query" {
            let query = var["query"]["query"].as_str().or(var["query"].as_str()).expect("variable query");
            out.extend(template_query(query).map(str::to_string));
        }
    }
    out
}

fn alert_exprs(rules: &serde_yaml_ng::Value) -> Vec<String> {
    let groups = rules["groups"].as_sequence().expect("groups:");
    let exprs: Vec<String> = groups
        .iter()
        .flat_map(|g| g["rules"].as_sequence().expect("rules:"))
        .map(|r| r["expr"].as_str().unwrap_or_else(|| panic!("rule without expr: {r:?}")).to_string())
        .collect();
    exprs
}

/// `# TYPE name kind` of every family in a scrape.
fn exported(scrape: &str) -> HashMap<String, String> {
    scrape
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_once(' '))
        .map(|(name, kind)| (name.to_string(), kind.to_string()))
        .collect()
}

/// The names among `used` that the scrape does not export (a histogram's
/// series are `_bucket`, `_sum` and `_count`).
fn missing(used: &BTreeSet<String>, types: &HashMap<String, String>) -> Vec<String> {
    let found = |name: &str| {
        let plain = types.get(name).is_some_and(|kind| kind != "histogram");
        let series = ["_bucket", "_sum", "_count"].iter().any(|suffix| {
            name.strip_suffix(suffix).is_some_and(|base| types.get(base).is_some_and(|k| k == "histogram"))
        });
        plain || series || PROMETHEUS_OWN.contains(&name)
    };
    used.iter().filter(|n| !found(n)).cloned().collect()
}

#[test]
fn the_promql_scanner_finds_metrics_and_nothing_else() {
    let expr = r#"histogram_quantile(0.99, sum by (le, cluster) (rate(wasp_x_seconds_bucket{cluster=~"$cluster", a="b c"}[$__rate_interval])))
        / on (instance) group_left (version) max without (route) (wasp_build_info) > 7 * 86400 and time() - process_start_time_seconds offset 5m < bool 1e3"#;
    assert_eq!(metric_names(expr), ["wasp_x_seconds_bucket", "wasp_build_info", "process_start_time_seconds"]);
    assert_eq!(template_query("label_values(wasp_build_info{a=\"b\"}, instance)"), Some("wasp_build_info{a=\"b\"}"));
    let types = exported("# TYPE wasp_x_seconds histogram\n# TYPE wasp_requests_total counter\n");
    let used: BTreeSet<String> =
        ["wasp_x_seconds_bucket", "wasp_x_seconds", "wasp_requests_total", "wasp_request_total", "up"]
            .map(String::from)
            .into();
    assert_eq!(missing(&used, &types), ["wasp_request_total", "wasp_x_seconds"], "a typo is caught");
}

#[tokio::test]
async fn every_metric_the_dashboard_and_alerts_query_is_exported() {
    let dashboard: serde_json::Value = serde_json::from_str(&kit("wasp-dashboard.json")).expect("dashboard JSON");
    let rules: serde_yaml_ng::Value = serde_yaml_ng::from_str(&kit("alerts.yaml")).expect("alerts YAML");
    let (panel_exprs, rule_exprs) = (dashboard_exprs(&dashboard), alert_exprs(&rules));
    assert!(panel_exprs.len() >= 30 && rule_exprs.len() >= 10, "{panel_exprs:?}\n{rule_exprs:?}");
    let mut used = BTreeSet::new();
    for expr in panel_exprs.iter().chain(&rule_exprs) {
        let names = metric_names(expr);
        assert!(!names.is_empty(), "no metric in {expr:?}");
        used.extend(names);
    }
    assert!(used.len() >= 30, "{used:?}");

    // A wasp with a TLS listener, a route through a filter, and traffic
    // enough that every family has a series.
    let ca = Ca::new("kit-ca");
    let leaf = ca.issue(Names { cn: "app.local", dns: &["app.local"], ..Default::default() });
    let upstream = Upstream::start("app").await;
    let dir = tempfile::tempdir().expect("tempdir");
    let (cert, key) = leaf.write(dir.path(), "server");
    let filter = crate::support::filters::wasm("header-rewrite");
    let yaml = format!(
        "admin: {{ address: 127.0.0.1:0 }}
listeners:
  - name: ingress
    address: 127.0.0.1:0
    tls: {{ cert: {}, key: {} }}
    routes:
      - {{ name: api, match: {{ prefix: /api }}, cluster: app, filters: [rewrite] }}
clusters:
  - {{ name: app, endpoints: [\"{}\"] }}
filters:
  - name: rewrite
    module: {}
    config: {{ request: {{ set: {{ x-kit: \"1\" }} }} }}
",
        cert.display(),
        key.display(),
        upstream.addr,
        filter.display()
    );
    let proxy = TestProxy::new(yaml).start();
    let addr = proxy.addr("ingress");
    let https = tls::client(&ca.pem, None, &["http/1.1"]);
    let got = tls::get(addr, "app.local", https.clone(), "/api/x", &[]).await.expect("through the filter");
    assert_eq!(got.status, 200);
    let got = tls::get(addr, "app.local", https, "/elsewhere", &[]).await.expect("no route");
    assert_eq!(got.status, 404);
    let mut plain = tokio::net::TcpStream::connect(addr).await.expect("connect");
    plain.write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n").await.expect("write");
    wait_for_metric(&proxy, "wasp_tls_handshake_errors_total{listener=\"ingress\",reason=\"not_tls\"} 1").await;
    assert_eq!(get(&client::h1(), &proxy.admin_url("/healthz")).await.status, 200);

    let scrape = metrics(&proxy).await;
    let gone = missing(&used, &exported(&scrape));
    assert!(gone.is_empty(), "queried by the kit but not exported by wasp: {gone:?}\nexported:\n{scrape}");
}
