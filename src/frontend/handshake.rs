//! The first exchange on a client socket: optional TLS, then a startup packet
//! or a cancel request.

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::client::ClientConn;
use super::FrontendError;
use crate::config::SslMode;
use crate::protocol::startup::{self, StartupPacket};
use crate::protocol::ProtocolError;
use crate::stream::Stream;

pub(crate) enum Handshake {
    Startup {
        client: ClientConn,
        minor: u16,
        params: Vec<(String, String)>,
    },
    Cancel {
        process_id: i32,
        secret_key: i32,
        forwarded: bool,
    },
}

pub(crate) async fn handshake(
    tcp: TcpStream,
    tls_mode: SslMode,
    acceptor: Option<&tokio_rustls::TlsAcceptor>,
) -> Result<Handshake, FrontendError> {
    let mut stream = Stream::Plain(tcp);
    let mut rbuf = BytesMut::with_capacity(512);
    loop {
        let len = loop {
            if let Some(len) = startup::check(&rbuf)? {
                break len;
            }
            if stream.read_buf(&mut rbuf).await? == 0 {
                return Err(FrontendError::ClientClosed);
            }
        };
        let packet = rbuf.split_to(len);
        match startup::parse(&packet)? {
            StartupPacket::SslRequest => match (acceptor, stream) {
                (Some(acceptor), Stream::Plain(mut tcp)) if tls_mode != SslMode::Disable => {
                    // Bytes sent before the handshake would bypass TLS (CVE-2021-23214).
                    if !rbuf.is_empty() {
                        return Err(ProtocolError::malformed(
                            "SSLRequest",
                            "data received before the TLS handshake",
                        )
                        .into());
                    }
                    tcp.write_all(b"S").await?;
                    let tls = acceptor.accept(tcp).await?;
                    stream = Stream::TlsFromClient(Box::new(tls));
                }
                (_, mut other) => {
                    other.write_all(b"N").await?;
                    stream = other;
                }
            },
            StartupPacket::GssEncRequest => stream.write_all(b"N").await?,
            StartupPacket::Cancel {
                process_id,
                secret_key,
                forwarded,
            } => {
                return Ok(Handshake::Cancel {
                    process_id,
                    secret_key,
                    forwarded,
                })
            }
            StartupPacket::Startup { minor, params } => {
                let needs_tls = matches!(
                    tls_mode,
                    SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull
                );
                let mut client = ClientConn::new(stream);
                if needs_tls && !client.stream.is_tls() {
                    let err = FrontendError::TlsRequired;
                    client.fatal(&err).await;
                    return Err(err);
                }
                client.rbuf = rbuf;
                return Ok(Handshake::Startup {
                    client,
                    minor,
                    params,
                });
            }
        }
    }
}
