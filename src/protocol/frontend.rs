//! Client (frontend) messages that pgrelay looks inside of, and writers for
//! the ones it rewrites. Everything else is forwarded as raw bytes.

use bytes::{BufMut, BytesMut};

use super::framing::Reader;
use super::ProtocolError;

pub mod tag {
    pub const QUERY: u8 = b'Q';
    pub const PARSE: u8 = b'P';
    pub const BIND: u8 = b'B';
    pub const DESCRIBE: u8 = b'D';
    pub const EXECUTE: u8 = b'E';
    pub const SYNC: u8 = b'S';
    pub const FLUSH: u8 = b'H';
    pub const CLOSE: u8 = b'C';
    pub const TERMINATE: u8 = b'X';
    pub const COPY_DATA: u8 = b'd';
    pub const COPY_DONE: u8 = b'c';
    pub const COPY_FAIL: u8 = b'f';
    pub const FUNCTION_CALL: u8 = b'F';
    /// PasswordMessage, SASLInitialResponse and SASLResponse share this tag.
    pub const PASSWORD: u8 = b'p';
}

/// The SQL text of a simple Query message, as bytes in the client's
/// encoding: with `client_encoding` other than UTF-8 it need not be UTF-8,
/// and the server, not pgrelay, decodes it.
pub fn query(body: &[u8]) -> Result<&[u8], ProtocolError> {
    Reader::new(body, "Query").cstr_bytes()
}

/// The SQL text of a simple Query message that pgrelay itself runs (the
/// admin console), which must be UTF-8.
pub fn query_utf8(body: &[u8]) -> Result<&str, ProtocolError> {
    Reader::new(body, "Query").cstr()
}

/// An extended-protocol Parse.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Parse<'a> {
    pub statement: &'a str,
    /// In the client's encoding, as for [`query`].
    pub query: &'a [u8],
    /// Parameter count and type OIDs, kept raw for re-encoding.
    pub param_types: &'a [u8],
}

pub fn parse(body: &[u8]) -> Result<Parse<'_>, ProtocolError> {
    let mut r = Reader::new(body, "Parse");
    let statement = r.cstr()?;
    let query = r.cstr_bytes()?;
    let count = r.i16()?;
    if count < 0 || r.remaining().len() != count as usize * 4 {
        return Err(ProtocolError::malformed(
            "Parse",
            "parameter type count does not match",
        ));
    }
    Ok(Parse {
        statement,
        query,
        param_types: &body[body.len() - 2 - count as usize * 4..],
    })
}

pub fn write_parse(statement: &str, query: &[u8], param_types: &[u8], buf: &mut BytesMut) {
    write_message(tag::PARSE, buf, |buf| {
        put_cstr(buf, statement);
        buf.put_slice(query);
        buf.put_u8(0);
        buf.put_slice(param_types);
    });
}

/// An extended-protocol Bind: only the names are parsed; parameters stay raw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bind<'a> {
    pub portal: &'a str,
    pub statement: &'a str,
    pub rest: &'a [u8],
}

pub fn bind(body: &[u8]) -> Result<Bind<'_>, ProtocolError> {
    let mut r = Reader::new(body, "Bind");
    let portal = r.cstr()?;
    let statement = r.cstr()?;
    Ok(Bind {
        portal,
        statement,
        rest: r.remaining(),
    })
}

pub fn write_bind(portal: &str, statement: &str, rest: &[u8], buf: &mut BytesMut) {
    write_message(tag::BIND, buf, |buf| {
        put_cstr(buf, portal);
        put_cstr(buf, statement);
        buf.put_slice(rest);
    });
}

/// Whether a Describe or Close names a prepared statement or a portal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    Statement,
    Portal,
}

impl Target {
    fn byte(self) -> u8 {
        match self {
            Target::Statement => b'S',
            Target::Portal => b'P',
        }
    }
}

/// The body of a Describe or Close.
pub fn target_and_name<'a>(
    body: &'a [u8],
    what: &'static str,
) -> Result<(Target, &'a str), ProtocolError> {
    let mut r = Reader::new(body, what);
    let target = match r.u8()? {
        b'S' => Target::Statement,
        b'P' => Target::Portal,
        _ => return Err(ProtocolError::malformed(what, "expected 'S' or 'P'")),
    };
    let name = r.cstr()?;
    Ok((target, name))
}

pub fn write_describe(target: Target, name: &str, buf: &mut BytesMut) {
    write_target_message(tag::DESCRIBE, target, name, buf);
}

pub fn write_close(target: Target, name: &str, buf: &mut BytesMut) {
    write_target_message(tag::CLOSE, target, name, buf);
}

fn write_target_message(tag: u8, target: Target, name: &str, buf: &mut BytesMut) {
    write_message(tag, buf, |buf| {
        buf.put_u8(target.byte());
        put_cstr(buf, name);
    });
}

/// Writes `tag`, a length placeholder, the body from `body`, then patches the length.
pub(crate) fn write_message(tag: u8, buf: &mut BytesMut, body: impl FnOnce(&mut BytesMut)) {
    buf.put_u8(tag);
    let len_at = buf.len();
    buf.put_i32(0);
    body(buf);
    let len = (buf.len() - len_at) as i32;
    buf[len_at..len_at + 4].copy_from_slice(&len.to_be_bytes());
}

pub(crate) fn put_cstr(buf: &mut BytesMut, s: &str) {
    buf.put_slice(s.as_bytes());
    buf.put_u8(0);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::framing::{check, Frame};

    fn only_frame(buf: &[u8]) -> Frame<'_> {
        assert_eq!(check(buf, 1 << 20).unwrap(), Some(buf.len()));
        Frame::new(buf)
    }

    #[test]
    fn parse_round_trips() {
        let mut buf = BytesMut::new();
        let types = [0u8, 1, 0, 0, 0, 23];
        write_parse("s1", b"select $1", &types, &mut buf);
        let f = only_frame(&buf);
        assert_eq!(f.tag, tag::PARSE);
        let p = parse(f.body).unwrap();
        assert_eq!(
            p,
            Parse {
                statement: "s1",
                query: b"select $1",
                param_types: &types
            }
        );
    }

    #[test]
    fn parse_rejects_wrong_type_count() {
        assert!(parse(b"s\0q\0\0\x02\0\0\0\x17").is_err());
        assert!(parse(b"s\0q\0\xff\xff").is_err());
    }

    #[test]
    fn bind_and_close_round_trip() {
        let mut buf = BytesMut::new();
        write_bind("", "s7", b"\0\0\0\0\0\0", &mut buf);
        let b = bind(only_frame(&buf).body).unwrap();
        assert_eq!(
            (b.portal, b.statement, b.rest),
            ("", "s7", &b"\0\0\0\0\0\0"[..])
        );

        let mut buf = BytesMut::new();
        write_close(Target::Statement, "s7", &mut buf);
        let f = only_frame(&buf);
        assert_eq!(f.tag, tag::CLOSE);
        assert_eq!(
            target_and_name(f.body, "Close").unwrap(),
            (Target::Statement, "s7")
        );
        assert!(target_and_name(b"Xs7\0", "Close").is_err());
    }
}
