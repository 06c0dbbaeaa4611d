//! Configuration: the YAML/JSON file operators write ([`model`]), parsed and
//! checked as a whole ([`load`], [`validate`]) into the compiled [`Config`]
//! that the running proxy sees (the file itself is read by `crate::live`,
//! which also reloads it). Every error is reported together with its path, e.g.
//! `listeners[0].routes[1].cluster: no cluster named "ap"`.

mod destination;
mod listeners;
mod load;
pub mod model;
pub mod tls;
pub mod units;
mod validate;

pub use destination::{DestinationMatch, ORIGINAL_DESTINATION};
pub use load::parse;
pub use tls::{CertFiles, ClientTlsConfig, ServerTlsConfig, TlsVersion, identity_matches, server_name_matches};
pub use validate::*;

use std::fmt;

/// The effective config as `/config` shows it: every default filled in, and
/// each filter's `config` (where API keys, tokens and other secrets live)
/// replaced by `{"redacted": "sha256:..."}` of its JSON, so that versions can
/// be told apart, unless `admin.show_secrets` is on.
pub fn effective_json(raw: &model::RawConfig) -> Vec<u8> {
    let mut shown = raw.clone();
    if !raw.admin.show_secrets {
        for f in &mut shown.filters {
            let hash = crate::filter::registry::sha256_hex(f.config.to_string().as_bytes());
            f.config = serde_json::json!({ "redacted": format!("sha256:{hash}") });
        }
    }
    serde_json::to_vec_pretty(&shown).unwrap_or_default()
}

/// One problem in a config file, at a path such as `clusters[0].endpoints[1]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// Where: a path into the document, or the file name for file-level errors.
    pub path: String,
    /// What is wrong.
    pub message: String,
}

/// Every problem found in a config file; never empty.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            if e.path.is_empty() {
                write!(f, "{}", e.message)?;
            } else {
                write!(f, "{}: {}", e.path, e.message)?;
            }
        }
        Ok(())
    }
}
