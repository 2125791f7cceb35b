//! The recording, fault-injecting proxy (`chatctl_e2e::proxy`) in front of this binary's moto
//! server, driven by SDK clients. What the SDK does with an injected 500 matters to deploy: its
//! standard retry policy (3 attempts) repeats every operation, POSTs that create things included,
//! so a create whose answer was lost is performed twice.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant};

use aws_config::SdkConfig;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, KeySchemaElement, KeyType, ScalarAttributeType,
};
use aws_sdk_sns::error::ProvideErrorMetadata;
use chatctl_e2e::moto::{Moto, unique};
use chatctl_e2e::proxy::{AwsProxy, Call, Fault, rest_operation};

/// The SDK's default (standard) retry policy: the first attempt and two retries.
const SDK_ATTEMPTS: usize = 3;

fn proxy() -> AwsProxy {
    AwsProxy::start(&Moto::shared().endpoint)
}

/// Straight to moto, past the proxy: what really exists.
fn direct() -> SdkConfig {
    Moto::shared().sdk_config()
}

fn summary(calls: &[Call]) -> Vec<(&str, &str, u16)> {
    calls
        .iter()
        .map(|c| (c.service.as_str(), c.operation.as_str(), c.status))
        .collect()
}

async fn topic_exists(config: &SdkConfig, name: &str) -> bool {
    let suffix = format!(":{name}");
    let mut pages = aws_sdk_sns::Client::new(config)
        .list_topics()
        .into_paginator()
        .send();
    while let Some(page) = pages.next().await {
        let page = page.expect("list topics");
        if page
            .topics()
            .iter()
            .any(|t| t.topic_arn().is_some_and(|arn| arn.ends_with(&suffix)))
        {
            return true;
        }
    }
    false
}

async fn apis_named(config: &SdkConfig, name: &str) -> Vec<String> {
    let client = aws_sdk_apigatewayv2::Client::new(config);
    let mut ids = Vec::new();
    let mut token = None;
    loop {
        let page = client
            .get_apis()
            .set_next_token(token)
            .send()
            .await
            .expect("get apis");
        ids.extend(
            page.items()
                .iter()
                .filter(|a| a.name() == Some(name))
                .filter_map(|a| a.api_id().map(str::to_owned)),
        );
        token = page.next_token.filter(|t| !t.is_empty());
        if token.is_none() {
            return ids;
        }
    }
}

async fn create_table(config: &SdkConfig, name: &str) {
    aws_sdk_dynamodb::Client::new(config)
        .create_table()
        .table_name(name)
        .billing_mode(BillingMode::PayPerRequest)
        .attribute_definitions(
            AttributeDefinition::builder()
                .attribute_name("pk")
                .attribute_type(ScalarAttributeType::S)
                .build()
                .unwrap(),
        )
        .key_schema(
            KeySchemaElement::builder()
                .attribute_name("pk")
                .key_type(KeyType::Hash)
                .build()
                .unwrap(),
        )
        .send()
        .await
        .expect("create table");
}

#[tokio::test]
async fn records_json_query_and_rest_calls() {
    let proxy = proxy();
    let config = proxy.sdk_config();
    let table = unique("proxy-table");
    let topic = unique("proxy-topic");
    let api = unique("proxy-api");

    create_table(&config, &table).await;
    aws_sdk_dynamodb::Client::new(&config)
        .describe_table()
        .table_name(&table)
        .send()
        .await
        .expect("describe table");
    aws_sdk_sns::Client::new(&config)
        .create_topic()
        .name(&topic)
        .send()
        .await
        .expect("create topic");
    let apigw = aws_sdk_apigatewayv2::Client::new(&config);
    apigw
        .create_api()
        .name(&api)
        .protocol_type(aws_sdk_apigatewayv2::types::ProtocolType::Websocket)
        .route_selection_expression("$request.body.action")
        .send()
        .await
        .expect("create api");
    apigw.get_apis().send().await.expect("get apis");

    let calls = proxy.take_calls();
    assert_eq!(
        summary(&calls),
        [
            ("dynamodb", "CreateTable", 200),
            ("dynamodb", "DescribeTable", 200),
            ("sns", "CreateTopic", 200),
            // Real API Gateway answers a create with 201; moto with 200.
            ("apigateway", "CreateApi", 200),
            ("apigateway", "GetApis", 200),
        ],
        "{calls:#?}"
    );
    let mutating: Vec<bool> = calls.iter().map(Call::mutating).collect();
    assert_eq!(mutating, [true, false, true, true, false]);
    assert!(calls[0].body.contains(&table), "{:?}", calls[0]);
    assert!(calls[2].body.contains(&topic), "{:?}", calls[2]);
    assert!(calls[3].body.contains(&api), "{:?}", calls[3]);
    assert_eq!(calls[3].path, "/v2/apis");
    assert_eq!(calls[0].path, "/");
    assert!(
        proxy.take_calls().is_empty(),
        "take_calls clears the record"
    );
}

