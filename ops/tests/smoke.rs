//! `smoke` over real sockets: against a local backend with a token secret (passes, and leaves
//! the second message recalled), with a token from another secret (refused at step 1 with 403),
//! against a server that never answers (times out at step 1 in about the timeout), against a
//! closed port and over `wss://` (connection errors, not panics), against a scripted server
//! that acks but never broadcasts (fails at step 4, naming the message it waited for), and against
//! one that predates `history after` (fails at step 6, naming the page it wanted and what came).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use chat_core::domain::UserName;
use chat_core::token::{Claims, TokenKey};
use chat_local::LocalServer;
use chatctl_e2e::Client;
use chatctl_ops::smoke::{Failure, SmokeError, SmokeOptions, SmokeTarget, Step, Token, smoke};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

fn now_s() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

fn token(key: &TokenKey, user: &str) -> Token {
    let claims = Claims {
        sub: UserName::parse(user).unwrap(),
        exp: now_s() + 600,
        iat: now_s(),
        rooms: None,
        op: false,
    };
    Token::new(user, key.mint(&claims))
}

/// A local backend that requires tokens, on the wall clock (token expiry and the recall window
/// are checked against it), and the key its tokens are minted with.
async fn backend() -> (LocalServer, tempfile::TempDir, TokenKey) {
    let (server, dir) = chatctl_e2e::start_wall_clock(|c| c.allow_anonymous = false).await;
    let key = chat_local::secret::load_or_create(dir.path()).unwrap();
    (server, dir, key)
}

fn options(timeout: Duration) -> SmokeOptions {
    SmokeOptions {
        room: SmokeOptions::fresh_room(),
        timeout,
    }
}

fn failure_at(err: &SmokeError, step: Step) -> &Failure {
    match err {
        SmokeError::Step { step: s, failure } if *s == step => failure,
        other => panic!("expected a failure at {step:?}, got {other:?}"),
    }
}

#[tokio::test]
async fn passes_against_a_local_backend() {
    let (server, _dir, key) = backend().await;
    let target = SmokeTarget {
        url: server.websocket_url(),
        alice: token(&key, "smoke-alice"),
        bob: token(&key, "smoke-bob"),
    };
    let options = options(SmokeOptions::DEFAULT_TIMEOUT);
    let report = smoke(&target, &options)
        .await
        .unwrap_or_else(|e| panic!("{e}"));

    assert_eq!(report.url, server.websocket_url());
    assert_eq!(report.room, options.room);
    let steps: Vec<(u8, &str)> = report.steps.iter().map(|s| (s.number, s.name)).collect();
    let expected: Vec<(u8, &str)> = Step::ALL.iter().map(|s| (s.number(), s.name())).collect();
    assert_eq!(steps, expected);
    assert_eq!(steps.len(), 8);
    let sum: u64 = report.steps.iter().map(|s| s.ms).sum();
    assert!(report.total_ms >= sum, "{report:?}");

    let shown = report.to_string();
    assert_eq!(shown.lines().count(), 9, "{shown}");
    assert!(
        shown.ends_with(&format!("smoke passed in {} ms", report.total_ms)),
        "{shown}"
    );
    // Aligned: every step line ends its name column at the same place.
    let columns: Vec<usize> = shown
        .lines()
        .take(8)
        .map(|l| l.rfind(" ms").unwrap())
        .collect();
    assert!(columns.windows(2).all(|w| w[0] == w[1]), "{shown}");

    // Tokens appear nowhere smoke's caller might print.
    let json = serde_json::to_string(&report).unwrap();
    assert!(json.contains("\"totalMs\""), "{json}");
    for printed in [json, shown, format!("{report:?}"), format!("{target:?}")] {
        assert!(!printed.contains(&target.alice.token), "{printed}");
        assert!(!printed.contains(&target.bob.token), "{printed}");
    }

    // What smoke left behind: both messages, the second one recalled by alice.
    let url = format!(
        "{}?room={}&token={}",
        server.websocket_url(),
        options.room,
        token(&key, "checker").token
    );
    let mut checker = Client::connect(&url).await.unwrap();
    checker
        .send(json!({"action":"history","room":options.room}))
        .await;
    let history = checker.recv_type("history").await.unwrap();
    let messages = history["messages"].as_array().unwrap();
    assert_eq!(messages.len(), 2, "{history}");
    assert_eq!(messages[0]["text"], "smoke 1");
    assert_eq!(messages[0]["user"], "smoke-alice");
    assert_eq!(messages[1]["recalled"], true);
    assert_eq!(messages[1]["recalledBy"], "smoke-alice");
    checker.close().await;
    server.shutdown().await;
}

