//! Column lists and cell text for each `SHOW`.
//!
//! Column names and order follow PgBouncer 1.22's admin console (from its
//! documentation, doc/usage.md, minus columns added after 1.22 such as
//! `replication`, `id`, `server_lifetime` and `load_balance_hosts`).
//! Every cell is text; NULL where PgBouncer shows NULL.

use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::rows::{
    ClientRow, ConfigRow, DatabaseRow, ListsRow, PoolRow, PoolerState, ReplicaRow, ServerRow,
    StatsRow, UserRow,
};
use crate::config::MASK;

pub(super) type Cell = Option<String>;

/// A row type and the columns it fills, in order.
pub(super) trait Table {
    const COLUMNS: &'static [&'static str];
    fn cells(&self) -> Vec<Cell>;
}

fn num(n: impl ToString) -> Cell {
    Some(n.to_string())
}

fn text(s: &str) -> Cell {
    Some(s.to_string())
}

fn flag(b: bool) -> Cell {
    num(u8::from(b))
}

/// PgBouncer splits waits into whole seconds and the microsecond remainder.
fn wait_cells(wait: Duration) -> [Cell; 2] {
    [num(wait.as_secs()), num(wait.subsec_micros())]
}

/// Ids shown the way PgBouncer shows object addresses, so `link` of one
/// table can be looked up in `ptr` of the other.
fn ptr(id: u64) -> Cell {
    Some(format!("0x{id:x}"))
}

fn link(id: Option<u64>) -> Cell {
    Some(id.map(|id| format!("0x{id:x}")).unwrap_or_default())
}

fn addr_cells(addr: SocketAddr) -> [Cell; 2] {
    [num(addr.ip()), num(addr.port())]
}

/// `YYYY-MM-DD HH:MM:SS UTC`, as PgBouncer prints connection times.
pub(super) fn timestamp(t: SystemTime) -> String {
    let secs = t.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02} UTC",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Proleptic Gregorian date of a day count since 1970-01-01 (H. Hinnant's
/// algorithm), to avoid a date crate for one column format.
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

/// Keys whose values must never be shown, even if the view forgot to mask
/// (the same rule as the configuration's own: the name says password).
fn is_secret_key(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    key.contains("password") || key.contains("secret")
}

impl Table for PoolRow {
    const COLUMNS: &'static [&'static str] = &[
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
        "pool_mode",
    ];

    fn cells(&self) -> Vec<Cell> {
        let mut cells = vec![
            text(&self.database),
            text(&self.user),
            num(self.cl_active),
            num(self.cl_waiting),
            num(self.cl_active_cancel_req),
            num(self.cl_waiting_cancel_req),
            num(self.sv_active),
            num(self.sv_active_cancel),
            num(self.sv_being_canceled),
            num(self.sv_idle),
            num(self.sv_used),
            num(self.sv_tested),
            num(self.sv_login),
        ];
        cells.extend(wait_cells(self.max_wait));
        cells.push(text(self.pool_mode.as_str()));
        cells
    }
}

impl Table for DatabaseRow {
    const COLUMNS: &'static [&'static str] = &[
        "name",
        "host",
        "port",
        "database",
        "force_user",
        "pool_size",
        "min_pool_size",
        "reserve_pool",
        "pool_mode",
        "max_connections",
        "current_connections",
        "paused",
        "disabled",
    ];

    fn cells(&self) -> Vec<Cell> {
        vec![
            text(&self.name),
            self.host.clone(),
            num(self.port),
            text(&self.database),
            self.force_user.clone(),
            num(self.pool_size),
            num(self.min_pool_size),
            num(self.reserve_pool),
            self.pool_mode.map(|m| m.as_str().to_string()),
            num(self.max_connections),
            num(self.current_connections),
            flag(self.paused),
            flag(self.disabled),
        ]
    }
}

impl Table for UserRow {
    const COLUMNS: &'static [&'static str] = &[
        "name",
        "pool_mode",
        "max_user_connections",
        "current_connections",
    ];

    fn cells(&self) -> Vec<Cell> {
        vec![
            text(&self.name),
            self.pool_mode.map(|m| m.as_str().to_string()),
            num(self.max_user_connections),
            num(self.current_connections),
        ]
    }
}

pub(super) const STATE_COLUMNS: &[&str] = &["key", "value"];

impl PoolerState {
    /// `SHOW STATE`'s (key, yes/no) rows, in PgBouncer's order.
    pub(super) fn cells(self) -> Vec<Vec<Cell>> {
        let yes_no = |b: bool| text(if b { "yes" } else { "no" });
        [
            ("active", self == PoolerState::Active),
            ("paused", self == PoolerState::Paused),
            ("suspended", false),
        ]
        .into_iter()
        .map(|(key, on)| vec![text(key), yes_no(on)])
        .collect()
    }
}

