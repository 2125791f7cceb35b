//! `smoke`: the post-deploy check. Two real WebSocket clients, alice and bob, go through the
//! target's public URL the way any chat client does — connect, join, send, receive, history,
//! history after a message (how a reconnecting client catches up), recall, close — and every
//! step is timed. A failure names the step, what was expected and what
//! arrived, so a red CI run says where a stage is broken without anyone reproducing it.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use chat_core::domain::{ClientMsgId, MessageId, RoomName};
use chat_core::protocol::ServerFrame;
use futures_util::{SinkExt, StreamExt};
use serde::Serialize;
use serde_json::json;
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{Connector, MaybeTlsStream, WebSocketStream};
use url::Url;

/// A user name and a connection token minted for that user. `Debug` never shows the token.
#[derive(Clone, PartialEq, Eq)]
pub struct Token {
    /// The token's `sub`: the name the server puts on this user's messages.
    pub user: String,
    /// `v1.<claims>.<signature>`, as `chatctl token` prints it.
    pub token: String,
}

impl Token {
    pub fn new(user: impl Into<String>, token: impl Into<String>) -> Self {
        Self {
            user: user.into(),
            token: token.into(),
        }
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Token")
            .field("user", &self.user)
            .field("token", &"<redacted>")
            .finish()
    }
}

/// What smoke needs: the target's WebSocket base URL (`ws://127.0.0.1:8080/` or
/// `wss://{api}.execute-api.{region}.amazonaws.com/{stage}`), and two tokens minted for two users.
#[derive(Debug, Clone)]
pub struct SmokeTarget {
    /// Without a query: smoke adds `?room=…&token=…`.
    pub url: String,
    pub alice: Token,
    pub bob: Token,
}

/// How smoke runs.
#[derive(Debug, Clone)]
pub struct SmokeOptions {
    /// The room both users meet in. A fresh one per run keeps earlier runs' messages (and
    /// `clientMsgId`s) out of the history check.
    pub room: String,
    /// The longest any one step may take.
    pub timeout: Duration,
}

impl SmokeOptions {
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

    /// `smoke-<ulid>`: a room no earlier run used.
    pub fn fresh_room() -> String {
        format!(
            "smoke-{}",
            ulid::Ulid::generate().to_string().to_lowercase()
        )
    }
}

impl Default for SmokeOptions {
    fn default() -> Self {
        Self {
            room: Self::fresh_room(),
            timeout: Self::DEFAULT_TIMEOUT,
        }
    }
}

/// The eight steps, in the order they run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Step {
    Connect,
    Join,
    Send,
    Receive,
    History,
    HistoryAfter,
    Recall,
    Close,
}

impl Step {
    pub const ALL: [Step; 8] = [
        Step::Connect,
        Step::Join,
        Step::Send,
        Step::Receive,
        Step::History,
        Step::HistoryAfter,
        Step::Recall,
        Step::Close,
    ];

    /// 1 to 8.
    pub fn number(self) -> u8 {
        match self {
            Step::Connect => 1,
            Step::Join => 2,
            Step::Send => 3,
            Step::Receive => 4,
            Step::History => 5,
            Step::HistoryAfter => 6,
            Step::Recall => 7,
            Step::Close => 8,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Step::Connect => "connect alice and bob",
            Step::Join => "alice and bob join the room",
            Step::Send => "alice sends two messages",
            Step::Receive => "bob receives alice's messages",
            Step::History => "bob reads the room's history",
            Step::HistoryAfter => "bob catches up after alice's first message",
            Step::Recall => "alice recalls her second message",
            Step::Close => "alice and bob close",
        }
    }
}

/// One passed step and how long it took.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StepTiming {
    pub number: u8,
    pub name: &'static str,
    pub ms: u64,
}

/// A passed smoke run. Holds no token: it is meant to be printed and kept as a CI artifact.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SmokeReport {
    /// The target URL without query, fragment or credentials.
    pub url: String,
    pub room: String,
    pub steps: Vec<StepTiming>,
    pub total_ms: u64,
}

