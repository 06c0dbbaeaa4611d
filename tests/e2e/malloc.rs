//! A serving wasp runs with glibc's per-thread cache deepened
//! (proxy/src/malloc.rs): it starts itself again once, keeping its PID,
//! its arguments and its ability to serve.

use crate::support::client::{self, get};
use crate::support::{TestProxy, Upstream, one_route};

#[tokio::test]
async fn serving_wasp_runs_with_the_deeper_allocator_cache() {
    let upstream = Upstream::start("app").await;
    let proxy = TestProxy::new(one_route(&[upstream.addr], "http1", "", "")).start();
    let environ = std::fs::read(format!("/proc/{}/environ", proxy.pid())).expect("environ");
    let vars: Vec<&[u8]> = environ.split(|b| *b == 0).collect();
    assert!(
        vars.contains(&&b"GLIBC_TUNABLES=glibc.malloc.tcache_count=64"[..]),
        "{:?}",
        String::from_utf8_lossy(&environ)
    );
    let cmdline = std::fs::read(format!("/proc/{}/cmdline", proxy.pid())).expect("cmdline");
    assert!(String::from_utf8_lossy(&cmdline).contains("\0run\0--config\0"), "{:?}", String::from_utf8_lossy(&cmdline));
    assert_eq!(get(&client::h1(), &proxy.url("ingress", "/")).await.status, 200);
    assert_eq!(upstream.hits(), 1);
}
