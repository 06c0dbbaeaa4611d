//! The Pingora target of `bench/run.sh`: the smallest reverse proxy a Rust
//! shop would write with `pingora-proxy` instead of running wasp.
//!
//! Every request goes to one upstream over plain HTTP/1.1. The settings
//! mirror the nginx proxy the benchmark compares against
//! (`/work/shared/bench/nginx-proxy.conf`), so the three proxies do the same
//! work:
//!
//! | nginx                              | here                                  |
//! |------------------------------------|---------------------------------------|
//! | `worker_processes 1`               | `threads: 1` (one service thread)     |
//! | `keepalive 1024` to the upstream   | `upstream_keepalive_pool_size: 1024`  |
//! | `access_log off`                   | no `logging` hook, no access log      |
//! | `error_log … warn`                 | warnings and errors to stderr (not a  |
//! |                                    | client going away: nginx's `info`)    |
//! | `listen … http2` (second port)     | h2c on the same listener, like wasp   |
//!
//! Everything else is Pingora's default (downstream keep-alive, reuse of
//! idle upstream connections, its timeouts and retry limit); request and
//! response pass through unchanged.
//!
//! ```text
//! pingora-bench-proxy LISTEN UPSTREAM      # e.g. 127.0.0.1:8080 127.0.0.1:9000
//! PINGORA_LISTEN=… PINGORA_UPSTREAM=… pingora-bench-proxy
//! ```
//!
//! SIGTERM stops it at once (no grace period) with exit status 0, so that
//! valgrind writes its totals and `run.sh` can check the exit status.

use std::net::SocketAddr;

use async_trait::async_trait;
use pingora_core::apps::HttpServerOptions;
use pingora_core::server::configuration::ServerConf;
use pingora_core::server::Server;
use pingora_core::upstreams::peer::HttpPeer;
use pingora_core::{Error, ErrorSource, Result};
use pingora_proxy::{ProxyHttp, Session};

/// Sends every request to the one upstream.
struct Forward {
    /// Built once; each request gets a clone (Pingora takes the peer by
    /// value). Equal peers share one pool of idle upstream connections.
    upstream: HttpPeer,
}

#[async_trait]
impl ProxyHttp for Forward {
    type CTX = ();

    fn new_ctx(&self) -> Self::CTX {}

    async fn upstream_peer(&self, _session: &mut Session, _ctx: &mut ()) -> Result<Box<HttpPeer>> {
        Ok(Box::new(self.upstream.clone()))
    }

    /// A client that went away mid-request is not an error worth a line:
    /// nginx logs it at `info`, below its `error_log … warn`. Without this,
    /// every request the load generator cuts off when it stops is an
    /// ERROR line (hundreds per h2c run). The default `fail_to_proxy` still
    /// logs that it could not answer an h2c stream the client reset;
    /// `run.sh` counts those lines apart, as expected.
    fn suppress_error_log(&self, _session: &Session, _ctx: &(), error: &Error) -> bool {
        *error.esource() == ErrorSource::Downstream
    }
}

/// Warnings and errors to stderr, like nginx's `error_log … warn`; nothing
/// per request. Pingora logs through the `log` crate, which drops
/// everything until a logger is installed.
struct StderrLog;

impl log::Log for StderrLog {
    fn enabled(&self, meta: &log::Metadata) -> bool {
        meta.level() <= log::Level::Warn
    }

    fn log(&self, record: &log::Record) {
        if self.enabled(record.metadata()) {
            eprintln!("{} {}: {}", record.level(), record.target(), record.args());
        }
    }

    fn flush(&self) {}
}

/// The `i`-th command-line argument, else the environment variable `env`.
fn address(i: usize, env: &str) -> SocketAddr {
    let text = std::env::args().nth(i).or_else(|| std::env::var(env).ok()).unwrap_or_else(|| {
        eprintln!("usage: pingora-bench-proxy LISTEN UPSTREAM (or {env}=ADDR)");
        std::process::exit(2)
    });
    text.parse().unwrap_or_else(|e| {
        eprintln!("bad address {text:?} ({env}): {e}");
        std::process::exit(2)
    })
}

fn main() {
    let listen = address(1, "PINGORA_LISTEN");
    let upstream = address(2, "PINGORA_UPSTREAM");
    log::set_logger(&StderrLog).expect("the only logger");
    log::set_max_level(log::LevelFilter::Warn);

    let conf = ServerConf {
        // One service thread, like nginx's one worker and wasp's `workers: 1`
        // (Pingora's default work-stealing runtime with one worker; its main
        // thread waiting for signals and its 10 ms timer thread run beside).
        threads: 1,
        // nginx's `keepalive 1024`: at h2c's 500 concurrent streams the
        // default (128) would close and reopen upstream connections.
        upstream_keepalive_pool_size: 1024,
        // SIGTERM is Pingora's graceful shutdown, which waits 5 minutes by
        // default for in-flight requests; the benchmark stops an idle proxy.
        grace_period_seconds: Some(0),
        graceful_shutdown_timeout_seconds: Some(1),
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();

    let forward = Forward {
        // Plain HTTP/1.1 (no TLS, so no SNI); Pingora's default peer options.
        upstream: HttpPeer::new(upstream, false, String::new()),
    };
    let mut service = pingora_proxy::http_proxy_service(&server.configuration, forward);
    // HTTP/1.1 and h2c (prior knowledge) on the one listener: Pingora peeks
    // at the first bytes of each new connection for the HTTP/2 preface.
    let mut options = HttpServerOptions::default();
    options.h2c = true;
    service.app_logic_mut().expect("a proxy service has app logic").server_options = Some(options);
    service.add_tcp(&listen.to_string());

    server.add_service(service);
    eprintln!("pingora listening on {listen}, upstream {upstream}");
    server.run_forever();
}
