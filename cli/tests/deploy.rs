//! `chatctl deploy`, `destroy`, `status` and `outputs` against moto, through a recording,
//! fault-injecting proxy (`chatctl_e2e::proxy`) so each run's AWS calls can be counted on their
//! own while other tests share the same moto. Every check of what exists is made with separate
//! SDK clients talking to moto directly — never through chatctl's observe code.
//!
//! moto gaps: API Gateway v2 `UpdateStage` answers 500, so the in-place stage update is covered
//! by recorded responses in `infra/src/apply.rs`; moto does not enforce IAM, so the policies are
//! checked for scope in `infra/src/stack.rs`; `CreateDeployment` is never needed (auto-deploy).
//! moto does not refuse re-creating an SQS queue within 60 s of deleting it (AWS answers
//! `QueueDeletedRecently`), and its `UpdateFunctionEventInvokeConfig` and a second
//! `PutFunctionEventInvokeConfig` append a configuration while `Get` keeps answering the first:
//! the queue-name wait and the in-place config update are covered by recorded responses in
//! `infra/src/apply.rs` instead. moto invokes no Lambda, so nothing is ever dead-lettered by
//! Lambda here: the status test puts a message into the dead-letter queue itself.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use aws_config::SdkConfig;
use chatctl_e2e::latency::Latency;
use chatctl_e2e::moto::{Moto, fake_artifacts, fake_artifacts_of};
use chatctl_e2e::proxy::{AwsProxy, Call, Fault};
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_chatctl");

#[path = "deploy/cross_check.rs"]
mod cross_check;
#[path = "deploy/faults.rs"]
mod faults;
#[path = "deploy/releases.rs"]
mod releases;
#[path = "deploy/secrets.rs"]
mod secrets;

/// Resources of a stage: 2 tables, the topic, 2 queues (the fan-out's dead-letter queue and the
/// presence queue), the secret, 2 log groups, the API, 3 roles (the functions' and the
/// scheduler's), 2 functions, the fan-out's event-invoke config, its event source mapping from the
/// presence queue, the presence-sweep schedule, the integration, 10 routes, the stage, 2
/// permissions, 2 subscriptions (chat events to the function, presence to the queue), and the
/// 2 functions' `live` aliases (each a published version).
const RESOURCES: u64 = 35;

/// A function's `live` alias, which every trigger invokes (and moto lists mappings by).
fn live_arn(function: &str) -> String {
    format!("arn:aws:lambda:us-east-1:123456789012:function:{function}:live")
}

/// One test's stage, behind its own proxy.
struct Stage {
    name: String,
    proxy: AwsProxy,
    /// Straight to moto: the independent observer.
    moto: SdkConfig,
    artifacts: tempfile::TempDir,
    config: PathBuf,
}

impl Stage {
    fn new() -> Self {
        Self::on(Moto::shared())
    }

    fn on(moto: &Moto) -> Self {
        let name = format!(
            "ci{}",
            &ulid::Ulid::generate().to_string().to_lowercase()[18..]
        );
        let artifacts = tempfile::tempdir().unwrap();
        fake_artifacts(artifacts.path(), "v1");
        let config = artifacts.path().join("chatctl.toml");
        std::fs::write(&config, "app = \"chat\"\n").unwrap();
        Self {
            name,
            proxy: AwsProxy::start(&moto.endpoint),
            moto: moto.sdk_config(),
            artifacts,
            config,
        }
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(BIN);
        cmd.args(args)
            .args(["--stage", &self.name, "--region", "us-east-1"])
            .args(["--endpoint-url", &self.proxy.endpoint])
            .arg("--config")
            .arg(&self.config)
            .env("AWS_ACCESS_KEY_ID", "testing")
            .env("AWS_SECRET_ACCESS_KEY", "testing")
            .env_remove("AWS_PROFILE")
            .env("CI", "true")
            .stdin(Stdio::null());
        cmd
    }

    fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().unwrap()
    }

    fn deploy(&self, extra: &[&str]) -> Output {
        let mut args = vec!["deploy", "--yes", "--output", "json", "--artifacts"];
        let dir = self.artifacts.path().to_str().unwrap().to_owned();
        args.push(&dir);
        args.extend_from_slice(extra);
        self.run(&args)
    }

    /// Start a deploy (its output to `output`) and wait until one of its calls reached `gate`;
    /// the running deploy, and whether a call got there within a minute.
    async fn deploy_until(
        &self,
        gate: &chatctl_e2e::proxy::Gate,
        output: fn() -> Stdio,
    ) -> (std::process::Child, bool) {
        let dir = self.artifacts.path().to_str().unwrap().to_owned();
        let child = self
            .command(&["deploy", "--yes", "--output", "json", "--artifacts", &dir])
            .stdout(output())
            .stderr(output())
            .spawn()
            .unwrap();
        let reached = tokio::task::spawn_blocking({
            let gate = gate.clone();
            move || gate.wait_reached(Duration::from_secs(60))
        })
        .await
        .unwrap();
        (child, reached)
    }

    /// Start a deploy, and `kill -9` it once one of its calls reached `gate` (false if none did
    /// within a minute).
    async fn deploy_killed_at(&self, gate: &chatctl_e2e::proxy::Gate) -> bool {
        let (mut child, reached) = self.deploy_until(gate, Stdio::null).await;
        child.kill().unwrap();
        child.wait().unwrap();
        reached
    }

    /// The APIs named after the stage, read straight from moto (a lost CreateApi answer that
    /// was retried could make two).
    async fn apis_named(&self) -> usize {
        let name = format!("{}-api", self.prefix());
        aws_sdk_apigatewayv2::Client::new(&self.moto)
            .get_apis()
            .send()
            .await
            .unwrap()
            .items()
            .iter()
            .filter(|a| a.name() == Some(name.as_str()))
            .count()
    }

    fn prefix(&self) -> String {
        format!("chat-{}", self.name)
    }

    fn lock_parameter(&self) -> String {
        format!("/chatctl/chat/{}/deploy-lock", self.name)
    }

    /// The changing calls since the last look, apart from taking and releasing the lock.
    fn changes(&self) -> Vec<Call> {
        let lock = self.lock_parameter();
        self.proxy
            .take_calls()
            .into_iter()
            .filter(|c| c.mutating() && !c.body.contains(&lock))
            .collect()
    }
}

fn ok(out: &Output) -> Vec<Value> {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "stderr: {stderr}");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}\n{stderr}")))
        .collect()
}

fn last(events: &[Value]) -> &Value {
    events.last().unwrap()
}

fn ops(calls: &[Call]) -> Vec<String> {
    calls.iter().map(|c| c.operation.clone()).collect()
}

