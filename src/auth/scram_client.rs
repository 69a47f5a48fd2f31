//! Client side of SCRAM-SHA-256 that logs in to a PostgreSQL server with a ClientKey
//! and ServerKey instead of a password. ClientKey comes from a client's proof
//! ([`super::ScramServer::client_key`]); ServerKey from the userlist's SCRAM secret.
//! Works only when the server stores the same SCRAM secret (same salt and iterations).

use super::crypto::{self, Key};
use super::scram_message::utf8;
use super::AuthError;

const GS2_HEADER: &str = "n,,";
/// base64("n,,"), the `c=` attribute for "no channel binding".
const CHANNEL_BINDING_NONE: &str = "biws";

enum State {
    AwaitingServerFirst { client_nonce: String },
    AwaitingServerFinal { auth_message: String },
    Done,
}

/// SCRAM client for the pass-through login; the message flow mirrors
/// `postgres_protocol::authentication::sasl::ScramSha256`.
pub struct ScramClientWithKeys {
    client_key: Key,
    server_key: Key,
    message: String,
    state: State,
}

impl std::fmt::Debug for ScramClientWithKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ScramClientWithKeys { keys: *** }")
    }
}

impl ScramClientWithKeys {
    pub fn new(client_key: [u8; 32], server_key: [u8; 32]) -> Self {
        let client_nonce = crypto::random_nonce();
        ScramClientWithKeys {
            client_key,
            server_key,
            message: format!("{GS2_HEADER}n=,r={client_nonce}"),
            state: State::AwaitingServerFirst { client_nonce },
        }
    }

    /// The message to send next: client-first (in SASLInitialResponse), then client-final.
    pub fn message(&self) -> &[u8] {
        self.message.as_bytes()
    }

    /// Consumes server-first-message (AuthenticationSASLContinue).
    pub fn update(&mut self, server_first: &[u8]) -> Result<(), AuthError> {
        let client_nonce = match std::mem::replace(&mut self.state, State::Done) {
            State::AwaitingServerFirst { client_nonce } => client_nonce,
            _ => return Err(AuthError::OutOfOrder("server-first-message")),
        };
        let text = utf8(server_first)?;
        let nonce =
            text.split(',')
                .find_map(|f| f.strip_prefix("r="))
                .ok_or(AuthError::MalformedSasl(
                    "server-first-message has no nonce",
                ))?;
        if !nonce.starts_with(&client_nonce) || nonce.len() == client_nonce.len() {
            return Err(AuthError::ServerScram(
                "server nonce does not extend ours".into(),
            ));
        }
        let client_first_bare = &self.message[GS2_HEADER.len()..];
        let without_proof = format!("c={CHANNEL_BINDING_NONE},r={nonce}");
        let auth_message = format!("{client_first_bare},{text},{without_proof}");
        let stored_key = crypto::sha256(&self.client_key);
        let signature = crypto::hmac_sha256(&stored_key, auth_message.as_bytes());
        let proof = crypto::xor(&self.client_key, &signature);
        self.message = format!("{without_proof},p={}", crypto::b64(&proof));
        self.state = State::AwaitingServerFinal { auth_message };
        Ok(())
    }

