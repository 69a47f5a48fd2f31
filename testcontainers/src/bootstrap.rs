//! Creating the primary (initdb + configuration), cloning replicas
//! (pg_basebackup) and starting nodes on one shared port.

use std::net::Ipv4Addr;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Child, Stdio};

use crate::error::{Error, Result};
use crate::node::{ClusterContext, Node, NODE_CONF};
use crate::ports::free_port_on_all;
use crate::toolchain::{check_output, run_checked};

/// How often to move the whole cluster to another port when a server loses
/// the race for its port to some other process.
const PORT_ATTEMPTS: u32 = 8;

/// Settings shared by every node; pg_basebackup copies them to replicas.
/// Tuned for tests: durability off, small memory, many connections.
const CLUSTER_CONF: &str = "
# Cluster-wide settings written by pgrelay-testcontainers.
password_encryption = 'scram-sha-256'
max_connections = 500
shared_buffers = '32MB'
fsync = off
full_page_writes = off
wal_level = replica
max_wal_senders = 16
max_replication_slots = 16
wal_keep_size = '256MB'
hot_standby = on
hot_standby_feedback = on
wal_receiver_status_interval = '1s'
# Replicas reconnect quickly after a primary restart (default 5s).
wal_retrieve_retry_interval = '200ms'
log_destination = 'stderr'
logging_collector = off
log_line_prefix = '%m [%p] %q%a@%d '
";

/// scram everywhere, loopback only; replication for the replicas.
const PG_HBA: &str = "\
# Written by pgrelay-testcontainers.
local   all          all                  scram-sha-256
local   replication  all                  scram-sha-256
host    all          all   127.0.0.0/8    scram-sha-256
host    replication  all   127.0.0.0/8    scram-sha-256
host    all          all   ::1/128        scram-sha-256
host    replication  all   ::1/128        scram-sha-256
";

/// initdb with scram auth and the superuser password, then our config.
pub(crate) fn init_primary(primary: &Node, ctx: &ClusterContext, base: &Path) -> Result<()> {
    let pwfile = base.join("superuser.pw");
    std::fs::write(&pwfile, format!("{}\n", ctx.superuser_password))
        .map_err(|e| Error::io("writing the superuser password file", e))?;
    std::fs::set_permissions(&pwfile, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| Error::io("chmod the superuser password file", e))?;
    ctx.toolchain.hand_over(&pwfile)?;

    let mut initdb = ctx.toolchain.server_command("initdb", base);
    initdb
        .arg("-D")
        .arg(primary.data_dir())
        .args(["-U", &ctx.superuser])
        .arg(format!("--pwfile={}", pwfile.display()))
        .args([
            "--auth=scram-sha-256",
            "--encoding=UTF8",
            "--locale=C",
            "--no-sync",
        ]);
    run_checked(initdb, primary.name(), "initdb")?;
    // The password is in the cluster now; do not leave it lying around.
    let _ = std::fs::remove_file(&pwfile);

    let conf_path = primary.data_dir().join("postgresql.conf");
    let mut conf =
        std::fs::read_to_string(&conf_path).map_err(|e| Error::io("reading postgresql.conf", e))?;
    conf.push_str(CLUSTER_CONF);
    conf.push_str(&format!("include_if_exists = '{NODE_CONF}'\n"));
    std::fs::write(&conf_path, conf).map_err(|e| Error::io("writing postgresql.conf", e))?;
    std::fs::write(primary.data_dir().join("pg_hba.conf"), PG_HBA)
        .map_err(|e| Error::io("writing pg_hba.conf", e))?;
    Ok(())
}

/// Creates the application role and database; objects the superuser later
/// creates there are usable by the app role too.
pub(crate) fn create_app_database(
    primary: &Node,
    app_user: &str,
    app_password: &str,
    database: &str,
) -> Result<()> {
    let user = quote_ident(app_user);
    let db = quote_ident(database);
    let password = app_password.replace('\'', "''");
    primary.sql_in(
        "postgres",
        &format!("CREATE ROLE {user} LOGIN PASSWORD '{password}'"),
    )?;
    primary.sql_in("postgres", &format!("CREATE DATABASE {db} OWNER {user}"))?;
    primary.sql_in(
        database,
        &format!(
            "ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT ALL ON TABLES TO {user}; \
             ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT ALL ON SEQUENCES TO {user}"
        ),
    )?;
    Ok(())
}

/// Clones every replica from the running primary, concurrently.
pub(crate) fn clone_replicas(
    replicas: &[Node],
    primary: &Node,
    ctx: &ClusterContext,
    base: &Path,
) -> Result<()> {
    let mut running: Vec<(&Node, Child)> = Vec::new();
    for replica in replicas {
        let mut cmd = ctx.toolchain.server_command("pg_basebackup", base);
        cmd.arg("-D")
            .arg(replica.data_dir())
            .args(["-R", "-X", "stream", "-c", "fast", "--no-sync", "-w"])
            .args(["-h", &primary.host(), "-p", &primary.port().to_string()])
            .args(["-U", &ctx.superuser])
            .env("PGPASSWORD", &ctx.superuser_password)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let child = cmd
            .spawn()
            .map_err(|e| Error::io(format!("spawning pg_basebackup for {}", replica.name()), e))?;
        running.push((replica, child));
    }
    // Wait for all before reporting, so no pg_basebackup outlives an error.
    let results: Vec<Result<()>> = running
        .into_iter()
        .map(|(replica, child)| {
            let output = child.wait_with_output().map_err(|e| {
                Error::io(
                    format!("waiting for pg_basebackup of {}", replica.name()),
                    e,
                )
            })?;
            check_output(output, replica.name(), "pg_basebackup")?;
            replica.strip_auto_conninfo()
        })
        .collect();
    results.into_iter().collect()
}

/// Starts `nodes` in order on `port`. If one loses its port to another
/// process, every node moves to a new port that is free on all of
/// `cluster_addrs` (also those of nodes not started yet). Returns the port
/// they ended up on.
pub(crate) fn start_on_shared_port(
    nodes: &mut [Node],
    cluster_addrs: &[Ipv4Addr],
    mut port: u16,
) -> Result<u16> {
    configure(nodes, port)?;
    for attempt in 1..=PORT_ATTEMPTS {
        match nodes.iter().try_for_each(Node::start) {
            Ok(()) => return Ok(port),
            Err(Error::PortInUse { node, port: lost }) if attempt < PORT_ATTEMPTS => {
                tracing::info!(%node, port = lost, "port taken; moving the cluster to another port");
                nodes.iter().for_each(Node::stop);
                port = free_port_on_all(cluster_addrs)?;
                configure(nodes, port)?;
            }
            Err(e) => return Err(e),
        }
    }
    unreachable!("the last attempt returns")
}

fn configure(nodes: &mut [Node], port: u16) -> Result<()> {
    for node in nodes.iter_mut() {
        node.set_port(port);
        node.write_config()?;
    }
    Ok(())
}

fn quote_ident(ident: &str) -> String {
    format!("\"{}\"", ident.replace('"', "\"\""))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_are_quoted() {
        assert_eq!(quote_ident("app"), "\"app\"");
        assert_eq!(quote_ident("a\"b"), "\"a\"\"b\"");
    }

    #[test]
    fn hba_is_scram_only_and_loopback_only() {
        for line in PG_HBA
            .lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
        {
            assert!(line.ends_with("scram-sha-256"), "{line}");
            if line.starts_with("host") {
                assert!(
                    line.contains("127.0.0.0/8") || line.contains("::1/128"),
                    "{line}"
                );
            }
        }
    }
}
