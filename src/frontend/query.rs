//! The query loop of a logged-in client: attach a pooled server when a message
//! needs one, forward client messages (renaming prepared statements in
//! transaction pooling), relay replies, and release the server when idle.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Buf, BytesMut};
use tracing::{debug, warn};

use super::cancel::Registration;
use super::client::ClientConn;
use super::params::ClientParams;
use super::prepared::ClientStatements;
use super::relay::{Out, Owed, RelayState};
use super::routing::{answer_route_command, Destination, Routed, ServerRole};
use super::{releases_at_idle, FrontendError, FrontendSettings};
use crate::cluster::balance::InFlight;
use crate::cluster::{DatabasePools, PooledServer, ReadFallback};
use crate::config::PoolMode;
use crate::metrics::{ClientState, ClientTracker, Metrics, Role as MetricRole};
use crate::pool::PoolError;
use crate::protocol::backend::{self as be, TxStatus};
use crate::protocol::framing::{self, Frame};
use crate::protocol::frontend::{self as fe, tag, Target};
use crate::protocol::ProtocolError;
use crate::router::{Classifier, PinReason, RouteOverride, SessionContext, TxState};
use crate::shutdown::ShutdownSignal;

/// Statements pgrelay keeps prepared on one server before it deallocates them all.
const MAX_PREPARED_PER_SERVER: usize = 1000;

pub(crate) struct Attached {
    conn: PooledServer,
    relay: RelayState,
    role: ServerRole,
    since: Instant,
    /// Counts this client in its replica's outstanding requests.
    _in_flight: Option<InFlight>,
}

pub(crate) struct Session<'a> {
    settings: Arc<FrontendSettings>,
    pub pools: Arc<DatabasePools>,
    pub params: ClientParams,
    cancel: &'a Registration<'a>,
    mode: PoolMode,
    server: Option<Attached>,
    statements: ClientStatements,
    /// Messages on their way to the server, written once per batch.
    to_server: BytesMut,
    /// What to send the client from the last server read.
    to_client: Vec<Out>,
    classifier: Arc<Classifier>,
    database: String,
    user: String,
    pub route_override: RouteOverride,
    /// Set once the session did something that must stay on its server.
    pinned: Option<PinReason>,
    metrics: Arc<Metrics>,
    /// This client's place in the client gauges, once logged in.
    pub tracker: Option<ClientTracker>,
    /// The client messages sent to a replica that has not answered yet: if the
    /// replica fails before any reply reached the client, the read is sent
    /// again elsewhere. `None` once answered, or when not on a replica.
    replay: Option<BytesMut>,
}

pub(crate) enum Flow {
    Continue,
    Quit,
}

/// What woke the query loop while a server is attached.
enum Event {
    Client(Result<usize, FrontendError>),
    Server(Result<usize, crate::backend::BackendError>),
    Idle,
    Stop,
}

impl<'a> Session<'a> {
    pub fn new(
        metrics: Arc<Metrics>,
        settings: Arc<FrontendSettings>,
        pools: Arc<DatabasePools>,
        cancel: &'a Registration<'a>,
        classifier: Arc<Classifier>,
        database: &str,
        user: &str,
    ) -> Self {
        let mode = pools.spec.pool_mode;
        Session {
            metrics,
            tracker: None,
            replay: None,
            classifier,
            database: database.to_string(),
            user: user.to_string(),
            route_override: RouteOverride::Auto,
            pinned: None,
            settings,
            pools,
            params: ClientParams::default(),
            cancel,
            mode,
            server: None,
            statements: ClientStatements::default(),
            to_server: BytesMut::with_capacity(4096),
            to_client: Vec::with_capacity(4),
        }
    }

    /// Reads go to replicas only in transaction and statement pooling, and only
    /// for databases that have replicas; a session-pooled client keeps its primary.
    fn routes_reads(&self) -> bool {
        releases_at_idle(self.mode) && self.pools.replicas.is_some()
    }

    fn tx_state(&self) -> TxState {
        match &self.server {
            Some(a) if a.relay.tx != TxStatus::Idle => match a.role {
                ServerRole::Replica(_) => TxState::InReadOnlyTx,
                ServerRole::Primary => TxState::InReadWriteTx,
            },
            _ => TxState::Idle,
        }
    }

