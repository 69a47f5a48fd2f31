//! Client authentication, per `auth_type`, against the userlist.
//!
//! Unknown users go through the same exchange as known ones (SCRAM uses the
//! mock authentication) and fail with the same message, so a client cannot
//! probe which users exist.

use bytes::BytesMut;
use rand::Rng;

use super::client::ClientConn;
use super::{Directory, FrontendError};
use crate::auth::{self, AuthError, ScramServer, Secret};
use crate::config::AuthType;
use crate::protocol::backend as be;
use crate::protocol::framing::{self, Frame, Reader};
use crate::protocol::frontend::tag;
use crate::protocol::ProtocolError;

/// Largest password or SASL message accepted before authentication.
const MAX_AUTH_MESSAGE: usize = 8192;

pub(crate) async fn authenticate(
    client: &mut ClientConn,
    user: &str,
    auth_type: AuthType,
    directory: &dyn Directory,
) -> Result<(), FrontendError> {
    let secret = directory.client_secret(user);
    let fail = || FrontendError::AuthFailed(user.to_string());
    match auth_type {
        AuthType::Trust => {}
        AuthType::Plain => {
            be::write_auth_cleartext(&mut client.wbuf);
            let msg = read_password_message(client).await?;
            let password = Reader::new(Frame::new(&msg).body, "PasswordMessage").cstr_bytes()?;
            let ok = secret
                .as_ref()
                .is_some_and(|s| auth::verify_plain_password(s, user, password));
            if !ok {
                return Err(fail());
            }
        }
        AuthType::Md5 => md5_exchange(client, user, secret.as_ref()).await?,
        AuthType::ScramSha256 => match &secret {
            // An md5-hashed secret cannot serve SCRAM; PostgreSQL falls back to md5 too.
            Some(s @ Secret::Md5(_)) => md5_exchange(client, user, Some(s)).await?,
            _ => scram_exchange(client, user, secret.as_ref(), directory).await?,
        },
    }
    be::write_auth_ok(&mut client.wbuf);
    Ok(())
}

async fn md5_exchange(
    client: &mut ClientConn,
    user: &str,
    secret: Option<&Secret>,
) -> Result<(), FrontendError> {
    let salt: [u8; 4] = rand::rng().random();
    be::write_auth_md5(salt, &mut client.wbuf);
    let msg = read_password_message(client).await?;
    let response = Reader::new(Frame::new(&msg).body, "PasswordMessage").cstr_bytes()?;
    let ok = secret.is_some_and(|s| auth::verify_md5_response(s, user, salt, response));
    if ok {
        Ok(())
    } else {
        Err(FrontendError::AuthFailed(user.to_string()))
    }
}

async fn scram_exchange(
    client: &mut ClientConn,
    user: &str,
    secret: Option<&Secret>,
    directory: &dyn Directory,
) -> Result<(), FrontendError> {
    let mut scram = ScramServer::new(secret, user, &directory.scram_mock_key())
        .map_err(|e| auth_error(e, user))?;
    be::write_auth_sasl(ScramServer::mechanisms(), &mut client.wbuf);

    let msg = read_password_message(client).await?;
    let mut r = Reader::new(Frame::new(&msg).body, "SASLInitialResponse");
    let mechanism = r.cstr()?;
    ScramServer::check_mechanism(mechanism).map_err(|e| auth_error(e, user))?;
    let len = r.i32()?;
    let data = r.remaining();
    if len < 0 || len as usize != data.len() {
        return Err(ProtocolError::malformed("SASLInitialResponse", "length mismatch").into());
    }
    let server_first = scram.client_first(data).map_err(|e| auth_error(e, user))?;
    be::write_auth_sasl_continue(&server_first, &mut client.wbuf);

    let msg = read_password_message(client).await?;
    let server_final = scram
        .client_final(Frame::new(&msg).body)
        .map_err(|e| auth_error(e, user))?;
    be::write_auth_sasl_final(&server_final, &mut client.wbuf);
    if let Some(client_key) = scram.client_key() {
        directory.remember_scram_client_key(user, client_key);
    }
    Ok(())
}

fn auth_error(e: AuthError, user: &str) -> FrontendError {
    match e.sqlstate() {
        "28P01" => FrontendError::AuthFailed(user.to_string()),
        "08P01" => FrontendError::AuthProtocol(e.client_message(user)),
        _ => FrontendError::AuthProtocol(e.client_message(user)),
    }
}

/// Flushes the pending challenge and reads the client's 'p' answer.
async fn read_password_message(client: &mut ClientConn) -> Result<BytesMut, FrontendError> {
    client.flush().await?;
    let len = loop {
        if let Some(len) = framing::check(&client.rbuf, MAX_AUTH_MESSAGE)? {
            break len;
        }
        client.fill().await?;
    };
    let msg = client.rbuf.split_to(len);
    if msg[0] != tag::PASSWORD {
        return Err(ProtocolError::Unexpected {
            tag: msg[0] as char,
            context: "during authentication, expected a password message",
        }
        .into());
    }
    Ok(msg)
}
