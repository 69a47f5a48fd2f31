//! One client's session: login, then the query loop that attaches pooled
//! servers, relays both ways and releases servers when they are idle.

use std::sync::Arc;
use std::time::Duration;

use bytes::Buf;
use tokio::net::TcpStream;
use tracing::{debug, info, warn};

use super::cancel::Registration;
use super::client::ClientConn;
use super::handshake::{handshake, Handshake};
use super::login::authenticate;
use super::params::ClientParams;
use super::relay::RelayState;
use super::{releases_at_idle, FrontendError, FrontendSettings, Shared};
use crate::cluster::{DatabasePools, PooledServer};
use crate::config::PoolMode;
use crate::protocol::backend::{self as be, TxStatus};
use crate::protocol::framing;
use crate::protocol::frontend::tag as fe;
use crate::protocol::ProtocolError;
use crate::shutdown::ShutdownSignal;

/// Runs one accepted connection to its end.
pub(crate) async fn run_connection(
    tcp: TcpStream,
    shared: Arc<Shared>,
    shutdown: ShutdownSignal,
    admit: impl FnOnce() -> Option<tokio::sync::OwnedSemaphorePermit>,
) {
    let settings = shared.directory.settings();
    let login_timeout = settings.client_login_timeout;
    let first = with_timeout(
        login_timeout,
        handshake(tcp, settings.client_tls_mode, shared.tls_acceptor.as_ref()),
    )
    .await;
    let (mut client, minor, params) = match first {
        Ok(Handshake::Startup {
            client,
            minor,
            params,
        }) => (client, minor, params),
        Ok(Handshake::Cancel {
            process_id,
            secret_key,
        }) => {
            forward_cancel(&shared, process_id, secret_key).await;
            return;
        }
        Err(e) => {
            debug!(error = %e, "client handshake failed");
            return;
        }
    };
    let Some(_admitted) = admit() else {
        client.fatal(&FrontendError::TooManyClients).await;
        return;
    };
    if minor > 0 {
        // We speak 3.0: say so, listing any protocol options we did not take.
        let options: Vec<&str> = params
            .iter()
            .filter(|(k, _)| k.starts_with("_pq_."))
            .map(|(k, _)| k.as_str())
            .collect();
        be::write_negotiate_protocol_version(0, &options, &mut client.wbuf);
    }
    let params: Vec<_> = params
        .into_iter()
        .filter(|(k, _)| !k.starts_with("_pq_."))
        .collect();
    let registration = shared.cancels.register();
    let login = with_timeout(
        login_timeout,
        login(&mut client, &params, &shared, &settings, &registration),
    )
    .await;
    let mut session = match login {
        Ok(s) => s,
        Err(e) => {
            info!(error = %e, "client login failed");
            client.fatal(&e).await;
            return;
        }
    };
    let result = session.serve(&mut client, shutdown).await;
    if let Err(e) = &result {
        debug!(error = %e, "client session ended");
        client.fatal(e).await;
    }
    session.finish().await;
}

async fn with_timeout<T>(
    limit: Option<Duration>,
    fut: impl std::future::Future<Output = Result<T, FrontendError>>,
) -> Result<T, FrontendError> {
    match limit {
        Some(d) => tokio::time::timeout(d, fut)
            .await
            .map_err(|_| FrontendError::LoginTimeout)?,
        None => fut.await,
    }
}

async fn forward_cancel(shared: &Shared, process_id: i32, secret_key: i32) {
    match shared.cancels.lookup(process_id, secret_key) {
        Some(key) => {
            if let Err(e) = crate::backend::send_cancel(key, Duration::from_secs(5)).await {
                warn!(error = %e, "forwarding cancel request failed");
            }
        }
        None => debug!("cancel request matched no running query"),
    }
}

