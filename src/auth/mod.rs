//! Client authentication: the userlist, MD5 and SCRAM-SHA-256 (server side),
//! as pure state machines over byte slices. No sockets here: the frontend
//! moves the bytes, this module decides.

mod crypto;
pub mod md5;
mod passthrough;
pub mod plain;
pub mod scram;
pub mod scram_client;
mod scram_message;
mod secret;
pub mod userlist;

use std::path::PathBuf;

pub use md5::{md5_password_hash, md5_salted_response, verify_md5_response};
pub use passthrough::{ScramKeyring, ScramKeys};
pub use plain::verify_plain_password;
pub use scram::ScramServer;
pub use scram_client::ScramClientWithKeys;
pub use secret::{ScramSecret, Secret};
pub use userlist::Userlist;

/// Everything that can go wrong while loading credentials or authenticating a client.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("cannot read userlist {path}: {source}")]
    UserlistIo {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{origin}:{line}: {reason}")]
    UserlistSyntax {
        origin: String,
        line: usize,
        reason: String,
    },
    /// Wrong password, unknown user, or a secret that cannot serve this method:
    /// deliberately one variant so callers cannot leak which it was.
    #[error("password authentication failed")]
    PasswordMismatch,
    /// The stored secret is an MD5 hash; SCRAM needs the password or a SCRAM secret.
    /// Shown to the client as a plain password failure (see [`AuthError::client_message`]).
    #[error("SCRAM authentication needs a plain or SCRAM secret, but the stored secret is MD5")]
    SecretUnusableForScram,
    #[error("client selected an invalid SASL authentication mechanism {0:?}")]
    UnsupportedMechanism(String),
    #[error("channel binding {0:?} was requested, but only SCRAM-SHA-256 without channel binding is offered")]
    ChannelBindingNotOffered(String),
    #[error("client uses an authorization identity, which is not supported")]
    AuthorizationIdentityUnsupported,
    #[error("SASL message received in the wrong order: {0}")]
    OutOfOrder(&'static str),
    #[error("malformed SCRAM message: {0}")]
    MalformedSasl(&'static str),
    /// Our SCRAM login to a PostgreSQL server failed (its error, or a bad server signature).
    #[error("SCRAM login to the server failed: {0}")]
    ServerScram(String),
}

impl AuthError {
    /// The SQLSTATE a client sees for this error.
    pub fn sqlstate(&self) -> &'static str {
        match self {
            // config_file_error / io_error: operator-side, but still needs a code.
            Self::UserlistIo { .. } => "58030",
            Self::UserlistSyntax { .. } => "F0000",
            Self::PasswordMismatch | Self::SecretUnusableForScram => "28P01",
            Self::UnsupportedMechanism(_)
            | Self::ChannelBindingNotOffered(_)
            | Self::AuthorizationIdentityUnsupported
            | Self::OutOfOrder(_) => "28000",
            Self::MalformedSasl(_) => "08P01",
            // The client did nothing wrong; the server connection failed.
            Self::ServerScram(_) => "08006",
        }
    }

    /// Text safe to send to the client: failures that could reveal whether a user
    /// exists, or how its secret is stored, collapse into one message.
    pub fn client_message(&self, user: &str) -> String {
        match self {
            Self::PasswordMismatch | Self::SecretUnusableForScram => {
                format!("password authentication failed for user \"{user}\"")
            }
            Self::UserlistIo { .. } | Self::UserlistSyntax { .. } => {
                "authentication configuration error".to_string()
            }
            other => other.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn password_failures_look_identical_to_the_client() {
        let mismatch = AuthError::PasswordMismatch;
        let md5_only = AuthError::SecretUnusableForScram;
        assert_eq!(mismatch.sqlstate(), "28P01");
        assert_eq!(md5_only.sqlstate(), "28P01");
        assert_eq!(
            mismatch.client_message("bob"),
            md5_only.client_message("bob")
        );
        assert_eq!(
            mismatch.client_message("bob"),
            "password authentication failed for user \"bob\""
        );
    }

    #[test]
    fn protocol_errors_have_their_own_codes() {
        assert_eq!(AuthError::MalformedSasl("x").sqlstate(), "08P01");
        assert_eq!(AuthError::OutOfOrder("x").sqlstate(), "28000");
        assert_eq!(
            AuthError::ChannelBindingNotOffered("tls-unique".into()).sqlstate(),
            "28000"
        );
    }
}
