//! Acknowledged durable sends per second: `--senders` WebSocket clients (default 100), each alone
//! in its own room so fan-out does not dominate, each sending `--messages` (default 200) as fast
//! as its `ack`s return, against the in-process `chatctl dev` gateway (rate limit lifted) whose
//! message store commits with `synchronous=FULL` — an `ack` means the row is on disk.
//!
//! Printed next to it, measured in the same run on the same disk (a temp dir): serial single-row
//! SQLite commits per second (WAL, `synchronous=FULL`, one fsync each — the ceiling of one commit
//! per message, which the store had before group commit) and the commits the store made, so the
//! batching is visible (acked sends / commits = the mean batch).
//!
//! Exits non-zero when an ack is missing or an error frame arrives. Only meaningful in a release
//! build, which `cargo bench` is.
//!
//! `cargo bench --workspace --bench durable -- [--senders 100] [--messages 200]`

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stdout
)]

// Each bench uses the baseline figures it reports.
#[allow(dead_code)]
#[path = "common/sqlite_baseline.rs"]
mod sqlite_baseline;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chat_core::cache::CachedRecipients;
use chat_core::domain::{Message as ChatMessage, RoomName, UserName};
use chat_core::policy::RateLimit;
use chat_core::ports::{IdSource, MessageStore, MonotonicUlids, SystemClock};
use chat_local::sqlite::{SqliteConnectionStore, SqliteMessageStore};
use chat_local::{LocalConfig, LocalServer, Stores};
use chatctl_e2e::bench_arg;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use sqlite_baseline::Baseline;
use tokio_tungstenite::tungstenite::Message;

/// The longest one ack may take before the run is declared broken.
const STEP: Duration = Duration::from_secs(15);

/// The store alone, without sockets or handler: `tasks` concurrent appenders of `each` messages
/// on a fresh `messages.db`. Appends/s and the commits they took.
async fn store_only(tasks: usize, each: usize) -> Result<(f64, u64), String> {
    let dir = tempfile::tempdir().map_err(|e| format!("temp dir: {e}"))?;
    let store = SqliteMessageStore::open(&dir.path().join("messages.db"))
        .map_err(|e| format!("messages.db: {e}"))?;
    let ids = Arc::new(MonotonicUlids::default());
    let start = Instant::now();
    let workers: Vec<_> = (0..tasks)
        .map(|t| {
            let (store, ids) = (store.clone(), Arc::clone(&ids));
            tokio::spawn(async move {
                for i in 0..each {
                    let message = ChatMessage {
                        id: ids.next_id(1_700_000_000_000),
                        room: RoomName::parse(&format!("s{t}")).map_err(|e| e.to_string())?,
                        user: UserName::parse(&format!("u{t}")).map_err(|e| e.to_string())?,
                        text: Some(format!("durable {i}")),
                        ts: 0,
                        client_msg_id: None,
                        version: 1,
                        recall: None,
                    };
                    store.append(&message).await.map_err(|e| e.to_string())?;
                }
                Ok::<(), String>(())
            })
        })
        .collect();
    for w in workers {
        w.await.map_err(|e| format!("appender: {e}"))??;
    }
    let rate = (tasks * each) as f64 / start.elapsed().as_secs_f64();
    Ok((rate, store.commits()))
}

/// One sender: connect, then `messages` sends, each after the previous one's ack.
async fn sender(url: String, room: String, messages: usize) -> Result<usize, String> {
    let (ws, _) = tokio_tungstenite::connect_async(&url)
        .await
        .map_err(|e| format!("{room}: connect: {e}"))?;
    let (mut sink, mut stream) = ws.split();
    let mut acked = 0;
    for seq in 0..messages {
        let frame = json!({"action":"send","room":room,"text":format!("durable {seq}")});
        sink.send(Message::text(frame.to_string()))
            .await
            .map_err(|e| format!("{room}: send: {e}"))?;
        loop {
            let next = tokio::time::timeout(STEP, stream.next())
                .await
                .map_err(|_| format!("{room}: no ack for send {seq} within {STEP:?}"))?;
            let Some(Ok(Message::Text(t))) = next else {
                return Err(format!("{room}: the server closed the socket: {next:?}"));
            };
            let v: Value = serde_json::from_str(&t).map_err(|e| format!("{room}: {e}: {t}"))?;
            match v["type"].as_str() {
                Some("ack") => {
                    acked += 1;
                    break;
                }
                Some("error") => return Err(format!("{room}: error frame: {t}")),
                // Its own copy of the message, presence: not what is measured.
                _ => {}
            }
        }
    }
    let _ = sink.send(Message::Close(None)).await;
    Ok(acked)
}

