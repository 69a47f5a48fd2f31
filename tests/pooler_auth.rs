//! Client authentication through pgrelay for each auth_type.

mod common;

use common::{cluster, sqlstate, start_relay, try_connect};
use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn conn(port: u16, user: &str, password: &str) -> String {
    format!("host=127.0.0.1 port={port} user={user} password={password} dbname=app")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_auth_type_accepts_the_right_password_and_refuses_others() {
    let cluster = cluster(0, false).await;
    let (user, password) = cluster.app_user();
    for auth in ["plain", "md5", "scram-sha-256"] {
        let relay = start_relay(&cluster, &format!("auth_type: {auth}")).await;
        let ok = try_connect(&conn(relay.port, user, password))
            .await
            .unwrap_or_else(|e| panic!("{auth}: right password refused: {e}"));
        assert_eq!(common::scalar(&ok, "select 1").await, "1");
        let wrong = try_connect(&conn(relay.port, user, "not-the-password"))
            .await
            .err()
            .unwrap_or_else(|| panic!("{auth}: wrong password accepted"));
        assert_eq!(
            sqlstate(&wrong).as_deref(),
            Some("28P01"),
            "{auth}: {wrong}"
        );
        let unknown = try_connect(&conn(relay.port, "nobody", "x"))
            .await
            .err()
            .unwrap_or_else(|| panic!("{auth}: unknown user accepted"));
        assert_eq!(
            sqlstate(&unknown).as_deref(),
            Some("28P01"),
            "{auth}: {unknown}"
        );
        assert_eq!(
            unknown.as_db_error().unwrap().message(),
            "password authentication failed for user \"nobody\"",
            "the error reveals nothing more"
        );
        relay.stop().await;
    }
    let relay = start_relay(&cluster, "auth_type: trust").await;
    let c = try_connect(&conn(relay.port, user, "anything"))
        .await
        .expect("trust");
    assert_eq!(common::scalar(&c, "select 1").await, "1");
    relay.stop().await;
}

/// Messages of one SCRAM exchange, as (type byte, auth code) pairs seen by the client.
async fn scram_exchange(port: u16, user: &str, password: &str) -> Vec<(u8, i32)> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let mut startup = bytes::BytesMut::new();
    postgres_protocol::message::frontend::startup_message(
        [("user", user), ("database", "app")],
        &mut startup,
    )
    .unwrap();
    s.write_all(&startup).await.unwrap();
    let mut seen = Vec::new();
    let mut scram = ScramSha256::new(password.as_bytes(), ChannelBinding::unsupported());
    loop {
        let (tag, body) = read_message(&mut s).await;
        let code = if tag == b'R' {
            i32::from_be_bytes([body[0], body[1], body[2], body[3]])
        } else {
            -1
        };
        seen.push((tag, code));
        let mut out = bytes::BytesMut::new();
        match (tag, code) {
            (b'R', 10) => postgres_protocol::message::frontend::sasl_initial_response(
                "SCRAM-SHA-256",
                scram.message(),
                &mut out,
            )
            .unwrap(),
            (b'R', 11) => {
                scram.update(&body[4..]).unwrap();
                postgres_protocol::message::frontend::sasl_response(scram.message(), &mut out)
                    .unwrap();
            }
            _ => return seen,
        }
        s.write_all(&out).await.unwrap();
    }
}

async fn read_message(s: &mut TcpStream) -> (u8, Vec<u8>) {
    let mut header = [0u8; 5];
    s.read_exact(&mut header).await.unwrap();
    let len = i32::from_be_bytes([header[1], header[2], header[3], header[4]]) as usize;
    let mut body = vec![0u8; len - 4];
    s.read_exact(&mut body).await.unwrap();
    (header[0], body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scram_costs_an_unknown_user_the_same_round_trips_as_a_known_one() {
    let cluster = cluster(0, false).await;
    let relay = start_relay(&cluster, "auth_type: scram-sha-256").await;
    let (user, _) = cluster.app_user();
    let known = scram_exchange(relay.port, user, "wrong-password").await;
    let unknown = scram_exchange(relay.port, "no_such_user", "wrong-password").await;
    assert_eq!(
        known,
        vec![(b'R', 10), (b'R', 11), (b'E', -1)],
        "SASL, SASL continue, then the error"
    );
    assert_eq!(known, unknown);
    relay.stop().await;
}
