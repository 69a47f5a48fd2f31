//! SCRAM-SHA-256 building blocks (RFC 5802 §3 with SHA-256, RFC 7677).

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::{Digest, Sha256};

pub(crate) type Key = [u8; 32];

/// Random bytes in a server nonce; 18 bytes give 24 base64 characters, like PostgreSQL.
const NONCE_RAW_LEN: usize = 18;

pub(crate) fn hmac_sha256(key: &[u8], data: &[u8]) -> Key {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC accepts keys of any length");
    mac.update(data);
    mac.finalize().into_bytes().into()
}

pub(crate) fn sha256(data: &[u8]) -> Key {
    Sha256::digest(data).into()
}

pub(crate) fn xor(a: &Key, b: &Key) -> Key {
    let mut out = *a;
    out.iter_mut().zip(b).for_each(|(o, b)| *o ^= b);
    out
}

/// SaltedPassword := Hi(SASLprep(password), salt, i). Like libpq and the backend,
/// a password SASLprep rejects is used as it is rather than refused.
pub(crate) fn salted_password(password: &str, salt: &[u8], iterations: u32) -> Key {
    let prepared = stringprep::saslprep(password).unwrap_or(password.into());
    pbkdf2::pbkdf2_hmac_array::<Sha256, 32>(prepared.as_bytes(), salt, iterations)
}

pub(crate) fn client_key(salted_password: &Key) -> Key {
    hmac_sha256(salted_password, b"Client Key")
}

pub(crate) fn server_key(salted_password: &Key) -> Key {
    hmac_sha256(salted_password, b"Server Key")
}

/// A fresh nonce from the thread-local CSPRNG, base64 so it is printable and comma-free.
pub(crate) fn random_nonce() -> String {
    let mut raw = [0u8; NONCE_RAW_LEN];
    rand::rng().fill_bytes(&mut raw);
    STANDARD.encode(raw)
}

pub(crate) fn b64(bytes: &[u8]) -> String {
    STANDARD.encode(bytes)
}

pub(crate) fn unb64(text: &str) -> Option<Vec<u8>> {
    STANDARD.decode(text).ok()
}

/// Decodes base64 that must hold exactly one 32-byte key.
pub(crate) fn unb64_key(text: &str) -> Option<Key> {
    unb64(text)?.try_into().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nonces_are_printable_base64_and_distinct() {
        let a = random_nonce();
        let b = random_nonce();
        assert_ne!(a, b);
        assert_eq!(a.len(), 24);
        assert!(a.bytes().all(|c| c.is_ascii_graphic() && c != b','), "{a}");
        assert_eq!(unb64(&a).unwrap().len(), NONCE_RAW_LEN);
    }

    #[test]
    fn saslprep_maps_non_ascii_space_like_libpq() {
        // U+00A0 NO-BREAK SPACE is mapped to an ASCII space by SASLprep.
        let salt = b"salt";
        assert_eq!(
            salted_password("a\u{a0}b", salt, 2),
            salted_password("a b", salt, 2)
        );
        assert_ne!(
            salted_password("ab", salt, 2),
            salted_password("a b", salt, 2)
        );
    }

    #[test]
    fn hi_matches_rfc7677_test_vector() {
        // RFC 7677 §3: user "user", password "pencil", 4096 iterations.
        let salt = unb64("W22ZaJ0SNY7soEsUEjb6gQ==").unwrap();
        let salted = salted_password("pencil", &salt, 4096);
        let stored = sha256(&client_key(&salted));
        let client_first_bare = "n=user,r=rOprNGfwEbeRWgbNEkqO";
        let server_first = "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096";
        let final_without_proof = "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0";
        let auth = format!("{client_first_bare},{server_first},{final_without_proof}");
        let proof = xor(&client_key(&salted), &hmac_sha256(&stored, auth.as_bytes()));
        assert_eq!(b64(&proof), "dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=");
        let server_sig = hmac_sha256(&server_key(&salted), auth.as_bytes());
        assert_eq!(
            b64(&server_sig),
            "6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="
        );
    }
}
