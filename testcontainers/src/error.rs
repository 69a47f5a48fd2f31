//! The one error type of the crate's cluster API.

use std::path::PathBuf;
use std::time::Duration;

use crate::dns::DnsError;

/// Everything that can go wrong while starting, driving or querying a cluster.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "PostgreSQL server binaries (initdb, postgres, pg_basebackup, psql) not found; searched: {searched}. \
         Install them with `apt-get install -y postgresql`, or set PG_BIN to the directory that contains initdb"
    )]
    BinariesNotFound { searched: String },

    #[error(
        "running as root, but PostgreSQL refuses to run as root and the `postgres` system user does not exist; \
         create it (`apt-get install -y postgresql` does) or run the tests as a normal user"
    )]
    NoServerUser,

    #[error("I/O error while {context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },

    #[error("{program} failed for {node} ({status}): {stderr}")]
    Command {
        node: String,
        program: String,
        status: String,
        stderr: String,
    },

    #[error("{node} did not start: {reason}\n--- last lines of {} ---\n{log_tail}", log.display())]
    StartFailed {
        node: String,
        reason: String,
        log: PathBuf,
        log_tail: String,
    },

    #[error("{node}: port {port} is already in use on its address")]
    PortInUse { node: String, port: u16 },

    #[error("{node}: timed out after {waited:?} waiting for {what}")]
    Timeout {
        node: String,
        what: String,
        waited: Duration,
    },

    #[error("no port free on all of {addrs} after {attempts} attempts")]
    NoFreePort { addrs: String, attempts: u32 },

    #[error("{node}: unexpected output from the server: {output:?}")]
    UnexpectedOutput { node: String, output: String },

    #[error("generating TLS certificates failed: {0}")]
    Tls(#[from] rcgen::Error),

    #[error(transparent)]
    Dns(#[from] DnsError),
}

impl Error {
    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
        }
    }
}

/// Shorthand used across the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
