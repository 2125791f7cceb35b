//! The operator interface against real backends over real sockets: the local instance (SQLite in
//! its data directory, its gateway's Management API) and the AWS code path (DynamoDB and SNS on
//! moto, with a local gateway on those DynamoDB tables standing in for API Gateway's Management
//! API, because moto's never answers 410 and has no sockets).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use chat_core::domain::{Connection, ConnectionId, MessageId, RoomName, UserName};
use chat_core::handler::RecallError;
use chat_core::policy::ChatConfig;
use chat_local::{LocalServer, Stores};
use chatctl_e2e::moto::{Moto, fresh_stage, notifications, topic_with_queue};
use chatctl_e2e::{Client, enc, start_wall_clock};
use chatctl_ops::operator::{Operator, OpsError, TailEvent};
use chatctl_ops::target::{self, AwsTarget};
use serde_json::Value;

fn url(server: &LocalServer, room: &str, user: &str) -> String {
    format!(
        "{}?room={}&user={}",
        server.websocket_url(),
        enc(room),
        enc(user)
    )
}

fn room(name: &str) -> RoomName {
    RoomName::parse(name).unwrap()
}

fn new_messages(events: &[TailEvent]) -> Vec<String> {
    events
        .iter()
        .filter_map(|e| match e {
            TailEvent::Message(m) => m.text.clone(),
            TailEvent::Recalled { .. } => None,
        })
        .collect()
}

/// The whole operator surface on one backend: `clients` chat in `lobby`, the operator watches
/// and acts. Shared by the local and the AWS-path test.
async fn exercise(operator: &Operator, server: &LocalServer) {
    let lobby = room("lobby");
    let mut ann = Client::connect(&url(server, "lobby", "ann")).await.unwrap();
    let mut bob = Client::connect(&url(server, "lobby", "bob")).await.unwrap();
    let mut bob2 = Client::connect(&url(server, "lobby", "bob")).await.unwrap();
    let first = ann.say("lobby", "hello").await;
    bob.recv_type("message").await.unwrap();

    // tail: what was said, then what is said next.
    let (events, mut cursor) = operator.tail_start(&lobby, 10, None).await.unwrap();
    assert_eq!(new_messages(&events), ["hello"]);
    bob.say("lobby", "hi ann").await;
    ann.say("lobby", "how are you").await;
    let events = operator.tail_poll(&lobby, &mut cursor).await.unwrap();
    assert_eq!(new_messages(&events), ["hi ann", "how are you"]);
    assert!(
        operator
            .tail_poll(&lobby, &mut cursor)
            .await
            .unwrap()
            .is_empty()
    );

    // presence: two users, bob with both his connections, everyone online.
    let presence = operator.presence(&lobby).await.unwrap();
    let members: Vec<(&str, &str, usize)> = presence
        .members
        .iter()
        .map(|m| (m.user.as_str(), m.state, m.connections.len()))
        .collect();
    assert_eq!(members, [("ann", "online", 1), ("bob", "online", 2)]);

    // recall by an operator, with a reason: both clients see it, tail reports it, the audit
    // trail has both versions.
    let id = MessageId::parse(first["id"].as_str().unwrap()).unwrap();
    let op = UserName::parse("ops").unwrap();
    let tombstone = operator
        .recall(id, op.clone(), Some("spam".into()))
        .await
        .unwrap();
    assert!(tombstone.is_recalled());
    for client in [&mut ann, &mut bob] {
        let recalled = client.recv_type("recalled").await.unwrap();
        assert_eq!(recalled["id"], first["id"]);
        assert_eq!(recalled["by"], "ops");
    }
    let events = operator.tail_poll(&lobby, &mut cursor).await.unwrap();
    assert!(
        matches!(&events[..], [TailEvent::Recalled { id: r, operator: true, reason: Some(why), .. }] if *r == id && why == "spam"),
        "{events:?}"
    );
    let versions = operator.versions(id).await.unwrap();
    assert_eq!(versions.len(), 2);
    assert_eq!(versions[0].text.as_deref(), Some("hello"));
    assert_eq!(
        versions[1].recall.as_ref().unwrap().reason.as_deref(),
        Some("spam")
    );
    // Recalling again, or an id that does not exist: distinct errors.
    assert!(matches!(
        operator.recall(id, op.clone(), None).await,
        Err(OpsError::Recall(RecallError::AlreadyRecalled { .. }))
    ));
    let unknown = MessageId::parse("01ARZ3NDEKTSV4RRFFQ69G5FAV").unwrap();
    assert!(matches!(
        operator.recall(unknown, op.clone(), None).await,
        Err(OpsError::Recall(RecallError::NotFound(_)))
    ));

    // send: an announcement arrives like a message and stays in history.
    let sent = operator
        .send(lobby.clone(), op.clone(), "maintenance at noon".into())
        .await
        .unwrap();
    for client in [&mut ann, &mut bob] {
        let m = client
            .recv_matching("the announcement", |f: &Value| {
                f["type"] == "message" && f["user"] == "ops"
            })
            .await
            .unwrap();
        assert_eq!(m["text"], "maintenance at noon");
        assert_eq!(m["id"], sent.id.to_string());
    }
    let events = operator.tail_poll(&lobby, &mut cursor).await.unwrap();
    assert_eq!(new_messages(&events), ["maintenance at noon"]);

    // kick: bob's second connection is closed and removed; bob stays (his first connection).
    let presence = operator.presence(&lobby).await.unwrap();
    let victim = presence.members[1].connections[1].id.clone();
    let kicked = operator.kick(&victim).await.unwrap();
    assert!(kicked.closed);
    assert!(
        bob2.closed().await.unwrap().is_some(),
        "the socket is closed"
    );
    let presence = operator.presence(&lobby).await.unwrap();
    assert_eq!(presence.members[1].connections.len(), 1);
    assert!(matches!(
        operator.kick(&ConnectionId::new("nonexistent")).await,
        Err(OpsError::UnknownConnection(_))
    ));

    ann.close().await;
    bob.close().await;
}

