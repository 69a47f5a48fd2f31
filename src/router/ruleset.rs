//! Loading rule files (`routing-rules/*.yaml`) into a validated [`RuleSet`].

use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::error::RouterError;
use super::functions::{validate_entry, FunctionCatalog};
use super::rule::{Rule, RuleSpec};

/// The shipped default rule file, compiled in so a classifier always has the function lists.
pub const DEFAULT_RULES_YAML: &str = include_str!("../../routing-rules/default.yaml");

/// What to do with a read that calls a function on no list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UnknownFunctions {
    /// Such functions may write: send the statement to the primary.
    #[default]
    Primary,
    /// Trust unlisted functions to be read-only.
    Replica,
}

/// One rule file as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleFile {
    unknown_functions: Option<UnknownFunctions>,
    #[serde(default)]
    write_functions: Vec<String>,
    #[serde(default)]
    session_pinning_functions: Vec<String>,
    #[serde(default)]
    read_only_functions: Vec<String>,
    /// Kept as raw YAML so each rule's error can name its index.
    #[serde(default)]
    rules: Vec<serde_yaml_ng::Value>,
}

/// Rules and function lists merged from one or more files, in order.
#[derive(Debug, Clone, Default)]
pub struct RuleSet {
    rules: Vec<Rule>,
    catalog: FunctionCatalog,
    unknown_functions: UnknownFunctions,
}

/// Accumulates files before compiling, so lists from several files merge.
#[derive(Default)]
struct Builder {
    rules: Vec<Rule>,
    write_functions: Vec<String>,
    session_pinning_functions: Vec<String>,
    read_only_functions: Vec<String>,
    unknown_functions: Option<(UnknownFunctions, String)>,
}

impl Builder {
    fn add(&mut self, src: &str, origin: &str) -> Result<(), RouterError> {
        let file: RuleFile = if src.trim().is_empty() {
            RuleFile::default()
        } else {
            serde_yaml_ng::from_str(src).map_err(|e| RouterError::Yaml {
                origin: origin.to_string(),
                message: e.to_string(),
            })?
        };
        for (list, entries) in [
            ("write_functions", &file.write_functions),
            ("session_pinning_functions", &file.session_pinning_functions),
            ("read_only_functions", &file.read_only_functions),
        ] {
            for entry in entries {
                validate_entry(entry).map_err(|reason| RouterError::InvalidFunction {
                    origin: origin.to_string(),
                    list,
                    entry: entry.clone(),
                    reason,
                })?;
            }
        }
        for (i, raw) in file.rules.into_iter().enumerate() {
            let index = i + 1;
            let name = raw.get("name").and_then(|n| n.as_str()).map(str::to_string);
            let invalid = |reason: String| RouterError::InvalidRule {
                origin: origin.to_string(),
                index,
                name: name.clone(),
                reason,
            };
            let spec: RuleSpec =
                serde_yaml_ng::from_value(raw).map_err(|e| invalid(e.to_string()))?;
            let rule = Rule::compile(spec, format!("{origin}#{index}")).map_err(invalid)?;
            self.rules.push(rule);
        }
        self.write_functions.extend(file.write_functions);
        self.session_pinning_functions
            .extend(file.session_pinning_functions);
        self.read_only_functions.extend(file.read_only_functions);
        if let Some(policy) = file.unknown_functions {
            // Later files override earlier ones, like later settings in a config file.
            self.unknown_functions = Some((policy, origin.to_string()));
        }
        Ok(())
    }

    fn build(self) -> Result<RuleSet, RouterError> {
        let (unknown_functions, policy_origin) = self.unknown_functions.unwrap_or_default();
        // Trusting unlisted functions with no write list would send nextval() to replicas.
        if unknown_functions == UnknownFunctions::Replica
            && self.write_functions.is_empty()
            && self.session_pinning_functions.is_empty()
        {
            return Err(RouterError::InvalidSettings {
                origin: policy_origin,
                reason: "unknown_functions: replica requires a write_functions list \
                         (load routing-rules/default.yaml too)"
                    .into(),
            });
        }
        Ok(RuleSet {
            rules: self.rules,
            catalog: FunctionCatalog::new(
                &self.write_functions,
                &self.session_pinning_functions,
                &self.read_only_functions,
            ),
            unknown_functions,
        })
    }
}

/// `*.yaml` / `*.yml` files of a directory, sorted by name; a file path as is.
fn expand(path: &Path) -> Result<Vec<PathBuf>, RouterError> {
    let io = |source| RouterError::Io {
        path: path.to_path_buf(),
        source,
    };
    if !path.is_dir() {
        return Ok(vec![path.to_path_buf()]);
    }
    let mut files = Vec::new();
    for entry in std::fs::read_dir(path).map_err(io)? {
        let file = entry.map_err(io)?.path();
        if matches!(
            file.extension().and_then(|e| e.to_str()),
            Some("yaml" | "yml")
        ) {
            files.push(file);
        }
    }
    files.sort();
    Ok(files)
}

impl RuleSet {
    /// Loads files in order (a directory means its `*.yaml` files by name).
    /// Rules keep file order; function lists are merged; a later
    /// `unknown_functions` overrides an earlier one.
    pub fn load(paths: &[PathBuf]) -> Result<RuleSet, RouterError> {
        let mut builder = Builder::default();
        for path in paths {
            for file in expand(path)? {
                let src = std::fs::read_to_string(&file).map_err(|source| RouterError::Io {
                    path: file.clone(),
                    source,
                })?;
                builder.add(&src, &file.display().to_string())?;
            }
        }
        builder.build()
    }

    /// Parses one rule file's text; `origin` names it in errors and rule names.
    pub fn from_yaml_str(src: &str, origin: &str) -> Result<RuleSet, RouterError> {
        let mut builder = Builder::default();
        builder.add(src, origin)?;
        builder.build()
    }

    /// The shipped `routing-rules/default.yaml` (function lists, no active rules).
    pub fn builtin() -> RuleSet {
        Self::from_yaml_str(DEFAULT_RULES_YAML, "routing-rules/default.yaml")
            .expect("the shipped default rules are valid (checked by tests)")
    }

    /// The builtin lists followed by `extra` files, the usual production setup.
    pub fn builtin_with(extra: &[(&str, &str)]) -> Result<RuleSet, RouterError> {
        let mut builder = Builder::default();
        builder.add(DEFAULT_RULES_YAML, "routing-rules/default.yaml")?;
        for (src, origin) in extra {
            builder.add(src, origin)?;
        }
        builder.build()
    }

    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    pub fn catalog(&self) -> &FunctionCatalog {
        &self.catalog
    }

    pub fn unknown_functions(&self) -> UnknownFunctions {
        self.unknown_functions
    }
}
