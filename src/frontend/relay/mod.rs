//! What pgrelay tracks while relaying one server's replies to one client: the
//! replies still owed for each message sent, in order, the transaction status,
//! and whether it is in the middle of a message it passes through unbuffered.
//!
//! Knowing which message each reply answers lets pgrelay drop the replies to
//! messages it injected (a Parse re-preparing a statement on another server)
//! and answer, in the right place, messages it did not forward (a Parse of a
//! statement the server already has, a Close of a statement it keeps).

use std::collections::VecDeque;
use std::ops::Range;
use std::sync::Arc;

use crate::protocol::backend::{self as be, TxStatus};
use crate::protocol::framing::{self, Frame};
use crate::protocol::ProtocolError;

/// Largest message accepted from a server; rows larger than a read are
/// streamed through without being buffered, so this only bounds the header.
pub(crate) const MAX_SERVER_MESSAGE: usize = 1 << 30;

const PARSE_COMPLETE: &[u8] = &[be::tag::PARSE_COMPLETE, 0, 0, 0, 4];
const CLOSE_COMPLETE: &[u8] = &[be::tag::CLOSE_COMPLETE, 0, 0, 0, 4];

/// The reply owed for one message sent to the server (or answered by pgrelay).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Owed {
    /// A simple Query or FunctionCall: everything up to ReadyForQuery.
    UntilReady,
    /// Sync: ReadyForQuery.
    Ready,
    /// The client's Parse; `prepared` names the server-side statement it creates.
    Parse {
        prepared: Option<Arc<str>>,
    },
    /// A Parse pgrelay sent on its own: its ParseComplete is not the client's.
    InjectedParse {
        prepared: Arc<str>,
    },
    Bind,
    Close,
    /// ParameterDescription, then RowDescription or NoData.
    DescribeStatement,
    /// RowDescription or NoData.
    DescribePortal,
    /// Rows, then CommandComplete, EmptyQueryResponse or PortalSuspended.
    Execute,
    /// pgrelay answers with ParseComplete when this message's turn comes.
    AnswerParseComplete,
    /// pgrelay answers with CloseComplete when this message's turn comes.
    AnswerCloseComplete,
}

/// One piece of what goes to the client, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Out {
    /// Bytes of the server buffer, forwarded untouched.
    Server(Range<usize>),
    /// A reply pgrelay makes itself.
    Own(&'static [u8]),
}

/// Requests the server finished since the last [`RelayState::take_completed`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Completed {
    /// ReadyForQuery messages: simple queries and extended-protocol Syncs.
    pub queries: u32,
    /// Those of them that left no transaction open.
    pub transactions: u32,
}

#[derive(Debug)]
pub(crate) struct RelayState {
    owed: VecDeque<Owed>,
    /// Extended-protocol messages were sent since the last Sync.
    unsynced: bool,
    pub tx: TxStatus,
    /// Bytes of a passed-through message still to come from the server.
    skip: usize,
    /// Server-side statements that turned out not to exist (their Parse failed
    /// or was skipped after an error); the caller forgets them.
    pub not_prepared: Vec<Arc<str>>,
    completed: Completed,
}

impl Default for RelayState {
    fn default() -> Self {
        RelayState {
            // Room for a pipelined extended-protocol batch without regrowing.
            owed: VecDeque::with_capacity(8),
            ..RelayState::empty()
        }
    }
}

impl RelayState {
    /// A state with no room reserved, for a session that has had no server yet.
    pub fn empty() -> Self {
        RelayState {
            owed: VecDeque::new(),
            unsynced: false,
            tx: TxStatus::Idle,
            skip: 0,
            not_prepared: Vec::new(),
            completed: Completed::default(),
        }
    }

    /// This state reset for the next server, keeping its queue's allocation
    /// (a fresh one if this one has none yet).
    pub fn emptied(mut self) -> Self {
        if self.owed.capacity() == 0 {
            return RelayState::default();
        }
        self.owed.clear();
        self.not_prepared.clear();
        RelayState {
            owed: self.owed,
            not_prepared: self.not_prepared,
            ..RelayState::empty()
        }
    }

    /// Records the reply owed for a message about to be forwarded or answered.
    pub fn owe(&mut self, owed: Owed) {
        match owed {
            Owed::Ready => self.unsynced = false,
            Owed::UntilReady => {}
            _ => self.unsynced = true,
        }
        self.owed.push_back(owed);
    }

    /// The queries and transactions finished since the last call.
    pub fn take_completed(&mut self) -> Completed {
        std::mem::take(&mut self.completed)
    }

    /// A Flush or another message owing nothing was sent.
    pub fn sent_unanswered(&mut self) {
        self.unsynced = true;
    }

    /// No reply is owed and the server sits idle outside a transaction: the
    /// server may be handed to another client.
    pub fn is_idle(&self, unread_server_bytes: usize) -> bool {
        self.is_quiet() && self.tx == TxStatus::Idle && unread_server_bytes == 0
    }

    /// Every message sent so far is followed by a Sync (or is a simple query).
    pub fn is_synced(&self) -> bool {
        !self.unsynced
    }

    /// Every request has been answered (a transaction may still be open).
    pub fn is_quiet(&self) -> bool {
        self.owed.is_empty() && !self.unsynced && self.skip == 0
    }

    /// Moves pgrelay's own answers that are due (nothing before them is owed
    /// by the server) into `out`.
    pub fn take_due_answers(&mut self, out: &mut Vec<Out>) {
        loop {
            match self.owed.front() {
                Some(Owed::AnswerParseComplete) => out.push(Out::Own(PARSE_COMPLETE)),
                Some(Owed::AnswerCloseComplete) => out.push(Out::Own(CLOSE_COMPLETE)),
                _ => return,
            }
            self.owed.pop_front();
        }
    }