impl Table for ConfigRow {
    const COLUMNS: &'static [&'static str] = &["key", "value", "default", "changeable"];

    fn cells(&self) -> Vec<Cell> {
        let secret = is_secret_key(&self.key);
        let shown = |v: &str| text(if secret && !v.is_empty() { MASK } else { v });
        vec![
            text(&self.key),
            shown(&self.value),
            shown(&self.default),
            text(if self.changeable { "yes" } else { "no" }),
        ]
    }
}

/// SHOW CLIENTS and SHOW SERVERS share their columns.
const CONNECTION_COLUMNS: &[&str] = &[
    "type",
    "user",
    "database",
    "state",
    "addr",
    "port",
    "local_addr",
    "local_port",
    "connect_time",
    "request_time",
    "wait",
    "wait_us",
    "close_needed",
    "ptr",
    "link",
    "remote_pid",
    "tls",
    "application_name",
    "prepared_statements",
];

/// The columns CLIENTS and SERVERS fill alike, up to `wait_us`.
struct ConnectionHead<'a> {
    kind: &'static str,
    user: &'a str,
    database: &'a str,
    state: &'static str,
    remote: SocketAddr,
    local: Option<SocketAddr>,
    connect_time: SystemTime,
    request_time: SystemTime,
    wait: Duration,
}

impl ConnectionHead<'_> {
    fn cells(&self) -> Vec<Cell> {
        let mut cells = vec![
            text(self.kind),
            text(self.user),
            text(self.database),
            text(self.state),
        ];
        cells.extend(addr_cells(self.remote));
        match self.local {
            Some(local) => cells.extend(addr_cells(local)),
            None => cells.extend([None, None]),
        }
        cells.push(text(&timestamp(self.connect_time)));
        cells.push(text(&timestamp(self.request_time)));
        cells.extend(wait_cells(self.wait));
        cells
    }
}

impl Table for ClientRow {
    const COLUMNS: &'static [&'static str] = CONNECTION_COLUMNS;

    fn cells(&self) -> Vec<Cell> {
        let mut cells = ConnectionHead {
            kind: "C",
            user: &self.user,
            database: &self.database,
            state: self.state.as_str(),
            remote: self.peer,
            local: Some(self.local),
            connect_time: self.connect_time,
            request_time: self.request_time,
            wait: self.wait,
        }
        .cells();
        cells.extend([
            num(0), // close_needed: servers only
            ptr(self.id),
            link(self.link),
            num(0), // remote_pid: only known for Unix-socket peers
            text(&self.tls),
            text(&self.application_name),
            num(self.prepared_statements),
        ]);
        cells
    }
}

impl Table for ServerRow {
    const COLUMNS: &'static [&'static str] = CONNECTION_COLUMNS;

    fn cells(&self) -> Vec<Cell> {
        let mut cells = ConnectionHead {
            kind: "S",
            user: &self.user,
            database: &self.database,
            state: self.state.as_str(),
            remote: self.addr,
            local: self.local,
            connect_time: self.connect_time,
            request_time: self.request_time,
            wait: Duration::ZERO, // servers never wait
        }
        .cells();
        cells.extend([
            flag(self.close_needed),
            ptr(self.id),
            link(self.link),
            num(self.remote_pid),
            text(&self.tls),
            text(&self.application_name),
            num(self.prepared_statements),
        ]);
        cells
    }
}

impl Table for StatsRow {
    const COLUMNS: &'static [&'static str] = &[
        "database",
        "total_server_assignment_count",
        "total_xact_count",
        "total_query_count",
        "total_received",
        "total_sent",
        "total_xact_time",
        "total_query_time",
        "total_wait_time",
        "total_client_parse_count",
        "total_server_parse_count",
        "total_bind_count",
        "avg_server_assignment_count",
        "avg_xact_count",
        "avg_query_count",
        "avg_recv",
        "avg_sent",
        "avg_xact_time",
        "avg_query_time",
        "avg_wait_time",
        "avg_client_parse_count",
        "avg_server_parse_count",
        "avg_bind_count",
    ];

    fn cells(&self) -> Vec<Cell> {
        std::iter::once(text(&self.database))
            .chain(self.totals().into_iter().map(num))
            .chain(self.averages().into_iter().map(num))
            .collect()
    }
}

/// `SHOW STATS_TOTALS` and `SHOW STATS_AVERAGES`: `SHOW STATS`' two halves,
/// named as PgBouncer names them there.
pub(super) const STATS_SPLIT_COLUMNS: &[&str] = &[
    "database",
    "server_assignment_count",
    "xact_count",
    "query_count",
    "bytes_received",
    "bytes_sent",
    "xact_time",
    "query_time",
    "wait_time",
    "client_parse_count",
    "server_parse_count",
    "bind_count",
];

/// `SHOW TOTALS` is a (name, value) pair per row.
pub(super) const TOTALS_COLUMNS: &[&str] = &["name", "value"];

/// `SHOW TOTALS`' row names after their `total_`/`avg_` prefix: the split
/// columns', except that bytes from clients are `client_bytes` and bytes to
/// them `server_bytes`, as in PgBouncer.
fn totals_name(split_column: &str) -> &str {
    match split_column {
        "bytes_received" => "client_bytes",
        "bytes_sent" => "server_bytes",
        other => other,
    }
}

