//! The Lambda events as the handlers decode them: bytes → JSON → `ApiGatewayWebsocketProxyRequest`
//! (the ws function's `LambdaEvent`), and bytes → `serde_json::Value` → SQS event / SNS event /
//! the sweep's schedule input (the fan-out function's `is_sqs`, `Invocation::parse`). Each
//! decoded event is handled for real (`chat_handlers::{ws, fanout, queue, sweep}::handle`) on the
//! in-memory ports, so what a decoded event leads to is fuzzed too. Nothing may panic.
//!
//! Input: JSON text (one event, or an array of events handled in order against one backend, so a
//! `$connect` can be followed by its messages); anything that is not JSON is read as a recipe for
//! structured JSON built from the field names and values these events use.
#![no_main]

use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll, Waker};

use arbitrary::{Result as ArbResult, Unstructured};
use aws_lambda_events::apigw::ApiGatewayWebsocketProxyRequest;
use aws_lambda_events::sns::SnsEvent;
use aws_lambda_events::sqs::SqsEvent;
use chat_core::domain::MessageId;
use chat_core::memory::{
    MemoryConnectionStore, MemoryMessageStore, RecordingSender, RecordingTopic,
};
use chat_core::ports::{Clock, IdSource, ManualClock, RoomEvent};
use chat_core::token::TokenKey;
use chat_core::{AuthConfig, ChatConfig, ChatService, Ports};
use chat_handlers::fanout::Invocation;
use chrono::{DateTime, Utc};
use libfuzzer_sys::fuzz_target;
use serde_json::{Map, Number, Value};
use ulid::Ulid;

const NOW: i64 = 1_707_502_303_420;
/// Events handled per input, at most (an array of thousands would only be slow).
const MAX_EVENTS: usize = 16;

/// Run a future of the in-memory ports to completion: they never wait on anything, so each poll
/// makes progress; one that stays pending is a bug this target reports.
fn block_on<F: Future>(future: F) -> F::Output {
    let mut future = pin!(future);
    let mut cx = Context::from_waker(Waker::noop());
    for _ in 0..10_000 {
        if let Poll::Ready(out) = future.as_mut().poll(&mut cx) {
            return out;
        }
    }
    panic!("a handler on the in-memory ports never completed");
}

/// Message ids from a counter: reproducible runs (`MonotonicUlids` draws random bits).
#[derive(Default)]
struct CountingIds(AtomicU64);

impl IdSource for CountingIds {
    fn next_id(&self, now_ms: i64) -> MessageId {
        let n = self.0.fetch_add(1, Ordering::Relaxed);
        MessageId::from_ulid(ulid_from(u64::try_from(now_ms).unwrap_or(0), n))
    }
}

fn ulid_from(ms: u64, n: u64) -> Ulid {
    Ulid::from_parts(ms, u128::from(n))
}

struct Backend {
    chat: ChatService,
    topic: Arc<RecordingTopic>,
    clock: Arc<ManualClock>,
}

fn backend() -> Backend {
    let topic = Arc::new(RecordingTopic::default());
    let clock = Arc::new(ManualClock::new(NOW));
    let ports = Ports {
        messages: Arc::new(MemoryMessageStore::default()),
        connections: Arc::new(MemoryConnectionStore::default()),
        topic: topic.clone(),
        sender: Arc::new(RecordingSender::default()),
        clock: clock.clone(),
        ids: Arc::new(CountingIds::default()),
    };
    let auth = AuthConfig {
        key: TokenKey::new(b"fuzz-secret-0123456789".to_vec()).ok(),
        allow_anonymous: true,
    };
    Backend {
        chat: ChatService::new(ports, ChatConfig::default(), auth),
        topic,
        clock,
    }
}

/// One Lambda payload, handled as each function would: the ws function takes it if it decodes
/// as a WebSocket request; the fan-out function tells SQS, the sweep and SNS apart.
fn handle(b: &Backend, payload: &Value) {
    if let Ok(request) = serde_json::from_value::<ApiGatewayWebsocketProxyRequest>(payload.clone())
    {
        let response = block_on(chat_handlers::ws::handle(&b.chat, request));
        assert!(
            (200..600).contains(&response.status_code),
            "status {}",
            response.status_code
        );
    }
    if chat_handlers::queue::is_sqs(payload) {
        if let Ok(batch) = serde_json::from_value::<SqsEvent>(payload.clone()) {
            let outcome = block_on(chat_handlers::queue::handle(&b.chat, &batch));
            assert!(outcome.skipped <= batch.records.len());
            assert!(outcome.response.batch_item_failures.len() <= batch.records.len());
        }
    } else {
        match Invocation::parse(payload.clone()) {
            Ok(Invocation::Sns(sns)) => {
                let _ = block_on(chat_handlers::fanout::handle(&b.chat, &sns));
            }
            Ok(Invocation::Sweep) => {
                let _ = block_on(chat_handlers::sweep::handle(&b.chat, b.clock.now_ms()));
            }
            Err(e) => {
                let _ = e.to_string();
            }
        }
    }
    b.clock.advance(1_000);
    // What the handlers published goes out again as the SNS event AWS would deliver: built by
    // `events::sns_event`, through JSON, decoded, and fanned out. It must survive the trip.
    let published = b.topic.take();
    if published.is_empty() {
        return;
    }
    let mut records = Vec::new();
    for (i, event) in published.iter().enumerate() {
        let sns = chat_handlers::events::sns_event(
            event,
            "arn:aws:sns:eu-west-1:123456789012:chat-fuzz-events",
            format!("m{i}"),
            at(b),
        );
        let json = serde_json::to_vec(&sns).expect("an SNS event encodes");
        let back: SnsEvent = serde_json::from_slice(&json).expect("a built SNS event decodes");
        for record in back.records {
            let decoded: RoomEvent =
                serde_json::from_str(&record.sns.message).expect("its message is the room event");
            assert_eq!(&decoded, event);
            records.push(record);
        }
    }
    let mut sns = SnsEvent::default();
    sns.records = records;
    let _ = block_on(chat_handlers::fanout::handle(&b.chat, &sns));
}

