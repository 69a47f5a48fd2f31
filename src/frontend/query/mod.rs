//! The query loop of a logged-in client: attach a pooled server when a message
//! needs one, forward client messages (renaming prepared statements in
//! transaction pooling), relay replies, and release the server when idle.

mod attach;
mod forward;
mod freshness;
mod route;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Buf, BytesMut};
use tracing::{debug, warn};

use super::cancel::Registration;
use super::client::ClientConn;
use super::params::ClientParams;
use super::prepared::ClientStatements;
use super::relay::{Completed, Out, Owed, RelayState};
use super::routing::{
    answer_route_command, Destination, LastRoute, RouteContext, Routed, ServerRole,
};
use super::{releases_at_idle, FrontendError, FrontendSettings};
use crate::backend::Progress;
use crate::cluster::balance::InFlight;
use crate::cluster::{DatabasePools, PooledServer, ReadFallback};
use crate::config::PoolMode;
use crate::metrics::{ClientState, ClientTracker, Metrics, Role as MetricRole};
use crate::pool::PoolError;
use crate::protocol::backend::{self as be, TxStatus};
use crate::protocol::framing::{self, Frame};
use crate::protocol::frontend::{self as fe, tag, Target};
use crate::protocol::ProtocolError;
use crate::router::{
    mentions_pgrelay, Classifier, PinReason, RouteOverride, SessionContext, Target as RouteTarget,
    TxState,
};
use crate::shutdown::ShutdownSignal;
use crate::timer::ReusableSleep;

/// Largest replay buffer a session keeps between reads.
const MAX_SPARE_REPLAY: usize = 4096;

/// Statements pgrelay keeps prepared on one server before it deallocates them all.
const MAX_PREPARED_PER_SERVER: usize = 1000;

pub(crate) struct Attached {
    conn: PooledServer,
    relay: RelayState,
    role: ServerRole,
    since: Instant,
    /// When the oldest query still unanswered was sent, and the open
    /// transaction's first one (statistics; `None` when there is none).
    query_started: Option<Instant>,
    xact_started: Option<Instant>,
    /// Counts this client in its replica's outstanding requests.
    _in_flight: Option<InFlight>,
    /// A statement that is not a read ran here (read-your-writes marks it).
    wrote: bool,
}

impl Attached {
    /// A client message is about to go to this server: a query starts now
    /// unless one is still unanswered.
    fn note_request(&mut self) {
        if self.query_started.is_none() {
            let now = Instant::now();
            self.query_started = Some(now);
            self.xact_started.get_or_insert(now);
        }
    }

