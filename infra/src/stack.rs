//! The stack model: for an app, a stage and its settings, the full desired state of every AWS
//! resource, as data. Names are deterministic (`{app}-{stage}-…`), everything that takes tags is
//! tagged `chatctl:app` / `chatctl:stage`, and IAM policies (templates/iam) are scoped to this
//! stage's ARNs. Pure: no AWS call; what is only known after creation (the API id) is marked.

use std::collections::BTreeMap;
use std::fmt;

use chat_aws::tables::{IndexSpec, TableNames, TableSpec, specs};
use serde::Serialize;
use serde_json::{Value, json};

use crate::build::Arch;
use crate::kinds::table::Index;
use crate::kinds::{
    Alias, Api, EventInvokeConfig, EventSourceMapping, Function, Integration, LogGroup, Parameter,
    Permission, Properties, Queue, Role, Route, Schedule, ScheduleTarget, Stage, Subscription,
    Table, Tags, Topic,
};
pub use crate::names::{Arns, FUNCTION_ROLES, Names, Partition};

/// The name of each role's inline policy.
pub const INLINE_POLICY: &str = "chatctl";

/// The description of every role of a stage (set at creation; not compared).
pub fn role_description(name: &StackName) -> String {
    format!("chatctl {name}: execution role of the stage's functions and schedule")
}

/// The statement id of the Lambda permission for `source` (`apigateway`, `sns`).
pub fn permission_sid(source: &str) -> String {
    format!("chatctl-{source}")
}

/// How long an asynchronous fan-out event may wait (throttled, or between retries) before Lambda
/// gives up on it and dead-letters it: a chat frame minutes late is worse than a gap, which
/// clients fill with `history after`. 60 s is the least Lambda accepts.
pub const FANOUT_MAX_EVENT_AGE_S: u32 = 60;

/// Retries of a failed fan-out invocation (Lambda's default is 2, after ~1 and ~3 minutes).
pub const FANOUT_MAX_RETRIES: u32 = 1;

/// How long the fan-out's dead-letter queue keeps an event: 14 days, SQS's maximum, so an
/// operator back from a long weekend can still see what failed.
pub const DLQ_RETENTION_S: u32 = 1_209_600;

/// Presence older than this is useless: SQS drops it rather than deliver it late.
pub const PRESENCE_RETENTION_S: u32 = 300;

/// AWS recommends a source queue's visibility timeout be at least six times the function's
/// timeout, so a batch retried after throttling is not redelivered while still in flight.
pub const VISIBILITY_PER_TIMEOUT: u32 = 6;

/// Receives before a presence message goes to the dead-letter queue.
pub const PRESENCE_MAX_RECEIVES: u32 = 2;

/// One fan-out invocation takes up to this many presence events (a join storm's worth) …
pub const PRESENCE_BATCH_SIZE: u32 = 1000;

/// … gathered for at most this long: the presence latency the batch costs.
pub const PRESENCE_BATCH_WINDOW_S: u32 = 1;

/// The schedule's input, which the fan-out function tells from SNS and SQS events.
pub const SWEEP_INPUT: &str = r#"{"chatctl":"presence-sweep"}"#;

/// The events each subscription of the topic takes (`eventType` message attribute).
pub const CHAT_EVENT_TYPES: [&str; 2] = ["message", "recalled"];
pub const PRESENCE_EVENT_TYPES: [&str; 1] = ["presence"];

/// Shown for values AWS assigns at creation (the WebSocket API's id before it exists).
pub const KNOWN_AFTER_APPLY: &str = "(known after apply)";

const LAMBDA_TRUST: &str = include_str!("../../templates/iam/lambda-trust.json");
const WS_POLICY: &str = include_str!("../../templates/iam/ws-policy.json");
const FANOUT_POLICY: &str = include_str!("../../templates/iam/fanout-policy.json");
const SCHEDULER_TRUST: &str = include_str!("../../templates/iam/scheduler-trust.json");
const SCHEDULER_POLICY: &str = include_str!("../../templates/iam/scheduler-policy.json");
const PRESENCE_QUEUE_POLICY: &str = include_str!("../../templates/iam/presence-queue-policy.json");

/// The routes of the WebSocket API: API Gateway's three and the protocol's actions.
pub const ROUTES: [&str; 10] = [
    "$connect",
    "$disconnect",
    "$default",
    "send",
    "history",
    "recall",
    "join",
    "leave",
    "presence",
    "ping",
];

/// An invalid app or stage name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{what} {value:?} is not valid: use 1-20 lowercase letters, digits and '-', starting with a letter (it becomes part of every resource name)"
)]
pub struct NameError {
    pub what: &'static str,
    pub value: String,
}

impl NameError {
    const APP: &'static str = "app name";
    const STAGE: &'static str = "stage name";

    /// The stage name was invalid (it always comes from `--stage`; an app name may come from
    /// chatctl.toml).
    pub fn is_stage(&self) -> bool {
        self.what == Self::STAGE
    }
}

/// `app` and `stage`, validated: they become part of every resource name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StackName {
    pub app: String,
    pub stage: String,
}

