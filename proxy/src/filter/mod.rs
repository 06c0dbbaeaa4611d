//! Wasm filters: components written against `wit/filter.wit` (usually with
//! the `wasp-sdk` crate) that inspect and change requests and responses.
//!
//! [`runtime`] holds the one wasmtime engine (pooling allocator, epoch
//! interruption); [`loaded`] compiles each filter once, checks its WIT
//! version, pre-links it and keeps a pool of initialised instances with
//! memory and time limits; [`registry`] holds each filter's serving version
//! and swaps in a new one when its module file changes (see `crate::watch`);
//! [`host`] implements the imports, [`call`] the outbound HTTP calls;
//! [`chain`] runs a route's filters around the upstream call, and [`body`]
//! buffers or streams bodies through them; [`connection`] asks a
//! listener's connection filters whether a new connection is served.

mod bindings;
pub mod body;
pub mod call;
pub mod chain;
pub mod connection;
pub mod host;
pub mod kv;
pub mod loaded;
pub mod registry;
pub mod runtime;

pub use chain::{Chain, Run, Side, Verdict};
pub use connection::{ConnectionFacts, ConnectionFilters};
pub use host::{BodyMode, Facts};
pub use loaded::LoadedFilter;
pub use runtime::Runtime;

pub use registry::{Registry, Versioned};
