//! Answering a console command as backend messages.

use bytes::BytesMut;

use super::command::AdminCommand;
use super::rows::AdminView;
use super::table::{Table, LISTS_COLUMNS, STATE_COLUMNS, STATS_SPLIT_COLUMNS, TOTALS_COLUMNS};
use super::AdminError;
use crate::protocol::backend::{
    write_command_complete, write_data_row, write_notice, write_text_row_description,
};

/// What the caller does after [`render`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AdminOutcome {
    /// A complete result (through CommandComplete) was written; send
    /// ReadyForQuery next.
    Shown,
    /// Nothing was written: perform the action, then write CommandComplete
    /// with [`AdminCommand::command_tag`] (or an error) and ReadyForQuery.
    Reload,
    Pause(Option<String>),
    Resume(Option<String>),
    Reconnect(Option<String>),
    WaitClose(Option<String>),
    Disable(String),
    Enable(String),
    Kill(String),
    KillClient(i32),
    Set {
        name: String,
        value: String,
    },
    Shutdown,
}

/// Lines of SHOW HELP, sent as a NOTICE as PgBouncer does.
const HELP: &str = "Console usage\n\
    \tSHOW HELP|POOLS|STATS|STATS_TOTALS|STATS_AVERAGES|TOTALS|DATABASES|CLIENTS|SERVERS|CONFIG|VERSION|LISTS|USERS|STATE|REPLICAS\n\
    \tRELOAD\n\
    \tPAUSE [<db>]\n\
    \tRESUME [<db>]\n\
    \tRECONNECT [<db>]\n\
    \tWAIT_CLOSE [<db>]\n\
    \tDISABLE <db>\n\
    \tENABLE <db>\n\
    \tKILL <db>\n\
    \tKILL_CLIENT <id>\n\
    \tSET <setting> = <value>\n\
    \tSHUTDOWN";

/// Writes the result of a `SHOW` (RowDescription, DataRows, CommandComplete
/// "SHOW", every column text) to `out`; for the other commands writes
/// nothing and returns what to do. Authorization is the caller's job
/// ([`super::authorize`]) and comes first.
pub fn render(
    cmd: &AdminCommand,
    view: &dyn AdminView,
    out: &mut BytesMut,
) -> Result<AdminOutcome, AdminError> {
    match cmd {
        AdminCommand::ShowPools => write_table(&view.pools(), out),
        AdminCommand::ShowStats => write_table(&view.stats(), out),
        AdminCommand::ShowStatsTotals => {
            let cells: Vec<_> = view.stats().iter().map(|r| r.totals_cells()).collect();
            write_cells(STATS_SPLIT_COLUMNS, &cells, out);
        }
        AdminCommand::ShowStatsAverages => {
            let cells: Vec<_> = view.stats().iter().map(|r| r.averages_cells()).collect();
            write_cells(STATS_SPLIT_COLUMNS, &cells, out);
        }
        AdminCommand::ShowTotals => {
            write_name_values(TOTALS_COLUMNS, view.totals().totals_entries(), out);
        }
        AdminCommand::ShowDatabases => write_table(&view.databases(), out),
        AdminCommand::ShowClients => write_table(&view.clients(), out),
        AdminCommand::ShowServers => write_table(&view.servers(), out),
        AdminCommand::ShowConfig => write_table(&view.config(), out),
        AdminCommand::ShowReplicas => write_table(&view.replicas(), out),
        AdminCommand::ShowUsers => write_table(&view.users(), out),
        AdminCommand::ShowState => write_cells(STATE_COLUMNS, &view.state().cells(), out),
        AdminCommand::ShowVersion => {
            let version = view.version();
            write_rows(&["version"], [vec![Some(version.as_str())]], out);
        }
        AdminCommand::ShowLists => write_name_values(LISTS_COLUMNS, view.lists().entries(), out),
        AdminCommand::ShowHelp => {
            write_notice("00000", HELP, out);
            write_command_complete("SHOW", out);
        }
        AdminCommand::Reload => return Ok(AdminOutcome::Reload),
        AdminCommand::Pause(db) => return Ok(AdminOutcome::Pause(db.clone())),
        AdminCommand::Resume(db) => return Ok(AdminOutcome::Resume(db.clone())),
        AdminCommand::Reconnect(db) => return Ok(AdminOutcome::Reconnect(db.clone())),
        AdminCommand::WaitClose(db) => return Ok(AdminOutcome::WaitClose(db.clone())),
        AdminCommand::Disable(db) => return Ok(AdminOutcome::Disable(db.clone())),
        AdminCommand::Enable(db) => return Ok(AdminOutcome::Enable(db.clone())),
        AdminCommand::Kill(db) => return Ok(AdminOutcome::Kill(db.clone())),
        AdminCommand::KillClient(id) => return Ok(AdminOutcome::KillClient(*id)),
        AdminCommand::Set { name, value } => {
            return Ok(AdminOutcome::Set {
                name: name.clone(),
                value: value.clone(),
            })
        }
        AdminCommand::Shutdown => return Ok(AdminOutcome::Shutdown),
    }
    Ok(AdminOutcome::Shown)
}

fn write_table<T: Table>(rows: &[T], out: &mut BytesMut) {
    let cells: Vec<Vec<_>> = rows.iter().map(Table::cells).collect();
    write_cells(T::COLUMNS, &cells, out);
}

/// One row per (name, number): `SHOW LISTS`, `SHOW TOTALS`.
fn write_name_values<N: AsRef<str>>(
    columns: &[&str],
    entries: impl IntoIterator<Item = (N, u64)>,
    out: &mut BytesMut,
) {
    let cells: Vec<Vec<_>> = entries
        .into_iter()
        .map(|(name, n)| vec![Some(name.as_ref().to_string()), Some(n.to_string())])
        .collect();
    write_cells(columns, &cells, out);
}

fn write_cells(columns: &[&str], cells: &[Vec<Option<String>>], out: &mut BytesMut) {
    let rows = cells
        .iter()
        .map(|row| row.iter().map(Option::as_deref).collect::<Vec<_>>());
    write_rows(columns, rows, out);
}

fn write_rows<'a>(
    columns: &[&str],
    rows: impl IntoIterator<Item = Vec<Option<&'a str>>>,
    out: &mut BytesMut,
) {
    write_text_row_description(columns, out);
    for row in rows {
        debug_assert_eq!(row.len(), columns.len(), "row width for {columns:?}");
        write_data_row(&row, out);
    }
    write_command_complete("SHOW", out);
}

#[cfg(test)]
#[path = "render_tests.rs"]
mod tests;