impl StackName {
    pub fn new(app: &str, stage: &str) -> Result<Self, NameError> {
        let check = |what: &'static str, value: &str| {
            let ok = (1..=20).contains(&value.len())
                && value.starts_with(|c: char| c.is_ascii_lowercase())
                && value
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
            if ok {
                Ok(())
            } else {
                Err(NameError {
                    what,
                    value: value.to_owned(),
                })
            }
        };
        check(NameError::APP, app)?;
        check(NameError::STAGE, stage)?;
        Ok(Self {
            app: app.to_owned(),
            stage: stage.to_owned(),
        })
    }

    /// `{app}-{stage}`, the prefix of every resource name.
    pub fn prefix(&self) -> String {
        format!("{}-{}", self.app, self.stage)
    }

    pub fn tables(&self) -> TableNames {
        TableNames::for_stage(&self.app, &self.stage)
    }

    /// The names of every resource of the stage (one source for the model, observe and apply).
    pub fn names(&self) -> Names {
        Names::new(self)
    }

    fn tags(&self) -> Tags {
        Tags::from([
            ("chatctl:app".to_owned(), self.app.clone()),
            ("chatctl:stage".to_owned(), self.stage.clone()),
        ])
    }
}

impl fmt::Display for StackName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.app, self.stage)
    }
}

/// Per-stage settings (from chatctl.toml and flags).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StageSettings {
    pub memory_mb: u32,
    pub timeout_s: u32,
    pub arch: Arch,
    pub recall_window_ms: i64,
    pub log_retention_days: u32,
    /// Stage-wide request rate (steady state) and burst.
    pub throttle_rate: f64,
    pub throttle_burst: u32,
    /// Published versions kept per function (older ones are pruned): how far back
    /// `chatctl rollback` can go.
    pub keep_releases: u32,
}

impl Default for StageSettings {
    fn default() -> Self {
        Self {
            memory_mb: 512,
            timeout_s: 10,
            arch: Arch::Arm64,
            recall_window_ms: 120_000,
            log_retention_days: 14,
            throttle_rate: 500.0,
            throttle_burst: 1000,
            keep_releases: 10,
        }
    }
}

/// What is known of the target when planning: the account, region and partition, and what AWS
/// assigned (the WebSocket API's id and endpoint).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Environment {
    pub account_id: String,
    pub region: String,
    /// From the caller identity's ARN: `aws`, `aws-cn`, `aws-us-gov` …
    pub partition: Partition,
    /// The WebSocket API's id, once it exists.
    pub api_id: Option<String>,
    /// The API's `ApiEndpoint` as AWS reports it (`wss://{id}.execute-api.{region}.{suffix}`).
    pub api_endpoint: Option<String>,
}

impl Environment {
    /// A commercial-partition environment before the API exists (tests, `export`).
    pub fn new(account_id: &str, region: &str) -> Self {
        Self {
            account_id: account_id.to_owned(),
            region: region.to_owned(),
            partition: Partition::aws(),
            api_id: None,
            api_endpoint: None,
        }
    }

    /// With the API's id (and the endpoint AWS would report for it in this partition).
    pub fn with_api(mut self, api_id: &str) -> Self {
        self.api_endpoint = Some(format!("wss://{}", self.arns().api_host(api_id)));
        self.api_id = Some(api_id.to_owned());
        self
    }

    pub fn arns(&self) -> Arns<'_> {
        Arns {
            partition: &self.partition,
            region: &self.region,
            account: &self.account_id,
        }
    }

    /// The API's host: from its `ApiEndpoint` when AWS reported one, else derived from its id.
    pub fn api_host(&self) -> Option<String> {
        let from_endpoint = self.api_endpoint.as_deref().and_then(|e| {
            let host = e.split_once("://").map_or(e, |(_, h)| h);
            let host = host.split('/').next().unwrap_or_default();
            (!host.is_empty()).then(|| host.to_owned())
        });
        from_endpoint.or_else(|| self.api_id.as_deref().map(|id| self.arns().api_host(id)))
    }
}

/// The code of each function, as `CodeSha256` (from `chatctl build`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Code {
    pub ws_sha256: String,
    pub fanout_sha256: String,
}

/// Resource kinds, in dependency order: a resource depends only on kinds before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    Table,
    Topic,
    /// Before the roles: the fan-out role's policy names the dead-letter queue's ARN.
    Queue,
    Parameter,
    LogGroup,
    Api,
    Role,
    Function,
    /// The function's `live` release: after the function, before everything that invokes it.
    Alias,
    /// After the function it configures and the queue it names.
    EventInvokeConfig,
    /// After the function and the queue it connects.
    EventSourceMapping,
    /// After the function it invokes and the role it invokes it with.
    Schedule,
    Integration,
    Route,
    Stage,
    Permission,
    Subscription,
}

impl Kind {
    pub fn label(self) -> &'static str {
        match self {
            Kind::Table => "dynamodb table",
            Kind::Topic => "sns topic",
            Kind::Queue => "sqs queue",
            Kind::Parameter => "ssm parameter",
            Kind::LogGroup => "log group",
            Kind::Api => "websocket api",
            Kind::Role => "iam role",
            Kind::Function => "lambda function",
            Kind::Alias => "lambda alias",
            Kind::EventInvokeConfig => "lambda event-invoke config",
            Kind::EventSourceMapping => "lambda event source mapping",
            Kind::Schedule => "scheduler schedule",
            Kind::Integration => "api integration",
            Kind::Route => "api route",
            Kind::Stage => "api stage",
            Kind::Permission => "lambda permission",
            Kind::Subscription => "sns subscription",
        }
    }
}

