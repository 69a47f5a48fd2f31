//! ScramServer driven by an independent client implementation (postgres-protocol's).

use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256};

use super::*;

const MOCK_KEY: [u8; 32] = [42; 32];

/// Result of one full exchange, with what crossed the wire.
struct Exchange {
    outcome: Result<(), AuthError>,
    server_first: String,
    messages_from_server: usize,
    server: ScramServer,
}

fn exchange(secret: Option<&Secret>, user: &str, password: &str) -> Exchange {
    let mut server = ScramServer::new(secret, user, &MOCK_KEY).unwrap();
    let mut client = ScramSha256::new(password.as_bytes(), ChannelBinding::unsupported());
    let server_first = server.client_first(client.message()).unwrap();
    client
        .update(&server_first)
        .expect("client accepts server-first");
    let mut messages_from_server = 1;
    let outcome = server.client_final(client.message()).map(|server_final| {
        messages_from_server += 1;
        client
            .finish(&server_final)
            .expect("client verifies the server signature");
    });
    Exchange {
        outcome,
        server_first: String::from_utf8(server_first).unwrap(),
        messages_from_server,
        server,
    }
}

fn field<'a>(server_first: &'a str, key: &str) -> &'a str {
    server_first
        .split(',')
        .find_map(|f| f.strip_prefix(key))
        .unwrap()
}

#[test]
fn right_password_with_plain_secret_succeeds() {
    let secret = Secret::Plain("correct horse".into());
    let run = exchange(Some(&secret), "alice", "correct horse");
    run.outcome.unwrap();
    assert!(run.server.is_authenticated());
    assert_eq!(format!("{:?}", run.server), "ScramServer(succeeded)");
    assert_eq!(field(&run.server_first, "i="), "4096");
    // The recovered ClientKey is the real one for this salt.
    let salt = crypto::unb64(field(&run.server_first, "s=")).unwrap();
    let salted = crypto::salted_password("correct horse", &salt, 4096);
    assert_eq!(run.server.client_key(), Some(crypto::client_key(&salted)));
}

#[test]
fn secret_produced_like_postgres_authenticates() {
    let text = postgres_protocol::password::scram_sha_256(b"pa55");
    let secret = Secret::Scram(ScramSecret::parse(&text).unwrap());
    exchange(Some(&secret), "bob", "pa55").outcome.unwrap();

    let ours = Secret::Scram(ScramSecret::from_password(
        "pa55",
        b"0123456789abcdef",
        1000,
    ));
    let run = exchange(Some(&ours), "bob", "pa55");
    run.outcome.unwrap();
    assert_eq!(field(&run.server_first, "i="), "1000");
    assert_eq!(field(&run.server_first, "s="), "MDEyMzQ1Njc4OWFiY2RlZg==");
}

#[test]
fn non_ascii_password_matches_libpq_saslprep() {
    // libpq (and postgres-protocol) SASLprep the password: U+00A0 becomes a space.
    let secret = Secret::Plain("pass word".into());
    exchange(Some(&secret), "u", "pass\u{a0}word")
        .outcome
        .unwrap();
}

#[test]
fn wrong_password_fails_with_28p01() {
    let secret = Secret::Scram(ScramSecret::from_password("right", b"saltsalt", 64));
    let run = exchange(Some(&secret), "alice", "wrong");
    let err = run.outcome.unwrap_err();
    assert!(matches!(err, AuthError::PasswordMismatch));
    assert_eq!(err.sqlstate(), "28P01");
    assert_eq!(run.server.client_key(), None);
    assert!(!run.server.is_authenticated());
    assert_eq!(format!("{:?}", run.server), "ScramServer(failed)");
}

#[test]
fn unknown_user_mock_fails_like_a_wrong_password() {
    let real = Secret::Plain("pw".into());
    let known = exchange(Some(&real), "alice", "nope");
    let mock = exchange(None, "mallory", "pw");
    let mock_err = mock.outcome.unwrap_err();
    let known_err = known.outcome.unwrap_err();
    assert_eq!(mock.messages_from_server, known.messages_from_server);
    assert_eq!(mock_err.sqlstate(), known_err.sqlstate());
    assert_eq!(mock_err.client_message("x"), known_err.client_message("x"));
    // Same shape of server-first: 16-byte salt, default iterations, same nonce length.
    for key in ["s=", "i=", "r="] {
        assert_eq!(
            field(&mock.server_first, key).len(),
            field(&known.server_first, key).len(),
            "{key}"
        );
    }
    assert_eq!(mock.server.client_key(), None);
}

#[test]
fn mock_salt_is_stable_per_user_and_key() {
    let salt_of = |user: &str, key: &[u8; 32]| {
        let mut server = ScramServer::new(None, user, key).unwrap();
        let first = server.client_first(b"n,,n=,r=abc").unwrap();
        field(std::str::from_utf8(&first).unwrap(), "s=").to_string()
    };
    assert_eq!(salt_of("ghost", &MOCK_KEY), salt_of("ghost", &MOCK_KEY));
    assert_ne!(salt_of("ghost", &MOCK_KEY), salt_of("spirit", &MOCK_KEY));
    assert_ne!(salt_of("ghost", &MOCK_KEY), salt_of("ghost", &[1; 32]));
}

