//! Test peers for the end-to-end suites: a WebSocket chat client on a real socket, a minimal HTTP
//! client for the Management API, and a local backend on a fresh data directory with a manual
//! clock. Every wait has a deadline so a broken server fails a test instead of hanging it.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

pub mod contract;
pub mod dev;
pub mod latency;
pub mod legacy;
pub mod moto;
pub mod proxy;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use chat_core::ports::{Clock, ManualClock, SystemClock};
use chat_local::{LocalConfig, LocalServer};
use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// How long any single wait for a frame may take.
pub const WAIT: Duration = Duration::from_secs(5);

/// A local backend for one test, on its own data directory (removed on drop).
#[derive(Debug)]
pub struct TestServer {
    pub server: Option<LocalServer>,
    pub clock: Arc<ManualClock>,
    pub dir: tempfile::TempDir,
    pub config: LocalConfig,
}

impl TestServer {
    /// Anonymous access on, presence swept every 50 ms, a manual clock at a fixed start.
    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    pub async fn start_with(tune: impl FnOnce(&mut LocalConfig)) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut config = LocalConfig::new(dir.path());
        config.bind = SocketAddr::from(([127, 0, 0, 1], 0));
        config.allow_anonymous = true;
        config.presence_sweep = Duration::from_millis(50);
        tune(&mut config);
        let clock = Arc::new(ManualClock::new(1_700_000_000_000));
        let server = LocalServer::start_with_clock(config.clone(), clock.clone())
            .await
            .expect("server starts");
        Self {
            server: Some(server),
            clock,
            dir,
            config,
        }
    }

    pub fn server(&self) -> &LocalServer {
        self.server.as_ref().expect("server running")
    }

    pub fn addr(&self) -> SocketAddr {
        self.server().local_addr()
    }

    /// `ws://…/?room=ROOM&user=USER`
    pub fn anon_url(&self, room: &str, user: &str) -> String {
        format!(
            "{}?room={}&user={}",
            self.server().websocket_url(),
            enc(room),
            enc(user)
        )
    }

    pub async fn join(&self, room: &str, user: &str) -> Client {
        Client::connect(&self.anon_url(room, user))
            .await
            .unwrap_or_else(|e| panic!("{user} joins {room}: {e:#}"))
    }

    /// The connections the backend has registered now.
    pub async fn connections(&self) -> Vec<chat_core::domain::Connection> {
        self.server()
            .chat()
            .ports()
            .connections
            .all()
            .await
            .expect("read connections")
    }

    /// Stop the server (closing every socket) and start it again on the same data directory.
    pub async fn restart(&mut self) {
        if let Some(server) = self.server.take() {
            server.shutdown().await;
        }
        let clock: Arc<dyn Clock> = self.clock.clone();
        self.server = Some(
            LocalServer::start_with_clock(self.config.clone(), clock)
                .await
                .expect("server restarts"),
        );
    }

    pub async fn stop(mut self) {
        if let Some(server) = self.server.take() {
            server.shutdown().await;
        }
    }
}

/// A backend on the wall clock, for load runs.
pub async fn start_wall_clock(
    tune: impl FnOnce(&mut LocalConfig),
) -> (LocalServer, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut config = LocalConfig::new(dir.path());
    config.bind = SocketAddr::from(([127, 0, 0, 1], 0));
    config.allow_anonymous = true;
    tune(&mut config);
    let server = LocalServer::start_with_clock(config, Arc::new(SystemClock))
        .await
        .expect("server starts");
    (server, dir)
}

/// A bench's numeric `--name N` argument, or `default`.
pub fn bench_arg(name: &str, default: usize) -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Percent-encode a query value.
pub fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A chat client on a real WebSocket.
///
/// A `presence_batch` frame is handed out as it came, followed by one `presence` frame per
/// change it carries (marked `"batched": true`), so a test that waits for "bob joined" holds
/// whether the server sent that change alone or coalesced with others.
#[derive(Debug)]
pub struct Client {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    expanded: std::collections::VecDeque<Value>,
}

/// The `presence` frames a `presence_batch` frame stands for (none for any other frame).
pub fn expand_presence_batch(frame: &Value) -> Vec<Value> {
    if frame["type"] != "presence_batch" {
        return vec![];
    }
    frame["changes"]
        .as_array()
        .map(|changes| {
            changes
                .iter()
                .map(|c| {
                    serde_json::json!({
                        "type": "presence",
                        "room": frame["room"],
                        "user": c["user"],
                        "state": c["state"],
                        "ts": frame["ts"],
                        "batched": true,
                    })
                })
                .collect()
        })
        .unwrap_or_default()
}

/// What a refused upgrade answered.
#[derive(Debug)]
pub struct Refused {
    pub status: u16,
    pub body: String,
}

impl Client {
    pub async fn connect(url: &str) -> Result<Self> {
        match Self::try_connect(url).await? {
            Ok(c) => Ok(c),
            Err(r) => bail!("upgrade refused with {}: {}", r.status, r.body),
        }
    }

