//! A primary with streaming replicas (and optionally a DNS server) in a
//! temporary directory; everything is torn down on drop.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::bootstrap;
use crate::dns::{DnsServer, DEFAULT_TTL, DEFAULT_ZONE};
use crate::error::{Error, Result};
use crate::node::{ClusterContext, Node, Role};
use crate::orphans;
use crate::ports::{free_port_on_all, random_u64};
use crate::tls::CertificateAuthority;
use crate::toolchain::Toolchain;

const SUPERUSER: &str = "postgres";
const APP_USER: &str = "app";
const APP_PASSWORD: &str = "app_password";
const DATABASE: &str = "app";
/// The primary's node and DNS name.
const PRIMARY_NAME: &str = "primary";
/// The DNS name with an A record for every replica.
const REPLICAS_NAME: &str = "replicas";
const PRIMARY_ADDR: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 1);
const STREAMING_TIMEOUT: Duration = Duration::from_secs(30);
const SCHEMA_REPLAY_TIMEOUT: Duration = Duration::from_secs(30);
/// Replica addresses are 127.0.0.2 ..= 127.0.0.254.
const MAX_REPLICAS: usize = 253;

/// Configures a `Cluster`; `Cluster::builder()` starts here.
#[derive(Debug, Clone)]
pub struct ClusterBuilder {
    replicas: usize,
    ssl: bool,
    ssl_names_only: bool,
    dns: bool,
    dns_zone: String,
    preferred_port: Option<u16>,
}

impl Default for ClusterBuilder {
    fn default() -> Self {
        ClusterBuilder {
            replicas: 2,
            ssl: false,
            ssl_names_only: false,
            dns: false,
            dns_zone: DEFAULT_ZONE.to_string(),
            preferred_port: None,
        }
    }
}

impl ClusterBuilder {
    /// Number of streaming replicas (default 2).
    pub fn replicas(mut self, count: usize) -> Self {
        self.replicas = count.min(MAX_REPLICAS);
        self
    }

    /// Start every node with `ssl=on` and a certificate from a generated CA.
    pub fn ssl(mut self, enabled: bool) -> Self {
        self.ssl = enabled;
        self
    }

    /// Server certificates name the nodes by their DNS names only, without
    /// `localhost` or their IP addresses (with `ssl(true)` and `dns(true)`):
    /// a client verifying them must check the name it looked up, as with the
    /// certificate of a Kubernetes Service.
    pub fn ssl_names_only(mut self, enabled: bool) -> Self {
        self.ssl_names_only = enabled;
        self
    }

    /// Start the in-process DNS server and publish the cluster's names.
    pub fn dns(mut self, enabled: bool) -> Self {
        self.dns = enabled;
        self
    }

    /// Zone the DNS server is authoritative for (default `pgrelay.test.`).
    pub fn dns_zone(mut self, zone: &str) -> Self {
        self.dns_zone = zone.to_string();
        self
    }

    /// Try this port first (default: a random free one). If any node cannot
    /// bind it, the whole cluster moves to another port; check `port()`.
    pub fn port(mut self, port: u16) -> Self {
        self.preferred_port = Some(port);
        self
    }

    /// The names a node's certificate carries: with DNS, the names
    /// `publish_dns` gives it (its own, and `replicas` for a replica).
    fn cert_names(&self, node: &str, addr: Ipv4Addr) -> Vec<String> {
        let mut names = Vec::new();
        if !self.ssl_names_only {
            names.extend(["localhost".to_string(), addr.to_string()]);
        }
        if self.dns {
            let zone = self.dns_zone.trim_end_matches('.');
            names.push(format!("{node}.{zone}"));
            if node != PRIMARY_NAME {
                names.push(format!("{REPLICAS_NAME}.{zone}"));
            }
        }
        names
    }

