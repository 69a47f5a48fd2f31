//! The YAML config file: PgBouncer setting names at top level plus a
//! `databases:` map. The shape comes from the settings table.

use std::path::Path;

use super::error::ConfigError;
use super::settings::FileSettings;

/// Read and parse the YAML file at `path`.
pub fn read_file(path: &Path) -> Result<FileSettings, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::ReadFile {
        path: path.to_path_buf(),
        source,
    })?;
    parse_yaml(path, &text)
}

/// Parse YAML `text`; `path` is only used in error messages.
pub fn parse_yaml(path: &Path, text: &str) -> Result<FileSettings, ConfigError> {
    // `Option` so an empty (or comments-only) file means "no settings".
    match serde_yaml_ng::from_str::<Option<FileSettings>>(text) {
        Ok(settings) => Ok(settings.unwrap_or_default()),
        Err(err) => Err(yaml_error(path, &err)),
    }
}

fn yaml_error(path: &Path, err: &serde_yaml_ng::Error) -> ConfigError {
    let full = err.to_string();
    match err.location() {
        Some(loc) => {
            // The message repeats the position at its end; we show it up front.
            let suffix = format!(" at line {} column {}", loc.line(), loc.column());
            let message = full.strip_suffix(&suffix).unwrap_or(&full);
            // serde lists all ~90 accepted keys after an unknown one; too noisy.
            let message = match message.split_once(", expected one of") {
                Some((head, _)) => format!("{head} (settings are listed in src/config/README.md)"),
                None => message.to_string(),
            };
            ConfigError::Yaml {
                path: path.to_path_buf(),
                line: loc.line(),
                column: loc.column(),
                message,
            }
        }
        None => ConfigError::YamlNoLocation {
            path: path.to_path_buf(),
            message: full,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    #[test]
    fn unknown_key_reports_file_line_and_column() {
        let text = "listen_port: 7000\n\ndefault_pool_sise: 5\n";
        let Err(err) = parse_yaml(Path::new("/etc/pgrelay.yaml"), text) else {
            panic!("typo accepted");
        };
        let ConfigError::Yaml {
            line,
            column,
            ref message,
            ..
        } = err
        else {
            panic!("no location: {err}");
        };
        assert_eq!((line, column), (3, 1));
        assert!(message.contains("default_pool_sise"), "{message}");
        assert!(!message.contains("listen_addr"), "{message}");
        let shown = err.to_string();
        assert!(shown.starts_with("/etc/pgrelay.yaml:3:1: "), "{shown}");
    }

    #[test]
    fn unknown_database_key_and_bad_value_have_locations() {
        let text = "databases:\n  app:\n    host: pg\n    colour: blue\n";
        let err = parse_yaml(Path::new("c.yaml"), text).err().unwrap();
        assert!(matches!(err, ConfigError::Yaml { line: 4, .. }), "{err}");

        let text = "databases:\n  app:\n    host: pg\n    port: x\n";
        let err = parse_yaml(Path::new("c.yaml"), text).err().unwrap();
        assert!(
            matches!(
                err,
                ConfigError::Yaml {
                    line: 4,
                    column: 11,
                    ..
                }
            ),
            "{err}"
        );

        let text = "query_wait_timeout: soon\n";
        let err = parse_yaml(Path::new("c.yaml"), text).err().unwrap();
        assert!(matches!(err, ConfigError::Yaml { line: 1, .. }), "{err}");
        assert!(err.to_string().contains("soon"), "{err}");
    }

    #[test]
    fn empty_file_sets_nothing() {
        let mut cfg = Config::default();
        parse_yaml(Path::new("e.yaml"), "# nothing\n")
            .unwrap()
            .apply_to(&mut cfg);
        assert_eq!(cfg, Config::default());
    }
}