impl fmt::Display for SmokeReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name_width = self.steps.iter().map(|s| s.name.len()).max().unwrap_or(0);
        let ms_width = self
            .steps
            .iter()
            .map(|s| s.ms.to_string().len())
            .max()
            .unwrap_or(1);
        for s in &self.steps {
            writeln!(
                f,
                "step {}  {:<name_width$}  {:>ms_width$} ms",
                s.number, s.name, s.ms
            )?;
        }
        write!(f, "smoke passed in {} ms", self.total_ms)
    }
}

/// Why smoke failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SmokeError {
    #[error("invalid target URL {url:?}: {reason}")]
    Url { url: String, reason: String },
    #[error("invalid smoke room {room:?}: {reason}")]
    Room { room: String, reason: String },
    #[error("step {} ({}): {failure}", step.number(), step.name())]
    Step { step: Step, failure: Failure },
}

impl SmokeError {
    /// The step that failed; `None` when smoke did not start (bad URL or room).
    pub fn step(&self) -> Option<Step> {
        match self {
            SmokeError::Step { step, .. } => Some(*step),
            _ => None,
        }
    }
}

/// What went wrong within a step: what was expected and what arrived instead.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Failure {
    /// The server answered the upgrade with an HTTP status instead of opening a socket.
    #[error(
        "expected {who}'s WebSocket upgrade at {url}, got HTTP {status}{}",
        refusal_detail(*.status, .body)
    )]
    Refused {
        who: &'static str,
        url: String,
        status: u16,
        /// The first line of the answer's body (the server's reason), tokens removed.
        body: String,
    },
    /// No HTTP answer at all: DNS, TCP or TLS failed.
    #[error("expected {who}'s WebSocket upgrade at {url}, got a connection error: {error}")]
    Connect {
        who: &'static str,
        url: String,
        error: String,
    },
    /// The TLS client for `wss://` could not be built (no trusted roots, say).
    #[error("expected a TLS client for wss://, got: {0}")]
    Tls(String),
    #[error(
        "expected {expected}, got nothing within {}{}",
        seconds(*.after),
        ignored_detail(.ignored)
    )]
    Timeout {
        expected: String,
        after: Duration,
        /// Frames that arrived meanwhile and did not match (presence left out), first few only.
        ignored: Vec<String>,
    },
    #[error("expected {expected}, got {got}")]
    Unexpected { expected: String, got: String },
}

fn refusal_detail(status: u16, body: &str) -> String {
    let reason = tungstenite::http::StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .map(|r| format!(" {r}"))
        .unwrap_or_default();
    let body = if body.is_empty() {
        String::new()
    } else {
        format!(": {body}")
    };
    let hint = match status {
        400 => " (the backend refused the room name or the query)",
        401 => " (the token is missing or malformed)",
        403 => {
            " (the token does not match this stage's secret, has expired, or does not allow this \
             room; mint new tokens with `chatctl token` for this stage)"
        }
        404 => " (nothing serves WebSockets at this path: check the stage in the URL)",
        500..=599 => " (the backend failed to register the connection: see its $connect logs)",
        _ => "",
    };
    format!("{reason}{body}{hint}")
}

fn ignored_detail(ignored: &[String]) -> String {
    if ignored.is_empty() {
        String::new()
    } else {
        format!(" (ignored meanwhile: {})", ignored.join("; "))
    }
}

/// `10s`, `1.5s`, `250ms`: how long a wait lasted, as people write it.
fn seconds(d: Duration) -> String {
    let ms = d.as_millis();
    if ms < 1000 {
        format!("{ms}ms")
    } else if ms.is_multiple_of(1000) {
        format!("{}s", ms / 1000)
    } else {
        format!("{:.1}s", d.as_secs_f64())
    }
}

