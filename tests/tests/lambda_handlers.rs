//! The Lambda handler functions on real AWS event JSON, with DynamoDB and SNS on moto and the
//! Management API posts going to a running local gateway: real sockets receive what the Lambda
//! side posts, and a closed socket answers 410 for real, which removes that connection from
//! DynamoDB. (moto's own Management API never answers 410, so it could not show this.)

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;

use aws_lambda_events::apigw::ApiGatewayWebsocketProxyRequest;
use aws_lambda_events::sns::{SnsEvent, SnsMessage, SnsRecord};
use chat_aws::TableNames;
use chat_aws::lambda::Settings;
use chat_core::domain::UserName;
use chat_core::ports::ManualClock;
use chat_core::token::{Claims, TokenKey};
use chatctl_e2e::TestServer;
use chatctl_e2e::moto::{Moto, unique};
use serde_json::{Value, json};

const T0: i64 = 1_700_000_000_000;

fn connect_event(connection_id: &str, token: &str) -> ApiGatewayWebsocketProxyRequest {
    serde_json::from_value(json!({
        "headers": { "Host": "abc123.execute-api.us-east-1.amazonaws.com", "Sec-WebSocket-Version": "13" },
        "multiValueHeaders": { "Host": ["abc123.execute-api.us-east-1.amazonaws.com"] },
        "queryStringParameters": { "room": "lobby", "token": token },
        "multiValueQueryStringParameters": { "room": ["lobby"], "token": [token] },
        "requestContext": {
            "routeKey": "$connect", "eventType": "CONNECT", "extendedRequestId": "x", "requestTime": "14/Nov/2023:22:13:20 +0000",
            "messageDirection": "IN", "stage": "local", "connectedAt": T0, "requestTimeEpoch": T0,
            "identity": { "sourceIp": "127.0.0.1" }, "requestId": "r1",
            "domainName": "abc123.execute-api.us-east-1.amazonaws.com", "connectionId": connection_id, "apiId": "abc123"
        },
        "isBase64Encoded": false
    }))
    .unwrap()
}

fn message_event(
    connection_id: &str,
    route_key: &str,
    body: Value,
) -> ApiGatewayWebsocketProxyRequest {
    serde_json::from_value(json!({
        "requestContext": {
            "routeKey": route_key, "messageId": "m1", "eventType": "MESSAGE", "extendedRequestId": "x",
            "requestTime": "14/Nov/2023:22:13:21 +0000", "messageDirection": "IN", "stage": "local",
            "connectedAt": T0, "requestTimeEpoch": T0 + 1000, "identity": { "sourceIp": "127.0.0.1" },
            "requestId": "r2", "domainName": "abc123.execute-api.us-east-1.amazonaws.com",
            "connectionId": connection_id, "apiId": "abc123"
        },
        "body": body.to_string(),
        "isBase64Encoded": false
    }))
    .unwrap()
}

struct Subscription {
    sqs: aws_sdk_sqs::Client,
    queue_url: String,
}

