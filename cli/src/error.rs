//! The CLI's error: what went wrong, what to do, and the exit code scripts can branch on.

use chat_core::domain::InvalidValue;

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
    /// The stage has not been deployed.
    #[error("{0}")]
    NotDeployed(String),
    /// Build artifacts are missing or unusable.
    #[error("{0}")]
    Artifacts(String),
    /// The machine or process environment is not usable.
    #[error("{0}")]
    Environment(String),
}

impl CliError {
    pub fn exit_code(&self) -> u8 {
        match self {
            // 2 is also `plan --detailed-exitcode`'s "changes": only command-line mistakes that
            // stop a command before it starts use it.
            CliError::Usage(_) => 2,
            // Another run holds the stage: scripts may wait and retry.
            CliError::Lock(chatctl_infra::lock::LockError::Held { .. }) => 3,
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
            CliError::Environment(_) => "environment",
        }
    }

    pub fn invalid(flag: &str, e: InvalidValue) -> Self {
        CliError::Usage(format!("{flag}: {e}"))
    }
}
