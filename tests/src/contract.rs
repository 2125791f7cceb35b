//! The contract every store and topic adapter is held to: one suite, run against the in-memory
//! reference, SQLite and DynamoDB (on moto). Each check uses its own room names, so suites can
//! share a store or an emulator.

use std::collections::BTreeSet;
use std::future::Future;

use aws_lambda_events::sns::SnsMessage;
use chat_core::domain::{
    ClientMsgId, Connection, ConnectionId, Message, MessageId, PresenceChange, Recall, RoomName,
    UserName,
};
use chat_core::ports::{
    AppendOutcome, ConnectionStore, IdSource, MessageStore, MonotonicUlids, RecallOutcome,
    RoomEvent, Topic,
};
use chat_core::protocol::ServerFrame;

use crate::moto::unique;

/// Where `message` sits in `sent` (by id).
fn target_index(sent: &[Message], message: &Message) -> usize {
    sent.iter().position(|m| m.id == message.id).unwrap()
}

fn room(prefix: &str) -> RoomName {
    RoomName::parse(&unique(prefix)).unwrap()
}

fn user(name: &str) -> UserName {
    UserName::parse(name).unwrap()
}

fn message(ids: &MonotonicUlids, room: &RoomName, who: &str, text: &str, ts: i64) -> Message {
    Message {
        id: ids.next_id(ts),
        room: room.clone(),
        user: user(who),
        text: Some(text.to_owned()),
        ts,
        client_msg_id: None,
        version: 1,
        recall: None,
    }
}

fn recall_by(who: &str, at: i64) -> Recall {
    Recall {
        by: user(who),
        at,
        operator: false,
        reason: None,
    }
}

fn texts(messages: &[Message]) -> Vec<Option<&str>> {
    messages.iter().map(|m| m.text.as_deref()).collect()
}