/// One resource's desired state: its typed properties, compared field by field.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Resource {
    pub kind: Kind,
    pub name: String,
    pub properties: Properties,
    /// Fields AWS cannot change in place: a difference there means delete and create.
    #[serde(skip)]
    pub replace_on: &'static [&'static str],
    /// What AWS needs to exist before this resource can be created or changed (a function's
    /// role, a route's integration, a queue's dead-letter queue), or whose AWS-assigned id its
    /// properties name (the API's). Apply runs an action only after these; deletes go the other
    /// way. Only real prerequisites: an IAM policy may name a table that does not exist yet.
    #[serde(skip)]
    pub needs: Vec<(Kind, String)>,
}

/// Every resource of a stage, in dependency order.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DesiredStack {
    pub name: StackName,
    pub resources: Vec<Resource>,
}

impl Resource {
    /// The properties as the plan compares them.
    pub fn fields(&self) -> BTreeMap<String, Value> {
        self.properties.fields()
    }
}

fn render(template: &str, vars: &[(&str, &str)]) -> Value {
    let text = vars.iter().fold(template.to_owned(), |t, (k, v)| {
        t.replace(&format!("${{{k}}}"), v)
    });
    // The templates are part of the binary and tested to parse; a broken one shows as a string.
    serde_json::from_str(&text).unwrap_or(Value::String(text))
}

/// An index as the plan compares it (and observe reads it back).
pub fn index_properties(i: &IndexSpec) -> Index {
    Index {
        name: Some(i.name.clone()),
        partition_key: Some(i.partition_key.clone()),
        sort_key: Some(i.sort_key.clone()),
        projection: Some(i.projection.as_str().to_owned()),
    }
}

fn table(spec: &TableSpec, tags: &Tags) -> Resource {
    // Sorted by name: AWS lists indexes in no particular order, and the plan compares lists.
    let mut sorted: Vec<_> = spec.indexes.iter().collect();
    sorted.sort_by(|a, b| a.name.cmp(&b.name));
    Resource {
        kind: Kind::Table,
        name: spec.name.clone(),
        properties: Table {
            keys: vec![spec.partition_key.clone(), spec.sort_key.clone()],
            billing: "PAY_PER_REQUEST".into(),
            indexes: sorted.into_iter().map(index_properties).collect(),
            ttl_attribute: spec.ttl_attribute.clone(),
            tags: tags.clone(),
        }
        .into(),
        replace_on: &["keys"],
        needs: vec![],
    }
}

