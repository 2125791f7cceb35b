//! The local backend over real sockets: real WebSocket clients against the gateway, the SQLite
//! store on a temporary data directory, the in-process topic and fan-out, the Management API.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use chat_core::domain::{RoomName, UserName};
use chat_core::ports::Clock;
use chat_core::token::{Claims, TokenKey};
use chatctl_e2e::{Client, TestServer, eventually, http};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
use tokio_tungstenite::tungstenite::protocol::frame::{Frame, FrameHeader};

const QUIET: Duration = Duration::from_millis(300);

fn texts(history: &Value) -> Vec<Value> {
    history["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["text"].clone())
        .collect()
}

#[tokio::test]
async fn two_users_exchange_messages_in_order() {
    let t = TestServer::start().await;
    let mut ann = t.join("lobby", "ann").await;
    let mut bob = t.join("lobby", "bob").await;
    ann.recv_matching("bob joined", |f| {
        f["type"] == "presence" && f["user"] == "bob"
    })
    .await
    .unwrap();

    for i in 0..20 {
        ann.send(json!({"action":"send","room":"lobby","text":format!("ann {i}"),"clientMsgId":format!("a{i}")}))
            .await;
        bob.send(json!({"action":"send","room":"lobby","text":format!("bob {i}")}))
            .await;
    }
    for client in [&mut ann, &mut bob] {
        let mut seen = vec![];
        while seen.len() < 40 {
            let f = client.recv_type("message").await.unwrap();
            assert_eq!(f["room"], "lobby");
            assert_eq!(f["id"].as_str().unwrap().len(), 26);
            assert!(f["ts"].as_i64().unwrap() > 0);
            seen.push(f);
        }
        for user in ["ann", "bob"] {
            let mine: Vec<_> = seen.iter().filter(|f| f["user"] == user).collect();
            let expected: Vec<_> = (0..20).map(|i| format!("{user} {i}")).collect();
            let got: Vec<_> = mine
                .iter()
                .map(|f| f["text"].as_str().unwrap().to_owned())
                .collect();
            assert_eq!(got, expected, "{user}'s messages arrive in the order sent");
            let ids: Vec<_> = mine.iter().map(|f| f["id"].as_str().unwrap()).collect();
            assert!(
                ids.windows(2).all(|w| w[0] < w[1]),
                "ids grow with send order"
            );
        }
        assert!(
            client
                .drain(QUIET)
                .await
                .unwrap()
                .iter()
                .all(|f| f["type"] != "message")
        );
    }
    // The room's history holds all 40, ordered by id.
    ann.send(json!({"action":"history","room":"lobby","limit":100}))
        .await;
    let h = ann.recv_type("history").await.unwrap();
    let ids: Vec<_> = h["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(ids.len(), 40);
    assert!(ids.windows(2).all(|w| w[0] < w[1]));
    assert_eq!(h["more"], false);
}

#[tokio::test]
async fn a_resend_with_the_same_client_msg_id_is_stored_once() {
    let t = TestServer::start().await;
    let mut ann = t.join("lobby", "ann").await;
    let mut bob = t.join("lobby", "bob").await;
    let send =
        json!({"action":"send","room":"lobby","text":"exactly once","clientMsgId":"retry-1"});
    ann.send(send.clone()).await;
    let first = ann.recv_type("ack").await.unwrap();
    ann.send(send).await;
    let second = ann.recv_type("ack").await.unwrap();
    assert_eq!(first["id"], second["id"]);
    assert_eq!(first["clientMsgId"], "retry-1");
    assert_eq!(second["duplicate"], true);

    let to_bob: Vec<_> = bob
        .drain(QUIET)
        .await
        .unwrap()
        .into_iter()
        .filter(|f| f["type"] == "message")
        .collect();
    assert_eq!(to_bob.len(), 1, "{to_bob:?}");
    assert_eq!(to_bob[0]["clientMsgId"], "retry-1");
    bob.send(json!({"action":"history","room":"lobby"})).await;
    let h = bob.recv_type("history").await.unwrap();
    assert_eq!(texts(&h), ["exactly once"]);
}

#[tokio::test]
async fn history_pages_backwards_and_shows_tombstones() {
    let t = TestServer::start().await;
    let mut ann = t.join("lobby", "ann").await;
    let mut ids = vec![];
    for i in 0..12 {
        ids.push(
            ann.say("lobby", &format!("m{i}")).await["id"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
    }
    ann.send(json!({"action":"recall","id":ids[10]})).await;
    ann.recv_type("recalled").await.unwrap();

    ann.send(json!({"action":"history","room":"lobby","limit":5}))
        .await;
    let page = ann.recv_type("history").await.unwrap();
    assert_eq!(page["more"], true);
    assert_eq!(
        texts(&page),
        [
            json!("m7"),
            json!("m8"),
            json!("m9"),
            Value::Null,
            json!("m11")
        ]
    );
    let tomb = &page["messages"][3];
    assert_eq!(tomb["recalled"], true);
    assert_eq!(tomb["id"], ids[10]);
    assert!(
        tomb.get("text").is_none(),
        "a tombstone carries no text: {tomb}"
    );

    ann.send(
        json!({"action":"history","room":"lobby","limit":5,"before":page["messages"][0]["id"]}),
    )
    .await;
    let older = ann.recv_type("history").await.unwrap();
    assert_eq!(texts(&older), ["m2", "m3", "m4", "m5", "m6"]);
    assert_eq!(older["more"], true);
    ann.send(json!({"action":"history","room":"lobby","limit":5,"before":ids[2]}))
        .await;
    let oldest = ann.recv_type("history").await.unwrap();
    assert_eq!(texts(&oldest), ["m0", "m1"]);
    assert_eq!(oldest["more"], false);
}

#[tokio::test]
async fn recall_is_for_the_sender_within_the_window() {
    let t = TestServer::start().await;
    let mut ann = t.join("lobby", "ann").await;
    let mut bob = t.join("lobby", "bob").await;
    let id = ann.say("lobby", "take it back").await["id"].clone();
    let old = ann.say("lobby", "too old to recall").await["id"].clone();

    bob.send(json!({"action":"recall","id":id})).await;
    let refused = bob.recv_type("error").await.unwrap();
    assert_eq!(refused["code"], "forbidden");

    t.clock.advance(60_000);
    ann.send(json!({"action":"recall","id":id})).await;
    for client in [&mut ann, &mut bob] {
        let r = client.recv_type("recalled").await.unwrap();
        assert_eq!(
            (r["id"].clone(), r["by"].clone(), r["room"].clone()),
            (id.clone(), json!("ann"), json!("lobby"))
        );
    }

    t.clock.advance(60_001); // `old` is now 120.001 s old; the window is 120 s.
    ann.send(json!({"action":"recall","id":old})).await;
    let late = ann.recv_type("error").await.unwrap();
    assert_eq!(late["code"], "forbidden");
    assert!(
        late["message"].as_str().unwrap().contains("window"),
        "{late}"
    );

    ann.send(json!({"action":"recall","id":"01ARZ3NDEKTSV4RRFFQ69G5FAV"}))
        .await;
    assert_eq!(ann.recv_type("error").await.unwrap()["code"], "not_found");

    bob.send(json!({"action":"history","room":"lobby"})).await;
    let h = bob.recv_type("history").await.unwrap();
    assert_eq!(texts(&h), [Value::Null, json!("too old to recall")]);
}

#[tokio::test]
async fn presence_join_leave_online_idle() {
    let t = TestServer::start().await;
    let mut ann = t.join("lobby", "ann").await;
    let mut bob = t.join("lobby", "bob").await;
    let joined = ann
        .recv_matching("bob joined", |f| {
            f["type"] == "presence" && f["user"] == "bob"
        })
        .await
        .unwrap();
    assert_eq!(joined["state"], "joined");

    bob.send(json!({"action":"presence","room":"lobby"})).await;
    let members = bob.recv_type("members").await.unwrap();
    let list: Vec<_> = members["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| (m["user"].clone(), m["state"].clone()))
        .collect();
    assert_eq!(
        list,
        [
            (json!("ann"), json!("online")),
            (json!("bob"), json!("online"))
        ]
    );

    // Ann keeps pinging; bob falls silent for 61 s: the sweep announces him idle.
    t.clock.advance(30_000);
    ann.send(json!({"action":"ping"})).await;
    assert_eq!(ann.recv_type("pong").await.unwrap()["ts"], t.clock.now_ms());
    t.clock.advance(31_000);
    let idle = ann
        .recv_matching("bob idle", |f| {
            f["type"] == "presence" && f["user"] == "bob"
        })
        .await
        .unwrap();
    assert_eq!(idle["state"], "idle");
    ann.send(json!({"action":"presence","room":"lobby"})).await;
    let members = ann.recv_type("members").await.unwrap();
    let bob_state = members["members"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["user"] == "bob")
        .unwrap()["state"]
        .clone();
    assert_eq!(bob_state, "idle");

    // Bob pings: online again, announced to the room.
    bob.send(json!({"action":"ping"})).await;
    let online = ann
        .recv_matching("bob online", |f| {
            f["type"] == "presence" && f["user"] == "bob"
        })
        .await
        .unwrap();
    assert_eq!(online["state"], "online");

    // Bob closes: left.
    bob.close().await;
    let left = ann
        .recv_matching("bob left", |f| {
            f["type"] == "presence" && f["user"] == "bob"
        })
        .await
        .unwrap();
    assert_eq!(left["state"], "left");
    ann.send(json!({"action":"presence","room":"lobby"})).await;
    let members = ann.recv_type("members").await.unwrap();
    assert_eq!(members["members"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn join_and_leave_rooms_over_one_connection() {
    let t = TestServer::start().await;
    let mut ann = t.join("lobby", "ann").await;
    let mut bob = t.join("side", "bob").await;
    ann.send(json!({"action":"join","room":"side"})).await;
    let members = ann.recv_type("members").await.unwrap();
    assert_eq!(members["room"], "side");
    assert_eq!(members["members"].as_array().unwrap().len(), 2);
    bob.recv_matching("ann joined side", |f| {
        f["type"] == "presence" && f["user"] == "ann"
    })
    .await
    .unwrap();
    bob.say("side", "welcome").await;
    let m = ann.recv_type("message").await.unwrap();
    assert_eq!(
        (m["room"].clone(), m["text"].clone()),
        (json!("side"), json!("welcome"))
    );
    ann.send(json!({"action":"leave","room":"side"})).await;
    ann.recv_matching("own left", |f| {
        f["type"] == "presence" && f["state"] == "left"
    })
    .await
    .unwrap();
    bob.say("side", "still there?").await;
    assert!(
        ann.drain(QUIET)
            .await
            .unwrap()
            .iter()
            .all(|f| f["type"] != "message")
    );
}

#[tokio::test]
async fn bad_frames_get_error_frames_and_the_socket_stays_open() {
    let t = TestServer::start().await;
    let mut ann = t.join("lobby", "ann").await;
    let cases: [(String, &str); 6] = [
        ("{this is not json".into(), "bad_request"),
        (json!({"action":"teleport"}).to_string(), "unknown_action"),
        (
            json!({"action":"send","room":"no spaces allowed","text":"x"}).to_string(),
            "bad_request",
        ),
        (
            json!({"action":"send","room":"lobby","text":"é".repeat(2049),"clientMsgId":"big-1"})
                .to_string(),
            "too_large",
        ),
        (
            json!({"action":"send","room":"lobby"}).to_string(),
            "bad_request",
        ),
        (
            json!({"action":"history","room":"lobby","limit":1000}).to_string(),
            "bad_request",
        ),
    ];
    for (body, code) in &cases {
        ann.send_text(body).await;
        let err = ann.recv_type("error").await.unwrap();
        assert_eq!(err["code"], *code, "{body}");
        assert!(!err["message"].as_str().unwrap().is_empty());
    }
    ann.send(json!({"action":"send","room":"lobby","text":"x".repeat(5000),"clientMsgId":"big-2"}))
        .await;
    let err = ann.recv_type("error").await.unwrap();
    assert_eq!(err["ref"], "big-2");
    // Binary frames are not part of the protocol: an error, not a closed socket.
    ann.send_raw(Message::binary(vec![0xff, 0x00, 0x13]))
        .await
        .unwrap();
    assert_eq!(ann.recv_type("error").await.unwrap()["code"], "bad_request");
    ann.send(json!({"action":"ping"})).await;
    ann.recv_type("pong").await.unwrap();
    ann.say("lobby", "still here").await;
}

#[tokio::test]
async fn rate_limited_without_closing() {
    let t = TestServer::start_with(|c| {
        c.chat.rate_limit = chat_core::policy::RateLimit {
            per_second: 1.0,
            burst: 5.0,
        };
    })
    .await;
    let mut ann = t.join("lobby", "ann").await;
    for _ in 0..8 {
        ann.send(json!({"action":"ping"})).await;
    }
    let frames = ann.drain(QUIET).await.unwrap();
    let limited = frames
        .iter()
        .filter(|f| f["code"] == "rate_limited")
        .count();
    assert_eq!(limited, 3, "{frames:?}");
    t.clock.advance(2_000);
    ann.send(json!({"action":"ping"})).await;
    ann.recv_type("pong").await.unwrap();
}

#[tokio::test]
async fn an_oversize_frame_closes_with_1009() {
    let t = TestServer::start().await;
    let mut ann = t.join("lobby", "ann").await;
    let mut bob = t.join("lobby", "bob").await;
    // A join and a leave inside one presence window cancel out: let the join go out first.
    bob.recv_matching("ann joined", |f| {
        f["type"] == "presence" && f["user"] == "ann"
    })
    .await
    .unwrap();
    ann.send_text(&"x".repeat(33 * 1024)).await;
    let close = ann.closed().await.unwrap().expect("a close frame");
    assert_eq!(u16::from(close.code), 1009);
    bob.recv_matching("ann left", |f| {
        f["type"] == "presence" && f["user"] == "ann" && f["state"] == "left"
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn an_oversize_fragmented_message_closes_with_1009() {
    let t = TestServer::start().await;
    let mut ann = t.join("lobby", "ann").await;
    // Five 30 KB fragments: each frame is within 32 KB, the message (150 KB) is over 128 KB.
    let chunk = vec![b'x'; 30 * 1024];
    for i in 0..5 {
        let opcode = if i == 0 {
            OpCode::Data(Data::Text)
        } else {
            OpCode::Data(Data::Continue)
        };
        let header = FrameHeader {
            is_final: i == 4,
            opcode,
            ..FrameHeader::default()
        };
        let sent = ann
            .send_raw(Message::Frame(Frame::from_payload(
                header,
                chunk.clone().into(),
            )))
            .await;
        if sent.is_err() {
            break; // the server may already have closed
        }
    }
    let close = ann.closed().await.unwrap().expect("a close frame");
    assert_eq!(u16::from(close.code), 1009);
}

#[tokio::test]
async fn a_large_message_within_the_limits_is_accepted_by_the_gateway() {
    // 30 KB is a legal frame; the handler then refuses the text as too large (4 KB), socket open.
    let t = TestServer::start().await;
    let mut ann = t.join("lobby", "ann").await;
    ann.send(json!({"action":"send","room":"lobby","text":"y".repeat(30 * 1024)}))
        .await;
    assert_eq!(ann.recv_type("error").await.unwrap()["code"], "too_large");
    ann.say("lobby", "fine").await;
}

#[tokio::test]
async fn idle_and_lifetime_limits_close_with_1001() {
    let t = TestServer::start_with(|c| {
        c.limits.idle_timeout = Duration::from_millis(300);
    })
    .await;
    let mut ann = t.join("lobby", "ann").await;
    let close = ann.closed().await.unwrap().expect("a close frame");
    assert_eq!(u16::from(close.code), 1001);
    assert!(close.reason.contains("idle"), "{close:?}");

    let t = TestServer::start_with(|c| {
        c.limits.max_lifetime = Duration::from_millis(600);
    })
    .await;
    let mut bob = t.join("lobby", "bob").await;
    // Busy all along: the lifetime still ends it.
    let busy = async {
        loop {
            bob.send(json!({"action":"presence","room":"lobby"})).await;
            match bob.recv_within(Duration::from_millis(100)).await {
                Ok(_) => continue,
                Err(e) => return e.to_string(),
            }
        }
    };
    let ended = tokio::time::timeout(Duration::from_secs(5), busy)
        .await
        .unwrap();
    assert!(
        ended.contains("1001") || ended.contains("Away") || ended.contains("lifetime"),
        "{ended}"
    );
}

#[tokio::test]
async fn management_api_posts_describes_deletes_and_answers_410() {
    let t = TestServer::start().await;
    let mut ann = t.join("lobby", "ann").await;
    let conns = t.connections().await;
    assert_eq!(conns.len(), 1);
    let id = conns[0].id.to_string();
    let addr = t.addr();

    let (status, _) = http(
        addr,
        "POST",
        &format!("/@connections/{id}"),
        br#"{"type":"pong","ts":1}"#,
    )
    .await
    .unwrap();
    assert_eq!(status, 200);
    // Skips ann's own `joined`, which may or may not reach her (it races the upgrade, as on AWS).
    ann.recv_matching("the posted frame", |f| *f == json!({"type":"pong","ts":1}))
        .await
        .unwrap();
    // The same under a stage prefix, as the SDK's endpoint for a stage would send it.
    let (status, _) = http(
        addr,
        "POST",
        &format!("/dev/@connections/{id}"),
        b"{\"x\":2}",
    )
    .await
    .unwrap();
    assert_eq!(status, 200);
    assert_eq!(ann.recv().await.unwrap(), json!({"x":2}));

    let (status, body) = http(addr, "GET", &format!("/@connections/{id}"), b"")
        .await
        .unwrap();
    assert_eq!(status, 200);
    let info: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(info["identity"]["sourceIp"], "127.0.0.1");
    assert!(info["connectedAt"].as_str().unwrap().ends_with('Z'));

    let (status, _) = http(addr, "DELETE", &format!("/@connections/{id}"), b"")
        .await
        .unwrap();
    assert_eq!(status, 204);
    let close = ann.closed().await.unwrap().expect("close frame");
    assert_eq!(u16::from(close.code), 1000);

    eventually("the connection is removed", || async {
        t.connections().await.is_empty()
    })
    .await
    .unwrap();
    for (method, path) in [
        ("POST", format!("/@connections/{id}")),
        ("GET", format!("/@connections/{id}")),
        ("DELETE", format!("/@connections/{id}")),
        ("POST", format!("/dev/@connections/{id}")),
        ("POST", "/@connections/never-existed".to_owned()),
    ] {
        let (status, body) = http(addr, method, &path, b"{}").await.unwrap();
        assert_eq!(status, 410, "{method} {path}: {body}");
    }
}

#[tokio::test]
async fn fanout_removes_a_connection_that_answers_410() {
    // A connection whose socket vanished without $disconnect (a crashed gateway node, say) stays in
    // the store; the first fan-out that gets 410 for it removes it, and only it.
    let t = TestServer::start().await;
    let mut ann = t.join("lobby", "ann").await;
    let store = t.server().chat().ports().connections.clone();
    let ghost = chat_core::domain::Connection {
        id: chat_core::domain::ConnectionId::new("ghost-connection="),
        user: UserName::parse("ghost").unwrap(),
        rooms: [RoomName::parse("lobby").unwrap()].into(),
        allowed_rooms: None,
        connected_at: t.clock.now_ms() - 60_000,
        last_seen: t.clock.now_ms(),
        operator: false,
    };
    store.put(&ghost).await.unwrap();
    assert_eq!(store.all().await.unwrap().len(), 2);
    ann.say("lobby", "anyone there?").await;
    ann.recv_type("message").await.unwrap();
    eventually("the ghost is removed", || async {
        let left = store.all().await.unwrap();
        left.len() == 1 && left[0].user.as_str() == "ann"
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn history_survives_a_restart_and_old_connections_are_cleared() {
    let mut t = TestServer::start().await;
    let mut ann = t.join("lobby", "ann").await;
    let acked = ann.say("lobby", "remember me").await;
    // Drop the socket without closing, then restart: the new process starts with no connections.
    drop(ann);
    t.restart().await;
    assert!(t.connections().await.is_empty());
    let mut bob = t.join("lobby", "bob").await;
    bob.send(json!({"action":"history","room":"lobby"})).await;
    let h = bob.recv_type("history").await.unwrap();
    assert_eq!(texts(&h), ["remember me"]);
    assert_eq!(h["messages"][0]["id"], acked["id"]);
    t.stop().await;
}

#[tokio::test]
async fn forged_expired_and_missing_tokens_are_refused_at_the_upgrade() {
    let t = TestServer::start_with(|c| c.allow_anonymous = false).await;
    let key = chat_local::secret::load_or_create(t.dir.path()).unwrap();
    let now_s = t.clock.now_ms() / 1000;
    let claims = |exp: i64| Claims {
        sub: UserName::parse("ann").unwrap(),
        exp,
        iat: now_s,
        rooms: None,
        op: false,
    };
    let url = |token: &str| format!("{}?room=lobby&token={token}", t.server().websocket_url());

    let good = key.mint(&claims(now_s + 60));
    let mut ann = Client::connect(&url(&good)).await.unwrap();
    ann.say("lobby", "signed in").await;

    let forged = TokenKey::new(b"not-the-server-secret-at-all".to_vec())
        .unwrap()
        .mint(&claims(now_s + 60));
    let refused = Client::try_connect(&url(&forged))
        .await
        .unwrap()
        .expect_err("refused");
    assert_eq!(refused.status, 403);
    assert!(refused.body.contains("signature"), "{}", refused.body);

    let expired = key.mint(&claims(now_s - 1));
    let refused = Client::try_connect(&url(&expired))
        .await
        .unwrap()
        .expect_err("refused");
    assert_eq!(refused.status, 403);
    assert!(refused.body.contains("expired"), "{}", refused.body);

    let refused = Client::try_connect(&format!(
        "{}?room=lobby&user=ann",
        t.server().websocket_url()
    ))
    .await
    .unwrap()
    .expect_err("anonymous refused");
    assert_eq!(refused.status, 401);
    let refused = Client::try_connect(&format!("{}?token={good}", t.server().websocket_url()))
        .await
        .unwrap()
        .expect_err("no room refused");
    assert_eq!(refused.status, 400);
    // A refused upgrade registers nothing.
    assert_eq!(t.connections().await.len(), 1);
    // Tokens work on a stage path too.
    let staged = format!("ws://{}/dev?room=lobby&token={good}", t.addr());
    let mut again = Client::connect(&staged).await.unwrap();
    again.say("lobby", "via /dev").await;
}

#[tokio::test]
async fn the_page_and_its_assets_are_served() {
    let t = TestServer::start().await;
    let (status, body) = http(t.addr(), "GET", "/", b"").await.unwrap();
    assert_eq!(status, 200);
    assert!(body.contains("<html") || body.contains("<!doctype") || body.contains("<!DOCTYPE"));
    for asset in ["/app.js", "/style.css"] {
        let (status, body) = http(t.addr(), "GET", asset, b"").await.unwrap();
        assert_eq!(status, 200, "{asset}");
        assert!(!body.is_empty());
    }
    let (status, body) = http(t.addr(), "GET", "/config.json", b"").await.unwrap();
    assert_eq!(status, 200);
    let config: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(config["allowAnonymous"], true);
    assert_eq!(config["recallWindowMs"], 120_000);
    let (status, _) = http(t.addr(), "GET", "/dev", b"").await.unwrap();
    assert_eq!(status, 426);
}

#[tokio::test]
async fn a_client_that_stops_reading_is_closed_without_stalling_the_room() {
    let t = TestServer::start_with(|c| c.limits.outbox_frames = 8).await;
    let stalled = t.join("lobby", "slow").await; // never reads from here on
    let mut ann = t.join("lobby", "ann").await;
    // Presence is coalesced per window: a join and a leave inside one window cancel out, so the
    // join must have gone out before the slow client is pushed out.
    ann.recv_matching("slow joined", |f| {
        f["type"] == "presence" && f["user"] == "slow"
    })
    .await
    .unwrap();
    let id = t
        .connections()
        .await
        .into_iter()
        .find(|c| c.user.as_str() == "slow")
        .unwrap()
        .id
        .to_string();
    // 120 KB frames fill the socket buffers and then the 8-frame outbox within a few hundred posts.
    let big = vec![b'z'; 120 * 1024];
    let mut statuses = vec![];
    for _ in 0..400 {
        let (status, _) = http(t.addr(), "POST", &format!("/@connections/{id}"), &big)
            .await
            .unwrap();
        statuses.push(status);
        if status == 410 {
            break;
        }
    }
    assert!(
        statuses.contains(&429),
        "a full outbox answers 429: {statuses:?}"
    );
    assert_eq!(statuses.last(), Some(&410), "then the connection is gone");
    // The slow user has left, and the room goes on.
    ann.recv_matching("slow left", |f| {
        f["type"] == "presence" && f["user"] == "slow" && f["state"] == "left"
    })
    .await
    .unwrap();
    ann.say("lobby", "still flowing").await;
    ann.recv_type("message").await.unwrap();
    drop(stalled);
}

#[tokio::test]
async fn delete_closes_even_a_client_that_is_not_reading() {
    let t = TestServer::start().await;
    let stalled = t.join("lobby", "slow").await;
    let id = t.connections().await[0].id.to_string();
    let (status, _) = http(t.addr(), "DELETE", &format!("/@connections/{id}"), b"")
        .await
        .unwrap();
    assert_eq!(status, 204);
    eventually("$disconnect ran", || async {
        t.connections().await.is_empty()
    })
    .await
    .unwrap();
    drop(stalled);
}

#[tokio::test]
async fn binary_frames_are_refused_even_when_they_hold_json() {
    let t = TestServer::start().await;
    let mut ann = t.join("lobby", "ann").await;
    let frame = json!({"action":"send","room":"lobby","text":"sneaky"}).to_string();
    ann.send_raw(Message::binary(frame.into_bytes()))
        .await
        .unwrap();
    let err = ann.recv_type("error").await.unwrap();
    assert_eq!(err["code"], "bad_request");
    assert!(err["message"].as_str().unwrap().contains("binary"));
    ann.send(json!({"action":"history","room":"lobby"})).await;
    assert_eq!(
        ann.recv_type("history").await.unwrap()["messages"],
        json!([])
    );
}

#[tokio::test]
async fn paths_that_are_no_stage_are_not_found() {
    let t = TestServer::start().await;
    for path in ["/favicon.ico", "/no.such.thing"] {
        let (status, _) = http(t.addr(), "GET", path, b"").await.unwrap();
        assert_eq!(status, 404, "{path}");
    }
    let mut staged = Client::connect(&format!("ws://{}/prod/?room=lobby&user=ann", t.addr()))
        .await
        .unwrap();
    staged.say("lobby", "trailing slash").await;
}

#[tokio::test]
async fn a_client_close_is_answered_with_a_close_frame() {
    let t = TestServer::start().await;
    let mut ann = t.join("lobby", "ann").await;
    ann.send_raw(Message::Close(Some(
        tokio_tungstenite::tungstenite::protocol::CloseFrame {
            code: tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode::Normal,
            reason: "bye".into(),
        },
    )))
    .await
    .unwrap();
    let reply = ann
        .closed()
        .await
        .unwrap()
        .expect("the close handshake completes");
    assert_eq!(u16::from(reply.code), 1000);
}
