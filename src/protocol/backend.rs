//! Backend messages: writers for what pgrelay says to clients itself, and
//! readers for the few server messages it must look inside of.

use bytes::{BufMut, BytesMut};

use super::framing::Reader;
use super::frontend::{put_cstr, write_message};
use super::ProtocolError;

pub mod tag {
    pub const AUTHENTICATION: u8 = b'R';
    pub const PARAMETER_STATUS: u8 = b'S';
    pub const BACKEND_KEY_DATA: u8 = b'K';
    pub const READY_FOR_QUERY: u8 = b'Z';
    pub const ERROR_RESPONSE: u8 = b'E';
    pub const NOTICE_RESPONSE: u8 = b'N';
    pub const COMMAND_COMPLETE: u8 = b'C';
    pub const DATA_ROW: u8 = b'D';
    pub const ROW_DESCRIPTION: u8 = b'T';
    pub const PARSE_COMPLETE: u8 = b'1';
    pub const BIND_COMPLETE: u8 = b'2';
    pub const CLOSE_COMPLETE: u8 = b'3';
    pub const NO_DATA: u8 = b'n';
    pub const PARAMETER_DESCRIPTION: u8 = b't';
    pub const COPY_IN_RESPONSE: u8 = b'G';
    pub const COPY_OUT_RESPONSE: u8 = b'H';
    pub const COPY_BOTH_RESPONSE: u8 = b'W';
    pub const COPY_DATA: u8 = b'd';
    pub const COPY_DONE: u8 = b'c';
    pub const EMPTY_QUERY_RESPONSE: u8 = b'I';
    pub const PORTAL_SUSPENDED: u8 = b's';
    pub const NOTIFICATION_RESPONSE: u8 = b'A';
    pub const NEGOTIATE_PROTOCOL_VERSION: u8 = b'v';
}

/// Transaction status carried by ReadyForQuery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TxStatus {
    Idle,
    InTransaction,
    Failed,
}

impl TxStatus {
    pub fn byte(self) -> u8 {
        match self {
            TxStatus::Idle => b'I',
            TxStatus::InTransaction => b'T',
            TxStatus::Failed => b'E',
        }
    }
}

pub fn ready_for_query_status(body: &[u8]) -> Result<TxStatus, ProtocolError> {
    match body {
        [b'I'] => Ok(TxStatus::Idle),
        [b'T'] => Ok(TxStatus::InTransaction),
        [b'E'] => Ok(TxStatus::Failed),
        _ => Err(ProtocolError::malformed(
            "ReadyForQuery",
            "unknown transaction status",
        )),
    }
}

/// A parameter's name and value. The value is in the client's encoding
/// (the server converts it), so it is UTF-8 only when that encoding is.
/// A parameter's name and value. The value is in the client's encoding
/// (the server converts it), so it is UTF-8 only when that encoding is.
pub fn parameter_status(body: &[u8]) -> Result<(&str, &[u8]), ProtocolError> {
    let mut r = Reader::new(body, "ParameterStatus");
    Ok((r.cstr()?, r.cstr_bytes()?))
}

pub fn backend_key_data(body: &[u8]) -> Result<(i32, i32), ProtocolError> {
    let mut r = Reader::new(body, "BackendKeyData");
    Ok((r.i32()?, r.i32()?))
}

/// The fields of an ErrorResponse or NoticeResponse that pgrelay reports on.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ErrorFields {
    pub severity: String,
    pub code: String,
    pub message: String,
}

pub fn error_fields(body: &[u8]) -> Result<ErrorFields, ProtocolError> {
    let mut r = Reader::new(body, "ErrorResponse");
    let mut fields = ErrorFields::default();
    loop {
        let kind = r.u8()?;
        if kind == 0 {
            return Ok(fields);
        }
        let value = String::from_utf8_lossy(r.cstr_bytes()?).into_owned();
        match kind {
            b'V' => fields.severity = value,
            b'S' if fields.severity.is_empty() => fields.severity = value,
            b'C' => fields.code = value,
            b'M' => fields.message = value,
            _ => {}
        }
    }
}

/// Severity of an error pgrelay raises itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    /// The statement failed; the session goes on.
    Error,
    /// The connection is about to be closed.
    Fatal,
}

impl Severity {
    fn as_str(self) -> &'static str {
        match self {
            Severity::Error => "ERROR",
            Severity::Fatal => "FATAL",
        }
    }
}

pub fn write_error(severity: Severity, code: &str, message: &str, buf: &mut BytesMut) {
    write_error_or_notice(tag::ERROR_RESPONSE, severity.as_str(), code, message, buf);
}

pub fn write_notice(code: &str, message: &str, buf: &mut BytesMut) {
    write_error_or_notice(tag::NOTICE_RESPONSE, "NOTICE", code, message, buf);
}

fn write_error_or_notice(tag: u8, severity: &str, code: &str, message: &str, buf: &mut BytesMut) {
    write_message(tag, buf, |buf| {
        for (kind, value) in [
            (b'S', severity),
            (b'V', severity),
            (b'C', code),
            (b'M', message),
        ] {
            buf.put_u8(kind);
            put_cstr(buf, value);
        }
        buf.put_u8(0);
    });
}

