use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::BytesMut;

use super::*;
use crate::admin::rows::*;
use crate::cluster::health::HealthState;
use crate::config::{PoolMode, MASK};
use crate::protocol::backend::{error_fields, tag};
use crate::protocol::framing::{check, Frame, Reader};

/// A SHOW result decoded back from the bytes `render` wrote.
#[derive(Debug, Default)]
struct Decoded {
    columns: Vec<String>,
    rows: Vec<Vec<Option<String>>>,
    notices: Vec<String>,
    complete: Option<String>,
}

impl Decoded {
    fn column(&self, row: usize, name: &str) -> Option<&str> {
        let i = self
            .columns
            .iter()
            .position(|c| c == name)
            .unwrap_or_else(|| panic!("no column {name} in {:?}", self.columns));
        self.rows[row][i].as_deref()
    }
}

fn decode(mut buf: &[u8]) -> Decoded {
    let mut out = Decoded::default();
    while !buf.is_empty() {
        let len = check(buf, 1 << 20).unwrap().expect("whole message");
        let frame = Frame::new(&buf[..len]);
        let mut r = Reader::new(frame.body, "test");
        match frame.tag {
            tag::ROW_DESCRIPTION => {
                let n = r.i16().unwrap();
                for _ in 0..n {
                    out.columns.push(r.cstr().unwrap().to_string());
                    r.take(4 + 2).unwrap();
                    assert_eq!(r.i32().unwrap(), 25, "columns are text");
                    r.take(2 + 4 + 2).unwrap();
                }
            }
            tag::DATA_ROW => {
                let n = r.i16().unwrap();
                let row = (0..n)
                    .map(|_| match r.i32().unwrap() {
                        -1 => None,
                        len => {
                            Some(String::from_utf8(r.take(len as usize).unwrap().to_vec()).unwrap())
                        }
                    })
                    .collect();
                out.rows.push(row);
            }
            tag::NOTICE_RESPONSE => out.notices.push(error_fields(frame.body).unwrap().message),
            tag::COMMAND_COMPLETE => out.complete = Some(r.cstr().unwrap().to_string()),
            other => panic!("unexpected message {:?}", other as char),
        }
        buf = &buf[len..];
    }
    out
}

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn at(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(secs)
}

struct Stub;

impl AdminView for Stub {
    fn users(&self) -> Vec<UserRow> {
        vec![UserRow {
            name: "alice".into(),
            pool_mode: None,
            max_user_connections: 40,
            current_connections: 6,
        }]
    }

    fn state(&self) -> PoolerState {
        PoolerState::Paused
    }

    fn pools(&self) -> Vec<PoolRow> {
        vec![PoolRow {
            database: "app".into(),
            user: "alice".into(),
            cl_active: 7,
            cl_waiting: 2,
            cl_active_cancel_req: 0,
            cl_waiting_cancel_req: 0,
            sv_active: 5,
            sv_active_cancel: 0,
            sv_being_canceled: 0,
            sv_idle: 3,
            sv_used: 0,
            sv_tested: 0,
            sv_login: 1,
            max_wait: Duration::from_micros(2_500_017),
            pool_mode: PoolMode::Transaction,
        }]
    }

    fn databases(&self) -> Vec<DatabaseRow> {
        vec![DatabaseRow {
            name: "app".into(),
            host: Some("127.0.0.1".into()),
            port: 5432,
            database: "app_prod".into(),
            force_user: None,
            pool_size: 20,
            min_pool_size: 0,
            reserve_pool: 5,
            pool_mode: None,
            max_connections: 0,
            current_connections: 9,
            paused: true,
            disabled: false,
        }]
    }

    fn config(&self) -> Vec<ConfigRow> {
        vec![
            ConfigRow {
                key: "max_client_conn".into(),
                value: "100".into(),
                default: "100".into(),
                changeable: true,
            },
            ConfigRow {
                key: "server_password".into(),
                value: "leaked".into(),
                default: String::new(),
                changeable: true,
            },
        ]
    }

    fn clients(&self) -> Vec<ClientRow> {
        vec![ClientRow {
            id: 0x2a,
            user: "alice".into(),
            database: "app".into(),
            state: ClientState::Waiting,
            peer: addr("127.0.0.9:40001"),
            local: addr("127.0.0.1:6432"),
            connect_time: at(1_700_000_000),
            request_time: at(1_700_000_005),
            wait: Duration::from_micros(1_000_500),
            link: None,
            tls: String::new(),
            application_name: "psql".into(),
            prepared_statements: 3,
        }]
    }