    /// Consumes server-final-message (AuthenticationSASLFinal) and checks the server's
    /// signature, so a server that does not hold the secret cannot pretend it accepted us.
    pub fn finish(&mut self, server_final: &[u8]) -> Result<(), AuthError> {
        let auth_message = match std::mem::replace(&mut self.state, State::Done) {
            State::AwaitingServerFinal { auth_message } => auth_message,
            _ => return Err(AuthError::OutOfOrder("server-final-message")),
        };
        let text = utf8(server_final)?;
        if let Some(error) = text.strip_prefix("e=") {
            return Err(AuthError::ServerScram(error.to_string()));
        }
        let verifier = text
            .strip_prefix("v=")
            .and_then(|v| crypto::unb64_key(v.split(',').next().unwrap_or(v)))
            .ok_or(AuthError::MalformedSasl(
                "server-final-message has no verifier",
            ))?;
        let expected = crypto::hmac_sha256(&self.server_key, auth_message.as_bytes());
        if bool::from(subtle::ConstantTimeEq::ct_eq(&expected[..], &verifier[..])) {
            Ok(())
        } else {
            Err(AuthError::ServerScram(
                "server signature does not match".into(),
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::{ScramSecret, ScramServer, Secret};
    use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256};

    const MOCK_KEY: [u8; 32] = [3; 32];

    /// A real client logs in to pgrelay; returns the ClientKey pgrelay recovered.
    fn client_key_via_pgrelay(secret: &Secret, password: &str) -> [u8; 32] {
        let mut relay = ScramServer::new(Some(secret), "app", &MOCK_KEY).unwrap();
        let mut client = ScramSha256::new(password.as_bytes(), ChannelBinding::unsupported());
        let first = relay.client_first(client.message()).unwrap();
        client.update(&first).unwrap();
        let fin = relay.client_final(client.message()).unwrap();
        client.finish(&fin).unwrap();
        relay.client_key().unwrap()
    }

    /// pgrelay logs in to a "PostgreSQL" (our own server half) holding `server_secret`.
    fn login(
        server_secret: &Secret,
        mut client: ScramClientWithKeys,
        forge_final: bool,
    ) -> Result<(), AuthError> {
        let mut postgres = ScramServer::new(Some(server_secret), "app", &MOCK_KEY).unwrap();
        let first = postgres.client_first(client.message()).unwrap();
        client.update(&first)?;
        let fin = postgres.client_final(client.message())?;
        if forge_final {
            return client.finish(format!("v={}", crypto::b64(&[0; 32])).as_bytes());
        }
        client.finish(&fin)
    }

    #[test]
    fn pass_through_login_with_recovered_client_key() {
        let scram = ScramSecret::from_password("s3cret", b"sixteen byte slt", 4096);
        let secret = Secret::Scram(scram.clone());
        let client_key = client_key_via_pgrelay(&secret, "s3cret");
        let client = ScramClientWithKeys::new(client_key, scram.server_key);
        login(&secret, client, false).unwrap();
    }

    #[test]
    fn wrong_keys_or_forged_server_fail() {
        let scram = ScramSecret::from_password("s3cret", b"sixteen byte slt", 4096);
        let secret = Secret::Scram(scram.clone());
        let client_key = client_key_via_pgrelay(&secret, "s3cret");

        let bad_key = ScramClientWithKeys::new([9; 32], scram.server_key);
        assert!(matches!(
            login(&secret, bad_key, false),
            Err(AuthError::PasswordMismatch)
        ));

        let forged = ScramClientWithKeys::new(client_key, scram.server_key);
        let err = login(&secret, forged, true).unwrap_err();
        assert!(matches!(err, AuthError::ServerScram(_)), "{err}");

        let mut client = ScramClientWithKeys::new(client_key, scram.server_key);
        let err = client
            .update(b"r=someone-else,s=c2FsdA==,i=4096")
            .unwrap_err();
        assert!(matches!(err, AuthError::ServerScram(_)));
        assert!(matches!(
            client.finish(b"v=x"),
            Err(AuthError::OutOfOrder(_))
        ));
    }

    #[test]
    fn server_error_is_reported() {
        let mut client = ScramClientWithKeys::new([1; 32], [2; 32]);
        let nonce = std::str::from_utf8(client.message())
            .unwrap()
            .strip_prefix("n,,n=,r=")
            .unwrap()
            .to_string();
        client
            .update(format!("r={nonce}xyz,s=c2FsdA==,i=4096").as_bytes())
            .unwrap();
        assert!(client
            .message()
            .starts_with(format!("c=biws,r={nonce}xyz,p=").as_bytes()));
        let err = client.finish(b"e=invalid-proof").unwrap_err();
        assert!(err.to_string().contains("invalid-proof"), "{err}");
    }
}