pub fn write_auth_ok(buf: &mut BytesMut) {
    write_auth(0, &[], buf);
}

pub fn write_auth_cleartext(buf: &mut BytesMut) {
    write_auth(3, &[], buf);
}

pub fn write_auth_md5(salt: [u8; 4], buf: &mut BytesMut) {
    write_auth(5, &salt, buf);
}

pub fn write_auth_sasl(mechanisms: &[&str], buf: &mut BytesMut) {
    let mut list = Vec::new();
    for m in mechanisms {
        list.extend_from_slice(m.as_bytes());
        list.push(0);
    }
    list.push(0);
    write_auth(10, &list, buf);
}

pub fn write_auth_sasl_continue(data: &[u8], buf: &mut BytesMut) {
    write_auth(11, data, buf);
}

pub fn write_auth_sasl_final(data: &[u8], buf: &mut BytesMut) {
    write_auth(12, data, buf);
}

fn write_auth(code: i32, data: &[u8], buf: &mut BytesMut) {
    write_message(tag::AUTHENTICATION, buf, |buf| {
        buf.put_i32(code);
        buf.put_slice(data);
    });
}

pub fn write_parameter_status(name: &str, value: &str, buf: &mut BytesMut) {
    write_message(tag::PARAMETER_STATUS, buf, |buf| {
        put_cstr(buf, name);
        put_cstr(buf, value);
    });
}

pub fn write_backend_key_data(process_id: i32, secret_key: i32, buf: &mut BytesMut) {
    write_message(tag::BACKEND_KEY_DATA, buf, |buf| {
        buf.put_i32(process_id);
        buf.put_i32(secret_key);
    });
}

pub fn write_ready_for_query(status: TxStatus, buf: &mut BytesMut) {
    write_message(tag::READY_FOR_QUERY, buf, |buf| buf.put_u8(status.byte()));
}

pub fn write_command_complete(command_tag: &str, buf: &mut BytesMut) {
    write_message(tag::COMMAND_COMPLETE, buf, |buf| put_cstr(buf, command_tag));
}

/// A RowDescription of text columns (type `text`, OID 25).
pub fn write_text_row_description(columns: &[&str], buf: &mut BytesMut) {
    write_message(tag::ROW_DESCRIPTION, buf, |buf| {
        buf.put_i16(columns.len() as i16);
        for name in columns {
            put_cstr(buf, name);
            buf.put_i32(0); // table OID
            buf.put_i16(0); // column number
            buf.put_i32(25); // text
            buf.put_i16(-1); // variable length
            buf.put_i32(-1); // no type modifier
            buf.put_i16(0); // text format
        }
    });
}

pub fn write_data_row(values: &[Option<&str>], buf: &mut BytesMut) {
    write_message(tag::DATA_ROW, buf, |buf| {
        buf.put_i16(values.len() as i16);
        for value in values {
            match value {
                Some(v) => {
                    buf.put_i32(v.len() as i32);
                    buf.put_slice(v.as_bytes());
                }
                None => buf.put_i32(-1),
            }
        }
    });
}

pub fn write_negotiate_protocol_version(
    newest_minor: i32,
    unrecognized: &[&str],
    buf: &mut BytesMut,
) {
    write_message(tag::NEGOTIATE_PROTOCOL_VERSION, buf, |buf| {
        buf.put_i32(newest_minor);
        buf.put_i32(unrecognized.len() as i32);
        for opt in unrecognized {
            put_cstr(buf, opt);
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::framing::{check, Frame};

    #[test]
    fn error_response_round_trips() {
        let mut buf = BytesMut::new();
        write_error(
            Severity::Fatal,
            "28P01",
            "password authentication failed",
            &mut buf,
        );
        assert_eq!(check(&buf, 1024).unwrap(), Some(buf.len()));
        let f = Frame::new(&buf);
        assert_eq!(f.tag, tag::ERROR_RESPONSE);
        let e = error_fields(f.body).unwrap();
        assert_eq!(e.severity, "FATAL");
        assert_eq!(e.code, "28P01");
        assert_eq!(e.message, "password authentication failed");
    }

    #[test]
    fn ready_for_query_status_round_trips() {
        for status in [TxStatus::Idle, TxStatus::InTransaction, TxStatus::Failed] {
            let mut buf = BytesMut::new();
            write_ready_for_query(status, &mut buf);
            assert_eq!(&buf[..], &[b'Z', 0, 0, 0, 5, status.byte()]);
            assert_eq!(ready_for_query_status(Frame::new(&buf).body), Ok(status));
        }
        assert!(ready_for_query_status(b"X").is_err());
    }

    #[test]
    fn data_row_encodes_nulls() {
        let mut buf = BytesMut::new();
        write_data_row(&[Some("ab"), None], &mut buf);
        assert_eq!(
            &buf[..],
            &[b'D', 0, 0, 0, 16, 0, 2, 0, 0, 0, 2, b'a', b'b', 0xff, 0xff, 0xff, 0xff]
        );
    }

    #[test]
    fn parameter_status_round_trips() {
        let mut buf = BytesMut::new();
        write_parameter_status("TimeZone", "UTC", &mut buf);
        assert_eq!(
            parameter_status(Frame::new(&buf).body).unwrap(),
            ("TimeZone", &b"UTC"[..])
        );
    }
}