    fn servers(&self) -> Vec<ServerRow> {
        vec![ServerRow {
            id: 0x10,
            user: "alice".into(),
            database: "app".into(),
            state: ServerState::Active,
            addr: addr("[::1]:5432"),
            local: None,
            connect_time: at(1_700_000_000),
            request_time: at(1_700_000_001),
            close_needed: true,
            link: Some(0x2a),
            remote_pid: 4242,
            tls: "TLSv1.3".into(),
            application_name: "psql".into(),
            prepared_statements: 1,
        }]
    }

    fn stats(&self) -> Vec<StatsRow> {
        vec![StatsRow {
            database: "app".into(),
            total_xact_count: 11,
            total_query_count: 22,
            avg_bind_count: 9,
            ..StatsRow::default()
        }]
    }

    fn version(&self) -> String {
        "pgrelay 0.1.0".into()
    }

    fn replicas(&self) -> Vec<ReplicaRow> {
        vec![ReplicaRow {
            database: "app".into(),
            group: "reports".into(),
            host: "127.0.0.3".into(),
            port: 5432,
            state: HealthState::Healthy,
            lag_bytes: Some(128),
            lag: None,
            weight: 3,
            outstanding: 4,
            latency: Some(Duration::from_micros(850)),
            servers: 2,
        }]
    }
}

fn show(cmd: AdminCommand) -> Decoded {
    let mut out = BytesMut::new();
    assert_eq!(render(&cmd, &Stub, &mut out), Ok(AdminOutcome::Shown));
    let decoded = decode(&out);
    assert_eq!(decoded.complete.as_deref(), Some("SHOW"), "{cmd:?}");
    decoded
}

#[test]
fn show_pools_has_pgbouncer_columns_and_splits_maxwait() {
    let d = show(AdminCommand::ShowPools);
    assert_eq!(
        d.columns,
        [
            "database",
            "user",
            "cl_active",
            "cl_waiting",
            "cl_active_cancel_req",
            "cl_waiting_cancel_req",
            "sv_active",
            "sv_active_cancel",
            "sv_being_canceled",
            "sv_idle",
            "sv_used",
            "sv_tested",
            "sv_login",
            "maxwait",
            "maxwait_us",
            "pool_mode"
        ]
    );
    assert_eq!(d.rows.len(), 1);
    assert_eq!(d.column(0, "cl_waiting"), Some("2"));
    assert_eq!(d.column(0, "sv_login"), Some("1"));
    assert_eq!(d.column(0, "maxwait"), Some("2"));
    assert_eq!(d.column(0, "maxwait_us"), Some("500017"));
    assert_eq!(d.column(0, "pool_mode"), Some("transaction"));
}

#[test]
fn show_databases_uses_null_for_unset_and_flags_as_digits() {
    let d = show(AdminCommand::ShowDatabases);
    assert_eq!(d.columns.len(), 13);
    assert_eq!(d.column(0, "database"), Some("app_prod"));
    assert_eq!(d.column(0, "force_user"), None);
    assert_eq!(d.column(0, "pool_mode"), None);
    assert_eq!(d.column(0, "reserve_pool"), Some("5"));
    assert_eq!(d.column(0, "paused"), Some("1"));
    assert_eq!(d.column(0, "disabled"), Some("0"));
}

#[test]
fn show_clients_and_servers_link_to_each_other() {
    let clients = show(AdminCommand::ShowClients);
    let servers = show(AdminCommand::ShowServers);
    assert_eq!(clients.columns, servers.columns);
    assert_eq!(clients.columns.len(), 19);
    assert_eq!(clients.column(0, "type"), Some("C"));
    assert_eq!(clients.column(0, "state"), Some("waiting"));
    assert_eq!(clients.column(0, "addr"), Some("127.0.0.9"));
    assert_eq!(clients.column(0, "port"), Some("40001"));
    assert_eq!(
        clients.column(0, "connect_time"),
        Some("2023-11-14 22:13:20 UTC")
    );
    assert_eq!(clients.column(0, "wait"), Some("1"));
    assert_eq!(clients.column(0, "wait_us"), Some("500"));
    assert_eq!(clients.column(0, "link"), Some(""));
    assert_eq!(clients.column(0, "prepared_statements"), Some("3"));

    assert_eq!(servers.column(0, "type"), Some("S"));
    assert_eq!(servers.column(0, "addr"), Some("::1"));
    assert_eq!(servers.column(0, "local_addr"), None);
    assert_eq!(servers.column(0, "close_needed"), Some("1"));
    assert_eq!(servers.column(0, "remote_pid"), Some("4242"));
    assert_eq!(servers.column(0, "link"), clients.column(0, "ptr"));
    assert_eq!(servers.column(0, "ptr"), Some("0x10"));
}

