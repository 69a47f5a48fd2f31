//! Real PostgreSQL clusters, a DNS server and a delaying TCP relay for
//! pgrelay's tests, benchmarks and demo.
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
mod delay_relay;
pub mod dns;
mod error;
mod lsn;
mod node;
mod orphans;
mod ports;
mod server;
mod service_thread;
mod tls;
mod toolchain;

pub use cluster::{Cluster, ClusterBuilder};
pub use delay_relay::{DelayRelay, DelayRelayError};
pub use dns::{DnsError, DnsServer};
pub use error::Error;
pub use lsn::{Lsn, LsnParseError};
pub use node::{Node, Role};