fn at(b: &Backend) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(b.clock.now_ms()).unwrap_or_default()
}

// --- structured JSON ------------------------------------------------------------------------

const KEYS: &[&str] = &[
    // API Gateway WebSocket
    "requestContext",
    "routeKey",
    "eventType",
    "connectionId",
    "connectedAt",
    "requestTimeEpoch",
    "requestTime",
    "requestId",
    "extendedRequestId",
    "messageId",
    "messageDirection",
    "apiId",
    "stage",
    "domainName",
    "identity",
    "sourceIp",
    "userAgent",
    "body",
    "isBase64Encoded",
    "queryStringParameters",
    "multiValueQueryStringParameters",
    "headers",
    "multiValueHeaders",
    "disconnectStatusCode",
    "disconnectReason",
    "authorizer",
    // SNS
    "Records",
    "EventSource",
    "EventVersion",
    "EventSubscriptionArn",
    "Sns",
    "Type",
    "MessageId",
    "TopicArn",
    "Subject",
    "Message",
    "Timestamp",
    "SignatureVersion",
    "Signature",
    "SigningCertUrl",
    "SigningCertURL",
    "UnsubscribeUrl",
    "UnsubscribeURL",
    "MessageAttributes",
    "Value",
    // SQS
    "eventSource",
    "eventSourceARN",
    "awsRegion",
    "messageAttributes",
    "attributes",
    "receiptHandle",
    "md5OfBody",
    "ApproximateReceiveCount",
    // the schedule, the query string, frames and room events
    "chatctl",
    "room",
    "user",
    "token",
    "action",
    "text",
    "clientMsgId",
    "frame",
    "type",
    "id",
    "ts",
    "state",
    "members",
    "changes",
    "count",
    "joined",
    "left",
    "messages",
    "more",
    "by",
    "code",
    "message",
    "ref",
    "before",
    "after",
    "limit",
];

const STRINGS: &[&str] = &[
    "CONNECT",
    "MESSAGE",
    "DISCONNECT",
    "$connect",
    "$disconnect",
    "$default",
    "send",
    "join",
    "leave",
    "history",
    "presence",
    "recall",
    "ping",
    "aws:sns",
    "aws:sqs",
    "Notification",
    "presence-sweep",
    "lobby",
    "side",
    "ann",
    "bob",
    "String",
    "Number",
    "conn-1",
    "conn-2",
    "2024-02-09T18:11:43.420Z",
    "09/Feb/2024:18:11:43 +0000",
    "message",
    "recalled",
    "joined",
    "online",
    "idle",
    "01ARZ3NDEKTSV4RRFFQ69G5FAV",
    "1.0",
    "IN",
    "",
];

fn string(u: &mut Unstructured<'_>, depth: u32) -> ArbResult<String> {
    Ok(match u.choose_index(4)? {
        0 | 1 => (*u.choose(STRINGS)?).to_owned(),
        // JSON inside a string: frame bodies, SNS messages and SQS bodies are.
        2 if depth > 0 => value(u, depth - 1)?.to_string(),
        _ => u.arbitrary::<String>()?,
    })
}

fn value(u: &mut Unstructured<'_>, depth: u32) -> ArbResult<Value> {
    let pick = if depth == 0 {
        u.choose_index(4)?
    } else {
        u.choose_index(7)?
    };
    Ok(match pick {
        0 => Value::Null,
        1 => Value::Bool(u.arbitrary()?),
        2 => match u.choose_index(3)? {
            0 => Value::from(u.arbitrary::<i64>()?),
            1 => Value::from(u.arbitrary::<u64>()?),
            _ => Number::from_f64(u.arbitrary()?).map_or(Value::Null, Value::Number),
        },
        3 => Value::String(string(u, depth)?),
        4 => {
            let n = u.int_in_range(0..=4)?;
            Value::Array(
                (0..n)
                    .map(|_| value(u, depth - 1))
                    .collect::<ArbResult<_>>()?,
            )
        }
        _ => {
            let n = u.int_in_range(0..=8)?;
            let mut map = Map::new();
            for _ in 0..n {
                let key = if u.ratio(7, 8)? {
                    (*u.choose(KEYS)?).to_owned()
                } else {
                    u.arbitrary::<String>()?
                };
                map.insert(key, value(u, depth - 1)?);
            }
            Value::Object(map)
        }
    })
}

fuzz_target!(|data: &[u8]| {
    let payloads: Vec<Value> = match serde_json::from_slice::<Value>(data) {
        Ok(Value::Array(events)) => events,
        Ok(one) => vec![one],
        Err(_) => {
            let mut u = Unstructured::new(data);
            let mut events = Vec::new();
            while events.len() < MAX_EVENTS && !u.is_empty() {
                match value(&mut u, 5) {
                    Ok(v) => events.push(v),
                    Err(_) => break,
                }
            }
            events
        }
    };
    // The runtime decodes the bytes straight into the typed event: that must not panic either.
    let _ = serde_json::from_slice::<ApiGatewayWebsocketProxyRequest>(data);
    let _ = serde_json::from_slice::<SnsEvent>(data);
    let _ = serde_json::from_slice::<SqsEvent>(data);
    let b = backend();
    for payload in payloads.iter().take(MAX_EVENTS) {
        handle(&b, payload);
    }
});
