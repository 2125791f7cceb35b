//! Where an operator command works: a deployed stage (its DynamoDB tables, SNS topic and
//! Management API — the fan-out Lambda delivers what operators publish) or the local instance
//! (the SQLite files in its data directory, and the running gateway's Management API, through
//! which this process fans out itself: the gateway's in-process topic is out of its reach).

use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use aws_config::SdkConfig;
use aws_sdk_apigatewaymanagement::config::{
    BehaviorVersion, Credentials, Region, SharedCredentialsProvider,
};
use chat_aws::{DynamoConnectionStore, DynamoMessageStore, ManagementSender, SnsTopic};
use chat_core::domain::ConnectionId;
use chat_core::handler::{AuthConfig, ChatService, Ports};
use chat_core::policy::ChatConfig;
use chat_core::ports::{
    ConnectionSender, MonotonicUlids, PortResult, PostError, RoomEvent, SystemClock, Topic,
};
use chat_local::server::{CONNECTIONS_DB, MESSAGES_DB, ServerFile};
use chat_local::sqlite::{SqliteConnectionStore, SqliteMessageStore};

use crate::operator::{Operator, OpsError, SharedSender};

/// A deployed stage, as `chatctl outputs` describes it.
#[derive(Debug, Clone)]
pub struct AwsTarget {
    pub config: SdkConfig,
    pub messages_table: String,
    pub connections_table: String,
    pub topic_arn: String,
    /// `https://{api}.execute-api.{region}.amazonaws.com/{stage}`
    pub management_endpoint: String,
}

fn no_auth() -> AuthConfig {
    // Operators never accept connections: no token is ever checked here.
    AuthConfig {
        key: None,
        allow_anonymous: false,
    }
}

/// The operator of a deployed stage.
pub fn aws(target: &AwsTarget, chat: ChatConfig) -> Operator {
    let sender = ManagementSender::new(&target.config, &target.management_endpoint);
    let management = sender.client().clone();
    let ports = Ports {
        messages: Arc::new(DynamoMessageStore::new(
            aws_sdk_dynamodb::Client::new(&target.config),
            &target.messages_table,
        )),
        connections: Arc::new(DynamoConnectionStore::new(
            aws_sdk_dynamodb::Client::new(&target.config),
            &target.connections_table,
        )),
        topic: Arc::new(SnsTopic::new(
            aws_sdk_sns::Client::new(&target.config),
            &target.topic_arn,
        )),
        sender: Arc::new(sender),
        clock: Arc::new(SystemClock),
        ids: Arc::new(MonotonicUlids::default()),
    };
    Operator::new(ChatService::new(ports, chat, no_auth()), Ok(management))
}

/// The SDK settings for the local gateway's Management API: it checks no signature, but the SDK
/// signs every request, so it needs some credentials and a region.
fn local_sdk_config() -> SdkConfig {
    SdkConfig::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("local"))
        .credentials_provider(SharedCredentialsProvider::new(Credentials::new(
            "local",
            "local",
            None,
            None,
            "chatctl-local",
        )))
        .build()
}

/// Posts nowhere: the local backend is not running, so nobody is connected.
#[derive(Debug)]
struct NotRunning;

#[async_trait]
impl ConnectionSender for NotRunning {
    async fn post(&self, _id: &ConnectionId, _data: &str) -> Result<(), PostError> {
        Err(PostError::Other("the local backend is not running".into()))
    }
}

/// Publishes nothing further: departures an operator's fan-out finds are left to the gateway,
/// which runs `$disconnect` for every socket it closes.
#[derive(Debug)]
struct Quiet;

#[async_trait]
impl Topic for Quiet {
    async fn publish(&self, _event: &RoomEvent) -> PortResult<()> {
        Ok(())
    }
}

/// The local topic as seen from another process: fan the event out right here, through the
/// gateway's Management API — what the fan-out Lambda does on AWS.
struct InlineFanout {
    fanout: ChatService,
}

impl std::fmt::Debug for InlineFanout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("InlineFanout")
    }
}

#[async_trait]
impl Topic for InlineFanout {
    async fn publish(&self, event: &RoomEvent) -> PortResult<()> {
        self.fanout.fanout(event).await.map(|_| ())
    }
}

/// The operator of the local instance in `data_dir` (running or not). A running backend's own
/// presence thresholds win over `chat`'s.
pub fn local(data_dir: &Path, mut chat: ChatConfig) -> Result<Operator, OpsError> {
    let messages_db = data_dir.join(MESSAGES_DB);
    if !messages_db.exists() {
        return Err(OpsError::Target(format!(
            "no local chat data in {}: start `chatctl dev` there first, or pass --data-dir DIR (or --stage NAME for a deployed stage)",
            data_dir.display()
        )));
    }
    let open_error = |e: chat_local::sqlite::OpenError| OpsError::Target(e.to_string());
    let messages = Arc::new(SqliteMessageStore::open(&messages_db).map_err(open_error)?);
    let connections =
        Arc::new(SqliteConnectionStore::open(&data_dir.join(CONNECTIONS_DB)).map_err(open_error)?);
    let running = ServerFile::read(data_dir);
    if let Some(presence) = running.as_ref().and_then(|f| f.presence) {
        chat.presence = presence;
    }
    let (sender, management): (SharedSender, _) = match &running {
        Some(file) => {
            let sender = ManagementSender::new(&local_sdk_config(), &file.url);
            let client = sender.client().clone();
            (Arc::new(sender), Ok(client))
        }
        None => (
            Arc::new(NotRunning),
            Err(format!(
                "the local backend of {} is not running: start `chatctl dev --data-dir {}` (closing and probing connections needs its Management API)",
                data_dir.display(),
                data_dir.display()
            )),
        ),
    };
    let ports = |topic: Arc<dyn Topic>| Ports {
        messages: messages.clone(),
        connections: connections.clone(),
        topic,
        sender: sender.clone(),
        clock: Arc::new(SystemClock),
        ids: Arc::new(MonotonicUlids::default()),
    };
    let fanout = ChatService::new(ports(Arc::new(Quiet)), chat.clone(), no_auth());
    let chat = ChatService::new(ports(Arc::new(InlineFanout { fanout })), chat, no_auth());
    Ok(Operator::new(chat, management))
}