/// Every behaviour of a message store the handlers rely on.
pub async fn message_store(store: &dyn MessageStore) {
    let ids = MonotonicUlids::default();
    let lobby = room("lobby");
    let other = room("other");

    // History: oldest first, newest page by default, `before` exclusive, `more` exact.
    let mut sent = vec![];
    for i in 0..7 {
        let m = message(&ids, &lobby, "ann", &format!("m{i}"), 1_000 + i);
        assert_eq!(store.append(&m).await.unwrap(), AppendOutcome::Stored);
        sent.push(m);
    }
    store
        .append(&message(&ids, &other, "bob", "elsewhere", 2_000))
        .await
        .unwrap();
    let page = store.history(&lobby, None, 3).await.unwrap();
    assert_eq!(texts(&page.messages), [Some("m4"), Some("m5"), Some("m6")]);
    assert!(page.more);
    let page = store.history(&lobby, Some(sent[4].id), 3).await.unwrap();
    assert_eq!(texts(&page.messages), [Some("m1"), Some("m2"), Some("m3")]);
    assert!(page.more);
    let page = store.history(&lobby, Some(sent[1].id), 3).await.unwrap();
    assert_eq!(texts(&page.messages), [Some("m0")]);
    assert!(!page.more);
    let page = store.history(&lobby, None, 7).await.unwrap();
    assert_eq!(page.messages, sent, "stored messages come back exactly");
    assert!(!page.more);
    assert!(
        store
            .history(&room("empty"), None, 50)
            .await
            .unwrap()
            .messages
            .is_empty()
    );

    // `after`: oldest first, strictly after the cursor, `more` exact; any id is a cursor.
    let page = store.history_after(&lobby, sent[1].id, 3).await.unwrap();
    assert_eq!(texts(&page.messages), [Some("m2"), Some("m3"), Some("m4")]);
    assert!(page.more);
    let page = store.history_after(&lobby, sent[4].id, 3).await.unwrap();
    assert_eq!(texts(&page.messages), [Some("m5"), Some("m6")]);
    assert!(!page.more);
    let page = store.history_after(&lobby, sent[6].id, 3).await.unwrap();
    assert!(page.messages.is_empty() && !page.more);
    let before_all = MessageId::from_ulid(ulid::Ulid::from_parts(0, 0));
    let page = store.history_after(&lobby, before_all, 7).await.unwrap();
    assert_eq!(
        page.messages, sent,
        "a cursor before every id reads from the start"
    );
    assert!(!page.more);
    let page = store.history_after(&other, before_all, 7).await.unwrap();
    assert_eq!(
        texts(&page.messages),
        [Some("elsewhere")],
        "other rooms stay out"
    );

    // By id alone, whatever the room.
    assert_eq!(
        store.get(sent[3].id).await.unwrap().as_ref(),
        Some(&sent[3])
    );
    let unknown = MessageId::parse("01ARZ3NDEKTSV4RRFFQ69G5FAV").unwrap();
    assert_eq!(store.get(unknown).await.unwrap(), None);

    // Idempotency per (room, user, client message id).
    let cmid = ClientMsgId::parse("retry#1").unwrap();
    let first = Message {
        client_msg_id: Some(cmid.clone()),
        ..message(&ids, &lobby, "ann", "once", 3_000)
    };
    assert_eq!(store.append(&first).await.unwrap(), AppendOutcome::Stored);
    let again = Message {
        client_msg_id: Some(cmid.clone()),
        ..message(&ids, &lobby, "ann", "twice", 3_001)
    };
    assert_eq!(
        store.append(&again).await.unwrap(),
        AppendOutcome::Duplicate(first.clone())
    );
    assert_eq!(
        store.get(again.id).await.unwrap(),
        None,
        "nothing of the duplicate is stored"
    );
    let bobs = Message {
        client_msg_id: Some(cmid.clone()),
        ..message(&ids, &lobby, "bob", "bob's", 3_002)
    };
    assert_eq!(store.append(&bobs).await.unwrap(), AppendOutcome::Stored);
    assert_eq!(
        store
            .find_by_client_id(&lobby, &user("ann"), &cmid)
            .await
            .unwrap(),
        Some(first.clone())
    );
    assert_eq!(
        store
            .find_by_client_id(&other, &user("ann"), &cmid)
            .await
            .unwrap(),
        None
    );

    // Recall: conditional on the version, every version kept.
    let target = &sent[5];
    assert_eq!(
        store
            .recall(target.id, 2, recall_by("ann", 5_000))
            .await
            .unwrap(),
        RecallOutcome::VersionConflict
    );
    let RecallOutcome::Recalled(tombstone) = store
        .recall(target.id, 1, recall_by("ann", 5_000))
        .await
        .unwrap()
    else {
        panic!("the recall should succeed");
    };
    assert_eq!(tombstone.text, None);
    assert_eq!(tombstone.version, 2);
    assert_eq!(store.get(target.id).await.unwrap(), Some(tombstone.clone()));
    assert_eq!(
        store.versions(target.id).await.unwrap(),
        [target.clone(), tombstone.clone()]
    );
    let page = store.history(&lobby, Some(sent[6].id), 1).await.unwrap();
    assert_eq!(
        page.messages,
        std::slice::from_ref(&tombstone),
        "history shows the tombstone"
    );
    let page = store
        .history_after(&lobby, sent[target_index(&sent, &tombstone) - 1].id, 1)
        .await
        .unwrap();
    assert_eq!(
        page.messages,
        std::slice::from_ref(&tombstone),
        "catching up shows the tombstone too"
    );
    assert_eq!(
        store
            .recall(target.id, 1, recall_by("ann", 5_001))
            .await
            .unwrap(),
        RecallOutcome::VersionConflict
    );
    assert_eq!(
        store
            .recall(unknown, 1, recall_by("ann", 5_001))
            .await
            .unwrap(),
        RecallOutcome::NotFound
    );
    assert!(store.versions(unknown).await.unwrap().is_empty());

    // Two recalls racing on one version: exactly one wins.
    let raced = &sent[2];
    let (a, b) = tokio::join!(
        store.recall(raced.id, 1, recall_by("ann", 6_000)),
        store.recall(
            raced.id,
            1,
            Recall {
                operator: true,
                ..recall_by("mod", 6_000)
            }
        ),
    );
    let outcomes = [a.unwrap(), b.unwrap()];
    let wins = outcomes
        .iter()
        .filter(|o| matches!(o, RecallOutcome::Recalled(_)))
        .count();
    assert_eq!(wins, 1, "{outcomes:?}");
    assert_eq!(store.versions(raced.id).await.unwrap().len(), 2);
}

