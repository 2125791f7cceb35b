//! The CLI's error: what went wrong (the message, one line), why (the cause chain, from
//! [`std::error::Error::source`]), what to do ([`CliError::hint`]), and the exit code scripts can
//! branch on ([`CliError::exit_code`]). [`crate::output::error`] renders all
//! three, in one place.
//!
//! A variant whose message already says everything of its source is `#[error(transparent)]` (it
//! shows the wrapped error's message and chain); one that adds context names the source with
//! `#[source]` and leaves it out of its message, so the source shows once, as a `caused by:` line.
//! Messages say what went wrong; the flag, file or command that fixes it belongs in the hint.

use std::borrow::Cow;
use std::path::PathBuf;
use std::time::Duration;

use chat_core::domain::InvalidValue;
use chat_core::handler::RecallError;
use chatctl_infra::bundle::BundleError;
use chatctl_infra::config::{ConfigError, Layer};
use chatctl_infra::lock::LockError;
use chatctl_infra::scaffold::InitError;
use chatctl_ops::operator::OpsError;

/// Any error of a source type, kept as a cause.
pub type Source = Box<dyn std::error::Error + Send + Sync + 'static>;

#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// Bad input on the command line (beyond what clap checks): exit 2.
    #[error(transparent)]
    Usage(#[from] UsageError),
    /// The local backend could not start.
    #[error(transparent)]
    Start(#[from] chat_local::StartError),
    #[error(transparent)]
    Secret(#[from] chat_local::secret::SecretError),
    #[error(transparent)]
    Build(#[from] chatctl_infra::build::BuildError),
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Init(#[from] InitError),
    #[error(transparent)]
    Observe(#[from] chatctl_infra::observe::ObserveError),
    /// The deploy lock. `Held` is shown without the advice its own message carries (that is the
    /// hint here); `From` is written out below so the lock error is not listed as its own cause.
    #[error("{}", lock_message(.0))]
    Lock(LockError),
    /// Apply stopped at a failed action; everything before it is done.
    #[error(transparent)]
    Apply(#[from] chatctl_infra::apply::ApplyError),
    /// `--engine cloudformation`: the change set or the stack failed.
    #[error(transparent)]
    CloudFormation(chatctl_infra::cfn_engine::CfnError),
    #[error(transparent)]
    Release(#[from] chatctl_infra::releases::ReleaseError),
    /// A deploy over a rollback without `--roll-forward`.
    #[error(
        "stage {stack} was rolled back (release {release} restored release {to}); this deploy would put new versions live"
    )]
    RolledBack {
        stack: String,
        stage: String,
        release: i64,
        to: i64,
    },
    /// The person at the terminal said no.
    #[error("{0}: nothing was changed")]
    Declined(String),
    /// The plan would replace tables (deleting their items) and `--replace-tables` was not given.
    #[error(
        "the plan replaces {} (a key changed), which deletes every item in it",
        tables.join(" and ")
    )]
    ReplacesTables { tables: Vec<String> },
    /// The plan would lose data and the flag that allows it was not given (a message that says
    /// what to do itself; prefer [`CliError::ReplacesTables`]).
    #[error("{0}")]
    Unsafe(String),
    #[error(transparent)]
    Ops(#[from] OpsError),
    #[error("smoke failed")]
    Smoke(#[from] chatctl_ops::smoke::SmokeError),
    /// The stage has no WebSocket API: it has not been deployed (in this region).
    #[error("stage {name} is not deployed in {region} (no WebSocket API {api})")]
    NotDeployed {
        /// `app/stage`.
        name: String,
        /// The `--stage` value.
        stage: String,
        region: String,
        api: String,
        /// The command could work on the local `chatctl dev` instead (leave out `--stage`).
        local_too: bool,
    },
    /// An operator command needs the running `chatctl dev` and none runs on the data directory.
    #[error("no `chatctl dev` is running on {}", data_dir.display())]
    DevNotRunning { data_dir: PathBuf },
    /// Build artifacts are missing or unusable.
    #[error("no usable Lambda zips in {}", dir.display())]
    Artifacts {
        dir: PathBuf,
        #[source]
        source: chatctl_infra::build::BuildError,
    },
    #[error("cannot read the Lambda zip {}", path.display())]
    ArtifactRead {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// `dev --store dynamodb` could not create or check its tables.
    #[error("cannot prepare the DynamoDB tables {messages} and {connections}")]
    DevTables {
        messages: String,
        connections: String,
        /// `--aws-endpoint` was given (an emulator, most likely).
        emulator: bool,
        #[source]
        source: chat_core::ports::PortError,
    },
    /// The stage's token secret (an SSM parameter) could not be read.
    #[error("cannot read the stage's token secret {parameter}")]
    StageSecret {
        parameter: String,
        #[source]
        source: chat_core::ports::PortError,
    },
    /// The machine or process environment is not usable: what chatctl was doing, and why.
    #[error("{what}")]
    System {
        what: String,
        #[source]
        source: Source,
    },
    /// The machine or process environment is not usable (a message with its cause in it).
    #[error("{0}")]
    Environment(String),
    /// A bug in chatctl: the message says what, and an issue report is the fix.
    #[error("{0}")]
    Internal(String),
}

impl From<LockError> for CliError {
    fn from(e: LockError) -> Self {
        CliError::Lock(e)
    }
}

/// `LockError::Held` says what to do in its message; the CLI shows that as the hint instead.
fn lock_message(e: &LockError) -> String {
    match e {
        LockError::Held { stack, holder } => format!("stage {stack} is locked by {holder}"),
        other => other.to_string(),
    }
}

/// A command-line mistake that clap cannot see: the flag, the value, and what is wrong with it.
#[derive(Debug, thiserror::Error)]
pub enum UsageError {
    /// A name or id the chat rules refuse (`--user`, `--room`, `ROOM`, `MESSAGE_ID` …).
    #[error("{flag} {value:?}: {why}")]
    Invalid {
        flag: &'static str,
        value: String,
        why: InvalidValue,
    },
    #[error("--reason must be 1 to {max} bytes of text, got {len}")]
    Reason { len: usize, max: usize },
    #[error("TEXT must be 1 to {max} bytes of text, got {len}")]
    Text { len: usize, max: usize },
    #[error("CONNECTION_ID must not be empty")]
    EmptyConnectionId,
    #[error("--ttl {} is too long", humantime::format_duration(*ttl))]
    Ttl { ttl: Duration },
    #[error(
        "--online-within ({}) must be shorter than --idle-within ({})",
        humantime::format_duration(*online), humantime::format_duration(*idle)
    )]
    PresenceThresholds { online: Duration, idle: Duration },
    #[error("--max-frame ({frame}) may not exceed --max-message ({message})")]
    FrameAboveMessage { frame: usize, message: usize },
    #[error("--max-text must be from 1 to --max-frame ({max_frame} bytes), got {max_text}")]
    MaxText { max_text: usize, max_frame: usize },
    #[error(
        "--presence-window {} is longer than {}; presence would lag far behind",
        humantime::format_duration(*window), humantime::format_duration(*max)
    )]
    PresenceWindow { window: Duration, max: Duration },
    #[error(
        "--rate-per-second must be above 0 and --rate-burst at least 1, got {per_second} and {burst}"
    )]
    RateLimit { per_second: f64, burst: f64 },
    #[error("--store dynamodb needs a region")]
    NoRegion,
    /// A command that changes AWS asks first, and nobody is there to answer.
    #[error(
        "`chatctl {command}` changes AWS resources and asks before it does, but there is no terminal to ask on"
    )]
    NeedsYes { command: &'static str },
    #[error("--out {}: cannot write the template there", path.display())]
    Out {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl UsageError {
    /// What to do about it.
    pub fn hint(&self) -> Option<Cow<'static, str>> {
        Some(match self {
            UsageError::Invalid { flag, .. } => match *flag {
                "MESSAGE_ID" => {
                    "pass a message id as `chatctl tail ROOM` shows it (26 characters, \
                                 e.g. 01ARZ3NDEKTSV4RRFFQ69G5FAV)"
                        .into()
                }
                _ => return None,
            },
            UsageError::Reason { max, .. } => {
                format!("write a reason of at most {max} bytes, or leave out --reason").into()
            }
            UsageError::Text { max, .. } => {
                format!("write 1 to {max} bytes: the limit clients have too").into()
            }
            UsageError::EmptyConnectionId => {
                "pass a connection id as `chatctl presence ROOM` shows it".into()
            }
            UsageError::Ttl { .. } => "pass a shorter --ttl, e.g. --ttl 24h".into(),
            UsageError::PresenceThresholds { .. } => {
                "lower --online-within or raise --idle-within".into()
            }
            UsageError::FrameAboveMessage { .. } => {
                "lower --max-frame or raise --max-message".into()
            }
            UsageError::MaxText { max_frame, .. } => {
                format!("pass --max-text from 1 to {max_frame}, or raise --max-frame").into()
            }
            UsageError::PresenceWindow { max, .. } => format!(
                "pick a window of at most {}, e.g. --presence-window 500ms",
                humantime::format_duration(*max)
            )
            .into(),
            UsageError::RateLimit { .. } => {
                "e.g. --rate-per-second 10 --rate-burst 40 (the defaults)".into()
            }
            UsageError::NoRegion => "pass --aws-region or set AWS_REGION".into(),
            UsageError::NeedsYes { .. } => {
                "pass --yes to go ahead without asking (in CI, or from a pipe)".into()
            }
            UsageError::Out { .. } => "check that the directory exists and is writable".into(),
        })
    }
}

impl CliError {
    pub fn exit_code(&self) -> u8 {
        match self {
            // 2 is also `plan --detailed-exitcode`'s "changes": only command-line mistakes that
            // stop a command before it starts use it.
            CliError::Usage(_) => 2,
            // A bad `--set` pair or `--stage` name is a command-line mistake too. (A bad `app`
            // or a bad value in chatctl.toml comes from the file, so it stays 1.)
            CliError::Config(
                ConfigError::Set { .. }
                | ConfigError::Setting {
                    origin: Layer::Set, ..
                },
            ) => 2,
            CliError::Config(ConfigError::Name(e)) if e.is_stage() => 2,
            // Another run holds the stage: scripts may wait and retry.
            CliError::Lock(LockError::Held { .. }) => 3,
            // `recall` and `kick`: distinct codes so scripts can tell these apart.
            CliError::Ops(
                OpsError::Recall(RecallError::NotFound(_)) | OpsError::UnknownConnection(_),
            ) => 4,
            CliError::Ops(OpsError::Recall(RecallError::AlreadyRecalled { .. })) => 5,
            CliError::Ops(OpsError::Recall(RecallError::Conflict(_))) => 6,
            _ => 1,
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            CliError::Usage(_) => "usage",
            CliError::Start(_) => "start",
            CliError::Secret(_) => "secret",
            CliError::Build(_) => "build",
            CliError::Config(_) => "config",
            CliError::Init(_) => "init",
            CliError::Observe(_) => "observe",
            CliError::Artifacts { .. } | CliError::ArtifactRead { .. } => "artifacts",
            CliError::Lock(LockError::Held { .. }) => "locked",
            CliError::Lock(_) => "lock",
            CliError::Apply(_) => "apply",
            CliError::CloudFormation(_) => "cloudformation",
            CliError::Release(_) => "release",
            CliError::RolledBack { .. } => "rolled-back",
            CliError::Declined(_) => "declined",
            CliError::ReplacesTables { .. } | CliError::Unsafe(_) => "unsafe",
            CliError::NotDeployed { .. } | CliError::DevNotRunning { .. } => "not-deployed",
            CliError::Ops(OpsError::Recall(RecallError::NotFound(_))) => "not-found",
            CliError::Ops(OpsError::UnknownConnection(_)) => "not-found",
            CliError::Ops(OpsError::Recall(RecallError::AlreadyRecalled { .. })) => {
                "already-recalled"
            }
            CliError::Ops(OpsError::Recall(RecallError::Conflict(_))) => "conflict",
            CliError::Ops(_) => "operator",
            CliError::Smoke(_) => "smoke",
            CliError::DevTables { .. }
            | CliError::StageSecret { .. }
            | CliError::System { .. }
            | CliError::Environment(_) => "environment",
            CliError::Internal(_) => "internal",
        }
    }

    /// What to do about it: the flag, the file, the fix. `None` when there is nothing to add
    /// (the person said no), or when the wrapped error's own message says it already.
    pub fn hint(&self) -> Option<Cow<'static, str>> {
        match self {
            CliError::Usage(e) => e.hint(),
            CliError::Config(e) => config_hint(e),
            CliError::Init(InitError::Exists(_) | InitError::Eject(BundleError::Exists(_))) => {
                Some(
                    "pass --force to replace it, or run `chatctl init` in another directory".into(),
                )
            }
            CliError::Init(InitError::App(_)) => Some(
                "pass --app NAME with lowercase letters, digits and dashes, e.g. --app acme-chat"
                    .into(),
            ),
            CliError::Init(_) => None,
            CliError::Lock(LockError::Held { .. }) => Some(
                "wait for that run to finish, or pass --break-lock if it is dead (a crashed \
                 run, a cancelled CI job)"
                    .into(),
            ),
            CliError::Lock(LockError::Aws { .. }) => Some(
                "the lock is an SSM parameter: check that your credentials may read, write and \
                 delete it"
                    .into(),
            ),
            CliError::Apply(_) => Some(
                "everything before this step was applied and stays: fix the cause and run the \
                 command again to continue from here"
                    .into(),
            ),
            CliError::CloudFormation(chatctl_infra::cfn_engine::CfnError::StackFailed {
                stack,
                ..
            }) => Some(
                format!(
                    "CloudFormation rolled the stack back; fix the cause and deploy again \
                     (`aws cloudformation describe-stack-events --stack-name {stack}` has \
                     the whole story)"
                )
                .into(),
            ),
            CliError::Release(e) => e.hint().map(Cow::Owned),
            CliError::RolledBack { stage, .. } => Some(
                format!(
                    "pass --roll-forward to deploy over the rollback (`chatctl releases --stage \
                     {stage}` shows what runs now); fix the cause first if the rolled-back \
                     release was bad"
                )
                .into(),
            ),
            CliError::ReplacesTables { .. } => Some(
                "pass --replace-tables to accept losing that data, or revert the change".into(),
            ),
            CliError::NotDeployed {
                stage, local_too, ..
            } => Some(
                if *local_too {
                    format!(
                        "run `chatctl deploy --stage {stage}`, or leave out --stage for the local \
                         instance"
                    )
                } else {
                    format!("run `chatctl deploy --stage {stage}` first")
                }
                .into(),
            ),
            CliError::DevNotRunning { .. } => Some(
                "start `chatctl dev` (or pass --data-dir DIR of a running one, or --stage NAME)"
                    .into(),
            ),
            CliError::Artifacts { .. } | CliError::ArtifactRead { .. } => {
                Some("run `chatctl build` first, or pass --artifacts DIR".into())
            }
            CliError::Build(e) => e.hint().map(Cow::Owned),
            CliError::DevTables { emulator, .. } => Some(
                if *emulator {
                    "emulators accept any credentials: export AWS_ACCESS_KEY_ID=test \
                     AWS_SECRET_ACCESS_KEY=test"
                } else {
                    "check your AWS credentials and region"
                }
                .into(),
            ),
            CliError::StageSecret { .. } => Some(
                "check that your credentials may read it (ssm:GetParameter with decryption)".into(),
            ),
            CliError::Internal(_) => {
                Some("this is a bug in chatctl; please report it with the command you ran".into())
            }
            CliError::Start(_)
            | CliError::Secret(_)
            | CliError::CloudFormation(_)
            | CliError::Observe(_)
            | CliError::Declined(_)
            | CliError::Unsafe(_)
            | CliError::Ops(_)
            | CliError::Smoke(_)
            | CliError::System { .. }
            | CliError::Environment(_) => None,
        }
    }

    /// A name or id from the command line that the chat rules refuse.
    pub fn invalid(flag: &'static str, value: &str, why: InvalidValue) -> Self {
        CliError::Usage(UsageError::Invalid {
            flag,
            value: value.to_owned(),
            why,
        })
    }

    /// The environment failed at `what` (a sentence: "cannot watch for Ctrl-C").
    pub fn system(what: impl Into<String>, source: impl Into<Source>) -> Self {
        CliError::System {
            what: what.into(),
            source: source.into(),
        }
    }
}