/// Connections only the store knows: one silent for an hour, one fresh that the gateway has
/// never seen (the Management API answers 410 for it). They are in a room of their own: any
/// fan-out to a room they were in (a `left` still on its way from the last test) would meet
/// their 410 and remove them before `gc` looks.
async fn gc_finds_dead_connections(operator: &Operator) {
    let now = chat_core::ports::SystemClock.now_ms();
    let connections = &operator.chat().ports().connections;
    let make = |id: &str, last_seen: i64| Connection {
        id: ConnectionId::new(id),
        user: UserName::parse("ghost").unwrap(),
        rooms: [room("ghosts")].into_iter().collect(),
        allowed_rooms: None,
        connected_at: last_seen,
        last_seen,
        operator: false,
    };
    let silent = format!("silent{}", now);
    let vanished = format!("vanished{}", now);
    connections
        .put(&make(&silent, now - 3_600_000))
        .await
        .unwrap();
    connections.put(&make(&vanished, now)).await.unwrap();
    let dry = operator.gc(true).await.unwrap();
    let mut reasons: Vec<(String, &str)> = dry
        .dead
        .iter()
        .map(|d| (d.id.to_string(), d.reason))
        .collect();
    reasons.sort();
    assert_eq!(
        reasons,
        [
            (silent.clone(), "heartbeat overdue"),
            (vanished.clone(), "the Management API answers 410 Gone")
        ]
    );
    assert_eq!(dry.removed, 0);
    assert!(
        connections
            .get(&ConnectionId::new(&silent))
            .await
            .unwrap()
            .is_some()
    );
    let real = operator.gc(false).await.unwrap();
    assert_eq!(real.removed, 2);
    assert!(
        connections
            .get(&ConnectionId::new(&silent))
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        connections
            .get(&ConnectionId::new(&vanished))
            .await
            .unwrap()
            .is_none()
    );
}

use chat_core::ports::Clock;

