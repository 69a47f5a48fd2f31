//! TLS negotiation and the startup/authentication exchange with a server.

use std::sync::Arc;

use bytes::BytesMut;
use postgres_protocol::authentication::sasl::{self, ScramSha256};
use postgres_protocol::message::backend::Message;
use postgres_protocol::message::frontend;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::{BackendError, ConnectOptions, ServerConn};
use crate::auth::{ScramClientWithKeys, ScramKeys};
use crate::config::SslMode;
use crate::protocol::backend::ErrorFields;
use crate::stream::Stream;

/// What pgrelay logs in to a server with.
#[derive(Clone)]
pub enum ServerSecret {
    /// A plain password: works for every server auth method.
    Password(String),
    /// An `md5…` hash from a userlist: works only for md5 server auth.
    Md5Hash(String),
    /// A userlist SCRAM secret: works only for SCRAM server auth, once a
    /// client has logged in with it (pass-through).
    ScramKeys(Arc<ScramKeys>),
    /// Nothing known: works only for trust.
    None,
}

impl std::fmt::Debug for ServerSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ServerSecret::Password(_) => "Password(****)",
            ServerSecret::Md5Hash(_) => "Md5Hash(****)",
            ServerSecret::ScramKeys(_) => "ScramKeys(****)",
            ServerSecret::None => "None",
        })
    }
}

pub(super) async fn negotiate_tls(
    mut tcp: TcpStream,
    opts: &ConnectOptions,
    addr: &str,
) -> Result<Stream, BackendError> {
    let Some(connector) = &opts.tls.connector else {
        return Ok(Stream::Plain(tcp));
    };
    let mut req = BytesMut::new();
    frontend::ssl_request(&mut req);
    tcp.write_all(&req).await?;
    let mut answer = [0u8; 1];
    tcp.read_exact(&mut answer).await?;
    match answer[0] {
        b'S' => {
            let name = server_name(opts.certificate_name(), addr)?;
            let tls = connector
                .connect(name, tcp)
                .await
                .map_err(|source| BackendError::Tls {
                    addr: addr.to_string(),
                    source,
                })?;
            Ok(Stream::TlsToServer(Box::new(tls)))
        }
        b'N' if opts.tls.mode == SslMode::Prefer || opts.tls.mode == SslMode::Allow => {
            Ok(Stream::Plain(tcp))
        }
        b'N' => Err(BackendError::TlsRefused(addr.to_string())),
        _ => Err(BackendError::Protocol(
            crate::protocol::ProtocolError::malformed("SSLRequest answer", "neither S nor N"),
        )),
    }
}

fn server_name(
    host: &str,
    addr: &str,
) -> Result<rustls_pki_types::ServerName<'static>, BackendError> {
    rustls_pki_types::ServerName::try_from(host.to_string()).map_err(|e| BackendError::Tls {
        addr: addr.to_string(),
        source: std::io::Error::new(std::io::ErrorKind::InvalidInput, e),
    })
}

pub(super) async fn login(
    conn: &mut ServerConn,
    opts: &ConnectOptions,
) -> Result<(), BackendError> {
    let mut out = BytesMut::new();
    frontend::startup_message(
        [
            ("user", opts.user.as_str()),
            ("database", opts.database.as_str()),
        ],
        &mut out,
    )?;
    conn.write_all(&out).await?;
    let mut scram: Option<ScramLogin> = None;
    loop {
        let mut raw = conn.next_message().await?;
        let message = Message::parse(&mut raw)?.ok_or(BackendError::Closed)?;
        out.clear();
        match message {
            Message::AuthenticationOk => {}
            Message::AuthenticationCleartextPassword => {
                let password = plain_password(opts)?;
                frontend::password_message(password.as_bytes(), &mut out)?;
            }
            Message::AuthenticationMd5Password(body) => {
                let response = match &opts.secret {
                    ServerSecret::Password(p) => postgres_protocol::authentication::md5_hash(
                        opts.user.as_bytes(),
                        p.as_bytes(),
                        body.salt(),
                    ),
                    ServerSecret::Md5Hash(hash) => salted_md5(hash, body.salt()),
                    ServerSecret::ScramKeys(_) | ServerSecret::None => {
                        return Err(BackendError::NoPassword(opts.user.clone()))
                    }
                };
                frontend::password_message(response.as_bytes(), &mut out)?;
            }
            Message::AuthenticationSasl(body) => {
                let mut offered = false;
                let mut mechanisms = body.mechanisms();
                while let Some(m) = fallible_iterator::FallibleIterator::next(&mut mechanisms)? {
                    offered |= m == sasl::SCRAM_SHA_256;
                }
                if !offered {
                    return Err(BackendError::UnsupportedAuth("SASL without SCRAM-SHA-256"));
                }
                let client = ScramLogin::start(opts)?;
                frontend::sasl_initial_response(sasl::SCRAM_SHA_256, client.message(), &mut out)?;
                scram = Some(client);
            }
            Message::AuthenticationSaslContinue(body) => {
                let client = scram.as_mut().ok_or(BackendError::UnsupportedAuth(
                    "SASL continue without a SASL exchange",
                ))?;
                client.update(body.data())?;
                frontend::sasl_response(client.message(), &mut out)?;
            }
            Message::AuthenticationSaslFinal(body) => {
                let client = scram.as_mut().ok_or(BackendError::UnsupportedAuth(
                    "SASL final without a SASL exchange",
                ))?;
                // Proves the server knew the password too.
                client.finish(body.data())?;
            }
            Message::AuthenticationKerberosV5
            | Message::AuthenticationScmCredential
            | Message::AuthenticationGss
            | Message::AuthenticationSspi
            | Message::AuthenticationGssContinue(_) => {
                return Err(BackendError::UnsupportedAuth("GSS/SSPI/Kerberos"));
            }
            Message::ParameterStatus(body) => {
                conn.set_param(body.name()?, body.value()?);
            }
            Message::BackendKeyData(body) => {
                conn.cancel.process_id = body.process_id();
                conn.cancel.secret_key = body.secret_key();
            }
            Message::ReadyForQuery(_) => return Ok(()),
            Message::ErrorResponse(body) => return Err(BackendError::Login(fields(&body)?)),
            Message::NoticeResponse(_) => {}
            _ => {
                return Err(BackendError::Protocol(
                    crate::protocol::ProtocolError::malformed("login", "unexpected server message"),
                ))
            }
        }
        if !out.is_empty() {
            conn.write_all(&out).await?;
        }
    }
}