#[tokio::test]
async fn a_token_from_another_secret_is_refused_at_step_1_with_403() {
    let (server, _dir, key) = backend().await;
    let other = TokenKey::new(b"not-this-stage's-secret-at-all".to_vec()).unwrap();
    let target = SmokeTarget {
        url: server.websocket_url(),
        alice: token(&other, "smoke-alice"),
        bob: token(&key, "smoke-bob"),
    };
    let err = smoke(&target, &options(Duration::from_secs(5)))
        .await
        .unwrap_err();
    assert_eq!(err.step(), Some(Step::Connect));
    let failure = failure_at(&err, Step::Connect);
    assert!(
        matches!(
            failure,
            Failure::Refused {
                who: "alice",
                status: 403,
                ..
            }
        ),
        "{failure:?}"
    );
    let message = err.to_string();
    assert!(
        message.starts_with("step 1 (connect alice and bob): "),
        "{message}"
    );
    assert!(message.contains("HTTP 403 Forbidden"), "{message}");
    assert!(message.contains("signature"), "{message}");
    assert!(message.contains("secret"), "{message}");
    assert!(!message.contains(&target.alice.token), "{message}");
    server.shutdown().await;
}

#[tokio::test]
async fn a_server_that_never_answers_times_out_at_step_1() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    // Accept, keep every socket open, say nothing.
    let silent = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    let key = TokenKey::new(b"any-secret-will-do-here".to_vec()).unwrap();
    let target = SmokeTarget {
        url: format!("ws://{addr}/"),
        alice: token(&key, "smoke-alice"),
        bob: token(&key, "smoke-bob"),
    };
    let started = Instant::now();
    let err = smoke(&target, &options(Duration::from_secs(1)))
        .await
        .unwrap_err();
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(950) && took < Duration::from_secs(3),
        "{took:?}"
    );
    assert!(
        matches!(
            failure_at(&err, Step::Connect),
            Failure::Timeout { after, .. } if *after == Duration::from_secs(1)
        ),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        format!(
            "step 1 (connect alice and bob): expected alice's WebSocket upgrade at ws://{addr}/, \
             got nothing within 1s"
        )
    );
    silent.abort();
}

#[tokio::test]
async fn an_unreachable_port_is_a_connection_error_at_step_1() {
    // A port that was just free: nothing listens on it now.
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let key = TokenKey::new(b"any-secret-will-do-here".to_vec()).unwrap();
    for url in [format!("ws://{addr}/"), format!("wss://{addr}/prod")] {
        let target = SmokeTarget {
            url: url.clone(),
            alice: token(&key, "smoke-alice"),
            bob: token(&key, "smoke-bob"),
        };
        let err = smoke(&target, &options(Duration::from_secs(5)))
            .await
            .unwrap_err();
        assert!(
            matches!(
                failure_at(&err, Step::Connect),
                Failure::Connect { who: "alice", url: u, .. } if *u == url
            ),
            "{err:?}"
        );
        let message = err.to_string();
        assert!(message.contains("connection error"), "{message}");
        assert!(message.to_lowercase().contains("refused"), "{message}");
    }
}

