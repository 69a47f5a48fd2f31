use bytes::BytesMut;

use super::*;

fn msg(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut v = vec![tag];
    v.extend_from_slice(&((body.len() + 4) as i32).to_be_bytes());
    v.extend_from_slice(body);
    v
}

fn ready(status: TxStatus) -> Vec<u8> {
    msg(b'Z', &[status.byte()])
}

/// What the client would receive for `server` bytes, and how much was consumed.
fn relay(state: &mut RelayState, server: &[u8]) -> (Vec<u8>, usize) {
    let mut out = Vec::new();
    let n = state.scan(server, &mut out, |_, _| {}).unwrap();
    (render(&out, server), n)
}

/// Like [`relay`], with the parameters the scan reported, in order.
fn relay_tracking(
    state: &mut RelayState,
    server: &[u8],
) -> (Vec<u8>, usize, Vec<(String, String)>) {
    let mut seen = Vec::new();
    let mut out = Vec::new();
    let n = state
        .scan(server, &mut out, |k, v| {
            seen.push((k.to_string(), v.to_string()))
        })
        .unwrap();
    (render(&out, server), n, seen)
}

fn render(out: &[Out], server: &[u8]) -> Vec<u8> {
    let mut bytes = Vec::new();
    for o in out {
        match o {
            Out::Server(r) => bytes.extend_from_slice(&server[r.clone()]),
            Out::Own(b) => bytes.extend_from_slice(b),
        }
    }
    bytes
}

#[test]
fn simple_query_round_trip_ends_idle_and_reports_parameters() {
    let mut r = RelayState::default();
    r.owe(Owed::UntilReady);
    assert!(!r.is_idle(0));
    let mut reply = BytesMut::new();
    be::write_text_row_description(&["a"], &mut reply);
    be::write_data_row(&[Some("1")], &mut reply);
    be::write_command_complete("SELECT 1", &mut reply);
    be::write_parameter_status("TimeZone", "UTC", &mut reply);
    be::write_ready_for_query(TxStatus::Idle, &mut reply);
    let mut seen = Vec::new();
    let mut out = Vec::new();
    let n = r
        .scan(&reply, &mut out, |k, v| {
            seen.push((k.to_string(), v.to_string()))
        })
        .unwrap();
    assert_eq!(n, reply.len());
    assert_eq!(
        out,
        vec![Out::Server(0..reply.len())],
        "forwarded whole, untouched"
    );
    assert_eq!(seen, vec![("TimeZone".to_string(), "UTC".to_string())]);
    assert!(r.is_idle(0));
}

#[test]
fn extended_batch_without_sync_is_not_idle_and_open_transaction_keeps_server() {
    let mut r = RelayState::default();
    r.owe(Owed::Parse { prepared: None });
    r.sent_unanswered(); // Flush
    let (_, _) = relay(&mut r, &msg(b'1', b""));
    assert!(
        !r.is_quiet(),
        "no Sync yet: the implicit transaction is open"
    );
    r.owe(Owed::Ready);
    relay(&mut r, &ready(TxStatus::InTransaction));
    assert!(r.is_quiet());
    assert!(!r.is_idle(0), "open transaction keeps the server");
}

#[test]
fn partial_data_row_streams_through_but_ready_for_query_waits() {
    let mut r = RelayState::default();
    r.owe(Owed::UntilReady);
    let mut b = BytesMut::new();
    let big = "x".repeat(10_000);
    be::write_data_row(&[Some(&big)], &mut b);
    let row_len = b.len();
    be::write_ready_for_query(TxStatus::Idle, &mut b);
    let (sent, n) = relay(&mut r, &b[..4000]);
    assert_eq!((sent.len(), n), (4000, 4000));
    let second = &b[4000..row_len + 3];
    let (sent, n) = relay(&mut r, second);
    assert_eq!((sent.len(), n), (row_len - 4000, row_len - 4000));
    assert!(!r.is_idle(0));
    let (sent, n) = relay(&mut r, &b[row_len..]);
    assert_eq!((sent.len(), n), (6, 6));
    assert!(r.is_idle(0));
}

#[test]
fn injected_parse_reply_is_dropped_and_the_rest_forwarded() {
    let mut r = RelayState::default();
    r.owe(Owed::InjectedParse {
        prepared: "pgrelay_x".into(),
    });
    r.owe(Owed::Bind);
    r.owe(Owed::Execute);
    r.owe(Owed::Ready);
    let mut server = Vec::new();
    for m in [
        msg(b'1', b""),
        msg(b'2', b""),
        msg(b'D', &[0, 0]),
        msg(b'C', b"SELECT 1\0"),
        ready(TxStatus::Idle),
    ] {
        server.extend_from_slice(&m);
    }
    let (sent, n) = relay(&mut r, &server);
    assert_eq!(n, server.len());
    assert_eq!(
        sent,
        server[5..].to_vec(),
        "only the injected ParseComplete is dropped"
    );
    assert!(r.is_idle(0));
    assert!(r.not_prepared.is_empty());
}

