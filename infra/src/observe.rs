//! Observe: read what exists of a stage from AWS into the property maps the stack model uses, so
//! `plan` can diff them. Read-only; every resource is found by its deterministic name.

use std::collections::BTreeMap;

use aws_config::SdkConfig;
use serde_json::{Value, json};

use crate::calls::CallCounter;
use crate::errors::is_not_found;
use crate::kinds::table::Index;
use crate::kinds::{
    Api, EventInvokeConfig, EventSourceMapping, Function, Integration, LogGroup, Parameter,
    Permission, Properties, Queue, Role, Route, Schedule, ScheduleTarget, Stage, Subscription,
    Table, Tags, Topic,
};
use crate::pace::Pace;
use crate::plan::Observed;
use crate::stack::{Environment, Kind, Partition, StackName};

/// A read that failed; names the resource and what to check.
#[derive(Debug, thiserror::Error)]
pub enum ObserveError {
    #[error(
        "cannot tell which AWS account this is ({0}); check your credentials (AWS_PROFILE, AWS_ACCESS_KEY_ID …)"
    )]
    Identity(String),
    #[error("the AWS configuration has no region; pass --region or set AWS_REGION")]
    NoRegion,
    #[error("cannot read {what}: {why}")]
    Read { what: String, why: String },
}

fn read_error(what: impl Into<String>, err: impl std::error::Error) -> ObserveError {
    ObserveError::Read {
        what: what.into(),
        why: aws_sdk_dynamodb::error::DisplayErrorContext(err).to_string(),
    }
}

/// The clients observe needs, built once from one configuration.
#[derive(Debug, Clone)]
pub struct Clients {
    pub config: SdkConfig,
    pub dynamodb: aws_sdk_dynamodb::Client,
    pub sns: aws_sdk_sns::Client,
    pub sqs: aws_sdk_sqs::Client,
    pub ssm: aws_sdk_ssm::Client,
    pub logs: aws_sdk_cloudwatchlogs::Client,
    /// Reached through [`Clients::apigw`], which paces calls to API Gateway's quota.
    pub(crate) apigw: aws_sdk_apigatewayv2::Client,
    apigw_pace: Pace,
    pub iam: aws_sdk_iam::Client,
    pub lambda: aws_sdk_lambda::Client,
    pub scheduler: aws_sdk_scheduler::Client,
    pub sts: aws_sdk_sts::Client,
    /// `deploy --engine cloudformation`: the stack, and the artifact bucket for its code.
    pub cloudformation: aws_sdk_cloudformation::Client,
    pub s3: aws_sdk_s3::Client,
    /// Every request any of these clients sends.
    pub calls: CallCounter,
}

impl Clients {
    /// The API Gateway client, once API Gateway's management quota allows another call.
    pub async fn apigw(&self) -> &aws_sdk_apigatewayv2::Client {
        self.apigw_pace.take().await;
        &self.apigw
    }

    pub fn new(config: &SdkConfig) -> Self {
        let calls = CallCounter::default();
        macro_rules! client {
            ($sdk:ident) => {
                $sdk::Client::from_conf(
                    $sdk::config::Builder::from(config)
                        .interceptor(calls.clone())
                        .build(),
                )
            };
        }
        Self {
            config: config.clone(),
            dynamodb: client!(aws_sdk_dynamodb),
            sns: client!(aws_sdk_sns),
            sqs: client!(aws_sdk_sqs),
            ssm: client!(aws_sdk_ssm),
            logs: client!(aws_sdk_cloudwatchlogs),
            apigw: client!(aws_sdk_apigatewayv2),
            apigw_pace: Pace::api_gateway(),
            iam: client!(aws_sdk_iam),
            lambda: client!(aws_sdk_lambda),
            scheduler: client!(aws_sdk_scheduler),
            sts: client!(aws_sdk_sts),
            cloudformation: client!(aws_sdk_cloudformation),
            // Path-style addressing with a custom endpoint (an S3-compatible store, a VPC
            // endpoint), as the AWS CLI does; virtual-hosted style on AWS itself.
            s3: aws_sdk_s3::Client::from_conf(
                aws_sdk_s3::config::Builder::from(config)
                    .force_path_style(config.endpoint_url().is_some())
                    .interceptor(calls.clone())
                    .build(),
            ),
            calls,
        }
    }
}

fn our_tags<'a>(tags: impl IntoIterator<Item = (&'a str, &'a str)>) -> Tags {
    tags.into_iter()
        .filter(|(k, _)| k.starts_with("chatctl:"))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