/// Run the eight steps against `target`; the timings, or the first failure.
pub async fn smoke(
    target: &SmokeTarget,
    options: &SmokeOptions,
) -> Result<SmokeReport, SmokeError> {
    let started = Instant::now();
    let endpoint = Endpoint::parse(&target.url)?;
    let room = RoomName::parse(&options.room).map_err(|e| SmokeError::Room {
        room: options.room.clone(),
        reason: e.0,
    })?;
    let mut run = Run {
        room,
        timeout: options.timeout,
        steps: Vec::with_capacity(Step::ALL.len()),
    };

    let (mut alice, mut bob) = run
        .step(Step::Connect, async |d| {
            // Built once per run: loading the OS trust store takes a moment.
            let tls = if endpoint.tls {
                Some(tls_connector()?)
            } else {
                None
            };
            let tls = tls.as_ref();
            let alice = Peer::connect("alice", &target.alice, &endpoint, &options.room, tls, d);
            let alice = alice.await?;
            let bob = Peer::connect("bob", &target.bob, &endpoint, &options.room, tls, d).await?;
            Ok((alice, bob))
        })
        .await?;

    let room = run.room.clone();
    let both = format!(
        "alice ({}) and bob ({})",
        target.alice.user, target.bob.user
    );
    run.step(Step::Join, async |d| {
        // One after the other: on AWS each frame is its own invocation, and bob's list is then
        // sure to include alice.
        alice.join(&room, target, &both, d).await?;
        bob.join(&room, target, &both, d).await
    })
    .await?;

    let texts = ["smoke 1", "smoke 2"];
    let sent = run
        .step(Step::Send, async |d| {
            // Each send waits for its ack: frames sent together may be handled concurrently on
            // AWS, and the order of the two messages is part of what is checked.
            let mut sent = Vec::with_capacity(texts.len());
            for text in texts {
                sent.push(alice.send(&room, text, d).await?);
            }
            Ok(sent)
        })
        .await?;

    run.step(Step::Receive, async |d| {
        for (i, message) in sent.iter().enumerate() {
            bob.receive(message, &sent[i + 1..], &room, &target.alice, d)
                .await?;
        }
        Ok(())
    })
    .await?;

    run.step(Step::History, async |d| {
        bob.history(&room, &sent, &target.alice, d).await
    })
    .await?;

    // Before the recall: the page must hold the later message with its text.
    run.step(Step::HistoryAfter, async |d| {
        let Some((first, later)) = sent.split_first() else {
            return Ok(());
        };
        bob.history_after(&room, first, later, &target.alice, d)
            .await
    })
    .await?;

    run.step(Step::Recall, async |d| {
        let Some(last) = sent.last() else {
            return Ok(());
        };
        alice
            .send_frame(json!({"action": "recall", "id": last.id.to_string()}), d)
            .await?;
        // Alice waits too: a refused recall is answered to her alone, with an error frame.
        tokio::try_join!(
            alice.recalled(last, &room, &target.alice, d),
            bob.recalled(last, &room, &target.alice, d),
        )?;
        Ok(())
    })
    .await?;

    run.step(Step::Close, async |d| {
        tokio::try_join!(alice.close(d), bob.close(d))?;
        Ok(())
    })
    .await?;

    Ok(SmokeReport {
        url: endpoint.public,
        room: options.room.clone(),
        steps: run.steps,
        total_ms: millis(started.elapsed()),
    })
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// The running smoke: the room, the per-step timeout and the timings so far.
struct Run {
    room: RoomName,
    timeout: Duration,
    steps: Vec<StepTiming>,
}

impl Run {
    async fn step<T>(
        &mut self,
        step: Step,
        body: impl AsyncFnOnce(Deadline) -> Result<T, Failure>,
    ) -> Result<T, SmokeError> {
        let started = Instant::now();
        let deadline = Deadline {
            at: started + self.timeout,
            after: self.timeout,
        };
        let result = body(deadline).await;
        let ms = millis(started.elapsed());
        match result {
            Ok(value) => {
                tracing::debug!(step = step.number(), name = step.name(), ms, room = %self.room, "smoke step passed");
                self.steps.push(StepTiming {
                    number: step.number(),
                    name: step.name(),
                    ms,
                });
                Ok(value)
            }
            Err(failure) => Err(SmokeError::Step { step, failure }),
        }
    }
}

/// When the current step's time is up, and how long that time was (for the message).
#[derive(Debug, Clone, Copy)]
struct Deadline {
    at: Instant,
    after: Duration,
}

impl Deadline {
    fn timeout(self, expected: impl Into<String>, ignored: Vec<String>) -> Failure {
        Failure::Timeout {
            expected: expected.into(),
            after: self.after,
            ignored,
        }
    }
}

/// The target URL, checked, with the form that may be shown.
struct Endpoint {
    url: Url,
    /// Without query, fragment or credentials: safe for reports and errors.
    public: String,
    tls: bool,
}

impl Endpoint {
    fn parse(raw: &str) -> Result<Self, SmokeError> {
        // A URL that does not parse is shown only up to its query, where a token could be.
        let shown = raw.split(['?', '#']).next().unwrap_or_default().to_owned();
        let bad = |reason: String| SmokeError::Url {
            url: shown.clone(),
            reason,
        };
        let url = Url::parse(raw).map_err(|e| bad(e.to_string()))?;
        let tls = match url.scheme() {
            "ws" => false,
            "wss" => true,
            other => {
                return Err(bad(format!(
                    "the scheme is {other}:, expected ws:// (local) or wss:// (API Gateway)"
                )));
            }
        };
        if url.query().is_some_and(|q| !q.is_empty()) {
            return Err(bad(
                "the URL has a query; give the base URL, smoke adds ?room=…&token=…".into(),
            ));
        }
        let mut public = url.clone();
        public.set_query(None);
        public.set_fragment(None);
        // Both only fail for URLs that cannot have credentials, which then have none to hide.
        let _ = public.set_password(None);
        let _ = public.set_username("");
        Ok(Self {
            url,
            public: public.to_string(),
            tls,
        })
    }

    /// The connect URL for one user: the one place a token appears, never shown.
    fn with_query(&self, room: &str, token: &str) -> Url {
        let mut url = self.url.clone();
        url.set_query(None);
        url.query_pairs_mut()
            .append_pair("room", room)
            .append_pair("token", token);
        url
    }
}

/// A rustls client with the OS trust store and the aws-lc-rs provider named explicitly, so it
/// does not depend on a process-wide default provider being installed.
fn tls_connector() -> Result<Connector, Failure> {
    let found = rustls_native_certs::load_native_certs();
    let mut roots = rustls::RootCertStore::empty();
    let (added, _) = roots.add_parsable_certificates(found.certs);
    if added == 0 {
        let errors: Vec<String> = found.errors.iter().map(ToString::to_string).collect();
        return Err(Failure::Tls(format!(
            "no trusted root certificates found on this machine (install ca-certificates or set \
             SSL_CERT_FILE){}",
            if errors.is_empty() {
                String::new()
            } else {
                format!(": {}", errors.join("; "))
            }
        )));
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| Failure::Tls(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Connector::Rustls(Arc::new(config)))
}

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// A message alice sent and the server acknowledged.
#[derive(Debug, Clone)]
struct Sent {
    id: MessageId,
    text: &'static str,
    client_msg_id: ClientMsgId,
}

impl fmt::Display for Sent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "message {} {:?}", self.id, self.text)
    }
}