#[tokio::main]
async fn main() {
    let senders = bench_arg("--senders", 100);
    let messages = bench_arg("--messages", 200);

    let serial = tokio::task::spawn_blocking(|| {
        Baseline::open()?.serial_commits_per_s(Duration::from_secs(2))
    })
    .await
    .unwrap();

    let store_only = store_only(senders, messages).await;

    // The server's own SQLite stores, built here so the bench keeps a handle on the message
    // store's commit counter (a clone shares the writer).
    let dir = tempfile::tempdir().expect("temp dir");
    let store = SqliteMessageStore::open(&dir.path().join("messages.db")).expect("messages.db");
    let connections =
        SqliteConnectionStore::open(&dir.path().join("connections.db")).expect("connections.db");
    let mut config = LocalConfig::new(dir.path());
    config.bind = SocketAddr::from(([127, 0, 0, 1], 0));
    config.allow_anonymous = true;
    // The bench measures the store, not the per-connection flood guard.
    config.chat.rate_limit = RateLimit {
        per_second: 1e9,
        burst: 1e9,
    };
    let stores = Stores::Provided {
        messages: Arc::new(store.clone()),
        connections: Arc::new(CachedRecipients::new(Arc::new(connections))),
    };
    let server = LocalServer::start_with(config, Arc::new(SystemClock), stores)
        .await
        .expect("server starts");
    let base = server.websocket_url();
    let commits_before = store.commits();
    let start = Instant::now();
    let tasks: Vec<_> = (0..senders)
        .map(|i| {
            let room = format!("d{i}");
            let url = format!("{base}?room={room}&user=u{i}");
            tokio::spawn(sender(url, room, messages))
        })
        .collect();
    let mut acked = 0;
    let mut errors = vec![];
    for t in tasks {
        match t.await {
            Ok(Ok(a)) => acked += a,
            Ok(Err(e)) => errors.push(e),
            Err(e) => errors.push(format!("sender task: {e}")),
        }
    }
    let elapsed = start.elapsed();
    let commits = store.commits() - commits_before;
    server.shutdown().await;
    drop(dir);

    let rate = acked as f64 / elapsed.as_secs_f64().max(1e-9);
    println!("| figure | value |");
    println!("| --- | --- |");
    println!("| senders × messages (ack-paced) | {senders} × {messages} |");
    println!(
        "| acked durable sends | {acked} in {:.2} s |",
        elapsed.as_secs_f64()
    );
    println!("| **acked durable sends/s** | **{rate:.0}** |");
    println!(
        "| store commits (fsyncs) | {commits} (mean batch {:.1}) |",
        acked as f64 / commits.max(1) as f64
    );
    match &serial {
        Ok(s) => println!(
            "| serial single-row SQLite commits/s, same disk (one commit per message: the old cap) | {s:.0} ({:.1}x) |",
            rate / s
        ),
        Err(e) => errors.push(format!("baseline: {e}")),
    }
    match &store_only {
        Ok((r, c)) => println!(
            "| the store alone: {senders} tasks × {messages} appends, no sockets | {r:.0}/s in {c} commits (mean batch {:.1}) |",
            (senders * messages) as f64 / (*c).max(1) as f64
        ),
        Err(e) => errors.push(format!("store alone: {e}")),
    }
    println!(
        "| target ≥ 10,000 acked fsync'd sends/s | {} |",
        if rate >= 10_000.0 { "met" } else { "not met" }
    );
    if acked < senders * messages {
        errors.push(format!("{acked} acks for {} sends", senders * messages));
    }
    if !errors.is_empty() {
        for e in &errors {
            eprintln!("error: {e}");
        }
        std::process::exit(1);
    }
}