#[tokio::test]
async fn a_failed_call_is_retried_by_the_sdk_and_changes_nothing() {
    let proxy = proxy();
    let config = proxy.sdk_config();
    let sns = aws_sdk_sns::Client::new(&config);
    let name = unique("proxy-fail");
    let bystander = unique("proxy-bystander");
    proxy.inject(Fault::fail("CreateTopic", Some(&name), None));

    let err = sns
        .create_topic()
        .name(&name)
        .send()
        .await
        .expect_err("every attempt fails");
    assert_eq!(err.code(), Some("InternalFailure"), "{err:?}");
    assert_eq!(err.raw_response().map(|r| r.status().as_u16()), Some(500));
    // The needle confines the fault: another topic is created through the same proxy.
    sns.create_topic()
        .name(&bystander)
        .send()
        .await
        .expect("a topic the rule does not name");

    let calls = proxy.take_calls();
    let failed: Vec<&Call> = calls.iter().filter(|c| c.body.contains(&name)).collect();
    assert_eq!(failed.len(), SDK_ATTEMPTS, "{calls:#?}");
    assert!(
        failed
            .iter()
            .all(|c| c.operation == "CreateTopic" && c.status == 500),
        "{failed:#?}"
    );
    assert_eq!(calls.len(), SDK_ATTEMPTS + 1, "{calls:#?}");
    assert_eq!(calls[SDK_ATTEMPTS].status, 200);
    assert!(!topic_exists(&direct(), &name).await, "nothing was created");

    proxy.clear_faults();
    sns.create_topic()
        .name(&name)
        .send()
        .await
        .expect("no fault left");
    assert_eq!(summary(&proxy.take_calls()), [("sns", "CreateTopic", 200)]);
    assert!(topic_exists(&direct(), &name).await);
}

/// A create whose answer is lost is retried by the SDK and performed again: `CreateApi` is not
/// idempotent, so moto (like AWS) ends up with two APIs of the same name, and the SDK reports
/// success with the second one. Deploy has to find and remove the extra one.
#[tokio::test]
async fn a_lost_create_answer_leaves_a_duplicate_behind() {
    let proxy = proxy();
    let name = unique("proxy-dup");
    proxy.inject(Fault::fail_after_forward("CreateApi", Some(&name), Some(1)));

    let created = aws_sdk_apigatewayv2::Client::new(&proxy.sdk_config())
        .create_api()
        .name(&name)
        .protocol_type(aws_sdk_apigatewayv2::types::ProtocolType::Websocket)
        .route_selection_expression("$request.body.action")
        .send()
        .await
        .expect("the retry succeeds");

    assert_eq!(
        summary(&proxy.take_calls()),
        [
            ("apigateway", "CreateApi", 500),
            ("apigateway", "CreateApi", 200)
        ]
    );
    let ids = apis_named(&direct(), &name).await;
    assert_eq!(ids.len(), 2, "the lost create and its retry: {ids:?}");
    let returned = created.api_id().expect("api id");
    assert!(ids.iter().any(|id| id == returned), "{returned} in {ids:?}");
}

#[tokio::test]
async fn a_held_call_waits_for_its_gate() {
    let proxy = proxy();
    let name = unique("proxy-hold");
    let (fault, gate) = Fault::hold("CreateTopic", Some(&name));
    proxy.inject(fault);
    assert!(!gate.wait_reached(Duration::from_millis(50)), "no call yet");

    let sns = aws_sdk_sns::Client::new(&proxy.sdk_config());
    let call = {
        let name = name.clone();
        tokio::spawn(async move { sns.create_topic().name(name).send().await })
    };
    let waiter = gate.clone();
    let reached = tokio::task::spawn_blocking(move || waiter.wait_reached(Duration::from_secs(10)))
        .await
        .unwrap();
    assert!(reached, "the call reaches the gate");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!call.is_finished(), "a held call does not complete");
    assert!(!topic_exists(&direct(), &name).await, "nor is it forwarded");
    let held = proxy.take_calls();
    assert_eq!(summary(&held), [("sns", "CreateTopic", 0)], "no answer yet");

    let released = Instant::now();
    gate.release();
    let arn = tokio::time::timeout(Duration::from_secs(10), call)
        .await
        .expect("the call completes once released")
        .unwrap()
        .expect("create topic")
        .topic_arn
        .expect("topic arn");
    assert!(arn.ends_with(&format!(":{name}")), "{arn}");
    assert!(released.elapsed() < Duration::from_secs(5));
    assert!(topic_exists(&direct(), &name).await);
    // The call was taken while held; its answer does not bring it back.
    assert!(proxy.take_calls().is_empty());
}

