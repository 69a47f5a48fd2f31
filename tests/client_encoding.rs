//! Clients whose `client_encoding` is not UTF-8 send SQL that is not UTF-8.
//! pgrelay forwards those bytes for the server to decode, as PostgreSQL
//! itself would take them; text it cannot decode is not classified but runs
//! on the primary, like SQL the classifier cannot parse. The exception is a
//! simple Query that differs from the session's last one only inside string
//! literals: it goes where that one went, without being decoded.

mod common;

use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;
use std::time::Duration;

use common::{cluster, psql_with, raw_login, read_until_ready, scalar, start_relay_with_db};
use tokio::io::AsyncWriteExt;

/// `select octet_length(convert_to('é', 'UTF8')), inet_server_addr()` in
/// LATIN1, where 'é' is the single byte 0xE9 (invalid as UTF-8). The server
/// answers 2: the character reached it intact and was converted.
fn latin1_query() -> Vec<u8> {
    let mut sql = b"select octet_length(convert_to('".to_vec();
    sql.push(0xE9);
    sql.extend_from_slice(b"', 'UTF8')), host(inet_server_addr())");
    sql
}

fn message(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut m = vec![tag];
    m.extend_from_slice(&((body.len() + 4) as i32).to_be_bytes());
    m.extend_from_slice(body);
    m
}

/// The text columns of the DataRows among `messages`.
fn rows(messages: &[(u8, Vec<u8>)]) -> Vec<Vec<String>> {
    messages
        .iter()
        .filter(|(tag, _)| *tag == b'D')
        .map(|(_, body)| {
            let count = i16::from_be_bytes([body[0], body[1]]) as usize;
            let mut at = 2;
            (0..count)
                .map(|_| {
                    let len = i32::from_be_bytes(body[at..at + 4].try_into().unwrap()) as usize;
                    let value = String::from_utf8_lossy(&body[at + 4..at + 4 + len]).into_owned();
                    at += 4 + len;
                    value
                })
                .collect()
        })
        .collect()
}

fn errors(messages: &[(u8, Vec<u8>)]) -> Vec<String> {
    messages
        .iter()
        .filter(|(tag, _)| *tag == b'E')
        .map(|(_, body)| String::from_utf8_lossy(body).into_owned())
        .collect()
}

/// Runs `sql` with `psql -XAt -c` as a LATIN1 client; its trimmed output.
async fn psql_latin1(cluster: &pgrelay_testcontainers::Cluster, port: u16, sql: Vec<u8>) -> String {
    let (user, password) = cluster.app_user();
    let conninfo = common::app_conninfo(cluster, port, user);
    let sql = OsString::from_vec(sql);
    let env = [("PGCLIENTENCODING", "LATIN1")];
    let (ok, text) = psql_with(cluster, &conninfo, password, &sql, &env).await;
    assert!(ok, "{text}");
    text.trim().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn latin1_sql_is_forwarded_with_routing_on() {
    let cluster = cluster(1, false).await;
    let relay = start_relay_with_db(
        &cluster,
        "pool_mode: transaction",
        "    replicas:\n      hosts: [127.0.0.2]\n      health_check_interval: 200ms\n",
    )
    .await;

    // Routing is on: a UTF-8 read reaches the replica once it is healthy.
    let client = relay.connect(&cluster).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while scalar(&client, "select host(inet_server_addr())").await != "127.0.0.2" {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the replica never took a read"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // psql, simple protocol.
    assert_eq!(
        psql_latin1(&cluster, relay.port, latin1_query()).await,
        "2|127.0.0.1"
    );

    // Extended protocol with a named statement, which transaction pooling
    // renames and prepares on servers under a name of its own.
    let mut raw = raw_login(&cluster, relay.port, &[("client_encoding", "LATIN1")]).await;
    let mut parse = b"s1\0".to_vec();
    parse.extend_from_slice(&latin1_query());
    parse.extend_from_slice(&[0, 0, 0]);
    let bind_execute_sync = [
        message(b'B', b"\0s1\0\0\0\0\0\0\0"),
        message(b'E', b"\0\0\0\0\0"),
        message(b'S', b""),
    ]
    .concat();
    raw.write_all(&[message(b'P', &parse), bind_execute_sync.clone()].concat())
        .await
        .unwrap();
    let reply = read_until_ready(&mut raw).await;
    assert_eq!(errors(&reply), Vec::<String>::new());
    assert_eq!(rows(&reply), vec![vec!["2", "127.0.0.1"]]);
    // Executed again, on whichever server: prepared there from the same bytes.
    raw.write_all(&bind_execute_sync).await.unwrap();
    let reply = read_until_ready(&mut raw).await;
    assert_eq!(errors(&reply), Vec::<String>::new());
    assert_eq!(rows(&reply), vec![vec!["2", "127.0.0.1"]]);

    // The same shape as the session's last Query, differing only inside a
    // string literal: that decision is reused without decoding the text, so
    // the LATIN1 literal follows an ASCII one to the replica, which converts
    // it alike.
    let ascii = b"select octet_length(convert_to('e', 'UTF8')), host(inet_server_addr())";
    for (sql, converted) in [(ascii.to_vec(), "1"), (latin1_query(), "2")] {
        raw.write_all(&message(b'Q', &[sql.as_slice(), b"\0"].concat()))
            .await
            .unwrap();
        let reply = read_until_ready(&mut raw).await;
        assert_eq!(errors(&reply), Vec::<String>::new());
        assert_eq!(rows(&reply), vec![vec![converted, "127.0.0.2"]]);
    }

    drop(raw);
    drop(client);
    relay.stop().await;
}
