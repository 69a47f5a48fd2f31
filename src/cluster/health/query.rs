//! Running a simple query and keeping its first row (text format), which
//! `ServerConn::run_discarding` throws away.

use bytes::BytesMut;

use super::HealthError;
use crate::backend::{BackendError, ServerConn};
use crate::protocol::backend::{self as be};
use crate::protocol::framing::{Frame, Reader};
use crate::protocol::ProtocolError;

/// One row: each column's text, `None` for SQL NULL.
pub type Row = Vec<Option<String>>;

/// Runs `sql` and returns its first row, leaving the connection at
/// ReadyForQuery. A server error is returned once the connection is idle.
pub async fn first_row(conn: &mut ServerConn, sql: &str) -> Result<Row, HealthError> {
    let mut out = BytesMut::new();
    postgres_protocol::message::frontend::query(sql, &mut out).map_err(BackendError::Io)?;
    conn.write_all(&out).await?;
    let mut row = None;
    let mut error = None;
    // Bounded by the server: it ends every simple query with ReadyForQuery.
    loop {
        let msg = conn.next_message().await?;
        let frame = Frame::new(&msg);
        match frame.tag {
            be::tag::DATA_ROW if row.is_none() => {
                row = Some(parse_data_row(frame.body).map_err(BackendError::from)?)
            }
            be::tag::ERROR_RESPONSE => {
                error = Some(be::error_fields(frame.body).map_err(BackendError::from)?)
            }
            be::tag::READY_FOR_QUERY => {
                return match (error, row) {
                    (Some(e), _) => Err(BackendError::Server(e).into()),
                    (None, Some(row)) => Ok(row),
                    (None, None) => Err(HealthError::BadReply("the query returned no row".into())),
                };
            }
            _ => {}
        }
    }
}

/// Decodes a DataRow body (text format).
pub fn parse_data_row(body: &[u8]) -> Result<Row, ProtocolError> {
    let mut r = Reader::new(body, "DataRow");
    let columns = r.i16()?;
    let mut row = Vec::with_capacity(usize::try_from(columns).unwrap_or(0));
    for _ in 0..columns {
        let len = r.i32()?;
        if len < 0 {
            row.push(None);
            continue;
        }
        let bytes = r.take(len as usize)?;
        row.push(Some(String::from_utf8_lossy(bytes).into_owned()));
    }
    Ok(row)
}
