//! Client parameters that pgrelay keeps per client and re-applies when the
//! client lands on a server whose values differ (transaction pooling).
//!
//! Values change through the startup packet and through the ParameterStatus
//! messages a server sends when the client runs `SET`; only parameters the
//! server reports (GUC_REPORT) can be followed this way.

use std::sync::Arc;

use super::{FrontendError, FrontendSettings};
use crate::cluster::snapshots::ParamSnapshots;

/// Tracked by default, as PgBouncer does.
const BASE_TRACKED: [&str; 5] = [
    "client_encoding",
    "datestyle",
    "timezone",
    "standard_conforming_strings",
    "application_name",
];

/// Sent at startup by common drivers (JDBC, sqlx) but not reported by
/// PostgreSQL (no ParameterStatus): followed by what pgrelay itself sets on
/// each server. PgBouncer refuses it unless told to ignore it, and ignoring
/// it would drop the client's choice.
const UNREPORTED_TRACKED: [&str; 1] = ["extra_float_digits"];

/// pgrelay's own startup parameters, consumed rather than sent to servers.
pub(crate) const PGRELAY_PREFIX: &str = "pgrelay.";

#[derive(Debug, Clone, Default)]
pub(crate) struct ClientParams {
    /// (name as the server spells it, value). Shared with the servers last
    /// brought in line with them, so a checkout can tell they still match
    /// without comparing each value.
    values: Arc<Vec<(String, String)>>,
    extra_tracked: Vec<String>,
    /// `pgrelay.*` startup parameters, for the router.
    pub pgrelay: Vec<(String, String)>,
}

/// What the startup packet said besides tracked parameters.
pub(crate) struct StartupInfo {
    pub user: String,
    pub database: String,
}

impl ClientParams {
    /// Validates the startup parameters: tracked ones are kept, ignored ones
    /// dropped, anything else refused.
    pub fn from_startup(
        params: &[(String, String)],
        settings: &FrontendSettings,
    ) -> Result<(ClientParams, StartupInfo), FrontendError> {
        let mut me = ClientParams {
            extra_tracked: settings.track_extra_parameters.clone(),
            ..Default::default()
        };
        let mut user = None;
        let mut database = None;
        // Names compared without case and without a lowered copy each: every
        // client login passes here.
        for (name, value) in params {
            let is = |word: &str| name.eq_ignore_ascii_case(word);
            match () {
                _ if is("user") => user = Some(value.clone()),
                _ if is("database") => database = Some(value.clone()),
                _ if is("options") => me.apply_options(value, settings)?,
                _ if has_pgrelay_prefix(name) => {
                    me.pgrelay.push((name.to_ascii_lowercase(), value.clone()))
                }
                // Listed to be let in, as PgBouncer needs it to be: ignored.
                _ if is_unreported_tracked(name) && is_ignored(settings, name) => {}
                _ if me.is_tracked(name) => me.set(name, value),
                _ if is_ignored(settings, name) => {}
                _ => return Err(FrontendError::UnsupportedParameter(name.clone())),
            }
        }
        let user = user
            .filter(|u| !u.is_empty())
            .ok_or(FrontendError::NoUser)?;
        let database = database
            .filter(|d| !d.is_empty())
            .unwrap_or_else(|| user.clone());
        Ok((me, StartupInfo { user, database }))
    }

    /// `options=-c name=value --name=value`: tracked settings are taken, the
    /// rest is refused unless `options` itself is ignored.
    fn apply_options(
        &mut self,
        options: &str,
        settings: &FrontendSettings,
    ) -> Result<(), FrontendError> {
        if options.trim().is_empty() || is_ignored(settings, "options") {
            return Ok(());
        }
        let mut words = options.split_whitespace();
        while let Some(word) = words.next() {
            let setting = if word == "-c" {
                words.next()
            } else {
                word.strip_prefix("--").or_else(|| word.strip_prefix("-c"))
            };
            let Some((name, value)) = setting.and_then(|s| s.split_once('=')) else {
                return Err(FrontendError::UnsupportedParameter(format!(
                    "options={options}"
                )));
            };
            let lower = name.to_ascii_lowercase();
            if lower.starts_with(PGRELAY_PREFIX) {
                self.pgrelay.push((lower, value.to_string()));
                continue;
            }
            if !self.is_tracked(&lower) {
                return Err(FrontendError::UnsupportedParameter(format!(
                    "options=-c {name}"
                )));
            }
            self.set(name, value);
        }
        Ok(())
    }