/// What to do about a project-file or `--set` mistake, from where the value came from.
fn config_hint(e: &ConfigError) -> Option<Cow<'static, str>> {
    Some(match e {
        ConfigError::Read { path, .. } => format!(
            "check that {} is a readable file, or pass --config PATH",
            path.display()
        )
        .into(),
        ConfigError::Invalid { path, .. } => format!(
            "fix {} (its keys: docs/operations.md#configuration), or pass --config PATH",
            path.display()
        )
        .into(),
        ConfigError::Set { .. } => "write --set KEY=VALUE with a key of a [stages.NAME] table, \
                                    e.g. --set memory_mb=1024"
            .into(),
        ConfigError::Name(name) if name.is_stage() => match suggest_name(&name.value) {
            Some(fixed) => format!("pass --stage {fixed}").into(),
            None => "pass --stage NAME with a name like prod or ci-2".into(),
        },
        ConfigError::Name(_) => {
            "set `app` in chatctl.toml (or --app, CHATCTL_APP) to a name like chat".into()
        }
        ConfigError::Setting {
            key, origin, path, ..
        } => match origin {
            Layer::Set => format!(
                "change --set {key}=…, or leave it out for chatctl.toml's value or the default"
            )
            .into(),
            Layer::Stage(stage) => format!(
                "change {key} in [stages.{stage}] of {}, or override it with --set {key}=VALUE",
                path.display()
            )
            .into(),
            Layer::Defaults => format!(
                "change {key} in [defaults] of {}, or override it with --set {key}=VALUE",
                path.display()
            )
            .into(),
        },
    })
}

/// A valid stage name close to `raw` (`Prod` → `prod`, `my_stage` → `my-stage`), if one is.
fn suggest_name(raw: &str) -> Option<String> {
    let fixed: String = raw
        .trim()
        .chars()
        .map(|c| match c.to_ascii_lowercase() {
            c @ ('a'..='z' | '0'..='9' | '-') => c,
            _ => '-',
        })
        .collect();
    chatctl_infra::stack::StackName::new("a", &fixed)
        .ok()
        .filter(|_| fixed != raw)
        .map(|_| fixed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stage_names_are_suggested_only_when_the_fix_is_valid() {
        assert_eq!(suggest_name("Prod").as_deref(), Some("prod"));
        assert_eq!(suggest_name("my_stage").as_deref(), Some("my-stage"));
        assert_eq!(suggest_name("1st"), None);
        assert_eq!(suggest_name(""), None);
        assert_eq!(suggest_name("much-too-long-for-a-stage-name"), None);
    }

    #[test]
    fn every_usage_mistake_exits_2() {
        let e = CliError::from(UsageError::NoRegion);
        assert_eq!((e.exit_code(), e.kind()), (2, "usage"));
        assert!(e.hint().is_some());
    }
}
