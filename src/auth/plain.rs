//! Cleartext password check (`auth_type = plain`) against any kind of stored secret.

use subtle::ConstantTimeEq;

use super::crypto;
use super::md5::md5_password_hash;
use super::secret::Secret;

/// True when `password` (as sent in a PasswordMessage; a trailing NUL is ignored)
/// matches the stored secret, whatever form the secret is stored in.
pub fn verify_plain_password(secret: &Secret, user: &str, password: &[u8]) -> bool {
    let password = password.strip_suffix(&[0]).unwrap_or(password);
    match secret {
        Secret::Plain(stored) => {
            stored.len() == password.len() && bool::from(stored.as_bytes().ct_eq(password))
        }
        Secret::Md5(stored) => match std::str::from_utf8(password) {
            Ok(password) => {
                let computed = md5_password_hash(user, password);
                bool::from(
                    computed
                        .as_bytes()
                        .ct_eq(stored.to_ascii_lowercase().as_bytes()),
                )
            }
            Err(_) => false,
        },
        Secret::Scram(scram) => match std::str::from_utf8(password) {
            Ok(password) => {
                let salted = crypto::salted_password(password, &scram.salt, scram.iterations);
                let stored_key = crypto::sha256(&crypto::client_key(&salted));
                bool::from(stored_key.ct_eq(&scram.stored_key))
            }
            Err(_) => false,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::ScramSecret;

    #[test]
    fn checks_every_secret_kind() {
        let secrets = [
            Secret::Plain("pw1".into()),
            Secret::Md5(md5_password_hash("u", "pw1")),
            Secret::Scram(ScramSecret::from_password("pw1", b"saltsalt", 64)),
        ];
        for secret in &secrets {
            assert!(verify_plain_password(secret, "u", b"pw1"), "{secret:?}");
            assert!(verify_plain_password(secret, "u", b"pw1\0"), "{secret:?}");
            assert!(!verify_plain_password(secret, "u", b"pw2"), "{secret:?}");
            assert!(!verify_plain_password(secret, "u", b"pw"), "{secret:?}");
            assert!(!verify_plain_password(secret, "u", b""), "{secret:?}");
        }
        // The MD5 hash is salted with the user name.
        assert!(!verify_plain_password(&secrets[1], "v", b"pw1"));
    }
}