    /// Creates and starts the cluster; returns once every replica streams.
    pub fn start(self) -> Result<Cluster> {
        let started = Instant::now();
        let toolchain = Toolchain::discover()?;
        orphans::sweep(&orphans::temp_root());
        let base_dir = tempfile::Builder::new()
            .prefix(orphans::DIR_PREFIX)
            .tempdir_in(orphans::temp_root())
            .map_err(|e| Error::io("creating the cluster's temp dir", e))?;
        orphans::claim(base_dir.path())?;
        toolchain.hand_over(base_dir.path())?;
        let base = base_dir.path().to_path_buf();

        let ca = if self.ssl {
            let ca = CertificateAuthority::generate()?;
            let path = base.join("ca.crt");
            std::fs::write(&path, ca.cert_pem()).map_err(|e| Error::io("writing ca.crt", e))?;
            Some((ca, path))
        } else {
            None
        };
        let ctx = Arc::new(ClusterContext {
            toolchain,
            superuser: SUPERUSER.to_string(),
            superuser_password: format!("su_{:016x}{:016x}", random_u64(), random_u64()),
            database: DATABASE.to_string(),
        });

        let mut nodes = Vec::with_capacity(self.replicas + 1);
        for index in 0..=self.replicas {
            let (name, role, addr) = node_identity(index);
            let cert = match &ca {
                Some((ca, _)) => Some(ca.issue_server_cert(addr, &self.cert_names(&name, addr))?),
                None => None,
            };
            let dir = base.join(&name);
            nodes.push(Node::create(
                &name,
                role,
                addr,
                dir,
                ctx.clone(),
                cert.as_ref(),
            )?);
        }
        let addrs: Vec<Ipv4Addr> = nodes.iter().map(Node::addr).collect();

        bootstrap::init_primary(&nodes[0], &ctx, &base)?;
        let first_port = match self.preferred_port {
            Some(port) => port,
            None => free_port_on_all(&addrs)?,
        };
        let port = bootstrap::start_on_shared_port(&mut nodes[..1], &addrs, first_port)?;
        bootstrap::create_app_database(&nodes[0], APP_USER, APP_PASSWORD, DATABASE)?;
        let (primary, replicas) = nodes.split_at(1);
        bootstrap::clone_replicas(replicas, &primary[0], &ctx, &base)?;
        let port = bootstrap::start_on_shared_port(&mut nodes, &addrs, port)?;

        let mut cluster = Cluster {
            nodes,
            dns: None,
            ctx,
            ca_cert: ca.map(|(ca, path)| (ca.cert_pem().to_string(), path)),
            port,
            base_dir,
        };
        cluster.wait_replicas_streaming(STREAMING_TIMEOUT)?;
        if self.dns {
            let dns = DnsServer::start(&self.dns_zone)?;
            cluster.dns = Some(dns);
            cluster.publish_dns()?;
        }
        tracing::info!(
            port,
            replicas = self.replicas,
            elapsed_ms = started.elapsed().as_millis() as u64,
            dir = %cluster.base_dir().display(),
            "cluster started"
        );
        Ok(cluster)
    }
}

/// A running primary + replicas. Dropping it stops every server and
/// removes its directory.
pub struct Cluster {
    // Field order is drop order: servers stop before the directory goes.
    nodes: Vec<Node>,
    dns: Option<DnsServer>,
    ctx: Arc<ClusterContext>,
    ca_cert: Option<(String, PathBuf)>,
    port: u16,
    base_dir: tempfile::TempDir,
}

impl Cluster {
    pub fn builder() -> ClusterBuilder {
        ClusterBuilder::default()
    }

    /// The one port every node listens on (each on its own address).
    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn primary(&self) -> &Node {
        &self.nodes[0]
    }

    pub fn replicas(&self) -> &[Node] {
        &self.nodes[1..]
    }

    /// Primary first, then replicas.
    pub fn nodes(&self) -> &[Node] {
        &self.nodes
    }

    /// Superuser name and password.
    pub fn superuser(&self) -> (&str, &str) {
        (&self.ctx.superuser, &self.ctx.superuser_password)
    }

    /// Ordinary login role that owns `database()`.
    pub fn app_user(&self) -> (&str, &str) {
        (APP_USER, APP_PASSWORD)
    }

    pub fn database(&self) -> &str {
        &self.ctx.database
    }

    /// PEM of the CA that signed the servers' certificates (ssl clusters).
    pub fn ca_cert_pem(&self) -> Option<&str> {
        self.ca_cert.as_ref().map(|(pem, _)| pem.as_str())
    }

    /// File holding `ca_cert_pem()`, for `sslrootcert=`.
    pub fn ca_cert_path(&self) -> Option<&Path> {
        self.ca_cert.as_ref().map(|(_, path)| path.as_path())
    }

    pub fn dns(&self) -> Option<&DnsServer> {
        self.dns.as_ref()
    }

    /// Directory of the PostgreSQL binaries in use (psql, pgbench, ...).
    pub fn bin_dir(&self) -> &Path {
        self.ctx.toolchain.bin_dir()
    }

    pub fn base_dir(&self) -> &Path {
        self.base_dir.path()
    }

    /// The password of a user this cluster created, if `user` is one.
    pub fn password_of(&self, user: &str) -> Option<&str> {
        match user {
            u if u == self.ctx.superuser => Some(&self.ctx.superuser_password),
            APP_USER => Some(APP_PASSWORD),
            _ => None,
        }
    }