fn decode_policy(text: &str) -> Value {
    // IAM returns policy documents URL-encoded.
    let decoded = url::form_urlencoded::parse(format!("x={text}").as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default();
    serde_json::from_str(&decoded).unwrap_or(Value::String(decoded))
}

/// Collects what the readers find; they run concurrently, so it sits behind a mutex.
struct Reader<'a> {
    clients: &'a Clients,
    observed: std::sync::Mutex<Observed>,
}

impl Reader<'_> {
    fn put(&self, name: &str, props: impl Into<Properties>) {
        let props = props.into();
        if let Ok(mut observed) = self.observed.lock() {
            observed
                .resources
                .insert((props.kind(), name.to_owned()), props);
        }
    }

    fn id(&self, kind: Kind, name: &str, id: &str) {
        if let Ok(mut observed) = self.observed.lock() {
            observed.ids.insert((kind, name.to_owned()), id.to_owned());
        }
    }

    fn into_observed(self) -> Observed {
        self.observed.into_inner().unwrap_or_default()
    }
}

/// The region, and the caller's account and partition (from the caller identity's ARN).
async fn identity(clients: &Clients) -> Result<Environment, ObserveError> {
    let region = clients
        .config
        .region()
        .map(ToString::to_string)
        .ok_or(ObserveError::NoRegion)?;
    let caller = clients
        .sts
        .get_caller_identity()
        .send()
        .await
        .map_err(|e| {
            ObserveError::Identity(aws_sdk_sts::error::DisplayErrorContext(e).to_string())
        })?;
    let account_id = caller
        .account
        .ok_or_else(|| ObserveError::Identity("no account in the caller identity".into()))?;
    let mut env = Environment::new(&account_id, &region);
    // GetCallerIdentity always returns the ARN; without one, the commercial partition.
    if let Some(partition) = caller.arn.as_deref().and_then(Partition::of_arn) {
        env.partition = partition;
    }
    Ok(env)
}

/// Only the account, region and API id: what `outputs` needs, in three calls.
pub async fn environment(clients: &Clients, name: &StackName) -> Result<Environment, ObserveError> {
    let mut env = identity(clients).await?;
    let r = Reader {
        clients,
        observed: Default::default(),
    };
    let (api, _) = primary_api(&r, &name.names().api(), &name.stage).await?;
    if let Some(api) = api {
        env.api_id = api.api_id;
        env.api_endpoint = api.api_endpoint;
    }
    Ok(env)
}

/// The account and region, and everything of the stage that exists.
pub async fn observe(
    clients: &Clients,
    name: &StackName,
) -> Result<(Environment, Observed), ObserveError> {
    let mut env = identity(clients).await?;
    let r = Reader {
        clients,
        observed: Default::default(),
    };
    let names = name.names();
    let arns = env.arns();
    let tables = names.tables();
    let topic = names.topic();
    let topic_arn = arns.topic(&topic);
    let fanout_arn = arns.function(&names.function("fanout"));
    let secret = names.secret_parameter();
    let (ws, fanout) = (names.function("ws"), names.function("fanout"));
    let (ws_role, fanout_role) = (names.function_role("ws"), names.function_role("fanout"));
    let (ws_logs, fanout_logs) = (names.log_group("ws"), names.log_group("fanout"));
    let api = names.api();
    let dlq = names.dead_letter_queue();
    let presence = names.presence_queue();
    let presence_arn = arns.queue(&presence);
    let scheduler_role = names.scheduler_role();
    let schedule = names.sweep_schedule();
    // Every read is independent: one round trip's latency instead of thirty.
    let (api, ..) = tokio::try_join!(
        read_api(&r, &api, &name.stage),
        read_table(&r, &tables.messages),
        read_table(&r, &tables.connections),
        read_topic(&r, &topic, &topic_arn),
        read_parameter(&r, secret),
        read_log_group(&r, &ws_logs),
        read_log_group(&r, &fanout_logs),
        read_role(&r, &ws_role),
        read_role(&r, &fanout_role),
        read_role(&r, &scheduler_role),
        read_function(&r, &ws),
        read_function(&r, &fanout),
        read_queue(&r, &dlq),
        read_queue(&r, &presence),
        read_event_invoke_config(&r, &fanout),
        read_event_source_mapping(&r, &fanout, &presence_arn, &presence),
        read_schedule(&r, &schedule),
        read_permission(&r, &ws, "apigateway"),
        read_permission(&r, &fanout, "sns"),
        read_subscription(&r, &topic, &topic_arn, &fanout_arn),
        read_subscription(&r, &topic, &topic_arn, &presence_arn),
    )?;
    if let Some((id, endpoint)) = api {
        env.api_id = Some(id);
        env.api_endpoint = endpoint;
    }
    Ok((env, r.into_observed()))
}