/// The client half of a SCRAM login: from a password, or passed through.
enum ScramLogin {
    Password(ScramSha256),
    Keys(ScramClientWithKeys),
}

impl ScramLogin {
    fn start(opts: &ConnectOptions) -> Result<Self, BackendError> {
        match &opts.secret {
            ServerSecret::Password(p) => Ok(ScramLogin::Password(ScramSha256::new(
                p.as_bytes(),
                sasl::ChannelBinding::unsupported(),
            ))),
            ServerSecret::ScramKeys(keys) => keys
                .client()
                .map(ScramLogin::Keys)
                .ok_or_else(|| BackendError::NoClientKey(opts.user.clone())),
            _ => Err(BackendError::NoPassword(opts.user.clone())),
        }
    }

    fn message(&self) -> &[u8] {
        match self {
            ScramLogin::Password(c) => c.message(),
            ScramLogin::Keys(c) => c.message(),
        }
    }

    fn update(&mut self, server_first: &[u8]) -> Result<(), BackendError> {
        match self {
            ScramLogin::Password(c) => Ok(c.update(server_first)?),
            ScramLogin::Keys(c) => c.update(server_first).map_err(BackendError::PassThrough),
        }
    }

    fn finish(&mut self, server_final: &[u8]) -> Result<(), BackendError> {
        match self {
            ScramLogin::Password(c) => Ok(c.finish(server_final)?),
            ScramLogin::Keys(c) => c.finish(server_final).map_err(BackendError::PassThrough),
        }
    }
}

fn plain_password(opts: &ConnectOptions) -> Result<&str, BackendError> {
    match &opts.secret {
        ServerSecret::Password(p) => Ok(p),
        _ => Err(BackendError::NoPassword(opts.user.clone())),
    }
}

/// md5 response from a stored `md5<hex>` hash: the hash stands in for the password.
fn salted_md5(stored: &str, salt: [u8; 4]) -> String {
    use md5::{Digest, Md5};
    let hex_part = stored.strip_prefix("md5").unwrap_or(stored);
    let mut md5 = Md5::new();
    md5.update(hex_part.as_bytes());
    md5.update(salt);
    let digest = md5.finalize();
    let mut out = String::with_capacity(35);
    out.push_str("md5");
    for b in digest {
        out.push_str(&format!("{b:02x}"));
    }
    out
}

fn fields(
    body: &postgres_protocol::message::backend::ErrorResponseBody,
) -> Result<ErrorFields, BackendError> {
    use fallible_iterator::FallibleIterator;
    let mut out = ErrorFields::default();
    let mut it = body.fields();
    while let Some(f) = it.next()? {
        let value = String::from_utf8_lossy(f.value_bytes()).into_owned();
        match f.type_() {
            b'V' => out.severity = value,
            b'S' if out.severity.is_empty() => out.severity = value,
            b'C' => out.code = value,
            b'M' => out.message = value,
            _ => {}
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn salted_md5_from_hash_matches_password_form() {
        let user = "alice";
        let password = "secret";
        let salt = [1, 2, 3, 4];
        let from_password =
            postgres_protocol::authentication::md5_hash(user.as_bytes(), password.as_bytes(), salt);
        // md5(password || user), as a userlist stores it
        use md5::{Digest, Md5};
        let mut md5 = Md5::new();
        md5.update(password.as_bytes());
        md5.update(user.as_bytes());
        let stored: String = format!(
            "md5{}",
            md5.finalize()
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect::<String>()
        );
        assert_eq!(salted_md5(&stored, salt), from_password);
    }
}
