//! The client socket with its read and write buffers.

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::FrontendError;
use crate::protocol::backend::{self as be, Severity};
use crate::stream::Stream;

pub(crate) struct ClientConn {
    pub stream: Stream,
    /// Bytes read from the client and not yet consumed.
    pub rbuf: BytesMut,
    /// Messages pgrelay itself writes to the client, sent at the next flush.
    pub wbuf: BytesMut,
    /// Bytes read and written since the last [`ClientConn::take_byte_counts`]:
    /// plain adds here, published to the shared counters once per batch.
    received: u64,
    sent: u64,
    /// A write is under way: if its future is dropped (a killed session),
    /// the client may hold part of a message, and nothing more can follow.
    writing: bool,
}

impl ClientConn {
    pub fn new(stream: Stream) -> Self {
        ClientConn {
            stream,
            rbuf: BytesMut::with_capacity(8192),
            wbuf: BytesMut::with_capacity(1024),
            received: 0,
            sent: 0,
            writing: false,
        }
    }

    /// (received, sent) bytes since the last call.
    pub fn take_byte_counts(&mut self) -> (u64, u64) {
        (
            std::mem::take(&mut self.received),
            std::mem::take(&mut self.sent),
        )
    }

    /// Reads more bytes; `ClientClosed` at end of stream.
    pub async fn fill(&mut self) -> Result<usize, FrontendError> {
        if self.rbuf.capacity() - self.rbuf.len() < 4096 {
            self.rbuf.reserve(8192);
        }
        match self.stream.read_buf(&mut self.rbuf).await? {
            0 => Err(FrontendError::ClientClosed),
            n => {
                self.received += n as u64;
                Ok(n)
            }
        }
    }

    pub async fn flush(&mut self) -> Result<(), FrontendError> {
        if !self.wbuf.is_empty() {
            self.writing = true;
            self.stream.write_all(&self.wbuf).await?;
            self.writing = false;
            self.sent += self.wbuf.len() as u64;
            self.wbuf.clear();
        }
        Ok(())
    }

    /// Sends pgrelay's own pending messages, then `bytes` relayed from a server.
    pub async fn send_relayed(&mut self, bytes: &[u8]) -> Result<(), FrontendError> {
        self.flush().await?;
        if !bytes.is_empty() {
            self.writing = true;
            self.stream.write_all(bytes).await?;
            self.writing = false;
            self.sent += bytes.len() as u64;
        }
        Ok(())
    }

    pub fn queue_error(&mut self, severity: Severity, err: &FrontendError) {
        be::write_error(severity, err.sqlstate(), &err.to_string(), &mut self.wbuf);
    }

    /// Best effort: tell the client why it is being disconnected.
    pub async fn fatal(&mut self, err: &FrontendError) {
        if self.writing {
            // A message was cut short: anything after it would be garbage.
            return;
        }
        if err.reportable() {
            self.queue_error(Severity::Fatal, err);
            let _ = tokio::time::timeout(std::time::Duration::from_secs(1), self.flush()).await;
        }
    }
}
