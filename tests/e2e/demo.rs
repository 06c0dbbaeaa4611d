//! The README's first command: plain `wasp` serves the embedded demo, a
//! request goes through the demo filter to the demo app.

use crate::support::TestProxy;
use crate::support::client::{self, get};

#[tokio::test]
async fn plain_wasp_serves_the_demo_through_its_filter() {
    let proxy = TestProxy::demo().start();
    assert_eq!(proxy.addr("ingress").to_string(), "127.0.0.1:15006");
    let reply = get(&client::h1(), "http://127.0.0.1:15006/hello").await;
    assert_eq!(reply.status, 200);
    let body = reply.json();
    assert_eq!(body["message"], "hello from the wasp demo app");
    let greeting = body["headers_received"]["x-greeting"].as_str().expect("the filter's request header");
    assert!(greeting.starts_with("hello from the demo filter, 127.0.0.1:"), "{greeting}");
    assert!(reply.header("x-wasp-filter").is_some_and(|v| v.starts_with("header-rewrite saw request ")));
    assert_eq!(get(&client::h1(), "http://127.0.0.1:9901/readyz").await.status, 200);
}