/// What a wait makes of one frame.
enum Verdict<T> {
    /// The frame the wait was for.
    Take(T),
    /// Not for this wait (another room's traffic, one's own echo): keep waiting.
    Skip,
    /// The wrong answer: fail with this description of it.
    Fail(String),
}

/// One of the two clients.
struct Peer {
    role: &'static str,
    ws: Socket,
}

impl Peer {
    async fn connect(
        role: &'static str,
        token: &Token,
        endpoint: &Endpoint,
        room: &str,
        tls: Option<&Connector>,
        d: Deadline,
    ) -> Result<Peer, Failure> {
        let url = endpoint.with_query(room, &token.token);
        let expected = format!("{role}'s WebSocket upgrade at {}", endpoint.public);
        let connecting = tokio_tungstenite::connect_async_tls_with_config(
            url.as_str(),
            None,
            // Small frames, each waited for: Nagle would only add latency to the timings.
            true,
            tls.cloned(),
        );
        match tokio::time::timeout_at(d.at, connecting).await {
            Err(_) => Err(d.timeout(expected, vec![])),
            Ok(Ok((ws, _))) => Ok(Peer { role, ws }),
            Ok(Err(tungstenite::Error::Http(response))) => {
                let body = response
                    .body()
                    .as_deref()
                    .map(String::from_utf8_lossy)
                    .unwrap_or_default();
                let first_line = body.lines().next().unwrap_or_default().trim();
                let mut body: String = first_line.chars().take(200).collect();
                if !token.token.is_empty() {
                    // Should a proxy echo the request, the token still stays out of the logs.
                    body = body.replace(&token.token, "<token>");
                }
                Err(Failure::Refused {
                    who: role,
                    url: endpoint.public.clone(),
                    status: response.status().as_u16(),
                    body,
                })
            }
            Ok(Err(e)) => Err(Failure::Connect {
                who: role,
                url: endpoint.public.clone(),
                error: connect_error(&e),
            }),
        }
    }