#[test]
fn show_stats_has_totals_then_averages() {
    let d = show(AdminCommand::ShowStats);
    assert_eq!(d.columns.len(), 23);
    assert_eq!(d.columns[0], "database");
    assert!(d.columns[1..12].iter().all(|c| c.starts_with("total_")));
    assert!(d.columns[12..].iter().all(|c| c.starts_with("avg_")));
    assert_eq!(d.column(0, "total_xact_count"), Some("11"));
    assert_eq!(d.column(0, "total_query_count"), Some("22"));
    assert_eq!(d.column(0, "avg_bind_count"), Some("9"));
    assert_eq!(d.column(0, "total_sent"), Some("0"));
}

#[test]
fn show_stats_totals_and_averages_are_the_halves_of_show_stats() {
    let totals = show(AdminCommand::ShowStatsTotals);
    let averages = show(AdminCommand::ShowStatsAverages);
    for d in [&totals, &averages] {
        assert_eq!(d.columns.len(), 12);
        assert_eq!(d.columns[0], "database");
        assert!(d.columns.contains(&"bytes_received".to_string()));
        assert!(d
            .columns
            .iter()
            .all(|c| !c.starts_with("total_") && !c.starts_with("avg_")));
        assert_eq!(d.column(0, "database"), Some("app"));
    }
    assert_eq!(totals.column(0, "xact_count"), Some("11"));
    assert_eq!(totals.column(0, "query_count"), Some("22"));
    assert_eq!(totals.column(0, "bind_count"), Some("0"));
    assert_eq!(averages.column(0, "xact_count"), Some("0"));
    assert_eq!(averages.column(0, "bind_count"), Some("9"));
    assert_eq!(totals.complete.as_deref(), Some("SHOW"));
}

#[test]
fn show_totals_is_one_name_and_value_row_per_figure() {
    let d = show(AdminCommand::ShowTotals);
    assert_eq!(d.columns, ["name", "value"]);
    assert_eq!(d.rows.len(), 22);
    let value = |name: &str| {
        d.rows
            .iter()
            .find(|r| r[0].as_deref() == Some(name))
            .and_then(|r| r[1].clone())
            .unwrap_or_else(|| panic!("no {name} row"))
    };
    assert_eq!(value("total_xact_count"), "11");
    assert_eq!(value("total_query_count"), "22");
    assert_eq!(value("total_client_bytes"), "0");
    assert_eq!(value("avg_bind_count"), "9");
}

#[test]
fn totals_add_rates_and_weight_times_by_their_items() {
    let row = |xacts_per_s: u64, xact_us: u64, total: u64| StatsRow {
        database: "db".into(),
        total_xact_count: total,
        avg_xact_count: xacts_per_s,
        avg_xact_time: xact_us,
        avg_recv: 100,
        ..StatsRow::default()
    };
    let sum = crate::admin::rows::sum_stats(&[row(30, 1_000, 5), row(10, 5_000, 7)]);
    assert_eq!(sum.total_xact_count, 12);
    assert_eq!(sum.avg_xact_count, 40);
    assert_eq!(sum.avg_recv, 200);
    // (30 × 1,000 + 10 × 5,000) / 40, not the mean of the two averages (3,000).
    assert_eq!(sum.avg_xact_time, 2_000);
    assert_eq!(
        sum.avg_query_time, 0,
        "no queries: no average, not a division by zero"
    );
    assert_eq!(crate::admin::rows::sum_stats(&[]), StatsRow::default());
}

#[test]
fn show_config_masks_passwords() {
    let d = show(AdminCommand::ShowConfig);
    assert_eq!(d.columns, ["key", "value", "default", "changeable"]);
    assert_eq!(d.column(0, "value"), Some("100"));
    assert_eq!(d.column(0, "changeable"), Some("yes"));
    assert_eq!(d.column(1, "key"), Some("server_password"));
    assert_eq!(d.column(1, "value"), Some(MASK));
}

#[test]
fn show_version_and_lists() {
    let d = show(AdminCommand::ShowVersion);
    assert_eq!(d.columns, ["version"]);
    assert_eq!(d.rows, [[Some("pgrelay 0.1.0".to_string())]]);

    let d = show(AdminCommand::ShowLists);
    assert_eq!(d.columns, ["list", "items"]);
    assert_eq!(d.rows.len(), 14);
    let item = |name: &str| {
        d.rows
            .iter()
            .find(|r| r[0].as_deref() == Some(name))
            .and_then(|r| r[1].clone())
    };
    // Derived by the default `lists()` from the stub's other methods.
    assert_eq!(item("databases").as_deref(), Some("1"));
    assert_eq!(item("users").as_deref(), Some("1"));
    assert_eq!(item("used_clients").as_deref(), Some("1"));
    assert_eq!(item("used_servers").as_deref(), Some("1"));
    assert_eq!(item("dns_pending").as_deref(), Some("0"));
}

