//! The admin console end to end without a socket: a statement goes through
//! parse → authorize → render the way the session will drive it, and the
//! bytes are read back with postgres-protocol's decoder (independent of
//! pgrelay's own framing) as a client library would read them.

use std::time::Duration;

use bytes::BytesMut;
use fallible_iterator::FallibleIterator;
use postgres_protocol::message::backend::Message;

use pgrelay::admin::{
    authorize, render, AdminCommand, AdminOutcome, AdminView, ClientRow, ConfigRow, DatabaseRow,
    PoolRow, PoolerState, Privilege, ServerRow, StatsRow, UserRow,
};
use pgrelay::config::PoolMode;
use pgrelay::protocol::backend::{
    write_command_complete, write_error, write_ready_for_query, Severity, TxStatus,
};

struct OnePool;

impl AdminView for OnePool {
    fn pools(&self) -> Vec<PoolRow> {
        vec![PoolRow {
            database: "app".into(),
            user: "alice".into(),
            cl_active: 4,
            cl_waiting: 1,
            cl_active_cancel_req: 0,
            cl_waiting_cancel_req: 0,
            sv_active: 4,
            sv_active_cancel: 0,
            sv_being_canceled: 0,
            sv_idle: 0,
            sv_used: 0,
            sv_tested: 0,
            sv_login: 0,
            max_wait: Duration::from_millis(1_250),
            pool_mode: PoolMode::Session,
        }]
    }
    fn databases(&self) -> Vec<DatabaseRow> {
        vec![DatabaseRow {
            name: "app".into(),
            host: Some("127.0.0.1".into()),
            port: 5432,
            database: "app".into(),
            force_user: Some("alice".into()),
            pool_size: 4,
            min_pool_size: 0,
            reserve_pool: 0,
            pool_mode: Some(PoolMode::Session),
            max_connections: 10,
            current_connections: 4,
            paused: false,
            disabled: false,
        }]
    }
    fn config(&self) -> Vec<ConfigRow> {
        vec![ConfigRow {
            key: "max_client_conn".into(),
            value: "500".into(),
            default: "100".into(),
            changeable: true,
        }]
    }
    fn clients(&self) -> Vec<ClientRow> {
        Vec::new()
    }
    fn servers(&self) -> Vec<ServerRow> {
        Vec::new()
    }
    fn stats(&self) -> Vec<StatsRow> {
        vec![StatsRow {
            database: "app".into(),
            total_query_count: 1_000,
            ..StatsRow::default()
        }]
    }
    fn version(&self) -> String {
        "pgrelay test".into()
    }
    fn users(&self) -> Vec<UserRow> {
        Vec::new()
    }
    fn state(&self) -> PoolerState {
        PoolerState::Active
    }
}

/// What the session's console loop will do with one simple Query.
fn console_turn(sql: &str, privilege: Privilege) -> BytesMut {
    let mut out = BytesMut::new();
    let result = AdminCommand::parse(sql).and_then(|cmd| {
        authorize(&cmd, privilege)?;
        let outcome = render(&cmd, &OnePool, &mut out)?;
        Ok((cmd, outcome))
    });
    match result {
        Ok((_, AdminOutcome::Shown)) => {}
        // The side effect would happen here; then the command's own tag.
        Ok((cmd, _)) => write_command_complete(cmd.command_tag(), &mut out),
        Err(err) => write_error(Severity::Error, err.sqlstate(), &err.to_string(), &mut out),
    }
    write_ready_for_query(TxStatus::Idle, &mut out);
    out
}

/// The reply as a client sees it.
#[derive(Debug, Default)]
struct Reply {
    columns: Vec<(String, u32)>,
    rows: Vec<Vec<Option<String>>>,
    tag: Option<String>,
    error: Option<(String, String)>,
    ready: bool,
}

impl Reply {
    fn names(&self) -> Vec<&str> {
        self.columns.iter().map(|(n, _)| n.as_str()).collect()
    }
}