/// Everything of the stage that exists, read straight from moto with plain SDK calls.
async fn leftovers(config: &SdkConfig, stage: &str) -> Vec<String> {
    let mut found: Vec<String> = Vec::new();
    found.extend(
        aws_sdk_dynamodb::Client::new(config)
            .list_tables()
            .send()
            .await
            .unwrap()
            .table_names
            .unwrap_or_default(),
    );
    let topics = aws_sdk_sns::Client::new(config).list_topics().send().await;
    found.extend(
        topics
            .unwrap()
            .topics()
            .iter()
            .filter_map(|t| t.topic_arn.clone()),
    );
    let parameters = aws_sdk_ssm::Client::new(config)
        .get_parameters_by_path()
        .path(format!("/chatctl/chat/{stage}"))
        .recursive(true)
        .send()
        .await;
    found.extend(
        parameters
            .unwrap()
            .parameters()
            .iter()
            .filter_map(|p| p.name.clone()),
    );
    let groups = aws_sdk_cloudwatchlogs::Client::new(config)
        .describe_log_groups()
        .send()
        .await;
    found.extend(
        groups
            .unwrap()
            .log_groups()
            .iter()
            .filter_map(|g| g.log_group_name.clone()),
    );
    let apis = aws_sdk_apigatewayv2::Client::new(config)
        .get_apis()
        .send()
        .await;
    found.extend(apis.unwrap().items().iter().filter_map(|a| a.name.clone()));
    let roles = aws_sdk_iam::Client::new(config).list_roles().send().await;
    found.extend(roles.unwrap().roles().iter().map(|r| r.role_name.clone()));
    let functions = aws_sdk_lambda::Client::new(config)
        .list_functions()
        .send()
        .await;
    found.extend(
        functions
            .unwrap()
            .functions()
            .iter()
            .filter_map(|f| f.function_name.clone()),
    );
    // Everything of the stage has `chat-{stage}` in its name, or lives under its SSM path.
    let prefix = format!("chat-{stage}");
    let queues = aws_sdk_sqs::Client::new(config)
        .list_queues()
        .queue_name_prefix(&prefix)
        .send()
        .await;
    found.extend(queues.unwrap().queue_urls().iter().cloned());
    // A configuration outlives nothing (it goes with its function), but check it on its own: a
    // destroy that removed the function first would hide a config it failed to delete.
    let config_left = aws_sdk_lambda::Client::new(config)
        .get_function_event_invoke_config()
        .function_name(format!("{prefix}-fanout"))
        .send()
        .await;
    if config_left.is_ok() {
        found.push(format!("event-invoke config of {prefix}-fanout"));
    }
    // Mappings, subscriptions and schedules are named after what they connect.
    let mappings = aws_sdk_lambda::Client::new(config)
        .list_event_source_mappings()
        .send()
        .await;
    found.extend(
        mappings
            .unwrap()
            .event_source_mappings()
            .iter()
            .filter_map(|m| m.event_source_arn.clone())
            .map(|arn| format!("event source mapping from {arn}")),
    );
    let subscriptions = aws_sdk_sns::Client::new(config)
        .list_subscriptions()
        .send()
        .await;
    found.extend(
        subscriptions
            .unwrap()
            .subscriptions()
            .iter()
            .filter_map(|s| s.endpoint.clone())
            .map(|endpoint| format!("subscription of {endpoint}")),
    );
    let schedules = aws_sdk_scheduler::Client::new(config)
        .list_schedules()
        .name_prefix(&prefix)
        .send()
        .await;
    found.extend(
        schedules
            .unwrap()
            .schedules()
            .iter()
            .filter_map(|s| s.name.clone()),
    );
    found.retain(|n| n.contains(&prefix) || n.starts_with(&format!("/chatctl/chat/{stage}/")));
    found.sort();
    found
}