#[test]
fn md5_secret_cannot_do_scram() {
    let secret = Secret::Md5(crate::auth::md5_password_hash("u", "pw"));
    let err = ScramServer::new(Some(&secret), "u", &MOCK_KEY)
        .err()
        .unwrap();
    assert!(matches!(err, AuthError::SecretUnusableForScram));
    assert_eq!(err.sqlstate(), "28P01");
}

#[test]
fn server_nonce_extends_client_nonce_with_fresh_base64() {
    let secret = Secret::Scram(ScramSecret::from_password("pw", b"salt", 16));
    let nonce_of = || {
        let mut server = ScramServer::new(Some(&secret), "u", &MOCK_KEY).unwrap();
        let first = String::from_utf8(server.client_first(b"n,,n=,r=CLIENT").unwrap()).unwrap();
        field(&first, "r=").to_string()
    };
    let (a, b) = (nonce_of(), nonce_of());
    assert_ne!(a, b);
    let suffix = a.strip_prefix("CLIENT").unwrap();
    assert_eq!(suffix.len(), 24);
    assert_eq!(crypto::unb64(suffix).unwrap().len(), 18);
}

#[test]
fn messages_out_of_order_are_refused() {
    let secret = Secret::Plain("pw".into());
    let mut server = ScramServer::new(Some(&secret), "u", &MOCK_KEY).unwrap();
    let err = server.client_final(b"c=biws,r=x,p=AAAA").unwrap_err();
    assert!(matches!(err, AuthError::OutOfOrder(_)));
    assert_eq!(err.sqlstate(), "28000");

    let mut server = ScramServer::new(Some(&secret), "u", &MOCK_KEY).unwrap();
    server.client_first(b"n,,n=,r=abc").unwrap();
    assert!(matches!(
        server.client_first(b"n,,n=,r=abc"),
        Err(AuthError::OutOfOrder(_))
    ));
}

#[test]
fn tampered_final_messages_are_refused() {
    let secret = Secret::Scram(ScramSecret::from_password("pw", b"salt", 16));
    let proof = crypto::b64(&[0; 32]);
    let final_for = |first: &[u8], build: &dyn Fn(&str) -> String| {
        let mut server = ScramServer::new(Some(&secret), "u", &MOCK_KEY).unwrap();
        let server_first = String::from_utf8(server.client_first(first).unwrap()).unwrap();
        let nonce = field(&server_first, "r=").to_string();
        let result = server.client_final(build(&nonce).as_bytes());
        (result, server)
    };
    // Nonce that is not the combined one.
    let (result, _) = final_for(b"n,,n=,r=abc", &|_| format!("c=biws,r=abc,p={proof}"));
    assert_eq!(result.unwrap_err().sqlstate(), "08P01");
    // c= must echo the gs2 header actually sent ("y,," here, "n,," in biws).
    let (result, _) = final_for(b"y,,n=,r=abc", &|n| format!("c=biws,r={n},p={proof}"));
    assert_eq!(result.unwrap_err().sqlstate(), "08P01");
    // The right shape with a made-up proof is a password failure, and the state is terminal.
    let (result, mut server) = final_for(b"y,,n=,r=abc", &|n| format!("c=eSws,r={n},p={proof}"));
    assert!(matches!(result, Err(AuthError::PasswordMismatch)));
    assert!(matches!(
        server.client_final(b"c=eSws,r=x,p=AAAA"),
        Err(AuthError::OutOfOrder(_))
    ));
}

#[test]
fn channel_binding_request_is_refused_clearly() {
    let secret = Secret::Plain("pw".into());
    let mut server = ScramServer::new(Some(&secret), "u", &MOCK_KEY).unwrap();
    let mut client = ScramSha256::new(b"pw", ChannelBinding::tls_server_end_point(vec![1, 2, 3]));
    let err = server.client_first(client.message()).unwrap_err();
    assert!(
        matches!(err, AuthError::ChannelBindingNotOffered(ref m) if m == "tls-server-end-point")
    );
    assert_eq!(err.sqlstate(), "28000");
    // A client that says "y" (could bind, server does not offer it) is fine.
    let mut server = ScramServer::new(Some(&secret), "u", &MOCK_KEY).unwrap();
    client = ScramSha256::new(b"pw", ChannelBinding::unrequested());
    let first = server.client_first(client.message()).unwrap();
    client.update(&first).unwrap();
    let fin = server.client_final(client.message()).unwrap();
    client.finish(&fin).unwrap();
}

#[test]
fn mechanism_list_and_check() {
    assert_eq!(ScramServer::mechanisms(), ["SCRAM-SHA-256"]);
    ScramServer::check_mechanism("SCRAM-SHA-256").unwrap();
    let err = ScramServer::check_mechanism("SCRAM-SHA-256-PLUS").unwrap_err();
    assert_eq!(err.sqlstate(), "28000");
}