    /// Scans server bytes and says what to send the client now, in `out`;
    /// returns how many bytes of `buf` are consumed. Complete messages are
    /// inspected; a message that needs no inspection and is not yet complete is
    /// passed through as it arrives.
    pub fn scan(
        &mut self,
        buf: &[u8],
        out: &mut Vec<Out>,
        mut on_parameter: impl FnMut(&str, &str),
    ) -> Result<usize, ProtocolError> {
        let mut pos = self.skip.min(buf.len());
        self.skip -= pos;
        let mut forward_from = 0;
        while pos < buf.len() {
            let rest = &buf[pos..];
            let Some(total) = framing::peek_total_len(rest, MAX_SERVER_MESSAGE)? else {
                break;
            };
            if rest.len() < total {
                if is_streamable(rest[0]) {
                    self.skip = total - rest.len();
                    pos = buf.len();
                }
                break;
            }
            let frame = Frame::new(&rest[..total]);
            if frame.tag == be::tag::PARAMETER_STATUS {
                let (name, value) = be::parameter_status(frame.body)?;
                // A value in another client encoding reaches the client as
                // sent but is not tracked: parameters are replayed as UTF-8.
                match std::str::from_utf8(value) {
                    Ok(value) => on_parameter(name, value),
                    Err(_) => tracing::debug!(name, "parameter value is not UTF-8; not tracked"),
                }
            }
            let keep = self.on_server_message(frame)?;
            if !keep {
                push_range(out, forward_from..pos);
                forward_from = pos + total;
            }
            pos += total;
            if self.owed.front().is_some_and(Owed::is_own_answer) {
                push_range(out, forward_from..pos);
                forward_from = pos;
                self.take_due_answers(out);
            }
        }
        push_range(out, forward_from..pos);
        Ok(pos)
    }

    /// Accounts for one complete server message; false when the client must not see it.
    fn on_server_message(&mut self, frame: Frame<'_>) -> Result<bool, ProtocolError> {
        use be::tag as t;
        let tag = frame.tag;
        if matches!(
            tag,
            t::NOTICE_RESPONSE | t::PARAMETER_STATUS | t::NOTIFICATION_RESPONSE
        ) {
            return Ok(true); // asynchronous: answers no message
        }
        let Some(front) = self.owed.front() else {
            return Ok(true); // e.g. a FATAL error before the server closes
        };
        if tag == t::ERROR_RESPONSE {
            self.on_error();
            return Ok(true);
        }
        let done = match (front, tag) {
            (Owed::UntilReady | Owed::Ready, t::READY_FOR_QUERY) => {
                self.tx = be::ready_for_query_status(frame.body)?;
                self.completed.queries += 1;
                self.completed.transactions += u32::from(self.tx == TxStatus::Idle);
                true
            }
            (Owed::UntilReady | Owed::Ready, _) => false,
            (Owed::InjectedParse { .. }, t::PARSE_COMPLETE) => {
                self.owed.pop_front();
                return Ok(false);
            }
            (Owed::Parse { .. }, t::PARSE_COMPLETE)
            | (Owed::Bind, t::BIND_COMPLETE)
            | (Owed::Close, t::CLOSE_COMPLETE)
            | (Owed::DescribeStatement | Owed::DescribePortal, t::ROW_DESCRIPTION | t::NO_DATA)
            | (
                Owed::Execute,
                t::COMMAND_COMPLETE | t::EMPTY_QUERY_RESPONSE | t::PORTAL_SUSPENDED,
            ) => true,
            (Owed::DescribeStatement, t::PARAMETER_DESCRIPTION) => false,
            (
                Owed::Execute,
                t::DATA_ROW
                | t::COPY_IN_RESPONSE
                | t::COPY_OUT_RESPONSE
                | t::COPY_DATA
                | t::COPY_DONE,
            ) => false,
            _ => {
                return Err(ProtocolError::Unexpected {
                    tag: tag as char,
                    context: "from server: reply does not match the request",
                })
            }
        };
        if done {
            self.owed.pop_front();
        }
        Ok(true)
    }

    /// An ErrorResponse: in a simple query it is one reply among others; in the
    /// extended protocol the server skips every message up to the next Sync.
    fn on_error(&mut self) {
        if matches!(self.owed.front(), Some(Owed::UntilReady | Owed::Ready)) {
            return;
        }
        while let Some(front) = self.owed.front() {
            if matches!(front, Owed::Ready | Owed::UntilReady) {
                break;
            }
            if let Some(Owed::Parse {
                prepared: Some(name),
            })
            | Some(Owed::InjectedParse { prepared: name }) = self.owed.pop_front()
            {
                self.not_prepared.push(name);
            }
        }
    }
}

impl Owed {
    fn is_own_answer(&self) -> bool {
        matches!(self, Owed::AnswerParseComplete | Owed::AnswerCloseComplete)
    }
}

fn push_range(out: &mut Vec<Out>, range: Range<usize>) {
    if range.is_empty() {
        return;
    }
    if let Some(Out::Server(last)) = out.last_mut() {
        if last.end == range.start {
            last.end = range.end;
            return;
        }
    }
    out.push(Out::Server(range));
}

/// Messages that carry no state pgrelay needs and may be forwarded in pieces.
fn is_streamable(tag: u8) -> bool {
    matches!(tag, be::tag::DATA_ROW | be::tag::COPY_DATA)
}

#[cfg(test)]
mod tests;
