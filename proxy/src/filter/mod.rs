//! Wasm filters: components written against `wit/filter.wit` (usually with
//! the `wasp-sdk` crate) that inspect and change requests and responses.
//!
//! [`runtime`] holds the one wasmtime engine (pooling allocator, epoch
//! interruption); [`compile`] compiles a module in a child process into
//! the compiled-code cache; [`loaded`] compiles each filter once, checks its WIT
//! version, pre-links it and keeps a pool of initialised instances with
//! memory and time limits ([`clock`] times each call); [`registry`] holds
//! each filter's serving version and swaps in a new one when its module
//! file changes (see `crate::watch`); [`message`] is the request or
//! response a phase works on and the edits a filter may make to it;
//! [`v02`] serves the batched `wasp:filter@0.2.0` ABI (and [`standing`]
//! the header edits a 0.2 filter registers for wasp to make without a
//! call) and [`v01`] the
//! earlier `0.1.0` one, over the imports [`host`] implements once, and
//! [`call`] the outbound HTTP calls;
//! [`chain`] runs a route's filters around the upstream call, and [`body`]
//! buffers or streams bodies through them; [`connection`] asks a
//! listener's connection filters whether a new connection is served.

pub mod body;
pub mod call;
pub mod chain;
pub mod clock;
pub mod compile;
pub mod connection;
pub mod host;
pub mod kv;
pub mod lease;
pub mod loaded;
pub mod message;
pub mod registry;
pub mod runtime;
pub mod standing;
pub mod v01;
pub mod v02;

pub use chain::{Chain, Run, Side, Verdict};
pub use connection::{ConnectionFacts, ConnectionFilters};
pub use loaded::LoadedFilter;
pub use message::{BodyMode, Facts};
pub use runtime::Runtime;

pub use registry::{Registry, Versioned};