async fn read_table(r: &Reader<'_>, name: &str) -> Result<(), ObserveError> {
    let table = match r
        .clients
        .dynamodb
        .describe_table()
        .table_name(name)
        .send()
        .await
    {
        Ok(out) => out.table,
        Err(e) if is_not_found(&e) => {
            return Ok(());
        }
        Err(e) => return Err(read_error(format!("table {name}"), e)),
    };
    let Some(table) = table else { return Ok(()) };
    // A table being deleted is as good as gone: destroy does not wait for it, and a deploy
    // creates it again once it is (apply waits for that).
    if table.table_status() == Some(&aws_sdk_dynamodb::types::TableStatus::Deleting) {
        return Ok(());
    }
    let keys: Vec<String> = table
        .key_schema()
        .iter()
        .map(|k| k.attribute_name().to_owned())
        .collect();
    let mut indexes: Vec<Index> = table
        .global_secondary_indexes()
        .iter()
        .map(|i| {
            let key = |t: aws_sdk_dynamodb::types::KeyType| {
                i.key_schema()
                    .iter()
                    .find(|k| *k.key_type() == t)
                    .map(|k| k.attribute_name().to_owned())
            };
            Index {
                name: i.index_name().map(str::to_owned),
                partition_key: key(aws_sdk_dynamodb::types::KeyType::Hash),
                sort_key: key(aws_sdk_dynamodb::types::KeyType::Range),
                projection: i
                    .projection()
                    .and_then(|p| p.projection_type())
                    .map(|p| p.as_str().to_owned()),
            }
        })
        .collect();
    indexes.sort_by(|a, b| a.name.cmp(&b.name));
    let billing = table
        .billing_mode_summary()
        .and_then(|b| b.billing_mode())
        .map_or("PROVISIONED", |m| m.as_str());
    let ttl = r
        .clients
        .dynamodb
        .describe_time_to_live()
        .table_name(name)
        .send()
        .await
        .map_err(|e| read_error(format!("TTL of {name}"), e))?
        .time_to_live_description
        .filter(|d| {
            matches!(
                d.time_to_live_status(),
                Some(
                    aws_sdk_dynamodb::types::TimeToLiveStatus::Enabled
                        | aws_sdk_dynamodb::types::TimeToLiveStatus::Enabling
                )
            )
        })
        .and_then(|d| d.attribute_name);
    let tags = match table.table_arn() {
        Some(arn) => r
            .clients
            .dynamodb
            .list_tags_of_resource()
            .resource_arn(arn)
            .send()
            .await
            .map_err(|e| read_error(format!("tags of {name}"), e))?
            .tags
            .unwrap_or_default(),
        None => vec![],
    };
    r.put(
        name,
        Table {
            keys,
            billing: billing.to_owned(),
            indexes,
            ttl_attribute: ttl,
            tags: our_tags(tags.iter().map(|t| (t.key(), t.value()))),
        },
    );
    Ok(())
}

async fn read_topic(r: &Reader<'_>, name: &str, arn: &str) -> Result<(), ObserveError> {
    match r
        .clients
        .sns
        .get_topic_attributes()
        .topic_arn(arn)
        .send()
        .await
    {
        Ok(_) => {}
        Err(e) if is_not_found(&e) => {
            return Ok(());
        }
        Err(e) => return Err(read_error(format!("topic {name}"), e)),
    }
    let tags = r
        .clients
        .sns
        .list_tags_for_resource()
        .resource_arn(arn)
        .send()
        .await
        .map_err(|e| read_error(format!("tags of topic {name}"), e))?
        .tags
        .unwrap_or_default();
    r.put(
        name,
        Topic {
            tags: our_tags(tags.iter().map(|t| (t.key(), t.value()))),
        },
    );
    Ok(())
}

/// The queue's URL, or `None` when there is no queue of that name.
pub async fn queue_url(
    sqs: &aws_sdk_sqs::Client,
    name: &str,
) -> Result<Option<String>, ObserveError> {
    match sqs.get_queue_url().queue_name(name).send().await {
        Ok(out) => Ok(out.queue_url),
        Err(e) if crate::errors::is_queue_missing(&e) => Ok(None),
        Err(e) => Err(read_error(format!("queue {name}"), e)),
    }
}

