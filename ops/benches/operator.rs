//! `cargo bench -p chatctl-ops --bench operator [-- --connections 1000 --messages 20]`:
//!
//! 1. `tail` follow latency — a real client sends, the operator polls at the CLI's default
//!    interval (250 ms locally on SQLite, 1 s on DynamoDB in moto); latency is send → seen. The
//!    baseline in the same process is the send → ack round trip of the same client.
//! 2. `presence` and `connections gc --dry-run` over N connections: locally with N real sockets;
//!    on DynamoDB (moto) with N connections written to the table (no sockets: every probe then
//!    answers 410), the operator's AWS calls counted by the recording proxy.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chat_core::domain::{Connection, ConnectionId, MessageId, RoomName, UserName};
use chat_core::policy::ChatConfig;
use chat_core::ports::{ConnectionStore, SystemClock};
use chat_local::{LocalConfig, LocalServer, Stores};
use chatctl_e2e::moto::{Moto, fresh_stage};
use chatctl_e2e::proxy::AwsProxy;
use chatctl_e2e::{Client, bench_arg, enc};
use chatctl_ops::operator::{Operator, TailEvent};
use chatctl_ops::target::{self, AwsTarget};
use futures_util::StreamExt;

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// Send `count` messages at uneven gaps while a follower polls every `interval`; the send →
/// seen latencies and, as the baseline, the send → ack round trips.
async fn follow_latency(
    operator: Arc<Operator>,
    server: &LocalServer,
    interval: Duration,
    count: usize,
) -> (Vec<Duration>, Vec<Duration>) {
    let room = RoomName::parse("bench").unwrap();
    let seen: Arc<Mutex<HashMap<MessageId, Instant>>> = Arc::default();
    let (_, mut cursor) = operator.tail_start(&room, 1, None).await.unwrap();
    let follower = tokio::spawn({
        let seen = Arc::clone(&seen);
        let operator = Arc::clone(&operator);
        let room = room.clone();
        async move {
            loop {
                tokio::time::sleep(interval).await;
                for e in operator.tail_poll(&room, &mut cursor).await.unwrap() {
                    if let TailEvent::Message(m) = e {
                        seen.lock().unwrap().insert(m.id, Instant::now());
                    }
                }
            }
        }
    });
    let url = format!(
        "{}?room=bench&user={}",
        server.websocket_url(),
        enc("sender")
    );
    let mut client = Client::connect(&url).await.unwrap();
    let mut sent = Vec::new();
    let mut acks = Vec::new();
    for i in 0..count {
        // Gaps that do not divide the interval, so sends land at every phase of the poll.
        tokio::time::sleep(Duration::from_millis(97 + (i as u64 * 61) % 400)).await;
        let at = Instant::now();
        let ack = client.say("bench", &format!("m{i}")).await;
        acks.push(at.elapsed());
        sent.push((MessageId::parse(ack["id"].as_str().unwrap()).unwrap(), at));
    }
    tokio::time::sleep(interval * 3).await;
    follower.abort();
    let mut latencies: Vec<Duration> = {
        let seen = seen.lock().unwrap();
        sent.iter()
            .map(|(id, at)| {
                seen.get(id)
                    .expect("every message is seen")
                    .duration_since(*at)
            })
            .collect()
    };
    latencies.sort();
    acks.sort();
    client.close().await;
    (latencies, acks)
}

fn report_latency(label: &str, latencies: &[Duration], acks: &[Duration]) {
    println!(
        "tail follow, {label:<22} p50 {:>7.1} ms  p99 {:>7.1} ms  max {:>7.1} ms   (baseline send→ack p50 {:.1} ms; × {:.0})",
        ms(percentile(latencies, 0.5)),
        ms(percentile(latencies, 0.99)),
        ms(*latencies.last().unwrap()),
        ms(percentile(acks, 0.5)),
        ms(percentile(latencies, 0.5)) / ms(percentile(acks, 0.5)).max(0.001)
    );
}

fn calls_summary(proxy: &AwsProxy) -> String {
    let mut by: BTreeMap<String, usize> = BTreeMap::new();
    for c in proxy.take_calls() {
        *by.entry(c.operation).or_default() += 1;
    }
    let total: usize = by.values().sum();
    let parts: Vec<String> = by.iter().map(|(op, n)| format!("{op} {n}")).collect();
    format!("{total} AWS calls ({})", parts.join(", "))
}