async fn login<'a>(
    client: &mut ClientConn,
    params: &[(String, String)],
    shared: &Shared,
    settings: &Arc<FrontendSettings>,
    registration: &'a Registration<'a>,
) -> Result<Session<'a>, FrontendError> {
    let (mut client_params, startup) = ClientParams::from_startup(params, settings)?;
    authenticate(
        client,
        &startup.user,
        settings.auth_type,
        shared.directory.as_ref(),
    )
    .await?;
    let spec = shared
        .directory
        .database(&startup.database, &startup.user)
        .ok_or_else(|| FrontendError::UnknownDatabase(startup.database.clone()))?;
    let pools = shared.pools.get_or_create(&startup.user, spec);
    let mode = pools.spec.pool_mode;
    let mut session = Session {
        settings: settings.clone(),
        pools,
        params: ClientParams::default(),
        cancel: registration,
        mode,
        server: None,
    };
    let server_params = match (mode, session.pools.server_params()) {
        (PoolMode::Transaction | PoolMode::Statement, Some(p)) => p,
        _ => {
            session.attach().await?;
            session.pools.server_params().unwrap_or_default()
        }
    };
    for (name, value) in client_params.announce(&server_params) {
        be::write_parameter_status(&name, &value, &mut client.wbuf);
    }
    session.params = client_params;
    if let Some(sql) = session.sync_sql() {
        session.run_on_server(&sql).await?;
    }
    be::write_backend_key_data(
        registration.process_id,
        registration.secret,
        &mut client.wbuf,
    );
    be::write_ready_for_query(TxStatus::Idle, &mut client.wbuf);
    client.flush().await?;
    session.release_if_idle().await;
    Ok(session)
}

struct Attached {
    conn: PooledServer,
    relay: RelayState,
}

struct Session<'a> {
    settings: Arc<FrontendSettings>,
    pools: Arc<DatabasePools>,
    params: ClientParams,
    cancel: &'a Registration<'a>,
    mode: PoolMode,
    server: Option<Attached>,
}

enum Flow {
    Continue,
    Quit,
}