/// The desired state of a stage.
pub fn desired(
    name: &StackName,
    settings: &StageSettings,
    env: &Environment,
    code: &Code,
) -> DesiredStack {
    let names = name.names();
    let arns = env.arns();
    let tags = name.tags();
    let account = env.account_id.as_str();
    let tables = names.tables().clone();
    let table_arn = |t: &str| arns.table(t);
    let topic = names.topic();
    let topic_arn = arns.topic(&topic);
    let dlq = names.dead_letter_queue();
    let dlq_arn = arns.queue(&dlq);
    let presence = names.presence_queue();
    let presence_arn = arns.queue(&presence);
    let api = names.api();
    let api_id = env.api_id.as_deref().unwrap_or(KNOWN_AFTER_APPLY);
    let function = |role: &str| names.function(role);
    // Every trigger invokes the function's `live` alias, never $LATEST: a deploy uploads code
    // without serving it until the alias moves, and a rollback moves only the alias.
    let alias = |role: &str| names.alias(role);
    let alias_arn = |role: &str| arns.function(&names.alias(role));
    let log_group = |role: &str| names.log_group(role);
    let log_group_arn = |role: &str| arns.log_group(&names.log_group(role));
    let secret = names.secret_parameter().to_owned();
    let secret_arn = arns.parameter(&secret);
    let connections_arn =
        |method: &str| arns.execute_api(api_id, &format!("{}/{method}/@connections/*", name.stage));
    let connections_api_arn = connections_arn("POST");
    let api_host = env
        .api_host()
        .unwrap_or_else(|| arns.api_host(KNOWN_AFTER_APPLY));
    let management_endpoint = format!("https://{api_host}/{}", name.stage);

    let mut resources: Vec<Resource> = specs(&tables).iter().map(|s| table(s, &tags)).collect();
    resources.push(Resource {
        kind: Kind::Topic,
        name: topic.clone(),
        properties: Topic { tags: tags.clone() }.into(),
        replace_on: &[],
        needs: vec![],
    });
    // Where Lambda sends fan-out events it gave up on (too old, or failed twice), and where
    // presence messages go that the fan-out failed twice.
    resources.push(Resource {
        kind: Kind::Queue,
        name: dlq.clone(),
        properties: Queue {
            message_retention_seconds: Some(DLQ_RETENTION_S.into()),
            // SQS's default; nothing consumes this queue but an operator.
            visibility_timeout_s: Some(30),
            redrive_policy: Value::Null,
            policy: Value::Null,
            tags: tags.clone(),
        }
        .into(),
        replace_on: &[],
        needs: vec![],
    });
    // Presence events wait here so one fan-out invocation takes a whole batch of them.
    resources.push(Resource {
        kind: Kind::Queue,
        name: presence.clone(),
        properties: Queue {
            message_retention_seconds: Some(PRESENCE_RETENTION_S.into()),
            visibility_timeout_s: Some((VISIBILITY_PER_TIMEOUT * settings.timeout_s).into()),
            redrive_policy: json!({ "deadLetterTargetArn": dlq_arn, "maxReceiveCount": PRESENCE_MAX_RECEIVES }),
            // Only this stage's topic may send to it.
            policy: render(
                PRESENCE_QUEUE_POLICY,
                &[
                    ("PresenceQueueArn", &presence_arn),
                    ("TopicArn", &topic_arn),
                ],
            ),
            tags: tags.clone(),
        }
        .into(),
        replace_on: &[],
        needs: vec![(Kind::Queue, dlq.clone())],
    });
    // The value is random and never compared: only its existence and type are planned.
    resources.push(Resource {
        kind: Kind::Parameter,
        name: secret.clone(),
        properties: Parameter {
            r#type: Some("SecureString".into()),
            tags: tags.clone(),
        }
        .into(),
        replace_on: &["type"],
        needs: vec![],
    });
    for role in ["ws", "fanout"] {
        resources.push(Resource {
            kind: Kind::LogGroup,
            name: log_group(role),
            properties: LogGroup {
                retention_days: Some(settings.log_retention_days.into()),
                tags: tags.clone(),
            }
            .into(),
            replace_on: &[],
            needs: vec![],
        });
    }
    resources.push(Resource {
        kind: Kind::Api,
        name: api.clone(),
        properties: Api {
            protocol: Some("WEBSOCKET".into()),
            route_selection_expression: Some("$request.body.action".into()),
            tags: tags.clone(),
        }
        .into(),
        replace_on: &["protocol"],
        needs: vec![],
    });
    for (role, template) in [("ws", WS_POLICY), ("fanout", FANOUT_POLICY)] {
        let policy = render(
            template,
            &[
                ("MessagesTableArn", &table_arn(&tables.messages)),
                ("ConnectionsTableArn", &table_arn(&tables.connections)),
                // The sweep lists every connection through this index; nothing else reads one.
                (
                    "ConnectionsSweepIndexArn",
                    &format!(
                        "{}/index/{}",
                        table_arn(&tables.connections),
                        chat_aws::tables::BY_SHARD
                    ),
                ),
                ("TopicArn", &topic_arn),
                ("ConnectionsApiArn", &connections_api_arn),
                // The sweep's probes (GetConnection) and closes (DeleteConnection).
                ("ConnectionsProbeArn", &connections_arn("GET")),
                ("ConnectionsCloseArn", &connections_arn("DELETE")),
                ("TokenSecretParameterArn", &secret_arn),
                ("LogGroupArn", &log_group_arn(role)),
                ("DeadLetterQueueArn", &dlq_arn),
                ("PresenceQueueArn", &presence_arn),
            ],
        );
        resources.push(Resource {
            kind: Kind::Role,
            name: names.function_role(role),
            properties: Role {
                assume_role_policy: render(LAMBDA_TRUST, &[]),
                inline_policy: policy,
                tags: tags.clone(),
            }
            .into(),
            replace_on: &[],
            // The policy names the API id (the connections ARN).
            needs: vec![(Kind::Api, api.clone())],
        });
    }
    // The schedule's role: it may only invoke the fan-out, and only for this account.
    resources.push(Resource {
        kind: Kind::Role,
        name: names.scheduler_role(),
        properties: Role {
            assume_role_policy: render(SCHEDULER_TRUST, &[("AccountId", account)]),
            inline_policy: render(
                SCHEDULER_POLICY,
                &[("FanoutFunctionArn", &alias_arn("fanout"))],
            ),
            tags: tags.clone(),
        }
        .into(),
        replace_on: &[],
        needs: vec![],
    });
    for (role, sha) in [("ws", &code.ws_sha256), ("fanout", &code.fanout_sha256)] {
        let mut environment: BTreeMap<String, String> = [
            (chat_aws::lambda::MESSAGES_TABLE, tables.messages.clone()),
            (
                chat_aws::lambda::CONNECTIONS_TABLE,
                tables.connections.clone(),
            ),
            (chat_aws::lambda::TOPIC_ARN, topic_arn.clone()),
            (
                chat_aws::lambda::MANAGEMENT_ENDPOINT,
                management_endpoint.clone(),
            ),
            (
                chat_aws::lambda::RECALL_WINDOW_MS,
                settings.recall_window_ms.to_string(),
            ),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        // Only the WebSocket handler checks tokens; only its role may read the secret.
        if role == "ws" {
            environment.insert(
                chat_aws::lambda::TOKEN_SECRET_PARAMETER.to_owned(),
                secret.clone(),
            );
        }
        resources.push(Resource {
            kind: Kind::Function,
            name: function(role),
            properties: Function {
                runtime: Some("provided.al2023".into()),
                handler: Some("bootstrap".into()),
                architecture: Some(settings.arch.lambda_name().into()),
                memory_mb: Some(settings.memory_mb.into()),
                timeout_s: Some(settings.timeout_s.into()),
                role: Some(arns.role(&names.function_role(role))),
                code_sha256: Some(sha.clone()),
                environment,
                tags: tags.clone(),
            }
            .into(),
            // Lambda changes the architecture in place (UpdateFunctionCode), keeping the
            // function's resource policy; a replace would drop the invoke permissions.
            replace_on: &[],
            needs: vec![
                (Kind::Role, names.function_role(role)),
                (Kind::LogGroup, log_group(role)),
                // The management endpoint names the API.
                (Kind::Api, api.clone()),
            ],
        });
    }
    // Each function's release: the version its live alias serves has its code and configuration.
    for role in FUNCTION_ROLES {
        let release = resources
            .iter()
            .rev()
            .find(|r| r.kind == Kind::Function && r.name == function(role))
            .and_then(|r| r.properties.function())
            .map(Function::release)
            .unwrap_or(Alias {
                code_sha256: None,
                configuration: None,
            });
        resources.push(Resource {
            kind: Kind::Alias,
            name: alias(role),
            properties: release.into(),
            replace_on: &[],
            needs: vec![(Kind::Function, function(role))],
        });
    }
    // SNS invokes the fan-out asynchronously: Lambda queues the event and retries it on failure.
    // This bounds both, so a frame is delivered within a minute or dead-lettered, never late.
    resources.push(Resource {
        kind: Kind::EventInvokeConfig,
        name: function("fanout"),
        properties: EventInvokeConfig {
            maximum_event_age_s: Some(FANOUT_MAX_EVENT_AGE_S.into()),
            maximum_retry_attempts: Some(FANOUT_MAX_RETRIES.into()),
            on_failure: Some(dlq_arn.clone()),
            // Put replaces the whole configuration: a success destination added by hand is drift.
            on_success: None,
        }
        .into(),
        replace_on: &[],
        needs: vec![(Kind::Alias, alias("fanout")), (Kind::Queue, dlq.clone())],
    });
    // Presence events reach the fan-out in batches (one invocation per second at most per
    // poller), so a join storm's presence is coalesced per room instead of one frame per join.
    resources.push(Resource {
        kind: Kind::EventSourceMapping,
        name: format!("{}/{presence}", function("fanout")),
        properties: EventSourceMapping {
            event_source_arn: Some(presence_arn.clone()),
            batch_size: Some(PRESENCE_BATCH_SIZE.into()),
            maximum_batching_window_s: Some(PRESENCE_BATCH_WINDOW_S.into()),
            function_response_types: vec!["ReportBatchItemFailures".into()],
        }
        .into(),
        replace_on: &["eventSourceArn"],
        needs: vec![
            (Kind::Alias, alias("fanout")),
            (Kind::Queue, presence.clone()),
        ],
    });
    // Every minute: announce idle/left from heartbeats and remove vanished connections. A missed
    // or failed sweep is not retried: the next one a minute later does the same work.
    resources.push(Resource {
        kind: Kind::Schedule,
        name: names.sweep_schedule(),
        properties: Schedule {
            schedule_expression: Some("rate(1 minute)".into()),
            flexible_time_window: Some("OFF".into()),
            state: Some("ENABLED".into()),
            target: ScheduleTarget {
                arn: Some(alias_arn("fanout")),
                role_arn: Some(arns.role(&names.scheduler_role())),
                input: Some(SWEEP_INPUT.into()),
                maximum_retry_attempts: Some(0),
                maximum_event_age_s: Some(60),
            },
        }
        .into(),
        replace_on: &[],
        needs: vec![
            (Kind::Alias, alias("fanout")),
            (Kind::Role, names.scheduler_role()),
        ],
    });
    resources.push(Resource {
        kind: Kind::Integration,
        name: format!("{api}/ws"),
        properties: Integration {
            r#type: Some("AWS_PROXY".into()),
            uri: Some(arns.lambda_invocation_uri(&alias_arn("ws"))),
        }
        .into(),
        replace_on: &[],
        // API Gateway checks nothing at creation, but a route must not invoke an alias that is
        // not there yet.
        needs: vec![(Kind::Api, api.clone()), (Kind::Alias, alias("ws"))],
    });
    for route in ROUTES {
        resources.push(Resource {
            kind: Kind::Route,
            name: format!("{api}/{route}"),
            properties: Route {
                target: format!("integrations/{api}/ws"),
            }
            .into(),
            replace_on: &[],
            needs: vec![
                (Kind::Api, api.clone()),
                (Kind::Integration, format!("{api}/ws")),
            ],
        });
    }
    resources.push(Resource {
        kind: Kind::Stage,
        name: format!("{api}/{}", name.stage),
        properties: Stage {
            auto_deploy: true,
            throttle_rate: Some(settings.throttle_rate),
            throttle_burst: Some(settings.throttle_burst.into()),
            tags: tags.clone(),
        }
        .into(),
        replace_on: &[],
        // Its automatic deployment needs the routes to deploy.
        needs: std::iter::once((Kind::Api, api.clone()))
            .chain(ROUTES.iter().map(|r| (Kind::Route, format!("{api}/{r}"))))
            .collect(),
    });
    resources.push(Resource {
        kind: Kind::Permission,
        name: format!("{}/apigateway", function("ws")),
        properties: Permission {
            principal: Some("apigateway.amazonaws.com".into()),
            action: Some("lambda:InvokeFunction".into()),
            // Only this stage's routes (`{api}/{stage}/{route key}`, API Gateway's ARN of a
            // WebSocket route) may invoke it: not another stage added to the API by hand.
            source_arn: Some(arns.execute_api(api_id, &format!("{}/*", name.stage))),
        }
        .into(),
        replace_on: &["principal", "sourceArn"],
        needs: vec![(Kind::Alias, alias("ws")), (Kind::Api, api.clone())],
    });
    resources.push(Resource {
        kind: Kind::Permission,
        name: format!("{}/sns", function("fanout")),
        properties: Permission {
            principal: Some("sns.amazonaws.com".into()),
            action: Some("lambda:InvokeFunction".into()),
            source_arn: Some(topic_arn.clone()),
        }
        .into(),
        replace_on: &["principal", "sourceArn"],
        needs: vec![(Kind::Alias, alias("fanout")), (Kind::Topic, topic.clone())],
    });
    // Chat events go straight to the fan-out (asynchronous invocation, bounded above) …
    resources.push(Resource {
        kind: Kind::Subscription,
        name: format!("{topic}/{}", function("fanout")),
        properties: Subscription {
            protocol: Some("lambda".into()),
            endpoint: Some(alias_arn("fanout")),
            filter_policy: json!({ (chat_handlers::events::ATTR_EVENT_TYPE): CHAT_EVENT_TYPES }),
            raw_message_delivery: false,
        }
        .into(),
        replace_on: &["protocol", "endpoint"],
        // After the permission, so SNS may invoke the function from its first event.
        needs: vec![
            (Kind::Topic, topic.clone()),
            (Kind::Alias, alias("fanout")),
            (Kind::Permission, format!("{}/sns", function("fanout"))),
        ],
    });
    // … presence events through the queue, as the bare message (raw delivery).
    resources.push(Resource {
        kind: Kind::Subscription,
        name: format!("{topic}/{presence}"),
        properties: Subscription {
            protocol: Some("sqs".into()),
            endpoint: Some(presence_arn.clone()),
            filter_policy: json!({ (chat_handlers::events::ATTR_EVENT_TYPE): PRESENCE_EVENT_TYPES }),
            raw_message_delivery: true,
        }
        .into(),
        replace_on: &["protocol", "endpoint"],
        needs: vec![
            (Kind::Topic, topic.clone()),
            (Kind::Queue, presence.clone()),
        ],
    });
    DesiredStack {
        name: name.clone(),
        resources,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn sample() -> DesiredStack {
        desired(
            &StackName::new("chat", "prod").unwrap(),
            &StageSettings::default(),
            &Environment::new("123456789012", "eu-west-1").with_api("a1b2c3d4e5"),
            &Code {
                ws_sha256: "d3M=".into(),
                fanout_sha256: "ZmFub3V0".into(),
            },
        )
    }

    #[test]
    fn names_are_validated() {
        assert!(StackName::new("chat", "prod").is_ok());
        assert!(StackName::new("chat-2", "pr-42").is_ok());
        for (app, stage) in [
            ("Chat", "prod"),
            ("chat", ""),
            ("chat", "a_b"),
            ("1chat", "x"),
            ("chat", &"x".repeat(21)),
        ] {
            let err = StackName::new(app, stage).unwrap_err();
            assert!(err.to_string().contains("lowercase"), "{err}");
        }
    }

    #[test]
    fn templates_parse_and_are_fully_rendered() {
        for r in sample().resources.iter().filter(|r| r.kind == Kind::Role) {
            let text = serde_json::to_string(&r.properties).unwrap();
            assert!(
                !text.contains("${"),
                "unrendered placeholder in {}: {text}",
                r.name
            );
            assert!(
                r.fields()["inlinePolicy"].is_object(),
                "{} policy does not parse",
                r.name
            );
        }
    }

    /// What each role may do to the tables is what its handlers call: the ws function reads
    /// no index and neither uses a ConditionCheck; only the fan-out's sweep lists connections
    /// through `by-shard`.
    #[test]
    fn table_grants_follow_the_calls_the_handlers_make() {
        let stack = sample();
        let statements = |role: &str| -> Vec<Value> {
            let r = stack
                .resources
                .iter()
                .find(|r| r.kind == Kind::Role && r.name == format!("chat-prod-{role}-role"))
                .unwrap();
            r.fields()["inlinePolicy"]["Statement"]
                .as_array()
                .unwrap()
                .clone()
        };
        let as_list = |v: &Value| match v {
            Value::Array(a) => a.iter().map(|x| x.as_str().unwrap().to_owned()).collect(),
            one => vec![one.as_str().unwrap().to_owned()],
        };
        let mut index_arns = Vec::new();
        for role in ["ws", "fanout"] {
            for statement in statements(role) {
                let actions: Vec<String> = as_list(&statement["Action"]);
                assert!(
                    !actions.iter().any(|a| a == "dynamodb:ConditionCheckItem"),
                    "{role}: {actions:?}"
                );
                for arn in as_list(&statement["Resource"]) {
                    if arn.contains("/index/") {
                        index_arns.push(format!("{role} {arn}"));
                    }
                }
            }
        }
        assert_eq!(
            index_arns,
            [
                "fanout arn:aws:dynamodb:eu-west-1:123456789012:table/chat-prod-connections/index/by-shard"
            ]
        );
    }

    /// `replace_on` names plan fields: each must be a field of its kind's properties, or a
    /// renamed field would silently stop forcing a replacement.
    #[test]
    fn replace_on_names_real_fields() {
        for r in sample().resources {
            let fields = r.fields();
            for field in r.replace_on {
                assert!(
                    fields.contains_key(*field),
                    "{} {}: {field}",
                    r.kind.label(),
                    r.name
                );
            }
            assert_eq!(r.properties.kind(), r.kind, "{}", r.name);
        }
    }

    #[test]
    fn everything_taggable_is_tagged() {
        for r in sample().resources {
            if let Some(tags) = r.fields().get("tags").cloned() {
                assert_eq!(
                    tags,
                    json!({"chatctl:app": "chat", "chatctl:stage": "prod"}),
                    "{}",
                    r.name
                );
            } else {
                assert!(
                    matches!(
                        r.kind,
                        // Aliases take no tags of their own (the function's apply).
                        Kind::Alias
                            | Kind::Integration
                            | Kind::Route
                            | Kind::Permission
                            | Kind::Subscription
                            | Kind::EventInvokeConfig
                            | Kind::EventSourceMapping
                            // Schedules take no tags (only schedule groups do).
                            | Kind::Schedule
                    ),
                    "{} ({:?}) takes tags but has none",
                    r.name,
                    r.kind
                );
            }
        }
    }

    #[test]
    fn only_the_websocket_handler_may_read_the_token_secret() {
        let stack = sample();
        let get = |kind: Kind, name: &str| {
            stack
                .resources
                .iter()
                .find(|r| r.kind == kind && r.name == name)
                .unwrap()
                .fields()
        };
        let ws = get(Kind::Function, "chat-prod-ws");
        let fanout = get(Kind::Function, "chat-prod-fanout");
        assert!(
            ws["environment"]
                .get(chat_aws::lambda::TOKEN_SECRET_PARAMETER)
                .is_some()
        );
        assert!(
            fanout["environment"]
                .get(chat_aws::lambda::TOKEN_SECRET_PARAMETER)
                .is_none()
        );
        let can_read = |role: &str| {
            get(Kind::Role, role)["inlinePolicy"]
                .to_string()
                .contains("ssm:GetParameter")
        };
        assert!(can_read("chat-prod-ws-role"));
        assert!(!can_read("chat-prod-fanout-role"));
    }

    #[test]
    fn the_fanout_is_bounded_and_only_its_role_may_dead_letter() {
        let stack = sample();
        let get = |kind: Kind, name: &str| {
            stack
                .resources
                .iter()
                .find(|r| r.kind == kind && r.name == name)
                .unwrap_or_else(|| panic!("{name} missing"))
                .fields()
        };
        let dlq_arn = "arn:aws:sqs:eu-west-1:123456789012:chat-prod-fanout-dlq";
        let config = get(Kind::EventInvokeConfig, "chat-prod-fanout");
        assert_eq!(config["maximumEventAgeS"], json!(60));
        assert_eq!(config["maximumRetryAttempts"], json!(1));
        assert_eq!(config["onFailure"], json!(dlq_arn));
        let queue = get(Kind::Queue, "chat-prod-fanout-dlq");
        assert_eq!(queue["messageRetentionSeconds"], json!(1_209_600));
        let sends_to_dlq = |role: &str| {
            get(Kind::Role, role)["inlinePolicy"]["Statement"]
                .as_array()
                .unwrap()
                .iter()
                .any(|s| s["Action"] == json!("sqs:SendMessage") && s["Resource"] == json!(dlq_arn))
        };
        assert!(sends_to_dlq("chat-prod-fanout-role"));
        assert!(!sends_to_dlq("chat-prod-ws-role"));
        assert!(
            !get(Kind::Role, "chat-prod-ws-role")["inlinePolicy"]
                .to_string()
                .contains("sqs:")
        );
    }

    #[test]
    fn presence_is_batched_through_a_queue_and_swept_every_minute() {
        let stack = sample();
        let get = |kind: Kind, name: &str| {
            stack
                .resources
                .iter()
                .find(|r| r.kind == kind && r.name == name)
                .unwrap_or_else(|| panic!("{name} missing"))
                .fields()
        };
        let queue_arn = "arn:aws:sqs:eu-west-1:123456789012:chat-prod-presence";
        let topic_arn = "arn:aws:sns:eu-west-1:123456789012:chat-prod-events";
        // Every invoker targets the `live` alias, never $LATEST, so a rollback moves them all.
        let fanout_arn = "arn:aws:lambda:eu-west-1:123456789012:function:chat-prod-fanout:live";

        // Each event type reaches the fan-out by exactly one path.
        let chat = get(Kind::Subscription, "chat-prod-events/chat-prod-fanout");
        assert_eq!(
            chat["filterPolicy"],
            json!({"eventType": ["message", "recalled"]})
        );
        assert_eq!(chat["rawMessageDelivery"], json!(false));
        let presence = get(Kind::Subscription, "chat-prod-events/chat-prod-presence");
        assert_eq!(presence["protocol"], json!("sqs"));
        assert_eq!(presence["endpoint"], json!(queue_arn));
        assert_eq!(presence["filterPolicy"], json!({"eventType": ["presence"]}));
        assert_eq!(presence["rawMessageDelivery"], json!(true));

        let queue = get(Kind::Queue, "chat-prod-presence");
        assert_eq!(queue["messageRetentionSeconds"], json!(300));
        // Six times the default 10 s function timeout.
        assert_eq!(queue["visibilityTimeoutS"], json!(60));
        assert_eq!(
            queue["redrivePolicy"],
            json!({"deadLetterTargetArn": "arn:aws:sqs:eu-west-1:123456789012:chat-prod-fanout-dlq", "maxReceiveCount": 2})
        );
        let statement = &queue["policy"]["Statement"][0];
        assert_eq!(statement["Action"], json!("sqs:SendMessage"));
        assert_eq!(statement["Resource"], json!(queue_arn));
        assert_eq!(
            statement["Condition"]["ArnEquals"]["aws:SourceArn"],
            json!(topic_arn)
        );

        let mapping = get(
            Kind::EventSourceMapping,
            "chat-prod-fanout/chat-prod-presence",
        );
        assert_eq!(mapping["eventSourceArn"], json!(queue_arn));
        assert_eq!(mapping["batchSize"], json!(1000));
        assert_eq!(mapping["maximumBatchingWindowS"], json!(1));
        assert_eq!(
            mapping["functionResponseTypes"],
            json!(["ReportBatchItemFailures"])
        );

        let schedule = get(Kind::Schedule, "chat-prod-presence-sweep");
        assert_eq!(schedule["scheduleExpression"], json!("rate(1 minute)"));
        assert_eq!(schedule["flexibleTimeWindow"], json!("OFF"));
        assert_eq!(schedule["target"]["arn"], json!(fanout_arn));
        assert_eq!(
            schedule["target"]["roleArn"],
            json!("arn:aws:iam::123456789012:role/chat-prod-scheduler")
        );
        assert_eq!(schedule["target"]["input"], json!(SWEEP_INPUT));
        assert_eq!(schedule["target"]["maximumRetryAttempts"], json!(0));

        // The schedule's role may only invoke the fan-out, and only the scheduler of this
        // account may assume it.
        let role = get(Kind::Role, "chat-prod-scheduler");
        assert_eq!(
            role["inlinePolicy"]["Statement"],
            json!([{"Sid": "Sweep", "Effect": "Allow", "Action": "lambda:InvokeFunction", "Resource": fanout_arn}])
        );
        let trust = &role["assumeRolePolicy"]["Statement"][0];
        assert_eq!(
            trust["Principal"],
            json!({"Service": "scheduler.amazonaws.com"})
        );
        assert_eq!(
            trust["Condition"]["StringEquals"]["aws:SourceAccount"],
            json!("123456789012")
        );

        // The fan-out's role reads the presence queue and probes/closes connections; the
        // WebSocket handler's does neither.
        let fanout = get(Kind::Role, "chat-prod-fanout-role")["inlinePolicy"].to_string();
        for needed in [
            "sqs:ReceiveMessage",
            "sqs:DeleteMessage",
            "sqs:GetQueueAttributes",
            "a1b2c3d4e5/prod/GET/@connections/*",
            "a1b2c3d4e5/prod/DELETE/@connections/*",
        ] {
            assert!(fanout.contains(needed), "{needed}: {fanout}");
        }
        let ws = get(Kind::Role, "chat-prod-ws-role")["inlinePolicy"].to_string();
        assert!(!ws.contains("/GET/@connections") && !ws.contains("/DELETE/@connections"));
    }

    #[test]
    fn every_arn_and_host_follows_the_partition() {
        let mut env = Environment::new("123456789012", "cn-north-1").with_api("abc");
        env.partition = Partition::from_id("aws-cn");
        env.api_endpoint = Some("wss://abc.execute-api.cn-north-1.amazonaws.com.cn".into());
        let stack = desired(
            &StackName::new("chat", "prod").unwrap(),
            &StageSettings::default(),
            &env,
            &Code {
                ws_sha256: "a".into(),
                fanout_sha256: "b".into(),
            },
        );
        let text = serde_json::to_string(&stack).unwrap();
        assert!(!text.contains("arn:aws:"), "{text}");
        assert!(text.contains("arn:aws-cn:iam::123456789012:role/chat-prod-ws-role"));
        assert!(text.contains("https://abc.execute-api.cn-north-1.amazonaws.com.cn/prod"));
        // Service principals are `{service}.amazonaws.com` in every partition AWS documents for
        // these services (China included); every other `amazonaws.com` is the partition's host.
        let hosts = text
            .match_indices("amazonaws.com")
            .filter(|(i, _)| !text[*i..].starts_with("amazonaws.com.cn"))
            .count();
        let principals = text.matches(".amazonaws.com\"").count();
        assert_eq!(hosts, principals, "{text}");
    }

    #[test]
    fn resources_come_in_dependency_order() {
        let kinds: Vec<Kind> = sample().resources.iter().map(|r| r.kind).collect();
        assert!(kinds.windows(2).all(|w| w[0] <= w[1]), "{kinds:?}");
    }

    #[test]
    fn the_api_id_is_marked_until_it_is_known() {
        let mut env = Environment::new("123456789012", "eu-west-1");
        let name = StackName::new("chat", "prod").unwrap();
        let code = Code {
            ws_sha256: "a".into(),
            fanout_sha256: "b".into(),
        };
        let before = desired(&name, &StageSettings::default(), &env, &code);
        assert!(
            serde_json::to_string(&before)
                .unwrap()
                .contains(KNOWN_AFTER_APPLY)
        );
        env.api_id = Some("abc".into());
        let after = desired(&name, &StageSettings::default(), &env, &code);
        assert!(
            !serde_json::to_string(&after)
                .unwrap()
                .contains(KNOWN_AFTER_APPLY)
        );
    }
}