fn main() {
    let n = bench_arg("--connections", 1000);
    let count = bench_arg("--messages", 20);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        // --- local: SQLite in the data directory, the gateway's Management API ---------------
        let (server, dir) = chatctl_e2e::start_wall_clock(|c| c.limits.outbox_frames = 4096).await;
        let local = Arc::new(target::local(dir.path(), ChatConfig::default()).unwrap());
        let (lat, acks) =
            follow_latency(Arc::clone(&local), &server, Duration::from_millis(250), count).await;
        report_latency("local (250 ms polls)", &lat, &acks);

        let url = server.websocket_url();
        let mut readers = Vec::new();
        for i in 0..n {
            let (ws, _) = tokio_tungstenite::connect_async(format!("{url}?room=big&user=c{i}"))
                .await
                .expect("connect");
            // Drain: every join is announced to the room.
            readers.push(tokio::spawn(async move {
                let (_tx, mut rx) = ws.split();
                while let Some(Ok(_)) = rx.next().await {}
            }));
        }
        let big = RoomName::parse("big").unwrap();
        let started = Instant::now();
        let presence = local.presence(&big).await.unwrap();
        println!(
            "presence, local, {n} sockets: {} members in {:.1} ms (one SQLite query)",
            presence.members.len(),
            ms(started.elapsed())
        );
        let gc = local.gc(true).await.unwrap();
        println!(
            "gc --dry-run, local, {} connections: {} probes (GetConnection over HTTP, 32 at a time) in {} ms, {} dead",
            gc.checked,
            gc.probed,
            gc.elapsed_ms,
            gc.dead.len()
        );
        for r in readers {
            r.abort();
        }
        server.shutdown().await;

        // --- DynamoDB and SNS on moto, counted through the proxy ------------------------------
        let moto = Moto::shared();
        let proxy = AwsProxy::start(&moto.endpoint);
        let direct = moto.sdk_config();
        let (tables, topic) = fresh_stage(&direct, "bench").await;
        let dynamo = aws_sdk_dynamodb::Client::new(&direct);
        let dir = tempfile::tempdir().unwrap();
        let mut config = LocalConfig::new(dir.path());
        config.bind = ([127, 0, 0, 1], 0).into();
        config.allow_anonymous = true;
        let server = LocalServer::start_with(
            config,
            Arc::new(SystemClock),
            Stores::Provided {
                messages: Arc::new(chat_aws::DynamoMessageStore::new(
                    dynamo.clone(),
                    &tables.messages,
                )),
                connections: Arc::new(chat_aws::DynamoConnectionStore::new(
                    dynamo.clone(),
                    &tables.connections,
                )),
            },
        )
        .await
        .unwrap();
        let aws = Arc::new(target::aws(
            &AwsTarget {
                config: proxy.sdk_config(),
                messages_table: tables.messages.clone(),
                connections_table: tables.connections.clone(),
                topic_arn: topic.clone(),
                management_endpoint: server.management_url(),
            },
            ChatConfig::default(),
        ));
        let (lat, acks) =
            follow_latency(Arc::clone(&aws), &server, Duration::from_secs(1), count).await;
        report_latency("DynamoDB on moto (1 s)", &lat, &acks);
        // That gateway sweeps its DynamoDB table for connections it holds no socket for; the
        // connections below have none. From here on a gateway on its own SQLite files only
        // answers the probes (410 for every one of them, as API Gateway would).
        server.shutdown().await;
        let (prober, _prober_dir) = chatctl_e2e::start_wall_clock(|_| {}).await;
        let aws = target::aws(
            &AwsTarget {
                config: proxy.sdk_config(),
                messages_table: tables.messages.clone(),
                connections_table: tables.connections.clone(),
                topic_arn: String::new(),
                management_endpoint: prober.management_url(),
            },
            ChatConfig::default(),
        );

        let store = chat_aws::DynamoConnectionStore::new(dynamo, &tables.connections);
        let now = chat_core::ports::Clock::now_ms(&SystemClock);
        // One at a time: moto's transactions fail (500) under concurrent writers.
        for i in 0..n {
            let c = Connection {
                id: ConnectionId::new(format!("conn{i:05}")),
                user: UserName::parse(&format!("c{i}")).unwrap(),
                rooms: [big.clone()].into(),
                allowed_rooms: None,
                connected_at: now,
                last_seen: now,
                operator: false,
            };
            store.put(&c).await.unwrap();
            store.join(&c.id, &big).await.unwrap();
        }
        proxy.take_calls();
        let started = Instant::now();
        let presence = aws.presence(&big).await.unwrap();
        println!(
            "presence, DynamoDB on moto, {n} connections: {} members in {:.1} ms, {}",
            presence.members.len(),
            ms(started.elapsed()),
            calls_summary(&proxy)
        );
        // No sockets behind these: every probe answers 410, so all are found dead (dry run).
        let gc = aws.gc(true).await.unwrap();
        println!(
            "gc --dry-run, DynamoDB on moto, {} connections: {} probes in {} ms, {} dead, {} probe errors, {}",
            gc.checked,
            gc.probed,
            gc.elapsed_ms,
            gc.dead.len(),
            gc.errors,
            calls_summary(&proxy)
        );
        prober.shutdown().await;
    });
}
