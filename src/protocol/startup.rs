//! The untyped first message a client sends: a startup packet, or one of the
//! SSLRequest / GSSENCRequest / CancelRequest codes.

use super::framing::Reader;
use super::ProtocolError;

pub const PROTOCOL_MAJOR_3: u16 = 3;
pub const SSL_REQUEST_CODE: i32 = 80877103;
pub const GSSENC_REQUEST_CODE: i32 = 80877104;
pub const CANCEL_REQUEST_CODE: i32 = 80877102;
/// pgrelay's own code for a CancelRequest one pgrelay passes on to another
/// (`cancel_peers`): the receiver acts on it but never passes it on again.
pub const FORWARDED_CANCEL_CODE: i32 = (1234 << 16) | 9901;
/// PostgreSQL's own cap on a startup packet (MAX_STARTUP_PACKET_LENGTH).
pub const MAX_STARTUP_LEN: usize = 10_000;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartupPacket {
    SslRequest,
    GssEncRequest,
    Cancel {
        process_id: i32,
        secret_key: i32,
        /// Passed on by another pgrelay rather than sent by a client.
        forwarded: bool,
    },
    Startup {
        /// Protocol 3.x minor version the client asked for; pgrelay speaks 3.0
        /// and negotiates down when this is higher.
        minor: u16,
        params: Vec<(String, String)>,
    },
}

impl StartupPacket {
    /// Value of a startup parameter, if the client sent it.
    pub fn param<'a>(params: &'a [(String, String)], name: &str) -> Option<&'a str> {
        params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Total length of the startup packet at the start of `buf` once it is all
/// there; refuses absurd lengths from the 4-byte header alone.
pub fn check(buf: &[u8]) -> Result<Option<usize>, ProtocolError> {
    if buf.len() < 4 {
        return Ok(None);
    }
    let len = i32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]);
    if len < 8 {
        return Err(ProtocolError::BadLength(len.into()));
    }
    let len = len as usize;
    if len > MAX_STARTUP_LEN {
        return Err(ProtocolError::TooLarge {
            len,
            max: MAX_STARTUP_LEN,
        });
    }
    Ok((buf.len() >= len).then_some(len))
}

/// Parses one complete startup packet as measured by [`check`].
pub fn parse(msg: &[u8]) -> Result<StartupPacket, ProtocolError> {
    let mut r = Reader::new(&msg[4..], "startup");
    let code = r.i32()?;
    match code {
        SSL_REQUEST_CODE if r.is_empty() => Ok(StartupPacket::SslRequest),
        GSSENC_REQUEST_CODE if r.is_empty() => Ok(StartupPacket::GssEncRequest),
        CANCEL_REQUEST_CODE | FORWARDED_CANCEL_CODE => {
            let process_id = r.i32()?;
            let secret_key = r.i32()?;
            if !r.is_empty() {
                return Err(ProtocolError::malformed("CancelRequest", "trailing bytes"));
            }
            Ok(StartupPacket::Cancel {
                process_id,
                secret_key,
                forwarded: code == FORWARDED_CANCEL_CODE,
            })
        }
        SSL_REQUEST_CODE | GSSENC_REQUEST_CODE => Err(ProtocolError::malformed(
            "SSLRequest",
            "unexpected trailing bytes",
        )),
        _ => {
            let major = (code >> 16) as u16;
            let minor = (code & 0xffff) as u16;
            if major != PROTOCOL_MAJOR_3 {
                return Err(ProtocolError::UnsupportedVersion { major, minor });
            }
            Ok(StartupPacket::Startup {
                minor,
                params: parse_params(r)?,
            })
        }
    }
}

/// The 16-byte request that passes a cancel on to another pgrelay.
pub fn forwarded_cancel(process_id: i32, secret_key: i32) -> [u8; 16] {
    let mut packet = [0u8; 16];
    packet[..4].copy_from_slice(&16i32.to_be_bytes());
    packet[4..8].copy_from_slice(&FORWARDED_CANCEL_CODE.to_be_bytes());
    packet[8..12].copy_from_slice(&process_id.to_be_bytes());
    packet[12..].copy_from_slice(&secret_key.to_be_bytes());
    packet
}

fn parse_params(mut r: Reader<'_>) -> Result<Vec<(String, String)>, ProtocolError> {
    let mut params = Vec::new();
    loop {
        let name = r.cstr()?;
        if name.is_empty() {
            break;
        }
        let value = r.cstr()?;
        if params.iter().any(|(k, _): &(String, String)| k == name) {
            return Err(ProtocolError::malformed(
                "startup",
                "duplicate startup parameter",
            ));
        }
        params.push((name.to_string(), value.to_string()));
    }
    if !r.is_empty() {
        return Err(ProtocolError::malformed(
            "startup",
            "bytes after the parameter list terminator",
        ));
    }
    Ok(params)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn packet(code: i32, body: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend_from_slice(&((8 + body.len()) as i32).to_be_bytes());
        v.extend_from_slice(&code.to_be_bytes());
        v.extend_from_slice(body);
        v
    }

    #[test]
    fn parses_startup_params() {
        let p = packet(196608, b"user\0alice\0database\0app\0\0");
        assert_eq!(check(&p), Ok(Some(p.len())));
        let StartupPacket::Startup { minor, params } = parse(&p).unwrap() else {
            panic!("not a startup packet")
        };
        assert_eq!(minor, 0);
        assert_eq!(StartupPacket::param(&params, "user"), Some("alice"));
        assert_eq!(StartupPacket::param(&params, "database"), Some("app"));
    }

    #[test]
    fn parses_special_codes() {
        assert_eq!(
            parse(&packet(SSL_REQUEST_CODE, b"")),
            Ok(StartupPacket::SslRequest)
        );
        assert_eq!(
            parse(&packet(GSSENC_REQUEST_CODE, b"")),
            Ok(StartupPacket::GssEncRequest)
        );
        let mut body = 7i32.to_be_bytes().to_vec();
        body.extend_from_slice(&9i32.to_be_bytes());
        assert_eq!(
            parse(&packet(CANCEL_REQUEST_CODE, &body)),
            Ok(StartupPacket::Cancel {
                process_id: 7,
                secret_key: 9,
                forwarded: false,
            })
        );
        let passed_on = forwarded_cancel(7, 9);
        assert_eq!(check(&passed_on), Ok(Some(16)));
        assert_eq!(
            parse(&passed_on),
            Ok(StartupPacket::Cancel {
                process_id: 7,
                secret_key: 9,
                forwarded: true,
            })
        );
    }

    #[test]
    fn refuses_bad_packets() {
        assert!(check(&[0, 0, 0, 2]).is_err());
        assert!(matches!(
            check(&[0, 1, 0, 0]),
            Err(ProtocolError::TooLarge { .. })
        ));
        assert!(matches!(
            parse(&packet(2 << 16, b"\0")),
            Err(ProtocolError::UnsupportedVersion { major: 2, .. })
        ));
        assert!(parse(&packet(196608, b"user\0alice")).is_err());
        assert!(parse(&packet(196608, b"user\0a\0user\0b\0\0")).is_err());
        assert!(parse(&packet(196608, b"user\0a\0\0junk")).is_err());
        assert!(parse(&packet(196608, b"user\0\xff\xfe\0\0")).is_err());
    }
}
