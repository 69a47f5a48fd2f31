//! SCRAM pass-through: logging in to a server as a user whose userlist entry
//! is a SCRAM secret, with no password anywhere. A client that proves its
//! password to pgrelay reveals the ClientKey ([`super::ScramServer::client_key`]);
//! with the secret's ServerKey that logs in to any server storing the same
//! secret ([`ScramClientWithKeys`]). PgBouncer does the same.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use super::crypto::{self, Key};
use super::{ScramClientWithKeys, ScramSecret};

/// The keys for one user's SCRAM secret: its ServerKey from the userlist, and
/// the ClientKey once a client has proved the password.
pub struct ScramKeys {
    stored_key: Key,
    server_key: Key,
    client_key: OnceLock<Key>,
}

impl std::fmt::Debug for ScramKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScramKeys")
            .field("client_key_known", &self.client_key.get().is_some())
            .finish_non_exhaustive()
    }
}

impl ScramKeys {
    pub fn new(secret: &ScramSecret) -> Self {
        ScramKeys {
            stored_key: secret.stored_key,
            server_key: secret.server_key,
            client_key: OnceLock::new(),
        }
    }

    fn is_for(&self, secret: &ScramSecret) -> bool {
        self.stored_key == secret.stored_key && self.server_key == secret.server_key
    }

    /// Keeps `client_key` if it belongs to this secret (SHA-256 of it is the
    /// StoredKey); returns whether it does. The client proved it against the
    /// userlist of its login, which a reload may have replaced since.
    pub fn remember(&self, client_key: Key) -> bool {
        let belongs = bool::from(subtle::ConstantTimeEq::ct_eq(
            &crypto::sha256(&client_key)[..],
            &self.stored_key[..],
        ));
        if belongs {
            let _ = self.client_key.set(client_key);
        }
        belongs
    }

    /// A SCRAM client for one server login, once a ClientKey is known.
    pub fn client(&self) -> Option<ScramClientWithKeys> {
        let client_key = self.client_key.get()?;
        Some(ScramClientWithKeys::new(*client_key, self.server_key))
    }
}

/// Every user's [`ScramKeys`], kept across configuration reloads for as long
/// as the user's secret stays the same, so a reload does not make pools wait
/// for the next client login before they can open server connections.
#[derive(Debug, Default)]
pub struct ScramKeyring {
    users: Mutex<HashMap<String, Arc<ScramKeys>>>,
}

impl ScramKeyring {
    /// The keys of `user`'s current `secret`; new (no ClientKey) if the secret changed.
    pub fn keys(&self, user: &str, secret: &ScramSecret) -> Arc<ScramKeys> {
        let mut users = self.users.lock().unwrap_or_else(|p| p.into_inner());
        match users.get(user) {
            Some(keys) if keys.is_for(secret) => keys.clone(),
            _ => {
                let keys = Arc::new(ScramKeys::new(secret));
                users.insert(user.to_string(), keys.clone());
                keys
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret(password: &str) -> (ScramSecret, Key) {
        let secret = ScramSecret::from_password_random_salt(password);
        let salted = crypto::salted_password(password, &secret.salt, secret.iterations);
        (secret, crypto::client_key(&salted))
    }

    #[test]
    fn only_the_secrets_own_client_key_is_kept() {
        let (secret, client_key) = secret("pw");
        let keys = ScramKeys::new(&secret);
        assert!(keys.client().is_none(), "nothing known before a login");
        assert!(!keys.remember([7; 32]), "a key of another secret");
        assert!(keys.client().is_none());
        assert!(keys.remember(client_key));
        assert!(keys.client().is_some());
        assert_eq!(
            format!("{keys:?}"),
            "ScramKeys { client_key_known: true, .. }",
            "no key material in logs"
        );
    }

    #[test]
    fn the_keyring_keeps_keys_while_the_secret_stays_and_drops_them_when_it_changes() {
        let ring = ScramKeyring::default();
        let (first, client_key) = secret("pw");
        assert!(ring.keys("app", &first).remember(client_key));
        assert!(ring.keys("app", &first).client().is_some(), "same secret");
        let (second, _) = secret("pw"); // same password, new salt: a new secret
        assert!(ring.keys("app", &second).client().is_none());
        assert!(ring.keys("other", &first).client().is_none(), "per user");
    }
}