#[test]
fn own_answers_come_in_order() {
    let mut r = RelayState::default();
    // Parse (skipped: the server has it), Bind, Close statement (kept), Sync.
    r.owe(Owed::AnswerParseComplete);
    r.owe(Owed::Bind);
    r.owe(Owed::AnswerCloseComplete);
    r.owe(Owed::Ready);
    let mut due = Vec::new();
    r.take_due_answers(&mut due);
    assert_eq!(
        due,
        vec![Out::Own(PARSE_COMPLETE)],
        "due before the server replies"
    );
    let mut server = msg(b'2', b"");
    server.extend_from_slice(&ready(TxStatus::Idle));
    let (sent, _) = relay(&mut r, &server);
    let mut expected = msg(b'2', b"");
    expected.extend_from_slice(CLOSE_COMPLETE);
    expected.extend_from_slice(&ready(TxStatus::Idle));
    assert_eq!(sent, expected);
    assert!(r.is_idle(0));
}

#[test]
fn error_in_extended_protocol_skips_to_sync_and_forgets_unprepared_statements() {
    let mut r = RelayState::default();
    r.owe(Owed::Parse {
        prepared: Some("pgrelay_a".into()),
    });
    r.owe(Owed::InjectedParse {
        prepared: "pgrelay_b".into(),
    });
    r.owe(Owed::Bind);
    r.owe(Owed::AnswerCloseComplete);
    r.owe(Owed::Ready);
    let mut err = BytesMut::new();
    be::write_error(be::Severity::Error, "42601", "syntax error", &mut err);
    let mut server = err.to_vec();
    server.extend_from_slice(&ready(TxStatus::Idle));
    let (sent, _) = relay(&mut r, &server);
    assert_eq!(
        sent, server,
        "error and ReadyForQuery only; no CloseComplete after an error"
    );
    let names: Vec<&str> = r.not_prepared.iter().map(|s| &**s).collect();
    assert_eq!(names, vec!["pgrelay_a", "pgrelay_b"]);
    assert!(r.is_idle(0));
}

#[test]
fn error_in_simple_query_keeps_waiting_for_ready() {
    let mut r = RelayState::default();
    r.owe(Owed::UntilReady);
    let mut err = BytesMut::new();
    be::write_error(be::Severity::Error, "22012", "division by zero", &mut err);
    relay(&mut r, &err);
    assert!(!r.is_quiet());
    relay(&mut r, &ready(TxStatus::Idle));
    assert!(r.is_idle(0));
}

#[test]
fn a_reply_that_matches_no_request_is_a_protocol_error() {
    let mut r = RelayState::default();
    r.owe(Owed::Bind);
    let mut out = Vec::new();
    assert!(r.scan(&msg(b'1', b""), &mut out, |_, _| {}).is_err());
}

#[test]
fn an_emptied_state_is_fresh_but_keeps_its_queue() {
    let mut r = RelayState::default();
    for _ in 0..20 {
        r.owe(Owed::Execute);
    }
    r.tx = TxStatus::InTransaction;
    r.not_prepared.push("pgrelay_x".into());
    let room = r.owed.capacity();
    let r = r.emptied();
    assert!(r.is_idle(0));
    assert!(r.is_synced());
    assert!(r.not_prepared.is_empty());
    assert_eq!(r.owed.capacity(), room, "the allocation is reused");
    let fresh = RelayState::empty().emptied();
    assert!(fresh.owed.capacity() >= 8, "a first release reserves room");
}

#[test]
fn ready_for_query_counts_queries_and_the_transactions_they_close() {
    let mut r = RelayState::default();
    // BEGIN; SELECT 1; COMMIT as three simple queries, and a pipelined pair of
    // extended-protocol Syncs: five queries, two of them ending a transaction.
    for _ in 0..3 {
        r.owe(Owed::UntilReady);
    }
    let mut server = ready(TxStatus::InTransaction);
    server.extend_from_slice(&ready(TxStatus::InTransaction));
    relay(&mut r, &server);
    assert_eq!(
        r.take_completed(),
        Completed {
            queries: 2,
            transactions: 0
        }
    );
    relay(&mut r, &ready(TxStatus::Idle));
    r.owe(Owed::Ready);
    r.owe(Owed::Ready);
    let mut syncs = ready(TxStatus::Idle);
    syncs.extend_from_slice(&ready(TxStatus::Idle));
    relay(&mut r, &syncs);
    assert_eq!(
        r.take_completed(),
        Completed {
            queries: 3,
            transactions: 3
        }
    );
    assert_eq!(r.take_completed(), Completed::default(), "taken once");
    // A failed transaction ('E') is still open until its ROLLBACK.
    r.owe(Owed::UntilReady);
    relay(&mut r, &ready(TxStatus::Failed));
    assert_eq!(r.take_completed().transactions, 0);
}

#[test]
fn a_parameter_value_in_another_encoding_is_forwarded_but_not_tracked() {
    let mut r = RelayState::default();
    r.owe(Owed::UntilReady);
    // session_authorization for a role named "josé", as a LATIN1 client gets it.
    let mut reply = msg(b'S', b"session_authorization\0jos\xe9\0");
    reply.extend_from_slice(&msg(b'S', b"TimeZone\0UTC\0"));
    reply.extend_from_slice(&ready(TxStatus::Idle));
    let (out, n, seen) = relay_tracking(&mut r, &reply);
    assert_eq!(n, reply.len());
    assert_eq!(out, reply, "forwarded whole, untouched");
    assert_eq!(seen, vec![("TimeZone".to_string(), "UTC".to_string())]);
    assert!(r.is_idle(0));
}