#[tokio::test]
async fn moto_control_calls_pass_unrecorded() {
    let proxy = proxy();
    let addr = proxy
        .endpoint
        .trim_start_matches("http://")
        .parse()
        .unwrap();
    let (status, body) = chatctl_e2e::http(addr, "GET", "/moto-api/data.json", b"")
        .await
        .unwrap();
    assert_eq!(status, 200, "{body}");
    assert!(proxy.take_calls().is_empty());
}

#[test]
fn rest_operations_are_named_from_method_and_path() {
    let cases = [
        ("POST", "/2015-03-31/functions", "CreateFunction"),
        ("GET", "/2015-03-31/functions/", "ListFunctions"),
        ("GET", "/2015-03-31/functions/chat-ws", "GetFunction"),
        ("DELETE", "/2015-03-31/functions/chat-ws", "DeleteFunction"),
        (
            "PUT",
            "/2015-03-31/functions/chat-ws/code",
            "UpdateFunctionCode",
        ),
        (
            "PUT",
            "/2015-03-31/functions/chat-ws/configuration",
            "UpdateFunctionConfiguration",
        ),
        (
            "GET",
            "/2015-03-31/functions/chat-ws/configuration",
            "GetFunctionConfiguration",
        ),
        (
            "POST",
            "/2015-03-31/functions/chat-ws/policy",
            "AddPermission",
        ),
        ("GET", "/2015-03-31/functions/chat-ws/policy", "GetPolicy"),
        (
            "DELETE",
            "/2015-03-31/functions/chat-ws/policy/apigw",
            "RemovePermission",
        ),
        (
            "POST",
            "/2017-03-31/tags/arn%3Aaws%3Alambda%3Aus-east-1%3A123456789012%3Afunction%3Ax",
            "TagResource",
        ),
        ("DELETE", "/2017-03-31/tags/arn%3Ax", "UntagResource"),
        ("GET", "/2017-03-31/tags/arn%3Ax", "ListTags"),
        ("POST", "/v2/apis", "CreateApi"),
        ("GET", "/v2/apis", "GetApis"),
        ("GET", "/v2/apis/a1", "GetApi"),
        ("PATCH", "/v2/apis/a1", "UpdateApi"),
        ("DELETE", "/v2/apis/a1", "DeleteApi"),
        ("POST", "/v2/apis/a1/integrations", "CreateIntegration"),
        ("GET", "/v2/apis/a1/integrations", "GetIntegrations"),
        ("GET", "/v2/apis/a1/integrations/i1", "GetIntegration"),
        ("PATCH", "/v2/apis/a1/integrations/i1", "UpdateIntegration"),
        ("DELETE", "/v2/apis/a1/integrations/i1", "DeleteIntegration"),
        ("POST", "/v2/apis/a1/routes", "CreateRoute"),
        ("GET", "/v2/apis/a1/routes", "GetRoutes"),
        ("PATCH", "/v2/apis/a1/routes/r1", "UpdateRoute"),
        ("DELETE", "/v2/apis/a1/routes/r1", "DeleteRoute"),
        ("POST", "/v2/apis/a1/stages", "CreateStage"),
        ("GET", "/v2/apis/a1/stages", "GetStages"),
        ("GET", "/v2/apis/a1/stages/prod", "GetStage"),
        ("PATCH", "/v2/apis/a1/stages/prod", "UpdateStage"),
        ("DELETE", "/v2/apis/a1/stages/prod", "DeleteStage"),
        ("POST", "/v2/apis/a1/deployments", "CreateDeployment"),
        ("GET", "/v2/apis/a1/deployments", "GetDeployments"),
        (
            "POST",
            "/v2/apis/a1/routes/r1/routeresponses",
            "CreateRouteResponse",
        ),
        ("POST", "/v2/tags/arn%3Ax", "TagResource"),
        ("DELETE", "/v2/tags/arn%3Ax", "UntagResource"),
        ("GET", "/v2/tags/arn%3Ax", "GetTags"),
        ("POST", "/@connections/c1", "PostToConnection"),
    ];
    for (method, path, op) in cases {
        assert_eq!(
            rest_operation(method, path).as_deref(),
            Some(op),
            "{method} {path}"
        );
    }
    assert_eq!(rest_operation("GET", "/restapis"), None);
    let unnamed = Call {
        service: "apigateway".into(),
        operation: "GET /restapis".into(),
        body: String::new(),
        path: "/restapis".into(),
        status: 200,
    };
    assert!(!unnamed.mutating());
    assert!(
        Call {
            operation: "POST /restapis".into(),
            ..unnamed.clone()
        }
        .mutating()
    );
    assert!(
        !Call {
            operation: "GetCallerIdentity".into(),
            ..unnamed
        }
        .mutating()
    );
}
