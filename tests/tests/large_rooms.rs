//! Large rooms over real sockets: a join storm reaches each member as a bounded number of
//! coalesced presence frames and ends in the exact member list; big rooms get counts; chat
//! messages keep one order per room while presence churns; `history after` fills a gap exactly.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use chatctl_e2e::{Client, TestServer};
use serde_json::{Value, json};

/// Frames the server really sent about presence (not the test client's expansion of a batch).
fn is_presence_frame(f: &Value) -> bool {
    matches!(
        f["type"].as_str(),
        Some("presence" | "presence_batch" | "occupancy")
    ) && f.get("batched").is_none()
}

/// Read until the line has been quiet for `quiet`; every frame that came (none if the socket
/// broke, which the callers' counts then show).
async fn settle(client: &mut Client, quiet: Duration) -> Vec<Value> {
    client.drain(quiet).await.unwrap_or_default()
}

#[tokio::test]
async fn a_join_storm_reaches_each_member_as_a_few_coalesced_frames() {
    const N: usize = 120;
    let t = TestServer::start().await;
    let window_ms = t.config.chat.presence_push.window_ms;
    let started = Instant::now();
    let mut clients = Vec::with_capacity(N);
    for i in 0..N {
        clients.push(t.join("storm", &format!("u{i:03}")).await);
    }
    let storm = started.elapsed();
    let mut frames_per_member = Vec::with_capacity(N);
    let mut first_view: BTreeMap<String, String> = BTreeMap::new();
    let heard = futures_util::future::join_all(
        clients
            .iter_mut()
            .map(|c| settle(c, Duration::from_millis(1_500))),
    )
    .await;
    for (i, frames) in heard.into_iter().enumerate() {
        frames_per_member.push(frames.iter().filter(|f| is_presence_frame(f)).count());
        if i == 0 {
            // The first member was there for the whole storm: applying what it heard gives
            // the room exactly.
            for f in frames.iter().filter(|f| f["type"] == "presence") {
                first_view.insert(
                    f["user"].as_str().unwrap().to_owned(),
                    f["state"].as_str().unwrap().to_owned(),
                );
            }
        }
    }
    // One frame per window at most, plus the window the member arrived in.
    let bound = usize::try_from(storm.as_millis() as i64 / window_ms + 2).unwrap();
    let worst = *frames_per_member.iter().max().unwrap();
    assert!(
        worst <= bound,
        "a member heard {worst} presence frames for {N} joins in {storm:?} (bound {bound}): {frames_per_member:?}"
    );
    assert!(
        worst < N / 4,
        "coalescing must beat one frame per joiner: {worst}"
    );
    let everyone: BTreeSet<String> = (0..N).map(|i| format!("u{i:03}")).collect();
    let joined: BTreeSet<String> = first_view
        .iter()
        .filter(|(_, state)| *state == "joined")
        .map(|(user, _)| user.clone())
        .collect();
    assert_eq!(
        joined, everyone,
        "the first member's view of the room is exact"
    );

    clients[7]
        .send(json!({"action":"presence","room":"storm"}))
        .await;
    let members = clients[7].recv_type("members").await.unwrap();
    assert_eq!(members["count"], N);
    let listed: BTreeSet<String> = members["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["user"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(listed, everyone);

    // Departures coalesce the same way.
    for client in clients.drain(N / 2..) {
        client.close().await;
    }
    let frames = settle(&mut clients[0], Duration::from_millis(1_500)).await;
    let mut left = BTreeSet::new();
    for f in frames.iter().filter(|f| f["type"] == "presence") {
        if f["state"] == "left" {
            left.insert(f["user"].as_str().unwrap().to_owned());
        }
    }
    let expected: BTreeSet<String> = (N / 2..N).map(|i| format!("u{i:03}")).collect();
    assert_eq!(left, expected);
    assert!(frames.iter().filter(|f| is_presence_frame(f)).count() < N / 4);
}

#[tokio::test]
async fn a_room_above_the_detail_limit_gets_counts() {
    let t = TestServer::start_with(|c| c.chat.presence_push.detail_limit = 5).await;
    let mut watcher = t.join("big", "watcher").await;
    settle(&mut watcher, Duration::from_millis(800)).await;
    let mut others = vec![];
    for i in 0..12 {
        others.push(t.join("big", &format!("m{i}")).await);
    }
    let frames = settle(&mut watcher, Duration::from_millis(1_500)).await;
    let occupancy: Vec<&Value> = frames.iter().filter(|f| f["type"] == "occupancy").collect();
    assert!(!occupancy.is_empty(), "{frames:?}");
    assert!(
        frames
            .iter()
            .all(|f| f["type"] != "presence_batch" && f["type"] != "presence"),
        "no per-user changes above the limit: {frames:?}"
    );
    assert_eq!(occupancy.last().unwrap()["members"], 13);
    let joined: u64 = occupancy
        .iter()
        .map(|f| f["joined"].as_u64().unwrap())
        .sum();
    assert_eq!(joined, 12);
    // The member list is still there on request.
    watcher
        .send(json!({"action":"presence","room":"big"}))
        .await;
    let members = watcher.recv_type("members").await.unwrap();
    assert_eq!(members["count"], 13);
}

#[tokio::test]
async fn messages_keep_one_order_per_room_while_presence_churns() {
    let t = TestServer::start_with(|c| {
        c.chat.rate_limit.per_second = 1e6;
        c.chat.rate_limit.burst = 1e6;
    })
    .await;
    let mut watchers = vec![t.join("busy", "w1").await, t.join("busy", "w2").await];
    let mut senders = vec![t.join("busy", "s1").await, t.join("busy", "s2").await];
    const EACH: usize = 40;
    let churn = {
        let urls: Vec<String> = (0..30)
            .map(|i| t.anon_url("busy", &format!("c{i}")))
            .collect();
        tokio::spawn(async move {
            for round in 0..3 {
                let mut open = vec![];
                for url in &urls {
                    open.push(Client::connect(url).await.unwrap());
                }
                tokio::time::sleep(Duration::from_millis(50 * round)).await;
                for c in open {
                    c.close().await;
                }
            }
        })
    };
    let mut send_tasks = vec![];
    for (n, mut sender) in senders.drain(..).enumerate() {
        send_tasks.push(tokio::spawn(async move {
            for i in 0..EACH {
                sender.say("busy", &format!("s{n}-{i}")).await;
            }
            sender
        }));
    }
    for task in send_tasks {
        task.await.unwrap();
    }
    churn.await.unwrap();
    let mut orders = vec![];
    for w in &mut watchers {
        let frames = settle(w, Duration::from_millis(1_500)).await;
        let texts: Vec<String> = frames
            .iter()
            .filter(|f| f["type"] == "message")
            .map(|f| f["text"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(texts.len(), 2 * EACH, "every message once: {texts:?}");
        for n in 0..2 {
            let mine: Vec<&String> = texts
                .iter()
                .filter(|t| t.starts_with(&format!("s{n}-")))
                .collect();
            let expected: Vec<String> = (0..EACH).map(|i| format!("s{n}-{i}")).collect();
            assert_eq!(mine, expected.iter().collect::<Vec<_>>(), "sender order");
        }
        orders.push(texts);
    }
    assert_eq!(
        orders[0], orders[1],
        "every member sees the room in one order"
    );
}

#[tokio::test]
async fn history_after_fills_a_gap_exactly_with_tombstones() {
    let t = TestServer::start_with(|c| {
        c.chat.rate_limit.per_second = 1e6;
        c.chat.rate_limit.burst = 1e6;
    })
    .await;
    let mut ann = t.join("gap", "ann").await;
    let mut ids = vec![];
    for i in 0..130 {
        let ack = ann.say("gap", &format!("m{i}")).await;
        ids.push(ack["id"].as_str().unwrap().to_owned());
    }
    ann.send(json!({"action":"recall","id": ids[70]})).await;
    ann.recv_type("recalled").await.unwrap();

    // Catch up from the 10th message, 50 at a time.
    let mut after = ids[9].clone();
    let mut got: Vec<Value> = vec![];
    let mut pages = 0;
    loop {
        ann.send(json!({"action":"history","room":"gap","after":after,"limit":50}))
            .await;
        let page = ann.recv_type("history").await.unwrap();
        pages += 1;
        let messages = page["messages"].as_array().unwrap().clone();
        if let Some(last) = messages.last() {
            after = last["id"].as_str().unwrap().to_owned();
        }
        got.extend(messages);
        if page["more"] == false {
            break;
        }
        assert!(pages < 10, "paging must end");
    }
    assert_eq!(pages, 3);
    let got_ids: Vec<&str> = got.iter().map(|m| m["id"].as_str().unwrap()).collect();
    let expected: Vec<&str> = ids[10..].iter().map(String::as_str).collect();
    assert_eq!(
        got_ids, expected,
        "nothing skipped, nothing twice, oldest first"
    );
    let tombstone = &got[70 - 10];
    assert_eq!(tombstone["recalled"], true);
    assert!(tombstone.get("text").is_none());

    // A cursor past the newest message: an empty page, not an error.
    let future = ulid::Ulid::from_parts(u64::MAX >> 16, 0).to_string();
    ann.send(json!({"action":"history","room":"gap","after":future}))
        .await;
    let page = ann.recv_type("history").await.unwrap();
    assert_eq!(page["messages"], json!([]));
    assert_eq!(page["more"], false);

    for bad in [
        json!({"action":"history","room":"gap","after":"nope"}),
        json!({"action":"history","room":"gap","after":7}),
        json!({"action":"history","room":"gap","after":ids[1],"before":ids[5]}),
    ] {
        ann.send(bad.clone()).await;
        let err = ann.recv_type("error").await.unwrap();
        assert_eq!(err["code"], "bad_request", "{bad}: {err}");
    }
}