async fn read_queue(r: &Reader<'_>, name: &str) -> Result<(), ObserveError> {
    use aws_sdk_sqs::types::QueueAttributeName as A;
    let Some(url) = queue_url(&r.clients.sqs, name).await? else {
        return Ok(());
    };
    let attributes = match r
        .clients
        .sqs
        .get_queue_attributes()
        .queue_url(&url)
        .attribute_names(A::MessageRetentionPeriod)
        .attribute_names(A::VisibilityTimeout)
        .attribute_names(A::RedrivePolicy)
        .attribute_names(A::Policy)
        .send()
        .await
    {
        Ok(out) => out.attributes.unwrap_or_default(),
        // Deleted between the two calls.
        Err(e) if crate::errors::is_queue_missing(&e) => return Ok(()),
        Err(e) => return Err(read_error(format!("attributes of queue {name}"), e)),
    };
    let number = |a: A| attributes.get(&a).and_then(|v| v.parse::<u64>().ok());
    let document = |a: A| {
        attributes
            .get(&a)
            .filter(|v| !v.is_empty())
            .map_or(Value::Null, |v| {
                serde_json::from_str(v).unwrap_or_else(|_| Value::String(v.clone()))
            })
    };
    let mut redrive = document(A::RedrivePolicy);
    // SQS has answered maxReceiveCount both as a number and as a string: compare numbers.
    if let Some(n) = redrive
        .get("maxReceiveCount")
        .and_then(Value::as_str)
        .and_then(|count| count.parse::<u64>().ok())
    {
        redrive["maxReceiveCount"] = json!(n);
    }
    let tags = r
        .clients
        .sqs
        .list_queue_tags()
        .queue_url(&url)
        .send()
        .await
        .map_err(|e| read_error(format!("tags of queue {name}"), e))?
        .tags
        .unwrap_or_default();
    r.id(Kind::Queue, name, &url);
    r.put(
        name,
        Queue {
            message_retention_seconds: number(A::MessageRetentionPeriod),
            visibility_timeout_s: number(A::VisibilityTimeout),
            redrive_policy: redrive,
            policy: document(A::Policy),
            tags: our_tags(tags.iter().map(|(k, v)| (k.as_str(), v.as_str()))),
        },
    );
    Ok(())
}

/// The mapping from `queue_arn` to `function`, found by both (there is no name to read it by).
async fn read_event_source_mapping(
    r: &Reader<'_>,
    function: &str,
    queue_arn: &str,
    queue: &str,
) -> Result<(), ObserveError> {
    let mappings = match r
        .clients
        .lambda
        .list_event_source_mappings()
        .function_name(function)
        .event_source_arn(queue_arn)
        .send()
        .await
    {
        Ok(out) => out.event_source_mappings.unwrap_or_default(),
        Err(e) if is_not_found(&e) => {
            return Ok(());
        }
        Err(e) => {
            return Err(read_error(
                format!("event source mappings of {function}"),
                e,
            ));
        }
    };
    // One being deleted is as good as gone; a deploy creates a new one.
    let Some(m) = mappings
        .iter()
        .find(|m| m.event_source_arn() == Some(queue_arn) && m.state() != Some("Deleting"))
    else {
        return Ok(());
    };
    let key = format!("{function}/{queue}");
    if let Some(uuid) = m.uuid() {
        r.id(Kind::EventSourceMapping, &key, uuid);
    }
    let mut response_types: Vec<String> = m
        .function_response_types()
        .iter()
        .map(|t| t.as_str().to_owned())
        .collect();
    response_types.sort_unstable();
    r.put(
        &key,
        EventSourceMapping {
            event_source_arn: m.event_source_arn().map(str::to_owned),
            batch_size: m.batch_size().map(i64::from),
            maximum_batching_window_s: m.maximum_batching_window_in_seconds().map(i64::from),
            function_response_types: response_types,
        },
    );
    Ok(())
}

async fn read_schedule(r: &Reader<'_>, name: &str) -> Result<(), ObserveError> {
    let out = match r.clients.scheduler.get_schedule().name(name).send().await {
        Ok(out) => out,
        Err(e) if is_not_found(&e) => {
            return Ok(());
        }
        Err(e) => return Err(read_error(format!("schedule {name}"), e)),
    };
    let target = out.target();
    let retry = target.and_then(|t| t.retry_policy());
    r.put(
        name,
        Schedule {
            schedule_expression: out.schedule_expression().map(str::to_owned),
            flexible_time_window: out
                .flexible_time_window()
                .map(|w| w.mode().as_str().to_owned()),
            state: out.state().map(|s| s.as_str().to_owned()),
            target: ScheduleTarget {
                arn: target.map(|t| t.arn().to_owned()),
                role_arn: target.map(|t| t.role_arn().to_owned()),
                input: target.and_then(|t| t.input()).map(str::to_owned),
                maximum_retry_attempts: retry
                    .and_then(|p| p.maximum_retry_attempts())
                    .map(i64::from),
                maximum_event_age_s: retry
                    .and_then(|p| p.maximum_event_age_in_seconds())
                    .map(i64::from),
            },
        },
    );
    Ok(())
}