fn read_reply(mut buf: BytesMut) -> Reply {
    let mut reply = Reply::default();
    while let Some(msg) = Message::parse(&mut buf).expect("well-formed message") {
        assert!(!reply.ready, "nothing may follow ReadyForQuery");
        match msg {
            Message::RowDescription(body) => {
                reply.columns = body
                    .fields()
                    .map(|f| Ok((f.name().to_string(), f.type_oid())))
                    .collect()
                    .unwrap();
            }
            Message::DataRow(body) => {
                let data = body.buffer();
                let row = body
                    .ranges()
                    .map(
                        |r| Ok(r.map(|r| String::from_utf8(data[r].to_vec()).expect("utf-8 cell"))),
                    )
                    .collect()
                    .unwrap();
                reply.rows.push(row);
            }
            Message::CommandComplete(body) => reply.tag = Some(body.tag().unwrap().to_string()),
            Message::ErrorResponse(body) => {
                let mut code = String::new();
                let mut message = String::new();
                let mut fields = body.fields();
                while let Some(field) = fields.next().unwrap() {
                    match field.type_() {
                        b'C' => code = String::from_utf8_lossy(field.value_bytes()).into_owned(),
                        b'M' => message = String::from_utf8_lossy(field.value_bytes()).into_owned(),
                        _ => {}
                    }
                }
                reply.error = Some((code, message));
            }
            Message::ReadyForQuery(_) => reply.ready = true,
            _ => panic!("unexpected message in a console reply"),
        }
    }
    assert!(buf.is_empty(), "trailing bytes");
    assert!(reply.ready, "reply ends with ReadyForQuery");
    reply
}

#[test]
fn stats_user_reads_pools_as_text_columns() {
    let reply = read_reply(console_turn("show pools;", Privilege::Stats));
    assert_eq!(reply.tag.as_deref(), Some("SHOW"));
    assert!(reply.columns.iter().all(|(_, oid)| *oid == 25), "all text");
    let names = reply.names();
    let at = |name: &str| names.iter().position(|n| *n == name).unwrap();
    assert_eq!(reply.rows.len(), 1);
    let row = &reply.rows[0];
    assert_eq!(row[at("database")].as_deref(), Some("app"));
    assert_eq!(row[at("cl_waiting")].as_deref(), Some("1"));
    assert_eq!(row[at("maxwait")].as_deref(), Some("1"));
    assert_eq!(row[at("maxwait_us")].as_deref(), Some("250000"));
    assert_eq!(row[at("pool_mode")].as_deref(), Some("session"));
}

#[test]
fn stats_user_cannot_pause_but_admin_can() {
    let reply = read_reply(console_turn("PAUSE app", Privilege::Stats));
    let (code, message) = reply.error.expect("an error");
    assert_eq!(code, "42501");
    assert!(message.contains("admin"), "{message}");
    assert!(reply.tag.is_none());

    let reply = read_reply(console_turn("PAUSE app", Privilege::Admin));
    assert!(reply.error.is_none());
    assert_eq!(reply.tag.as_deref(), Some("PAUSE"));
    assert!(reply.columns.is_empty());
}

#[test]
fn unknown_command_is_a_syntax_error_and_the_session_goes_on() {
    let reply = read_reply(console_turn("SELECT * FROM pools", Privilege::Admin));
    let (code, message) = reply.error.expect("an error");
    assert_eq!(code, "42601");
    assert!(message.contains("SHOW HELP"), "{message}");
}

/// The columns pgbouncer_exporter reads from each SHOW (by name).
#[test]
fn exporter_columns_are_present() {
    let expect = [
        (
            "SHOW STATS",
            &[
                "database",
                "total_xact_count",
                "total_query_count",
                "total_received",
                "total_sent",
                "total_xact_time",
                "total_query_time",
                "total_wait_time",
                "total_server_assignment_count",
            ][..],
        ),
        (
            "SHOW POOLS",
            &[
                "database",
                "user",
                "cl_active",
                "cl_waiting",
                "sv_active",
                "sv_idle",
                "sv_used",
                "sv_tested",
                "sv_login",
                "maxwait",
                "maxwait_us",
                "pool_mode",
            ][..],
        ),
        (
            "SHOW DATABASES",
            &[
                "name",
                "host",
                "port",
                "database",
                "force_user",
                "pool_size",
                "reserve_pool",
                "pool_mode",
                "max_connections",
                "current_connections",
                "paused",
                "disabled",
            ][..],
        ),
        ("SHOW LISTS", &["list", "items"][..]),
        (
            "SHOW CONFIG",
            &["key", "value", "default", "changeable"][..],
        ),
        ("SHOW VERSION", &["version"][..]),
    ];
    for (sql, wanted) in expect {
        let reply = read_reply(console_turn(sql, Privilege::Stats));
        let names = reply.names();
        for column in wanted {
            assert!(names.contains(column), "{sql} lacks {column}: {names:?}");
        }
    }
    let stats = read_reply(console_turn("SHOW STATS", Privilege::Stats));
    let at = stats
        .names()
        .iter()
        .position(|n| *n == "total_query_count")
        .unwrap();
    assert_eq!(stats.rows[0][at].as_deref(), Some("1000"));
}
