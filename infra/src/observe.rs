//! Observe: read what exists of a stage from AWS into the typed properties the stack model uses,
//! so `plan` can diff them. Read-only; every resource is found by its deterministic name. This
//! module runs the readers concurrently and collects what they find; each kind's reader lives
//! with its properties in [`crate::kinds`].

use aws_config::SdkConfig;
use serde_json::Value;

use crate::calls::CallCounter;
pub use crate::kinds::api::duplicate_name;
use crate::kinds::api::{primary_api, read_api};
use crate::kinds::function::{
    read_alias, read_event_invoke_config, read_event_source_mapping, read_function, read_permission,
};
use crate::kinds::log_group::read_log_group;
use crate::kinds::parameter::read_parameter;
pub use crate::kinds::queue::queue_url;
use crate::kinds::queue::read_queue;
use crate::kinds::role::read_role;
use crate::kinds::schedule::read_schedule;
use crate::kinds::table::read_table;
use crate::kinds::topic::{read_subscription, read_topic};
use crate::kinds::{Properties, Tags};
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

pub(crate) fn read_error(what: impl Into<String>, err: impl std::error::Error) -> ObserveError {
    ObserveError::Read {
        what: what.into(),
        why: aws_sdk_dynamodb::error::DisplayErrorContext(err).to_string(),
    }
}

/// How many times chatctl tries a call by default. A deploy makes a hundred control-plane
/// calls; with the SDK's three attempts, AWS throttling a tenth of them (IAM, Lambda and API
/// Gateway all do under load) fails one call of a deploy in most runs. Eight attempts with the
/// SDK's jittered exponential backoff (capped at 20 s) ride that out; the deploy fault matrix
/// (20 % of calls throttled or failed) converges with them.
pub const ATTEMPTS: u32 = 8;

/// `config` with [`ATTEMPTS`] when it has the SDK's default of three; a count the user chose
/// (`AWS_MAX_ATTEMPTS`, `max_attempts` in the profile) other than three is kept.
pub fn with_patient_retries(config: &SdkConfig) -> SdkConfig {
    use aws_config::retry::RetryConfig;
    let retry = config
        .retry_config()
        .cloned()
        .unwrap_or_else(RetryConfig::standard);
    if retry.max_attempts() != RetryConfig::standard().max_attempts() {
        return config.clone();
    }
    config
        .to_builder()
        .retry_config(retry.with_max_attempts(ATTEMPTS))
        .build()
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
        let config = &with_patient_retries(config);
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

pub(crate) fn our_tags<'a>(tags: impl IntoIterator<Item = (&'a str, &'a str)>) -> Tags {
    tags.into_iter()
        .filter(|(k, _)| k.starts_with("chatctl:"))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

pub(crate) fn decode_policy(text: &str) -> Value {
    // IAM returns policy documents URL-encoded.
    let decoded = url::form_urlencoded::parse(format!("x={text}").as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default();
    serde_json::from_str(&decoded).unwrap_or(Value::String(decoded))
}

/// Collects what the readers find; they run concurrently, so it sits behind a mutex.
pub(crate) struct Reader<'a> {
    pub(crate) clients: &'a Clients,
    pub(crate) observed: std::sync::Mutex<Observed>,
}

impl Reader<'_> {
    pub(crate) fn put(&self, name: &str, props: impl Into<Properties>) {
        let props = props.into();
        if let Ok(mut observed) = self.observed.lock() {
            observed
                .resources
                .insert((props.kind(), name.to_owned()), props);
        }
    }

    pub(crate) fn id(&self, kind: Kind, name: &str, id: &str) {
        if let Ok(mut observed) = self.observed.lock() {
            observed.ids.insert((kind, name.to_owned()), id.to_owned());
        }
    }

    pub(crate) fn into_observed(self) -> Observed {
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
    let fanout_arn = arns.function(&names.alias("fanout"));
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
        read_alias(&r, &ws),
        read_alias(&r, &fanout),
        read_queue(&r, &dlq),
        read_queue(&r, &presence),
        read_event_invoke_config(&r, &fanout),
        read_event_source_mapping(&r, &fanout, &fanout_arn, &presence_arn, &presence),
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
