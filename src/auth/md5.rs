//! PostgreSQL's MD5 password scheme: stored `md5(password || user)`, and on the wire
//! `md5(stored_hex || 4-byte salt)`.

use md5::{Digest, Md5};
use subtle::ConstantTimeEq;

use super::secret::Secret;

fn md5_hex(parts: &[&[u8]]) -> String {
    let mut hasher = Md5::new();
    parts.iter().for_each(|p| hasher.update(p));
    let digest = hasher.finalize();
    // Every client login computes this: a table, not a `format!` per byte.
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(3 + 32);
    out.push_str("md5");
    for byte in digest {
        out.push(HEX[usize::from(byte >> 4)] as char);
        out.push(HEX[usize::from(byte & 0xf)] as char);
    }
    out
}

/// The MD5 secret PostgreSQL stores for `user` with `password`.
pub fn md5_password_hash(user: &str, password: &str) -> String {
    md5_hex(&[password.as_bytes(), user.as_bytes()])
}

/// What a client sends in its PasswordMessage for an MD5 challenge with `salt`.
pub fn md5_salted_response(md5_hash: &str, salt: [u8; 4]) -> String {
    let hex_part = md5_hash.strip_prefix("md5").unwrap_or(md5_hash);
    md5_hex(&[hex_part.as_bytes(), &salt])
}

/// Checks a client's MD5 response against a Plain or Md5 secret (a SCRAM secret cannot
/// answer an MD5 challenge). `response` may carry the PasswordMessage's trailing NUL.
pub fn verify_md5_response(secret: &Secret, user: &str, salt: [u8; 4], response: &[u8]) -> bool {
    let stored = match secret {
        Secret::Plain(password) => md5_password_hash(user, password),
        Secret::Md5(hash) => hash.to_ascii_lowercase(),
        Secret::Scram(_) => return false,
    };
    let response = response.strip_suffix(&[0]).unwrap_or(response);
    let expected = md5_salted_response(&stored, salt);
    // Length is public (always 35 for a valid answer); the content comparison is not.
    expected.len() == response.len() && bool::from(expected.as_bytes().ct_eq(response))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_matches_postgres_known_vector() {
        // SELECT 'md5' || md5('password' || 'postgres');
        assert_eq!(
            md5_password_hash("postgres", "password"),
            "md532e12f215ba27cb750c9e093ce4b5127"
        );
        assert_eq!(
            md5_password_hash("postgres", "password"),
            postgres_protocol::password::md5(b"password", "postgres")
        );
    }

    #[test]
    fn salted_response_matches_the_wire_formula() {
        let salt = [0x01, 0x02, 0x03, 0x04];
        let stored = md5_password_hash("alice", "wonderland");
        let mut input = stored.as_bytes()[3..].to_vec();
        input.extend_from_slice(&salt);
        let expected = format!("md5{:x}", Md5::digest(&input));
        assert_eq!(md5_salted_response(&stored, salt), expected);
    }

    #[test]
    fn verifies_plain_and_md5_secrets_and_rejects_scram() {
        let salt = [9, 8, 7, 6];
        let stored = md5_password_hash("alice", "wonderland");
        let good = md5_salted_response(&stored, salt);
        let mut with_nul = good.clone().into_bytes();
        with_nul.push(0);

        let plain = Secret::Plain("wonderland".into());
        let md5 = Secret::Md5(stored.to_ascii_uppercase().replacen("MD5", "md5", 1));
        for secret in [&plain, &md5] {
            assert!(verify_md5_response(secret, "alice", salt, good.as_bytes()));
            assert!(verify_md5_response(secret, "alice", salt, &with_nul));
            assert!(!verify_md5_response(
                secret,
                "alice",
                [0; 4],
                good.as_bytes()
            ));
            assert!(!verify_md5_response(
                secret,
                "alice",
                salt,
                &good.as_bytes()[..34]
            ));
            assert!(!verify_md5_response(secret, "alice", salt, b""));
        }
        // Only a plain secret is salted with the name at check time; an MD5 hash already was.
        assert!(!verify_md5_response(&plain, "bob", salt, good.as_bytes()));
        let scram = Secret::Scram(super::super::ScramSecret::from_password(
            "wonderland",
            b"s",
            16,
        ));
        assert!(!verify_md5_response(&scram, "alice", salt, good.as_bytes()));
    }
}
