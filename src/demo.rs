//! `pgrelay demo`: a throwaway PostgreSQL primary + replicas + DNS server to
//! try pgrelay against, torn down on Ctrl-C (or SIGTERM).
//!
//! Sync callers use [`run`] / [`run_with`]. An async `main` should start the
//! cluster with [`DemoCluster::start`] (inside `spawn_blocking`; it takes a
//! few seconds), run the pooler in front of `demo.cluster()`, wait for
//! `tokio::signal::ctrl_c()` itself and drop the handle.

use std::fmt::Write as _;
use std::net::Ipv4Addr;

use pgrelay_testcontainers::{Cluster, Node};

/// What the demo cluster looks like.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DemoOptions {
    pub replicas: usize,
    /// Nodes serve TLS with a certificate from a generated CA.
    pub ssl: bool,
    /// Port to try first for all nodes (moved if taken); random when None.
    pub port: Option<u16>,
    pub dns_zone: String,
}

impl Default for DemoOptions {
    fn default() -> Self {
        DemoOptions {
            replicas: 2,
            ssl: false,
            port: None,
            dns_zone: pgrelay_testcontainers::dns::DEFAULT_ZONE.to_string(),
        }
    }
}

/// Why the demo could not run.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error("could not start the demo cluster: {0}")]
    Cluster(#[from] pgrelay_testcontainers::Error),
    #[error("could not wait for Ctrl-C: {0}")]
    Signal(#[source] std::io::Error),
    #[error("the service in front of the demo cluster failed to start: {0}")]
    Front(#[source] Box<dyn std::error::Error + Send + Sync>),
}

/// A running demo cluster; dropping it stops and removes everything.
pub struct DemoCluster {
    cluster: Cluster,
}

impl DemoCluster {
    /// Starts primary + replicas + DNS in a temp dir (blocking, a few seconds).
    pub fn start(opts: &DemoOptions) -> Result<Self, DemoError> {
        let mut builder = Cluster::builder()
            .replicas(opts.replicas)
            .ssl(opts.ssl)
            .dns(true)
            .dns_zone(&opts.dns_zone);
        if let Some(port) = opts.port {
            builder = builder.port(port);
        }
        Ok(DemoCluster {
            cluster: builder.start()?,
        })
    }

    pub fn cluster(&self) -> &Cluster {
        &self.cluster
    }

    /// Human-readable map of the cluster: addresses, psql commands, DNS names.
    pub fn describe(&self) -> String {
        describe(&self.cluster)
    }
}

/// Starts the demo cluster, prints where everything is, waits for Ctrl-C
/// and tears it down.
pub fn run(opts: DemoOptions) -> Result<(), DemoError> {
    run_with(opts, |_| Ok(()))
}

/// Like [`run`], but calls `front` with the running cluster before waiting
/// (e.g. to start pgrelay in front of it). What `front` returns is kept
/// alive until Ctrl-C and dropped before the cluster.
pub fn run_with<G>(
    opts: DemoOptions,
    front: impl FnOnce(&Cluster) -> Result<G, Box<dyn std::error::Error + Send + Sync>>,
) -> Result<(), DemoError> {
    let demo = DemoCluster::start(&opts)?;
    let guard = front(demo.cluster()).map_err(DemoError::Front)?;
    println!("{}", demo.describe());
    println!("Press Ctrl-C to stop the cluster and delete its files.");
    let waited = wait_for_shutdown_signal();
    drop(guard);
    drop(demo);
    println!("demo cluster stopped and removed");
    waited
}

/// Blocks until SIGINT or SIGTERM. Uses a private runtime on its own thread
/// so it also works when the caller's thread belongs to a tokio runtime.
pub fn wait_for_shutdown_signal() -> Result<(), DemoError> {
    let waiter = std::thread::Builder::new()
        .name("pgrelay-demo-signal".to_string())
        .spawn(|| -> std::io::Result<()> {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            runtime.block_on(async {
                let mut terminate =
                    tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
                tokio::select! {
                    result = tokio::signal::ctrl_c() => result,
                    _ = terminate.recv() => Ok(()),
                }
            })
        })
        .map_err(DemoError::Signal)?;
    match waiter.join() {
        Ok(result) => result.map_err(DemoError::Signal),
        Err(_) => Err(DemoError::Signal(std::io::Error::other(
            "signal waiter thread panicked",
        ))),
    }
}

/// The text `run` prints. Contains the app user's (fixed, demo-only)
/// password so the psql lines can be pasted; never the superuser's.
pub fn describe(cluster: &Cluster) -> String {
    let mut out = String::new();
    let (app_user, app_password) = cluster.app_user();
    let _ = writeln!(out, "pgrelay demo cluster");
    let _ = writeln!(out, "  files:     {}", cluster.base_dir().display());
    let _ = writeln!(out, "  binaries:  {}", cluster.bin_dir().display());
    let _ = writeln!(
        out,
        "  port:      {} (every node, each on its own loopback address)",
        cluster.port()
    );
    let _ = writeln!(
        out,
        "  login:     user {app_user} / password {app_password}, database {}",
        cluster.database()
    );
    if let Some(ca) = cluster.ca_cert_path() {
        let _ = writeln!(out, "  TLS:       on; CA certificate {}", ca.display());
    }
    let _ = writeln!(out);
    for node in cluster.nodes() {
        let _ = writeln!(out, "  {:<10} {}", node.name(), node.socket_addr());
        let _ = writeln!(out, "    psql \"{}\"", cluster.conn_string(node, app_user));
    }
    if let Some(dns) = cluster.dns() {
        let zone = dns.zone();
        let _ = writeln!(out);
        let _ = writeln!(out, "  DNS server {} (UDP+TCP), zone {zone}", dns.addr());
        let _ = writeln!(out, "    primary.{zone}  A {}", cluster.primary().addr());
        let replica_addrs: Vec<Ipv4Addr> = cluster.replicas().iter().map(Node::addr).collect();
        let _ = writeln!(out, "    replicas.{zone}  A {}", join(&replica_addrs));
        for replica in cluster.replicas() {
            let _ = writeln!(out, "    {}.{zone}  A {}", replica.name(), replica.addr());
        }
        for replica in cluster.replicas() {
            let _ = writeln!(
                out,
                "    _postgresql._tcp.replicas.{zone}  SRV 10 10 {} {}.{zone}",
                cluster.port(),
                replica.name()
            );
        }
        let _ = writeln!(
            out,
            "    try: dig @{} -p {} replicas.{zone}",
            dns.addr().ip(),
            dns.addr().port()
        );
    }
    out
}

/// pgrelay's configuration for the demo: transaction pooling on 127.0.0.1:`port`
/// in front of the cluster's primary, with a userlist written next to the
/// cluster's files (removed with them).
pub fn pgrelay_config(cluster: &Cluster, port: u16) -> Result<crate::config::Config, DemoError> {
    let (app_user, app_password) = cluster.app_user();
    let userlist = cluster.base_dir().join("pgrelay-userlist.txt");
    std::fs::write(&userlist, format!("\"{app_user}\" \"{app_password}\"\n"))
        .map_err(|e| DemoError::Front(Box::new(e)))?;
    // Reads go to the replicas the demo's DNS server names, as they would
    // behind a Kubernetes headless Service.
    let replicas = match cluster.dns() {
        Some(dns) if !cluster.replicas().is_empty() => format!(
            "    replicas:\n      dns: {}\n      nameserver: {}\n",
            dns.fqdn("replicas")
                .map_err(|e| DemoError::Front(Box::new(e)))?,
            dns.addr(),
        ),
        _ => String::new(),
    };
    let yaml = format!(
        "listen_addr: 127.0.0.1\nlisten_port: {port}\nmetrics_addr: 127.0.0.1:0\n\
         auth_type: scram-sha-256\nauth_file: {}\npool_mode: transaction\n\
         default_pool_size: 10\nserver_tls_sslmode: prefer\n\
         databases:\n  {db}:\n    host: {host}\n    port: {db_port}\n{replicas}",
        userlist.display(),
        db = cluster.database(),
        host = cluster.primary().host(),
        db_port = cluster.port(),
    );
    crate::config::Config::load_from_str(
        &cluster.base_dir().join("pgrelay-demo.yaml"),
        &yaml,
        &Default::default(),
    )
    .map_err(|e| DemoError::Front(Box::new(e)))
}

fn join(addrs: &[Ipv4Addr]) -> String {
    addrs
        .iter()
        .map(Ipv4Addr::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn description_lists_every_node_and_dns_name() {
        let demo = DemoCluster::start(&DemoOptions {
            replicas: 1,
            ..DemoOptions::default()
        })
        .expect("demo cluster starts");
        let text = demo.describe();
        let cluster = demo.cluster();
        let port = cluster.port();
        for expected in [
            format!("primary    127.0.0.1:{port}"),
            format!("replica-1  127.0.0.2:{port}"),
            format!(
                "psql \"host=127.0.0.2 port={port} user=app dbname=app password=app_password\""
            ),
            "replicas.pgrelay.test.  A 127.0.0.2".to_string(),
            format!(
                "_postgresql._tcp.replicas.pgrelay.test.  SRV 10 10 {port} replica-1.pgrelay.test."
            ),
        ] {
            assert!(text.contains(&expected), "missing {expected:?} in:\n{text}");
        }
        let (_, superuser_password) = cluster.superuser();
        assert!(
            !text.contains(superuser_password),
            "superuser password leaked"
        );
        assert!(!text.contains("TLS:"), "ssl is off by default");
    }

    #[test]
    fn front_error_is_reported_and_cluster_is_torn_down() {
        let mut seen_dir = None;
        let result = run_with(
            DemoOptions {
                replicas: 0,
                ..DemoOptions::default()
            },
            |cluster| -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
                seen_dir = Some(cluster.base_dir().to_path_buf());
                Err("pooler failed to bind".into())
            },
        );
        match result {
            Err(DemoError::Front(e)) => assert_eq!(e.to_string(), "pooler failed to bind"),
            other => panic!("expected DemoError::Front, got {other:?}"),
        }
        let dir = seen_dir.expect("front ran");
        assert!(!dir.exists(), "cluster dir removed after the error");
    }
}