    async fn send_frame(&mut self, frame: serde_json::Value, d: Deadline) -> Result<(), Failure> {
        let expected = format!("{} to send {}", self.role, frame);
        match tokio::time::timeout_at(d.at, self.ws.send(Message::text(frame.to_string()))).await {
            Err(_) => Err(d.timeout(expected, vec![])),
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(Failure::Unexpected {
                expected,
                got: format!("a socket error: {e}"),
            }),
        }
    }

    /// Read frames until `judge` takes one. Presence, pings and frame types this client does
    /// not know are ignored, as the protocol asks of every client; an `error` frame always
    /// fails, since smoke sends nothing the server should refuse.
    async fn expect<T>(
        &mut self,
        expected: &str,
        d: Deadline,
        mut judge: impl FnMut(&ServerFrame) -> Verdict<T>,
    ) -> Result<T, Failure> {
        let mut ignored = Vec::new();
        let unexpected = |got: String| Failure::Unexpected {
            expected: expected.to_owned(),
            got,
        };
        loop {
            let Ok(next) = tokio::time::timeout_at(d.at, self.ws.next()).await else {
                return Err(d.timeout(expected, ignored));
            };
            let text = match next {
                Some(Ok(Message::Text(text))) => text,
                Some(Ok(Message::Close(frame))) => {
                    return Err(unexpected(format!(
                        "{}'s socket closed by the server{}",
                        self.role,
                        close_detail(frame.as_ref())
                    )));
                }
                Some(Ok(_)) => continue,
                Some(Err(e)) => {
                    return Err(unexpected(format!(
                        "a socket error on {}'s connection: {e}",
                        self.role
                    )));
                }
                None => return Err(unexpected(format!("{}'s socket ended", self.role))),
            };
            let frame = match serde_json::from_str::<ServerFrame>(&text) {
                Ok(frame) => frame,
                Err(e) if is_known_type(&text) => {
                    return Err(unexpected(format!(
                        "a malformed frame ({e}): {}",
                        clip(&text, 200)
                    )));
                }
                // A newer server's frame type: clients must ignore those.
                Err(_) => continue,
            };
            match &frame {
                ServerFrame::Presence { .. }
                | ServerFrame::PresenceBatch { .. }
                | ServerFrame::Occupancy { .. } => continue,
                ServerFrame::Error { .. } => return Err(unexpected(describe(&frame))),
                _ => {}
            }
            match judge(&frame) {
                Verdict::Take(value) => return Ok(value),
                Verdict::Skip => {
                    if ignored.len() < 5 {
                        ignored.push(describe(&frame));
                    }
                }
                Verdict::Fail(got) => return Err(unexpected(got)),
            }
        }
    }

    /// `join` the room and check the `members` answer lists both users.
    async fn join(
        &mut self,
        room: &RoomName,
        target: &SmokeTarget,
        both: &str,
        d: Deadline,
    ) -> Result<(), Failure> {
        self.send_frame(json!({"action": "join", "room": room.as_str()}), d)
            .await?;
        let expected = format!("{}: members of {room} listing {both}", self.role);
        self.expect(&expected, d, |frame| match frame {
            ServerFrame::Members {
                room: r, members, ..
            } if r == room => {
                let listed = |user: &str| members.iter().any(|m| m.user.as_str() == user);
                if listed(&target.alice.user) && listed(&target.bob.user) {
                    Verdict::Take(())
                } else {
                    Verdict::Fail(describe(frame))
                }
            }
            ServerFrame::Members { .. } => Verdict::Fail(describe(frame)),
            _ => Verdict::Skip,
        })
        .await
    }

