//! Configuration: the YAML/JSON file operators write ([`model`]), parsed and
//! checked as a whole ([`load`], [`validate`]) into the compiled [`Config`]
//! that the running proxy sees (the file itself is read by `crate::live`,
//! which also reloads it). Every error is reported together with its path, e.g.
//! `listeners[0].routes[1].cluster: no cluster named "ap"`.

mod load;
pub mod model;
pub mod units;
mod validate;

pub use load::parse;
pub use validate::*;

use std::fmt;

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