impl StatsRow {
    /// The `total_*` counters, in column order.
    fn totals(&self) -> [u64; 11] {
        [
            self.total_server_assignment_count,
            self.total_xact_count,
            self.total_query_count,
            self.total_received,
            self.total_sent,
            self.total_xact_time,
            self.total_query_time,
            self.total_wait_time,
            self.total_client_parse_count,
            self.total_server_parse_count,
            self.total_bind_count,
        ]
    }

    /// The `avg_*` figures, in column order.
    fn averages(&self) -> [u64; 11] {
        [
            self.avg_server_assignment_count,
            self.avg_xact_count,
            self.avg_query_count,
            self.avg_recv,
            self.avg_sent,
            self.avg_xact_time,
            self.avg_query_time,
            self.avg_wait_time,
            self.avg_client_parse_count,
            self.avg_server_parse_count,
            self.avg_bind_count,
        ]
    }

    pub(super) fn totals_cells(&self) -> Vec<Cell> {
        std::iter::once(text(&self.database))
            .chain(self.totals().into_iter().map(num))
            .collect()
    }

    pub(super) fn averages_cells(&self) -> Vec<Cell> {
        std::iter::once(text(&self.database))
            .chain(self.averages().into_iter().map(num))
            .collect()
    }

    /// `SHOW TOTALS`: every total, then every average.
    pub(super) fn totals_entries(&self) -> Vec<(String, u64)> {
        let figures = &STATS_SPLIT_COLUMNS[1..];
        let named = |prefix: &'static str, values: [u64; 11]| {
            figures
                .iter()
                .zip(values)
                .map(move |(column, v)| (format!("{prefix}{}", totals_name(column)), v))
        };
        named("total_", self.totals())
            .chain(named("avg_", self.averages()))
            .collect()
    }
}

/// SHOW LISTS is a (list, items) pair per row rather than one wide row.
pub(super) const LISTS_COLUMNS: &[&str] = &["list", "items"];

impl ListsRow {
    pub(super) fn entries(&self) -> [(&'static str, u64); 14] {
        [
            ("databases", self.databases),
            ("users", self.users),
            ("peers", self.peers),
            ("pools", self.pools),
            ("peer_pools", self.peer_pools),
            ("free_clients", self.free_clients),
            ("used_clients", self.used_clients),
            ("login_clients", self.login_clients),
            ("free_servers", self.free_servers),
            ("used_servers", self.used_servers),
            ("dns_names", self.dns_names),
            ("dns_zones", self.dns_zones),
            ("dns_queries", self.dns_queries),
            ("dns_pending", self.dns_pending),
        ]
    }
}

impl Table for ReplicaRow {
    const COLUMNS: &'static [&'static str] = &[
        "database",
        "group",
        "host",
        "port",
        "state",
        "lag_bytes",
        "lag_ms",
        "weight",
        "outstanding",
        "latency_us",
        "servers",
    ];

    fn cells(&self) -> Vec<Cell> {
        vec![
            text(&self.database),
            text(&self.group),
            text(&self.host),
            num(self.port),
            text(self.state.name()),
            self.lag_bytes.map(|b| b.to_string()),
            self.lag.map(|d| d.as_millis().to_string()),
            num(self.weight),
            num(self.outstanding),
            self.latency.map(|d| d.as_micros().to_string()),
            num(self.servers),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_utc_civil_dates() {
        assert_eq!(timestamp(UNIX_EPOCH), "1970-01-01 00:00:00 UTC");
        // 2024-02-29 12:34:56 UTC: a leap day.
        let leap = UNIX_EPOCH + Duration::from_secs(1_709_210_096);
        assert_eq!(timestamp(leap), "2024-02-29 12:34:56 UTC");
        let y2k_eve = UNIX_EPOCH + Duration::from_secs(946_684_799);
        assert_eq!(timestamp(y2k_eve), "1999-12-31 23:59:59 UTC");
    }

    #[test]
    fn waits_split_into_seconds_and_micros() {
        let [s, us] = wait_cells(Duration::from_micros(3_000_250));
        assert_eq!((s.as_deref(), us.as_deref()), (Some("3"), Some("250")));
    }

    #[test]
    fn secret_settings_are_masked_even_if_the_view_forgot() {
        let row = ConfigRow {
            key: "auth_password".into(),
            value: "hunter2".into(),
            default: String::new(),
            changeable: true,
        };
        let cells = row.cells();
        assert_eq!(cells[1].as_deref(), Some(MASK));
        assert_eq!(cells[2].as_deref(), Some(""));
        let plain = ConfigRow {
            key: "max_client_conn".into(),
            value: "100".into(),
            default: "100".into(),
            changeable: false,
        };
        assert_eq!(
            plain.cells(),
            vec![
                text("max_client_conn"),
                text("100"),
                text("100"),
                text("no")
            ]
        );
    }
}
