//! A cancel lands only on the query it was meant for, including one that
//! still waits for a server. For the late-cancel tests pgrelay reaches the
//! primary through a forwarder that holds every CancelRequest for a while
//! before passing it on, as a busy postmaster (or a slow network) can: the
//! cancelled query has long finished by then, and the server must not be
//! running anyone's next query when the cancel arrives.

mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const CANCEL_CODE: i32 = 80877102;
const CANCEL_HELD_FOR: Duration = Duration::from_millis(700);

/// Forwards connections on a loopback port to `target`, holding each
/// CancelRequest for [`CANCEL_HELD_FOR`]; counts the cancels it delivered.
struct Forwarder {
    port: u16,
    cancels: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Forwarder {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn forwarder(target: SocketAddr) -> Forwarder {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let cancels = Arc::new(AtomicUsize::new(0));
    let counted = cancels.clone();
    let task = tokio::spawn(async move {
        let mut connections = tokio::task::JoinSet::new();
        while let Ok((inbound, _)) = listener.accept().await {
            connections.spawn(forward(inbound, target, counted.clone()));
        }
    });
    Forwarder {
        port,
        cancels,
        task,
    }
}

async fn forward(mut inbound: TcpStream, target: SocketAddr, cancels: Arc<AtomicUsize>) {
    let mut head = [0u8; 8];
    if inbound.read_exact(&mut head).await.is_err() {
        return;
    }
    let len = i32::from_be_bytes(head[..4].try_into().unwrap());
    let code = i32::from_be_bytes(head[4..].try_into().unwrap());
    let Ok(mut outbound) = TcpStream::connect(target).await else {
        return;
    };
    if len == 16 && code == CANCEL_CODE {
        let mut keys = [0u8; 8];
        if inbound.read_exact(&mut keys).await.is_err() {
            return;
        }
        tokio::time::sleep(CANCEL_HELD_FOR).await;
        let _ = outbound.write_all(&head).await;
        let _ = outbound.write_all(&keys).await;
        // The postmaster closes once it has signalled the backend; only then
        // does pgrelay hear that the cancel is done.
        let mut sink = Vec::new();
        let _ = outbound.read_to_end(&mut sink).await;
        cancels.fetch_add(1, Ordering::SeqCst);
        return;
    }
    if outbound.write_all(&head).await.is_ok() {
        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
    }
}

/// pgrelay in front of the forwarder.
async fn relay_through(
    cluster: &pgrelay_testcontainers::Cluster,
    forwarder: &Forwarder,
    pool_mode: &str,
    pool_size: usize,
) -> Relay {
    let dir = tempfile::tempdir().unwrap();
    let userlist = write_userlist(cluster, dir.path());
    let yaml = format!(
        "listen_addr: 127.0.0.1\nlisten_port: 0\nauth_file: {}\n\
         server_tls_sslmode: disable\nmetrics_addr: off\n\
         pool_mode: {pool_mode}\ndefault_pool_size: {pool_size}\n\
         admin_users: {su}\n\
         databases:\n  {db}:\n    host: 127.0.0.1\n    port: {port}\n",
        userlist.display(),
        su = cluster.superuser().0,
        db = cluster.database(),
        port = forwarder.port,
    );
    start_yaml(dir, &yaml, &BTreeMap::new()).await
}

fn primary_addr(cluster: &pgrelay_testcontainers::Cluster) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], cluster.port()))
}

