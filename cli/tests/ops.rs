//! The operator commands as a user runs them, against a running `chatctl dev` with two clients
//! chatting over real sockets: `tail` follows the room, `presence` shows both online, `recall`
//! turns a message into a tombstone on both clients and in `tail`; `send`, `kick`,
//! `connections gc` and their errors and exit codes.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{BufRead, BufReader};
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use chatctl_e2e::Client;
use chatctl_e2e::dev::Dev;
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_chatctl");

fn chatctl(data_dir: &std::path::Path, args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .arg("--data-dir")
        .arg(data_dir)
        .env_remove("CHATCTL_STAGE")
        .output()
        .unwrap()
}

fn json(out: &Output) -> Value {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// `chatctl tail` running in the background; its lines arrive on a channel.
struct Tail {
    child: std::process::Child,
    lines: mpsc::Receiver<String>,
}

impl Tail {
    fn start(data_dir: &std::path::Path, extra: &[&str]) -> Tail {
        let mut child = Command::new(BIN)
            .args(["tail", "lobby", "--data-dir"])
            .arg(data_dir)
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in stdout.lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Tail { child, lines }
    }

    fn next(&self) -> String {
        self.lines
            .recv_timeout(Duration::from_secs(10))
            .expect("tail printed nothing within 10 s")
    }
}

impl Drop for Tail {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn tail_presence_and_recall_while_two_clients_chat() {
    let dir = tempfile::tempdir().unwrap();
    let dev = Dev::start(BIN, dir.path(), &["--allow-anonymous"]);
    let data = dir.path();
    let mut ann = Client::connect(&dev.ws("room=lobby&user=ann"))
        .await
        .unwrap();
    let mut bob = Client::connect(&dev.ws("room=lobby&user=bob"))
        .await
        .unwrap();
    let first = ann.say("lobby", "hello bob").await;
    bob.recv_type("message").await.unwrap();

    // `tail` shows what was said, then follows: each new message appears as it is sent.
    let text_tail = Tail::start(data, &[]);
    let json_tail = Tail::start(data, &["--output", "json"]);
    let line = text_tail.next();
    assert!(
        line.contains("ann")
            && line.contains("hello bob")
            && line.contains(first["id"].as_str().unwrap()),
        "{line}"
    );
    let shown: Value = serde_json::from_str(&json_tail.next()).unwrap();
    assert_eq!(shown["event"], "message");
    assert_eq!(shown["text"], "hello bob");
    let sent = Instant::now();
    let second = bob.say("lobby", "hi ann").await;
    let line = text_tail.next();
    let latency = sent.elapsed();
    assert!(line.contains("bob") && line.contains("hi ann"), "{line}");
    assert!(
        latency < Duration::from_secs(2),
        "follow latency {latency:?}"
    );
    let shown: Value = serde_json::from_str(&json_tail.next()).unwrap();
    assert_eq!(shown["id"], second["id"]);

    // `presence`: both online.
    let presence = json(&chatctl(data, &["presence", "lobby", "--output", "json"]));
    let members: Vec<(&str, &str)> = presence["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| (m["user"].as_str().unwrap(), m["state"].as_str().unwrap()))
        .collect();
    assert_eq!(members, [("ann", "online"), ("bob", "online")]);
    let text = chatctl(data, &["presence", "lobby"]);
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(text.contains("room lobby: 2 members"), "{text}");

    // `recall`: a tombstone on both clients and in tail, the operator and reason recorded.
    let id = first["id"].as_str().unwrap();
    let out = chatctl(
        data,
        &["recall", id, "--reason", "off topic", "--as", "mod"],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for client in [&mut ann, &mut bob] {
        let recalled = client.recv_type("recalled").await.unwrap();
        assert_eq!(recalled["id"], first["id"]);
        assert_eq!(recalled["by"], "mod");
    }
    let line = text_tail.next();
    assert!(
        line.contains(&format!("message {id} recalled by operator mod: off topic")),
        "{line}"
    );
    let shown: Value = serde_json::from_str(&json_tail.next()).unwrap();
    assert_eq!(shown["event"], "recalled");
    assert_eq!(shown["reason"], "off topic");
    let history = json(&chatctl(
        data,
        &["recall", id, "--show", "--output", "json"],
    ));
    assert_eq!(history["recalled"], false);
    assert_eq!(history["versions"].as_array().unwrap().len(), 2);
    assert_eq!(history["versions"][1]["recall"]["operator"], true);

    // Distinct exit codes: already recalled 5, unknown 4, not an id 2.
    let again = chatctl(data, &["recall", id]);
    assert_eq!(again.status.code(), Some(5));
    assert!(String::from_utf8_lossy(&again.stderr).contains("already recalled by mod"));
    let unknown = chatctl(data, &["recall", "01ARZ3NDEKTSV4RRFFQ69G5FAV"]);
    assert_eq!(unknown.status.code(), Some(4));
    assert!(
        String::from_utf8_lossy(&unknown.stderr).contains("no message 01ARZ3NDEKTSV4RRFFQ69G5FAV")
    );
    let bad = chatctl(data, &["recall", "not-an-id"]);
    assert_eq!(bad.status.code(), Some(2));

    // `send`: an announcement reaches both and shows in tail.
    let out = json(&chatctl(
        data,
        &["send", "lobby", "maintenance at noon", "--output", "json"],
    ));
    assert_eq!(out["user"], "operator");
    for client in [&mut ann, &mut bob] {
        let m = client
            .recv_matching("the announcement", |f: &Value| f["type"] == "message")
            .await
            .unwrap();
        assert_eq!(m["text"], "maintenance at noon");
    }
    assert!(text_tail.next().contains("maintenance at noon"));

    // `kick`: bob's socket closes; ann hears that he left.
    let presence = json(&chatctl(data, &["presence", "lobby", "--output", "json"]));
    let bob_connection = presence["members"][1]["connections"][0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let out = chatctl(data, &["kick", &bob_connection]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(bob.closed().await.unwrap().is_some());
    let left = ann
        .recv_matching("bob leaving", |f: &Value| {
            f["type"] == "presence" && f["state"] == "left"
        })
        .await
        .unwrap();
    assert_eq!(left["user"], "bob");
    assert_eq!(
        chatctl(data, &["kick", &bob_connection]).status.code(),
        Some(4)
    );

    // `connections gc --dry-run`: ann is alive, nothing to remove.
    let gc = json(&chatctl(
        data,
        &["connections", "gc", "--dry-run", "--output", "json"],
    ));
    assert_eq!(gc["checked"], 1);
    assert_eq!(gc["dead"].as_array().unwrap().len(), 0);

    ann.close().await;
    drop(text_tail);
    drop(json_tail);
    let (_, status) = tokio::task::spawn_blocking(move || dev.terminate())
        .await
        .unwrap();
    assert!(status.success());
    assert!(
        !data.join("server.json").exists(),
        "a stopped dev removes server.json"
    );

    // Stopped: history still reads from the files; acting on connections needs the gateway.
    let out = chatctl(data, &["tail", "lobby", "--no-follow"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("maintenance at noon"));
    let out = chatctl(data, &["connections", "gc"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("is not running"));
}

#[test]
fn operator_commands_without_local_data_say_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    for args in [
        &["tail", "lobby", "--no-follow"][..],
        &["presence", "lobby"],
        &["recall", "01ARZ3NDEKTSV4RRFFQ69G5FAV"],
    ] {
        let out = chatctl(dir.path(), args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
        assert!(stderr.contains("start `chatctl dev`"), "{args:?}: {stderr}");
    }
    let out = chatctl(dir.path(), &["tail", "no room!"]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn smoke_passes_against_a_running_dev_and_names_the_problem_when_there_is_none() {
    let dir = tempfile::tempdir().unwrap();
    let dev = Dev::start(BIN, dir.path(), &[]);
    let out = chatctl(dir.path(), &["smoke", "--output", "json"]);
    let report = json(&out);
    let steps = report["steps"].as_array().unwrap();
    assert_eq!(steps.len(), 8, "{report}");
    // The catch-up a reconnecting client does (`history after`) passes against dev.
    assert_eq!(
        steps[5]["name"], "bob catches up after alice's first message",
        "{report}"
    );
    assert!(
        report["url"]
            .as_str()
            .unwrap()
            .starts_with("ws://127.0.0.1:")
    );
    let text = chatctl(dir.path(), &["smoke"]);
    assert!(String::from_utf8_lossy(&text.stdout).contains("smoke passed in"));

    // `chatctl tail … | head -1`: once the reader is gone, tail stops instead of polling forever.
    let mut tail = Command::new(BIN)
        .args(["tail", "lobby", "--data-dir"])
        .arg(dir.path())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    drop(tail.stdout.take());
    let out = chatctl(dir.path(), &["send", "lobby", "anyone there?"]);
    assert!(out.status.success());
    let started = Instant::now();
    while tail.try_wait().unwrap().is_none() {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "tail kept running with nobody reading"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    drop(dev);
    let out = chatctl(dir.path(), &["smoke"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("no `chatctl dev` is running"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread")]
async fn presence_judges_members_by_the_running_backends_thresholds() {
    let dir = tempfile::tempdir().unwrap();
    let dev = Dev::start(
        BIN,
        dir.path(),
        &["--allow-anonymous", "--online-within", "1s"],
    );
    let ann = Client::connect(&dev.ws("room=lobby&user=ann"))
        .await
        .unwrap();
    let state = || {
        json(&chatctl(
            dir.path(),
            &["presence", "lobby", "--output", "json"],
        ))["members"][0]["state"]
            .clone()
    };
    assert_eq!(state(), "online");
    // Silent for longer than this backend's 1 s (the default would still say online for a minute).
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(state(), "idle");
    ann.close().await;
    drop(dev);
}

#[tokio::test(flavor = "multi_thread")]
async fn presence_of_a_big_room_shows_the_count_and_the_freshest_members() {
    let dir = tempfile::tempdir().unwrap();
    let dev = Dev::start(BIN, dir.path(), &["--allow-anonymous"]);
    // Connected one after the other, so each one's last-seen is later than the previous one's.
    let mut clients = Vec::new();
    for user in ["eve", "dan", "cat", "bea", "ada"] {
        clients.push(
            Client::connect(&dev.ws(&format!("room=lobby&user={user}")))
                .await
                .unwrap(),
        );
        tokio::time::sleep(Duration::from_millis(30)).await;
    }

    // Text: the whole room's count, the two most recently seen sorted by name, what was left out.
    let out = chatctl(dir.path(), &["presence", "lobby", "--limit", "2"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], "room lobby: 5 members", "{text}");
    let users: Vec<&str> = lines[2..4]
        .iter()
        .map(|l| l.split_whitespace().next().unwrap())
        .collect();
    assert_eq!(users, ["ada", "bea"], "{text}");
    assert_eq!(
        lines[4..],
        ["  … and 3 more (use --limit or --output json)"],
        "{text}"
    );
    // Under the default limit of 100 nothing is left out.
    let text = chatctl(dir.path(), &["presence", "lobby"]);
    let text = String::from_utf8_lossy(&text.stdout);
    assert_eq!(text.lines().count(), 2 + 5, "{text}");
    assert!(!text.contains("more"), "{text}");

    // JSON: every member unless --limit is given; `count` and `truncated` say what was cut.
    let all = json(&chatctl(
        dir.path(),
        &["presence", "lobby", "--output", "json"],
    ));
    assert_eq!(all["members"].as_array().unwrap().len(), 5, "{all}");
    assert_eq!(all["count"], 5);
    assert_eq!(all["truncated"], false);
    let cut = json(&chatctl(
        dir.path(),
        &["presence", "lobby", "--output", "json", "--limit", "3"],
    ));
    let users: Vec<&str> = cut["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["user"].as_str().unwrap())
        .collect();
    assert_eq!(users, ["ada", "bea", "cat"], "{cut}");
    assert_eq!(cut["count"], 5);
    assert_eq!(cut["truncated"], true);

    // A limit of nothing is a usage error, not an empty list.
    let out = chatctl(dir.path(), &["presence", "lobby", "--limit", "0"]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    for client in clients {
        client.close().await;
    }
    drop(dev);
}