impl Session<'_> {
    async fn serve(
        &mut self,
        client: &mut ClientConn,
        mut shutdown: ShutdownSignal,
    ) -> Result<(), FrontendError> {
        loop {
            if let Flow::Quit = self.process_client_messages(client).await? {
                return Ok(());
            }
            self.release_if_idle().await;
            let quiet = self.server.as_ref().is_none_or(|a| a.relay.is_quiet());
            let in_tx = self
                .server
                .as_ref()
                .is_some_and(|a| a.relay.tx != TxStatus::Idle);
            if quiet && !in_tx && shutdown.is_triggered() {
                return Err(FrontendError::ShuttingDown);
            }
            // Only a client that owes nothing and holds no transaction may be timed out.
            let idle_limit = match (quiet, in_tx) {
                (true, true) => self.settings.idle_transaction_timeout,
                (true, false) if self.server.is_none() => self.settings.client_idle_timeout,
                _ => None,
            };
            let idle_timer = async {
                match idle_limit {
                    Some(d) => tokio::time::sleep(d).await,
                    None => std::future::pending().await,
                }
            };
            let stop = async {
                if quiet && !in_tx {
                    shutdown.triggered().await
                } else {
                    std::future::pending().await
                }
            };
            match &mut self.server {
                None => tokio::select! {
                    r = client.fill() => { r?; }
                    _ = idle_timer => return Err(FrontendError::IdleTimeout),
                    _ = stop => return Err(FrontendError::ShuttingDown),
                },
                Some(attached) => tokio::select! {
                    r = client.fill() => { r?; }
                    r = attached.conn.fill() => {
                        r?;
                        relay_server_data(attached, &mut self.params, client).await?;
                        if self.mode == PoolMode::Statement
                            && attached.relay.is_quiet()
                            && attached.relay.tx != TxStatus::Idle
                        {
                            return Err(FrontendError::TransactionInStatementMode);
                        }
                    }
                    _ = idle_timer => {
                        return Err(if in_tx { FrontendError::IdleInTransaction } else { FrontendError::IdleTimeout })
                    }
                    _ = stop => return Err(FrontendError::ShuttingDown),
                },
            }
        }
    }

    /// Forwards every complete client message in the buffer, attaching a
    /// server first when one is needed. Consecutive messages go out in one write.
    async fn process_client_messages(
        &mut self,
        client: &mut ClientConn,
    ) -> Result<Flow, FrontendError> {
        let max = self.settings.max_message;
        let mut forward = 0usize;
        let mut flow = Flow::Continue;
        loop {
            let rest = &client.rbuf[forward..];
            let Some(len) = framing::check(rest, max)? else {
                break;
            };
            let tag = rest[0];
            match tag {
                fe::TERMINATE => {
                    flow = Flow::Quit;
                    break;
                }
                fe::SYNC if self.server.is_none() && forward == 0 => {
                    // Nothing outstanding to synchronise with: answer it here.
                    client.rbuf.advance(len);
                    be::write_ready_for_query(TxStatus::Idle, &mut client.wbuf);
                }
                fe::COPY_DATA | fe::COPY_DONE | fe::COPY_FAIL if self.server.is_none() => {
                    // Stray copy messages after a failed COPY are ignored, as PostgreSQL does.
                    client.rbuf.advance(len);
                }
                fe::QUERY
                | fe::PARSE
                | fe::BIND
                | fe::DESCRIBE
                | fe::EXECUTE
                | fe::CLOSE
                | fe::FLUSH
                | fe::SYNC
                | fe::FUNCTION_CALL
                | fe::COPY_DATA
                | fe::COPY_DONE
                | fe::COPY_FAIL => {
                    if self.server.is_none() {
                        self.attach().await?;
                    }
                    let attached = self.server.as_mut().expect("attached above");
                    attached.relay.on_client_message(tag);
                    forward += len;
                }
                other => {
                    return Err(ProtocolError::Unexpected {
                        tag: other as char,
                        context: "from client",
                    }
                    .into())
                }
            }
        }
        if forward > 0 {
            let attached = self.server.as_mut().expect("forwarding implies attached");
            client.flush().await?;
            attached.conn.write_all(&client.rbuf[..forward]).await?;
            client.rbuf.advance(forward);
        }
        client.flush().await?;
        Ok(flow)
    }

    /// Checks out a server and brings its tracked parameters in line with the client's.
    async fn attach(&mut self) -> Result<(), FrontendError> {
        let conn = self.pools.primary.get().await?;
        self.pools.remember_server_params(conn.params());
        self.cancel.slot.attach(conn.cancel_key());
        self.server = Some(Attached {
            conn,
            relay: RelayState::default(),
        });
        if let Some(sql) = self.sync_sql() {
            self.run_on_server(&sql).await?;
        }
        Ok(())
    }

    fn sync_sql(&self) -> Option<String> {
        let attached = self.server.as_ref()?;
        self.params.sync_sql(|name| attached.conn.param(name))
    }

    /// Runs a statement of pgrelay's own on the attached server; a failure
    /// closes that server rather than leave it in an unknown state.
    async fn run_on_server(&mut self, sql: &str) -> Result<(), FrontendError> {
        let Some(attached) = self.server.as_mut() else {
            return Ok(());
        };
        if let Err(e) = attached.conn.run_discarding(sql).await {
            self.server = None;
            self.cancel.slot.detach();
            return Err(e.into());
        }
        Ok(())
    }

    /// In transaction and statement mode, returns an idle server to the pool.
    async fn release_if_idle(&mut self) {
        if !releases_at_idle(self.mode) {
            return;
        }
        let idle = self
            .server
            .as_ref()
            .is_some_and(|a| a.relay.is_idle(a.conn.rbuf.len()));
        if idle {
            let reset = self.settings.server_reset_query_always;
            self.detach(reset).await;
        }
    }

    /// Returns the server to the pool if it is clean (after the reset query
    /// when asked for), or closes it.
    async fn detach(&mut self, reset: bool) {
        let Some(mut attached) = self.server.take() else {
            return;
        };
        self.cancel.slot.detach();
        if !attached.relay.is_idle(attached.conn.rbuf.len()) {
            debug!("closing a server left mid-transaction or mid-reply");
            return; // dropping the guard closes the connection
        }
        let query = self.settings.server_reset_query.trim();
        if reset && !query.is_empty() {
            let ran =
                tokio::time::timeout(Duration::from_secs(5), attached.conn.run_discarding(query))
                    .await;
            if !matches!(ran, Ok(Ok(TxStatus::Idle))) {
                return;
            }
        }
        attached.conn.release();
    }

    /// The client is gone: the server is reset and pooled, or closed.
    async fn finish(&mut self) {
        let reset = self.mode == PoolMode::Session || self.settings.server_reset_query_always;
        self.detach(reset).await;
    }
}

/// Forwards what the server sent, tracking replies owed and parameter changes.
async fn relay_server_data(
    attached: &mut Attached,
    params: &mut ClientParams,
    client: &mut ClientConn,
) -> Result<(), FrontendError> {
    let conn = &mut *attached.conn;
    let mut changed: Vec<(String, String)> = Vec::new();
    let n = attached.relay.scan(&conn.rbuf, |name, value| {
        changed.push((name.to_string(), value.to_string()))
    })?;
    for (name, value) in changed {
        conn.set_param(&name, &value);
        params.set(&name, &value);
    }
    client.send_relayed(&conn.rbuf[..n]).await?;
    conn.rbuf.advance(n);
    Ok(())
}
