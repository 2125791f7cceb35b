//! The fan-out's SQS path with the event shape Lambda sends for a queue (raw SNS delivery: the
//! body is the room event): a batch is fanned out room by room, coalesced, and only the records
//! of a room whose fan-out failed go back to SQS.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeSet;
use std::sync::Arc;

use async_trait::async_trait;
use aws_lambda_events::sqs::SqsEvent;
use chat_core::domain::{Connection, ConnectionId, PresenceChange, RoomName, UserName};
use chat_core::memory::{
    MemoryConnectionStore, MemoryMessageStore, RecordingSender, RecordingTopic,
};
use chat_core::ports::{
    ConnectionStore, ManualClock, MonotonicUlids, PortError, PortResult, RoomEvent,
};
use chat_core::protocol::ServerFrame;
use chat_core::{AuthConfig, ChatConfig, ChatService, Ports};
use chat_handlers::events::sns_message_body;
use serde_json::{Value, json};

const NOW: i64 = 1_707_502_303_420;

/// The memory store, except that reading room `broken` fails (a throttled query).
struct BrokenRoom(Arc<MemoryConnectionStore>);

fn broken(room: &RoomName) -> PortResult<()> {
    if room.as_str() == "broken" {
        Err(PortError::new("throttled"))
    } else {
        Ok(())
    }
}

#[async_trait]
impl ConnectionStore for BrokenRoom {
    async fn put(&self, c: &Connection) -> PortResult<()> {
        self.0.put(c).await
    }
    async fn get(&self, id: &ConnectionId) -> PortResult<Option<Connection>> {
        self.0.get(id).await
    }
    async fn remove(&self, id: &ConnectionId) -> PortResult<Option<Connection>> {
        self.0.remove(id).await
    }
    async fn join(&self, id: &ConnectionId, room: &RoomName) -> PortResult<bool> {
        self.0.join(id, room).await
    }
    async fn leave(&self, id: &ConnectionId, room: &RoomName) -> PortResult<bool> {
        self.0.leave(id, room).await
    }
    async fn touch(&self, id: &ConnectionId, now: i64) -> PortResult<Option<i64>> {
        self.0.touch(id, now).await
    }
    async fn in_room(&self, room: &RoomName) -> PortResult<Vec<Connection>> {
        broken(room)?;
        self.0.in_room(room).await
    }
    async fn all(&self) -> PortResult<Vec<Connection>> {
        self.0.all().await
    }
}

fn member(id: &str, user: &str, room: &str) -> Connection {
    Connection {
        id: ConnectionId::new(id),
        user: UserName::parse(user).unwrap(),
        rooms: BTreeSet::from([RoomName::parse(room).unwrap()]),
        allowed_rooms: None,
        connected_at: NOW - 10_000,
        last_seen: NOW - 1_000,
        operator: false,
    }
}

fn joined(room: &str, user: &str, ts: i64) -> String {
    let room = RoomName::parse(room).unwrap();
    sns_message_body(&RoomEvent::new(
        room.clone(),
        ServerFrame::Presence {
            room,
            user: UserName::parse(user).unwrap(),
            state: PresenceChange::Joined,
            ts,
        },
    ))
}

/// An SQS event as Lambda delivers it from a standard queue.
fn sqs_event(bodies: &[(&str, String)]) -> Value {
    let records: Vec<Value> = bodies
        .iter()
        .map(|(id, body)| {
            json!({
                "messageId": id,
                "receiptHandle": format!("rh-{id}"),
                "body": body,
                "attributes": {
                    "ApproximateReceiveCount": "1",
                    "SentTimestamp": NOW.to_string(),
                    "SenderId": "AIDAIENQZJOLO23YVJ4VO",
                    "ApproximateFirstReceiveTimestamp": NOW.to_string()
                },
                "messageAttributes": {},
                "md5OfBody": "e4e68fb7bd0e697a0ae8f1bb342846b3",
                "eventSource": "aws:sqs",
                "eventSourceARN": "arn:aws:sqs:eu-west-1:123456789012:chat-prod-presence",
                "awsRegion": "eu-west-1"
            })
        })
        .collect();
    json!({ "Records": records })
}

#[tokio::test]
async fn a_batch_is_fanned_out_per_room_and_only_a_failed_rooms_records_go_back() {
    let memory = Arc::new(MemoryConnectionStore::default());
    let sender = Arc::new(RecordingSender::default());
    for c in [
        member("ann-1", "ann", "lobby"),
        member("cat-1", "cat", "broken"),
    ] {
        memory.put(&c).await.unwrap();
    }
    let chat = ChatService::new(
        Ports {
            messages: Arc::new(MemoryMessageStore::default()),
            connections: Arc::new(BrokenRoom(memory.clone())),
            topic: Arc::new(RecordingTopic::default()),
            sender: sender.clone(),
            clock: Arc::new(ManualClock::new(NOW)),
            ids: Arc::new(MonotonicUlids::default()),
        },
        ChatConfig::default(),
        AuthConfig {
            key: None,
            allow_anonymous: true,
        },
    );
    let payload = sqs_event(&[
        ("m1", joined("lobby", "bob", NOW)),
        ("m2", joined("broken", "dan", NOW)),
        ("m3", joined("lobby", "eve", NOW + 1)),
        ("m4", "not a room event".to_owned()),
        ("m5", joined("broken", "fay", NOW + 2)),
    ]);
    assert!(chat_handlers::queue::is_sqs(&payload));
    let event: SqsEvent = serde_json::from_value(payload).unwrap();
    let outcome = chat_handlers::queue::handle(&chat, &event).await;

    // The broken room's two records are redelivered; the bad body is dropped, not retried.
    let failed: Vec<&str> = outcome
        .response
        .batch_item_failures
        .iter()
        .map(|f| f.item_identifier.as_str())
        .collect();
    assert_eq!(failed, ["m2", "m5"]);
    assert_eq!(outcome.skipped, 1);
    // The lobby's two joins reached ann as one coalesced frame.
    let frames: Vec<Value> = sender
        .take(&ConnectionId::new("ann-1"))
        .iter()
        .map(|f| serde_json::from_str(f).unwrap())
        .collect();
    assert_eq!(frames.len(), 1, "{frames:?}");
    assert_eq!(frames[0]["type"], "presence_batch");
    let users: Vec<&str> = frames[0]["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["user"].as_str().unwrap())
        .collect();
    assert_eq!(users, ["bob", "eve"]);
    assert!(sender.take(&ConnectionId::new("cat-1")).is_empty());
    // The answer Lambda reads: {"batchItemFailures":[{"itemIdentifier":…}]}.
    let answer = serde_json::to_value(&outcome.response).unwrap();
    assert_eq!(answer["batchItemFailures"][0]["itemIdentifier"], "m2");
}
