//! The `chatctl` binary as a user runs it: `dev` serving real sockets, surviving a `kill -9`,
//! stopping on SIGTERM; `token` opening a tokened `dev`; clear errors for bad flags.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::{Command, Output};
use std::time::Duration;

use chat_core::ports::ConnectionStore;
use chat_local::sqlite::SqliteConnectionStore;
use chatctl_e2e::Client;
use chatctl_e2e::dev::Dev;
use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_chatctl");

fn chatctl(args: &[&str]) -> Output {
    Command::new(BIN).args(args).output().expect("run chatctl")
}

#[tokio::test(flavor = "multi_thread")]
async fn dev_keeps_history_across_kill_9_and_clears_dead_connections() {
    let dir = tempfile::tempdir().unwrap();
    let dev = Dev::start(BIN, dir.path(), &["--allow-anonymous"]);
    assert!(
        dev.ready["pageUrl"]
            .as_str()
            .unwrap()
            .starts_with("http://127.0.0.1:")
    );
    let mut ann = Client::connect(&dev.ws("room=lobby&user=ann"))
        .await
        .unwrap();
    let mut bob = Client::connect(&dev.ws("room=lobby&user=bob"))
        .await
        .unwrap();
    let ack = ann.say("lobby", "before the crash").await;
    let seen = bob.recv_type("message").await.unwrap();
    assert_eq!(seen["id"], ack["id"]);

    let connections = SqliteConnectionStore::open(&dir.path().join("connections.db")).unwrap();
    assert_eq!(connections.all().await.unwrap().len(), 2);

    drop(dev); // SIGKILL: no $disconnect runs, the rows stay behind
    assert_eq!(connections.all().await.unwrap().len(), 2);

    let dev = Dev::start(BIN, dir.path(), &["--allow-anonymous"]);
    assert!(
        connections.all().await.unwrap().is_empty(),
        "a restart clears the dead process's connections"
    );
    let mut cy = Client::connect(&dev.ws("room=lobby&user=cy"))
        .await
        .unwrap();
    cy.send(json!({"action":"history","room":"lobby"})).await;
    let history = cy.recv_type("history").await.unwrap();
    assert_eq!(history["messages"][0]["text"], "before the crash");
    assert_eq!(history["messages"][0]["id"], ack["id"]);

    let (stopped, status) = tokio::task::spawn_blocking(move || dev.terminate())
        .await
        .unwrap();
    assert_eq!(stopped["event"], "stopped");
    assert!(status.success(), "{status:?}");
    // A clean stop runs $disconnect for every socket.
    assert!(connections.all().await.unwrap().is_empty());
    let _ = tokio::time::timeout(Duration::from_secs(2), cy.closed()).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_token_from_chatctl_token_opens_a_tokened_dev() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_str().unwrap();
    let dev = Dev::start(BIN, dir.path(), &[]);
    let out = chatctl(&[
        "token",
        "--user",
        "ann",
        "--room",
        "lobby",
        "--ttl",
        "10m",
        "--data-dir",
        data,
        "--output",
        "json",
    ]);
    assert!(out.status.success(), "{out:?}");
    let minted: Value = serde_json::from_slice(&out.stdout).unwrap();
    let token = minted["token"].as_str().unwrap();

    let mut ann = Client::connect(&dev.ws(&format!("room=lobby&token={token}")))
        .await
        .unwrap();
    ann.say("lobby", "with a token").await;
    let refused = Client::try_connect(&dev.ws(&format!("room=other&token={token}")))
        .await
        .unwrap()
        .expect_err("the token is for lobby only");
    assert_eq!(refused.status, 403);
    let refused = Client::try_connect(&dev.ws("room=lobby&user=ann"))
        .await
        .unwrap()
        .expect_err("no anonymous");
    assert_eq!(refused.status, 401);

    // Text output is the token alone, for `TOKEN=$(chatctl token …)`.
    let out = chatctl(&["token", "--user", "bob", "--data-dir", data]);
    let text = String::from_utf8(out.stdout).unwrap();
    assert_eq!(text.lines().count(), 1);
    assert!(text.starts_with("v1."));
    Client::connect(&dev.ws(&format!("room=anything&token={}", text.trim())))
        .await
        .unwrap();
}

