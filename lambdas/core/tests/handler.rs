//! The handler logic on the in-memory adapters: every action, every error code, the presence and
//! recall policies under a manual clock, and the fan-out's 410 handling.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;

use chat_core::domain::{ConnectionId, RoomName, UserName};
use chat_core::memory::{
    MemoryConnectionStore, MemoryMessageStore, RecordingSender, RecordingTopic,
};
use chat_core::policy::RateLimit;
use chat_core::ports::{ConnectionStore, ManualClock, MonotonicUlids};
use chat_core::protocol::ServerFrame;
use chat_core::token::{Claims, TokenKey};
use chat_core::{AuthConfig, ChatConfig, ChatService, ConnectParams, Ports};
use serde_json::Value;

const T0: i64 = 1_700_000_000_000;

struct Fixture {
    chat: ChatService,
    clock: Arc<ManualClock>,
    topic: Arc<RecordingTopic>,
    sender: Arc<RecordingSender>,
    connections: Arc<MemoryConnectionStore>,
    key: TokenKey,
}

fn fixture_with(config: ChatConfig) -> Fixture {
    let clock = Arc::new(ManualClock::new(T0));
    let topic = Arc::new(RecordingTopic::default());
    let sender = Arc::new(RecordingSender::default());
    let connections = Arc::new(MemoryConnectionStore::default());
    let key = TokenKey::new(b"unit-test-secret-0123456789".to_vec()).unwrap();
    let ports = Ports {
        messages: Arc::new(MemoryMessageStore::default()),
        connections: connections.clone(),
        topic: topic.clone(),
        sender: sender.clone(),
        clock: clock.clone(),
        ids: Arc::new(MonotonicUlids::default()),
    };
    let auth = AuthConfig {
        key: Some(key.clone()),
        allow_anonymous: true,
    };
    Fixture {
        chat: ChatService::new(ports, config, auth),
        clock,
        topic,
        sender,
        connections,
        key,
    }
}

fn fixture() -> Fixture {
    fixture_with(ChatConfig::default())
}

fn anon(room: &str, user: &str) -> ConnectParams {
    ConnectParams {
        room: Some(room.into()),
        user: Some(user.into()),
        token: None,
    }
}

fn cid(s: &str) -> ConnectionId {
    ConnectionId::new(s)
}

impl Fixture {
    async fn join(&self, id: &str, room: &str, user: &str) {
        self.chat.connect(cid(id), &anon(room, user)).await.unwrap();
        self.deliver().await;
    }

    /// Fan out everything published so far, as the topic subscription would.
    async fn deliver(&self) {
        loop {
            let events = self.topic.take();
            if events.is_empty() {
                return;
            }
            for event in events {
                self.chat.fanout(&event).await.unwrap();
            }
        }
    }

    async fn frame(&self, id: &str, body: Value) -> Vec<Value> {
        let replies = self.chat.frame(&cid(id), &body.to_string()).await;
        self.deliver().await;
        replies
            .iter()
            .map(|f| serde_json::to_value(f).unwrap())
            .collect()
    }

    /// The stored last-seen time of connection `id`.
    async fn last_seen(&self, id: &str) -> i64 {
        let connection = self.connections.get(&cid(id)).await.unwrap();
        connection.unwrap().last_seen
    }

    /// Frames posted to `id` since the last call, parsed.
    fn inbox(&self, id: &str) -> Vec<Value> {
        self.sender
            .take(&cid(id))
            .iter()
            .map(|s| serde_json::from_str(s).unwrap())
            .collect()
    }

    fn token(&self, user: &str, exp: i64, rooms: Option<&[&str]>, op: bool) -> String {
        self.key.mint(&Claims {
            sub: UserName::parse(user).unwrap(),
            exp,
            iat: 0,
            rooms: rooms.map(|r| r.iter().map(|r| RoomName::parse(r).unwrap()).collect()),
            op,
        })
    }
}

fn of_type<'a>(frames: &'a [Value], kind: &str) -> Vec<&'a Value> {
    frames.iter().filter(|f| f["type"] == kind).collect()
}

