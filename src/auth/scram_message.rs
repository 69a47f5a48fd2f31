//! Parsing of the two SCRAM messages a client sends (RFC 5802 §7 grammar, the subset
//! PostgreSQL accepts).

use super::crypto::{self, Key};
use super::AuthError;

/// client-first-message, split into the parts the server needs.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct ClientFirst<'a> {
    /// gs2-header including its trailing comma, e.g. `"n,,"`; echoed back in `c=`.
    pub gs2_header: &'a str,
    /// client-first-message-bare, part of the AuthMessage.
    pub bare: &'a str,
    pub nonce: &'a str,
}

/// client-final-message, split for proof verification.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct ClientFinal<'a> {
    pub channel_binding: Vec<u8>,
    pub nonce: &'a str,
    /// client-final-message-without-proof, part of the AuthMessage.
    pub without_proof: &'a str,
    pub proof: Key,
}

/// SCRAM messages are UTF-8 text; anything else is malformed.
pub(crate) fn utf8(msg: &[u8]) -> Result<&str, AuthError> {
    std::str::from_utf8(msg).map_err(|_| AuthError::MalformedSasl("message is not valid UTF-8"))
}

/// Splits `text` at the first comma (or its end) and strips the `key=` prefix.
fn attribute<'a>(
    text: &'a str,
    key: &'static str,
    missing: &'static str,
) -> Result<(&'a str, &'a str), AuthError> {
    let (field, rest) = text.split_once(',').unwrap_or((text, ""));
    let value = field
        .strip_prefix(key)
        .ok_or(AuthError::MalformedSasl(missing))?;
    Ok((value, rest))
}

fn is_printable_nonce(nonce: &str) -> bool {
    !nonce.is_empty()
        && nonce
            .bytes()
            .all(|b| (0x21..=0x7e).contains(&b) && b != b',')
}

pub(crate) fn parse_client_first(msg: &[u8]) -> Result<ClientFirst<'_>, AuthError> {
    let text = utf8(msg)?;
    let (flag, rest) = text
        .split_once(',')
        .ok_or(AuthError::MalformedSasl("missing gs2 header"))?;
    match flag {
        // "y": the client could bind but thinks we cannot, which is true: we offer no -PLUS.
        "n" | "y" => {}
        _ => {
            return Err(match flag.strip_prefix("p=") {
                Some(name) => AuthError::ChannelBindingNotOffered(name.to_string()),
                None => AuthError::MalformedSasl("unexpected channel binding flag"),
            })
        }
    }
    let (authzid, bare) = rest
        .split_once(',')
        .ok_or(AuthError::MalformedSasl("missing gs2 header"))?;
    if authzid.starts_with("a=") {
        return Err(AuthError::AuthorizationIdentityUnsupported);
    }
    if !authzid.is_empty() {
        return Err(AuthError::MalformedSasl(
            "unexpected attribute in gs2 header",
        ));
    }
    let gs2_header = &text[..text.len() - bare.len()];
    if bare.starts_with("m=") {
        return Err(AuthError::MalformedSasl(
            "mandatory extensions are not supported",
        ));
    }
    // PostgreSQL ignores the SCRAM user name (the startup packet's user counts), and so do we.
    let (_user, rest) = attribute(bare, "n=", "expected user name attribute \"n\"")?;
    let (nonce, _extensions) = attribute(rest, "r=", "expected nonce attribute \"r\"")?;
    if !is_printable_nonce(nonce) {
        return Err(AuthError::MalformedSasl("nonce is empty or not printable"));
    }
    Ok(ClientFirst {
        gs2_header,
        bare,
        nonce,
    })
}

pub(crate) fn parse_client_final(msg: &[u8]) -> Result<ClientFinal<'_>, AuthError> {
    let text = utf8(msg)?;
    let (without_proof, proof) = text
        .rsplit_once(",p=")
        .ok_or(AuthError::MalformedSasl("expected proof attribute \"p\""))?;
    let proof = crypto::unb64_key(proof).ok_or(AuthError::MalformedSasl("invalid client proof"))?;
    let (binding, rest) = attribute(
        without_proof,
        "c=",
        "expected channel binding attribute \"c\"",
    )?;
    let channel_binding =
        crypto::unb64(binding).ok_or(AuthError::MalformedSasl("invalid channel binding data"))?;
    let (nonce, _extensions) = attribute(rest, "r=", "expected nonce attribute \"r\"")?;
    Ok(ClientFinal {
        channel_binding,
        nonce,
        without_proof,
        proof,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_client_first_variants() {
        let first = parse_client_first(b"n,,n=,r=abc").unwrap();
        assert_eq!(
            first,
            ClientFirst {
                gs2_header: "n,,",
                bare: "n=,r=abc",
                nonce: "abc"
            }
        );
        let first = parse_client_first(b"y,,n=bob,r=x~y,ext=1").unwrap();
        assert_eq!(first.gs2_header, "y,,");
        assert_eq!(first.bare, "n=bob,r=x~y,ext=1");
        assert_eq!(first.nonce, "x~y");
    }

    #[test]
    fn refuses_bad_client_first() {
        let cases: [(&[u8], &str); 9] = [
            (b"p=tls-server-end-point,,n=,r=a", "28000"),
            (b"n,a=admin,n=,r=a", "28000"),
            (b"x,,n=,r=a", "08P01"),
            (b"n,,m=ext,n=,r=a", "08P01"),
            (b"n,,r=a", "08P01"),
            (b"n,,n=,r=", "08P01"),
            (b"n,,n=,r=a\x01b", "08P01"),
            (b"n,,n=,r=\xff", "08P01"),
            (b"n", "08P01"),
        ];
        for (msg, state) in cases {
            let err = parse_client_first(msg).unwrap_err();
            assert_eq!(
                err.sqlstate(),
                state,
                "{:?}: {err}",
                String::from_utf8_lossy(msg)
            );
        }
        let err = parse_client_first(b"p=tls-unique,,n=,r=a").unwrap_err();
        assert!(err.to_string().contains("tls-unique"), "{err}");
    }

    #[test]
    fn parses_client_final() {
        let proof = crypto::b64(&[7u8; 32]);
        let msg = format!("c=biws,r=abcdef,p={proof}");
        let fin = parse_client_final(msg.as_bytes()).unwrap();
        assert_eq!(fin.channel_binding, b"n,,");
        assert_eq!(fin.nonce, "abcdef");
        assert_eq!(fin.without_proof, "c=biws,r=abcdef");
        assert_eq!(fin.proof, [7u8; 32]);
    }

    #[test]
    fn refuses_bad_client_final() {
        let proof = crypto::b64(&[7u8; 32]);
        for msg in [
            "c=biws,r=abc".to_string(),
            format!("r=abc,p={proof}"),
            format!("c=!!,r=abc,p={proof}"),
            format!("c=biws,p={proof}"),
            "c=biws,r=abc,p=AAAA".to_string(),
        ] {
            let err = parse_client_final(msg.as_bytes()).unwrap_err();
            assert_eq!(err.sqlstate(), "08P01", "{msg}: {err}");
        }
    }
}
