//! wasp: a sidecar proxy for one application instance's ingress and egress.
//!
//! A request's path through the modules:
//!
//! 1. [`listener`] accepts a connection (up to `max_connections`), completes
//!    its TLS handshake if the listener terminates TLS ([`tls`]: SNI
//!    certificates, mTLS, the client's identity), asks its connection
//!    filters, and hands it to [`conn`] (HTTP) or [`tcp`] (raw byte copy to
//!    a cluster, or TLS passed through by SNI).
//! 2. [`conn`] serves HTTP/1.1 (wasp's own server, [`conn::h1`], on the
//!    wire format of [`h1`]) or HTTP/2 (hyper's) with the listener's
//!    limits, closes slow-header and idle connections and shuts down
//!    gracefully on drain; [`io`], [`stall`] and [`h2_guard`] watch it for
//!    a client that stops reading (its socket, or an HTTP/2 stream's window)
//!    or floods control frames.
//! 3. [`forward`] takes each request: [`identity`] gives it one host and a
//!    normalised path (or refuses it, 400), [`headers`] strips hop-by-hop
//!    headers and sets `x-forwarded-*` / `x-request-id` as far as the peer is
//!    trusted; [`route`] picks the first matching route.
//!    A route's [`filter`] chain (Wasm components) runs its request phases
//!    here and may rewrite the request or answer it locally.
//! 4. [`upstream`] picks an endpoint of the route's cluster (load balancing,
//!    circuit breakers, pending cap), sends the request over a pooled
//!    HTTP/1.1 connection (wasp's own client, in the request's task) or a
//!    shared HTTP/2 one (hyper's), over TLS if the cluster originates it,
//!    within the route timeout (an HTTP/1.1 request's kept by its
//!    connection's own check, [`deadline`]), and retries when the policy
//!    and the request body allow.
//! 5. The chain's response phases run in reverse; [`respond`] streams the response back, or a local reply built from an
//!    [`error::ProxyError`] in one place, and records the exchange in
//!    [`metrics`] and the [`access_log`] when the body ends.
//!
//! Each stage imports the stages after it, never the one before:
//! `listener → conn → forward → respond`. What several of them share lives
//! in leaf modules that import none of them: [`edge`] (TLS handshake and
//! connection filters before serving), [`handler`] (what a listener serves
//! with, and the handle its connections keep on it), [`conn_state`]
//! (what the request path knows about its connection), [`deadline`] (an
//! HTTP/1.1 connection's route deadlines) and [`h1`] (HTTP/1.1
//! on the wire, both ways: request heads parsed, bodies decoded, messages
//! encoded).
//!
//! [`config`] is the operator contract (validated as a whole), [`live`]
//! builds it into the serving clusters, filters, routes and listeners and
//! swaps in a new one when [`watch`] sees the file change, [`server`] starts
//! it all (after [`malloc`] has sized glibc's per-thread cache) and drains on SIGTERM, and [`admin`] serves health, readiness,
//! config, filters, certificates and metrics.
//!
//! Off the data path, for deploying: [`inject`] adds wasp to Kubernetes
//! workloads (`wasp inject`) and [`probe`] is a container health check
//! (`wasp probe`).

pub mod access_log;
pub mod admin;
pub mod boxed;
pub mod cli;
pub mod config;
pub mod conn;
pub mod conn_state;
pub mod deadline;
pub mod demo;
pub mod edge;
pub mod error;
pub mod filter;
pub mod forward;
pub mod gated;
pub mod h1;
pub mod h2_guard;
pub mod handler;
pub mod headers;
pub mod identity;
pub mod inject;
pub mod io;
pub mod iptables;
pub mod listener;
pub mod live;
pub mod malloc;
pub mod metrics;
pub mod original_dst;
pub mod probe;
pub mod respond;
pub mod route;
pub mod server;
pub mod stall;
pub mod tcp;
pub mod tls;
pub mod upstream;
pub mod watch;
