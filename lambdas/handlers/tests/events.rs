//! The handlers fed the JSON API Gateway and SNS actually send (shapes as documented by AWS and
//! logged from deployed WebSocket APIs), and the events the local gateway builds checked against
//! the same shapes, so the local path cannot drift from the Lambda path unnoticed.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;

use aws_lambda_events::apigw::ApiGatewayWebsocketProxyRequest;
use aws_lambda_events::sns::SnsEvent;
use chat_core::domain::{ConnectionId, RoomName};
use chat_core::memory::{
    MemoryConnectionStore, MemoryMessageStore, RecordingSender, RecordingTopic,
};
use chat_core::ports::{ConnectionStore, ManualClock, MonotonicUlids, RoomEvent};
use chat_core::protocol::ServerFrame;
use chat_core::{AuthConfig, ChatConfig, ChatService, Ports};
use chat_handlers::events::{WsContext, WsEvent, WsEventKind, sns_event};
use serde_json::{Value, json};

const NOW: i64 = 1_707_502_303_420;

struct Fixture {
    chat: ChatService,
    sender: Arc<RecordingSender>,
    topic: Arc<RecordingTopic>,
    connections: Arc<MemoryConnectionStore>,
}

fn fixture() -> Fixture {
    let sender = Arc::new(RecordingSender::default());
    let topic = Arc::new(RecordingTopic::default());
    let connections = Arc::new(MemoryConnectionStore::default());
    let ports = Ports {
        messages: Arc::new(MemoryMessageStore::default()),
        connections: connections.clone(),
        topic: topic.clone(),
        sender: sender.clone(),
        clock: Arc::new(ManualClock::new(NOW)),
        ids: Arc::new(MonotonicUlids::default()),
    };
    let auth = AuthConfig {
        key: None,
        allow_anonymous: true,
    };
    Fixture {
        chat: ChatService::new(ports, ChatConfig::default(), auth),
        sender,
        topic,
        connections,
    }
}

fn connect_event(query: Value) -> Value {
    json!({
        "headers": {
            "Host": "abc123.execute-api.eu-west-1.amazonaws.com",
            "Sec-WebSocket-Extensions": "permessage-deflate; client_max_window_bits",
            "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
            "Sec-WebSocket-Version": "13",
            "X-Amzn-Trace-Id": "Root=1-65c66a5f-0b5a6f6c3a5c0e6a1e2b3c4d",
            "X-Forwarded-For": "203.0.113.5",
            "X-Forwarded-Port": "443",
            "X-Forwarded-Proto": "https"
        },
        "multiValueHeaders": {
            "Host": ["abc123.execute-api.eu-west-1.amazonaws.com"],
            "X-Forwarded-For": ["203.0.113.5"]
        },
        "queryStringParameters": query,
        "requestContext": {
            "routeKey": "$connect",
            "eventType": "CONNECT",
            "extendedRequestId": "Sx2ZBG5xDoEFZqg=",
            "requestTime": "09/Feb/2024:18:11:43 +0000",
            "messageDirection": "IN",
            "stage": "prod",
            "connectedAt": NOW,
            "requestTimeEpoch": NOW,
            "identity": { "userAgent": "test-client", "sourceIp": "203.0.113.5" },
            "requestId": "Sx2ZBG5xDoEFZqg=",
            "domainName": "abc123.execute-api.eu-west-1.amazonaws.com",
            "connectionId": "Sx2ZBcYqjoECFWw=",
            "apiId": "abc123"
        },
        "isBase64Encoded": false
    })
}

fn message_event(route_key: &str, body: &str) -> Value {
    json!({
        "requestContext": {
            "routeKey": route_key,
            "messageId": "Sx2bLc7NDoECFWw=",
            "eventType": "MESSAGE",
            "extendedRequestId": "Sx2bLEsXjoEFQxA=",
            "requestTime": "09/Feb/2024:18:11:58 +0000",
            "messageDirection": "IN",
            "stage": "prod",
            "connectedAt": NOW,
            "requestTimeEpoch": NOW + 15_000,
            "identity": { "userAgent": "test-client", "sourceIp": "203.0.113.5" },
            "requestId": "Sx2bLEsXjoEFQxA=",
            "domainName": "abc123.execute-api.eu-west-1.amazonaws.com",
            "connectionId": "Sx2ZBcYqjoECFWw=",
            "apiId": "abc123"
        },
        "body": body,
        "isBase64Encoded": false
    })
}