    /// Classifies the SQL of a Query or Parse. Without replicas only
    /// `pgrelay.*` commands need the classifier.
    fn route_sql(&self, sql: &str) -> Routed {
        if !self.routes_reads() && !sql.contains("pgrelay") {
            return Routed::primary();
        }
        let ctx = SessionContext {
            database: &self.database,
            user: &self.user,
            application_name: self.params.get("application_name"),
            route_override: self.route_override,
            tx: self.tx_state(),
            session_pinned: self.pinned.is_some(),
        };
        let mut routed = Routed::from_decision(self.classifier.classify(sql, &ctx));
        if !self.routes_reads() {
            routed.dest = Destination::Primary;
        }
        routed
    }

    /// Where the message at the head of the client buffer must run, if it is a
    /// routing point (a Query, a Parse, or a Bind that starts a batch).
    fn route_message(&self, msg: &[u8]) -> Result<Option<Routed>, FrontendError> {
        let frame = Frame::new(msg);
        Ok(match frame.tag {
            tag::QUERY => Some(self.route_sql(fe::query(frame.body)?)),
            tag::PARSE => Some(self.route_sql(fe::parse(frame.body)?.query)),
            tag::BIND if self.server.is_none() => {
                let bind = fe::bind(frame.body)?;
                let dest = self
                    .statements
                    .get(bind.statement)
                    .map_or(Destination::Primary, |s| s.destination);
                Some(Routed {
                    dest,
                    pin: None,
                    intercept: None,
                })
            }
            _ => None,
        })
    }

    /// Prepared statements are renamed only where a client's statements may
    /// meet servers other than the one that prepared them.
    fn renames_statements(&self) -> bool {
        releases_at_idle(self.mode)
    }

