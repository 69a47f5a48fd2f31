//! Human-readable dumps of the merged configuration for `pgrelay check-config`.
//! Secrets are masked here; nothing else prints config values.

use super::modes::AuthType;
use super::settings::render_settings;
use super::validate::problems;
use super::value::{is_secret_name, MASK};
use super::Config;

/// Every setting as `name = value`, one per line, sorted; secrets masked.
pub fn effective_settings(cfg: &Config) -> String {
    let mut lines: Vec<String> = render_settings(cfg)
        .into_iter()
        .map(|(name, value)| {
            let shown = if is_secret_name(name) { MASK } else { &value };
            format!("{name} = {shown}").trim_end().to_string()
        })
        .collect();
    lines.extend(
        cfg.databases
            .iter()
            .map(|(name, db)| format!("databases.{name} = {}", db.describe())),
    );
    lines.extend(cfg.ignored.iter().map(|(name, raw)| {
        let shown = if is_secret_name(name) { MASK } else { raw };
        format!("{name} = {shown} (ignored: not implemented by pgrelay)")
    }));
    lines.sort();
    let mut out = lines.join("\n");
    out.push('\n');
    out
}

/// Things that are valid but probably not what the operator wants.
pub fn warnings(cfg: &Config) -> Vec<String> {
    let mut out = Vec::new();
    if !cfg.ignored.is_empty() {
        let names: Vec<&str> = cfg.ignored.keys().map(String::as_str).collect();
        out.push(format!(
            "accepted but ignored PgBouncer settings: {}",
            names.join(", ")
        ));
    }
    if cfg.auth.auth_type == AuthType::Trust {
        out.push("auth_type = trust: any client may connect as any user".to_string());
    }
    if cfg.admin.admin_users.is_empty() && cfg.admin.stats_users.is_empty() {
        out.push("admin_users and stats_users are empty: nobody can use the admin console".into());
    }
    out
}

/// The full `pgrelay check-config` output: verdict, warnings, effective settings.
pub fn check_config_report(cfg: &Config) -> String {
    let mut out = String::new();
    let found = problems(cfg);
    if found.is_empty() {
        out.push_str("# configuration is valid\n");
    } else {
        out.push_str("# configuration is INVALID:\n");
        for problem in &found {
            out.push_str(&format!("# error: {problem}\n"));
        }
    }
    for warning in warnings(cfg) {
        out.push_str(&format!("# warning: {warning}\n"));
    }
    out.push_str(&effective_settings(cfg));
    out
}
