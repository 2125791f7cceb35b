//! The CLI's error: what went wrong, what to do, and the exit code scripts can branch on.

use chat_core::domain::InvalidValue;
use chat_core::handler::RecallError;
use chatctl_infra::config::ConfigError;
use chatctl_ops::operator::OpsError;

#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// Bad input on the command line (beyond what clap checks).
    #[error("{0}")]
    Usage(String),
    /// The local backend could not start.
    #[error(transparent)]
    Start(#[from] chat_local::StartError),
    #[error(transparent)]
    Secret(#[from] chat_local::secret::SecretError),
    #[error(transparent)]
    Build(#[from] chatctl_infra::build::BuildError),
    #[error(transparent)]
    Config(#[from] chatctl_infra::config::ConfigError),
    #[error(transparent)]
    Observe(#[from] chatctl_infra::observe::ObserveError),
    #[error(transparent)]
    Lock(#[from] chatctl_infra::lock::LockError),
    /// Apply stopped at a failed action; everything before it is done.
    #[error(
        "{0}\nEverything before this step was applied and stays; fix the cause and run the command again to continue from here."
    )]
    Apply(#[from] chatctl_infra::apply::ApplyError),
    /// The person at the terminal said no.
    #[error("{0}: nothing was changed")]
    Declined(String),
    /// The plan would lose data and the flag that allows it was not given.
    #[error("{0}")]
    Unsafe(String),
    #[error(transparent)]
    Ops(#[from] chatctl_ops::operator::OpsError),
    #[error("smoke failed: {0}")]
    Smoke(#[from] chatctl_ops::smoke::SmokeError),
    /// The stage has not been deployed.
    #[error("{0}")]
    NotDeployed(String),
    /// Build artifacts are missing or unusable.
    #[error("{0}")]
    Artifacts(String),
    /// The machine or process environment is not usable.
    #[error("{0}")]
    Environment(String),
    /// A bug in chatctl: the message says what, and an issue report is the fix.
    #[error("{0}\nThis is a bug in chatctl; please report it with the command you ran.")]
    Internal(String),
}

impl CliError {
    pub fn exit_code(&self) -> u8 {
        match self {
            // 2 is also `plan --detailed-exitcode`'s "changes": only command-line mistakes that
            // stop a command before it starts use it.
            CliError::Usage(_) => 2,
            // A bad `--set` pair or `--stage` name is a command-line mistake too. (A bad `app`
            // may come from chatctl.toml, so it stays 1.)
            CliError::Config(
                ConfigError::Set { .. }
                | ConfigError::Setting {
                    origin: chatctl_infra::config::Layer::Set,
                    ..
                },
            ) => 2,
            CliError::Config(ConfigError::Name(e)) if e.is_stage() => 2,
            // Another run holds the stage: scripts may wait and retry.
            CliError::Lock(chatctl_infra::lock::LockError::Held { .. }) => 3,
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
            CliError::Observe(_) => "observe",
            CliError::Artifacts(_) => "artifacts",
            CliError::Lock(chatctl_infra::lock::LockError::Held { .. }) => "locked",
            CliError::Lock(_) => "lock",
            CliError::Apply(_) => "apply",
            CliError::Declined(_) => "declined",
            CliError::Unsafe(_) => "unsafe",
            CliError::NotDeployed(_) => "not-deployed",
            CliError::Ops(OpsError::Recall(RecallError::NotFound(_))) => "not-found",
            CliError::Ops(OpsError::UnknownConnection(_)) => "not-found",
            CliError::Ops(OpsError::Recall(RecallError::AlreadyRecalled { .. })) => {
                "already-recalled"
            }
            CliError::Ops(OpsError::Recall(RecallError::Conflict(_))) => "conflict",
            CliError::Ops(_) => "operator",
            CliError::Smoke(_) => "smoke",
            CliError::Environment(_) => "environment",
            CliError::Internal(_) => "internal",
        }
    }

    pub fn invalid(flag: &str, e: InvalidValue) -> Self {
        CliError::Usage(format!("{flag}: {e}"))
    }
}