    pub async fn serve(
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
                Some(attached) => {
                    let event = tokio::select! {
                        r = client.fill() => Event::Client(r),
                        r = attached.conn.fill() => Event::Server(r),
                        _ = idle_timer => Event::Idle,
                        _ = stop => Event::Stop,
                    };
                    match event {
                        Event::Client(r) => {
                            r?;
                        }
                        Event::Server(Ok(_)) => {
                            let attached = self.server.as_mut().expect("attached");
                            let answered = relay_server_data(
                                attached,
                                &mut self.params,
                                &mut self.to_client,
                                client,
                            )
                            .await?;
                            if answered {
                                self.replay = None;
                            }
                            if self.mode == PoolMode::Statement
                                && attached.relay.is_quiet()
                                && attached.relay.tx != TxStatus::Idle
                            {
                                return Err(FrontendError::TransactionInStatementMode);
                            }
                        }
                        Event::Server(Err(e)) => self.retry_read(e, client).await?,
                        Event::Idle if in_tx => return Err(FrontendError::IdleInTransaction),
                        Event::Idle => return Err(FrontendError::IdleTimeout),
                        Event::Stop => return Err(FrontendError::ShuttingDown),
                    }
                }
            }
        }
    }

    /// Handles every complete client message in the buffer; what goes to the
    /// server is written once at the end.
    async fn process_client_messages(
        &mut self,
        client: &mut ClientConn,
    ) -> Result<Flow, FrontendError> {
        let max = self.settings.max_message;
        let mut flow = Flow::Continue;
        while let Some(len) = framing::check(&client.rbuf, max)? {
            if client.rbuf[0] == tag::TERMINATE {
                client.rbuf.advance(len);
                flow = Flow::Quit;
                break;
            }
            let routed = self.route_message(&client.rbuf[..len])?;
            let mut dest = None;
            if let Some(routed) = routed {
                if let Some(cmd) = &routed.intercept {
                    if self.server.as_ref().is_none_or(|a| a.relay.is_quiet()) {
                        client.rbuf.advance(len);
                        let tx = self.server.as_ref().map_or(TxStatus::Idle, |a| a.relay.tx);
                        answer_route_command(cmd, &mut self.route_override, tx, &mut client.wbuf);
                        continue;
                    }
                }
                if !self.make_way_for(routed.dest).await {
                    break; // the attached server must finish first
                }
                if let Some(reason) = routed.pin {
                    if self.pinned.is_none() {
                        debug!(?reason, "session pinned to its server");
                    }
                    self.pinned = Some(reason);
                }
                dest = Some(routed.dest);
            }
            let msg = client.rbuf.split_to(len);
            self.handle_client_message(&msg, dest, client).await?;
        }
        if !self.to_server.is_empty() {
            let attached = self
                .server
                .as_mut()
                .expect("queued output implies a server");
            client.flush().await?;
            let written = attached.conn.write_all(&self.to_server).await;
            self.to_server.clear();
            if let Err(e) = written {
                self.retry_read(e, client).await?;
            }
        }
        if let Some(attached) = &mut self.server {
            self.to_client.clear();
            attached.relay.take_due_answers(&mut self.to_client);
            write_out(client, &self.to_client, &[]);
        }
        client.flush().await?;
        Ok(flow)
    }

    async fn handle_client_message(
        &mut self,
        msg: &[u8],
        dest: Option<Destination>,
        client: &mut ClientConn,
    ) -> Result<(), FrontendError> {
        let frame = Frame::new(msg);
        tracing::trace!(tag = %(frame.tag as char), len = msg.len(), attached = self.server.is_some(), "client message");
        let renames = self.renames_statements();
        // Messages answered without a server when none is attached.
        if self.server.is_none() && self.to_server.is_empty() {
            match frame.tag {
                tag::SYNC => {
                    be::write_ready_for_query(TxStatus::Idle, &mut client.wbuf);
                    return Ok(());
                }
                tag::COPY_DATA | tag::COPY_DONE | tag::COPY_FAIL => {
                    // Stray copy messages after a failed COPY are ignored, as PostgreSQL does.
                    return Ok(());
                }
                tag::CLOSE if renames => {
                    if let (Target::Statement, name) = fe::target_and_name(frame.body, "Close")? {
                        self.statements.remove(name);
                        client
                            .wbuf
                            .extend_from_slice(&[be::tag::CLOSE_COMPLETE, 0, 0, 0, 4]);
                        return Ok(());
                    }
                }
                _ => {}
            }
        }
        if !matches!(
            frame.tag,
            tag::QUERY
                | tag::PARSE
                | tag::BIND
                | tag::DESCRIBE
                | tag::EXECUTE
                | tag::CLOSE
                | tag::FLUSH
                | tag::SYNC
                | tag::FUNCTION_CALL
                | tag::COPY_DATA
                | tag::COPY_DONE
                | tag::COPY_FAIL
        ) {
            return Err(ProtocolError::Unexpected {
                tag: frame.tag as char,
                context: "from client",
            }
            .into());
        }
        if self.server.is_none() {
            self.attach(dest.unwrap_or(Destination::Primary)).await?;
        }
        if let Some(replay) = &mut self.replay {
            replay.extend_from_slice(msg);
        }
        let attached = self.server.as_mut().expect("attached above");
        let out = &mut self.to_server;
        let relay = &mut attached.relay;
        let conn = &mut *attached.conn;
        match frame.tag {
            tag::QUERY => {
                if resets_prepared_statements(fe::query(frame.body)?) {
                    conn.forget_all_prepared();
                }
                relay.owe(Owed::UntilReady);
                out.extend_from_slice(msg);
            }
            tag::FUNCTION_CALL => {
                relay.owe(Owed::UntilReady);
                out.extend_from_slice(msg);
            }
            tag::SYNC => {
                relay.owe(Owed::Ready);
                out.extend_from_slice(msg);
            }
            tag::EXECUTE => {
                relay.owe(Owed::Execute);
                out.extend_from_slice(msg);
            }
            tag::FLUSH => {
                relay.sent_unanswered();
                out.extend_from_slice(msg);
            }
            tag::COPY_DATA | tag::COPY_DONE | tag::COPY_FAIL => out.extend_from_slice(msg),
            tag::PARSE => {
                let parse = fe::parse(frame.body)?;
                if !renames || parse.statement.is_empty() {
                    relay.owe(Owed::Parse { prepared: None });
                    out.extend_from_slice(msg);
                } else {
                    let destination = dest.unwrap_or(Destination::Primary);
                    let statement = self.statements.define(&parse, destination);
                    if conn.has_prepared(&statement.server_name) {
                        relay.owe(Owed::AnswerParseComplete);
                    } else {
                        conn.mark_prepared(statement.server_name.clone());
                        relay.owe(Owed::Parse {
                            prepared: Some(statement.server_name.clone()),
                        });
                        out.extend_from_slice(&statement.parse);
                    }
                }
            }
            tag::BIND => {
                let bind = fe::bind(frame.body)?;
                match self.statements.get(bind.statement).filter(|_| renames) {
                    Some(statement) => {
                        ensure_prepared(conn, relay, out, statement);
                        fe::write_bind(bind.portal, &statement.server_name, bind.rest, out);
                    }
                    None => out.extend_from_slice(msg),
                }
                relay.owe(Owed::Bind);
            }
            tag::DESCRIBE => {
                let (target, name) = fe::target_and_name(frame.body, "Describe")?;
                let owed = match target {
                    Target::Statement => Owed::DescribeStatement,
                    Target::Portal => Owed::DescribePortal,
                };
                match self
                    .statements
                    .get(name)
                    .filter(|_| renames && target == Target::Statement)
                {
                    Some(statement) => {
                        ensure_prepared(conn, relay, out, statement);
                        fe::write_describe(Target::Statement, &statement.server_name, out);
                    }
                    None => out.extend_from_slice(msg),
                }
                relay.owe(owed);
            }
            tag::CLOSE => {
                let (target, name) = fe::target_and_name(frame.body, "Close")?;
                if renames && target == Target::Statement {
                    // The server keeps the statement for other clients.
                    self.statements.remove(name);
                    relay.owe(Owed::AnswerCloseComplete);
                } else {
                    relay.owe(Owed::Close);
                    out.extend_from_slice(msg);
                }
            }
            _ => unreachable!("filtered above"),
        }
        Ok(())
    }

    /// Whether a statement for `dest` can go out now: the attached server
    /// serves it, or is released to make room. False means wait for the
    /// attached server's replies first.
    async fn make_way_for(&mut self, dest: Destination) -> bool {
        let Some(attached) = &self.server else {
            return true;
        };
        let idle = attached.relay.is_idle(attached.conn.rbuf.len()) && self.to_server.is_empty();
        let serves = attached.role.serves(dest);
        // An idle primary holding a read gives way so the read can be balanced.
        let rebalance = dest == Destination::Replica && !attached.role.is_replica();
        if idle && self.pinned.is_none() && (!serves || rebalance) {
            self.detach(false).await;
            return true;
        }
        // Inside a transaction or an unsynced batch the statement stays with its
        // server (a write reaching a read-only transaction fails there, as it should).
        serves || attached.relay.tx != TxStatus::Idle || !attached.relay.is_synced()
    }

    /// Checks out a server for `dest` and brings its tracked parameters in
    /// line with the client's. A replica that cannot be reached is reported
    /// and another is tried once; then the read falls back to the primary
    /// (or fails, if the database says so).
    pub async fn attach(&mut self, dest: Destination) -> Result<(), FrontendError> {
        self.set_client_state(ClientState::Waiting);
        let waiting = Instant::now();
        let (conn, role) = match (dest, &self.pools.replicas) {
            (Destination::Replica, Some(replicas)) if self.pinned.is_none() => {
                let mut tried = None;
                let mut found = None;
                for _ in 0..2 {
                    let Some(endpoint) = replicas.pick(tried) else {
                        break;
                    };
                    match endpoint.pool.get().await {
                        Ok(conn) => {
                            endpoint.report_success();
                            found = Some((conn, ServerRole::Replica(endpoint)));
                            break;
                        }
                        Err(e @ (PoolError::Connect(_) | PoolError::RecentFailure(_))) => {
                            debug!(addr = %endpoint.addr, error = %e, "replica unavailable; trying another");
                            endpoint.report_failure();
                            tried = Some(endpoint.addr);
                        }
                        Err(e) => return Err(e.into()),
                    }
                }
                match (found, replicas.fallback) {
                    (Some(found), _) => found,
                    (None, ReadFallback::Primary) => {
                        (self.pools.primary.get().await?, ServerRole::Primary)
                    }
                    (None, ReadFallback::Error) => return Err(FrontendError::NoReplica),
                }
            }
            _ => (self.pools.primary.get().await?, ServerRole::Primary),
        };
        let label = metric_role(&role);
        self.pools.metrics.checkout_waited(label, waiting.elapsed());
        self.metrics.route(
            label,
            match (dest, &role) {
                (Destination::Primary, _) => "primary",
                (Destination::Replica, ServerRole::Replica(_)) => "read",
                (Destination::Replica, ServerRole::Primary) => "read_fallback",
            },
        );
        self.set_client_state(ClientState::Active);
        self.pools.remember_server_params(conn.params());
        self.cancel.slot.attach(conn.cancel_key());
        let in_flight = match &role {
            ServerRole::Replica(endpoint) => Some(endpoint.enter()),
            ServerRole::Primary => None,
        };
        self.replay = role.is_replica().then(BytesMut::new);
        self.server = Some(Attached {
            conn,
            relay: RelayState::default(),
            role,
            since: Instant::now(),
            _in_flight: in_flight,
        });
        if let Some(sql) = self.sync_sql() {
            self.run_on_server(&sql).await?;
        }
        Ok(())
    }

    /// The attached server failed. A read on a replica that has not answered
    /// yet is sent again (once) to another replica, or the primary; anything
    /// else ends the session with the error.
    async fn retry_read(
        &mut self,
        error: crate::backend::BackendError,
        client: &mut ClientConn,
    ) -> Result<(), FrontendError> {
        let replay = self.replay.take();
        let Some(attached) = self.server.take() else {
            return Err(error.into());
        };
        self.cancel.slot.detach();
        let (Some(replay), ServerRole::Replica(endpoint)) = (replay, &attached.role) else {
            return Err(error.into());
        };
        if !error.is_connection_failure() || replay.is_empty() {
            return Err(error.into());
        }
        warn!(addr = %endpoint.addr, %error, "replica failed before answering; retrying the read");
        endpoint.report_failure();
        drop(attached);
        self.attach(Destination::Replica).await?;
        self.replay = None; // one retry per read
        let mut rest = replay.freeze();
        while !rest.is_empty() {
            let len = framing::check(&rest, usize::MAX)?.expect("replayed messages are whole");
            let msg = rest.split_to(len);
            self.handle_client_message(&msg, Some(Destination::Replica), client)
                .await?;
        }
        if let Some(attached) = self.server.as_mut() {
            attached.conn.write_all(&self.to_server).await?;
        }
        self.to_server.clear();
        Ok(())
    }

    fn set_client_state(&mut self, state: ClientState) {
        if let Some(t) = &mut self.tracker {
            t.set_state(state);
        }
    }

    pub fn sync_sql(&self) -> Option<String> {
        let attached = self.server.as_ref()?;
        self.params.sync_sql(|name| attached.conn.param(name))
    }

    /// Runs a statement of pgrelay's own on the attached server; a failure
    /// closes that server rather than leave it in an unknown state.
    pub async fn run_on_server(&mut self, sql: &str) -> Result<(), FrontendError> {
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
    pub async fn release_if_idle(&mut self) {
        if !releases_at_idle(self.mode) || self.pinned.is_some() {
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
        self.replay = None;
        self.cancel.slot.detach();
        self.set_client_state(ClientState::Idle);
        let held = attached.since.elapsed();
        self.pools
            .metrics
            .transaction_done(metric_role(&attached.role), held);
        if let ServerRole::Replica(endpoint) = &attached.role {
            endpoint.observe_latency(held);
        }
        if !attached.relay.is_idle(attached.conn.rbuf.len()) {
            debug!("closing a server left mid-transaction or mid-reply");
            return; // dropping the guard closes the connection
        }
        let query = self.settings.server_reset_query.trim();
        let too_many = attached.conn.prepared_count() > MAX_PREPARED_PER_SERVER;
        let query = match (reset && !query.is_empty(), too_many) {
            (true, _) => Some(query),
            (false, true) => Some("DEALLOCATE ALL"),
            (false, false) => None,
        };
        if let Some(query) = query {
            let ran =
                tokio::time::timeout(Duration::from_secs(5), attached.conn.run_discarding(query))
                    .await;
            if !matches!(ran, Ok(Ok(TxStatus::Idle))) {
                return;
            }
            if resets_prepared_statements(query) {
                attached.conn.forget_all_prepared();
            }
        }
        attached.conn.release();
    }

    /// The client is gone: the server is reset and pooled, or closed.
    pub async fn finish(&mut self) {
        let reset = self.mode == PoolMode::Session || self.settings.server_reset_query_always;
        self.detach(reset).await;
    }
}

/// Prepares `statement` on the server first if it does not have it yet; the
/// injected Parse's reply is owed to pgrelay, before the message that needs it.
fn ensure_prepared(
    conn: &mut crate::backend::ServerConn,
    relay: &mut RelayState,
    out: &mut BytesMut,
    statement: &super::prepared::Statement,
) {
    if conn.has_prepared(&statement.server_name) {
        return;
    }
    conn.mark_prepared(statement.server_name.clone());
    relay.owe(Owed::InjectedParse {
        prepared: statement.server_name.clone(),
    });
    out.extend_from_slice(&statement.parse);
}

fn metric_role(role: &ServerRole) -> MetricRole {
    match role {
        ServerRole::Primary => MetricRole::Primary,
        ServerRole::Replica(_) => MetricRole::Replica,
    }
}

/// Whether SQL pgrelay forwards drops every prepared statement on the server.
fn resets_prepared_statements(sql: &str) -> bool {
    let words: Vec<String> = sql
        .split_whitespace()
        .take(2)
        .map(|w| w.trim_end_matches(';').to_ascii_lowercase())
        .collect();
    matches!(
        (
            words.first().map(String::as_str),
            words.get(1).map(String::as_str)
        ),
        (Some("discard"), Some("all")) | (Some("deallocate"), Some("all"))
    )
}

/// Forwards what the server sent, tracking replies owed and parameter changes.
async fn relay_server_data(
    attached: &mut Attached,
    params: &mut ClientParams,
    to_client: &mut Vec<Out>,
    client: &mut ClientConn,
) -> Result<bool, FrontendError> {
    let conn = &mut *attached.conn;
    tracing::trace!(bytes = conn.rbuf.len(), first = %(conn.rbuf[0] as char), relay = ?attached.relay, "server data");
    let mut changed: Vec<(String, String)> = Vec::new();
    to_client.clear();
    let n = attached.relay.scan(&conn.rbuf, to_client, |name, value| {
        changed.push((name.to_string(), value.to_string()))
    })?;
    for (name, value) in changed {
        conn.set_param(&name, &value);
        params.set(&name, &value);
    }
    for name in attached.relay.not_prepared.drain(..) {
        conn.forget_prepared(&name);
    }
    match to_client.as_slice() {
        [] => {}
        [Out::Server(range)] => client.send_relayed(&conn.rbuf[range.clone()]).await?,
        pieces => {
            write_out(client, pieces, &conn.rbuf);
            client.flush().await?;
        }
    }
    conn.rbuf.advance(n);
    Ok(!to_client.is_empty())
}

fn write_out(client: &mut ClientConn, pieces: &[Out], server: &[u8]) {
    for piece in pieces {
        match piece {
            Out::Server(range) => client.wbuf.extend_from_slice(&server[range.clone()]),
            Out::Own(bytes) => client.wbuf.extend_from_slice(bytes),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::resets_prepared_statements;

    #[test]
    fn recognises_statements_that_drop_prepared_statements() {
        assert!(resets_prepared_statements("DISCARD ALL"));
        assert!(resets_prepared_statements("  discard all;"));
        assert!(resets_prepared_statements("DEALLOCATE ALL"));
        assert!(
            !resets_prepared_statements("deallocate s1"),
            "an SQL-level name, not pgrelay's"
        );
        assert!(!resets_prepared_statements("DISCARD TEMP"));
        assert!(!resets_prepared_statements("select 'discard all'"));
    }
}
