//! PostgreSQL wire protocol (3.0): framing, the startup packet, the client
//! messages pgrelay inspects and the backend messages it writes.
//!
//! Pure code: no sockets, no policy. Framing is split into a cheap
//! [`framing::check`] ("is a whole message here?") and parsing, so that
//! "need more bytes" is neither an error nor an allocation.

pub mod backend;
pub mod framing;
pub mod frontend;
pub mod startup;

use thiserror::Error;

/// Errors in bytes received from a peer.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum ProtocolError {
    #[error("message of {len} bytes exceeds the maximum of {max} bytes")]
    TooLarge { len: usize, max: usize },
    #[error("invalid message length {0}")]
    BadLength(i64),
    #[error("unsupported frontend protocol {major}.{minor}: server supports 3.0")]
    UnsupportedVersion { major: u16, minor: u16 },
    #[error("malformed {what} message: {detail}")]
    Malformed {
        what: &'static str,
        detail: &'static str,
    },
    #[error("unexpected message type {tag:?} {context}")]
    Unexpected { tag: char, context: &'static str },
}

impl ProtocolError {
    pub fn sqlstate(&self) -> &'static str {
        match self {
            // program_limit_exceeded, as PostgreSQL uses for over-long messages
            ProtocolError::TooLarge { .. } => "54000",
            ProtocolError::UnsupportedVersion { .. } => "0A000",
            _ => "08P01",
        }
    }

    pub(crate) fn malformed(what: &'static str, detail: &'static str) -> Self {
        ProtocolError::Malformed { what, detail }
    }
}
