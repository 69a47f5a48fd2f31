//! One socket type for both sides of the proxy: plain TCP, or TCP wrapped in
//! TLS as a client (towards PostgreSQL) or as a server (towards clients).

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

pub enum Stream {
    Plain(TcpStream),
    /// pgrelay is the TLS client (server connections).
    TlsToServer(Box<tokio_rustls::client::TlsStream<TcpStream>>),
    /// pgrelay is the TLS server (client connections).
    TlsFromClient(Box<tokio_rustls::server::TlsStream<TcpStream>>),
}

impl Stream {
    pub fn is_tls(&self) -> bool {
        !matches!(self, Stream::Plain(_))
    }

    /// The TLS version and cipher suite, as `SHOW CLIENTS` prints them
    /// (`TLSv1.3/TLS13_AES_256_GCM_SHA384`); empty for plain TCP.
    pub fn tls_description(&self) -> String {
        let tls: &rustls::CommonState = match self {
            Stream::Plain(_) => return String::new(),
            Stream::TlsToServer(s) => s.get_ref().1,
            Stream::TlsFromClient(s) => s.get_ref().1,
        };
        let version = match tls.protocol_version() {
            Some(rustls::ProtocolVersion::TLSv1_3) => "TLSv1.3".to_string(),
            Some(rustls::ProtocolVersion::TLSv1_2) => "TLSv1.2".to_string(),
            Some(other) => format!("{other:?}"),
            None => "TLS".to_string(),
        };
        match tls.negotiated_cipher_suite() {
            Some(suite) => format!("{version}/{:?}", suite.suite()),
            None => version,
        }
    }

    /// The same connection registered with the caller's runtime
    /// ([`crate::cores::rehome`]). A TLS stream stays where it is: its
    /// socket cannot be taken out from under the session and put back.
    pub fn rehome(self) -> io::Result<Stream> {
        match self {
            Stream::Plain(tcp) => crate::cores::rehome(tcp).map(Stream::Plain),
            tls => Ok(tls),
        }
    }

    pub fn tcp(&self) -> &TcpStream {
        match self {
            Stream::Plain(s) => s,
            Stream::TlsToServer(s) => s.get_ref().0,
            Stream::TlsFromClient(s) => s.get_ref().0,
        }
    }
}

macro_rules! dispatch {
    ($self:ident, $s:ident => $e:expr) => {
        match $self.get_mut() {
            Stream::Plain($s) => {
                let $s = Pin::new($s);
                $e
            }
            Stream::TlsToServer($s) => {
                let $s = Pin::new($s.as_mut());
                $e
            }
            Stream::TlsFromClient($s) => {
                let $s = Pin::new($s.as_mut());
                $e
            }
        }
    };
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        dispatch!(self, s => s.poll_read(cx, buf))
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        dispatch!(self, s => s.poll_write(cx, buf))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        dispatch!(self, s => s.poll_write_vectored(cx, bufs))
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Stream::Plain(s) => s.is_write_vectored(),
            Stream::TlsToServer(s) => s.is_write_vectored(),
            Stream::TlsFromClient(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        dispatch!(self, s => s.poll_flush(cx))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        dispatch!(self, s => s.poll_shutdown(cx))
    }
}