    /// `send` one message with a fresh `clientMsgId` and wait for its `ack`.
    async fn send(
        &mut self,
        room: &RoomName,
        text: &'static str,
        d: Deadline,
    ) -> Result<Sent, Failure> {
        // Fresh per run: a reused clientMsgId would be acked as a duplicate and not broadcast.
        let client_msg_id = format!("smoke-{}", ulid::Ulid::generate());
        let client_msg_id =
            ClientMsgId::parse(&client_msg_id).map_err(|e| Failure::Unexpected {
                expected: format!("a valid clientMsgId, got {client_msg_id:?}"),
                got: e.0,
            })?;
        self.send_frame(
            json!({
                "action": "send",
                "room": room.as_str(),
                "text": text,
                "clientMsgId": client_msg_id.as_str(),
            }),
            d,
        )
        .await?;
        let expected = format!("ack for {text:?} (clientMsgId {})", client_msg_id.as_str());
        let id = self
            .expect(&expected, d, |frame| match frame {
                ServerFrame::Ack {
                    client_msg_id: Some(c),
                    id,
                    duplicate,
                    ..
                } if c == &client_msg_id => {
                    if *duplicate {
                        Verdict::Fail(format!(
                            "{} (the server had seen this clientMsgId before)",
                            describe(frame)
                        ))
                    } else {
                        Verdict::Take(*id)
                    }
                }
                ServerFrame::Ack { .. } => Verdict::Fail(describe(frame)),
                // Alice's own messages come back to her too.
                _ => Verdict::Skip,
            })
            .await?;
        Ok(Sent {
            id,
            text,
            client_msg_id,
        })
    }

    /// Wait for `message` as a `message` frame; `later` ones must not come first. A repeat of an
    /// earlier one is a redelivery, which the protocol allows on AWS, and is skipped.
    async fn receive(
        &mut self,
        message: &Sent,
        later: &[Sent],
        room: &RoomName,
        sender: &Token,
        d: Deadline,
    ) -> Result<(), Failure> {
        let expected = message.to_string();
        self.expect(&expected, d, |frame| {
            let ServerFrame::Message {
                room: r,
                id,
                user,
                text,
                client_msg_id,
                ..
            } = frame
            else {
                return Verdict::Skip;
            };
            if later.iter().any(|s| s.id == *id) {
                return Verdict::Fail(format!("{} first: out of send order", describe(frame)));
            }
            if *id != message.id {
                // A redelivery of an earlier one, or someone else's message in the room.
                return Verdict::Skip;
            }
            let mut wrong = Vec::new();
            if r != room {
                wrong.push(format!("room {r}, not {room}"));
            }
            if user.as_str() != sender.user {
                wrong.push(format!("user {user}, not {}", sender.user));
            }
            if text != message.text {
                wrong.push(format!("text {text:?}"));
            }
            if client_msg_id.as_ref() != Some(&message.client_msg_id) {
                wrong.push(format!(
                    "clientMsgId {:?}, not {:?}",
                    client_msg_id.as_ref().map(ClientMsgId::as_str),
                    message.client_msg_id.as_str()
                ));
            }
            if wrong.is_empty() {
                Verdict::Take(())
            } else {
                Verdict::Fail(format!("{} with {}", describe(frame), wrong.join(", ")))
            }
        })
        .await
    }

    /// Ask for the room's history and check it holds `sent`, oldest first, with the same ids.
    async fn history(
        &mut self,
        room: &RoomName,
        sent: &[Sent],
        sender: &Token,
        d: Deadline,
    ) -> Result<(), Failure> {
        self.send_frame(json!({"action": "history", "room": room.as_str()}), d)
            .await?;
        let listed: Vec<String> = sent.iter().map(ToString::to_string).collect();
        let expected = format!(
            "history of {room} with {}, oldest first",
            listed.join(" then ")
        );
        self.expect(&expected, d, |frame| {
            let ServerFrame::History {
                room: r, messages, ..
            } = frame
            else {
                return Verdict::Skip;
            };
            if r != room {
                return Verdict::Fail(describe(frame));
            }
            // Only smoke's own messages are checked: a reused room may hold older ones.
            let ours: Vec<_> = messages
                .iter()
                .filter(|m| sent.iter().any(|s| s.id == m.id))
                .collect();
            let matches = ours.len() == sent.len()
                && ours.iter().zip(sent).all(|(m, s)| {
                    m.id == s.id
                        && m.text.as_deref() == Some(s.text)
                        && m.user.as_str() == sender.user
                        && !m.recalled
                });
            if matches {
                Verdict::Take(())
            } else {
                Verdict::Fail(describe(frame))
            }
        })
        .await
    }

