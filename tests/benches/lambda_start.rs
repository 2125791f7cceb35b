//! Cold start of a handler binary: from spawning `chat-ws` to its answer for the first event,
//! served by a small stand-in for the Lambda Runtime API on 127.0.0.1 (next invocation → response),
//! with DynamoDB and SNS on moto (plain HTTP: real AWS adds a TLS handshake per client). The event
//! is a `$connect` with a valid token. Baseline in the same process: spawning `/bin/true`.
//!
//! `cargo build --release -p chat-ws && cargo bench -p chatctl-e2e --bench lambda_start -- [--runs 5]`
//! (`--handler PATH` to time another build of the binary).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stdout
)]

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use chatctl_e2e::moto::Moto;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

const SECRET_HEX: &str = "00112233445566778899aabbccddeeff";

/// A `$connect` with a valid token, so the first event does the real work: a DynamoDB
/// transaction, a room query and an SNS publish.
fn connect_event() -> String {
    let key =
        chat_core::token::TokenKey::new((0..16u8).map(|i| i * 0x11).collect::<Vec<_>>()).unwrap();
    let token = key.mint(&chat_core::token::Claims {
        sub: chat_core::domain::UserName::parse("cold").unwrap(),
        exp: 4_000_000_000,
        iat: 0,
        rooms: None,
        op: false,
    });
    serde_json::json!({
        "requestContext": {"routeKey":"$connect","eventType":"CONNECT","stage":"bench","connectedAt":1_700_000_000_000_i64,
            "requestTimeEpoch":1_700_000_000_000_i64,"identity":{"sourceIp":"127.0.0.1"},"requestId":"r1","domainName":"bench.local",
            "connectionId": chatctl_e2e::moto::unique("conn"),"apiId":"bench"},
        "queryStringParameters": {"room":"lobby","token":token},
        "headers": {"Host":"bench.local"},
        "isBase64Encoded": false
    })
    .to_string()
}

fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .cloned()
}

/// What the stand-in saw, in order.
#[derive(Debug)]
enum Seen {
    Next,
    Response(String),
}

/// Serve the Runtime API: the first `next` gets EVENT, later ones wait forever; responses are
/// reported with their body.
async fn runtime_api(listener: TcpListener, seen: mpsc::UnboundedSender<Seen>, event: String) {
    let mut served = false;
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            return;
        };
        let seen = seen.clone();
        let event = event.clone();
        let first = !served;
        served = true;
        tokio::spawn(async move {
            let (read, mut write) = stream.into_split();
            let mut reader = BufReader::new(read);
            let mut gave_event = !first;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).await.unwrap_or(0) == 0 {
                    return;
                }
                let path = line
                    .split_whitespace()
                    .nth(1)
                    .unwrap_or_default()
                    .to_owned();
                let mut length = 0usize;
                loop {
                    let mut header = String::new();
                    reader.read_line(&mut header).await.unwrap();
                    if header.trim().is_empty() {
                        break;
                    }
                    if let Some((k, v)) = header.split_once(':')
                        && k.eq_ignore_ascii_case("content-length")
                    {
                        length = v.trim().parse().unwrap_or(0);
                    }
                }
                let mut body = vec![0; length];
                reader.read_exact(&mut body).await.unwrap();
                if path.ends_with("/invocation/next") {
                    let _ = seen.send(Seen::Next);
                    if gave_event {
                        std::future::pending::<()>().await;
                    }
                    gave_event = true;
                    let head = format!(
                        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nLambda-Runtime-Aws-Request-Id: req-1\r\nLambda-Runtime-Deadline-Ms: {}\r\nLambda-Runtime-Invoked-Function-Arn: arn:aws:lambda:us-east-1:123456789012:function:chat-ws\r\nLambda-Runtime-Trace-Id: Root=1-0-0\r\nContent-Length: {}\r\n\r\n",
                        std::time::SystemTime::now()
                            .duration_since(std::time::UNIX_EPOCH)
                            .unwrap()
                            .as_millis()
                            + 30_000,
                        event.len()
                    );
                    write.write_all(head.as_bytes()).await.unwrap();
                    write.write_all(event.as_bytes()).await.unwrap();
                } else {
                    let _ = seen.send(Seen::Response(format!(
                        "{path} {}",
                        String::from_utf8_lossy(&body)
                    )));
                    write
                        .write_all(b"HTTP/1.1 202 Accepted\r\nContent-Length: 2\r\n\r\n{}")
                        .await
                        .unwrap();
                }
            }
        });
    }
}