    /// libpq keyword/value connection string for `user` on `node` over TCP
    /// (works with tokio-postgres and psql). Includes the password for the
    /// users this cluster created.
    pub fn conn_string(&self, node: &Node, user: &str) -> String {
        let mut conn = format!(
            "host={} port={} user={} dbname={}",
            node.host(),
            self.port,
            user,
            self.database()
        );
        if let Some(password) = self.password_of(user) {
            conn.push_str(&format!(" password={password}"));
        }
        conn
    }

    /// Waits until the primary's pg_stat_replication shows every replica
    /// (by application_name) as `streaming`.
    pub fn wait_replicas_streaming(&self, timeout: Duration) -> Result<()> {
        let names: Vec<String> = self
            .replicas()
            .iter()
            .map(|r| format!("'{}'", r.name()))
            .collect();
        if names.is_empty() {
            return Ok(());
        }
        let query = format!(
            "SELECT count(*) FROM pg_stat_replication \
             WHERE state = 'streaming' AND application_name IN ({})",
            names.join(", ")
        );
        let expected = names.len().to_string();
        let primary = self.primary();
        primary.wait_until("all replicas streaming", timeout, || {
            Ok(primary.sql_in("postgres", &query)? == expected)
        })
    }

    /// Runs `sql` on the primary in the app database (as the superuser) and
    /// waits until every replica has replayed it: test set-up that reads
    /// on replicas must see.
    pub fn prepare_schema(&self, sql: &str) -> Result<()> {
        self.primary().sql_in(self.database(), sql)?;
        self.wait_caught_up(SCHEMA_REPLAY_TIMEOUT)
    }

    /// Waits until every replica has replayed the primary's current WAL
    /// position (taken once, at the call).
    pub fn wait_caught_up(&self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        let target = self.primary().current_lsn()?;
        for replica in self.replicas() {
            let left = deadline.saturating_duration_since(Instant::now());
            replica.wait_replayed(target, left)?;
        }
        Ok(())
    }

    /// Publishes `primary`, `replicas` (one A per replica), `replica-N` and
    /// `_postgresql._tcp.replicas` SRV records pointing at them.
    fn publish_dns(&self) -> Result<()> {
        let Some(dns) = &self.dns else {
            return Ok(());
        };
        dns.set_a(PRIMARY_NAME, &[self.primary().addr()], DEFAULT_TTL)?;
        let replica_addrs: Vec<Ipv4Addr> = self.replicas().iter().map(Node::addr).collect();
        dns.set_a(REPLICAS_NAME, &replica_addrs, DEFAULT_TTL)?;
        for replica in self.replicas() {
            dns.set_a(replica.name(), &[replica.addr()], DEFAULT_TTL)?;
        }
        let srv: Vec<(u16, u16, u16, &str)> = self
            .replicas()
            .iter()
            .map(|r| (10, 10, self.port, r.name()))
            .collect();
        dns.set_srv("_postgresql._tcp.replicas", &srv, DEFAULT_TTL)?;
        Ok(())
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // Replicas first, so none of them logs reconnect attempts to a
        // primary that is already gone.
        for node in self.nodes.iter().rev() {
            node.stop_immediate();
        }
    }
}

/// Name, role and address of the node at `index` (0 = primary).
fn node_identity(index: usize) -> (String, Role, Ipv4Addr) {
    if index == 0 {
        return (PRIMARY_NAME.to_string(), Role::Primary, PRIMARY_ADDR);
    }
    let addr = Ipv4Addr::new(127, 0, 0, (index + 1) as u8);
    let role = Role::Replica {
        upstream: PRIMARY_ADDR,
    };
    (format!("replica-{index}"), role, addr)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_identities_follow_the_address_plan() {
        assert_eq!(
            node_identity(0),
            ("primary".into(), Role::Primary, PRIMARY_ADDR)
        );
        let (name, role, addr) = node_identity(2);
        assert_eq!(name, "replica-2");
        assert_eq!(addr, Ipv4Addr::new(127, 0, 0, 3));
        assert_eq!(
            role,
            Role::Replica {
                upstream: PRIMARY_ADDR
            }
        );
        assert_eq!(node_identity(MAX_REPLICAS).2, Ipv4Addr::new(127, 0, 0, 254));
    }

    #[test]
    fn cluster_can_be_shared_across_threads_and_tasks() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<Cluster>();
        assert_send_sync::<Node>();
        assert_send_sync::<DnsServer>();
    }

    #[test]
    fn builder_defaults_match_the_contract() {
        let b = Cluster::builder();
        assert_eq!((b.replicas, b.ssl, b.dns), (2, false, false));
        assert_eq!(b.dns_zone, "pgrelay.test.");
    }
}