#[test]
fn show_replicas_shows_state_lag_and_balancing() {
    let d = show(AdminCommand::ShowReplicas);
    assert_eq!(d.column(0, "group"), Some("reports"));
    assert_eq!(d.column(0, "state"), Some("healthy"));
    assert_eq!(d.column(0, "lag_bytes"), Some("128"));
    assert_eq!(d.column(0, "lag_ms"), None);
    assert_eq!(d.column(0, "weight"), Some("3"));
    assert_eq!(d.column(0, "outstanding"), Some("4"));
    assert_eq!(d.column(0, "latency_us"), Some("850"));
}

#[test]
fn show_users_has_pgbouncer_columns_and_null_pool_mode() {
    let d = show(AdminCommand::ShowUsers);
    assert_eq!(
        d.columns,
        [
            "name",
            "pool_mode",
            "max_user_connections",
            "current_connections"
        ]
    );
    assert_eq!(
        d.rows,
        [[
            Some("alice".to_string()),
            None,
            Some("40".to_string()),
            Some("6".to_string())
        ]]
    );
}

#[test]
fn show_state_is_three_yes_no_rows() {
    let d = show(AdminCommand::ShowState);
    assert_eq!(d.columns, ["key", "value"]);
    let rows: Vec<(&str, &str)> = d
        .rows
        .iter()
        .map(|r| (r[0].as_deref().unwrap(), r[1].as_deref().unwrap()))
        .collect();
    assert_eq!(
        rows,
        [("active", "no"), ("paused", "yes"), ("suspended", "no")]
    );
    let active = PoolerState::Active.cells();
    assert_eq!(active[0][1].as_deref(), Some("yes"));
    assert_eq!(active[1][1].as_deref(), Some("no"));
}

#[test]
fn show_help_is_a_notice() {
    let d = show(AdminCommand::ShowHelp);
    assert!(d.columns.is_empty());
    assert_eq!(d.notices.len(), 1);
    assert!(d.notices[0].contains("SHOW HELP|POOLS"), "{}", d.notices[0]);
}

#[test]
fn empty_views_still_describe_their_columns() {
    struct Empty;
    impl AdminView for Empty {
        fn pools(&self) -> Vec<PoolRow> {
            Vec::new()
        }
        fn databases(&self) -> Vec<DatabaseRow> {
            Vec::new()
        }
        fn config(&self) -> Vec<ConfigRow> {
            Vec::new()
        }
        fn clients(&self) -> Vec<ClientRow> {
            Vec::new()
        }
        fn servers(&self) -> Vec<ServerRow> {
            Vec::new()
        }
        fn stats(&self) -> Vec<StatsRow> {
            Vec::new()
        }
        fn version(&self) -> String {
            String::new()
        }
        fn users(&self) -> Vec<UserRow> {
            Vec::new()
        }
        fn state(&self) -> PoolerState {
            PoolerState::Active
        }
    }
    let mut out = BytesMut::new();
    render(&AdminCommand::ShowReplicas, &Empty, &mut out).unwrap();
    let d = decode(&out);
    assert_eq!(d.columns.len(), 11);
    assert!(d.rows.is_empty());
    assert_eq!(d.complete.as_deref(), Some("SHOW"));
}

#[test]
fn side_effect_commands_write_nothing() {
    let cases = [
        (AdminCommand::Reload, AdminOutcome::Reload),
        (
            AdminCommand::Pause(Some("app".into())),
            AdminOutcome::Pause(Some("app".into())),
        ),
        (AdminCommand::Resume(None), AdminOutcome::Resume(None)),
        (AdminCommand::Shutdown, AdminOutcome::Shutdown),
    ];
    for (cmd, want) in cases {
        let mut out = BytesMut::new();
        assert_eq!(render(&cmd, &Stub, &mut out), Ok(want));
        assert!(out.is_empty(), "{cmd:?}");
    }
}

#[test]
fn server_states_are_pgbouncer_words() {
    assert_eq!(ServerState::BeingCanceled.as_str(), "being_canceled");
    assert_eq!(ServerState::New.as_str(), "new");
    assert_eq!(ClientState::WaitingCancelReq.as_str(), "waiting_cancel_req");
}
