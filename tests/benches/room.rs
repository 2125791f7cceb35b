//! Load on one room of the local backend: N clients on real sockets each send M messages; every
//! client receives every message. Prints accepted messages/s, delivered frames/s and
//! send→receive latency (p50/p99) for a 2-client baseline, for N clients as fast as their acks
//! return (saturated, closed loop), and for N clients each sending at a steady pace — all in the
//! same process, with ratios against the baseline.
//!
//! `cargo bench -p chatctl-e2e --bench room -- [--clients 100] [--messages 20] [--pace-ms 500]`

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stdout
)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use chat_core::policy::RateLimit;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

#[derive(Debug)]
struct Figures {
    clients: usize,
    sent: usize,
    delivered: usize,
    elapsed: Duration,
    latencies_us: Vec<u64>,
}

impl Figures {
    fn rate(&self, n: usize) -> f64 {
        n as f64 / self.elapsed.as_secs_f64()
    }

    fn pct(&self, p: f64) -> f64 {
        if self.latencies_us.is_empty() {
            return f64::NAN;
        }
        let i = ((self.latencies_us.len() - 1) as f64 * p).round() as usize;
        self.latencies_us[i] as f64 / 1000.0
    }

    fn print(&self, label: &str) {
        println!(
            "{label:>9}: {:>3} clients  {:>6} msgs in {:>6.2}s  {:>8.0} msgs/s accepted  {:>9.0} frames/s delivered  latency p50 {:>7.2} ms  p99 {:>7.2} ms",
            self.clients,
            self.sent,
            self.elapsed.as_secs_f64(),
            self.rate(self.sent),
            self.rate(self.delivered),
            self.pct(0.5),
            self.pct(0.99),
        );
    }
}

/// `pace`: `None` sends the next message when the previous one is acked; `Some(d)` sends one
/// every `d` (and still waits for the ack, so a slow server slows the pace rather than queueing).
async fn run(clients: usize, messages: usize, pace: Option<Duration>) -> Figures {
    let (server, _dir) = chatctl_e2e::start_wall_clock(|c| {
        // The bench measures the backend, not the per-connection flood guard.
        c.chat.rate_limit = RateLimit {
            per_second: 1e9,
            burst: 1e9,
        };
    })
    .await;
    let url = server.websocket_url();
    let epoch = Instant::now();
    let expected = clients * messages;
    let delivered = Arc::new(AtomicUsize::new(0));

    let mut sockets = Vec::with_capacity(clients);
    for i in 0..clients {
        let (ws, _) = tokio_tungstenite::connect_async(format!("{url}?room=bench&user=u{i}"))
            .await
            .expect("connect");
        sockets.push(ws);
    }
    // Let the joins' presence frames settle before timing.
    tokio::time::sleep(Duration::from_millis(300)).await;

    let start = Instant::now();
    let mut tasks = Vec::with_capacity(clients);
    for (i, ws) in sockets.into_iter().enumerate() {
        let delivered = Arc::clone(&delivered);
        // Paced clients start spread over one interval, so the offered load is even, not bursts.
        let offset = pace.map_or(Duration::ZERO, |p| p * i as u32 / clients as u32);
        tasks.push(tokio::spawn(async move {
            let (mut tx, mut rx) = ws.split();
            let (ack_tx, mut ack_rx) = tokio::sync::mpsc::unbounded_channel::<()>();
            let reader = tokio::spawn(async move {
                let mut latencies = Vec::with_capacity(expected);
                let mut seen = 0;
                while seen < expected {
                    let Ok(Some(Ok(msg))) =
                        tokio::time::timeout(Duration::from_secs(30), rx.next()).await
                    else {
                        break;
                    };
                    let Message::Text(text) = msg else { continue };
                    let frame: Value = serde_json::from_str(&text).unwrap();
                    match frame["type"].as_str() {
                        Some("ack") => {
                            let _ = ack_tx.send(());
                        }
                        Some("message") => {
                            seen += 1;
                            delivered.fetch_add(1, Ordering::Relaxed);
                            let sent_us: u64 = frame["text"].as_str().unwrap().parse().unwrap();
                            let now_us = epoch.elapsed().as_micros() as u64;
                            latencies.push(now_us.saturating_sub(sent_us));
                        }
                        _ => {}
                    }
                }
                latencies
            });
            tokio::time::sleep(offset).await;
            let mut ticks = pace.map(tokio::time::interval);
            for _ in 0..messages {
                if let Some(ticks) = ticks.as_mut() {
                    ticks.tick().await;
                }
                let stamp = epoch.elapsed().as_micros().to_string();
                tx.send(Message::text(
                    json!({"action":"send","room":"bench","text":stamp}).to_string(),
                ))
                .await
                .unwrap();
                if ack_rx.recv().await.is_none() {
                    break;
                }
            }
            let latencies = reader.await.unwrap();
            let _ = tx.close().await;
            latencies
        }));
    }
    let mut latencies_us = Vec::with_capacity(expected * clients);
    for t in tasks {
        latencies_us.extend(t.await.unwrap());
    }
    let elapsed = start.elapsed();
    latencies_us.sort_unstable();
    server.shutdown().await;
    Figures {
        clients,
        sent: expected,
        delivered: delivered.load(Ordering::Relaxed),
        elapsed,
        latencies_us,
    }
}

fn main() {
    let clients = chatctl_e2e::bench_arg("--clients", 100);
    let messages = chatctl_e2e::bench_arg("--messages", 20);
    let pace = Duration::from_millis(chatctl_e2e::bench_arg("--pace-ms", 500) as u64);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let baseline = run(2, messages * 10, None).await;
        baseline.print("baseline");
        let saturated = run(clients, messages, None).await;
        saturated.print("saturated");
        let paced = run(clients, messages, Some(pace)).await;
        paced.print(&format!("{}ms pace", pace.as_millis()));
        for (label, load) in [("saturated", &saturated), ("paced", &paced)] {
            println!(
                "    {label}: {:.1}x the baseline's delivered frames/s, {:.1}x its p50 latency; every client got every message: {}",
                load.rate(load.delivered) / baseline.rate(baseline.delivered),
                load.pct(0.5) / baseline.pct(0.5),
                load.delivered == load.sent * load.clients
            );
        }
    });
}
