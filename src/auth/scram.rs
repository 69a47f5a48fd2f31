//! Server side of SCRAM-SHA-256 as PostgreSQL speaks it: no channel binding offered,
//! the SCRAM user name ignored, unknown users answered by a mock exchange.

use subtle::ConstantTimeEq;

use super::crypto::{self, Key};
use super::scram_message::{parse_client_final, parse_client_first};
use super::secret::{ScramSecret, Secret, DEFAULT_SCRAM_ITERATIONS, DEFAULT_SCRAM_SALT_LEN};
use super::AuthError;

const MECHANISMS: &[&str] = &["SCRAM-SHA-256"];

/// Whose keys the exchange runs against.
enum Credentials {
    Real(ScramSecret),
    /// Unknown user: plausible fake parameters; the exchange always fails at the end.
    Mock(ScramSecret),
}

impl Credentials {
    fn secret(&self) -> &ScramSecret {
        match self {
            Credentials::Real(s) | Credentials::Mock(s) => s,
        }
    }
}

enum State {
    AwaitingClientFirst,
    AwaitingClientFinal {
        gs2_header: String,
        client_first_bare: String,
        server_first: String,
        nonce: String,
    },
    Succeeded {
        client_key: Key,
    },
    Failed,
}

/// One SCRAM-SHA-256 exchange with one client.
pub struct ScramServer {
    credentials: Credentials,
    state: State,
}

impl ScramServer {
    /// `secret`: the user's secret, or `None` for an unknown user (mock authentication keyed
    /// by `mock_key`, so a user's fake salt is stable and indistinguishable from a real one).
    /// A Plain secret gets a fresh random salt; pass `Secret::Scram` to reuse a cached one.
    pub fn new(
        secret: Option<&Secret>,
        user: &str,
        mock_key: &[u8; 32],
    ) -> Result<ScramServer, AuthError> {
        let credentials = match secret {
            Some(Secret::Scram(scram)) => Credentials::Real(scram.clone()),
            Some(Secret::Plain(password)) => {
                Credentials::Real(ScramSecret::from_password_random_salt(password))
            }
            Some(Secret::Md5(_)) => return Err(AuthError::SecretUnusableForScram),
            None => Credentials::Mock(mock_secret(user, mock_key)),
        };
        Ok(ScramServer {
            credentials,
            state: State::AwaitingClientFirst,
        })
    }

    /// Mechanisms to list in AuthenticationSASL.
    pub fn mechanisms() -> &'static [&'static str] {
        MECHANISMS
    }

    /// Checks the mechanism a client chose in its SASLInitialResponse.
    pub fn check_mechanism(name: &str) -> Result<(), AuthError> {
        if MECHANISMS.contains(&name) {
            Ok(())
        } else {
            Err(AuthError::UnsupportedMechanism(name.to_string()))
        }
    }

    /// Consumes client-first-message; returns server-first-message.
    pub fn client_first(&mut self, msg: &[u8]) -> Result<Vec<u8>, AuthError> {
        if !matches!(self.state, State::AwaitingClientFirst) {
            self.state = State::Failed;
            return Err(AuthError::OutOfOrder("client-first-message"));
        }
        let first = match parse_client_first(msg) {
            Ok(first) => first,
            Err(err) => {
                self.state = State::Failed;
                return Err(err);
            }
        };
        let secret = self.credentials.secret();
        let nonce = format!("{}{}", first.nonce, crypto::random_nonce());
        let server_first = format!(
            "r={nonce},s={},i={}",
            crypto::b64(&secret.salt),
            secret.iterations
        );
        let reply = server_first.clone().into_bytes();
        self.state = State::AwaitingClientFinal {
            gs2_header: first.gs2_header.to_string(),
            client_first_bare: first.bare.to_string(),
            server_first,
            nonce,
        };
        Ok(reply)
    }

    /// Consumes client-final-message; on a valid proof returns server-final-message.
    pub fn client_final(&mut self, msg: &[u8]) -> Result<Vec<u8>, AuthError> {
        let (gs2_header, client_first_bare, server_first, nonce) =
            match std::mem::replace(&mut self.state, State::Failed) {
                State::AwaitingClientFinal {
                    gs2_header,
                    client_first_bare,
                    server_first,
                    nonce,
                } => (gs2_header, client_first_bare, server_first, nonce),
                _ => return Err(AuthError::OutOfOrder("client-final-message")),
            };
        let fin = parse_client_final(msg)?;
        if fin.channel_binding != gs2_header.as_bytes() {
            return Err(AuthError::MalformedSasl(
                "channel binding data does not match the gs2 header",
            ));
        }
        if fin.nonce != nonce {
            return Err(AuthError::MalformedSasl("nonce does not match"));
        }
        let auth_message = format!("{client_first_bare},{server_first},{}", fin.without_proof);
        let secret = self.credentials.secret();
        let client_signature = crypto::hmac_sha256(secret.stored_key(), auth_message.as_bytes());
        let client_key = crypto::xor(&fin.proof, &client_signature);
        let proof_ok: bool = crypto::sha256(&client_key)
            .ct_eq(secret.stored_key())
            .into();
        let is_real = matches!(self.credentials, Credentials::Real(_));
        if !(proof_ok && is_real) {
            return Err(AuthError::PasswordMismatch);
        }
        let server_signature = crypto::hmac_sha256(&secret.server_key, auth_message.as_bytes());
        self.state = State::Succeeded { client_key };
        Ok(format!("v={}", crypto::b64(&server_signature)).into_bytes())
    }

    /// After success: ClientKey recovered from the proof, enough to log in to a server
    /// holding the same SCRAM secret (see [`super::ScramClientWithKeys`]).
    pub fn client_key(&self) -> Option<[u8; 32]> {
        match self.state {
            State::Succeeded { client_key } => Some(client_key),
            _ => None,
        }
    }

    /// True once the client proved knowledge of the password.
    pub fn is_authenticated(&self) -> bool {
        matches!(self.state, State::Succeeded { .. })
    }
}

impl std::fmt::Debug for ScramServer {
    /// Only the phase: nonces, keys and proofs stay out of logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let phase = match self.state {
            State::AwaitingClientFirst => "awaiting client-first",
            State::AwaitingClientFinal { .. } => "awaiting client-final",
            State::Succeeded { .. } => "succeeded",
            State::Failed => "failed",
        };
        write!(f, "ScramServer({phase})")
    }
}

/// Deterministic per-user fake parameters, like PostgreSQL's mock authentication.
fn mock_secret(user: &str, mock_key: &[u8; 32]) -> ScramSecret {
    let digest = crypto::hmac_sha256(mock_key, user.as_bytes());
    ScramSecret {
        iterations: DEFAULT_SCRAM_ITERATIONS,
        salt: digest[..DEFAULT_SCRAM_SALT_LEN].to_vec(),
        stored_key: crypto::hmac_sha256(mock_key, &digest),
        server_key: crypto::hmac_sha256(&digest, mock_key),
    }
}

#[cfg(test)]
#[path = "scram_tests.rs"]
mod tests;