fn connection(id: &str, who: &str, rooms: &[&RoomName], at: i64) -> Connection {
    Connection {
        id: ConnectionId::new(id),
        user: user(who),
        rooms: rooms.iter().map(|r| (*r).clone()).collect(),
        allowed_rooms: None,
        connected_at: at,
        last_seen: at,
        operator: false,
    }
}

fn ids_of(connections: &[Connection]) -> BTreeSet<String> {
    connections.iter().map(|c| c.id.to_string()).collect()
}

/// Every behaviour of a connection store the handlers rely on.
pub async fn connection_store(store: &dyn ConnectionStore) {
    let lobby = room("lobby");
    let side = room("side");
    let prefix = unique("c");
    let id = |n: &str| format!("{prefix}-{n}");

    let ann = Connection {
        allowed_rooms: Some([lobby.clone(), side.clone()].into()),
        operator: true,
        ..connection(&id("ann"), "ann", &[&lobby], 1_000)
    };
    let bob = connection(&id("bob"), "bob", &[&lobby, &side], 1_100);
    store.put(&ann).await.unwrap();
    store.put(&bob).await.unwrap();
    assert_eq!(store.get(&ann.id).await.unwrap(), Some(ann.clone()));
    assert_eq!(
        store.get(&ConnectionId::new(id("nobody"))).await.unwrap(),
        None
    );
    assert_eq!(
        ids_of(&store.in_room(&lobby).await.unwrap()),
        ids_of(&[ann.clone(), bob.clone()])
    );
    assert_eq!(
        ids_of(&store.in_room(&side).await.unwrap()),
        ids_of(std::slice::from_ref(&bob))
    );
    // The fan-out's view and one user's connections agree with the members.
    let mut recipients: Vec<(String, String, i64)> = store
        .recipients(&lobby)
        .await
        .unwrap()
        .into_iter()
        .map(|r| (r.id.to_string(), r.user.to_string(), r.connected_at))
        .collect();
    recipients.sort();
    assert_eq!(
        recipients,
        [
            (ann.id.to_string(), "ann".to_owned(), 1_000),
            (bob.id.to_string(), "bob".to_owned(), 1_100)
        ]
    );
    assert_eq!(
        ids_of(&store.user_in_room(&lobby, &user("bob")).await.unwrap()),
        ids_of(std::slice::from_ref(&bob))
    );
    assert!(
        store
            .user_in_room(&side, &user("ann"))
            .await
            .unwrap()
            .is_empty()
    );

    // Join and leave change both the connection and the room's membership.
    assert!(store.join(&ann.id, &side).await.unwrap());
    assert!(
        store.join(&ann.id, &side).await.unwrap(),
        "joining twice is harmless"
    );
    let joined = store.get(&ann.id).await.unwrap().unwrap();
    assert_eq!(joined.rooms, [lobby.clone(), side.clone()].into());
    assert_eq!(store.in_room(&side).await.unwrap().len(), 2);
    assert!(store.leave(&ann.id, &lobby).await.unwrap());
    assert_eq!(
        store.get(&ann.id).await.unwrap().unwrap().rooms,
        [side.clone()].into()
    );
    assert_eq!(
        ids_of(&store.in_room(&lobby).await.unwrap()),
        ids_of(std::slice::from_ref(&bob))
    );
    assert!(store.leave(&ann.id, &side).await.unwrap());
    assert!(
        store.get(&ann.id).await.unwrap().unwrap().rooms.is_empty(),
        "no rooms, still connected"
    );
    assert!(
        !store
            .join(&ConnectionId::new(id("nobody")), &lobby)
            .await
            .unwrap()
    );
    assert!(
        !store
            .leave(&ConnectionId::new(id("nobody")), &lobby)
            .await
            .unwrap()
    );

    // Heartbeats return the previous value.
    assert_eq!(store.touch(&bob.id, 5_000).await.unwrap(), Some(1_100));
    assert_eq!(store.touch(&bob.id, 6_000).await.unwrap(), Some(5_000));
    assert_eq!(store.get(&bob.id).await.unwrap().unwrap().last_seen, 6_000);
    assert_eq!(
        store
            .touch(&ConnectionId::new(id("nobody")), 1)
            .await
            .unwrap(),
        None
    );

    // `all` lists every connection.
    let all = ids_of(&store.all().await.unwrap());
    assert!(all.contains(ann.id.as_str()) && all.contains(bob.id.as_str()));

    // Removal returns what was removed, once, and takes it out of its rooms.
    let removed = store.remove(&bob.id).await.unwrap().unwrap();
    assert_eq!(removed.id, bob.id);
    assert_eq!(removed.rooms, [lobby.clone(), side.clone()].into());
    assert_eq!(store.remove(&bob.id).await.unwrap(), None);
    assert!(store.in_room(&lobby).await.unwrap().is_empty());
    assert!(store.in_room(&side).await.unwrap().is_empty());

    // A big room: more members than one batch read returns.
    let crowd = room("crowd");
    for i in 0..130 {
        store
            .put(&connection(
                &id(&format!("n{i:03}")),
                &format!("u{i}"),
                &[&crowd],
                2_000,
            ))
            .await
            .unwrap();
    }
    assert_eq!(store.in_room(&crowd).await.unwrap().len(), 130);
}

