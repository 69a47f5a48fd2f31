//! Message framing: a type byte, a 4-byte big-endian length that counts
//! itself, then the body.

use super::ProtocolError;

/// Type byte + length.
pub const HEADER_LEN: usize = 5;

/// Returns the total length of the message at the start of `buf` if it is
/// complete, `Ok(None)` if more bytes are needed.
///
/// The length is checked against `max` from the header alone, so an oversized
/// message is refused before anything is buffered or allocated for it.
#[inline]
pub fn check(buf: &[u8], max: usize) -> Result<Option<usize>, ProtocolError> {
    let Some(total) = peek_total_len(buf, max)? else {
        return Ok(None);
    };
    Ok((buf.len() >= total).then_some(total))
}

/// The total length announced by the header at the start of `buf`, once
/// the header is complete (the body may still be missing).
#[inline]
pub fn peek_total_len(buf: &[u8], max: usize) -> Result<Option<usize>, ProtocolError> {
    if buf.len() < HEADER_LEN {
        return Ok(None);
    }
    let len = i32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]);
    if len < 4 {
        return Err(ProtocolError::BadLength(len.into()));
    }
    let total = len as usize + 1;
    if total > max {
        return Err(ProtocolError::TooLarge { len: total, max });
    }
    Ok(Some(total))
}

/// A borrowed view of one complete message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame<'a> {
    pub tag: u8,
    pub body: &'a [u8],
}

impl<'a> Frame<'a> {
    /// `msg` must be one complete message as measured by [`check`].
    #[inline]
    pub fn new(msg: &'a [u8]) -> Self {
        Frame {
            tag: msg[0],
            body: &msg[HEADER_LEN..],
        }
    }
}

/// A cursor over a message body.
#[derive(Debug, Clone, Copy)]
pub struct Reader<'a> {
    buf: &'a [u8],
    what: &'static str,
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8], what: &'static str) -> Self {
        Reader { buf, what }
    }

    pub fn remaining(&self) -> &'a [u8] {
        self.buf
    }

    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// A NUL-terminated string, which must be UTF-8.
    pub fn cstr(&mut self) -> Result<&'a str, ProtocolError> {
        let bytes = self.cstr_bytes()?;
        std::str::from_utf8(bytes)
            .map_err(|_| ProtocolError::malformed(self.what, "string is not valid UTF-8"))
    }

    pub fn cstr_bytes(&mut self) -> Result<&'a [u8], ProtocolError> {
        let end = memchr::memchr(0, self.buf)
            .ok_or_else(|| ProtocolError::malformed(self.what, "missing string terminator"))?;
        let s = &self.buf[..end];
        self.buf = &self.buf[end + 1..];
        Ok(s)
    }

    pub fn u8(&mut self) -> Result<u8, ProtocolError> {
        let (&b, rest) = self
            .buf
            .split_first()
            .ok_or_else(|| ProtocolError::malformed(self.what, "message too short"))?;
        self.buf = rest;
        Ok(b)
    }

    pub fn i16(&mut self) -> Result<i16, ProtocolError> {
        let b = self.take(2)?;
        Ok(i16::from_be_bytes([b[0], b[1]]))
    }

    pub fn i32(&mut self) -> Result<i32, ProtocolError> {
        let b = self.take(4)?;
        Ok(i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    pub fn take(&mut self, n: usize) -> Result<&'a [u8], ProtocolError> {
        if self.buf.len() < n {
            return Err(ProtocolError::malformed(self.what, "message too short"));
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(head)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_needs_whole_message() {
        let msg = [b'Q', 0, 0, 0, 6, b'x', 0];
        assert_eq!(check(&msg[..3], 1024), Ok(None));
        assert_eq!(check(&msg[..6], 1024), Ok(None));
        assert_eq!(check(&msg, 1024), Ok(Some(7)));
        let frame = Frame::new(&msg);
        assert_eq!(frame.tag, b'Q');
        assert_eq!(frame.body, b"x\0");
    }

    #[test]
    fn check_refuses_oversized_from_header_alone() {
        let header = [b'Q', 0x7f, 0xff, 0xff, 0xff];
        assert!(matches!(
            check(&header, 1 << 20),
            Err(ProtocolError::TooLarge { .. })
        ));
    }

    #[test]
    fn check_refuses_short_length() {
        let header = [b'Q', 0, 0, 0, 3];
        assert_eq!(check(&header, 1024), Err(ProtocolError::BadLength(3)));
        let negative = [b'Q', 0xff, 0xff, 0xff, 0xff];
        assert_eq!(check(&negative, 1024), Err(ProtocolError::BadLength(-1)));
    }

    #[test]
    fn reader_reports_truncation() {
        let mut r = Reader::new(b"abc", "Parse");
        assert!(r.cstr().is_err());
        let mut r = Reader::new(&[0, 1], "Bind");
        assert_eq!(r.i16().unwrap(), 1);
        assert!(r.i32().is_err());
    }
}
