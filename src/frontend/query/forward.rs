//! Forwarding one client message to the attached server: replies owed,
//! prepared statements renamed and prepared where missing.

use super::*;

impl Session<'_> {
    /// Handles a client message that arrived with no server attached:
    /// answered here when it needs none, else forwarded once one is attached.
    /// (With a server attached, messages go to `forward_client_message`.)
    pub(super) async fn handle_without_server(
        &mut self,
        msg: &[u8],
        dest: Option<Destination>,
        to_client: &mut BytesMut,
    ) -> Result<(), FrontendError> {
        let frame = Frame::new(msg);
        if self.answer_without_server(&frame, to_client)? {
            return Ok(());
        }
        check_forwardable(frame.tag)?;
        match self.attach(dest.unwrap_or(Destination::Primary)).await {
            Ok(()) => self.forward_client_message(msg, dest),
            Err(e @ FrontendError::WaitCancelled) => {
                // The statement never reached a server: answered as
                // PostgreSQL answers a cancelled one, and the session goes on.
                be::write_error(be::Severity::Error, e.sqlstate(), &e.to_string(), to_client);
                match frame.tag {
                    tag::QUERY | tag::FUNCTION_CALL => {
                        be::write_ready_for_query(TxStatus::Idle, to_client)
                    }
                    _ => self.skipping_to_sync = true,
                }
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// Messages answered without a server: true if `frame` was one of them.
    fn answer_without_server(
        &mut self,
        frame: &Frame<'_>,
        to_client: &mut BytesMut,
    ) -> Result<bool, FrontendError> {
        if !self.to_server.is_empty() {
            return Ok(false);
        }
        match frame.tag {
            tag::SYNC => {
                be::write_ready_for_query(TxStatus::Idle, to_client);
                Ok(true)
            }
            // Stray copy messages after a failed COPY are ignored, as PostgreSQL does.
            tag::COPY_DATA | tag::COPY_DONE | tag::COPY_FAIL => Ok(true),
            tag::CLOSE if self.renames_statements() => {
                match fe::target_and_name(frame.body, "Close")? {
                    (Target::Statement, name) => {
                        self.statements.remove(name);
                        self.cancel.slot.set_prepared(self.statements.len());
                        to_client.extend_from_slice(&[be::tag::CLOSE_COMPLETE, 0, 0, 0, 4]);
                        Ok(true)
                    }
                    _ => Ok(false),
                }
            }
            _ => Ok(false),
        }
    }

    /// Queues `msg` for the attached server and records the reply it owes.
    /// Synchronous: with a server attached, the common case, a message costs
    /// no future of its own.
    pub(super) fn forward_client_message(
        &mut self,
        msg: &[u8],
        dest: Option<Destination>,
    ) -> Result<(), FrontendError> {
        let frame = Frame::new(msg);
        tracing::trace!(tag = %(frame.tag as char), len = msg.len(), "client message");
        let renames = self.renames_statements();
        let Some(attached) = self.server.as_mut() else {
            return Err(unexpected(frame.tag));
        };
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
            // An empty statement name is a lone NUL: unnamed statements (and every
            // Parse outside transaction pooling) pass through without a second parse.
            tag::PARSE if !renames || frame.body.first() == Some(&0) => {
                relay.owe(Owed::Parse { prepared: None });
                out.extend_from_slice(msg);
                self.extended.server_parses += 1;
            }
            tag::PARSE => {
                let parse = fe::parse(frame.body)?;
                let destination = dest.unwrap_or(Destination::Primary);
                let statement = self.statements.define(&parse, destination);
                self.cancel.slot.set_prepared(self.statements.len());
                if conn.has_prepared(&statement.server_name) {
                    relay.owe(Owed::AnswerParseComplete);
                } else {
                    conn.mark_prepared(statement.server_name.clone());
                    relay.owe(Owed::Parse {
                        prepared: Some(statement.server_name.clone()),
                    });
                    out.extend_from_slice(&statement.parse);
                    self.extended.server_parses += 1;
                }
            }
            tag::BIND => {
                let bind = fe::bind(frame.body)?;
                match self.statements.get(bind.statement).filter(|_| renames) {
                    Some(statement) => {
                        if ensure_prepared(conn, relay, out, statement) {
                            self.extended.server_parses += 1;
                        }
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
                        if ensure_prepared(conn, relay, out, statement) {
                            self.extended.server_parses += 1;
                        }
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
                    self.cancel.slot.set_prepared(self.statements.len());
                    relay.owe(Owed::AnswerCloseComplete);
                } else {
                    relay.owe(Owed::Close);
                    out.extend_from_slice(msg);
                }
            }
            other => return Err(unexpected(other)),
        }
        // Kept only once the message was accepted: a read is replayed whole
        // on another server if its replica fails before answering.
        if let Some(replay) = &mut self.replay {
            replay.extend_from_slice(msg);
        }
        Ok(())
    }
}

/// Rejects what a client may not send in the query loop before a server is
/// attached for it.
fn check_forwardable(tag: u8) -> Result<(), FrontendError> {
    match tag {
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
        | tag::COPY_FAIL => Ok(()),
        other => Err(unexpected(other)),
    }
}

fn unexpected(tag: u8) -> FrontendError {
    ProtocolError::Unexpected {
        tag: tag as char,
        context: "from client",
    }
    .into()
}

/// Prepares `statement` on the server first if it does not have it yet; the
/// injected Parse's reply is owed to pgrelay, before the message that needs it.
/// True if it did (a Parse sent to the server).
fn ensure_prepared(
    conn: &mut crate::backend::ServerConn,
    relay: &mut RelayState,
    out: &mut BytesMut,
    statement: &crate::frontend::prepared::Statement,
) -> bool {
    if conn.has_prepared(&statement.server_name) {
        return false;
    }
    conn.mark_prepared(statement.server_name.clone());
    relay.owe(Owed::InjectedParse {
        prepared: statement.server_name.clone(),
    });
    out.extend_from_slice(&statement.parse);
    true
}