/// Sends a cancel for `client`'s running query after `after`.
fn cancel_later(
    client: &tokio_postgres::Client,
    after: Duration,
) -> tokio::task::JoinHandle<Result<(), tokio_postgres::Error>> {
    let token = client.cancel_token();
    tokio::spawn(async move {
        tokio::time::sleep(after).await;
        token.cancel_query(tokio_postgres::NoTls).await
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_cancel_does_not_reach_the_next_client_of_its_server() {
    let cluster = cluster(0, false).await;
    let forwarder = forwarder(primary_addr(&cluster)).await;
    let relay = relay_through(&cluster, &forwarder, "transaction", 1).await;
    let first = relay.connect(&cluster).await;
    let second = relay.connect(&cluster).await;

    // The first client's cancel is sent mid-query but delivered only after
    // the query ended on its own; the second client queues for the one
    // server meanwhile and gets it as soon as the first query ends.
    let cancel = cancel_later(&first, Duration::from_millis(100));
    let queued = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(150)).await;
        second.simple_query("select pg_sleep(1), 'second'").await
    });
    let started = Instant::now();
    first
        .simple_query("select pg_sleep(0.3)")
        .await
        .expect("the first query ends before its cancel arrives");
    cancel.await.unwrap().expect("cancel sent");
    let rows = queued
        .await
        .unwrap()
        .expect("the second client's query is not cancelled");
    assert!(!rows.is_empty());
    assert_eq!(
        forwarder.cancels.load(Ordering::SeqCst),
        1,
        "cancel delivered"
    );
    // The second query could start only once the cancel was done with.
    assert!(
        started.elapsed() >= CANCEL_HELD_FOR + Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_cancel_does_not_reach_the_same_clients_next_query() {
    let cluster = cluster(0, false).await;
    let forwarder = forwarder(primary_addr(&cluster)).await;
    let relay = relay_through(&cluster, &forwarder, "session", 1).await;
    let client = relay.connect(&cluster).await;

    let cancel = cancel_later(&client, Duration::from_millis(100));
    client
        .simple_query("select pg_sleep(0.3)")
        .await
        .expect("the query ends before its cancel arrives");
    cancel.await.unwrap().expect("cancel sent");
    client
        .simple_query("select pg_sleep(0.8), 'next'")
        .await
        .expect("the next query is not cancelled");
    assert_eq!(
        forwarder.cancels.load(Ordering::SeqCst),
        1,
        "cancel delivered"
    );

    // A cancel that arrives in time still stops its query.
    let cancel = cancel_later(&client, Duration::from_millis(100));
    let err = client
        .simple_query("select pg_sleep(30)")
        .await
        .expect_err("cancelled");
    assert_eq!(sqlstate(&err).as_deref(), Some("57014"), "{err}");
    cancel.await.unwrap().expect("cancel sent");
    relay.stop().await;
}

/// A server whose cancel is still on its way stays out of the pool: the
/// next client gets another server at once instead of waiting on it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_being_cancelled_is_kept_out_of_the_pool() {
    let cluster = cluster(0, false).await;
    let forwarder = forwarder(primary_addr(&cluster)).await;
    let relay = relay_through(&cluster, &forwarder, "transaction", 2).await;
    let first = relay.connect(&cluster).await;
    let second = relay.connect(&cluster).await;

    let cancel = cancel_later(&first, Duration::from_millis(100));
    let cancelled_pid = scalar(&first, "select pg_backend_pid() from pg_sleep(0.3)").await;
    cancel.await.unwrap().expect("cancel sent");
    // The cancel reaches PostgreSQL about 0.5 s from now.
    let started = Instant::now();
    let other_pid = scalar(&second, "select pg_backend_pid()").await;
    let waited = started.elapsed();
    assert_ne!(
        other_pid, cancelled_pid,
        "handed the server being cancelled"
    );
    assert!(waited < Duration::from_millis(400), "{waited:?}");
    assert_eq!(
        forwarder.cancels.load(Ordering::SeqCst),
        0,
        "not delivered yet"
    );
    let (su, su_pw) = cluster.superuser();
    let console = common::connect(&format!(
        "host=127.0.0.1 port={} user={su} password={su_pw} dbname=pgbouncer",
        relay.port
    ))
    .await;
    let pool_row = || async {
        let rows = console_rows(&console, "SHOW POOLS").await;
        rows.into_iter()
            .find(|r| r["database"] == cluster.database())
            .expect("the pool's row")
    };
    let being_canceled = || async {
        let row = pool_row().await;
        (row["sv_being_canceled"].clone(), row["sv_active"].clone())
    };
    assert_eq!(being_canceled().await, ("1".to_string(), "0".to_string()));
    // The cancel itself is still on its way: one cancel connection in from
    // the client, one out to the postmaster.
    let row = pool_row().await;
    assert_eq!(
        (
            row["cl_active_cancel_req"].as_str(),
            row["sv_active_cancel"].as_str()
        ),
        ("1", "1")
    );
    // Once the cancel is done the server is pooled again, unharmed.
    let back = eventually(Duration::from_secs(5), || {
        forwarder.cancels.load(Ordering::SeqCst) == 1
    })
    .await;
    assert!(back, "cancel delivered");
    let mut counted = being_canceled().await;
    for _ in 0..50 {
        if counted.0 == "0" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        counted = being_canceled().await;
    }
    assert_eq!(counted.0, "0", "released once the cancel is done");
    let row = pool_row().await;
    assert_eq!(
        (
            row["cl_active_cancel_req"].as_str(),
            row["sv_active_cancel"].as_str()
        ),
        ("0", "0")
    );
    let mut pids = std::collections::HashSet::new();
    for _ in 0..20 {
        let (a, b) = tokio::join!(
            scalar(&first, "select pg_backend_pid() from pg_sleep(0.05)"),
            scalar(&second, "select pg_backend_pid() from pg_sleep(0.05)")
        );
        pids.extend([a, b]);
    }
    assert!(
        pids.contains(&cancelled_pid),
        "{pids:?} lacks {cancelled_pid}"
    );
    relay.stop().await;
}

/// PgBouncer leaves a client that waits for a server stuck until one frees
/// up, whatever the client sends (its issue #1222). Here the cancel ends the
/// wait as PostgreSQL ends a cancelled statement, and the session goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_ends_a_wait_for_a_server_and_the_session_goes_on() {
    let cluster = cluster(0, false).await;
    let relay = start_relay(
        &cluster,
        "pool_mode: transaction\ndefault_pool_size: 1\nquery_wait_timeout: 60",
    )
    .await;
    let holder = relay.connect(&cluster).await;
    holder.batch_execute("BEGIN; SELECT 1").await.unwrap();
    let waiter = relay.connect(&cluster).await;

    // Simple protocol: an error, then ReadyForQuery.
    let cancel = cancel_later(&waiter, Duration::from_millis(300));
    let started = Instant::now();
    let err = waiter
        .simple_query("select 'never ran'")
        .await
        .expect_err("cancelled while waiting");
    assert_eq!(sqlstate(&err).as_deref(), Some("57014"), "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    cancel.await.unwrap().expect("cancel sent");

    // Extended protocol: the batch is dropped up to its Sync.
    let cancel = cancel_later(&waiter, Duration::from_millis(300));
    let err = waiter
        .query("select $1::int + 1", &[&1i32])
        .await
        .expect_err("cancelled while waiting");
    assert_eq!(sqlstate(&err).as_deref(), Some("57014"), "{err}");
    cancel.await.unwrap().expect("cancel sent");

    // The server frees up: the same session works, in both protocols.
    holder.batch_execute("COMMIT").await.unwrap();
    assert_eq!(scalar(&waiter, "select 'after'").await, "after");
    let row = waiter
        .query_one("select $1::int + 1", &[&41i32])
        .await
        .unwrap();
    assert_eq!(row.get::<_, i32>(0), 42);
    relay.stop().await;
}
