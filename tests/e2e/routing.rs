//! Routes match by path prefix or exact path, host, headers and method; the
//! first match wins and no match is a 404 from wasp.

use crate::support::client::{self, get, request, send};
use crate::support::{TestProxy, Upstream};
use http::{Method, Request};

#[tokio::test]
async fn first_matching_route_wins_and_no_match_is_404() {
    let (a, b, c, d, e) = tokio::join!(
        Upstream::start("exact"),
        Upstream::start("host"),
        Upstream::start("canary"),
        Upstream::start("post-only"),
        Upstream::start("api"),
    );
    let yaml = format!(
        "admin: {{ address: 127.0.0.1:0 }}
listeners:
  - name: ingress
    address: 127.0.0.1:0
    routes:
      - {{ name: exact, match: {{ path: /api/health }}, cluster: exact }}
      - {{ name: host, match: {{ prefix: /api, host: \"*.example.com\" }}, cluster: host }}
      - {{ name: canary, match: {{ prefix: /api, headers: {{ x-canary: \"1\" }} }}, cluster: canary }}
      - {{ name: post, match: {{ prefix: /api, methods: [POST] }}, cluster: post-only }}
      - {{ name: api, match: {{ prefix: /api }}, cluster: api }}
clusters:
  - {{ name: exact, endpoints: [\"{}\"] }}
  - {{ name: host, endpoints: [\"{}\"] }}
  - {{ name: canary, endpoints: [\"{}\"] }}
  - {{ name: post-only, endpoints: [\"{}\"] }}
  - {{ name: api, endpoints: [\"{}\"] }}
",
        a.addr, b.addr, c.addr, d.addr, e.addr
    );
    let proxy = TestProxy::new(yaml).start();
    let h1 = client::h1();
    let url = |p: &str| proxy.url("ingress", p);
    let served_by = |r: &crate::support::client::Reply| r.header("x-upstream").map(str::to_string);

    assert_eq!(served_by(&get(&h1, &url("/api/health")).await).as_deref(), Some("exact"));
    assert_eq!(served_by(&get(&h1, &url("/api/health/deep")).await).as_deref(), Some("api"), "exact is exact");
    let with = |host: &str, header: Option<(&str, &str)>, method: Method| {
        let mut b = Request::builder().method(method).uri(url("/api/users")).header("host", host);
        if let Some((k, v)) = header {
            b = b.header(k, v);
        }
        b.body(client::empty()).expect("request")
    };
    let r = send(&h1, with("shop.EXAMPLE.com:8443", None, Method::GET)).await.expect("send");
    assert_eq!(served_by(&r).as_deref(), Some("host"), "wildcard host, port and case ignored");
    let r = send(&h1, with("example.com", Some(("x-canary", "1")), Method::GET)).await.expect("send");
    assert_eq!(served_by(&r).as_deref(), Some("canary"));
    let r = send(&h1, with("example.com", Some(("x-canary", "0")), Method::POST)).await.expect("send");
    assert_eq!(served_by(&r).as_deref(), Some("post-only"));
    let r = send(&h1, with("example.com", None, Method::GET)).await.expect("send");
    assert_eq!(served_by(&r).as_deref(), Some("api"));

    let miss = send(&h1, request(Method::GET, &url("/other"), client::empty())).await.expect("send");
    assert_eq!(miss.status, 404);
    assert_eq!(miss.body, "wasp: no route matches this request\n");
    assert!(miss.header("x-request-id").is_some());
    let log = proxy.wait_access_log(7);
    let last = log.last().expect("line");
    assert_eq!(last["status"], 404);
    assert_eq!(last["reason"], "wasp_no_route");
    assert_eq!(e.hits() + a.hits() + b.hits() + c.hits() + d.hits(), 6);
}