    /// Ask for the messages after `first` — what a reconnecting client does to fill its gap —
    /// and check the page is exactly `later`, oldest first, with `more: false`. A server that
    /// ignores `after` answers the latest page instead, which includes `first`: that fails.
    async fn history_after(
        &mut self,
        room: &RoomName,
        first: &Sent,
        later: &[Sent],
        sender: &Token,
        d: Deadline,
    ) -> Result<(), Failure> {
        self.send_frame(
            json!({"action": "history", "room": room.as_str(), "after": first.id.to_string()}),
            d,
        )
        .await?;
        let listed: Vec<String> = later.iter().map(ToString::to_string).collect();
        let expected = format!(
            "history of {room} after {} with exactly {}, oldest first, and no more",
            first.id,
            if listed.is_empty() {
                "nothing".to_owned()
            } else {
                listed.join(" then ")
            }
        );
        self.expect(&expected, d, |frame| {
            let ServerFrame::History {
                room: r,
                messages,
                more,
            } = frame
            else {
                return Verdict::Skip;
            };
            // The room is smoke's own and nobody else writes in it during the run: anything
            // else after `first` is wrong, not someone else's message.
            let exact = r == room
                && !*more
                && messages.len() == later.len()
                && messages.iter().zip(later).all(|(m, s)| {
                    m.id == s.id
                        && m.text.as_deref() == Some(s.text)
                        && m.user.as_str() == sender.user
                        && !m.recalled
                });
            if exact {
                Verdict::Take(())
            } else {
                Verdict::Fail(describe(frame))
            }
        })
        .await
    }

    /// Wait for the room's `recalled` frame for `message`.
    async fn recalled(
        &mut self,
        message: &Sent,
        room: &RoomName,
        by: &Token,
        d: Deadline,
    ) -> Result<(), Failure> {
        let expected = format!("{}: recalled {} by {}", self.role, message.id, by.user);
        self.expect(&expected, d, |frame| match frame {
            ServerFrame::Recalled {
                room: r,
                id,
                by: who,
                ..
            } if *id == message.id => {
                if r == room && who.as_str() == by.user {
                    Verdict::Take(())
                } else {
                    Verdict::Fail(describe(frame))
                }
            }
            _ => Verdict::Skip,
        })
        .await
    }

    /// Send a close frame and wait for the server's reply and the end of the connection.
    async fn close(&mut self, d: Deadline) -> Result<(), Failure> {
        let expected = format!("the server's reply to {}'s close", self.role);
        let unexpected = |got: String| Failure::Unexpected {
            expected: expected.clone(),
            got,
        };
        let frame = CloseFrame {
            code: CloseCode::Normal,
            reason: "smoke done".into(),
        };
        match tokio::time::timeout_at(d.at, self.ws.close(Some(frame))).await {
            Err(_) => return Err(d.timeout(expected.clone(), vec![])),
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(unexpected(format!("a socket error while closing: {e}"))),
        }
        let mut replied = false;
        loop {
            let Ok(next) = tokio::time::timeout_at(d.at, self.ws.next()).await else {
                return Err(d.timeout(expected.clone(), vec![]));
            };
            match next {
                Some(Ok(Message::Close(_))) => replied = true,
                // Room traffic still in flight: nobody reads it now.
                Some(Ok(_)) => {}
                Some(Err(tungstenite::Error::ConnectionClosed)) | None if replied => return Ok(()),
                Some(Err(tungstenite::Error::ConnectionClosed)) | None => {
                    return Err(unexpected(
                        "the connection ended without a close frame".into(),
                    ));
                }
                Some(Err(e)) => return Err(unexpected(format!("a socket error: {e}"))),
            }
        }
    }
}

