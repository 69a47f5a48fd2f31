//! Errors of the router: rule loading, and the one a client can see.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum RouterError {
    #[error("cannot read routing rules {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{origin}: invalid YAML: {message}")]
    Yaml { origin: String, message: String },
    #[error("{origin}: rule #{index}{}: {reason}", name.as_deref().map(|n| format!(" ({n:?})")).unwrap_or_default())]
    InvalidRule {
        origin: String,
        /// 1-based position of the rule in its file.
        index: usize,
        name: Option<String>,
        reason: String,
    },
    #[error("{origin}: {list}: invalid function entry {entry:?}: {reason}")]
    InvalidFunction {
        origin: String,
        list: &'static str,
        entry: String,
        reason: String,
    },
    #[error("{origin}: {reason}")]
    InvalidSettings { origin: String, reason: String },
    #[error("invalid value for parameter \"pgrelay.route\": {value:?} (expected primary, replica or auto)")]
    InvalidRouteValue { value: String },
}

impl RouterError {
    /// SQLSTATE for errors sent to a client; load errors never reach one.
    pub fn sqlstate(&self) -> &'static str {
        match self {
            // invalid_parameter_value
            Self::InvalidRouteValue { .. } => "22023",
            // config_file_error
            _ => "F0000",
        }
    }
}