/// Every behaviour of a topic: what a subscriber receives is an SNS notification whose body is
/// the room event and whose attributes name the room and the event type.
pub async fn topic<F, Fut>(topic: &dyn Topic, mut receive: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Vec<SnsMessage>>,
{
    let lobby = room("lobby");
    let side = room("side");
    let id = MessageId::parse("01ARZ3NDEKTSV4RRFFQ69G5FAV").unwrap();
    let events = [
        RoomEvent::new(
            lobby.clone(),
            ServerFrame::Message {
                room: lobby.clone(),
                id,
                user: user("ann"),
                text: "hi <b>".into(),
                ts: 1,
                client_msg_id: None,
            },
        ),
        RoomEvent::new(
            lobby.clone(),
            ServerFrame::Recalled {
                room: lobby.clone(),
                id,
                by: user("ann"),
                ts: 2,
            },
        ),
        RoomEvent::new(
            side.clone(),
            ServerFrame::Presence {
                room: side.clone(),
                user: user("Zoë"),
                state: PresenceChange::Joined,
                ts: 3,
            },
        ),
    ];
    for event in &events {
        topic.publish(event).await.unwrap();
    }
    let mut received = vec![];
    for _ in 0..50 {
        received.extend(receive().await);
        if received.len() >= events.len() {
            break;
        }
    }
    assert_eq!(received.len(), events.len(), "every event arrives once");
    let mut got: Vec<RoomEvent> = vec![];
    for sns in &received {
        let event: RoomEvent = serde_json::from_str(&sns.message).unwrap();
        assert_eq!(sns.message_attributes["room"].value, event.room.as_str());
        assert_eq!(sns.message_attributes["room"].data_type, "String");
        assert_eq!(sns.message_attributes["eventType"].value, event.kind());
        got.push(event);
    }
    for event in &events {
        assert!(got.contains(event), "{event:?} not received");
    }
}