/// Whether a frame that did not parse claims a type this client knows (then it is malformed,
/// not merely newer).
fn is_known_type(text: &str) -> bool {
    const KNOWN: [&str; 10] = [
        "ack",
        "message",
        "history",
        "recalled",
        "presence",
        "presence_batch",
        "occupancy",
        "members",
        "pong",
        "error",
    ];
    serde_json::from_str::<serde_json::Value>(text)
        .ok()
        .and_then(|v| v.get("type").and_then(|t| t.as_str()).map(str::to_owned))
        .is_none_or(|t| KNOWN.contains(&t.as_str()))
}

/// A connect error in words. A failed TLS handshake arrives as an I/O error wrapping rustls's;
/// it is named as such, since "corrupt message" alone does not say TLS was involved.
fn connect_error(e: &tungstenite::Error) -> String {
    match e {
        tungstenite::Error::Io(io) => match io
            .get_ref()
            .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        {
            Some(tls) => format!("TLS handshake failed: {tls}"),
            None => io.to_string(),
        },
        other => other.to_string(),
    }
}

fn close_detail(frame: Option<&CloseFrame>) -> String {
    match frame {
        Some(f) if f.reason.is_empty() => format!(" with {}", u16::from(f.code)),
        Some(f) => format!(" with {} {:?}", u16::from(f.code), f.reason.as_str()),
        None => " without a status".into(),
    }
}

fn clip(text: &str, max_chars: usize) -> String {
    let mut clipped: String = text.chars().take(max_chars).collect();
    if clipped.len() < text.len() {
        clipped.push('…');
    }
    clipped
}

/// A server frame in a few words, for "got …".
fn describe(frame: &ServerFrame) -> String {
    match frame {
        ServerFrame::Ack {
            client_msg_id,
            id,
            duplicate,
            ..
        } => format!(
            "ack {id}{}{}",
            client_msg_id
                .as_ref()
                .map(|c| format!(" for clientMsgId {}", c.as_str()))
                .unwrap_or_default(),
            if *duplicate { " (duplicate)" } else { "" }
        ),
        ServerFrame::Message {
            room,
            id,
            user,
            text,
            ..
        } => format!("message {id} {:?} from {user} in {room}", clip(text, 40)),
        ServerFrame::History {
            room,
            messages,
            more,
        } => {
            let items: Vec<String> = messages
                .iter()
                .rev()
                .take(5)
                .rev()
                .map(|m| match (&m.text, m.recalled) {
                    (_, true) => format!("{} (recalled) from {}", m.id, m.user),
                    (Some(text), false) => format!("{} {:?} from {}", m.id, clip(text, 40), m.user),
                    (None, false) => format!("{} from {}", m.id, m.user),
                })
                .collect();
            format!(
                "history of {room} with {} message{}{}{}",
                messages.len(),
                if messages.len() == 1 { "" } else { "s" },
                if items.is_empty() {
                    String::new()
                } else {
                    format!(" (newest: {})", items.join(", "))
                },
                if *more { ", more: true" } else { "" }
            )
        }
        ServerFrame::Recalled { room, id, by, .. } => format!("recalled {id} by {by} in {room}"),
        ServerFrame::Presence {
            room, user, state, ..
        } => format!("presence {user} {state:?} in {room}"),
        ServerFrame::PresenceBatch { room, changes, .. } => {
            format!("presence of {} users in {room}", changes.len())
        }
        ServerFrame::Occupancy { room, members, .. } => {
            format!("occupancy of {room}: {members} members")
        }
        ServerFrame::Members { room, members, .. } => {
            let users: Vec<&str> = members.iter().map(|m| m.user.as_str()).collect();
            format!("members of {room}: [{}]", users.join(", "))
        }
        ServerFrame::Pong { .. } => "pong".into(),
        ServerFrame::Error {
            code,
            message,
            reference,
        } => format!(
            "error {}: {message}{}",
            code.as_str(),
            reference
                .as_ref()
                .map(|r| format!(" (ref {r})"))
                .unwrap_or_default()
        ),
    }
}
