//! The benchmark's one error type: everything that can stop a run.

use thiserror::Error;

#[derive(Debug, Error)]
pub enum BenchError {
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
    #[error("cluster: {0}")]
    Cluster(#[from] pgrelay_testcontainers::Error),
    #[error("delay relay: {0}")]
    DelayRelay(#[from] pgrelay_testcontainers::DelayRelayError),
    #[error("{name} did not start: {detail}")]
    Start { name: String, detail: String },
    #[error("pgbench {scenario}: {detail}")]
    Pgbench { scenario: String, detail: String },
    #[error("idle clients against {target}: {detail}")]
    IdleClients { target: String, detail: String },
}

impl BenchError {
    pub fn io(what: impl Into<String>, source: std::io::Error) -> Self {
        BenchError::Io {
            what: what.into(),
            source,
        }
    }
}

pub type Result<T, E = BenchError> = std::result::Result<T, E>;