fn disconnect_event() -> Value {
    json!({
        "headers": { "Host": "abc123.execute-api.eu-west-1.amazonaws.com", "x-api-key": "", "X-Forwarded-For": "", "x-restapi": "" },
        "multiValueHeaders": { "Host": ["abc123.execute-api.eu-west-1.amazonaws.com"] },
        "requestContext": {
            "routeKey": "$disconnect",
            "disconnectStatusCode": 1001,
            "eventType": "DISCONNECT",
            "extendedRequestId": "Sx2dJHcFjoEFbVw=",
            "requestTime": "09/Feb/2024:18:12:10 +0000",
            "messageDirection": "IN",
            "disconnectReason": "Client-side close frame status code '1001' (GOING_AWAY)",
            "stage": "prod",
            "connectedAt": NOW,
            "requestTimeEpoch": NOW + 27_000,
            "identity": { "userAgent": "test-client", "sourceIp": "203.0.113.5" },
            "requestId": "Sx2dJHcFjoEFbVw=",
            "domainName": "abc123.execute-api.eu-west-1.amazonaws.com",
            "connectionId": "Sx2ZBcYqjoECFWw=",
            "apiId": "abc123"
        },
        "isBase64Encoded": false
    })
}

fn request(v: Value) -> ApiGatewayWebsocketProxyRequest {
    serde_json::from_value(v).expect("a real API Gateway event parses")
}

