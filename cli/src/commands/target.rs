//! What the operator commands share: turning `--local` / `--stage` into a target — the local
//! data directory (and its running gateway), or a deployed stage found through its outputs — and
//! from it the operator, the token secret and the WebSocket URL.

use std::path::PathBuf;

use chat_core::policy::ChatConfig;
use chat_core::token::TokenKey;
use chat_local::server::ServerFile;
use chatctl_infra::observe;
use chatctl_infra::outputs::Outputs;
use chatctl_ops::operator::Operator;
use chatctl_ops::target::{self, AwsTarget};

use crate::args::{StageArgs, TargetArgs};
use crate::commands::stage;
use crate::error::CliError;

/// A resolved target.
#[derive(Debug)]
pub enum Target {
    Local {
        data_dir: PathBuf,
        running: Option<ServerFile>,
    },
    Stage {
        clients: Box<observe::Clients>,
        outputs: Box<Outputs>,
        recall_window_ms: i64,
    },
}

/// Find the target: a deployed stage when `--stage` is given (it must be deployed), else the
/// local data directory.
pub async fn resolve(args: &TargetArgs) -> Result<Target, CliError> {
    let Some(stage_name) = &args.stage else {
        let data_dir = args.data.data_dir.clone();
        return Ok(Target::Local {
            running: ServerFile::read(&data_dir),
            data_dir,
        });
    };
    let stage = stage::resolve(&StageArgs {
        stage: stage_name.clone(),
        aws: args.aws.clone(),
        set: Vec::new(),
    })?;
    let clients = stage::clients(&stage).await;
    let environment = observe::environment(&clients, &stage.name).await?;
    let outputs = stage::deployed_outputs(&stage, &environment, true)?;
    Ok(Target::Stage {
        clients: Box::new(clients),
        outputs: Box::new(outputs),
        recall_window_ms: stage.settings.recall_window_ms,
    })
}

impl Target {
    /// The operator of this target.
    pub fn operator(&self) -> Result<Operator, CliError> {
        match self {
            Target::Local { data_dir, .. } => Ok(target::local(data_dir, ChatConfig::default())?),
            Target::Stage {
                clients,
                outputs,
                recall_window_ms,
            } => {
                let chat = ChatConfig {
                    recall_window_ms: *recall_window_ms,
                    ..ChatConfig::default()
                };
                Ok(target::aws(
                    &AwsTarget {
                        config: clients.config.clone(),
                        messages_table: outputs.messages_table.clone(),
                        connections_table: outputs.connections_table.clone(),
                        topic_arn: outputs.topic_arn.clone(),
                        management_endpoint: outputs.management_endpoint.clone(),
                    },
                    chat,
                ))
            }
        }
    }

    /// The secret tokens for this target are signed with.
    pub async fn token_key(&self) -> Result<TokenKey, CliError> {
        match self {
            Target::Local { data_dir, .. } => Ok(chat_local::secret::load_or_create(data_dir)?),
            Target::Stage {
                clients, outputs, ..
            } => chat_aws::secret::load(&clients.ssm, &outputs.token_secret_parameter)
                .await
                .map_err(|source| CliError::StageSecret {
                    parameter: outputs.token_secret_parameter.clone(),
                    source,
                }),
        }
    }

    /// Where clients connect.
    pub fn websocket_url(&self) -> Result<String, CliError> {
        match self {
            Target::Local {
                running: Some(file),
                ..
            } => Ok(format!(
                "ws{}/",
                file.url.trim_start_matches("http").trim_end_matches('/')
            )),
            Target::Local {
                running: None,
                data_dir,
            } => Err(CliError::DevNotRunning {
                data_dir: data_dir.clone(),
            }),
            Target::Stage { outputs, .. } => Ok(outputs.websocket_url.clone()),
        }
    }

    /// How often `tail` looks again by default: SQLite is cheap to ask, DynamoDB costs reads.
    pub fn default_interval(&self) -> std::time::Duration {
        match self {
            Target::Local { .. } => std::time::Duration::from_millis(250),
            Target::Stage { .. } => std::time::Duration::from_secs(1),
        }
    }
}