/// Check every resource of a deployed stage from outside.
async fn check_deployed(config: &SdkConfig, stage: &str, api_id: &str) {
    let prefix = format!("chat-{stage}");
    let tags = |list: Vec<(String, String)>| {
        let mut ours: Vec<_> = list
            .into_iter()
            .filter(|(k, _)| k.starts_with("chatctl:"))
            .collect();
        ours.sort();
        assert_eq!(
            ours,
            [
                ("chatctl:app".to_owned(), "chat".to_owned()),
                ("chatctl:stage".to_owned(), stage.to_owned())
            ]
        );
    };

    let db = aws_sdk_dynamodb::Client::new(config);
    for (table, indexes, ttl) in [
        (format!("{prefix}-messages"), vec![], None),
        (
            format!("{prefix}-connections"),
            vec!["by-shard"],
            Some("expiresAt"),
        ),
    ] {
        let t = db
            .describe_table()
            .table_name(&table)
            .send()
            .await
            .unwrap()
            .table
            .unwrap();
        let keys: Vec<_> = t.key_schema().iter().map(|k| k.attribute_name()).collect();
        assert_eq!(keys, ["pk", "sk"], "{table}");
        let mut names: Vec<_> = t
            .global_secondary_indexes()
            .iter()
            .filter_map(|i| i.index_name())
            .collect();
        names.sort_unstable();
        assert_eq!(names, indexes, "{table}");
        assert_eq!(
            t.billing_mode_summary().and_then(|b| b.billing_mode()),
            Some(&aws_sdk_dynamodb::types::BillingMode::PayPerRequest)
        );
        let live = db
            .describe_time_to_live()
            .table_name(&table)
            .send()
            .await
            .unwrap()
            .time_to_live_description
            .and_then(|d| d.attribute_name);
        assert_eq!(live.as_deref(), ttl, "{table}");
        let t_tags = db
            .list_tags_of_resource()
            .resource_arn(t.table_arn().unwrap())
            .send()
            .await
            .unwrap()
            .tags
            .unwrap_or_default();
        tags(
            t_tags
                .into_iter()
                .map(|t| (t.key, t.value))
                .collect::<Vec<_>>(),
        );
    }

    let topic_arn = format!("arn:aws:sns:us-east-1:123456789012:{prefix}-events");
    let sns = aws_sdk_sns::Client::new(config);
    let topic_tags = sns
        .list_tags_for_resource()
        .resource_arn(&topic_arn)
        .send()
        .await
        .unwrap()
        .tags
        .unwrap_or_default();
    tags(topic_tags.into_iter().map(|t| (t.key, t.value)).collect());
    let subs = sns
        .list_subscriptions_by_topic()
        .topic_arn(&topic_arn)
        .send()
        .await
        .unwrap()
        .subscriptions
        .unwrap_or_default();
    // The function's and the presence queue's, with their filters: checked below.
    assert_eq!(subs.len(), 2, "{subs:?}");

    let secret = aws_sdk_ssm::Client::new(config)
        .get_parameter()
        .name(format!("/chatctl/chat/{stage}/token-secret"))
        .with_decryption(true)
        .send()
        .await
        .unwrap()
        .parameter
        .unwrap();
    assert_eq!(
        secret.r#type(),
        Some(&aws_sdk_ssm::types::ParameterType::SecureString)
    );
    assert_eq!(
        secret.value().map(str::len),
        Some(64),
        "32 random bytes as hex"
    );

    let logs = aws_sdk_cloudwatchlogs::Client::new(config);
    for role in ["ws", "fanout"] {
        let name = format!("/aws/lambda/{prefix}-{role}");
        let group = logs
            .describe_log_groups()
            .log_group_name_prefix(&name)
            .send()
            .await
            .unwrap()
            .log_groups
            .unwrap()
            .into_iter()
            .find(|g| g.log_group_name() == Some(name.as_str()))
            .unwrap();
        assert_eq!(group.retention_in_days(), Some(14));
    }

    let apigw = aws_sdk_apigatewayv2::Client::new(config);
    let api = apigw.get_api().api_id(api_id).send().await.unwrap();
    assert_eq!(api.name(), Some(format!("{prefix}-api").as_str()));
    assert_eq!(
        api.protocol_type(),
        Some(&aws_sdk_apigatewayv2::types::ProtocolType::Websocket)
    );
    assert_eq!(
        api.route_selection_expression(),
        Some("$request.body.action")
    );
    let integrations = apigw
        .get_integrations()
        .api_id(api_id)
        .send()
        .await
        .unwrap()
        .items
        .unwrap();
    assert_eq!(integrations.len(), 1);
    let integration = &integrations[0];
    assert!(
        integration
            .integration_uri()
            .unwrap()
            .ends_with(&format!("function:{prefix}-ws:live/invocations")),
        "{integration:?}"
    );
    let target = format!("integrations/{}", integration.integration_id().unwrap());
    let routes = apigw
        .get_routes()
        .api_id(api_id)
        .send()
        .await
        .unwrap()
        .items
        .unwrap();
    let mut keys: Vec<_> = routes.iter().filter_map(|r| r.route_key()).collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        [
            "$connect",
            "$default",
            "$disconnect",
            "history",
            "join",
            "leave",
            "ping",
            "presence",
            "recall",
            "send"
        ]
    );
    assert!(routes.iter().all(|r| r.target() == Some(target.as_str())));
    let stage_out = apigw
        .get_stage()
        .api_id(api_id)
        .stage_name(stage)
        .send()
        .await
        .unwrap();
    assert_eq!(stage_out.auto_deploy(), Some(true));

    let iam = aws_sdk_iam::Client::new(config);
    for role in ["ws", "fanout"] {
        let name = format!("{prefix}-{role}-role");
        let policy = iam
            .get_role_policy()
            .role_name(&name)
            .policy_name("chatctl")
            .send()
            .await
            .unwrap();
        let document = url_decode(policy.policy_document());
        assert!(
            document.contains(&format!("table/{prefix}-connections")),
            "{document}"
        );
        assert_eq!(
            document.contains("ssm:GetParameter"),
            role == "ws",
            "only the ws role reads the secret: {document}"
        );
    }

    // The fan-out's asynchronous invocations are bounded: one retry, 60 s, then the DLQ.
    let dlq_arn = format!("arn:aws:sqs:us-east-1:123456789012:{prefix}-fanout-dlq");
    let fanout_policy = url_decode(
        iam.get_role_policy()
            .role_name(format!("{prefix}-fanout-role"))
            .policy_name("chatctl")
            .send()
            .await
            .unwrap()
            .policy_document(),
    );
    let fanout_policy: Value = serde_json::from_str(&fanout_policy).unwrap();
    assert!(
        fanout_policy["Statement"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["Action"] == "sqs:SendMessage" && s["Resource"] == dlq_arn.as_str()),
        "the fan-out role may send to its DLQ: {fanout_policy}"
    );
    let invoke = aws_sdk_lambda::Client::new(config)
        .get_function_event_invoke_config()
        .function_name(format!("{prefix}-fanout"))
        .send()
        .await
        .unwrap();
    assert_eq!(invoke.maximum_event_age_in_seconds(), Some(60));
    assert_eq!(invoke.maximum_retry_attempts(), Some(1));
    assert_eq!(
        invoke
            .destination_config()
            .and_then(|d| d.on_failure())
            .and_then(|f| f.destination()),
        Some(dlq_arn.as_str())
    );
    let sqs = aws_sdk_sqs::Client::new(config);
    let dlq_url = sqs
        .get_queue_url()
        .queue_name(format!("{prefix}-fanout-dlq"))
        .send()
        .await
        .unwrap()
        .queue_url
        .unwrap();
    let attributes = sqs
        .get_queue_attributes()
        .queue_url(&dlq_url)
        .attribute_names(aws_sdk_sqs::types::QueueAttributeName::All)
        .send()
        .await
        .unwrap()
        .attributes
        .unwrap();
    let attribute = |name: aws_sdk_sqs::types::QueueAttributeName| {
        attributes.get(&name).cloned().unwrap_or_default()
    };
    assert_eq!(
        attribute(aws_sdk_sqs::types::QueueAttributeName::MessageRetentionPeriod),
        "1209600"
    );
    assert_eq!(
        attribute(aws_sdk_sqs::types::QueueAttributeName::QueueArn),
        dlq_arn
    );
    assert!(
        attribute(aws_sdk_sqs::types::QueueAttributeName::FifoQueue) != "true",
        "a standard queue"
    );
    tags(
        sqs.list_queue_tags()
            .queue_url(&dlq_url)
            .send()
            .await
            .unwrap()
            .tags
            .unwrap_or_default()
            .into_iter()
            .collect(),
    );

    // Presence goes through its queue: short-lived, redriven to the DLQ, writable by the topic
    // only; chat events go straight to the function. Each subscription filters on eventType.
    let presence_arn = format!("arn:aws:sqs:us-east-1:123456789012:{prefix}-presence");
    let topic_arn = format!("arn:aws:sns:us-east-1:123456789012:{prefix}-events");
    // Every trigger of the fan-out invokes its `live` alias.
    let fanout_arn = live_arn(&format!("{prefix}-fanout"));
    let presence_url = sqs
        .get_queue_url()
        .queue_name(format!("{prefix}-presence"))
        .send()
        .await
        .unwrap()
        .queue_url
        .unwrap();
    let presence = sqs
        .get_queue_attributes()
        .queue_url(&presence_url)
        .attribute_names(aws_sdk_sqs::types::QueueAttributeName::All)
        .send()
        .await
        .unwrap()
        .attributes
        .unwrap();
    let presence_attribute = |name: aws_sdk_sqs::types::QueueAttributeName| {
        presence.get(&name).cloned().unwrap_or_default()
    };
    use aws_sdk_sqs::types::QueueAttributeName as Q;
    assert_eq!(presence_attribute(Q::MessageRetentionPeriod), "300");
    // Six times the function's 10 s timeout.
    assert_eq!(presence_attribute(Q::VisibilityTimeout), "60");
    let redrive: Value = serde_json::from_str(&presence_attribute(Q::RedrivePolicy)).unwrap();
    assert_eq!(redrive["deadLetterTargetArn"], dlq_arn.as_str());
    assert_eq!(
        redrive["maxReceiveCount"].to_string().trim_matches('"'),
        "2"
    );
    let queue_policy: Value = serde_json::from_str(&presence_attribute(Q::Policy)).unwrap();
    let statement = &queue_policy["Statement"][0];
    assert_eq!(statement["Principal"]["Service"], "sns.amazonaws.com");
    assert_eq!(statement["Action"], "sqs:SendMessage");
    assert_eq!(statement["Resource"], presence_arn.as_str());
    assert_eq!(
        statement["Condition"]["ArnEquals"]["aws:SourceArn"],
        topic_arn.as_str()
    );
    assert_eq!(
        queue_policy["Statement"].as_array().unwrap().len(),
        1,
        "{queue_policy}"
    );
    let sns = aws_sdk_sns::Client::new(config);
    let mut seen = subscriptions_of(&sns, &topic_arn).await;
    seen.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        seen,
        vec![
            (
                "lambda".to_owned(),
                fanout_arn.clone(),
                serde_json::json!({"eventType": ["message", "recalled"]}),
                false
            ),
            (
                "sqs".to_owned(),
                presence_arn.clone(),
                serde_json::json!({"eventType": ["presence"]}),
                true
            ),
        ]
    );
    let mappings = aws_sdk_lambda::Client::new(config)
        .list_event_source_mappings()
        .function_name(live_arn(&format!("{prefix}-fanout")))
        .send()
        .await
        .unwrap();
    let [mapping] = mappings.event_source_mappings() else {
        panic!("one mapping: {mappings:?}");
    };
    assert_eq!(mapping.event_source_arn(), Some(presence_arn.as_str()));
    assert_eq!(mapping.batch_size(), Some(1000));
    assert_eq!(mapping.maximum_batching_window_in_seconds(), Some(1));
    assert_eq!(
        mapping.function_response_types(),
        [aws_sdk_lambda::types::FunctionResponseType::ReportBatchItemFailures]
    );
    let schedule = aws_sdk_scheduler::Client::new(config)
        .get_schedule()
        .name(format!("{prefix}-presence-sweep"))
        .send()
        .await
        .unwrap();
    assert_eq!(schedule.schedule_expression(), Some("rate(1 minute)"));
    assert_eq!(
        schedule.flexible_time_window().map(|w| w.mode()),
        Some(&aws_sdk_scheduler::types::FlexibleTimeWindowMode::Off)
    );
    let target = schedule.target().unwrap();
    assert_eq!(target.arn(), fanout_arn);
    assert_eq!(
        target.role_arn(),
        format!("arn:aws:iam::123456789012:role/{prefix}-scheduler")
    );
    assert_eq!(target.input(), Some(r#"{"chatctl":"presence-sweep"}"#));
    let retry = target.retry_policy().unwrap();
    assert_eq!(retry.maximum_retry_attempts(), Some(0));
    assert_eq!(retry.maximum_event_age_in_seconds(), Some(60));
    // The scheduler's role: only this account's scheduler may assume it, and it may only invoke
    // the fan-out.
    let scheduler_role = iam
        .get_role()
        .role_name(format!("{prefix}-scheduler"))
        .send()
        .await
        .unwrap();
    let trust: Value = serde_json::from_str(&url_decode(
        scheduler_role
            .role()
            .unwrap()
            .assume_role_policy_document()
            .unwrap(),
    ))
    .unwrap();
    assert_eq!(
        trust["Statement"][0]["Principal"]["Service"],
        "scheduler.amazonaws.com"
    );
    assert_eq!(
        trust["Statement"][0]["Condition"]["StringEquals"]["aws:SourceAccount"],
        "123456789012"
    );
    let invoke_only: Value = serde_json::from_str(&url_decode(
        iam.get_role_policy()
            .role_name(format!("{prefix}-scheduler"))
            .policy_name("chatctl")
            .send()
            .await
            .unwrap()
            .policy_document(),
    ))
    .unwrap();
    assert_eq!(
        invoke_only["Statement"],
        serde_json::json!([{"Sid": "Sweep", "Effect": "Allow", "Action": "lambda:InvokeFunction", "Resource": fanout_arn}])
    );
    assert!(
        fanout_policy.to_string().contains(&presence_arn),
        "the fan-out role reads the presence queue: {fanout_policy}"
    );

    let lambda = aws_sdk_lambda::Client::new(config);
    for role in ["ws", "fanout"] {
        let name = format!("{prefix}-{role}");
        let f = lambda
            .get_function()
            .function_name(&name)
            .send()
            .await
            .unwrap();
        let c = f.configuration().unwrap();
        assert_eq!(c.runtime().map(|r| r.as_str()), Some("provided.al2023"));
        assert_eq!(
            c.architectures(),
            [aws_sdk_lambda::types::Architecture::Arm64]
        );
        assert_eq!(c.memory_size(), Some(512));
        assert_eq!(
            c.role(),
            Some(format!("arn:aws:iam::123456789012:role/{name}-role").as_str())
        );
        let env = c.environment().unwrap().variables().unwrap();
        assert_eq!(
            env.get("CHAT_MESSAGES_TABLE").map(String::as_str),
            Some(format!("{prefix}-messages").as_str())
        );
        assert_eq!(
            env.get("CHAT_MANAGEMENT_ENDPOINT").map(String::as_str),
            Some(format!("https://{api_id}.execute-api.us-east-1.amazonaws.com/{stage}").as_str())
        );
        tags(
            f.tags()
                .unwrap()
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        );
        // `live` points at a published version of the code $LATEST has (version 1 after one
        // clean deploy; a re-run after a fault may have published another of the same code).
        let alias = lambda
            .get_alias()
            .function_name(&name)
            .name("live")
            .send()
            .await
            .unwrap();
        let version = alias.function_version().unwrap();
        assert!(version.parse::<u32>().is_ok(), "{alias:?}");
        let published = lambda
            .get_function_configuration()
            .function_name(&name)
            .qualifier(version)
            .send()
            .await
            .unwrap();
        assert_eq!(published.code_sha256(), c.code_sha256(), "{alias:?}");
        let policy = lambda
            .get_policy()
            .function_name(&name)
            .qualifier("live")
            .send()
            .await
            .unwrap()
            .policy
            .unwrap();
        let (principal, source) = if role == "ws" {
            ("apigateway.amazonaws.com", format!(":{api_id}/{stage}/*"))
        } else {
            ("sns.amazonaws.com", topic_arn.clone())
        };
        assert!(
            policy.contains(principal) && policy.contains(&source),
            "{policy}"
        );
    }
}

/// A topic's subscriptions as (protocol, endpoint, filter policy, raw delivery), read from moto.
async fn subscriptions_of(
    sns: &aws_sdk_sns::Client,
    topic_arn: &str,
) -> Vec<(String, String, Value, bool)> {
    let listed = sns
        .list_subscriptions_by_topic()
        .topic_arn(topic_arn)
        .send()
        .await
        .unwrap();
    let mut out = Vec::new();
    for s in listed.subscriptions() {
        let attributes = sns
            .get_subscription_attributes()
            .subscription_arn(s.subscription_arn().unwrap())
            .send()
            .await
            .unwrap()
            .attributes
            .unwrap_or_default();
        let filter: Value = serde_json::from_str(attributes.get("FilterPolicy").unwrap()).unwrap();
        let raw = attributes.get("RawMessageDelivery").map(String::as_str);
        out.push((
            s.protocol().unwrap().to_owned(),
            s.endpoint().unwrap().to_owned(),
            filter,
            raw == Some("true"),
        ));
    }
    out
}

fn url_decode(text: &str) -> String {
    url::form_urlencoded::parse(format!("x={text}").as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread")]
async fn deploy_from_nothing_then_no_op_then_code_and_setting_changes_then_destroy() {
    let s = Stage::new();

    // From nothing: every resource is created.
    let outputs_file = s.artifacts.path().join("outputs.json");
    let events = ok(&s.deploy(&["--outputs-file", outputs_file.to_str().unwrap()]));
    assert_eq!(events[0]["event"], "plan");
    let report = last(&events);
    assert_eq!(report["event"], "deployed");
    assert_eq!(report["applied"], RESOURCES);
    let applies = events.iter().filter(|e| e["event"] == "apply").count();
    assert_eq!(
        applies as u64,
        2 * RESOURCES,
        "a started and a done event per resource"
    );
    // The actions run in parallel, but are reported in plan order: each `started` followed by
    // its own `done`.
    let planned: Vec<(&Value, &Value)> = events[0]["actions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| (&a["kind"], &a["name"]))
        .collect();
    let reported: Vec<(&Value, &Value, &Value)> = events
        .iter()
        .filter(|e| e["event"] == "apply")
        .map(|e| (&e["kind"], &e["name"], &e["status"]))
        .collect();
    let (started, done) = (Value::from("started"), Value::from("done"));
    let expected: Vec<(&Value, &Value, &Value)> = planned
        .iter()
        .flat_map(|(k, n)| [(*k, *n, &started), (*k, *n, &done)])
        .collect();
    assert_eq!(reported, expected);
    let api_id = api_id_of(report);
    let written: Value = serde_json::from_slice(&std::fs::read(&outputs_file).unwrap()).unwrap();
    assert_eq!(written, report["outputs"]);
    assert_eq!(
        written["managementEndpoint"],
        format!(
            "https://{api_id}.execute-api.us-east-1.amazonaws.com/{}",
            s.name
        )
    );
    check_deployed(&s.moto, &s.name, &api_id).await;
    let first = s.changes();
    assert!(first.len() as u64 >= RESOURCES, "{:?}", ops(&first));

    // Nothing changed: nothing is changed, and the output says so.
    let events = ok(&s.deploy(&[]));
    assert_eq!(events.len(), 1, "no plan or apply events: {events:?}");
    assert_eq!(last(&events)["applied"], 0);
    // Shown with --nocapture: every read a no-op deploy makes, by operation.
    eprintln!("no-op redeploy AWS calls: {}", last(&events)["awsCalls"]);
    let reads = &last(&events)["awsCalls"]["byOperation"];
    // By name, one per queue; the mapping is listed by function and queue, the schedule read by
    // name, each subscription's attributes read once.
    assert_eq!(reads["SQS:GetQueueUrl"], 2, "{reads}");
    // The alias's mapping, and any left on the function itself by a stage from before releases.
    assert_eq!(reads["Lambda:ListEventSourceMappings"], 2, "{reads}");
    assert_eq!(reads["Scheduler:GetSchedule"], 1, "{reads}");
    assert_eq!(reads["SNS:GetSubscriptionAttributes"], 2, "{reads}");
    assert_eq!(reads["Lambda:GetFunctionEventInvokeConfig"], 1, "{reads}");
    assert_eq!(s.changes(), vec![], "a no-op deploy changes nothing");
    let text = s.run(&[
        "deploy",
        "--yes",
        "--artifacts",
        s.artifacts.path().to_str().unwrap(),
    ]);
    let stdout = String::from_utf8_lossy(&text.stdout);
    assert!(
        stdout.contains(&format!("no changes, {RESOURCES} resources up to date")),
        "{stdout}"
    );
    assert_eq!(s.changes(), vec![]);

    // New code for one handler: exactly one UpdateFunctionCode, for that function, then its
    // new version behind its alias, and the release recorded.
    fake_artifacts(s.artifacts.path(), "v2");
    ok(&s.deploy(&[]));
    let changes = s.changes();
    assert_eq!(
        ops(&changes),
        [
            "UpdateFunctionCode",
            "PublishVersion",
            "UpdateAlias",
            "PutParameter"
        ]
    );
    for change in &changes[..3] {
        assert!(
            change.path.contains(&format!("{}-ws/", s.prefix())),
            "{change:?}"
        );
    }
    assert!(
        changes[3]
            .body
            .contains(&format!("/chatctl/chat/{}/releases", s.name)),
        "{:?}",
        changes[3]
    );

    // A setting in chatctl.toml for this stage: only the log groups' retention.
    std::fs::write(
        &s.config,
        format!(
            "app = \"chat\"\n[stages.{}]\nlog_retention_days = 30\n",
            s.name
        ),
    )
    .unwrap();
    ok(&s.deploy(&[]));
    assert_eq!(
        ops(&s.changes()),
        ["PutRetentionPolicy", "PutRetentionPolicy"]
    );

    // A change made by hand is drift: status sees it, deploy undoes just that.
    aws_sdk_lambda::Client::new(&s.moto)
        .update_function_configuration()
        .function_name(format!("{}-fanout", s.prefix()))
        .memory_size(1024)
        .send()
        .await
        .unwrap();
    let status = s.run(&[
        "status",
        "--detailed-exitcode",
        "--artifacts",
        s.artifacts.path().to_str().unwrap(),
    ]);
    let stdout = String::from_utf8_lossy(&status.stdout);
    assert_eq!(status.status.code(), Some(2), "{stdout}");
    assert!(
        stdout.contains(&format!(
            "drift: lambda function {}-fanout: memoryMb",
            s.prefix()
        )),
        "{stdout}"
    );
    s.proxy.take_calls();
    ok(&s.deploy(&[]));
    let changes = s.changes();
    assert_eq!(ops(&changes), ["UpdateFunctionConfiguration"]);
    assert!(changes[0].path.contains(&format!("{}-fanout/", s.prefix())));
    // TTL turned on by hand where the model has none: deploy turns it off again, and only that.
    aws_sdk_dynamodb::Client::new(&s.moto)
        .update_time_to_live()
        .table_name(format!("{}-messages", s.prefix()))
        .time_to_live_specification(
            aws_sdk_dynamodb::types::TimeToLiveSpecification::builder()
                .attribute_name("expiresAt")
                .enabled(true)
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
    s.proxy.take_calls();
    ok(&s.deploy(&[]));
    assert_eq!(ops(&s.changes()), ["UpdateTimeToLive"]);
    let status = s.run(&["status", "--detailed-exitcode", "--output", "json"]);
    assert_eq!(status.status.code(), Some(0));
    let status: Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(status["inSync"], true);
    assert_eq!(status["deployed"], RESOURCES);
    assert_eq!(
        status["deadLettered"],
        serde_json::json!({"queue": format!("{}-fanout-dlq", s.prefix()), "events": 0})
    );

    // A dead-lettered fan-out event (sent here by hand: moto runs no Lambda) is reported by
    // status, and is not drift.
    let sqs = aws_sdk_sqs::Client::new(&s.moto);
    let dlq_url = sqs
        .get_queue_url()
        .queue_name(format!("{}-fanout-dlq", s.prefix()))
        .send()
        .await
        .unwrap()
        .queue_url
        .unwrap();
    sqs.send_message()
        .queue_url(&dlq_url)
        .message_body(r#"{"requestContext":{"condition":"EventAgeExceeded"}}"#)
        .send()
        .await
        .unwrap();
    let status = s.run(&["status", "--detailed-exitcode"]);
    let stdout = String::from_utf8_lossy(&status.stdout);
    assert_eq!(status.status.code(), Some(0), "not drift: {stdout}");
    assert!(
        stdout.contains(&format!(
            "dead-lettered events: 1 in {}-fanout-dlq",
            s.prefix()
        )),
        "{stdout}"
    );
    let status = s.run(&["status", "--output", "json"]);
    let status: Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(status["deadLettered"]["events"], 1);
    assert_eq!(status["inSync"], true);
    let outputs = ok(&s.run(&["outputs", "--output", "json"]));
    assert_eq!(outputs[0], written);

    // The operator commands find the stage through its outputs: a token signed with the stage's
    // secret (read here straight from SSM), an announcement stored in its table and published.
    let token = ok(&s.run(&["token", "--user", "ann", "--output", "json"]));
    let secret = chat_aws::secret::load(
        &aws_sdk_ssm::Client::new(&s.moto),
        &format!("/chatctl/chat/{}/token-secret", s.name),
    )
    .await
    .unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let claims = secret
        .verify(
            token[0]["token"].as_str().unwrap(),
            i64::try_from(now).unwrap(),
        )
        .unwrap();
    assert_eq!(claims.sub.as_str(), "ann");
    let sent = ok(&s.run(&["send", "lobby", "deployed!", "--output", "json"]));
    let tail = ok(&s.run(&["tail", "lobby", "--no-follow", "--output", "json"]));
    assert_eq!(tail.len(), 1);
    assert_eq!(tail[0]["id"], sent[0]["id"]);
    assert_eq!(tail[0]["text"], "deployed!");

    // Destroy: nothing of the stage is left, and a second destroy is harmless.
    let events = ok(&s.run(&["destroy", "--yes", "--output", "json"]));
    assert_eq!(last(&events)["deleted"], RESOURCES);
    assert_eq!(leftovers(&s.moto, &s.name).await, Vec::<String>::new());
    s.proxy.take_calls();
    let events = ok(&s.run(&["destroy", "--yes", "--output", "json"]));
    assert_eq!(last(&events)["deleted"], 0);
    assert_eq!(s.changes(), vec![]);
    let outputs = s.run(&["outputs"]);
    assert_eq!(outputs.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&outputs.stderr).contains("run `chatctl deploy --stage"));
}

#[tokio::test(flavor = "multi_thread")]
async fn an_interrupted_deploy_converges_without_duplicates_or_orphans() {
    let s = Stage::new();
    // The API is created but its answer is lost (the SDK retries: a second, empty API appears,
    // which the run removes), and the fan-out function cannot be created at all: the deploy
    // fails half-way.
    s.proxy.inject(Fault::fail_after_forward(
        "CreateApi",
        Some(&format!("{}-api", s.prefix())),
        Some(1),
    ));
    s.proxy.inject(Fault::fail(
        "CreateFunction",
        Some(&format!("{}-fanout", s.prefix())),
        None,
    ));
    let out = s.deploy(&[]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("create lambda function {}-fanout", s.prefix()))
            && stderr.contains("run the command again"),
        "{stderr}"
    );
    assert_eq!(
        s.apis_named().await,
        1,
        "the retried create's empty API was removed"
    );
    // A namesake with something in it (made here, as an older tool or a half-done run might
    // leave it) is not removed at create time: the next plan shows it as a duplicate.
    let apigw = aws_sdk_apigatewayv2::Client::new(&s.moto);
    let extra = apigw
        .create_api()
        .name(format!("{}-api", s.prefix()))
        .protocol_type(aws_sdk_apigatewayv2::types::ProtocolType::Websocket)
        .route_selection_expression("$request.body.action")
        .tags("chatctl:app", "chat")
        .tags("chatctl:stage", &s.name)
        .send()
        .await
        .unwrap();
    apigw
        .create_route()
        .api_id(extra.api_id().unwrap())
        .route_key("$default")
        .send()
        .await
        .unwrap();
    let ssm = aws_sdk_ssm::Client::new(&s.moto);
    assert!(
        ssm.get_parameter()
            .name(s.lock_parameter())
            .send()
            .await
            .is_err(),
        "a failed deploy releases its lock"
    );

    // Run again: it finishes, and removes the duplicate API.
    s.proxy.clear_faults();
    let events = ok(&s.deploy(&[]));
    let deleted: Vec<_> = events
        .iter()
        .filter(|e| e["event"] == "apply" && e["status"] == "done" && e["change"] == "delete")
        .map(|e| e["name"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(deleted.len(), 1, "{deleted:?}");
    assert!(deleted[0].contains("(duplicate "), "{deleted:?}");
    assert_eq!(s.apis_named().await, 1);
    let api_id = api_id_of(last(&events));
    check_deployed(&s.moto, &s.name, &api_id).await;
    s.proxy.take_calls();
    assert_eq!(last(&ok(&s.deploy(&[])))["applied"], 0);
    assert_eq!(s.changes(), vec![]);

    // Killed outright mid-apply (holding its lock): the next run takes the dead run's lock over.
    ok(&s.run(&["destroy", "--yes", "--output", "json"]));
    let (fault, gate) = Fault::hold("CreateRole", Some(&format!("{}-ws-role", s.prefix())));
    s.proxy.inject(fault);
    assert!(
        s.deploy_killed_at(&gate).await,
        "the deploy never got to CreateRole"
    );
    s.proxy.clear_faults();
    assert!(
        ssm.get_parameter()
            .name(s.lock_parameter())
            .send()
            .await
            .is_ok(),
        "a killed deploy cannot release its lock"
    );
    let events = ok(&s.deploy(&[]));
    let report = last(&events);
    assert!(report["lockTakenOverFrom"]["pid"].is_u64(), "{report}");
    assert!(report["applied"].as_u64().unwrap() > 0);
    check_deployed(&s.moto, &s.name, &api_id_of(report)).await;
    assert_eq!(last(&ok(&s.deploy(&[])))["applied"], 0);
    ok(&s.run(&["destroy", "--yes", "--output", "json"]));
    assert_eq!(leftovers(&s.moto, &s.name).await, Vec::<String>::new());
}

/// moto makes everything ready at once. Under the proxy's AWS latency model (shortened here) the
/// tables are CREATING, the new roles cannot be assumed yet, the functions are Pending and busy
/// resources refuse changes: a deploy from nothing must wait for each, overlapping the waits,
/// and converge in one run; a code change to both functions too. API Gateway's management quota
/// (10 calls per second, burst 10) is never exceeded.
#[tokio::test]
async fn under_aws_latencies_a_deploy_waits_for_each_resource_and_paces_api_gateway() {
    let s = Stage::new();
    s.proxy.set_latency(Latency {
        round_trip: Duration::from_millis(20),
        iam_round_trip: Duration::from_millis(40),
        table_creating: Duration::from_secs(3),
        table_updating: Duration::from_secs(3),
        iam_propagation: Duration::from_secs(3),
        function_pending: Duration::from_secs(2),
        function_updating: Duration::from_secs(1),
    });
    let report = last(&ok(&s.deploy(&[]))).clone();
    assert_eq!(report["applied"], RESOURCES);
    let calls = s.proxy.take_timed_calls();
    let refused = |op: &str, status: u16| {
        calls
            .iter()
            .filter(|(_, c)| c.operation == op && c.status == status)
            .count()
    };
    // The model did refuse what was not ready, so the waits and retries were exercised.
    assert!(
        refused("CreateFunction", 400) > 0,
        "no CreateFunction met an unpropagated role"
    );
    let creating = calls
        .iter()
        .filter(|(_, c)| c.operation == "DescribeTable")
        .count();
    assert!(
        creating > 2,
        "apply never waited for a table: {creating} DescribeTable calls"
    );
    check_deployed(&s.moto, &s.name, &api_id_of(&report)).await;

    // Token bucket: any n calls within t seconds need n ≤ burst + rate·t (with 50 ms of slack
    // for scheduling between the CLI's pacing and the proxy's clock).
    let api: Vec<Instant> = calls
        .iter()
        .filter(|(_, c)| c.service == "apigateway")
        .map(|(at, _)| *at)
        .collect();
    assert!(api.len() > 12, "{} API Gateway calls", api.len());
    for i in 0..api.len() {
        for j in i..api.len() {
            let t = api[j].duration_since(api[i]).as_secs_f64() + 0.05;
            let n = (j - i + 1) as f64;
            assert!(n <= 10.0 + 10.0 * t, "{n} API Gateway calls within {t:.2}s");
        }
    }

    // Both functions' code changes: each update waits out the other's InProgress state only
    // for its own function, each version is published once the update is done (Lambda refuses
    // PublishVersion during one), and the stage converges in one run.
    fake_artifacts_of(s.artifacts.path(), "v2", "v2");
    let report = last(&ok(&s.deploy(&[]))).clone();
    assert_eq!(report["summary"]["update"], 4, "{report}");
    assert_eq!(
        report["awsCalls"]["byOperation"]["Lambda:PublishVersion"], 2,
        "{report}"
    );
    s.proxy.take_calls();
    assert_eq!(last(&ok(&s.deploy(&[])))["applied"], 0);
    assert_eq!(s.changes(), vec![]);
    ok(&s.run(&["destroy", "--yes", "--output", "json"]));
    assert_eq!(leftovers(&s.moto, &s.name).await, Vec::<String>::new());
}

/// The API id in a deploy report's `wss://{api}.execute-api…` URL.
fn api_id_of(report: &Value) -> String {
    report["outputs"]["websocketUrl"]
        .as_str()
        .unwrap()
        .trim_start_matches("wss://")
        .split('.')
        .next()
        .unwrap()
        .to_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_second_deploy_is_refused_while_one_runs_and_a_stale_lock_needs_break_lock() {
    let s = Stage::new();
    let (fault, gate) = Fault::hold("CreateTopic", None);
    s.proxy.inject(fault);
    let (first, reached) = s.deploy_until(&gate, Stdio::piped).await;
    assert!(reached);
    let second = s.deploy(&[]);
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert_eq!(second.status.code(), Some(3), "locked → exit 3: {stderr}");
    let me = std::env::var("USER").unwrap_or_else(|_| "unknown".into());
    assert!(
        stderr.contains(&format!("locked by {me}@"))
            && stderr.contains("since 20")
            && stderr.contains("--break-lock"),
        "{stderr}"
    );
    gate.release();
    let first = first.wait_with_output().unwrap();
    assert_eq!(last(&ok(&first))["applied"], RESOURCES);

    // A lock left on another machine is never taken over silently.
    aws_sdk_ssm::Client::new(&s.moto)
        .put_parameter()
        .name(s.lock_parameter())
        .r#type(aws_sdk_ssm::types::ParameterType::String)
        .value(r#"{"user":"bob","host":"ci-runner-7","pid":4242,"command":"deploy","since":1790000000}"#)
        .send()
        .await
        .unwrap();
    let refused = s.deploy(&[]);
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(3), "{stderr}");
    assert!(
        stderr.contains("bob@ci-runner-7 (pid 4242, deploy) since 2026-09-21T"),
        "{stderr}"
    );
    let broken = ok(&s.deploy(&["--break-lock"]));
    assert_eq!(last(&broken)["lockTakenOverFrom"]["host"], "ci-runner-7");
    ok(&s.run(&["destroy", "--yes", "--output", "json"]));
    assert_eq!(leftovers(&s.moto, &s.name).await, Vec::<String>::new());
}

#[test]
fn deploy_and_destroy_without_a_terminal_need_yes_and_touch_nothing() {
    let s = Stage::new();
    for command in ["deploy", "destroy"] {
        let out = s.run(&[command]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{stderr}");
        assert!(stderr.contains("pass --yes"), "{stderr}");
    }
    assert_eq!(s.proxy.take_calls(), vec![], "refused before any AWS call");
}

#[test]
fn a_key_change_that_would_replace_a_table_needs_replace_tables() {
    // Covered at the plan level (a key change plans as a replace, see infra/src/plan.rs); here the
    // refusal: a table created by hand with other keys stands in for a changed model.
    let s = Stage::new();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        use aws_sdk_dynamodb::types::{
            AttributeDefinition, BillingMode, KeySchemaElement, KeyType, ScalarAttributeType,
        };
        aws_sdk_dynamodb::Client::new(&s.moto)
            .create_table()
            .table_name(format!("{}-messages", s.prefix()))
            .billing_mode(BillingMode::PayPerRequest)
            .key_schema(
                KeySchemaElement::builder()
                    .attribute_name("id")
                    .key_type(KeyType::Hash)
                    .build()
                    .unwrap(),
            )
            .attribute_definitions(
                AttributeDefinition::builder()
                    .attribute_name("id")
                    .attribute_type(ScalarAttributeType::S)
                    .build()
                    .unwrap(),
            )
            .send()
            .await
            .unwrap();
    });
    let out = s.deploy(&[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("--replace-tables") && stderr.contains("deletes every item"),
        "{stderr}"
    );
    assert_eq!(s.changes(), vec![], "refused before changing anything");
    let events = ok(&s.deploy(&["--replace-tables"]));
    assert_eq!(last(&events)["summary"]["replace"], 1);
    ok(&s.run(&["destroy", "--yes", "--output", "json"]));
    runtime.block_on(async {
        assert_eq!(leftovers(&s.moto, &s.name).await, Vec::<String>::new());
    });
}

#[tokio::test(flavor = "multi_thread")]
async fn drift_in_the_fanout_delivery_is_seen_and_put_back_in_place() {
    let s = Stage::new();
    ok(&s.deploy(&[]));
    let prefix = s.prefix();
    let fanout = format!("{prefix}-fanout");
    let presence_arn = format!("arn:aws:sqs:us-east-1:123456789012:{prefix}-presence");

    // Hand edits: a bigger batch, a slower sweep, a chat subscription that takes presence too.
    let lambda = aws_sdk_lambda::Client::new(&s.moto);
    let mapping = lambda
        .list_event_source_mappings()
        .function_name(live_arn(&fanout))
        .send()
        .await
        .unwrap()
        .event_source_mappings()[0]
        .clone();
    lambda
        .update_event_source_mapping()
        .uuid(mapping.uuid().unwrap())
        .batch_size(10)
        .send()
        .await
        .unwrap();
    let scheduler = aws_sdk_scheduler::Client::new(&s.moto);
    let schedule = scheduler
        .get_schedule()
        .name(format!("{prefix}-presence-sweep"))
        .send()
        .await
        .unwrap();
    scheduler
        .update_schedule()
        .name(format!("{prefix}-presence-sweep"))
        .schedule_expression("rate(5 minutes)")
        .set_flexible_time_window(schedule.flexible_time_window().cloned())
        .set_target(schedule.target().cloned())
        .send()
        .await
        .unwrap();
    let sns = aws_sdk_sns::Client::new(&s.moto);
    let subscriptions = sns
        .list_subscriptions_by_topic()
        .topic_arn(format!(
            "arn:aws:sns:us-east-1:123456789012:{prefix}-events"
        ))
        .send()
        .await
        .unwrap();
    let chat = subscriptions
        .subscriptions()
        .iter()
        .find(|s| s.protocol() == Some("lambda"))
        .unwrap()
        .subscription_arn()
        .unwrap()
        .to_owned();
    sns.set_subscription_attributes()
        .subscription_arn(&chat)
        .attribute_name("FilterPolicy")
        .attribute_value(r#"{"eventType":["message","recalled","presence"]}"#)
        .send()
        .await
        .unwrap();

    // status sees exactly those three as drift …
    let status = s.run(&["status", "--detailed-exitcode", "--output", "json"]);
    assert_eq!(status.status.code(), Some(2), "drift → exit 2");
    let status: Value = serde_json::from_slice(&status.stdout).unwrap();
    let mut drifted: Vec<String> = status["drift"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            format!(
                "{} {}",
                a["kind"].as_str().unwrap(),
                a["name"].as_str().unwrap()
            )
        })
        .collect();
    drifted.sort();
    assert_eq!(
        drifted,
        [
            format!("event-source-mapping {fanout}/{prefix}-presence"),
            format!("schedule {prefix}-presence-sweep"),
            format!("subscription {prefix}-events/{fanout}"),
        ]
    );

    // … and deploy puts each back in place: no delete, no create, so no gap in delivery.
    s.proxy.take_calls();
    ok(&s.deploy(&[]));
    // REST services show as method and path: UpdateEventSourceMapping, UpdateSchedule.
    let mut changed = ops(&s.changes());
    changed.sort();
    assert_eq!(changed.len(), 3, "{changed:?}");
    assert!(
        changed[0].starts_with("PUT /2015-03-31/event-source-mappings/"),
        "{changed:?}"
    );
    assert_eq!(
        changed[1],
        format!("PUT /schedules/{prefix}-presence-sweep")
    );
    assert_eq!(changed[2], "SetSubscriptionAttributes");
    let mapping = lambda
        .list_event_source_mappings()
        .function_name(live_arn(&fanout))
        .event_source_arn(&presence_arn)
        .send()
        .await
        .unwrap()
        .event_source_mappings()[0]
        .clone();
    assert_eq!(mapping.batch_size(), Some(1000));
    let schedule = scheduler
        .get_schedule()
        .name(format!("{prefix}-presence-sweep"))
        .send()
        .await
        .unwrap();
    assert_eq!(schedule.schedule_expression(), Some("rate(1 minute)"));
    let filter = sns
        .get_subscription_attributes()
        .subscription_arn(&chat)
        .send()
        .await
        .unwrap()
        .attributes
        .unwrap_or_default()
        .remove("FilterPolicy")
        .unwrap();
    let filter: Value = serde_json::from_str(&filter).unwrap();
    assert_eq!(
        filter,
        serde_json::json!({"eventType": ["message", "recalled"]})
    );
    let status = s.run(&["status", "--detailed-exitcode"]);
    assert_eq!(status.status.code(), Some(0));

    ok(&s.run(&["destroy", "--yes", "--output", "json"]));
    assert_eq!(leftovers(&s.moto, &s.name).await, Vec::<String>::new());
}

/// GetApis matches by name only: an HTTP API that shares the stage's API name (another team's,
/// in the same account) must be neither adopted by deploy nor deleted by destroy.
#[tokio::test(flavor = "multi_thread")]
async fn an_http_api_with_the_same_name_is_left_alone() {
    use aws_sdk_apigatewayv2::types::ProtocolType;

    let s = Stage::new();
    let name = format!("{}-api", s.prefix());
    let apigw = aws_sdk_apigatewayv2::Client::new(&s.moto);
    let http = apigw
        .create_api()
        .name(&name)
        .protocol_type(ProtocolType::Http)
        .send()
        .await
        .unwrap()
        .api_id
        .unwrap();
    let apis_named = || async {
        let mut apis: Vec<(String, String)> = apigw
            .get_apis()
            .send()
            .await
            .unwrap()
            .items()
            .iter()
            .filter(|a| a.name() == Some(name.as_str()))
            .map(|a| {
                let protocol = a.protocol_type().unwrap().as_str().to_owned();
                (protocol, a.api_id().unwrap().to_owned())
            })
            .collect();
        apis.sort();
        apis
    };

    let deployed = api_id_of(last(&ok(&s.deploy(&[]))));
    let apis = apis_named().await;
    assert_eq!(
        apis,
        [
            ("HTTP".to_owned(), http.clone()),
            ("WEBSOCKET".to_owned(), deployed.clone())
        ],
        "deploy created its own WebSocket API beside the HTTP one"
    );
    check_deployed(&s.moto, &s.name, &deployed).await;

    ok(&s.run(&["destroy", "--yes", "--output", "json"]));
    assert_eq!(apis_named().await, [("HTTP".to_owned(), http)]);
}

/// The CloudFormation export of a deployed stage describes exactly what `deploy` created: the
/// same resources by name, with the same keys, indexes, TTL, policies, routes and settings
/// (cross_check.rs says what moto cannot show). The export reads the same chatctl.toml, with a
/// setting that is not the default so a mismatch in settings resolution would show.
#[tokio::test(flavor = "multi_thread")]
async fn the_cloudformation_export_matches_what_deploy_created() {
    let s = Stage::new();
    std::fs::write(
        &s.config,
        format!(
            "app = \"chat\"\n\n[stages.{}]\nmemory_mb = 256\nlog_retention_days = 7\n",
            s.name
        ),
    )
    .unwrap();
    let events = ok(&s.deploy(&[]));
    let api_id = api_id_of(last(&events));
    let export = Command::new(BIN)
        .args(["export", "cloudformation", "--format", "json"])
        .args(["--stage", &s.name, "--config"])
        .arg(&s.config)
        .output()
        .unwrap();
    assert_eq!(
        export.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&export.stderr)
    );
    let template: Value = serde_json::from_slice(&export.stdout).unwrap();
    assert_eq!(
        template["Resources"]["WsFunction"]["Properties"]["MemorySize"],
        256
    );

    let prefix = s.prefix();
    let apigw = aws_sdk_apigatewayv2::Client::new(&s.moto);
    let integration = apigw
        .get_integrations()
        .api_id(&api_id)
        .send()
        .await
        .unwrap()
        .items()[0]
        .integration_id()
        .unwrap()
        .to_owned();
    let presence_url = aws_sdk_sqs::Client::new(&s.moto)
        .get_queue_url()
        .queue_name(format!("{prefix}-presence"))
        .send()
        .await
        .unwrap()
        .queue_url
        .unwrap();
    let vars = cross_check::Vars(
        [
            ("AWS::AccountId", "123456789012".to_owned()),
            ("AWS::Region", "us-east-1".to_owned()),
            ("AWS::Partition", "aws".to_owned()),
            ("AWS::URLSuffix", "amazonaws.com".to_owned()),
            ("Api", api_id.clone()),
            ("ApiWsIntegration", integration),
            (
                "EventsTopic",
                format!("arn:aws:sns:us-east-1:123456789012:{prefix}-events"),
            ),
            ("PresenceQueue", presence_url),
            // Where the zips would be: the code itself is compared by the deploy tests.
            ("CodeBucket", "artifacts".to_owned()),
            ("WsCodeKey", "ws.zip".to_owned()),
            ("FanoutCodeKey", "fanout.zip".to_owned()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect(),
    );
    cross_check::check(&s.moto, &template, &prefix, &vars).await;

    // The one resource of the stage the template cannot hold is named in its prerequisites.
    let secret = format!("/chatctl/chat/{}/token-secret", s.name);
    assert!(
        template["Metadata"]["chatctl"]["prerequisites"][0]
            .as_str()
            .unwrap()
            .contains(&secret)
    );
    aws_sdk_ssm::Client::new(&s.moto)
        .get_parameter()
        .name(&secret)
        .send()
        .await
        .unwrap();
    ok(&s.run(&["destroy", "--yes", "--output", "json"]));
}

/// A stage deployed by a version before `by-shard`: its connections table has the `by-kind` and
/// `by-user` indexes (both projecting everything). The plan shows the index change, apply deletes
/// the two and creates `by-shard` (one index per UpdateTable, as DynamoDB requires), and the
/// table's data stays.
#[tokio::test(flavor = "multi_thread")]
async fn a_connections_table_with_the_old_indexes_is_migrated_in_place() {
    let s = Stage::new();
    let table = format!("{}-connections", s.prefix());
    let db = aws_sdk_dynamodb::Client::new(&s.moto);
    chatctl_e2e::legacy::connections_table(&db, &table).await;
    chatctl_e2e::legacy::connection_item(&db, &table, "kept=").await;

    let artifacts = s.artifacts.path().to_str().unwrap().to_owned();
    let plan = s.run(&["plan", "--output", "json", "--artifacts", &artifacts]);
    let plan: Value = serde_json::from_slice(&plan.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&plan.stderr)));
    let change = plan["actions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["name"] == table.as_str())
        .unwrap_or_else(|| panic!("no action on {table}: {plan}"));
    assert_eq!(change["change"], "update", "{change}");
    let fields: Vec<&str> = change["fields"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|f| f["field"].as_str())
        .collect();
    assert!(fields.contains(&"indexes"), "{change}");

    ok(&s.deploy(&[]));
    let t = db
        .describe_table()
        .table_name(&table)
        .send()
        .await
        .unwrap()
        .table
        .unwrap();
    let indexes: Vec<(String, String)> = t
        .global_secondary_indexes()
        .iter()
        .map(|i| {
            (
                i.index_name().unwrap().to_owned(),
                i.projection()
                    .and_then(|p| p.projection_type())
                    .unwrap()
                    .as_str()
                    .to_owned(),
            )
        })
        .collect();
    assert_eq!(indexes, [("by-shard".to_owned(), "KEYS_ONLY".to_owned())]);
    let kept = db
        .get_item()
        .table_name(&table)
        .key(
            "pk",
            aws_sdk_dynamodb::types::AttributeValue::S("CONN#kept=".into()),
        )
        .key(
            "sk",
            aws_sdk_dynamodb::types::AttributeValue::S("CONN".into()),
        )
        .send()
        .await
        .unwrap();
    assert!(
        kept.item.is_some(),
        "the connection item survives the migration"
    );
    // Converged: the next plan changes nothing.
    let again = s.run(&["plan", "--detailed-exitcode", "--artifacts", &artifacts]);
    assert_eq!(
        again.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&again.stdout)
    );
    ok(&s.run(&["destroy", "--yes", "--output", "json"]));
}

/// `deploy --engine cloudformation` against moto's CloudFormation. moto runs the change set
/// itself (not through the proxy) and is partial: it creates the tables, topic, queues, roles,
/// log groups, functions (from the uploaded zips), the SNS permission and the event source
/// mapping, but SKIPS — lists with an empty type and creates nothing for — the API Gateway v2
/// API, integration, routes and stage, the event-invoke config, the schedule, the queue policy
/// and the SNS subscriptions, and it streams no per-resource events. So this checks the flow
/// (artifact bucket and content-addressed zips, the secret made outside the stack, create change
/// set, an empty one reported as no changes and deleted, a code change as an update, delete)
/// and what moto does create; how a failure is reported is checked with recorded responses
/// (infra/src/cfn_engine.rs).
#[tokio::test]
async fn the_cloudformation_engine_creates_updates_and_deletes_the_stack() {
    // moto's CloudFormation writes functions where only a Docker-backed Lambda reads them.
    let s = Stage::on(Moto::for_cloudformation());
    let cfn = aws_sdk_cloudformation::Client::new(&s.moto);
    let stack = s.prefix();
    let engine = ["--engine", "cloudformation"];
    let report = last(&ok(&s.deploy(&engine))).clone();
    assert!(report["applied"].as_u64().unwrap() >= 20, "{report}");
    let status = |out: aws_sdk_cloudformation::operation::describe_stacks::DescribeStacksOutput| {
        out.stacks()[0].stack_status().unwrap().as_str().to_owned()
    };
    let described = cfn
        .describe_stacks()
        .stack_name(&stack)
        .send()
        .await
        .unwrap();
    assert_eq!(status(described), "CREATE_COMPLETE");
    let dynamodb = aws_sdk_dynamodb::Client::new(&s.moto);
    for table in ["messages", "connections"] {
        let t = dynamodb
            .describe_table()
            .table_name(format!("{stack}-{table}"))
            .send()
            .await
            .unwrap();
        assert!(t.table.is_some());
    }
    let lambda = aws_sdk_lambda::Client::new(&s.moto);
    let sha = async |role: &str| {
        lambda
            .get_function()
            .function_name(format!("{stack}-{role}"))
            .send()
            .await
            .unwrap()
            .configuration
            .unwrap()
            .code_sha256
            .unwrap()
    };
    let ws_before = sha("ws").await;
    assert!(
        aws_sdk_ssm::Client::new(&s.moto)
            .get_parameter()
            .name(format!("/chatctl/chat/{}/token-secret", s.name))
            .with_decryption(true)
            .send()
            .await
            .is_ok(),
        "the SecureString secret is created outside the stack"
    );

    // The same again: an empty change set, reported as no changes and not left behind.
    let report = last(&ok(&s.deploy(&engine))).clone();
    assert_eq!(report["applied"], 0, "{report}");
    let change_sets = cfn
        .list_change_sets()
        .stack_name(&stack)
        .send()
        .await
        .unwrap();
    // AWS removes a stack's change sets once one is executed; moto keeps the executed ones, so
    // "not left behind" is: none waiting to be executed or failed.
    let waiting: Vec<_> = change_sets
        .summaries()
        .iter()
        .filter(|c| {
            c.execution_status()
                != Some(&aws_sdk_cloudformation::types::ExecutionStatus::ExecuteComplete)
        })
        .collect();
    assert_eq!(waiting.len(), 0, "{change_sets:?}");

    // New code: a new key in the bucket, a parameter change, an update of the function.
    fake_artifacts_of(s.artifacts.path(), "v2", "");
    let events = ok(&s.deploy(&engine));
    // moto lists no resource changes for a parameter change (AWS lists the two functions as
    // Modify), so what is checked is that a change set was made and executed, and its effect.
    assert!(
        events.iter().any(|e| e["event"] == "changeSet"),
        "{events:?}"
    );
    let described = cfn
        .describe_stacks()
        .stack_name(&stack)
        .send()
        .await
        .unwrap();
    assert_eq!(status(described), "UPDATE_COMPLETE");
    assert_ne!(
        sha("ws").await,
        ws_before,
        "the ws function runs the new zip"
    );

    // Destroy deletes the stack, then what it retains (tables) and the secret.
    ok(&s.run(&[
        "destroy",
        "--yes",
        "--output",
        "json",
        "--engine",
        "cloudformation",
    ]));
    let gone = cfn.describe_stacks().stack_name(&stack).send().await;
    let deleted = match gone {
        Err(_) => true,
        Ok(out) => status(out) == "DELETE_COMPLETE",
    };
    assert!(deleted, "the stack is gone");
    assert_eq!(leftovers(&s.moto, &s.name).await, Vec::<String>::new());
}
