//! The query loop of a logged-in client: attach a pooled server when a message
//! needs one, forward client messages (renaming prepared statements in
//! transaction pooling), relay replies, and release the server when idle.

use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, BytesMut};
use tracing::debug;

use super::cancel::Registration;
use super::client::ClientConn;
use super::params::ClientParams;
use super::prepared::ClientStatements;
use super::relay::{Out, Owed, RelayState};
use super::{releases_at_idle, FrontendError, FrontendSettings};
use crate::cluster::{DatabasePools, PooledServer};
use crate::config::PoolMode;
use crate::protocol::backend::{self as be, TxStatus};
use crate::protocol::framing::{self, Frame};
use crate::protocol::frontend::{self as fe, tag, Target};
use crate::protocol::ProtocolError;
use crate::shutdown::ShutdownSignal;

/// Statements pgrelay keeps prepared on one server before it deallocates them all.
const MAX_PREPARED_PER_SERVER: usize = 1000;

pub(crate) struct Attached {
    conn: PooledServer,
    relay: RelayState,
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
}

pub(crate) enum Flow {
    Continue,
    Quit,
}

impl<'a> Session<'a> {
    pub fn new(
        settings: Arc<FrontendSettings>,
        pools: Arc<DatabasePools>,
        cancel: &'a Registration<'a>,
    ) -> Self {
        let mode = pools.spec.pool_mode;
        Session {
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
                Some(attached) => tokio::select! {
                    r = client.fill() => { r?; }
                    r = attached.conn.fill() => {
                        r?;
                        relay_server_data(attached, &mut self.params, &mut self.to_client, client).await?;
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

    /// Handles every complete client message in the buffer; what goes to the
    /// server is written once at the end.
    async fn process_client_messages(
        &mut self,
        client: &mut ClientConn,
    ) -> Result<Flow, FrontendError> {
        let max = self.settings.max_message;
        let mut flow = Flow::Continue;
        while let Some(len) = framing::check(&client.rbuf, max)? {
            let msg = client.rbuf.split_to(len);
            if msg[0] == tag::TERMINATE {
                flow = Flow::Quit;
                break;
            }
            self.handle_client_message(&msg, client).await?;
        }
        if !self.to_server.is_empty() {
            let attached = self
                .server
                .as_mut()
                .expect("queued output implies a server");
            client.flush().await?;
            attached.conn.write_all(&self.to_server).await?;
            self.to_server.clear();
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
            self.attach().await?;
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
                    let statement = self.statements.define(&parse);
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

    /// Checks out a server and brings its tracked parameters in line with the client's.
    pub async fn attach(&mut self) -> Result<(), FrontendError> {
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
) -> Result<(), FrontendError> {
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
    Ok(())
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