    pub fn is_tracked(&self, name: &str) -> bool {
        BASE_TRACKED.iter().any(|t| t.eq_ignore_ascii_case(name))
            || is_unreported_tracked(name)
            || self
                .extra_tracked
                .iter()
                .any(|t| t.eq_ignore_ascii_case(name))
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.values
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Records a value (from startup or a server's ParameterStatus) if tracked.
    pub fn set(&mut self, name: &str, value: &str) {
        if !self.is_tracked(name) {
            return;
        }
        let found = self
            .values
            .iter()
            .position(|(k, _)| k.eq_ignore_ascii_case(name));
        match found {
            Some(i) => {
                let (k, v) = &self.values[i];
                // Prefer the server's spelling of the name.
                let respell = k != name && name.chars().any(|c| c.is_ascii_uppercase());
                if !respell && v == value {
                    return; // unchanged: keep sharing the snapshot
                }
                let (k, v) = &mut Arc::make_mut(&mut self.values)[i];
                if respell {
                    *k = name.to_string();
                }
                if v != value {
                    *v = value.to_string();
                }
            }
            None => Arc::make_mut(&mut self.values).push((name.to_string(), value.to_string())),
        }
    }

    /// What the client is told at login, handed to `emit` pair by pair: the
    /// server's parameters with the client's own values on top; tracked
    /// values the client did not set are adopted from the server so they are
    /// restored on every later server. The result is shared with like
    /// clients through `snapshots`, and nothing is copied unless it is the
    /// first of its kind: every client login runs this over a dozen
    /// parameters, and allocating the set only to drop it for an equal
    /// shared one cost a tenth of a login.
    pub fn announce(
        &mut self,
        server_params: &[(String, String)],
        snapshots: &ParamSnapshots,
        mut emit: impl FnMut(&str, &str),
    ) {
        let mut adopted: Vec<(&str, &str)> = Vec::new();
        for (name, value) in server_params {
            match self.get(name) {
                Some(mine) => emit(name, mine),
                None => {
                    if self.is_tracked(name) {
                        adopted.push((name, value));
                    }
                    emit(name, value);
                }
            }
        }
        for (name, value) in self.values.iter() {
            if !server_params
                .iter()
                .any(|(k, _)| k.eq_ignore_ascii_case(name))
            {
                emit(name, value);
            }
        }
        self.values = snapshots.intern_extended(&self.values, &adopted);
    }

    /// The tracked values as one shared snapshot (see `ServerConn::params_synced_to`).
    pub fn snapshot(&self) -> &Arc<Vec<(String, String)>> {
        &self.values
    }

    /// SQL that makes a server's tracked parameters (`server`: name, value)
    /// match this client's, if any differ. A tracked value the server holds
    /// that the client never set can only be one pgrelay set for an earlier
    /// client (every reported one was adopted at login): it is `RESET`.
    pub fn sync_sql(&self, server: &[(String, String)]) -> Option<String> {
        let server_value = |name: &str| {
            server
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.as_str())
        };
        let mut sql = String::new();
        for (name, _) in server {
            if self.is_tracked(name) && self.get(name).is_none() && is_plain_name(name) {
                sql.push_str("RESET ");
                sql.push_str(&name.to_ascii_lowercase());
                sql.push(';');
            }
        }
        for (name, value) in self.values.iter() {
            if server_value(name) == Some(value.as_str()) {
                continue;
            }
            if !is_plain_name(name) {
                continue;
            }
            sql.push_str("SET ");
            sql.push_str(&name.to_ascii_lowercase());
            sql.push_str(" TO '");
            sql.push_str(&value.replace('\'', "''"));
            sql.push_str("';");
        }
        (!sql.is_empty()).then_some(sql)
    }
}

fn is_ignored(settings: &FrontendSettings, name: &str) -> bool {
    settings
        .ignore_startup_parameters
        .iter()
        .any(|p| p.eq_ignore_ascii_case(name))
}

fn is_unreported_tracked(name: &str) -> bool {
    UNREPORTED_TRACKED
        .iter()
        .any(|t| t.eq_ignore_ascii_case(name))
}

fn has_pgrelay_prefix(name: &str) -> bool {
    name.get(..PGRELAY_PREFIX.len())
        .is_some_and(|head| head.eq_ignore_ascii_case(PGRELAY_PREFIX))
}

fn is_plain_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.')
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{AuthType, SslMode};

    pub(crate) fn settings() -> FrontendSettings {
        FrontendSettings {
            auth_type: AuthType::Trust,
            max_client_conn: 10,
            max_message: 1 << 20,
            client_login_timeout: None,
            client_idle_timeout: None,
            idle_transaction_timeout: None,
            query_timeout: None,
            log_connections: false,
            log_disconnections: false,
            server_reset_query: "DISCARD ALL".into(),
            server_reset_query_always: false,
            ignore_startup_parameters: vec!["extra_float_digits".into()],
            track_extra_parameters: vec!["intervalstyle".into()],
            client_tls_mode: SslMode::Disable,
            cancel_peers: Vec::new(),
        }
    }

    fn startup(pairs: &[(&str, &str)]) -> Result<(ClientParams, StartupInfo), FrontendError> {
        let params: Vec<_> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        ClientParams::from_startup(&params, &settings())
    }