#[tokio::test]
async fn real_api_gateway_events_drive_the_whole_lifecycle() {
    let f = fixture();
    let id = ConnectionId::new("Sx2ZBcYqjoECFWw=");

    let refused =
        chat_handlers::ws::handle(&f.chat, request(connect_event(json!({"user":"ann"})))).await;
    assert_eq!(refused.status_code, 400);

    let accepted = chat_handlers::ws::handle(
        &f.chat,
        request(connect_event(json!({"room":"lobby","user":"ann"}))),
    )
    .await;
    assert_eq!(accepted.status_code, 200);
    let stored = f.connections.get(&id).await.unwrap().expect("registered");
    assert_eq!(stored.user.as_str(), "ann");
    assert_eq!(stored.connected_at, NOW);

    let body = r#"{"action":"send","room":"lobby","text":"from Lambda","clientMsgId":"c1"}"#;
    let answer = chat_handlers::ws::handle(&f.chat, request(message_event("send", body))).await;
    assert_eq!(answer.status_code, 200);
    let posts = f.sender.take(&id);
    let ack: Value = serde_json::from_str(posts.last().unwrap()).unwrap();
    assert_eq!(
        (ack["type"].as_str(), ack["clientMsgId"].as_str()),
        (Some("ack"), Some("c1"))
    );
    let kinds: Vec<_> = f.topic.take().iter().map(RoomEvent::kind).collect();
    assert_eq!(kinds, ["presence", "message"]);

    let answer = chat_handlers::ws::handle(
        &f.chat,
        request(message_event("$default", r#"{"action":"dance"}"#)),
    )
    .await;
    assert_eq!(answer.status_code, 200);
    let err: Value = serde_json::from_str(&f.sender.take(&id)[0]).unwrap();
    assert_eq!(err["code"], "unknown_action");

    let answer = chat_handlers::ws::handle(&f.chat, request(disconnect_event())).await;
    assert_eq!(answer.status_code, 200);
    assert!(f.connections.get(&id).await.unwrap().is_none());
    let left: Vec<_> = f.topic.take();
    assert_eq!(left.len(), 1);
    assert_eq!(
        serde_json::to_value(&left[0].frame).unwrap()["state"],
        "left"
    );
}

#[tokio::test]
async fn a_real_sns_notification_is_fanned_out() {
    let f = fixture();
    chat_handlers::ws::handle(
        &f.chat,
        request(connect_event(json!({"room":"lobby","user":"ann"}))),
    )
    .await;
    let room_event = RoomEvent::new(
        RoomName::parse("lobby").unwrap(),
        ServerFrame::Pong { ts: 7 },
    );
    let sns = json!({
        "Records": [{
            "EventSource": "aws:sns",
            "EventVersion": "1.0",
            "EventSubscriptionArn": "arn:aws:sns:eu-west-1:123456789012:chat-prod-events:2bcfbf39-05c3-41de-beaa-fcfcc21c8f55",
            "Sns": {
                "Type": "Notification",
                "MessageId": "95df01b4-ee98-5cb9-9903-4c221d41eb5e",
                "TopicArn": "arn:aws:sns:eu-west-1:123456789012:chat-prod-events",
                "Subject": null,
                "Message": serde_json::to_string(&room_event).unwrap(),
                "Timestamp": "2024-02-09T18:11:58.123Z",
                "SignatureVersion": "1",
                "Signature": "tcc6faL2yUC6dgZdmrwh1Y4cGa/ebXEkAi6RibDsvpi+tE/1+82j...",
                "SigningCertUrl": "https://sns.eu-west-1.amazonaws.com/SimpleNotificationService-example.pem",
                "UnsubscribeUrl": "https://sns.eu-west-1.amazonaws.com/?Action=Unsubscribe",
                "MessageAttributes": {
                    "room": { "Type": "String", "Value": "lobby" },
                    "eventType": { "Type": "String", "Value": "pong" }
                }
            }
        }, {
            "EventSource": "aws:sns",
            "EventVersion": "1.0",
            "EventSubscriptionArn": "arn:aws:sns:eu-west-1:123456789012:chat-prod-events:x",
            "Sns": {
                "Type": "Notification", "MessageId": "m2", "TopicArn": "arn:aws:sns:eu-west-1:123456789012:chat-prod-events",
                "Message": "not a room event", "Timestamp": "2024-02-09T18:11:58.123Z",
                "SignatureVersion": "1", "Signature": "", "SigningCertUrl": "", "UnsubscribeUrl": ""
            }
        }]
    });
    let event: SnsEvent = serde_json::from_value(sns).unwrap();
    let reports = chat_handlers::fanout::handle(&f.chat, &event)
        .await
        .unwrap();
    assert_eq!(
        reports.len(),
        1,
        "the malformed record is skipped, not retried forever"
    );
    assert_eq!(reports[0].delivered, 1);
    let posts = f.sender.take(&ConnectionId::new("Sx2ZBcYqjoECFWw="));
    assert_eq!(posts.last().unwrap(), r#"{"type":"pong","ts":7}"#);
}

/// The local gateway's events serialise to the same keys API Gateway and SNS send.
#[test]
fn locally_built_events_have_the_aws_shape() {
    let ctx = WsContext {
        api_id: "local".into(),
        stage: "dev".into(),
        domain_name: "127.0.0.1:8080".into(),
    };
    let event = WsEvent {
        context: &ctx,
        kind: WsEventKind::Connect,
        connection_id: "Sx2ZBcYqjoECFWw=",
        connected_at_ms: NOW,
        request_time_ms: NOW,
        request_id: "r1".into(),
        query: vec![
            ("room".into(), "lobby".into()),
            ("user".into(), "ann".into()),
        ],
        headers: vec![("Host".into(), "127.0.0.1:8080".into())],
        source_ip: Some("127.0.0.1".into()),
        body: None,
        is_base64_encoded: false,
    };
    let local = serde_json::to_value(event.to_request()).unwrap();
    let real = connect_event(json!({"room":"lobby","user":"ann"}));
    for key in [
        "routeKey",
        "eventType",
        "connectionId",
        "connectedAt",
        "requestTimeEpoch",
        "stage",
        "apiId",
        "domainName",
        "requestId",
    ] {
        assert!(
            local["requestContext"].get(key).is_some(),
            "requestContext.{key} missing: {local}"
        );
        assert!(real["requestContext"].get(key).is_some());
    }
    assert_eq!(local["requestContext"]["eventType"], "CONNECT");
    assert_eq!(local["requestContext"]["routeKey"], "$connect");
    assert_eq!(local["requestContext"]["identity"]["sourceIp"], "127.0.0.1");
    assert_eq!(
        local["requestContext"]["requestTime"],
        "09/Feb/2024:18:11:43 +0000"
    );
    // The handler receives the struct, not JSON; aws_lambda_events serialises query maps as
    // arrays of values, so check the query through the parsed type instead of the JSON.
    let back: ApiGatewayWebsocketProxyRequest = serde_json::from_value(local).unwrap();
    assert_eq!(back.query_string_parameters.first("room"), Some("lobby"));
    assert_eq!(back.query_string_parameters.first("user"), Some("ann"));

    let room_event = RoomEvent::new(
        RoomName::parse("lobby").unwrap(),
        ServerFrame::Pong { ts: 7 },
    );
    let sns = serde_json::to_value(sns_event(
        &room_event,
        "arn:aws:sns:local:000000000000:t",
        "m1".into(),
        chrono::DateTime::from_timestamp_millis(NOW).unwrap(),
    ))
    .unwrap();
    let record = &sns["Records"][0];
    assert_eq!(record["EventSource"], "aws:sns");
    assert_eq!(record["Sns"]["Type"], "Notification");
    assert_eq!(
        record["Sns"]["MessageAttributes"]["room"],
        json!({"Type":"String","Value":"lobby"})
    );
    assert_eq!(
        record["Sns"]["MessageAttributes"]["eventType"]["Value"],
        "pong"
    );
    let back: RoomEvent = serde_json::from_str(record["Sns"]["Message"].as_str().unwrap()).unwrap();
    assert_eq!(back, room_event);
}