fn error_code(frames: &[Value]) -> String {
    let errors = of_type(frames, "error");
    assert_eq!(errors.len(), 1, "expected one error frame in {frames:?}");
    errors[0]["code"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn connect_requires_a_valid_token_unless_anonymous() {
    let f = fixture();
    let secs = T0 / 1000;
    let with_token = |t: &str| ConnectParams {
        room: Some("lobby".into()),
        token: Some(t.into()),
        user: None,
    };
    let ok = f.token("ann", secs + 60, None, false);
    let conn = f.chat.connect(cid("a"), &with_token(&ok)).await.unwrap();
    assert_eq!(conn.user.as_str(), "ann");

    let expired = f.token("ann", secs - 1, None, false);
    let refusal = f
        .chat
        .connect(cid("b"), &with_token(&expired))
        .await
        .unwrap_err();
    assert_eq!(refusal.status, 403);
    assert!(refusal.message.contains("expired"), "{}", refusal.message);

    let forged = {
        let other = TokenKey::new(b"some-other-secret-1234".to_vec()).unwrap();
        other.mint(&Claims {
            sub: UserName::parse("ann").unwrap(),
            exp: secs + 60,
            iat: 0,
            rooms: None,
            op: true,
        })
    };
    assert_eq!(
        f.chat
            .connect(cid("c"), &with_token(&forged))
            .await
            .unwrap_err()
            .status,
        403
    );
    assert_eq!(
        f.chat
            .connect(cid("d"), &with_token("garbage"))
            .await
            .unwrap_err()
            .status,
        401
    );

    let only_other = f.token("ann", secs + 60, Some(&["other"]), false);
    assert_eq!(
        f.chat
            .connect(cid("e"), &with_token(&only_other))
            .await
            .unwrap_err()
            .status,
        403
    );

    let no_room = ConnectParams {
        room: None,
        ..anon("x", "ann")
    };
    assert_eq!(
        f.chat.connect(cid("f"), &no_room).await.unwrap_err().status,
        400
    );
    assert_eq!(
        f.chat
            .connect(cid("g"), &anon("bad room", "ann"))
            .await
            .unwrap_err()
            .status,
        400
    );
    assert_eq!(
        f.chat
            .connect(cid("h"), &anon("lobby", ""))
            .await
            .unwrap_err()
            .status,
        400
    );
    let nobody = ConnectParams {
        user: None,
        ..anon("lobby", "x")
    };
    assert_eq!(
        f.chat.connect(cid("i"), &nobody).await.unwrap_err().status,
        401
    );
    // Refused connections are never registered.
    assert_eq!(f.connections.all().await.unwrap().len(), 1);
}

#[tokio::test]
async fn anonymous_is_refused_when_not_allowed() {
    let mut f = fixture();
    let ports = f.chat.ports().clone();
    f.chat = ChatService::new(
        ports,
        ChatConfig::default(),
        AuthConfig {
            key: Some(f.key.clone()),
            allow_anonymous: false,
        },
    );
    let refusal = f
        .chat
        .connect(cid("a"), &anon("lobby", "ann"))
        .await
        .unwrap_err();
    assert_eq!(refusal.status, 401);
    assert!(
        refusal.message.contains("chatctl token"),
        "{}",
        refusal.message
    );
}

#[tokio::test]
async fn send_acks_then_broadcasts_to_the_room_only() {
    let f = fixture();
    f.join("a", "lobby", "ann").await;
    f.join("b", "lobby", "bob").await;
    f.join("c", "elsewhere", "cy").await;
    f.inbox("a");
    f.inbox("b");
    f.inbox("c");

    let replies = f
        .frame(
            "a",
            serde_json::json!({"action":"send","room":"lobby","text":"hello","clientMsgId":"m1"}),
        )
        .await;
    assert_eq!(replies.len(), 1);
    let ack = &replies[0];
    assert_eq!(ack["type"], "ack");
    assert_eq!(ack["clientMsgId"], "m1");
    assert_eq!(ack["ts"], T0);
    assert_eq!(ack["id"].as_str().unwrap().len(), 26);

    let to_ann = f.inbox("a");
    assert_eq!(to_ann[0], *ack, "the sender gets its ack first");
    assert_eq!(to_ann[1]["type"], "message");
    let to_bob = f.inbox("b");
    assert_eq!(to_bob.len(), 1);
    let msg = &to_bob[0];
    assert_eq!(msg["user"], "ann");
    assert_eq!(msg["text"], "hello");
    assert_eq!(msg["room"], "lobby");
    assert_eq!(msg["id"], ack["id"]);
    assert_eq!(msg["clientMsgId"], "m1");
    assert!(f.inbox("c").is_empty(), "other rooms hear nothing");
}

#[tokio::test]
async fn a_retried_send_is_stored_and_broadcast_once() {
    let f = fixture();
    f.join("a", "lobby", "ann").await;
    f.join("b", "lobby", "bob").await;
    f.inbox("b");
    let send =
        serde_json::json!({"action":"send","room":"lobby","text":"once","clientMsgId":"same"});
    let first = f.frame("a", send.clone()).await;
    f.clock.advance(10);
    let second = f.frame("a", send).await;
    assert_eq!(first[0]["id"], second[0]["id"]);
    assert_eq!(second[0]["duplicate"], true);
    assert_eq!(of_type(&f.inbox("b"), "message").len(), 1);
    // Another user may reuse the same client id: the key is per sender.
    f.inbox("a");
    let bobs = f
        .frame(
            "b",
            serde_json::json!({"action":"send","room":"lobby","text":"mine","clientMsgId":"same"}),
        )
        .await;
    assert_ne!(bobs[0]["id"], first[0]["id"]);
}

#[tokio::test]
async fn history_pages_backwards_with_tombstones() {
    let f = fixture();
    f.join("a", "lobby", "ann").await;
    let mut ids = vec![];
    for i in 0..7 {
        let r = f
            .frame(
                "a",
                serde_json::json!({"action":"send","room":"lobby","text":format!("m{i}")}),
            )
            .await;
        ids.push(r[0]["id"].as_str().unwrap().to_owned());
        f.clock.advance(1);
    }
    f.frame("a", serde_json::json!({"action":"recall","id":ids[5]}))
        .await;

    let page = f
        .frame(
            "a",
            serde_json::json!({"action":"history","room":"lobby","limit":3}),
        )
        .await;
    let h = &page[0];
    assert_eq!(h["type"], "history");
    assert_eq!(h["more"], true);
    let texts: Vec<_> = h["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["text"].clone())
        .collect();
    assert_eq!(texts, [Value::from("m4"), Value::Null, Value::from("m6")]);
    let tomb = &h["messages"][1];
    assert_eq!(tomb["recalled"], true);
    assert_eq!(tomb["id"], ids[5]);

    let older = f
        .frame(
            "a",
            serde_json::json!({"action":"history","room":"lobby","limit":3,"before":ids[4]}),
        )
        .await;
    let texts: Vec<_> = older[0]["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["text"].clone())
        .collect();
    assert_eq!(texts, ["m1", "m2", "m3"]);
    assert_eq!(older[0]["more"], true);
    let oldest = f
        .frame(
            "a",
            serde_json::json!({"action":"history","room":"lobby","before":ids[1]}),
        )
        .await;
    assert_eq!(oldest[0]["messages"].as_array().unwrap().len(), 1);
    assert_eq!(oldest[0]["more"], false);
}

#[tokio::test]
async fn recall_follows_the_window_and_the_sender() {
    let f = fixture();
    f.join("a", "lobby", "ann").await;
    f.join("b", "lobby", "bob").await;
    let sent = f
        .frame(
            "a",
            serde_json::json!({"action":"send","room":"lobby","text":"oops"}),
        )
        .await;
    let id = sent[0]["id"].as_str().unwrap().to_owned();
    f.inbox("a");
    f.inbox("b");

    let by_bob = f
        .frame("b", serde_json::json!({"action":"recall","id":id}))
        .await;
    assert_eq!(error_code(&by_bob), "forbidden");

    f.clock.advance(120_000);
    let in_window = f
        .frame("a", serde_json::json!({"action":"recall","id":id}))
        .await;
    assert!(in_window.is_empty(), "{in_window:?}");
    for inbox in [f.inbox("a"), f.inbox("b")] {
        let recalled = of_type(&inbox, "recalled");
        assert_eq!(recalled.len(), 1);
        assert_eq!(recalled[0]["id"], id);
        assert_eq!(recalled[0]["by"], "ann");
    }
    let again = f
        .frame("a", serde_json::json!({"action":"recall","id":id}))
        .await;
    assert_eq!(error_code(&again), "bad_request");

    let late = f
        .frame(
            "a",
            serde_json::json!({"action":"send","room":"lobby","text":"late"}),
        )
        .await;
    f.clock.advance(120_001);
    let too_late = f
        .frame(
            "a",
            serde_json::json!({"action":"recall","id":late[0]["id"]}),
        )
        .await;
    assert_eq!(error_code(&too_late), "forbidden");
    assert!(too_late[0]["message"].as_str().unwrap().contains("window"));

    let unknown = f
        .frame(
            "a",
            serde_json::json!({"action":"recall","id":"01ARZ3NDEKTSV4RRFFQ69G5FAV"}),
        )
        .await;
    assert_eq!(error_code(&unknown), "not_found");

    // Versions are kept for audit.
    let versions = f
        .chat
        .ports()
        .messages
        .versions(id.parse().unwrap())
        .await
        .unwrap();
    assert_eq!(versions.len(), 2);
    assert_eq!(versions[0].text.as_deref(), Some("oops"));
    assert_eq!(versions[1].text, None);
    assert_eq!(versions[1].version, 2);
}

#[tokio::test]
async fn operators_recall_anything_at_any_time() {
    let f = fixture();
    f.join("a", "lobby", "ann").await;
    let sent = f
        .frame(
            "a",
            serde_json::json!({"action":"send","room":"lobby","text":"rude"}),
        )
        .await;
    f.clock.advance(3_600_000);
    let op_token = f.token("mod", T0 / 1000 + 7200, None, true);
    f.chat
        .connect(
            cid("op"),
            &ConnectParams {
                room: Some("lobby".into()),
                token: Some(op_token),
                user: None,
            },
        )
        .await
        .unwrap();
    let r = f
        .frame(
            "op",
            serde_json::json!({"action":"recall","id":sent[0]["id"]}),
        )
        .await;
    assert!(r.is_empty(), "{r:?}");
    let recalled = f.inbox("a");
    assert_eq!(of_type(&recalled, "recalled")[0]["by"], "mod");
}

#[tokio::test]
async fn presence_joined_left_online_idle() {
    let f = fixture();
    f.join("a", "lobby", "ann").await;
    f.inbox("a");
    f.join("b", "lobby", "bob").await;
    let seen = f.inbox("a");
    assert_eq!(of_type(&seen, "presence")[0]["user"], "bob");
    assert_eq!(of_type(&seen, "presence")[0]["state"], "joined");

    // A second connection of the same user is not a new member.
    f.join("b2", "lobby", "bob").await;
    assert!(of_type(&f.inbox("a"), "presence").is_empty());

    let members = f
        .frame("a", serde_json::json!({"action":"presence","room":"lobby"}))
        .await;
    let list = members[0]["members"].as_array().unwrap();
    assert_eq!(list.len(), 2);
    assert!(list.iter().all(|m| m["state"] == "online"));

    // 61 s later with no heartbeat: idle, announced by the sweep.
    f.clock.advance(30_000);
    f.frame("a", serde_json::json!({"action":"ping"})).await;
    f.clock.advance(31_000);
    f.inbox("a");
    let announced = f.chat.sweep_presence(T0, T0 + 61_000).await.unwrap();
    f.deliver().await;
    assert_eq!(announced, 1);
    let idle = of_type(&f.inbox("a"), "presence")
        .into_iter()
        .cloned()
        .collect::<Vec<_>>();
    assert_eq!(idle.len(), 1);
    assert_eq!(
        (idle[0]["user"].as_str(), idle[0]["state"].as_str()),
        (Some("bob"), Some("idle"))
    );
    let members = f
        .frame("a", serde_json::json!({"action":"presence","room":"lobby"}))
        .await;
    let bob = members[0]["members"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["user"] == "bob")
        .cloned()
        .unwrap();
    assert_eq!(bob["state"], "idle");

    // A ping brings bob back online.
    let pong = f.frame("b", serde_json::json!({"action":"ping"})).await;
    assert_eq!(pong[0]["type"], "pong");
    let back = f.inbox("a");
    assert_eq!(of_type(&back, "presence")[0]["state"], "online");

    // One of bob's two connections closes: still a member; the second: left.
    f.chat.disconnect(&cid("b")).await.unwrap();
    f.deliver().await;
    assert!(of_type(&f.inbox("a"), "presence").is_empty());
    f.chat.disconnect(&cid("b2")).await.unwrap();
    f.deliver().await;
    assert_eq!(of_type(&f.inbox("a"), "presence")[0]["state"], "left");
}

#[tokio::test]
async fn join_and_leave_more_rooms_on_one_connection() {
    let f = fixture();
    f.join("a", "lobby", "ann").await;
    f.join("b", "side", "bob").await;
    f.inbox("b");
    let joined = f
        .frame("a", serde_json::json!({"action":"join","room":"side"}))
        .await;
    assert_eq!(joined[0]["type"], "members");
    let users: Vec<_> = joined[0]["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["user"].clone())
        .collect();
    assert_eq!(users, ["ann", "bob"]);
    assert_eq!(of_type(&f.inbox("b"), "presence")[0]["state"], "joined");

    f.frame(
        "b",
        serde_json::json!({"action":"send","room":"side","text":"hi side"}),
    )
    .await;
    assert_eq!(of_type(&f.inbox("a"), "message").len(), 1);

    let left = f
        .frame("a", serde_json::json!({"action":"leave","room":"side"}))
        .await;
    assert_eq!(left[0]["state"], "left");
    f.inbox("a");
    f.frame(
        "b",
        serde_json::json!({"action":"send","room":"side","text":"gone?"}),
    )
    .await;
    assert!(of_type(&f.inbox("a"), "message").is_empty());
    let not_member = f
        .frame(
            "a",
            serde_json::json!({"action":"send","room":"side","text":"x"}),
        )
        .await;
    assert_eq!(error_code(&not_member), "forbidden");
    let not_in = f
        .frame("a", serde_json::json!({"action":"leave","room":"side"}))
        .await;
    assert_eq!(error_code(&not_in), "not_found");
}

#[tokio::test]
async fn token_room_lists_are_enforced_on_join() {
    let f = fixture();
    let t = f.token("ann", T0 / 1000 + 60, Some(&["lobby"]), false);
    f.chat
        .connect(
            cid("a"),
            &ConnectParams {
                room: Some("lobby".into()),
                token: Some(t),
                user: None,
            },
        )
        .await
        .unwrap();
    let r = f
        .frame("a", serde_json::json!({"action":"join","room":"secret"}))
        .await;
    assert_eq!(error_code(&r), "forbidden");
    let r = f
        .frame("a", serde_json::json!({"action":"history","room":"secret"}))
        .await;
    assert_eq!(error_code(&r), "forbidden");
}

#[tokio::test]
async fn every_error_code_reaches_the_client() {
    let f = fixture_with(ChatConfig {
        rate_limit: RateLimit {
            per_second: 1.0,
            burst: 12.0,
        },
        ..ChatConfig::default()
    });
    f.join("a", "lobby", "ann").await;
    let cases = [
        (Value::from("{not json"), "bad_request"),
        (serde_json::json!({"action":"fly"}), "unknown_action"),
        (
            serde_json::json!({"action":"send","room":"no spaces","text":"x"}),
            "bad_request",
        ),
        (
            serde_json::json!({"action":"send","room":"lobby","text":"x".repeat(4097),"clientMsgId":"big"}),
            "too_large",
        ),
        (
            serde_json::json!({"action":"recall","id":"01ARZ3NDEKTSV4RRFFQ69G5FAV"}),
            "not_found",
        ),
        (
            serde_json::json!({"action":"send","room":"other","text":"x"}),
            "forbidden",
        ),
    ];
    for (body, code) in cases {
        let raw = body
            .as_str()
            .map_or_else(|| body.to_string(), str::to_owned);
        let replies = f.chat.frame(&cid("a"), &raw).await;
        let values: Vec<Value> = replies
            .iter()
            .map(|r| serde_json::to_value(r).unwrap())
            .collect();
        assert_eq!(error_code(&values), code, "{raw}");
    }
    let big = f
        .frame("a", serde_json::json!({"action":"send","room":"lobby","text":"x".repeat(4097),"clientMsgId":"big"}))
        .await;
    assert_eq!(big[0]["ref"], "big");
    // The burst is spent: the next frames are rate limited, without closing anything.
    let mut limited = 0;
    for _ in 0..10 {
        let r = f.frame("a", serde_json::json!({"action":"ping"})).await;
        if r[0]["code"] == "rate_limited" {
            limited += 1;
        }
    }
    assert!(limited >= 5, "{limited}");
    f.clock.advance(2_000);
    let r = f.frame("a", serde_json::json!({"action":"ping"})).await;
    assert_eq!(r[0]["type"], "pong");
}

#[tokio::test]
async fn internal_errors_come_from_failing_ports() {
    // A connection the store does not know (removed by gc, say) is told to reconnect.
    let f = fixture();
    let r = f.frame("ghost", serde_json::json!({"action":"ping"})).await;
    assert_eq!(error_code(&r), "forbidden");
}

#[tokio::test]
async fn fanout_removes_gone_connections_only() {
    let f = fixture();
    f.join("a", "lobby", "ann").await;
    f.join("b", "lobby", "bob").await;
    f.join("c", "lobby", "cy").await;
    f.clock.advance(10_000);
    f.sender.mark_gone(&cid("b"));
    let frame = ServerFrame::Pong { ts: 1 };
    let report = f
        .chat
        .fanout(&chat_core::ports::RoomEvent::new(
            RoomName::parse("lobby").unwrap(),
            frame,
        ))
        .await
        .unwrap();
    assert_eq!(report.recipients, 3);
    assert_eq!(report.delivered, 2);
    assert_eq!(report.removed, [cid("b")]);
    let left: Vec<_> = f
        .connections
        .all()
        .await
        .unwrap()
        .into_iter()
        .map(|c| c.id)
        .collect();
    assert_eq!(left, [cid("a"), cid("c")]);
}

#[tokio::test]
async fn fanout_keeps_a_connection_still_completing_its_upgrade() {
    let f = fixture();
    f.join("a", "lobby", "ann").await;
    f.sender.mark_gone(&cid("a"));
    let report = f
        .chat
        .fanout(&chat_core::ports::RoomEvent::new(
            RoomName::parse("lobby").unwrap(),
            ServerFrame::Pong { ts: 1 },
        ))
        .await
        .unwrap();
    assert_eq!(report.kept_young, 1);
    assert!(report.removed.is_empty());
    assert_eq!(f.connections.all().await.unwrap().len(), 1);
}

#[tokio::test]
async fn sending_is_a_heartbeat_and_a_gone_user_rejoins() {
    let f = fixture();
    f.join("a", "lobby", "ann").await;
    f.join("b", "lobby", "bob").await;
    f.inbox("a");
    // Bob is idle after 61 s; a send brings him back online like a ping would.
    f.clock.advance(61_000);
    f.frame("a", serde_json::json!({"action":"ping"})).await;
    f.inbox("a");
    f.frame(
        "b",
        serde_json::json!({"action":"send","room":"lobby","text":"back"}),
    )
    .await;
    let seen = f.inbox("a");
    let presence = of_type(&seen, "presence");
    assert_eq!(presence.len(), 1, "{seen:?}");
    assert_eq!(presence[0]["state"], "online");
    assert_eq!(presence[0]["user"], "bob");

    // Silent past the idle threshold, bob counts as gone: his next ping announces `joined`.
    f.clock.advance(301_000);
    f.frame("a", serde_json::json!({"action":"ping"})).await;
    f.inbox("a");
    f.frame("b", serde_json::json!({"action":"ping"})).await;
    let presence = of_type(&f.inbox("a"), "presence")
        .into_iter()
        .cloned()
        .collect::<Vec<_>>();
    assert_eq!(presence.len(), 1);
    assert_eq!(presence[0]["state"], "joined");
}

#[tokio::test]
async fn heartbeats_within_a_second_are_not_written_again() {
    let f = fixture();
    f.join("a", "lobby", "ann").await;
    let send = serde_json::json!({"action":"send","room":"lobby","text":"hi"});
    // 999 ms after the recorded heartbeat: acked and delivered, last-seen left as it was.
    f.clock.advance(999);
    assert_eq!(of_type(&f.frame("a", send.clone()).await, "ack").len(), 1);
    assert_eq!(f.last_seen("a").await, T0);
    f.frame("a", serde_json::json!({"action":"ping"})).await;
    assert_eq!(f.last_seen("a").await, T0);
    // A full second after it: written.
    f.clock.advance(1);
    f.frame("a", send).await;
    assert_eq!(f.last_seen("a").await, T0 + 1_000);
}

#[tokio::test]
async fn a_gone_connection_does_not_hide_a_new_join_nor_leave_twice() {
    let f = fixture();
    f.join("a", "lobby", "ann").await;
    f.join("b1", "lobby", "bob").await;
    f.clock.advance(301_000); // both silent: gone (the sweep announced `left`)
    f.frame("a", serde_json::json!({"action":"ping"})).await;
    f.inbox("a");
    // A new connection of bob's is a `joined`, though his stale one is still registered.
    f.join("b2", "lobby", "bob").await;
    let presence = of_type(&f.inbox("a"), "presence")
        .into_iter()
        .cloned()
        .collect::<Vec<_>>();
    assert_eq!(presence.len(), 1);
    assert_eq!(presence[0]["state"], "joined");
    // The stale connection closing announces nothing: bob is still here on b2, and b1 was gone.
    f.chat.disconnect(&cid("b1")).await.unwrap();
    f.deliver().await;
    assert!(of_type(&f.inbox("a"), "presence").is_empty());
}

#[tokio::test]
async fn recall_checks_permission_before_telling_anything() {
    let f = fixture();
    f.join("a", "lobby", "ann").await;
    f.join("b", "lobby", "bob").await;
    let sent = f
        .frame(
            "a",
            serde_json::json!({"action":"send","room":"lobby","text":"x"}),
        )
        .await;
    f.frame(
        "a",
        serde_json::json!({"action":"recall","id":sent[0]["id"]}),
    )
    .await;
    // Bob may not recall it, so he is not told it is already recalled.
    let r = f
        .frame(
            "b",
            serde_json::json!({"action":"recall","id":sent[0]["id"]}),
        )
        .await;
    assert_eq!(error_code(&r), "forbidden");
}

#[tokio::test]
async fn operators_are_held_to_their_token_rooms_and_told_from_outside() {
    let f = fixture();
    f.join("a", "lobby", "ann").await;
    f.join("s", "secret", "sam").await;
    let in_lobby = f
        .frame(
            "a",
            serde_json::json!({"action":"send","room":"lobby","text":"x"}),
        )
        .await;
    let in_secret = f
        .frame(
            "s",
            serde_json::json!({"action":"send","room":"secret","text":"y"}),
        )
        .await;
    let token = f.token("mod", T0 / 1000 + 60, Some(&["lobby", "ops"]), true);
    f.chat
        .connect(
            cid("op"),
            &ConnectParams {
                room: Some("ops".into()),
                token: Some(token),
                user: None,
            },
        )
        .await
        .unwrap();
    let denied = f
        .frame(
            "op",
            serde_json::json!({"action":"recall","id":in_secret[0]["id"]}),
        )
        .await;
    assert_eq!(error_code(&denied), "forbidden");
    // Recalling in lobby from the ops room: the operator is told directly.
    let done = f
        .frame(
            "op",
            serde_json::json!({"action":"recall","id":in_lobby[0]["id"]}),
        )
        .await;
    assert_eq!(done.len(), 1);
    assert_eq!(done[0]["type"], "recalled");
    assert_eq!(done[0]["by"], "mod");
}

#[tokio::test]
async fn a_connection_removed_by_fanout_is_announced_as_left() {
    let f = fixture();
    f.join("a", "lobby", "ann").await;
    f.join("b", "lobby", "bob").await;
    f.clock.advance(10_000);
    f.inbox("a");
    f.sender.mark_gone(&cid("b"));
    f.frame(
        "a",
        serde_json::json!({"action":"send","room":"lobby","text":"hi"}),
    )
    .await;
    let seen = f.inbox("a");
    let presence = of_type(&seen, "presence");
    assert_eq!(presence.len(), 1, "{seen:?}");
    assert_eq!(
        (presence[0]["user"].as_str(), presence[0]["state"].as_str()),
        (Some("bob"), Some("left"))
    );
}

#[tokio::test]
async fn out_of_range_ids_are_bad_requests() {
    let f = fixture();
    f.join("a", "lobby", "ann").await;
    let r = f
        .frame(
            "a",
            serde_json::json!({"action":"history","room":"lobby","before":"ZZZZZZZZZZZZZZZZZZZZZZZZZZ"}),
        )
        .await;
    assert_eq!(error_code(&r), "bad_request");
}

#[tokio::test]
async fn a_connection_is_in_a_bounded_number_of_rooms() {
    let f = fixture_with(ChatConfig {
        max_rooms_per_connection: 3,
        ..ChatConfig::default()
    });
    f.join("a", "r0", "ann").await;
    for room in ["r1", "r2"] {
        let r = f
            .frame("a", serde_json::json!({"action":"join","room":room}))
            .await;
        assert_eq!(r[0]["type"], "members");
    }
    let r = f
        .frame("a", serde_json::json!({"action":"join","room":"r3"}))
        .await;
    assert_eq!(error_code(&r), "bad_request");
    assert!(
        r[0]["message"]
            .as_str()
            .unwrap()
            .contains("leave one first")
    );
    // Re-joining a room it is in is still fine.
    let r = f
        .frame("a", serde_json::json!({"action":"join","room":"r1"}))
        .await;
    assert_eq!(r[0]["type"], "members");
}

#[tokio::test]
async fn a_history_page_fits_in_one_post() {
    let f = fixture();
    f.join("a", "lobby", "ann").await;
    for i in 0..50 {
        f.clock.advance(1_000); // stay under the rate limit
        let text = format!("{i:02}{}", "x".repeat(4090));
        f.frame(
            "a",
            serde_json::json!({"action":"send","room":"lobby","text":text}),
        )
        .await;
    }
    let page = f
        .frame("a", serde_json::json!({"action":"history","room":"lobby"}))
        .await;
    let encoded = serde_json::to_string(&page[0]).unwrap();
    assert!(encoded.len() <= 120 * 1024, "{} bytes", encoded.len());
    let messages = page[0]["messages"].as_array().unwrap();
    assert!(
        messages.len() < 50 && messages.len() > 20,
        "{}",
        messages.len()
    );
    assert_eq!(page[0]["more"], true);
    // The newest are kept; paging back from the oldest kept one finds the rest.
    assert!(
        messages.last().unwrap()["text"]
            .as_str()
            .unwrap()
            .starts_with("49")
    );
    let before = messages[0]["id"].clone();
    let older = f
        .frame(
            "a",
            serde_json::json!({"action":"history","room":"lobby","before":before}),
        )
        .await;
    let total = messages.len() + older[0]["messages"].as_array().unwrap().len();
    assert_eq!(total, 50);
}

#[tokio::test]
async fn a_members_answer_fits_in_one_post() {
    let f = fixture_with(ChatConfig {
        max_reply_bytes: 2_000,
        ..ChatConfig::default()
    });
    for i in 0..100 {
        f.chat
            .connect(cid(&format!("c{i}")), &anon("big", &format!("user-{i:03}")))
            .await
            .unwrap();
        f.clock.advance(1);
    }
    let r = f
        .frame("c99", serde_json::json!({"action":"presence","room":"big"}))
        .await;
    let encoded = serde_json::to_string(&r[0]).unwrap();
    assert!(encoded.len() <= 2_000, "{}", encoded.len());
    assert_eq!(r[0]["truncated"], true);
    let users: Vec<_> = r[0]["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["user"].as_str().unwrap().to_owned())
        .collect();
    assert!(
        users.contains(&"user-099".to_owned()),
        "the freshest are kept: {users:?}"
    );
    assert!(!users.contains(&"user-000".to_owned()));
    assert!(users.windows(2).all(|w| w[0] < w[1]), "still in name order");
}
