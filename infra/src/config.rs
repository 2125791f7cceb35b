//! `chatctl.toml`: the app name and per-stage settings (region, profile, endpoint, memory, recall
//! window, log retention …). Flags override it; the file is optional (defaults apply).
//!
//! ```toml
//! app = "chat"
//!
//! [defaults]
//! region = "eu-west-1"
//!
//! [stages.prod]
//! profile = "prod"
//! memory_mb = 1024
//! log_retention_days = 30
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::build::Arch;
use crate::stack::{NameError, StackName, StageSettings};

pub const DEFAULT_FILE: &str = "chatctl.toml";
pub const DEFAULT_APP: &str = "chat";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// Not TOML, or not a project file (an unknown key, a wrong type): the parser's account,
    /// with the line, is the source.
    #[error("{path} is not a valid project file")]
    Invalid {
        path: PathBuf,
        #[source]
        source: Box<toml::de::Error>,
    },
    #[error("--set {pair}: {why}")]
    Set { pair: String, why: String },
    #[error(transparent)]
    Name(#[from] NameError),
    /// A setting's value is out of range, named where it came from.
    #[error("{}: {why}", origin.describe(path, key, value))]
    Setting {
        key: &'static str,
        /// As written (strings quoted).
        value: String,
        origin: Layer,
        path: PathBuf,
        why: String,
    },
}

/// Where a stage setting's value came from: the layers in the order they override each other.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Layer {
    /// `[defaults]` in the project file.
    Defaults,
    /// `[stages.NAME]` in the project file.
    Stage(String),
    /// `--set KEY=VALUE` on the command line.
    Set,
}

impl Layer {
    /// `--set timeout_s=900`, `chatctl.toml [stages.prod] timeout_s = 900`.
    fn describe(&self, path: &Path, key: &str, value: &str) -> String {
        match self {
            Layer::Set => format!("--set {key}={}", value.trim_matches('"')),
            Layer::Stage(stage) => format!("{} [stages.{stage}] {key} = {value}", path.display()),
            Layer::Defaults => format!("{} [defaults] {key} = {value}", path.display()),
        }
    }
}

/// The longest function timeout: API Gateway's WebSocket integration timeout.
pub const MAX_TIMEOUT_S: u32 = 29;

/// One stage's settings as written; every field optional.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StageTable {
    pub region: Option<String>,
    pub profile: Option<String>,
    pub endpoint_url: Option<String>,
    pub memory_mb: Option<u32>,
    pub timeout_s: Option<u32>,
    pub arch: Option<String>,
    pub recall_window: Option<String>,
    pub log_retention_days: Option<u32>,
    pub throttle_rate: Option<f64>,
    pub throttle_burst: Option<u32>,
    pub keep_releases: Option<u32>,
}

impl StageTable {
    /// Settings given as `KEY=VALUE` pairs (`--set memory_mb=1024`), checked like the file's.
    pub fn from_pairs(pairs: &[String]) -> Result<StageTable, ConfigError> {
        let mut text = String::new();
        for pair in pairs {
            let (key, value) = pair.split_once('=').ok_or_else(|| ConfigError::Set {
                pair: pair.clone(),
                why: "expected KEY=VALUE".to_owned(),
            })?;
            let (key, value) = (key.trim(), value.trim());
            // Numbers stay numbers; anything else (a region, a duration) is a string.
            let literal = if value.parse::<f64>().is_ok() {
                value.to_owned()
            } else {
                toml::Value::String(value.to_owned()).to_string()
            };
            text.push_str(&format!("{key} = {literal}\n"));
        }
        toml::from_str(&text).map_err(|e| ConfigError::Set {
            pair: pairs.join(" "),
            why: e.message().to_owned(),
        })
    }

    /// `self` with `over`'s fields where it has them (flags over the file).
    pub fn overlaid(&self, over: &StageTable) -> StageTable {
        self.merged(over)
    }

    /// `self` with `over`'s fields where it has them.
    fn merged(&self, over: &StageTable) -> StageTable {
        macro_rules! pick {
            ($($f:ident),*) => { StageTable { $($f: over.$f.clone().or_else(|| self.$f.clone())),* } };
        }
        pick!(
            region,
            profile,
            endpoint_url,
            memory_mb,
            timeout_s,
            arch,
            recall_window,
            log_retention_days,
            throttle_rate,
            throttle_burst,
            keep_releases
        )
    }
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProjectFile {
    pub app: Option<String>,
    #[serde(default)]
    pub defaults: StageTable,
    #[serde(default)]
    pub stages: BTreeMap<String, StageTable>,
}

/// Where a stage lives and how it is built: what `plan`/`deploy` need.
#[derive(Debug, Clone, PartialEq)]
pub struct StageConfig {
    pub name: StackName,
    pub region: Option<String>,
    pub profile: Option<String>,
    pub endpoint_url: Option<String>,
    pub settings: StageSettings,
}

impl ProjectFile {
    /// Read `path`; a missing file is an empty project (all defaults).
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        match std::fs::read_to_string(path) {
            Ok(text) => toml::from_str(&text).map_err(|source| ConfigError::Invalid {
                path: path.to_owned(),
                source: Box::new(source),
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Self::default()),
            Err(source) => Err(ConfigError::Read {
                path: path.to_owned(),
                source,
            }),
        }
    }

