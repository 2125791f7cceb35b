//! Fan-out throughput to one room of N real WebSocket connections on the local gateway, through
//! the API Gateway Management API over HTTP (the AWS SDK's `PostToConnection`, as the fan-out
//! Lambda does it), against a baseline in the same process: the gateway's in-process sender.
//! Every client counts what it receives, so a post is only counted once it arrived.
//!
//! `cargo bench -p chatctl-e2e --bench fanout -- [--connections 1000] [--events 5] [--concurrency 32]`

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stdout
)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use chat_aws::ManagementSender;
use chat_core::domain::{Connection, ConnectionId, RoomName, UserName};
use chat_core::memory::{MemoryConnectionStore, MemoryMessageStore, RecordingTopic};
use chat_core::ports::{ConnectionSender, ConnectionStore, MonotonicUlids, RoomEvent, SystemClock};
use chat_core::protocol::ServerFrame;
use chat_core::{AuthConfig, ChatConfig, ChatService, Ports};
use futures_util::StreamExt;

/// A chat service whose connection store lists `ids` in one room, posting through `sender`.
async fn service(
    ids: &[String],
    sender: Arc<dyn ConnectionSender>,
    concurrency: usize,
) -> ChatService {
    let connections = Arc::new(MemoryConnectionStore::default());
    let room = RoomName::parse("bench").unwrap();
    for (i, id) in ids.iter().enumerate() {
        connections
            .put(&Connection {
                id: ConnectionId::new(id.clone()),
                user: UserName::parse(&format!("u{i}")).unwrap(),
                rooms: [room.clone()].into(),
                allowed_rooms: None,
                connected_at: 0,
                last_seen: 0,
                operator: false,
            })
            .await
            .unwrap();
    }
    let ports = Ports {
        messages: Arc::new(MemoryMessageStore::default()),
        connections,
        topic: Arc::new(RecordingTopic::default()),
        sender,
        clock: Arc::new(SystemClock),
        ids: Arc::new(MonotonicUlids::default()),
    };
    let config = ChatConfig {
        fanout_concurrency: concurrency,
        ..ChatConfig::default()
    };
    ChatService::new(
        ports,
        config,
        AuthConfig {
            key: None,
            allow_anonymous: false,
        },
    )
}

async fn measure(
    label: &str,
    chat: &ChatService,
    events: usize,
    received: &AtomicUsize,
    expected_per_event: usize,
) -> f64 {
    let room = RoomName::parse("bench").unwrap();
    let before = received.load(Ordering::Relaxed);
    let start = Instant::now();
    for i in 0..events {
        let report = chat
            .fanout(&RoomEvent::new(
                room.clone(),
                ServerFrame::Pong { ts: i as i64 },
            ))
            .await
            .unwrap();
        assert_eq!(report.delivered, expected_per_event, "{report:?}");
    }
    let target = before + events * expected_per_event;
    while received.load(Ordering::Relaxed) < target && start.elapsed() < Duration::from_secs(60) {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let elapsed = start.elapsed();
    let posts = events * expected_per_event;
    let rate = posts as f64 / elapsed.as_secs_f64();
    println!(
        "{label:>28}: {posts:>6} posts in {:>6.3}s = {rate:>8.0} posts/s ({:.1} ms per {expected_per_event}-connection event), all received: {}",
        elapsed.as_secs_f64(),
        elapsed.as_secs_f64() * 1000.0 / events as f64,
        received.load(Ordering::Relaxed) >= target
    );
    rate
}

fn main() {
    let n = chatctl_e2e::bench_arg("--connections", 1000);
    let events = chatctl_e2e::bench_arg("--events", 5);
    let concurrency = chatctl_e2e::bench_arg("--concurrency", 32);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let (server, _dir) = chatctl_e2e::start_wall_clock(|c| {
            c.limits.outbox_frames = 4096;
        })
        .await;
        let url = server.websocket_url();
        let received = Arc::new(AtomicUsize::new(0));
        let mut readers = vec![];
        for i in 0..n {
            let (ws, _) = tokio_tungstenite::connect_async(format!("{url}?room=bench&user=c{i}"))
                .await
                .expect("connect");
            let received = Arc::clone(&received);
            readers.push(tokio::spawn(async move {
                let (_tx, mut rx) = ws.split();
                while let Some(Ok(msg)) = rx.next().await {
                    if msg
                        .to_text()
                        .is_ok_and(|t| t.starts_with(r#"{"type":"pong""#))
                    {
                        received.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }));
        }
        let ids: Vec<String> = server
            .chat()
            .ports()
            .connections
            .all()
            .await
            .unwrap()
            .into_iter()
            .map(|c| c.id.to_string())
            .collect();
        assert_eq!(ids.len(), n);
        println!(
            "{n} connections open on {url}; {events} events each, fan-out concurrency {concurrency}"
        );

        let in_process = service(&ids, server.chat().ports().sender.clone(), concurrency).await;
        let baseline = measure(
            "in-process sender (baseline)",
            &in_process,
            events,
            &received,
            n,
        )
        .await;

        let sdk_config = aws_config::SdkConfig::builder()
            .behavior_version(aws_config::BehaviorVersion::latest())
            .region(aws_config::Region::new("us-east-1"))
            .credentials_provider(aws_sdk_dynamodb::config::SharedCredentialsProvider::new(
                aws_sdk_dynamodb::config::Credentials::new("bench", "bench", None, None, "bench"),
            ))
            .build();
        let http =
            ManagementSender::new(&sdk_config, &format!("{}/bench", server.management_url()));
        let over_http = service(&ids, Arc::new(http), concurrency).await;
        let rate = measure("Management API over HTTP", &over_http, events, &received, n).await;
        println!(
            "    ratio: HTTP Management API at {:.2}x the in-process sender's posts/s",
            rate / baseline
        );
        for r in readers {
            r.abort();
        }
        server.shutdown().await;
    });
}
