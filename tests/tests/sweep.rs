//! The presence sweep the schedule runs on AWS (`chat_handlers::sweep`), on the local gateway's
//! real sockets and Management API semantics: a connection whose socket vanished without a close
//! (its `$disconnect` never ran) is probed, found gone (410), removed and announced `left`; one
//! that stopped its heartbeat past the idle threshold is closed and removed; a live one is left
//! alone and, when it pings, never even probed.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeSet;

use chat_core::domain::{Connection, ConnectionId, RoomName, UserName};
use chat_core::ports::Clock;
use chatctl_e2e::TestServer;
use serde_json::json;

fn ghost(id: &str, user: &str, room: &str, last_seen: i64) -> Connection {
    Connection {
        id: ConnectionId::new(id),
        user: UserName::parse(user).unwrap(),
        rooms: BTreeSet::from([RoomName::parse(room).unwrap()]),
        allowed_rooms: None,
        connected_at: last_seen,
        last_seen,
        operator: false,
    }
}

#[tokio::test]
async fn the_sweep_removes_vanished_and_silent_connections_and_announces_them() {
    let t = TestServer::start().await;
    let chat = t.server().chat().clone();
    let mut ann = t.join("lobby", "ann").await;
    ann.send(json!({"action":"ping"})).await;
    ann.recv_type("pong").await.unwrap();
    let now = t.clock.now_ms();
    // Registered, but with no socket: what a lost `$disconnect` leaves behind.
    let store = &chat.ports().connections;
    store
        .put(&ghost("ghost-silent", "gus", "lobby", now - 61_000))
        .await
        .unwrap();
    // Seen just now: the sweep does not spend a probe on it, even though it has no socket.
    store
        .put(&ghost("ghost-fresh", "fay", "lobby", now))
        .await
        .unwrap();

    let report = chat_handlers::sweep::handle(&chat, now).await.unwrap();
    assert_eq!(report.probed, 1, "{report:?}");
    assert_eq!(report.removed, 1, "{report:?}");
    assert_eq!(report.errors, 0, "{report:?}");
    ann.recv_matching("gus left", |f| {
        f["type"] == "presence" && f["user"] == "gus" && f["state"] == "left"
    })
    .await
    .unwrap();
    let left: Vec<String> = t
        .connections()
        .await
        .iter()
        .map(|c| c.id.to_string())
        .collect();
    assert!(!left.contains(&"ghost-silent".to_owned()), "{left:?}");
    assert!(left.contains(&"ghost-fresh".to_owned()), "{left:?}");

    // Past the idle threshold without a heartbeat: closed at the gateway and removed.
    t.clock.advance(t.config.chat.presence.idle_ms + 1_000);
    let report = chat_handlers::sweep::handle(&chat, t.clock.now_ms())
        .await
        .unwrap();
    assert_eq!(report.removed, 2, "ann and fay: {report:?}");
    let close = ann.closed().await.unwrap().expect("a close frame");
    assert_eq!(u16::from(close.code), 1000);
    assert!(t.connections().await.is_empty());
}