    /// Connect, telling a refused upgrade (with its status) apart from other failures.
    pub async fn try_connect(url: &str) -> Result<std::result::Result<Self, Refused>> {
        match tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(url)).await {
            Err(_) => bail!("connecting to {url} timed out"),
            Ok(Ok((ws, _))) => Ok(Ok(Self {
                ws,
                expanded: std::collections::VecDeque::new(),
            })),
            Ok(Err(tungstenite::Error::Http(resp))) => Ok(Err(Refused {
                status: resp.status().as_u16(),
                body: resp
                    .body()
                    .as_ref()
                    .map(|b| String::from_utf8_lossy(b).into_owned())
                    .unwrap_or_default(),
            })),
            Ok(Err(e)) => Err(anyhow!("connecting to {url}: {e}")),
        }
    }

    pub async fn send(&mut self, frame: Value) {
        self.send_text(&frame.to_string()).await;
    }

    pub async fn send_text(&mut self, text: &str) {
        self.ws
            .send(Message::text(text))
            .await
            .expect("send a frame");
    }

    pub async fn send_raw(&mut self, msg: Message) -> Result<()> {
        self.ws.send(msg).await.context("send")
    }

    /// The next data frame as JSON; errors on close or after [`WAIT`].
    pub async fn recv(&mut self) -> Result<Value> {
        self.recv_within(WAIT)
            .await?
            .ok_or_else(|| anyhow!("no frame within {WAIT:?}"))
    }

    /// The next data frame within `limit`, or `None` if nothing came.
    pub async fn recv_within(&mut self, limit: Duration) -> Result<Option<Value>> {
        if let Some(frame) = self.expanded.pop_front() {
            return Ok(Some(frame));
        }
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let next = match tokio::time::timeout_at(deadline, self.ws.next()).await {
                Err(_) => return Ok(None),
                Ok(next) => next,
            };
            match next {
                Some(Ok(Message::Text(t))) => {
                    let frame: Value = serde_json::from_str(&t)
                        .with_context(|| format!("frame is not JSON: {t}"))?;
                    self.expanded.extend(expand_presence_batch(&frame));
                    return Ok(Some(frame));
                }
                Some(Ok(Message::Close(frame))) => bail!("socket closed: {frame:?}"),
                Some(Ok(_)) => continue,
                Some(Err(e)) => bail!("socket error: {e}"),
                None => bail!("socket ended"),
            }
        }
    }

    /// Skip frames until one of type `kind` arrives.
    pub async fn recv_type(&mut self, kind: &str) -> Result<Value> {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.recv_within(left).await? {
                Some(frame) if frame["type"] == kind => return Ok(frame),
                Some(_) => continue,
                None => bail!("no {kind} frame within {WAIT:?}"),
            }
        }
    }

    /// Skip frames until one matches.
    pub async fn recv_matching(
        &mut self,
        what: &str,
        pred: impl Fn(&Value) -> bool,
    ) -> Result<Value> {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.recv_within(left).await? {
                Some(frame) if pred(&frame) => return Ok(frame),
                Some(_) => continue,
                None => bail!("no frame matching {what} within {WAIT:?}"),
            }
        }
    }

    /// Frames of type `kind` that arrive within `quiet` (collects until the line is quiet).
    pub async fn drain(&mut self, quiet: Duration) -> Result<Vec<Value>> {
        let mut frames = vec![];
        while let Some(f) = self.recv_within(quiet).await? {
            frames.push(f);
        }
        Ok(frames)
    }

    /// Wait for the server to close the socket; its close code and reason.
    pub async fn closed(&mut self) -> Result<Option<CloseFrame>> {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            match tokio::time::timeout_at(deadline, self.ws.next()).await {
                Err(_) => bail!("socket still open after {WAIT:?}"),
                Ok(Some(Ok(Message::Close(frame)))) => return Ok(frame),
                Ok(Some(Ok(_))) => continue,
                Ok(Some(Err(e))) => bail!("socket error before a close frame: {e}"),
                Ok(None) => bail!("socket ended without a close frame"),
            }
        }
    }

    pub async fn close(mut self) {
        let _ = self.ws.close(None).await;
        // Read until the server acknowledges, so its $disconnect has started.
        let _ = tokio::time::timeout(WAIT, async {
            while let Some(Ok(_)) = self.ws.next().await {}
        })
        .await;
    }

    /// Send a message and wait for its ack.
    pub async fn say(&mut self, room: &str, text: &str) -> Value {
        self.send(serde_json::json!({"action":"send","room":room,"text":text}))
            .await;
        self.recv_type("ack").await.expect("ack")
    }
}

/// One HTTP/1.1 request; the status and body of the answer.
pub async fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: &[u8],
) -> Result<(u16, String)> {
    let mut request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    request.extend_from_slice(body);
    let text = raw_http(addr, &request).await?;
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| anyhow!("not an HTTP answer: {text}"))?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Ok((status, body))
}

/// Write `bytes` on a new TCP connection and read until the server closes it: the raw answer.
/// A server may answer (413, 400) and close before it has read everything: a failed write is
/// then no error, nor is a reset after the answer arrived. A server that does not close within
/// [`WAIT`] is an error (every request here asks it to).
pub async fn raw_http(addr: SocketAddr, bytes: &[u8]) -> Result<String> {
    let mut stream = TcpStream::connect(addr).await?;
    let written = stream.write_all(bytes).await;
    let mut raw = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Err(_) => bail!("HTTP answer timed out after {WAIT:?}"),
            Ok(Ok(0)) => break,
            Ok(Ok(n)) => raw.extend_from_slice(&buf[..n]),
            Ok(Err(_)) if !raw.is_empty() => break,
            Ok(Err(e)) => {
                written.context("writing the request")?;
                return Err(e).context("reading the answer");
            }
        }
    }
    if raw.is_empty() {
        written.context("writing the request")?;
    }
    Ok(String::from_utf8_lossy(&raw).into_owned())
}

/// Poll `check` every 20 ms until it holds or [`WAIT`] passes.
pub async fn eventually<F, Fut>(what: &str, mut check: F) -> Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + WAIT;
    while tokio::time::Instant::now() < deadline {
        if check().await {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    bail!("{what} did not happen within {WAIT:?}")
}