impl Subscription {
    /// The SNS event the fan-out Lambda would receive for what was published since last time.
    async fn next_event(&self) -> SnsEvent {
        let mut records = vec![];
        for _ in 0..10 {
            let out = self
                .sqs
                .receive_message()
                .queue_url(&self.queue_url)
                .max_number_of_messages(10)
                .wait_time_seconds(1)
                .send()
                .await
                .unwrap();
            for m in out.messages() {
                let sns: SnsMessage = serde_json::from_str(m.body().unwrap()).unwrap();
                let mut record = SnsRecord::default();
                record.event_source = "aws:sns".into();
                record.event_version = "1.0".into();
                record.event_subscription_arn = format!("{}:sub", sns.topic_arn);
                record.sns = sns;
                records.push(record);
                self.sqs
                    .delete_message()
                    .queue_url(&self.queue_url)
                    .receipt_handle(m.receipt_handle().unwrap())
                    .send()
                    .await
                    .unwrap();
            }
            if !records.is_empty() {
                break;
            }
        }
        let mut event = SnsEvent::default();
        event.records = records;
        event
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn lambda_handlers_on_dynamodb_post_to_real_sockets_and_drop_gone_ones() {
    // The gateway whose Management API the Lambda side posts to, with two real clients.
    let gateway = TestServer::start().await;
    let mut ann = gateway.join("lobby", "ann").await;
    let mut bob = gateway.join("lobby", "bob").await;
    let registered = gateway.connections().await;
    let id_of = |user: &str| {
        registered
            .iter()
            .find(|c| c.user.as_str() == user)
            .unwrap()
            .id
            .to_string()
    };
    let (ann_id, bob_id) = (id_of("ann"), id_of("bob"));

    // The Lambda side: DynamoDB and SNS on moto, an SQS queue standing in for the subscription.
    let config = Moto::shared().sdk_config();
    let dynamo = aws_sdk_dynamodb::Client::new(&config);
    let tables = TableNames::for_stage("lambda", &unique("t"));
    chat_aws::tables::ensure(&dynamo, &tables).await.unwrap();
    let (topic_arn, sqs, queue_url) = chatctl_e2e::moto::topic_with_queue(&config).await;
    let subscription = Subscription { sqs, queue_url };

    let secret = "00112233445566778899aabbccddeeff00112233";
    let management = format!("{}/local", gateway.server().management_url());
    let settings = Settings::from_vars(|name| {
        Some(match name {
            "CHAT_MESSAGES_TABLE" => tables.messages.clone(),
            "CHAT_CONNECTIONS_TABLE" => tables.connections.clone(),
            "CHAT_TOPIC_ARN" => topic_arn.clone(),
            "CHAT_MANAGEMENT_ENDPOINT" => management.clone(),
            "CHAT_TOKEN_SECRET" => secret.to_owned(),
            _ => return None,
        })
    })
    .unwrap();
    let clock = Arc::new(ManualClock::new(T0));
    let chat = chat_aws::lambda::service_with_clock(&settings, &config, clock.clone())
        .await
        .unwrap();
    let key = TokenKey::new(
        b"\x00\x11\x22\x33\x44\x55\x66\x77\x88\x99\xaa\xbb\xcc\xdd\xee\xff\x00\x11\x22\x33"
            .to_vec(),
    )
    .unwrap();
    let token = |user: &str| {
        key.mint(&Claims {
            sub: UserName::parse(user).unwrap(),
            exp: T0 / 1000 + 3600,
            iat: 0,
            rooms: None,
            op: false,
        })
    };

    // $connect with real event JSON registers both in DynamoDB.
    for (id, user) in [(&ann_id, "ann"), (&bob_id, "bob")] {
        let answer = chat_handlers::ws::handle(&chat, connect_event(id, &token(user))).await;
        assert_eq!(answer.status_code, 200, "{answer:?}");
    }
    let forged = chat_handlers::ws::handle(&chat, connect_event("other", "v1.e30.AAAA")).await;
    assert_eq!(forged.status_code, 403);
    let store = chat.ports().connections.clone();
    assert_eq!(
        store
            .in_room(&"lobby".parse().unwrap())
            .await
            .unwrap()
            .len(),
        2
    );

    // Ann sends: the ack reaches her socket through the Management API.
    let answer = chat_handlers::ws::handle(
        &chat,
        message_event(
            &ann_id,
            "send",
            json!({"action":"send","room":"lobby","text":"via Lambda","clientMsgId":"L1"}),
        ),
    )
    .await;
    assert_eq!(answer.status_code, 200);
    let ack = ann
        .recv_matching("ack", |f| f["type"] == "ack" && f["clientMsgId"] == "L1")
        .await
        .unwrap();

    // The published event, as the fan-out Lambda receives it from SNS, reaches both sockets.
    let event = subscription.next_event().await;
    assert!(!event.records.is_empty());
    let kinds: Vec<_> = event
        .records
        .iter()
        .map(|r| r.sns.message_attributes["eventType"].value.clone())
        .collect();
    let reports = chat_handlers::fanout::handle(&chat, &event).await.unwrap();
    assert!(
        reports.iter().all(|r| r.removed.is_empty()),
        "{kinds:?} {reports:?}"
    );
    for client in [&mut ann, &mut bob] {
        let m = client
            .recv_matching("the message", |f| {
                f["type"] == "message" && f["text"] == "via Lambda"
            })
            .await
            .unwrap();
        assert_eq!(m["id"], ack["id"]);
    }

    // Bob's socket closes; the next fan-out gets a real 410 for him and removes him, only him.
    bob.close().await;
    clock.advance(10_000);
    chat_handlers::ws::handle(
        &chat,
        message_event(
            &ann_id,
            "send",
            json!({"action":"send","room":"lobby","text":"bob?"}),
        ),
    )
    .await;
    let event = subscription.next_event().await;
    let reports = chat_handlers::fanout::handle(&chat, &event).await.unwrap();
    let removed: Vec<String> = reports
        .iter()
        .flat_map(|r| r.removed.iter().map(ToString::to_string))
        .collect();
    assert_eq!(removed, std::slice::from_ref(&bob_id));
    let left: Vec<String> = store
        .in_room(&"lobby".parse().unwrap())
        .await
        .unwrap()
        .iter()
        .map(|c| c.id.to_string())
        .collect();
    assert_eq!(left, std::slice::from_ref(&ann_id));
    ann.recv_matching("bob?", |f| f["type"] == "message" && f["text"] == "bob?")
        .await
        .unwrap();

    // $disconnect with real event JSON removes ann too.
    let mut disconnect = message_event(&ann_id, "$disconnect", json!({}));
    disconnect.request_context.event_type = Some("DISCONNECT".into());
    disconnect.body = None;
    assert_eq!(
        chat_handlers::ws::handle(&chat, disconnect)
            .await
            .status_code,
        200
    );
    assert!(
        store
            .in_room(&"lobby".parse().unwrap())
            .await
            .unwrap()
            .is_empty()
    );
}