    pub fn parse(text: &str) -> Result<Self, String> {
        toml::from_str(text).map_err(|e| e.to_string())
    }

    /// The settings of `stage`: defaults, then `[stages.NAME]`, then `overrides` (flags).
    pub fn stage(
        &self,
        path: &Path,
        app: Option<&str>,
        stage: &str,
        overrides: &StageTable,
    ) -> Result<StageConfig, ConfigError> {
        let app = app.or(self.app.as_deref()).unwrap_or(DEFAULT_APP);
        let name = StackName::new(app, stage)?;
        let empty = StageTable::default();
        let own = self.stages.get(stage).unwrap_or(&empty);
        let table = self.defaults.merged(own).merged(overrides);
        // The layer that supplied a field: the last of them that sets it.
        let origin = |set: fn(&StageTable) -> bool| {
            if set(overrides) {
                Layer::Set
            } else if set(own) {
                Layer::Stage(stage.to_owned())
            } else {
                Layer::Defaults
            }
        };
        let invalid =
            |key: &'static str, value: String, set: fn(&StageTable) -> bool, why: String| {
                ConfigError::Setting {
                    key,
                    value,
                    origin: origin(set),
                    path: path.to_owned(),
                    why,
                }
            };
        let d = StageSettings::default();
        let arch = match table.arch.as_deref() {
            None | Some("arm64") => Arch::Arm64,
            Some("x86-64" | "x86_64") => Arch::X86_64,
            Some(other) => {
                return Err(invalid(
                    "arch",
                    format!("{other:?}"),
                    |t| t.arch.is_some(),
                    "use arm64 or x86-64".into(),
                ));
            }
        };
        let recall_window_ms = match &table.recall_window {
            None => d.recall_window_ms,
            Some(text) => humantime::parse_duration(text)
                .map_err(|e| {
                    invalid(
                        "recall_window",
                        format!("{text:?}"),
                        |t| t.recall_window.is_some(),
                        format!("{e}; write e.g. \"2m\""),
                    )
                })
                .map(|w: Duration| i64::try_from(w.as_millis()).unwrap_or(i64::MAX))?,
        };
        let memory_mb = table.memory_mb.unwrap_or(d.memory_mb);
        if !(128..=10_240).contains(&memory_mb) {
            return Err(invalid(
                "memory_mb",
                memory_mb.to_string(),
                |t| t.memory_mb.is_some(),
                "Lambda allows 128 to 10240".into(),
            ));
        }
        let timeout_s = table.timeout_s.unwrap_or(d.timeout_s);
        // Lambda allows up to 900 s, but the ws function serves API Gateway, which ends every
        // WebSocket integration after 29 s (a quota that cannot be raised): a longer timeout
        // would only let a handler run on after its caller gave up.
        if !(1..=MAX_TIMEOUT_S).contains(&timeout_s) {
            return Err(invalid(
                "timeout_s",
                timeout_s.to_string(),
                |t| t.timeout_s.is_some(),
                format!(
                    "use 1 to {MAX_TIMEOUT_S}; API Gateway ends a WebSocket integration after \
                     {MAX_TIMEOUT_S} s (not adjustable), so a longer function timeout never helps"
                ),
            ));
        }
        // CloudWatch Logs accepts only these retention periods.
        const RETENTION_DAYS: [u32; 22] = [
            1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557,
            2922, 3288, 3653,
        ];
        let log_retention_days = table.log_retention_days.unwrap_or(d.log_retention_days);
        if !RETENTION_DAYS.contains(&log_retention_days) {
            return Err(invalid(
                "log_retention_days",
                log_retention_days.to_string(),
                |t| t.log_retention_days.is_some(),
                format!("CloudWatch Logs allows {RETENTION_DAYS:?}"),
            ));
        }
        // Lambda keeps at most 75 GB of code per region: ten 3 MB releases per function is
        // nothing, but a release must survive its own deploy.
        let keep_releases = table.keep_releases.unwrap_or(d.keep_releases);
        if !(1..=100).contains(&keep_releases) {
            return Err(invalid(
                "keep_releases",
                keep_releases.to_string(),
                |t| t.keep_releases.is_some(),
                "keep 1 to 100 versions per function (rollback reaches back that far)".into(),
            ));
        }
        Ok(StageConfig {
            name,
            region: table.region,
            profile: table.profile,
            endpoint_url: table.endpoint_url,
            settings: StageSettings {
                memory_mb,
                timeout_s,
                arch,
                recall_window_ms,
                log_retention_days,
                throttle_rate: table.throttle_rate.unwrap_or(d.throttle_rate),
                throttle_burst: table.throttle_burst.unwrap_or(d.throttle_burst),
                keep_releases,
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = r#"
app = "chat"

[defaults]
region = "eu-west-1"
memory_mb = 256

[stages.prod]
profile = "prod"
memory_mb = 1024
recall_window = "5m"
"#;

    #[test]
    fn stages_layer_defaults_file_and_flags() {
        let file = ProjectFile::parse(FILE).unwrap();
        let p = Path::new("chatctl.toml");
        let prod = file.stage(p, None, "prod", &StageTable::default()).unwrap();
        assert_eq!(prod.name.prefix(), "chat-prod");
        assert_eq!(prod.region.as_deref(), Some("eu-west-1"));
        assert_eq!(prod.profile.as_deref(), Some("prod"));
        assert_eq!(prod.settings.memory_mb, 1024);
        assert_eq!(prod.settings.recall_window_ms, 300_000);
        let ci = file
            .stage(
                p,
                None,
                "ci",
                &StageTable {
                    region: Some("us-east-1".into()),
                    ..StageTable::default()
                },
            )
            .unwrap();
        assert_eq!(
            ci.settings.memory_mb, 256,
            "defaults apply to stages not in the file"
        );
        assert_eq!(ci.region.as_deref(), Some("us-east-1"), "flags win");
        let other_app = file
            .stage(p, Some("talk"), "ci", &StageTable::default())
            .unwrap();
        assert_eq!(other_app.name.prefix(), "talk-ci");
    }

    #[test]
    fn mistakes_name_the_file_and_the_field() {
        let p = Path::new("chatctl.toml");
        let err = ProjectFile::parse("app = \"chat\"\n[stages.x]\nmemmory_mb = 1\n").unwrap_err();
        assert!(err.contains("memmory_mb"), "{err}");
        let file = ProjectFile::parse("[stages.x]\nmemory_mb = 64\n").unwrap();
        let err = file
            .stage(p, None, "x", &StageTable::default())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("chatctl.toml") && err.contains("128 to 10240"),
            "{err}"
        );
        let file = ProjectFile::parse("[stages.x]\ntimeout_s = 30\n").unwrap();
        let err = file
            .stage(p, None, "x", &StageTable::default())
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("chatctl.toml [stages.x] timeout_s = 30: use 1 to 29")
                && err.contains("API Gateway"),
            "{err}"
        );
        let file = ProjectFile::parse("[stages.x]\ntimeout_s = 29\n").unwrap();
        let stage = file.stage(p, None, "x", &StageTable::default()).unwrap();
        assert_eq!(stage.settings.timeout_s, 29);
        let err = file
            .stage(p, None, "Bad_Stage", &StageTable::default())
            .unwrap_err()
            .to_string();
        assert!(err.contains("stage name"), "{err}");
    }

    #[test]
    fn a_bad_value_is_blamed_on_the_layer_it_came_from() {
        let p = Path::new("chatctl.toml");
        let file =
            ProjectFile::parse("[defaults]\narch = \"sparc\"\n[stages.prod]\nmemory_mb = 64\n")
                .unwrap();
        let err = |stage: &str, set: &[&str]| {
            let pairs: Vec<String> = set.iter().map(|s| (*s).to_owned()).collect();
            file.stage(p, None, stage, &StageTable::from_pairs(&pairs).unwrap())
                .unwrap_err()
        };
        insta::assert_snapshot!(
            [
                err("dev", &[]).to_string(),
                err("prod", &["arch=arm64"]).to_string(),
                err("prod", &["arch=arm64", "memory_mb=99999"]).to_string(),
                err("dev", &["arch=arm64", "recall_window=soon"]).to_string(),
            ]
            .join("\n")
        );
        assert!(matches!(
            err("prod", &["arch=arm64", "memory_mb=99999"]),
            ConfigError::Setting {
                origin: Layer::Set,
                ..
            }
        ));
    }

    #[test]
    fn set_pairs_override_with_the_files_checks() {
        let t =
            StageTable::from_pairs(&["memory_mb=1024".into(), "recall_window=5m".into()]).unwrap();
        assert_eq!(t.memory_mb, Some(1024));
        assert_eq!(t.recall_window.as_deref(), Some("5m"));
        let err = StageTable::from_pairs(&["memmory_mb=1".into()]).unwrap_err();
        assert!(err.to_string().contains("memmory_mb"), "{err}");
        let err = StageTable::from_pairs(&["memory_mb".into()]).unwrap_err();
        assert!(err.to_string().contains("KEY=VALUE"), "{err}");
    }

    #[test]
    fn a_missing_file_is_all_defaults() {
        let file = ProjectFile::load(Path::new("/nonexistent/chatctl.toml")).unwrap();
        let s = file
            .stage(Path::new("x"), None, "dev", &StageTable::default())
            .unwrap();
        assert_eq!(s.name.prefix(), "chat-dev");
        assert_eq!(s.settings, StageSettings::default());
    }
}
