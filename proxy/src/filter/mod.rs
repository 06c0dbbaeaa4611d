//! Wasm filters: components written against `wit/filter.wit` (usually with
//! the `wasp-sdk` crate) that inspect and change requests and responses.
//!
//! [`runtime`] holds the one wasmtime engine (pooling allocator, epoch
//! interruption); [`loaded`] compiles each filter once, checks its WIT
//! version, pre-links it and keeps a pool of initialised instances with
//! memory and time limits; [`host`] implements the imports, [`call`] the
//! outbound HTTP calls; [`chain`] runs a route's filters around the upstream
//! call, and [`body`] buffers or streams bodies through them.

mod bindings;
pub mod body;
pub mod call;
pub mod chain;
pub mod host;
pub mod kv;
pub mod loaded;
pub mod runtime;

pub use chain::{Chain, Run, Side, Verdict};
pub use host::{BodyMode, Facts};
pub use loaded::LoadedFilter;
pub use runtime::Runtime;

use crate::config::{Config, ConfigError};
use crate::metrics::Metrics;
use crate::upstream::Cluster;
use std::collections::HashMap;
use std::sync::Arc;

/// Loads every filter in `config` (`clusters` are those filters may call);
/// all failures are reported, each at its config path (`filters[0].module: ...`).
pub fn load_all(
    config: &Config,
    metrics: &Arc<Metrics>,
    clusters: &HashMap<&str, Arc<Cluster>>,
) -> Result<HashMap<String, Arc<LoadedFilter>>, Vec<ConfigError>> {
    if config.filters.is_empty() {
        return Ok(HashMap::new());
    }
    let runtime = Runtime::new(config.filter_instances)
        .map_err(|message| vec![ConfigError { path: "filters".into(), message }])?;
    let mut loaded = HashMap::new();
    let mut errors = Vec::new();
    let mut compiled = HashMap::new();
    for (i, f) in config.filters.iter().enumerate() {
        match LoadedFilter::load(&runtime, f, metrics, clusters, &mut compiled) {
            Ok(l) => {
                loaded.insert(f.name.clone(), Arc::new(l));
            }
            Err(message) => errors.push(ConfigError { path: format!("filters[{i}].module"), message }),
        }
    }
    if errors.is_empty() { Ok(loaded) } else { Err(errors) }
}
