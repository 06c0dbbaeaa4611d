//! End-to-end tests: each starts the real `wasp` binary on port 0 against
//! real upstreams and checks what a client sees.

mod support;

mod access_log;
mod admin;
mod config_reload;
mod demo;
mod drain;
mod examples;
mod filter_cache;
mod filters_abi;
mod filters_auth;
mod filters_body;
mod filters_connection;
mod filters_ext_authz;
mod filters_header_rewrite;
mod filters_isolation;
mod filters_rate_limit;
mod filters_reload;
mod forwarding;
mod framing;
mod fuzz_h1;
mod identity;
mod image;
mod interception;
mod limits;
mod malloc;
mod metrics;
mod observability_kit;
mod overload;
mod pooling;
mod resilience;
mod routing;
mod server_h1;
mod streaming;
mod tcp;
mod tls;
mod upstream_h1;
mod websocket;