#[tokio::test(flavor = "multi_thread")]
async fn operator_on_the_local_instance() {
    let (server, dir) = start_wall_clock(|_| {}).await;
    let operator = target::local(dir.path(), ChatConfig::default()).unwrap();
    exercise(&operator, &server).await;
    gc_finds_dead_connections(&operator).await;
    server.shutdown().await;

    // Stopped: reading still works from the files; closing connections needs the gateway.
    let operator = target::local(dir.path(), ChatConfig::default()).unwrap();
    let (events, _) = operator
        .tail_start(&room("lobby"), 100, None)
        .await
        .unwrap();
    assert_eq!(events.len(), 4, "{events:?}");
    let err = operator.gc(true).await.unwrap_err().to_string();
    assert!(
        err.contains("not running") && err.contains("chatctl dev"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_burst_into_an_empty_room_is_followed_whole() {
    let (server, dir) = start_wall_clock(|_| {}).await;
    let operator = target::local(dir.path(), ChatConfig::default()).unwrap();
    let quiet = room("quiet");
    let (shown, mut cursor) = operator.tail_start(&quiet, 10, None).await.unwrap();
    assert!(shown.is_empty());
    let op = UserName::parse("ops").unwrap();
    // More than one follow window (50) arrives between two polls.
    for i in 0..120 {
        operator
            .send(quiet.clone(), op.clone(), format!("m{i}"))
            .await
            .unwrap();
    }
    let events = operator.tail_poll(&quiet, &mut cursor).await.unwrap();
    let texts = new_messages(&events);
    assert_eq!(texts.len(), 120);
    assert_eq!(texts.first().map(String::as_str), Some("m0"));
    assert_eq!(texts.last().map(String::as_str), Some("m119"));
    server.shutdown().await;
}

#[test]
fn a_directory_without_chat_data_names_the_fix() {
    let dir = tempfile::tempdir().unwrap();
    let err = target::local(dir.path(), ChatConfig::default())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("chatctl dev") && err.contains("--stage"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn operator_on_dynamodb_and_sns() {
    let moto = Moto::shared();
    let config = moto.sdk_config();
    let (tables, _) = fresh_stage(&config, "ops").await;
    let (topic_arn, sqs, queue_url) = topic_with_queue(&config).await;
    // The gateway stands in for API Gateway: its connections live in the same DynamoDB table,
    // and its Management API is what the operator's SDK client calls.
    let dynamo = aws_sdk_dynamodb::Client::new(&config);
    let stores = Stores::Provided {
        messages: std::sync::Arc::new(chat_aws::DynamoMessageStore::new(
            dynamo.clone(),
            &tables.messages,
        )),
        connections: std::sync::Arc::new(chat_aws::DynamoConnectionStore::new(
            dynamo,
            &tables.connections,
        )),
    };
    let dir = tempfile::tempdir().unwrap();
    let mut local = chat_local::LocalConfig::new(dir.path());
    local.bind = ([127, 0, 0, 1], 0).into();
    local.allow_anonymous = true;
    let server = LocalServer::start_with(
        local,
        std::sync::Arc::new(chat_core::ports::SystemClock),
        stores,
    )
    .await
    .unwrap();
    let operator = target::aws(
        &AwsTarget {
            config: config.clone(),
            messages_table: tables.messages.clone(),
            connections_table: tables.connections.clone(),
            topic_arn,
            management_endpoint: server.management_url(),
        },
        ChatConfig::default(),
    );
    // On AWS the operator publishes to SNS and the fan-out Lambda delivers; here the gateway's
    // own topic delivers to the sockets, and the SNS side is checked through an SQS queue.
    let lobby = room("lobby");
    let mut ann = Client::connect(&url(&server, "lobby", "ann"))
        .await
        .unwrap();
    let first = ann.say("lobby", "hello").await;
    let (events, mut cursor) = operator.tail_start(&lobby, 10, None).await.unwrap();
    assert_eq!(new_messages(&events), ["hello"]);
    ann.say("lobby", "again").await;
    assert_eq!(
        new_messages(&operator.tail_poll(&lobby, &mut cursor).await.unwrap()),
        ["again"]
    );
    let presence = operator.presence(&lobby).await.unwrap();
    assert_eq!(presence.members.len(), 1);
    assert_eq!(presence.members[0].state, "online");
    let id = MessageId::parse(first["id"].as_str().unwrap()).unwrap();
    operator
        .recall(id, UserName::parse("ops").unwrap(), Some("test".into()))
        .await
        .unwrap();
    let events = operator.tail_poll(&lobby, &mut cursor).await.unwrap();
    assert!(
        matches!(&events[..], [TailEvent::Recalled { .. }]),
        "{events:?}"
    );
    let published = receive_all(&sqs, &queue_url).await;
    assert!(
        published
            .iter()
            .any(|e| e["frame"]["type"] == "recalled" && e["frame"]["id"] == first["id"]),
        "{published:?}"
    );
    let versions = operator.versions(id).await.unwrap();
    assert_eq!(versions.len(), 2);
    gc_finds_dead_connections(&operator).await;
    ann.close().await;
    server.shutdown().await;
}

/// Every room event published so far, as the queue received them.
async fn receive_all(sqs: &aws_sdk_sqs::Client, queue_url: &str) -> Vec<Value> {
    let mut events = Vec::new();
    for _ in 0..5 {
        let batch = notifications(sqs, queue_url).await;
        if batch.is_empty() && !events.is_empty() {
            break;
        }
        events.extend(
            batch
                .iter()
                .map(|m| serde_json::from_str(m).unwrap_or(Value::Null)),
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    events
}
