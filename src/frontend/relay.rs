//! What pgrelay tracks while relaying one server's replies to one client:
//! how many ReadyForQuery replies are still owed, the transaction status, and
//! whether it is in the middle of a message it passes through unbuffered.

use crate::protocol::backend::{self as be, TxStatus};
use crate::protocol::framing::{self, Frame};
use crate::protocol::frontend::tag as fe;
use crate::protocol::ProtocolError;

/// Largest message accepted from a server; rows larger than a read are
/// streamed through without being buffered, so this only bounds the header.
pub(crate) const MAX_SERVER_MESSAGE: usize = 1 << 30;

#[derive(Debug, Clone, Copy)]
pub(crate) struct RelayState {
    /// ReadyForQuery messages the server still owes (one per Query, Sync, FunctionCall).
    pending_ready: u32,
    /// Extended-protocol messages were sent since the last Sync.
    unsynced: bool,
    pub tx: TxStatus,
    /// Bytes of a passed-through message still to come from the server.
    skip: usize,
}

impl Default for RelayState {
    fn default() -> Self {
        RelayState {
            pending_ready: 0,
            unsynced: false,
            tx: TxStatus::Idle,
            skip: 0,
        }
    }
}

impl RelayState {
    /// Accounts for a client message about to be forwarded.
    pub fn on_client_message(&mut self, tag: u8) {
        match tag {
            fe::QUERY | fe::FUNCTION_CALL => self.pending_ready += 1,
            fe::SYNC => {
                self.pending_ready += 1;
                self.unsynced = false;
            }
            fe::PARSE | fe::BIND | fe::DESCRIBE | fe::EXECUTE | fe::CLOSE | fe::FLUSH => {
                self.unsynced = true
            }
            _ => {}
        }
    }

    /// No reply is owed and the server sits idle outside a transaction: the
    /// server may be handed to another client.
    pub fn is_idle(&self, unread_server_bytes: usize) -> bool {
        self.pending_ready == 0
            && !self.unsynced
            && self.tx == TxStatus::Idle
            && self.skip == 0
            && unread_server_bytes == 0
    }

    /// Every request has been answered (the transaction may still be open).
    pub fn is_quiet(&self) -> bool {
        self.pending_ready == 0 && !self.unsynced && self.skip == 0
    }

    /// Scans server bytes and returns how many may be forwarded to the client
    /// now. Complete messages are inspected where needed; a message that is not
    /// inspected and not yet complete is passed through as it arrives.
    pub fn scan(
        &mut self,
        buf: &[u8],
        mut on_parameter: impl FnMut(&str, &str),
    ) -> Result<usize, ProtocolError> {
        let mut pos = self.skip.min(buf.len());
        self.skip -= pos;
        while pos < buf.len() {
            let rest = &buf[pos..];
            let Some(total) = framing::peek_total_len(rest, MAX_SERVER_MESSAGE)? else {
                break;
            };
            if rest.len() < total {
                if !is_inspected(rest[0]) {
                    self.skip = total - rest.len();
                    pos = buf.len();
                }
                break;
            }
            let frame = Frame::new(&rest[..total]);
            match frame.tag {
                be::tag::READY_FOR_QUERY => {
                    self.pending_ready = self.pending_ready.saturating_sub(1);
                    self.tx = be::ready_for_query_status(frame.body)?;
                }
                be::tag::PARAMETER_STATUS => {
                    let (name, value) = be::parameter_status(frame.body)?;
                    on_parameter(name, value);
                }
                _ => {}
            }
            pos += total;
        }
        Ok(pos)
    }
}

fn is_inspected(tag: u8) -> bool {
    matches!(tag, be::tag::READY_FOR_QUERY | be::tag::PARAMETER_STATUS)
}

#[cfg(test)]
mod tests {
    use bytes::BytesMut;

    use super::*;

    fn server_reply() -> BytesMut {
        let mut b = BytesMut::new();
        be::write_text_row_description(&["a"], &mut b);
        be::write_data_row(&[Some("1")], &mut b);
        be::write_command_complete("SELECT 1", &mut b);
        be::write_parameter_status("TimeZone", "UTC", &mut b);
        be::write_ready_for_query(TxStatus::Idle, &mut b);
        b
    }

    #[test]
    fn query_round_trip_ends_idle() {
        let mut r = RelayState::default();
        r.on_client_message(fe::QUERY);
        assert!(!r.is_idle(0));
        let reply = server_reply();
        let mut seen = Vec::new();
        let n = r
            .scan(&reply, |k, v| seen.push((k.to_string(), v.to_string())))
            .unwrap();
        assert_eq!(n, reply.len());
        assert_eq!(seen, vec![("TimeZone".to_string(), "UTC".to_string())]);
        assert!(r.is_idle(0));
    }

    #[test]
    fn extended_without_sync_is_not_idle() {
        let mut r = RelayState::default();
        r.on_client_message(fe::PARSE);
        r.on_client_message(fe::FLUSH);
        assert!(!r.is_idle(0));
        r.on_client_message(fe::SYNC);
        let mut z = BytesMut::new();
        be::write_ready_for_query(TxStatus::InTransaction, &mut z);
        r.scan(&z, |_, _| {}).unwrap();
        assert!(!r.is_idle(0), "open transaction keeps the server");
        assert!(r.is_quiet());
    }

    #[test]
    fn partial_data_row_streams_through_but_ready_for_query_waits() {
        let mut r = RelayState::default();
        r.on_client_message(fe::QUERY);
        let mut b = BytesMut::new();
        let big = "x".repeat(10_000);
        be::write_data_row(&[Some(&big)], &mut b);
        let row_len = b.len();
        be::write_ready_for_query(TxStatus::Idle, &mut b);
        // First read: half the row.
        assert_eq!(r.scan(&b[..4000], |_, _| {}).unwrap(), 4000);
        assert!(!r.is_idle(0));
        // Second read: the rest of the row and a partial ReadyForQuery.
        let second = &b[4000..row_len + 3];
        assert_eq!(r.scan(second, |_, _| {}).unwrap(), row_len - 4000);
        // The ReadyForQuery completes later and is inspected whole.
        assert_eq!(r.scan(&b[row_len..], |_, _| {}).unwrap(), 6);
        assert!(r.is_idle(0));
    }
}