#[test]
fn token_json_output_is_stable() {
    let dir = tempfile::tempdir().unwrap();
    let out = chatctl(&[
        "token",
        "--user",
        "ann",
        "--room",
        "lobby",
        "--room",
        "side",
        "--operator",
        "--data-dir",
        dir.path().to_str().unwrap(),
        "--output",
        "json",
    ]);
    assert!(out.status.success());
    let value: Value = serde_json::from_slice(&out.stdout).unwrap();
    // Keys sorted: whether serde_json keeps insertion order depends on which crates a build
    // unifies features with (the whole workspace turns `preserve_order` on).
    let value: std::collections::BTreeMap<String, Value> = serde_json::from_value(value).unwrap();
    insta::with_settings!({filters => vec![(r#""v1\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+""#, r#""[token]""#), (r#""expiresAt":\s*\d+"#, r#""expiresAt": "[time]""#)]}, {
        insta::assert_snapshot!(serde_json::to_string_pretty(&value).unwrap());
    });
}

#[test]
fn bad_input_gets_a_clear_error_and_an_exit_code() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_str().unwrap();
    let cases: [(&[&str], i32, &str); 9] = [
        (
            &["token", "--user", "", "--data-dir", data],
            2,
            "--user \"\": user name must be 1-64 characters",
        ),
        (
            &[
                "token",
                "--user",
                "ann",
                "--room",
                "no spaces",
                "--data-dir",
                data,
            ],
            2,
            "--room \"no spaces\": room name may only contain",
        ),
        (
            &["token", "--user", "ann", "--ttl", "10", "--data-dir", data],
            2,
            "like 90s",
        ),
        (
            &["dev", "--recall-window", "soon", "--data-dir", data],
            2,
            "like 90s",
        ),
        (
            &["dev", "--online-within", "10m", "--data-dir", data],
            2,
            "--online-within (10m) must be shorter than --idle-within (5m)",
        ),
        (
            &["dev", "--data-dir", "/proc/forbidden/dir"],
            1,
            "pass a writable --data-dir",
        ),
        (
            &["dev", "--max-text", "0", "--data-dir", data],
            2,
            "--max-text must be from 1 to --max-frame",
        ),
        (
            &["dev", "--max-frame", "200000", "--data-dir", data],
            2,
            "--max-frame (200000) may not exceed --max-message",
        ),
        (
            &["dev", "--rate-per-second", "0", "--data-dir", data],
            2,
            "--rate-per-second must be above 0",
        ),
    ];
    for (args, code, needle) in cases {
        let out = chatctl(args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(code), "{args:?}: {stderr}");
        assert!(stderr.contains(needle), "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
}

#[test]
fn a_taken_port_is_an_error_that_names_the_flag() {
    let dir = tempfile::tempdir().unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    let out = chatctl(&[
        "dev",
        "--port",
        &port,
        "--data-dir",
        dir.path().to_str().unwrap(),
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("another program uses this port; pass another --port"),
        "{stderr}"
    );
}

#[test]
fn help_names_every_command() {
    let out = Command::new(BIN)
        .arg("--help")
        .env("COLUMNS", "100")
        .output()
        .unwrap();
    insta::assert_snapshot!(String::from_utf8_lossy(&out.stdout));
}

/// `chatctl dev --store dynamodb` against moto: the whole chat over real sockets, with every
/// message and connection in DynamoDB, checked from outside through another client.
#[tokio::test(flavor = "multi_thread")]
async fn dev_on_dynamodb_chats_over_real_sockets() {
    let moto = chatctl_e2e::moto::Moto::shared();
    let prefix = chatctl_e2e::moto::unique("dev");
    let dir = tempfile::tempdir().unwrap();
    let dev = Dev::start_env(
        BIN,
        dir.path(),
        &[
            "--allow-anonymous",
            "--store",
            "dynamodb",
            "--aws-endpoint",
            &moto.endpoint,
            "--aws-region",
            "us-east-1",
            "--table-prefix",
            &prefix,
        ],
        &[
            ("AWS_ACCESS_KEY_ID", "testing"),
            ("AWS_SECRET_ACCESS_KEY", "testing"),
        ],
    );
    assert_eq!(dev.ready["store"], "dynamodb");
    let mut ann = Client::connect(&dev.ws("room=lobby&user=ann"))
        .await
        .unwrap();
    let mut bob = Client::connect(&dev.ws("room=lobby&user=bob"))
        .await
        .unwrap();
    ann.recv_matching("bob joined", |f| {
        f["type"] == "presence" && f["user"] == "bob"
    })
    .await
    .unwrap();
    let kept = ann.say("lobby", "stored in DynamoDB").await;
    let gone = ann.say("lobby", "recall me").await;
    bob.recv_matching("recall me", |f| f["text"] == "recall me")
        .await
        .unwrap();
    ann.send(json!({"action":"recall","id":gone["id"]})).await;
    bob.recv_type("recalled").await.unwrap();
    bob.send(json!({"action":"presence","room":"lobby"})).await;
    assert_eq!(
        bob.recv_type("members").await.unwrap()["members"]
            .as_array()
            .unwrap()
            .len(),
        2
    );

    // From outside: the items are in moto's DynamoDB.
    let db = aws_sdk_dynamodb::Client::new(&moto.sdk_config());
    let items = db
        .query()
        .table_name(format!("{prefix}-messages"))
        .key_condition_expression("pk = :pk")
        .expression_attribute_values(
            ":pk",
            aws_sdk_dynamodb::types::AttributeValue::S("ROOM#lobby".into()),
        )
        .send()
        .await
        .unwrap()
        .items
        .unwrap();
    let texts: Vec<Option<String>> = items
        .iter()
        .map(|i| i.get("text").and_then(|t| t.as_s().ok()).cloned())
        .collect();
    assert_eq!(texts, [Some("stored in DynamoDB".to_owned()), None]);
    assert_eq!(items[0]["id"].as_s().unwrap(), kept["id"].as_str().unwrap());
    let connections = db
        .query()
        .table_name(format!("{prefix}-connections"))
        .key_condition_expression("pk = :pk")
        .expression_attribute_values(
            ":pk",
            aws_sdk_dynamodb::types::AttributeValue::S("ROOM#lobby".into()),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(connections.count, 2);

    bob.close().await;
    ann.recv_matching("bob left", |f| {
        f["type"] == "presence" && f["state"] == "left"
    })
    .await
    .unwrap();
    let (_, status) = tokio::task::spawn_blocking(move || dev.terminate())
        .await
        .unwrap();
    assert!(status.success());
}

#[test]
fn a_second_dev_on_the_same_data_dir_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let _first = Dev::start(BIN, dir.path(), &[]);
    let out = chatctl(&[
        "dev",
        "--port",
        "0",
        "--data-dir",
        dir.path().to_str().unwrap(),
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("another chatctl dev is using the data directory"),
        "{stderr}"
    );
}