/// How many events wait in a stage's fan-out dead-letter queue (SQS's approximate count), or
/// `None` when the queue does not exist.
pub async fn dead_lettered(
    clients: &Clients,
    name: &StackName,
) -> Result<Option<u64>, ObserveError> {
    use aws_sdk_sqs::types::QueueAttributeName;
    let queue = name.names().dead_letter_queue();
    let Some(url) = queue_url(&clients.sqs, &queue).await? else {
        return Ok(None);
    };
    let attributes = match clients
        .sqs
        .get_queue_attributes()
        .queue_url(&url)
        .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
        .send()
        .await
    {
        Ok(out) => out.attributes.unwrap_or_default(),
        Err(e) if crate::errors::is_queue_missing(&e) => return Ok(None),
        Err(e) => return Err(read_error(format!("queue {queue}"), e)),
    };
    Ok(Some(
        attributes
            .get(&QueueAttributeName::ApproximateNumberOfMessages)
            .and_then(|v| v.parse().ok())
            .unwrap_or(0),
    ))
}

async fn read_event_invoke_config(r: &Reader<'_>, function: &str) -> Result<(), ObserveError> {
    let out = match r
        .clients
        .lambda
        .get_function_event_invoke_config()
        .function_name(function)
        .send()
        .await
    {
        Ok(out) => out,
        // No configuration, or no function (which then has none either).
        Err(e) if is_not_found(&e) => {
            return Ok(());
        }
        Err(e) => {
            return Err(read_error(format!("event-invoke config of {function}"), e));
        }
    };
    let destinations = out.destination_config();
    r.put(
        function,
        EventInvokeConfig {
            maximum_event_age_s: out.maximum_event_age_in_seconds().map(i64::from),
            maximum_retry_attempts: out.maximum_retry_attempts().map(i64::from),
            on_failure: destinations
                .and_then(|d| d.on_failure())
                .and_then(|f| f.destination())
                .map(str::to_owned),
            on_success: destinations
                .and_then(|d| d.on_success())
                .and_then(|f| f.destination())
                .map(str::to_owned),
        },
    );
    Ok(())
}

