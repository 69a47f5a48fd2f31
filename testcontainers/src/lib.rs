//! Real PostgreSQL clusters and a DNS server for pgrelay's tests and demo.
//!
//! ```no_run
//! use pgrelay_testcontainers::Cluster;
//! let cluster = Cluster::builder().replicas(2).dns(true).start()?;
//! cluster.primary().sql("CREATE TABLE t (id int)")?;
//! cluster.wait_caught_up(std::time::Duration::from_secs(10))?;
//! assert_eq!(cluster.replicas()[0].sql("SELECT count(*) FROM t")?, "0");
//! # Ok::<(), pgrelay_testcontainers::Error>(())
//! ```
//!
//! The API is synchronous (std::process); it works from plain tests,
//! `#[tokio::test]`s and binaries alike.

mod bootstrap;
mod cluster;
pub mod dns;
mod error;
mod lsn;
mod node;
mod ports;
mod server;
mod tls;
mod toolchain;

pub use cluster::{Cluster, ClusterBuilder};
pub use dns::{DnsError, DnsServer};
pub use error::Error;
pub use lsn::{Lsn, LsnParseError};
pub use node::{Node, Role};
