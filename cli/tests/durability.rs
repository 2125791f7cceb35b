//! Durable sends under `kill -9`: 20 clients send to `chatctl dev` as fast as their acks return,
//! the process is SIGKILLed mid-load, and after a restart on the same data directory every
//! acknowledged message is in the history. Group commit batches appends into shared
//! transactions; this checks the ack still comes only after the batch is on disk.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chatctl_e2e::Client;
use chatctl_e2e::dev::Dev;
use serde_json::json;

const BIN: &str = env!("CARGO_BIN_EXE_chatctl");
const CLIENTS: usize = 20;
const UNLIMITED: [&str; 5] = [
    "--allow-anonymous",
    "--rate-per-second",
    "100000",
    "--rate-burst",
    "100000",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_acked_message_survives_kill_9_under_load() {
    let dir = tempfile::tempdir().unwrap();
    let dev = Dev::start(BIN, dir.path(), &UNLIMITED);

    // (room, id) of every ack a client received.
    let acked: Arc<Mutex<Vec<(String, String)>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let mut senders = Vec::new();
    for i in 0..CLIENTS {
        // One room per client: the load is on the store, not on fan-out.
        let room = format!("r{i}");
        let mut client = Client::connect(&dev.ws(&format!("room={room}&user=u{i}")))
            .await
            .unwrap();
        let (acked, stop) = (Arc::clone(&acked), Arc::clone(&stop));
        senders.push(tokio::spawn(async move {
            let mut n = 0u64;
            while !stop.load(Ordering::SeqCst) {
                client
                    .send(json!({"action":"send","room":room,"text":format!("m{n}")}))
                    .await;
                // After the kill the socket closes and this errs: that send was never acked.
                let Ok(ack) = client.recv_type("ack").await else {
                    return;
                };
                let id = ack["id"].as_str().expect("ack carries the id").to_owned();
                acked.lock().unwrap().push((room.clone(), id));
                n += 1;
            }
            // Still waiting for the last ack when the process died: also fine, it was not acked.
            let _ = client.recv_type("ack").await;
        }));
    }

    tokio::time::sleep(Duration::from_secs(1)).await;
    let before_kill = acked.lock().unwrap().len();
    // SIGKILL (Dev's drop) while every client has a send in flight.
    drop(dev);
    stop.store(true, Ordering::SeqCst);
    for s in senders {
        // A sender that raced the kill and wrote into the dead socket panics; its acks are
        // already recorded.
        let _ = s.await;
    }
    let acked = acked.lock().unwrap().clone();
    assert!(
        before_kill >= 100,
        "only {before_kill} acks in 1 s of load: the test did not load the store"
    );

    let dev = Dev::start(BIN, dir.path(), &UNLIMITED);
    let mut stored = BTreeSet::new();
    for i in 0..CLIENTS {
        let room = format!("r{i}");
        let mut reader = Client::connect(&dev.ws(&format!("room={room}&user=reader")))
            .await
            .unwrap();
        let mut after = "00000000000000000000000000".to_owned();
        loop {
            reader
                .send(json!({"action":"history","room":room,"after":after,"limit":100}))
                .await;
            let page = reader.recv_type("history").await.unwrap();
            let messages = page["messages"].as_array().unwrap();
            for m in messages {
                stored.insert((room.clone(), m["id"].as_str().unwrap().to_owned()));
            }
            match messages.last() {
                Some(last) if page["more"] == true => {
                    after = last["id"].as_str().unwrap().to_owned();
                }
                _ => break,
            }
        }
    }
    let lost: Vec<_> = acked.iter().filter(|a| !stored.contains(*a)).collect();
    assert!(
        lost.is_empty(),
        "{} of {} acked messages lost across kill -9, e.g. {:?}",
        lost.len(),
        acked.len(),
        lost.first()
    );
    eprintln!(
        "kill -9 under load: {} acked, {} stored, 0 lost",
        acked.len(),
        stored.len()
    );
}