#[tokio::test]
async fn wss_speaks_tls_and_fails_clearly_against_a_plain_server() {
    let (server, _dir, key) = backend().await;
    let target = SmokeTarget {
        url: format!("wss://{}/", server.local_addr()),
        alice: token(&key, "smoke-alice"),
        bob: token(&key, "smoke-bob"),
    };
    let err = smoke(&target, &options(Duration::from_secs(5)))
        .await
        .unwrap_err();
    // The TLS client was built and tried a handshake, which a plain HTTP server cannot answer.
    assert!(
        matches!(
            failure_at(&err, Step::Connect),
            Failure::Connect { who: "alice", .. }
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("TLS handshake failed"), "{err}");
    server.shutdown().await;
}

/// A WebSocket server that plays the protocol only as far as the direct answers: `members` for
/// `join` and `ack` for `send`. It never broadcasts, as a stage with a broken fan-out would.
async fn server_without_fanout() -> (std::net::SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            tokio::spawn(async move {
                let Ok(mut ws) = tokio_tungstenite::accept_async(tcp).await else {
                    return;
                };
                while let Some(Ok(Message::Text(text))) = ws.next().await {
                    let frame: Value = serde_json::from_str(&text).unwrap();
                    let answer = match frame["action"].as_str() {
                        Some("join") => json!({"type":"members","room":frame["room"],"members":[
                            {"user":"smoke-alice","state":"online","lastSeen":1},
                            {"user":"smoke-bob","state":"online","lastSeen":1},
                        ]}),
                        Some("send") => json!({"type":"ack","clientMsgId":frame["clientMsgId"],
                            "id":ulid::Ulid::generate().to_string(),"ts":1}),
                        _ => continue,
                    };
                    if ws.send(Message::text(answer.to_string())).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (addr, task)
}

#[tokio::test]
async fn a_stage_that_acks_but_never_broadcasts_fails_at_step_4() {
    let (addr, server) = server_without_fanout().await;
    let key = TokenKey::new(b"any-secret-will-do-here".to_vec()).unwrap();
    let target = SmokeTarget {
        url: format!("ws://{addr}/"),
        alice: token(&key, "smoke-alice"),
        bob: token(&key, "smoke-bob"),
    };
    let err = smoke(&target, &options(Duration::from_secs(1)))
        .await
        .unwrap_err();
    assert_eq!(err.step(), Some(Step::Receive), "{err}");
    let message = err.to_string();
    let id = message
        .strip_prefix("step 4 (bob receives alice's messages): expected message ")
        .and_then(|rest| rest.strip_suffix(" \"smoke 1\", got nothing within 1s"))
        .unwrap_or_else(|| panic!("{message}"));
    assert_eq!(id.len(), 26, "{message}");
    server.abort();
}

#[tokio::test]
async fn bad_urls_and_rooms_are_refused_before_connecting() {
    let key = TokenKey::new(b"any-secret-will-do-here".to_vec()).unwrap();
    let target = |url: &str| SmokeTarget {
        url: url.into(),
        alice: token(&key, "smoke-alice"),
        bob: token(&key, "smoke-bob"),
    };
    let opts = options(Duration::from_secs(1));
    for url in [
        "http://127.0.0.1:8080/",
        "not a url",
        "ws://127.0.0.1:8080/?room=x&token=v1.secret.sig",
    ] {
        let err = smoke(&target(url), &opts).await.unwrap_err();
        assert!(matches!(err, SmokeError::Url { .. }), "{err:?}");
        assert_eq!(err.step(), None);
        assert!(!err.to_string().contains("v1.secret"), "{err}");
    }
    let bad_room = SmokeOptions {
        room: "no spaces".into(),
        timeout: Duration::from_secs(1),
    };
    let err = smoke(&target("ws://127.0.0.1:8080/"), &bad_room)
        .await
        .unwrap_err();
    assert!(matches!(err, SmokeError::Room { .. }), "{err:?}");
}

/// A scripted server from before `history after`: it broadcasts what is sent, but answers every
/// `history` with the room's latest page, ignoring `after` (as the protocol tells a server to do
/// with fields it does not know).
async fn server_without_history_after() -> (std::net::SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (room_tx, _) = tokio::sync::broadcast::channel::<Value>(64);
    let stored = std::sync::Arc::new(std::sync::Mutex::new(Vec::<Value>::new()));
    let task = tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let room_tx = room_tx.clone();
            let stored = stored.clone();
            tokio::spawn(async move {
                let Ok(mut ws) = tokio_tungstenite::accept_async(tcp).await else {
                    return;
                };
                let mut room_rx = room_tx.subscribe();
                loop {
                    let answer = tokio::select! {
                        incoming = ws.next() => {
                            let Some(Ok(Message::Text(text))) = incoming else { return };
                            let frame: Value = serde_json::from_str(&text).unwrap();
                            match frame["action"].as_str() {
                                Some("join") => json!({"type":"members","room":frame["room"],"count":2,"members":[
                                    {"user":"smoke-alice","state":"online","lastSeen":1},
                                    {"user":"smoke-bob","state":"online","lastSeen":1},
                                ]}),
                                Some("send") => {
                                    let id = ulid::Ulid::generate().to_string();
                                    let message = json!({"type":"message","room":frame["room"],"id":id,
                                        "user":"smoke-alice","text":frame["text"],"ts":1,
                                        "clientMsgId":frame["clientMsgId"]});
                                    stored.lock().unwrap().push(message.clone());
                                    let _ = room_tx.send(message);
                                    json!({"type":"ack","clientMsgId":frame["clientMsgId"],"id":id,"ts":1})
                                }
                                Some("history") => {
                                    let items: Vec<Value> = stored.lock().unwrap().iter().map(|m| json!({
                                        "id":m["id"],"room":m["room"],"user":m["user"],"text":m["text"],"ts":1,
                                    })).collect();
                                    json!({"type":"history","room":frame["room"],"messages":items,"more":false})
                                }
                                _ => continue,
                            }
                        }
                        Ok(message) = room_rx.recv() => message,
                    };
                    if ws.send(Message::text(answer.to_string())).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (addr, task)
}

#[tokio::test]
async fn a_stage_without_history_after_fails_at_step_6() {
    let (addr, server) = server_without_history_after().await;
    let key = TokenKey::new(b"any-secret-will-do-here".to_vec()).unwrap();
    let target = SmokeTarget {
        url: format!("ws://{addr}/"),
        alice: token(&key, "smoke-alice"),
        bob: token(&key, "smoke-bob"),
    };
    let options = options(Duration::from_secs(2));
    let err = smoke(&target, &options).await.unwrap_err();
    assert_eq!(err.step(), Some(Step::HistoryAfter), "{err}");
    let message = err.to_string();
    // What was asked, what was wanted, and the page that came instead (it still has "smoke 1").
    let prefix = format!(
        "step 6 (bob catches up after alice's first message): expected history of {} after ",
        options.room
    );
    assert!(message.starts_with(&prefix), "{message}");
    assert!(
        message.contains("with exactly message ")
            && message.contains("\"smoke 2\", oldest first, and no more, got history of"),
        "{message}"
    );
    assert!(message.contains("with 2 messages"), "{message}");
    assert!(
        message.contains("\"smoke 1\" from smoke-alice"),
        "{message}"
    );
    server.abort();
}