async fn read_parameter(r: &Reader<'_>, name: &str) -> Result<(), ObserveError> {
    let parameter = match r.clients.ssm.get_parameter().name(name).send().await {
        Ok(out) => out.parameter,
        Err(e) if is_not_found(&e) => {
            return Ok(());
        }
        Err(e) => return Err(read_error(format!("parameter {name}"), e)),
    };
    let kind = parameter
        .and_then(|p| p.r#type)
        .map(|t| t.as_str().to_owned());
    let tags = r
        .clients
        .ssm
        .list_tags_for_resource()
        .resource_type(aws_sdk_ssm::types::ResourceTypeForTagging::Parameter)
        .resource_id(name)
        .send()
        .await
        .map_err(|e| read_error(format!("tags of parameter {name}"), e))?
        .tag_list
        .unwrap_or_default();
    r.put(
        name,
        Parameter {
            r#type: kind,
            tags: our_tags(tags.iter().map(|t| (t.key(), t.value()))),
        },
    );
    Ok(())
}

async fn read_log_group(r: &Reader<'_>, name: &str) -> Result<(), ObserveError> {
    let groups = r
        .clients
        .logs
        .describe_log_groups()
        .log_group_name_prefix(name)
        .send()
        .await
        .map_err(|e| read_error(format!("log group {name}"), e))?
        .log_groups
        .unwrap_or_default();
    let Some(group) = groups
        .into_iter()
        .find(|g| g.log_group_name() == Some(name))
    else {
        return Ok(());
    };
    let arn = group
        .log_group_arn()
        .map(str::to_owned)
        .or_else(|| group.arn().map(|a| a.trim_end_matches(":*").to_owned()))
        .unwrap_or_default();
    let tags = r
        .clients
        .logs
        .list_tags_for_resource()
        .resource_arn(arn)
        .send()
        .await
        .map_err(|e| read_error(format!("tags of log group {name}"), e))?
        .tags
        .unwrap_or_default();
    r.put(
        name,
        LogGroup {
            retention_days: group.retention_in_days().map(i64::from),
            tags: our_tags(tags.iter().map(|(k, v)| (k.as_str(), v.as_str()))),
        },
    );
    Ok(())
}

/// The name under which an extra copy of a resource is observed: a create whose response was lost
/// and that was retried can leave two APIs (or integrations) behind. They plan as deletions.
pub fn duplicate_name(name: &str, id: &str) -> String {
    format!("{name} (duplicate {id})")
}

async fn list_apis(
    r: &Reader<'_>,
    name: &str,
) -> Result<Vec<aws_sdk_apigatewayv2::types::Api>, ObserveError> {
    let mut apis = Vec::new();
    let mut token = None;
    loop {
        let page = r
            .clients
            .apigw()
            .await
            .get_apis()
            .set_next_token(token)
            .send()
            .await
            .map_err(|e| read_error("WebSocket APIs", e))?;
        apis.extend(
            page.items
                .unwrap_or_default()
                .into_iter()
                // Name and protocol: an HTTP API that happens to share the name is not ours
                // to adopt or, worse, to destroy.
                .filter(|a| {
                    a.name() == Some(name)
                        && a.protocol_type()
                            == Some(&aws_sdk_apigatewayv2::types::ProtocolType::Websocket)
                }),
        );
        token = page.next_token.filter(|t| !t.is_empty());
        if token.is_none() {
            return Ok(apis);
        }
    }
}

async fn has_stage(r: &Reader<'_>, api_id: &str, stage: &str) -> Result<bool, ObserveError> {
    match r
        .clients
        .apigw()
        .await
        .get_stage()
        .api_id(api_id)
        .stage_name(stage)
        .send()
        .await
    {
        Ok(_) => Ok(true),
        Err(e) if is_not_found(&e) => Ok(false),
        Err(e) => Err(read_error(format!("stage {stage} of API {api_id}"), e)),
    }
}

/// The API named `name`, and any duplicates of it. With duplicates, the one that serves the stage
/// is kept, else the oldest.
async fn primary_api(
    r: &Reader<'_>,
    name: &str,
    stage: &str,
) -> Result<
    (
        Option<aws_sdk_apigatewayv2::types::Api>,
        Vec<aws_sdk_apigatewayv2::types::Api>,
    ),
    ObserveError,
> {
    let mut apis = list_apis(r, name).await?;
    if apis.is_empty() {
        return Ok((None, apis));
    }
    apis.sort_by(|a, b| (a.created_date(), a.api_id()).cmp(&(b.created_date(), b.api_id())));
    let mut primary = 0;
    if apis.len() > 1 {
        for (i, api) in apis.iter().enumerate() {
            if has_stage(r, api.api_id().unwrap_or_default(), stage).await? {
                primary = i;
                break;
            }
        }
    }
    let api = apis.swap_remove(primary);
    Ok((Some(api), apis))
}

/// The API, its integration, routes and stage; returns the API id when it exists.
/// The primary API's id and `ApiEndpoint`, and everything under it.
async fn read_api(
    r: &Reader<'_>,
    name: &str,
    stage: &str,
) -> Result<Option<(String, Option<String>)>, ObserveError> {
    let (api, extras) = primary_api(r, name, stage).await?;
    let Some(api) = api else {
        return Ok(None);
    };
    for extra in &extras {
        if let Some(id) = extra.api_id() {
            let key = duplicate_name(name, id);
            // Planned as a deletion: only that it exists matters.
            r.put(
                &key,
                Api {
                    protocol: extra.protocol_type().map(|p| p.as_str().to_owned()),
                    route_selection_expression: extra
                        .route_selection_expression()
                        .map(str::to_owned),
                    tags: our_tags(
                        extra
                            .tags()
                            .into_iter()
                            .flatten()
                            .map(|(k, v)| (k.as_str(), v.as_str())),
                    ),
                },
            );
            r.id(Kind::Api, &key, id);
        }
    }
    let Some(api_id) = api.api_id().map(str::to_owned) else {
        return Ok(None);
    };
    r.id(Kind::Api, name, &api_id);
    let tags = api.tags().cloned().unwrap_or_default();
    r.put(
        name,
        Api {
            protocol: api.protocol_type().map(|p| p.as_str().to_owned()),
            route_selection_expression: api.route_selection_expression().map(str::to_owned),
            tags: our_tags(tags.iter().map(|(k, v)| (k.as_str(), v.as_str()))),
        },
    );
    let integrations = r
        .clients
        .apigw()
        .await
        .get_integrations()
        .api_id(&api_id)
        .send()
        .await
        .map_err(|e| read_error(format!("integrations of {name}"), e))?
        .items
        .unwrap_or_default();
    let routes = list_routes(r, name, &api_id).await?;
    // The model has one integration. With more (a retried create), keep the one most routes use.
    let uses = |id: Option<&str>| {
        routes
            .iter()
            .filter(|route| {
                id.is_some_and(|id| route.target() == Some(&format!("integrations/{id}")))
            })
            .count()
    };
    let integration_id = integrations
        .iter()
        .max_by_key(|i| {
            (
                uses(i.integration_id()),
                std::cmp::Reverse(i.integration_id()),
            )
        })
        .and_then(|i| i.integration_id().map(str::to_owned));
    let integration_name = format!("{name}/ws");
    for i in &integrations {
        let Some(id) = i.integration_id() else {
            continue;
        };
        let integration = Integration {
            r#type: i.integration_type().map(|t| t.as_str().to_owned()),
            uri: i.integration_uri().map(str::to_owned),
        };
        if Some(id) == integration_id.as_deref() {
            r.id(Kind::Integration, &integration_name, id);
            r.put(&integration_name, integration);
        } else {
            let key = duplicate_name(&integration_name, id);
            r.id(Kind::Integration, &key, id);
            r.put(&key, integration);
        }
    }
    // Every route of the API is observed: ones the model no longer has plan as deletions.
    for route in routes {
        let (Some(key), Some(route_id)) = (route.route_key(), route.route_id()) else {
            continue;
        };
        // The model names the integration symbolically; map our integration's id back to it.
        let target = match (route.target(), &integration_id) {
            (Some(t), Some(id)) if t == format!("integrations/{id}") => {
                format!("integrations/{integration_name}")
            }
            (Some(t), _) => t.to_owned(),
            (None, _) => String::new(),
        };
        let route_name = format!("{name}/{key}");
        r.id(Kind::Route, &route_name, route_id);
        r.put(&route_name, Route { target });
    }
    match r
        .clients
        .apigw()
        .await
        .get_stage()
        .api_id(&api_id)
        .stage_name(stage)
        .send()
        .await
    {
        Ok(s) => {
            let settings = s.default_route_settings();
            let tags = s.tags().cloned().unwrap_or_default();
            let stage_name = format!("{name}/{stage}");
            r.id(Kind::Stage, &stage_name, stage);
            r.put(
                &stage_name,
                Stage {
                    auto_deploy: s.auto_deploy().unwrap_or(false),
                    throttle_rate: settings.and_then(|s| s.throttling_rate_limit()),
                    throttle_burst: settings
                        .and_then(|s| s.throttling_burst_limit())
                        .map(i64::from),
                    tags: our_tags(tags.iter().map(|(k, v)| (k.as_str(), v.as_str()))),
                },
            );
        }
        Err(e) if is_not_found(&e) => {}
        Err(e) => return Err(read_error(format!("stage {stage} of {name}"), e)),
    }
    Ok(Some((api_id, api.api_endpoint().map(str::to_owned))))
}

async fn list_routes(
    r: &Reader<'_>,
    name: &str,
    api_id: &str,
) -> Result<Vec<aws_sdk_apigatewayv2::types::Route>, ObserveError> {
    all_routes(r.clients, api_id)
        .await
        .map_err(|e| read_error(format!("routes of {name}"), e))
}

/// Every route of the API, through every page of GetRoutes (observe reads them; apply looks
/// one up by key after a conflict).
pub(crate) async fn all_routes(
    clients: &Clients,
    api_id: &str,
) -> Result<
    Vec<aws_sdk_apigatewayv2::types::Route>,
    aws_sdk_apigatewayv2::error::SdkError<
        aws_sdk_apigatewayv2::operation::get_routes::GetRoutesError,
    >,
> {
    let mut routes = Vec::new();
    let mut token = None;
    loop {
        let page = clients
            .apigw()
            .await
            .get_routes()
            .api_id(api_id)
            .set_next_token(token)
            .send()
            .await?;
        routes.extend(page.items.unwrap_or_default());
        token = page.next_token.filter(|t| !t.is_empty());
        if token.is_none() {
            return Ok(routes);
        }
    }
}

async fn read_role(r: &Reader<'_>, name: &str) -> Result<(), ObserveError> {
    let role = match r.clients.iam.get_role().role_name(name).send().await {
        Ok(out) => out.role,
        Err(e) if is_not_found(&e) => {
            return Ok(());
        }
        Err(e) => return Err(read_error(format!("role {name}"), e)),
    };
    let Some(role) = role else { return Ok(()) };
    let policy = match r
        .clients
        .iam
        .get_role_policy()
        .role_name(name)
        .policy_name(crate::stack::INLINE_POLICY)
        .send()
        .await
    {
        Ok(out) => decode_policy(out.policy_document()),
        Err(e) if is_not_found(&e) => Value::Null,
        Err(e) => return Err(read_error(format!("policy of role {name}"), e)),
    };
    r.put(
        name,
        Role {
            assume_role_policy: role
                .assume_role_policy_document()
                .map_or(Value::Null, decode_policy),
            inline_policy: policy,
            tags: our_tags(role.tags().iter().map(|t| (t.key(), t.value()))),
        },
    );
    Ok(())
}

async fn read_function(r: &Reader<'_>, name: &str) -> Result<(), ObserveError> {
    let out = match r
        .clients
        .lambda
        .get_function()
        .function_name(name)
        .send()
        .await
    {
        Ok(out) => out,
        Err(e) if is_not_found(&e) => {
            return Ok(());
        }
        Err(e) => return Err(read_error(format!("function {name}"), e)),
    };
    let Some(c) = out.configuration() else {
        return Ok(());
    };
    let environment: BTreeMap<String, String> = c
        .environment()
        .and_then(|e| e.variables())
        .cloned()
        .map(|v| v.into_iter().collect())
        .unwrap_or_default();
    let tags = out.tags().cloned().unwrap_or_default();
    r.put(
        name,
        Function {
            runtime: c.runtime().map(|r| r.as_str().to_owned()),
            handler: c.handler().map(str::to_owned),
            architecture: c.architectures().first().map(|a| a.as_str().to_owned()),
            memory_mb: c.memory_size().map(i64::from),
            timeout_s: c.timeout().map(i64::from),
            role: c.role().map(str::to_owned),
            code_sha256: c.code_sha256().map(str::to_owned),
            environment,
            tags: our_tags(tags.iter().map(|(k, v)| (k.as_str(), v.as_str()))),
        },
    );
    Ok(())
}

async fn read_permission(r: &Reader<'_>, function: &str, source: &str) -> Result<(), ObserveError> {
    let policy = match r
        .clients
        .lambda
        .get_policy()
        .function_name(function)
        .send()
        .await
    {
        Ok(out) => out.policy.unwrap_or_default(),
        Err(e) if is_not_found(&e) => {
            return Ok(());
        }
        Err(e) => return Err(read_error(format!("resource policy of {function}"), e)),
    };
    let policy: Value = serde_json::from_str(&policy).unwrap_or(Value::Null);
    let sid = crate::stack::permission_sid(source);
    let Some(statement) = policy["Statement"]
        .as_array()
        .and_then(|s| s.iter().find(|st| st["Sid"] == json!(sid)))
    else {
        return Ok(());
    };
    let text = |v: &Value| v.as_str().map(str::to_owned);
    r.put(
        &format!("{function}/{source}"),
        Permission {
            principal: text(&statement["Principal"]["Service"]),
            action: text(&statement["Action"]),
            source_arn: text(&statement["Condition"]["ArnLike"]["AWS:SourceArn"]),
        },
    );
    Ok(())
}

async fn read_subscription(
    r: &Reader<'_>,
    topic: &str,
    topic_arn: &str,
    endpoint: &str,
) -> Result<(), ObserveError> {
    let subscriptions = match r
        .clients
        .sns
        .list_subscriptions_by_topic()
        .topic_arn(topic_arn)
        .send()
        .await
    {
        Ok(out) => out.subscriptions.unwrap_or_default(),
        Err(e) if is_not_found(&e) => {
            return Ok(());
        }
        Err(e) => return Err(read_error(format!("subscriptions of {topic}"), e)),
    };
    if let Some(s) = subscriptions
        .iter()
        .find(|s| s.endpoint() == Some(endpoint))
    {
        // The function's or the queue's name: the last part of the endpoint's ARN.
        let target = endpoint.rsplit(':').next().unwrap_or_default();
        let key = format!("{topic}/{target}");
        let mut attributes = std::collections::HashMap::new();
        // A subscription still pending confirmation has no ARN yet, and no attributes to read.
        if let Some(arn) = s.subscription_arn().filter(|a| a.starts_with("arn:")) {
            r.id(Kind::Subscription, &key, arn);
            attributes = r
                .clients
                .sns
                .get_subscription_attributes()
                .subscription_arn(arn)
                .send()
                .await
                .map_err(|e| read_error(format!("attributes of subscription {key}"), e))?
                .attributes
                .unwrap_or_default();
        }
        let filter_policy = attributes
            .get("FilterPolicy")
            .filter(|v| !v.is_empty())
            .map_or(Value::Null, |v| {
                serde_json::from_str(v).unwrap_or_else(|_| Value::String(v.clone()))
            });
        r.put(
            &key,
            Subscription {
                protocol: s.protocol().map(str::to_owned),
                endpoint: s.endpoint().map(str::to_owned),
                filter_policy,
                raw_message_delivery: attributes.get("RawMessageDelivery").map(String::as_str)
                    == Some("true"),
            },
        );
    }
    Ok(())
}