fn default_handler() -> PathBuf {
    // target/release/deps/lambda_start-… → target/release/chat-ws
    let exe = std::env::current_exe().unwrap();
    exe.parent()
        .and_then(|d| d.parent())
        .map(|d| d.join("chat-ws"))
        .unwrap()
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() {
    let handler = arg("--handler").map_or_else(default_handler, PathBuf::from);
    assert!(
        handler.is_file(),
        "{} not found: build it first with `cargo build --release -p chat-ws`, or pass --handler PATH",
        handler.display()
    );
    let runs: usize = arg("--runs").and_then(|r| r.parse().ok()).unwrap_or(5);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let moto = Moto::shared();
        let config = moto.sdk_config();
        let (tables, topic) = chatctl_e2e::moto::fresh_stage(&config, "bench").await;

        let mut baseline = vec![];
        for _ in 0..runs {
            let start = Instant::now();
            Command::new("/bin/true").status().unwrap();
            baseline.push(start.elapsed());
        }

        let mut to_init = vec![];
        let mut to_answer = vec![];
        for run in 0..runs {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let api = listener.local_addr().unwrap();
            let (tx, mut rx) = mpsc::unbounded_channel();
            let server = tokio::spawn(runtime_api(listener, tx, connect_event()));
            let start = Instant::now();
            let mut child = Command::new(&handler)
                .env_clear()
                .env("AWS_LAMBDA_RUNTIME_API", api.to_string())
                .env("AWS_LAMBDA_FUNCTION_NAME", "chat-ws")
                .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "512")
                .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
                .env("AWS_LAMBDA_LOG_GROUP_NAME", "/aws/lambda/chat-ws")
                .env("AWS_LAMBDA_LOG_STREAM_NAME", "bench")
                .env("AWS_REGION", "us-east-1")
                .env("AWS_ACCESS_KEY_ID", "testing")
                .env("AWS_SECRET_ACCESS_KEY", "testing")
                .env("AWS_ENDPOINT_URL", &moto.endpoint)
                .env("CHAT_MESSAGES_TABLE", &tables.messages)
                .env("CHAT_CONNECTIONS_TABLE", &tables.connections)
                .env("CHAT_TOPIC_ARN", &topic)
                .env("CHAT_MANAGEMENT_ENDPOINT", "http://127.0.0.1:9/bench")
                .env("CHAT_TOKEN_SECRET", SECRET_HEX)
                .env("RUST_LOG", "warn")
                .stdout(Stdio::null())
                .stderr(Stdio::inherit())
                .spawn()
                .unwrap();
            let mut answered = None;
            while let Ok(Some(seen)) =
                tokio::time::timeout(Duration::from_secs(20), rx.recv()).await
            {
                match seen {
                    Seen::Next if to_init.len() == run => to_init.push(start.elapsed()),
                    Seen::Next => {}
                    Seen::Response(body) => {
                        answered = Some(body);
                        to_answer.push(start.elapsed());
                        break;
                    }
                }
            }
            let _ = child.kill();
            let _ = child.wait();
            server.abort();
            let body = answered.expect("the handler answered the first event");
            assert!(
                body.contains("/invocation/req-1/response") && body.contains(r#""statusCode":200"#),
                "the connect is accepted: {body}"
            );
        }
        let (b, i, a) = (median(baseline), median(to_init), median(to_answer));
        println!("handler: {}", handler.display());
        println!(
            "  spawn /bin/true (baseline):          {:>8.2} ms",
            b.as_secs_f64() * 1000.0
        );
        println!(
            "  spawn → first `next` (init done):    {:>8.2} ms",
            i.as_secs_f64() * 1000.0
        );
        println!(
            "  spawn → first event answered:        {:>8.2} ms  ({:.1}x the baseline)",
            a.as_secs_f64() * 1000.0,
            a.as_secs_f64() / b.as_secs_f64()
        );
        println!("  medians of {runs} runs");
    });
}