    /// Counts the queries and transactions the server just finished. With
    /// requests pipelined, the time runs from the oldest unanswered one.
    fn record_completed(&mut self, done: Completed, metrics: &crate::metrics::PoolMetrics) {
        let now = Instant::now();
        let role = metric_role(&self.role);
        let since = |start: Option<Instant>| now.duration_since(start.unwrap_or(self.since));
        metrics.queries_done(role, done.queries, since(self.query_started));
        if done.transactions > 0 {
            metrics.transactions_done(role, done.transactions, since(self.xact_started));
        }
        let more = (!self.relay.is_quiet()).then_some(now);
        self.query_started = more;
        if self.relay.tx == TxStatus::Idle {
            self.xact_started = more;
        }
    }
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
    /// The last classified Query or Parse, for a client that repeats it.
    last_route: LastRoute,
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
    /// The replay buffer of the last read, kept for the next (small ones only).
    spare_replay: BytesMut,
    /// Parse and Bind messages not yet published to the pool's statistics.
    extended: crate::metrics::ExtendedCounts,
    /// The relay state of the last server, emptied, so that a checkout does not
    /// allocate its reply queue anew (empty until the first server is released).
    spare_relay: RelayState,
    /// The client's latest write, for read-your-writes.
    write_mark: Option<freshness::WriteMark>,
    /// Timers reused by every wait of their kind (see `timer`): a pool wait,
    /// an idle client, an idle transaction, a server's answer.
    wait_timer: ReusableSleep,
    client_idle_timer: ReusableSleep,
    idle_in_tx_timer: ReusableSleep,
    query_timer: ReusableSleep,
    /// An extended-protocol message failed before reaching a server (its
    /// wait was cancelled): the rest of its batch is dropped up to the Sync,
    /// which is answered, as PostgreSQL does after an error.
    skipping_to_sync: bool,
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
            spare_replay: BytesMut::new(),
            extended: Default::default(),
            spare_relay: RelayState::empty(),
            write_mark: None,
            wait_timer: ReusableSleep::new(),
            client_idle_timer: ReusableSleep::new(),
            idle_in_tx_timer: ReusableSleep::new(),
            query_timer: ReusableSleep::new(),
            skipping_to_sync: false,
            classifier,
            last_route: LastRoute::default(),
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
            // Allocated on first use: an idle client should cost as little as possible.
            to_server: BytesMut::new(),
            to_client: Vec::new(),
        }
    }

    /// Prepared statements are renamed only where a client's statements may
    /// meet servers other than the one that prepared them.
    fn renames_statements(&self) -> bool {
        releases_at_idle(self.mode)
    }

    pub async fn serve(
        &mut self,
        client: &mut ClientConn,
        shutdown: ShutdownSignal,
    ) -> Result<(), FrontendError> {
        // One wait for the whole session: making a new one per loop costs a
        // waiter registration on the shared channel each time.
        let stop = shutdown.triggered();
        tokio::pin!(stop);
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
            // A client idle in a transaction, an idle client without a
            // server, and a server slow to answer may each be timed out.
            let limit = match (quiet, in_tx) {
                (true, true) => self
                    .settings
                    .idle_transaction_timeout
                    .map(|d| (Instant::now() + d, &mut self.idle_in_tx_timer)),
                (true, false) if self.server.is_none() => self
                    .settings
                    .client_idle_timeout
                    .map(|d| (Instant::now() + d, &mut self.client_idle_timer)),
                (false, _) => match (self.settings.query_timeout, &self.server) {
                    (Some(d), Some(a)) => a
                        .query_started
                        .map(|started| (started + d, &mut self.query_timer)),
                    _ => None,
                },
                _ => None,
            };
            let idle_timer = async {
                match limit {
                    Some((deadline, timer)) => timer.until(deadline).await,
                    None => std::future::pending().await,
                }
            };
            let stoppable = quiet && !in_tx;
            match &mut self.server {
                None => tokio::select! {
                    biased;
                    r = client.fill() => { r?; }
                    _ = idle_timer => return Err(FrontendError::IdleTimeout),
                    _ = &mut stop, if stoppable => return Err(FrontendError::ShuttingDown),
                },
                Some(attached) => {
                    // Biased, server first: no random start per wait, and
                    // replies are relayed before the client may add more.
                    let event = tokio::select! {
                        biased;
                        r = attached.conn.fill() => Event::Server(r),
                        r = client.fill() => Event::Client(r),
                        _ = idle_timer => Event::Idle,
                        _ = &mut stop, if stoppable => Event::Stop,
                    };
                    match event {
                        Event::Client(r) => {
                            r?;
                        }
                        Event::Server(Ok(_)) => self.relay_from_server(client).await?,
                        Event::Server(Err(e)) => Box::pin(self.retry_read(e)).await?,
                        Event::Idle if !quiet => return Err(self.give_up_on_server()),
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
        // Messages are read in place and the buffer advanced once at the end
        // (an error ends the session): splitting each message off would make
        // the buffer shared and cost an allocation.
        let mut done = 0;
        while let Some(len) = framing::check(&client.rbuf[done..], max)? {
            let msg = &client.rbuf[done..done + len];
            match msg[0] {
                tag::TERMINATE => {
                    done += len;
                    flow = Flow::Quit;
                    break;
                }
                sync_or_other if self.skipping_to_sync => {
                    done += len;
                    if sync_or_other == tag::SYNC {
                        self.skipping_to_sync = false;
                        be::write_ready_for_query(TxStatus::Idle, &mut client.wbuf);
                    }
                    continue;
                }
                tag::PARSE => self.extended.client_parses += 1,
                tag::BIND => self.extended.binds += 1,
                _ => {}
            }
            let routed = self.route_message(msg)?;
            let mut dest = None;
            if let Some(routed) = routed {
                if let Some(cmd) = &routed.intercept {
                    if self.server.as_ref().is_none_or(|a| a.relay.is_quiet()) {
                        done += len;
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
            let msg = &client.rbuf[done..done + len];
            if let Some(attached) = &mut self.server {
                attached.note_request();
                self.forward_client_message(msg, dest)?;
            } else {
                self.handle_without_server(msg, dest, &mut client.wbuf)
                    .await?;
            }
            done += len;
            if dest == Some(Destination::Primary) {
                if let Some(attached) = &mut self.server {
                    attached.wrote |= !attached.role.is_replica();
                }
            }
        }
        client.rbuf.advance(done);
        if !self.to_server.is_empty() {
            client.flush().await?;
            let written = self.write_to_server(client).await?;
            self.to_server.clear();
            if let Err(e) = written {
                Box::pin(self.retry_read(e)).await?;
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

    /// Writes the queued messages to the server, relaying what it sends
    /// meanwhile: a server busy sending a large result stops reading, and a
    /// big pipelined batch would otherwise leave both sides waiting. The
    /// inner error is the server's (the caller may retry a read); the outer
    /// one ends the session.
    async fn write_to_server(
        &mut self,
        client: &mut ClientConn,
    ) -> Result<Result<(), crate::backend::BackendError>, FrontendError> {
        let mut sent = 0;
        while sent < self.to_server.len() {
            let attached = self
                .server
                .as_mut()
                .expect("queued output implies a server");
            match attached.conn.write_or_fill(&self.to_server[sent..]).await {
                Err(e) => return Ok(Err(e)),
                Ok(Progress::Wrote(n)) => sent += n,
                Ok(Progress::Read(_)) => self.relay_from_server(client).await?,
            }
        }
        Ok(Ok(()))
    }

    /// Relays what the attached server sent. Once a reply reached the client
    /// the read can no longer be retried; in statement pooling a transaction
    /// left open ends the session.
    async fn relay_from_server(&mut self, client: &mut ClientConn) -> Result<(), FrontendError> {
        let attached = self.server.as_mut().expect("attached");
        let answered = relay_server_data(
            attached,
            &mut self.params,
            &self.cancel.slot,
            &mut self.to_client,
            client,
        )
        .await?;
        let completed = attached.relay.take_completed();
        if completed.queries > 0 {
            attached.record_completed(completed, &self.pools.metrics);
            self.pools.metrics.client_bytes(client.take_byte_counts());
            self.pools.metrics.extended_done(&mut self.extended);
        }
        let tx_left_open = attached.relay.is_quiet() && attached.relay.tx != TxStatus::Idle;
        if answered {
            self.end_replay();
        }
        if self.mode == PoolMode::Statement && tx_left_open {
            return Err(FrontendError::TransactionInStatementMode);
        }
        Ok(())
    }

    /// The read was answered (or the server released): nothing to replay.
    /// A small buffer is kept so the next read does not allocate one.
    fn end_replay(&mut self) {
        if let Some(mut buf) = self.replay.take() {
            if buf.capacity() <= MAX_SPARE_REPLAY {
                buf.clear();
                self.spare_replay = buf;
            }
        }
    }

    fn set_client_state(&mut self, state: ClientState) {
        if let Some(t) = &mut self.tracker {
            t.set_state(state);
        }
    }

    /// SQL that brings the attached server's tracked parameters in line with
    /// the client's, if they differ. A server already known to match (the
    /// common case in a pool of like clients) is not compared value by value.
    pub fn sync_sql(&mut self) -> Option<String> {
        let attached = self.server.as_mut()?;
        let wanted = self.params.snapshot();
        if attached.conn.params_synced_to(wanted) {
            return None;
        }
        let sql = self.params.sync_sql(attached.conn.params());
        if sql.is_none() {
            attached.conn.mark_params_synced(wanted.clone());
        }
        sql
    }

    /// Runs [`Session::sync_sql`]'s statements on the attached server. The
    /// server reports the reported parameters back as it runs the SETs; the
    /// others are recorded here as pgrelay set them, so the next client that
    /// wants the same values is not sent them again. (The check stays with
    /// the caller: it is on every checkout's path, this rarely is.)
    pub async fn run_param_sync(&mut self, sql: &str) -> Result<(), FrontendError> {
        self.run_on_server(sql).await?;
        if let Some(attached) = self.server.as_mut() {
            let conn = &mut attached.conn;
            let reset: Vec<String> = conn
                .params()
                .iter()
                .filter(|(name, _)| self.params.is_tracked(name) && self.params.get(name).is_none())
                .map(|(name, _)| name.clone())
                .collect();
            for name in reset {
                conn.forget_param(&name);
            }
            let wanted = self.params.snapshot().clone();
            for (name, value) in wanted.iter() {
                conn.set_param(name, value);
            }
            conn.mark_params_synced(wanted);
        }
        Ok(())
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
        self.end_replay();
        self.cancel.slot.detach();
        self.set_client_state(ClientState::Idle);
        let now = Instant::now();
        if let ServerRole::Replica(endpoint) = &attached.role {
            endpoint.observe_latency(now.duration_since(attached.since), now);
        }
        if !attached.relay.is_idle(attached.conn.rbuf.len()) {
            debug!("closing a server left mid-transaction or mid-reply");
            return; // dropping the guard closes the connection
        }
        if attached.wrote {
            self.mark_write(&mut attached.conn).await;
        }
        let reset_query = match reset {
            true => Some(self.settings.server_reset_query.trim()).filter(|q| !q.is_empty()),
            false => None,
        };
        let too_many = || attached.conn.prepared_count() > MAX_PREPARED_PER_SERVER;
        let query = reset_query.or_else(|| too_many().then_some("DEALLOCATE ALL"));
        if let Some(query) = query {
            let ran = Box::pin(tokio::time::timeout(
                Duration::from_secs(5),
                attached.conn.run_discarding(query),
            ))
            .await;
            if !matches!(ran, Ok(Ok(TxStatus::Idle))) {
                return;
            }
            if resets_prepared_statements(query.as_bytes()) {
                attached.conn.forget_all_prepared();
            }
        }
        self.spare_relay = attached.relay.emptied();
        if attached.conn.cancel_pending() {
            // Kept out of the pool until the postmaster has acted on the
            // cancel, so the next client takes another server rather than
            // wait on this one (PgBouncer's sv_being_canceled).
            let conn = attached.conn;
            let counted = (!attached.role.is_replica()).then(|| self.pools.clone());
            if let Some(pools) = &counted {
                pools.being_canceled.fetch_add(1, Ordering::Relaxed);
            }
            tokio::spawn(async move {
                conn.cancels_settled().await;
                conn.release();
                if let Some(pools) = counted {
                    pools.being_canceled.fetch_sub(1, Ordering::Relaxed);
                }
            });
            return;
        }
        attached.conn.release_at(now);
    }

    /// The client is gone: the server is reset and pooled, or closed.
    /// Closes the attached server without a word to it: the session was
    /// stopped mid-way and the server may owe replies or hold a transaction
    /// (PostgreSQL rolls that back when the connection closes).
    pub fn abandon_server(&mut self) {
        if self.server.take().is_some() {
            self.cancel.slot.detach();
        }
    }

    /// `query_timeout` passed with the server still owing replies: the
    /// server is closed and its query cancelled, so PostgreSQL stops it
    /// rather than running it to the end for nobody (PgBouncer only closes).
    #[cold]
    fn give_up_on_server(&mut self) -> FrontendError {
        let limit = self.settings.query_timeout.unwrap_or_default();
        warn!(
            ?limit,
            "query_timeout: closing a server that did not answer"
        );
        if let Some(attached) = &self.server {
            let key = attached.conn.cancel_key();
            tokio::spawn(async move {
                if let Err(e) = crate::backend::send_cancel(key, Duration::from_secs(5)).await {
                    debug!(error = %e, "cancelling a timed-out query failed");
                }
            });
        }
        self.abandon_server();
        FrontendError::QueryTimeout(limit)
    }

    pub async fn finish(&mut self) {
        self.pools.metrics.extended_done(&mut self.extended);
        let reset = self.mode == PoolMode::Session || self.settings.server_reset_query_always;
        self.detach(reset).await;
    }
}

fn metric_role(role: &ServerRole) -> MetricRole {
    match role {
        ServerRole::Primary => MetricRole::Primary,
        ServerRole::Replica(_) => MetricRole::Replica,
    }
}

/// Whether SQL pgrelay forwards drops every prepared statement on the server.
/// Runs on every simple query, so it looks at two words of the raw bytes
/// (the keywords are ASCII in every client encoding) without decoding or
/// allocating, and at one byte when the statement cannot start with either verb.
fn resets_prepared_statements(sql: &[u8]) -> bool {
    let first_byte = sql.iter().find(|b| !b.is_ascii_whitespace());
    if !matches!(first_byte, Some(b'd' | b'D')) {
        return false;
    }
    let mut words = sql
        .split(u8::is_ascii_whitespace)
        .filter(|w| !w.is_empty())
        .map(|w| w.strip_suffix(b";").unwrap_or(w));
    let (Some(first), Some(second)) = (words.next(), words.next()) else {
        return false;
    };
    (first.eq_ignore_ascii_case(b"discard") || first.eq_ignore_ascii_case(b"deallocate"))
        && second.eq_ignore_ascii_case(b"all")
}

/// Forwards what the server sent, tracking replies owed and parameter changes.
async fn relay_server_data(
    attached: &mut Attached,
    params: &mut ClientParams,
    slot: &crate::frontend::cancel::CancelSlot,
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
        if name.eq_ignore_ascii_case("application_name") {
            slot.set_application_name(&value); // for SHOW CLIENTS
        }
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
        assert!(resets_prepared_statements(b"DISCARD ALL"));
        assert!(resets_prepared_statements(b"  discard all;"));
        assert!(resets_prepared_statements(b"DEALLOCATE ALL"));
        assert!(
            !resets_prepared_statements(b"deallocate s1"),
            "an SQL-level name, not pgrelay's"
        );
        assert!(!resets_prepared_statements(b"DISCARD TEMP"));
        assert!(!resets_prepared_statements(b"select 'discard all'"));
        assert!(resets_prepared_statements(b"\n\tDiscard\tALL"));
        assert!(!resets_prepared_statements(b"   "));
    }
}
