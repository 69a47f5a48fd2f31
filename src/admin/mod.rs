//! The PgBouncer-compatible admin console: the pure part.
//!
//! Clients connected to the `pgbouncer` database send console commands;
//! [`AdminCommand::parse`] reads one, [`authorize`] checks it against the
//! user's [`Privilege`], and [`render`] answers a `SHOW` from an
//! [`AdminView`] as backend messages. Commands with side effects (RELOAD,
//! PAUSE, RESUME, SHUTDOWN) come back as an [`AdminOutcome`] for the caller
//! to perform; the caller then writes CommandComplete with
//! [`AdminCommand::command_tag`]. No I/O happens here.
//!
//! Column names follow PgBouncer 1.22 so pgbouncer_exporter and existing
//! dashboards keep working; see `table.rs` for the lists.

mod command;
mod render;
mod rows;
mod table;
mod view;

pub use view::{ClientList, LiveView};

use thiserror::Error;

pub use command::AdminCommand;
pub use render::{render, AdminOutcome};
pub use rows::{
    AdminView, ClientRow, ClientState, ConfigRow, DatabaseRow, ListsRow, PoolRow, PoolerState,
    ReplicaRow, ServerRow, ServerState, StatsRow, UserRow,
};

/// What a console user may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Privilege {
    /// Listed in `admin_users`: every command.
    Admin,
    /// Listed in `stats_users` only: `SHOW` commands.
    Stats,
}

/// Errors a console client sees in an ErrorResponse.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum AdminError {
    #[error("empty command, use SHOW HELP;")]
    Empty,
    #[error("invalid command '{0}', use SHOW HELP;")]
    InvalidCommand(String),
    #[error("unknown SHOW item '{0}', use SHOW HELP;")]
    UnknownShow(String),
    #[error("unterminated quoted identifier")]
    UnterminatedQuote,
    #[error("{0} is not supported by pgrelay")]
    Unsupported(String),
    #[error("admin access needed for {0}")]
    AdminOnly(&'static str),
    #[error("SET takes one setting and one value: SET name = value")]
    BadSet,
    #[error("unknown setting \"{0}\"")]
    UnknownSetting(String),
    #[error("{0} is read at start only: change it in the configuration and restart")]
    StartOnlySetting(String),
    #[error("invalid value for {name}: {reason}")]
    BadSettingValue { name: String, reason: String },
}

impl AdminError {
    pub fn sqlstate(&self) -> &'static str {
        match self {
            AdminError::Unsupported(_) => "0A000",
            AdminError::AdminOnly(_) => "42501",
            AdminError::UnknownSetting(_) => "42704",
            AdminError::StartOnlySetting(_) => "55P02",
            AdminError::BadSettingValue { .. } => "22023",
            AdminError::Empty
            | AdminError::InvalidCommand(_)
            | AdminError::UnknownShow(_)
            | AdminError::UnterminatedQuote
            | AdminError::BadSet => "42601",
        }
    }

    /// A console `SET` of `name` that the configuration refused.
    pub fn setting(name: &str, e: crate::config::SettingError) -> AdminError {
        use crate::config::SettingError;
        match e {
            SettingError::Unknown => AdminError::UnknownSetting(name.to_string()),
            SettingError::Unsupported => AdminError::Unsupported(format!("setting {name}")),
            SettingError::BadValue(reason) => AdminError::BadSettingValue {
                name: name.to_string(),
                reason,
            },
        }
    }
}

/// Stats users may only look; everything that changes state needs admin.
pub fn authorize(cmd: &AdminCommand, privilege: Privilege) -> Result<(), AdminError> {
    match privilege {
        Privilege::Admin => Ok(()),
        Privilege::Stats if cmd.is_show() => Ok(()),
        Privilege::Stats => Err(AdminError::AdminOnly(cmd.command_tag())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_users_may_only_show() {
        let show = AdminCommand::ShowPools;
        assert_eq!(authorize(&show, Privilege::Stats), Ok(()));
        assert_eq!(authorize(&show, Privilege::Admin), Ok(()));
        for cmd in [
            AdminCommand::Reload,
            AdminCommand::Pause(Some("db".into())),
            AdminCommand::Resume(None),
            AdminCommand::Shutdown,
        ] {
            assert_eq!(authorize(&cmd, Privilege::Admin), Ok(()), "{cmd:?}");
            let err = authorize(&cmd, Privilege::Stats).unwrap_err();
            assert_eq!(err.sqlstate(), "42501", "{cmd:?}");
            assert!(err.to_string().contains(cmd.command_tag()), "{err}");
        }
    }
}