    #[test]
    fn startup_keeps_tracked_drops_ignored_refuses_unknown() {
        let (p, info) = startup(&[
            ("user", "alice"),
            ("application_name", "game"),
            ("extra_float_digits", "3"),
            ("IntervalStyle", "iso_8601"),
            ("pgrelay.route", "primary"),
        ])
        .unwrap();
        assert_eq!(info.database, "alice", "database defaults to the user");
        assert_eq!(p.get("application_name"), Some("game"));
        assert_eq!(p.get("intervalstyle"), Some("iso_8601"));
        assert_eq!(p.pgrelay, vec![("pgrelay.route".into(), "primary".into())]);
        assert!(p.get("extra_float_digits").is_none());

        let err = startup(&[("user", "a"), ("work_mem", "1GB")])
            .err()
            .unwrap();
        assert_eq!(err.sqlstate(), "08P01");
        assert!(err.to_string().contains("work_mem"));
        assert!(matches!(
            startup(&[("database", "x")]),
            Err(FrontendError::NoUser)
        ));
    }

    #[test]
    fn startup_names_match_in_any_case() {
        let (p, info) = startup(&[
            ("User", "alice"),
            ("DATABASE", "game"),
            ("Application_Name", "app"),
            ("Extra_Float_Digits", "3"),
            ("PgRelay.Route", "primary"),
        ])
        .unwrap();
        assert_eq!(
            (info.user.as_str(), info.database.as_str()),
            ("alice", "game")
        );
        assert_eq!(p.get("application_name"), Some("app"));
        assert!(
            p.get("extra_float_digits").is_none(),
            "ignored, not tracked"
        );
        assert_eq!(p.pgrelay, vec![("pgrelay.route".into(), "primary".into())]);
        assert!(
            startup(&[("user", "a"), ("pgrelay", "x")]).is_err(),
            "the prefix needs its dot"
        );
    }

    #[test]
    fn options_accepts_tracked_settings_only() {
        let (p, _) = startup(&[
            ("user", "a"),
            ("options", "-c TimeZone=UTC --datestyle=ISO"),
        ])
        .unwrap();
        assert_eq!(p.get("timezone"), Some("UTC"));
        assert_eq!(p.get("DateStyle"), Some("ISO"));
        assert!(startup(&[("user", "a"), ("options", "-c work_mem=1GB")]).is_err());
        let (p, _) = startup(&[("user", "a"), ("options", "-c pgrelay.route=primary")]).unwrap();
        assert_eq!(p.pgrelay, vec![("pgrelay.route".into(), "primary".into())]);
    }

    #[test]
    fn announce_adopts_server_values_and_sync_restores_them() {
        let (mut p, _) = startup(&[("user", "a"), ("application_name", "app1")]).unwrap();
        let server = vec![
            ("application_name".to_string(), "".to_string()),
            ("TimeZone".to_string(), "UTC".to_string()),
            ("server_version".to_string(), "15.0".to_string()),
        ];
        let mut announced: Vec<(String, String)> = Vec::new();
        let snapshots = ParamSnapshots::default();
        p.announce(&server, &snapshots, |k, v| {
            announced.push((k.into(), v.into()))
        });
        assert!(announced.contains(&("application_name".into(), "app1".into())));
        assert!(announced.contains(&("server_version".into(), "15.0".into())));
        assert_eq!(p.get("TimeZone"), Some("UTC"), "adopted from the server");
        assert!(p.get("server_version").is_none(), "not tracked");

        // A server where another client changed TimeZone and our name is missing.
        let other = server_params(&[("TimeZone", "Asia/Tokyo"), ("application_name", "")]);
        let sql = p.sync_sql(&other).unwrap();
        assert_eq!(sql, "SET application_name TO 'app1';SET timezone TO 'UTC';");
        let same = server_params(&[("TimeZone", "UTC"), ("application_name", "app1")]);
        assert_eq!(p.sync_sql(&same), None);
    }

    fn server_params(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn extra_float_digits_is_taken_set_and_reset_for_clients_without_it() {
        let settings = FrontendSettings {
            ignore_startup_parameters: Vec::new(),
            ..settings()
        };
        let fresh = server_params(&[("TimeZone", "UTC")]);
        let snapshots = ParamSnapshots::default();
        let login = |pairs: &[(&str, &str)]| {
            let params: Vec<_> = pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            let (mut p, _) = ClientParams::from_startup(&params, &settings).unwrap();
            p.announce(&fresh, &snapshots, |_, _| {});
            p
        };
        let jdbc = login(&[("user", "a"), ("extra_float_digits", "3")]);
        let plain = login(&[("user", "a")]);
        assert_eq!(
            jdbc.sync_sql(&fresh).as_deref(),
            Some("SET extra_float_digits TO '3';"),
            "not reported by the server, so not known to match"
        );
        assert_eq!(plain.sync_sql(&fresh), None);
        // The value pgrelay set for the first client, as the server records it.
        let after_jdbc = server_params(&[("TimeZone", "UTC"), ("extra_float_digits", "3")]);
        assert_eq!(jdbc.sync_sql(&after_jdbc), None);
        assert_eq!(
            plain.sync_sql(&after_jdbc).as_deref(),
            Some("RESET extra_float_digits;"),
            "a client that never set it gets the server's default back"
        );
    }

    #[test]
    fn sync_sql_quotes_values() {
        let mut p = ClientParams::default();
        p.set("application_name", "it's");
        assert_eq!(p.sync_sql(&[]).unwrap(), "SET application_name TO 'it''s';");
    }
}
