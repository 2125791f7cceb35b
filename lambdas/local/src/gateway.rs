//! The WebSocket gateway with API Gateway's semantics: `$connect` sees the query string and headers
//! and may refuse the upgrade; frames are routed by `action` (else `$default`); `$disconnect` runs
//! on every close; frame/message size limits close with 1009; idle and lifetime limits close with
//! 1001. Also the Management API at `/@connections/{id}` (and under `/{stage}/`), and the page.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::DefaultBodyLimit;
use axum::extract::rejection::BytesRejection;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{CloseFrame, Message as WsMessage, WebSocket, WebSocketUpgrade};
use axum::extract::{ConnectInfo, Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE};
use chat_core::ChatService;
use chat_core::domain::ConnectionId;
use chat_core::ports::{Clock, PostError};
use chat_core::protocol::{ACTIONS, route_key};
use chat_handlers::events::{WsContext, WsEvent, WsEventKind};
use chrono::{DateTime, SecondsFormat, Utc};
use futures_util::{SinkExt, StreamExt};
use tokio::sync::{mpsc, watch};
use tracing::{debug, info};

use crate::page;
use crate::registry::{CloseRequest, Entry, Outbound, Registry};

/// API Gateway's WebSocket limits, enforced locally too.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GatewayLimits {
    /// Largest frame, in bytes (API Gateway: 32 KB).
    pub max_frame_bytes: usize,
    /// Largest message, possibly fragmented, in bytes (API Gateway: 128 KB).
    pub max_message_bytes: usize,
    /// Close a connection that sent nothing for this long (API Gateway: 10 minutes).
    pub idle_timeout: Duration,
    /// Close every connection after this long (API Gateway: 2 hours).
    pub max_lifetime: Duration,
    /// Frames queued for one client. A client that lets this many pile up is not reading: it is
    /// closed (1008) rather than allowed to hold up the fan-out to everyone else.
    pub outbox_frames: usize,
}

impl Default for GatewayLimits {
    fn default() -> Self {
        Self {
            max_frame_bytes: 32 * 1024,
            max_message_bytes: 128 * 1024,
            idle_timeout: Duration::from_secs(600),
            max_lifetime: Duration::from_secs(2 * 3600),
            outbox_frames: 1024,
        }
    }
}

/// Close codes the gateway uses.
pub mod close {
    /// Normal closure (`DeleteConnection`).
    pub const NORMAL: u16 = 1000;
    /// Going away: idle timeout, lifetime reached, server shutdown.
    pub const GOING_AWAY: u16 = 1001;
    /// The client's close frame carried no status code.
    pub const NO_STATUS: u16 = 1005;
    /// The peer went away without a close frame.
    pub const ABNORMAL: u16 = 1006;
    /// Policy violation: the client stopped reading and its outbox filled up.
    pub const NOT_READING: u16 = crate::registry::CLOSE_NOT_READING;
    /// Invalid frame payload data: a text frame that is not UTF-8.
    pub const INVALID_DATA: u16 = 1007;
    /// Message too big.
    pub const TOO_BIG: u16 = 1009;
}

/// Shared state of the gateway's routes.
#[derive(Debug)]
pub struct Gateway {
    pub chat: Arc<ChatService>,
    pub clock: Arc<dyn Clock>,
    pub registry: Arc<Registry>,
    pub limits: GatewayLimits,
    pub api_id: String,
    pub allow_anonymous: bool,
    pub recall_window_ms: i64,
    /// Where the gateway is reachable, for the page's configuration.
    pub public_addr: SocketAddr,
}

pub fn router(gateway: Arc<Gateway>) -> Router {
    // A Management API body is read up to one byte past the message limit and no further: a
    // multi-megabyte POST is refused with 413 before it is buffered.
    let body_limit = DefaultBodyLimit::max(gateway.limits.max_message_bytes.saturating_add(1));
    Router::new()
        .route("/", get(root))
        .route("/app.js", get(page::app_js))
        .route("/style.css", get(page::style_css))
        .route("/config.json", get(config_json))
        .route("/healthz", get(|| async { "ok" }))
        .route("/@connections", any(no_connection_id))
        .route("/@connections/", any(no_connection_id))
        .route(
            "/@connections/{id}",
            get(describe_connection)
                .post(post_to_connection)
                .delete(delete_connection),
        )
        .route("/{stage}", get(stage_root))
        .route("/{stage}/", get(stage_root))
        .route(
            "/{stage}/@connections/{id}",
            get(describe_staged).post(post_staged).delete(delete_staged),
        )
        .layer(body_limit)
        .with_state(gateway)
}

async fn root(
    State(gw): State<Arc<Gateway>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    RawQuery(raw_query): RawQuery,
    headers: HeaderMap,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    match ws {
        Ok(ws) => upgrade(gw, "local".to_owned(), peer, raw_query, headers, ws).await,
        // A request that asks for a WebSocket but is not a valid upgrade (no Sec-WebSocket-Key,
        // a wrong version …) is refused as API Gateway refuses it, not served the page.
        Err(rejection) if asks_for_websocket(&headers) => bad_upgrade(&rejection),
        Err(_) => page::index().into_response(),
    }
}

/// The query string's parameters, percent-decoded (`+` is a space). A value that is not UTF-8
/// once decoded is refused with 400 rather than patched with U+FFFD: a user name must be what
/// the client sent. A malformed escape (`%ZZ`) is kept as written, as URL parsers do.
#[allow(clippy::result_large_err)]
fn decode_query(raw: Option<&str>) -> Result<Vec<(String, String)>, Response> {
    let decode = |part: &str| {
        let spaced = part.replace('+', " ");
        percent_encoding::percent_decode_str(&spaced)
            .decode_utf8()
            .map(std::borrow::Cow::into_owned)
    };
    raw.unwrap_or_default()
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            let key = decode(key).map_err(|_| not_utf8(key))?;
            let value = decode(value).map_err(|_| not_utf8(&key))?;
            Ok((key, value))
        })
        .collect()
}

fn not_utf8(parameter: &str) -> Response {
    (
        StatusCode::BAD_REQUEST,
        format!(
            "query parameter {parameter:?} is not valid UTF-8 once percent-decoded; \
             percent-encode the UTF-8 bytes of the value\n"
        ),
    )
        .into_response()
}

/// The request names `websocket` in its `Upgrade` header: a WebSocket client, however broken.
fn asks_for_websocket(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::UPGRADE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|token| token.trim().eq_ignore_ascii_case("websocket"))
}

/// The answer to a WebSocket upgrade request that is not valid: 400 and what is wrong with it.
fn bad_upgrade(rejection: &WebSocketUpgradeRejection) -> Response {
    (
        StatusCode::BAD_REQUEST,
        format!("not a valid WebSocket upgrade: {rejection}\n"),
    )
        .into_response()
}

async fn stage_root(
    State(gw): State<Arc<Gateway>>,
    Path(stage): Path<String>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    RawQuery(raw_query): RawQuery,
    headers: HeaderMap,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    // API Gateway stage names are letters, digits, '-' and '_': anything else is no endpoint.
    let valid_stage = !stage.is_empty()
        && stage
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    match ws {
        _ if !valid_stage => (StatusCode::NOT_FOUND, "not found\n").into_response(),
        Ok(ws) => upgrade(gw, stage, peer, raw_query, headers, ws).await,
        Err(rejection) if asks_for_websocket(&headers) => bad_upgrade(&rejection),
        Err(rejection) => (
            StatusCode::UPGRADE_REQUIRED,
            format!(
                "/{stage} is a WebSocket endpoint ({rejection}); connect with a WebSocket client, \
                 or open / for the chat page\n"
            ),
        )
            .into_response(),
    }
}

async fn config_json(State(gw): State<Arc<Gateway>>, headers: HeaderMap) -> Response {
    // The address the browser reached us by works for its WebSocket too, even when the server
    // listens on 0.0.0.0.
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .map_or_else(|| gw.public_addr.to_string(), str::to_owned);
    axum::Json(serde_json::json!({
        "websocketUrl": format!("ws://{host}/"),
        "allowAnonymous": gw.allow_anonymous,
        "recallWindowMs": gw.recall_window_ms,
    }))
    .into_response()
}

/// A connection id in API Gateway's shape: 12 random bytes, base64 (16 characters). The URL-safe
/// alphabet keeps ids usable in Management API paths without percent-encoding.
fn new_connection_id() -> ConnectionId {
    let mut bytes = [0u8; 12];
    if getrandom::fill(&mut bytes).is_err() {
        // No OS randomness: fall back to a ULID's random part, still unique per process.
        bytes.copy_from_slice(&ulid::Ulid::generate().to_bytes()[4..]);
    }
    ConnectionId::new(URL_SAFE.encode(bytes))
}

fn context(gw: &Gateway, stage: &str) -> WsContext {
    WsContext {
        api_id: gw.api_id.clone(),
        stage: stage.to_owned(),
        domain_name: gw.public_addr.to_string(),
    }
}

fn request_id() -> String {
    ulid::Ulid::generate().to_string()
}

async fn upgrade(
    gw: Arc<Gateway>,
    stage: String,
    peer: SocketAddr,
    raw_query: Option<String>,
    headers: HeaderMap,
    ws: WebSocketUpgrade,
) -> Response {
    let query = match decode_query(raw_query.as_deref()) {
        Ok(query) => query,
        Err(refusal) => return refusal,
    };
    let id = new_connection_id();
    let connected_at = gw.clock.now_ms();
    let ctx = context(&gw, &stage);
    let header_pairs: Vec<(String, String)> = headers
        .iter()
        .filter_map(|(k, v)| Some((k.as_str().to_owned(), v.to_str().ok()?.to_owned())))
        .collect();
    let user_agent = headers
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let event = WsEvent {
        query,
        headers: header_pairs,
        source_ip: Some(peer.ip().to_string()),
        ..WsEvent::new(
            &ctx,
            WsEventKind::Connect,
            id.as_str(),
            connected_at,
            connected_at,
            request_id(),
        )
    };
    let answer = chat_handlers::ws::handle(&gw.chat, event.to_request()).await;
    if !(200..300).contains(&answer.status_code) {
        let status = u16::try_from(answer.status_code)
            .ok()
            .and_then(|s| StatusCode::from_u16(s).ok())
            .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body = match answer.body {
            Some(aws_lambda_events::encodings::Body::Text(t)) => t,
            _ => status.canonical_reason().unwrap_or("refused").to_owned(),
        };
        debug!(connection = %id, status = status.as_u16(), %body, "upgrade refused");
        return (status, format!("{body}\n")).into_response();
    }
    let limits = gw.limits;
    let failed_gw = Arc::clone(&gw);
    let failed_ctx = ctx.clone();
    let failed_id = id.clone();
    ws.max_frame_size(limits.max_frame_bytes)
        .max_message_size(limits.max_message_bytes)
        .read_buffer_size(READ_BUFFER_BYTES)
        .on_failed_upgrade(move |e| {
            debug!(connection = %failed_id, error = %e, "upgrade failed after $connect");
            tokio::spawn(async move {
                disconnect(
                    &failed_gw,
                    &failed_ctx,
                    &failed_id,
                    connected_at,
                    close::ABNORMAL,
                    "upgrade failed",
                )
                .await;
            });
        })
        .on_upgrade(move |socket| serve_socket(gw, ctx, id, connected_at, peer, user_agent, socket))
}

/// Read chunk per socket. tungstenite's default (128 KiB) is allocated for every socket and
/// zeroed before every read; chat frames are a few hundred bytes, and a larger frame (up to
/// `max_frame_bytes`) grows the buffer as it arrives. perf showed the zeroing as the largest
/// single cost of a 1,000-client load generator using the default.
const READ_BUFFER_BYTES: usize = 8 * 1024;

async fn serve_socket(
    gw: Arc<Gateway>,
    ctx: WsContext,
    id: ConnectionId,
    connected_at: i64,
    peer: SocketAddr,
    user_agent: Option<String>,
    socket: WebSocket,
) {
    let (tx, mut rx) = mpsc::channel::<Outbound>(gw.limits.outbox_frames.max(1));
    let (closer, close_rx) = watch::channel::<Option<CloseRequest>>(None);
    let last_active = Arc::new(AtomicI64::new(connected_at));
    gw.registry.insert(
        id.clone(),
        Entry {
            tx,
            closer,
            connected_at,
            last_active: Arc::clone(&last_active),
            source_ip: peer.ip().to_string(),
            user_agent,
        },
    );
    let (mut sink, mut stream) = socket.split();
    let mut writer_close = close_rx.clone();
    let writer = tokio::spawn(async move {
        let send_queued = async {
            let frame = |out: Outbound| match out {
                Outbound::Text(t) => WsMessage::Text(t),
                Outbound::Binary(b) => WsMessage::Binary(b.into()),
            };
            // One write per burst, not per frame: a busy room queues many frames per socket
            // between two wake-ups, and a flush each costs a syscall each.
            while let Some(out) = rx.recv().await {
                if sink.feed(frame(out)).await.is_err() {
                    return;
                }
                while let Ok(more) = rx.try_recv() {
                    if sink.feed(frame(more)).await.is_err() {
                        return;
                    }
                }
                if sink.flush().await.is_err() {
                    return;
                }
            }
        };
        // A close request interrupts whatever is queued, even a send stuck on a full socket.
        // Biased: when the reader has both asked to close and dropped the queue's sender, the
        // close frame must still go out.
        let close = tokio::select! {
            biased;
            request = close_requested(&mut writer_close) => request,
            () = send_queued => None,
        };
        if let Some(CloseRequest { code, reason }) = close {
            let frame = WsMessage::Close(Some(CloseFrame {
                code,
                reason: reason.into(),
            }));
            let _ = tokio::time::timeout(CLOSE_WAIT, sink.send(frame)).await;
        } else {
            // The client closed: completing the handshake sends the reply the WebSocket layer
            // queued, so the client sees a clean close rather than 1006.
            let _ = tokio::time::timeout(CLOSE_WAIT, sink.close()).await;
        }
    });

    let started = tokio::time::Instant::now();
    let lifetime_end = started + gw.limits.max_lifetime;
    let mut idle_end = started + gw.limits.idle_timeout;
    let mut reader_close = close_rx;
    let (status, reason) = loop {
        let deadline = idle_end.min(lifetime_end);
        tokio::select! {
            next = stream.next() => {
                let now = gw.clock.now_ms();
                match next {
                    None => break (close::ABNORMAL, "client went away".to_owned()),
                    Some(Ok(WsMessage::Close(frame))) => {
                        break frame.map_or((close::NO_STATUS, String::new()), |f| (f.code, f.reason.to_string()));
                    }
                    Some(Ok(msg)) => {
                        idle_end = tokio::time::Instant::now() + gw.limits.idle_timeout;
                        last_active.store(now, Ordering::Relaxed);
                        let body = match msg {
                            WsMessage::Text(t) => Body::Text(t.to_string()),
                            WsMessage::Binary(b) => Body::Binary(b.to_vec()),
                            // Protocol pings are answered by the WebSocket layer and, as on API
                            // Gateway, never reach the backend; they do count as activity.
                            _ => continue,
                        };
                        route(&gw, &ctx, &id, connected_at, body).await;
                    }
                    Some(Err(e)) => {
                        if let Some((code, why)) = protocol_violation(e) {
                            gw.registry.close(&id, code, why);
                            break (code, why.to_owned());
                        }
                        break (close::ABNORMAL, "connection error".to_owned());
                    }
                }
            }
            () = tokio::time::sleep_until(deadline) => {
                let why = if deadline >= lifetime_end { "connection lifetime reached" } else { "idle timeout" };
                gw.registry.close(&id, close::GOING_AWAY, why);
                break (close::GOING_AWAY, why.to_owned());
            }
            Some(request) = close_requested(&mut reader_close) => {
                break (request.code, request.reason);
            }
        }
    };
    // From here on posts answer 410, as API Gateway's do once a connection is closing; then
    // $disconnect runs at once, whatever the client does with the close frame.
    gw.registry.remove(&id);
    disconnect(&gw, &ctx, &id, connected_at, status, &reason).await;
    let abort = writer.abort_handle();
    if tokio::time::timeout(CLOSE_WAIT, writer).await.is_err() {
        abort.abort();
    }
}

/// Resolves once the server asked to close the socket (`None` if the registry entry is gone).
async fn close_requested(rx: &mut watch::Receiver<Option<CloseRequest>>) -> Option<CloseRequest> {
    let request = rx.wait_for(Option::is_some).await.ok()?;
    request.clone()
}

/// How long the close frame may take to go out before the socket is simply dropped.
const CLOSE_WAIT: Duration = Duration::from_secs(2);

/// A read error the client caused, with the close code and reason that tell it so; `None` for a
/// broken connection, which gets no close frame (there is nobody to read it).
fn protocol_violation(e: axum::Error) -> Option<(u16, &'static str)> {
    match e.into_inner().downcast_ref::<tungstenite::Error>()? {
        tungstenite::Error::Capacity(_) => Some((close::TOO_BIG, "message too big")),
        // RFC 6455 §8.1: a text frame that is not UTF-8 fails the connection.
        tungstenite::Error::Utf8(_) => Some((close::INVALID_DATA, "text frame is not valid UTF-8")),
        _ => None,
    }
}

/// A data frame from the client, as API Gateway hands it on: text, or binary (base64 in the event).
enum Body {
    Text(String),
    Binary(Vec<u8>),
}

async fn route(gw: &Gateway, ctx: &WsContext, id: &ConnectionId, connected_at: i64, body: Body) {
    let (route_key, body, binary) = match body {
        Body::Text(text) => {
            let key = route_key(&text)
                .filter(|a| ACTIONS.contains(&a.as_str()))
                .unwrap_or_else(|| "$default".to_owned());
            (key, text, false)
        }
        Body::Binary(bytes) => ("$default".to_owned(), STANDARD.encode(bytes), true),
    };
    let now = gw.clock.now_ms();
    let event = WsEvent {
        body: Some(body),
        is_base64_encoded: binary,
        ..WsEvent::new(
            ctx,
            WsEventKind::Message { route_key },
            id.as_str(),
            connected_at,
            now,
            request_id(),
        )
    };
    chat_handlers::ws::handle(&gw.chat, event.to_request()).await;
}

async fn disconnect(
    gw: &Gateway,
    ctx: &WsContext,
    id: &ConnectionId,
    connected_at: i64,
    status: u16,
    reason: &str,
) {
    let now = gw.clock.now_ms();
    let kind = WsEventKind::Disconnect {
        status_code: i64::from(status),
        reason: reason.to_owned(),
    };
    let event = WsEvent::new(ctx, kind, id.as_str(), connected_at, now, request_id());
    let answer = chat_handlers::ws::handle(&gw.chat, event.to_request()).await;
    info!(connection = %id, status, reason, handler_status = answer.status_code, "disconnected");
}

// --- Management API -------------------------------------------------------------------------

fn gone(id: &str) -> Response {
    (
        StatusCode::GONE,
        [("x-amzn-errortype", "GoneException")],
        axum::Json(serde_json::json!({ "message": format!("connection {id} is gone") })),
    )
        .into_response()
}

fn iso(ms: i64) -> String {
    DateTime::<Utc>::from_timestamp_millis(ms)
        .unwrap_or_default()
        .to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// `/@connections` without an id: API Gateway answers `NotFoundException`, whatever the method.
async fn no_connection_id() -> Response {
    (
        StatusCode::NOT_FOUND,
        [("x-amzn-errortype", "NotFoundException")],
        axum::Json(serde_json::json!({
            "message": "no connection id: use /@connections/{connectionId}"
        })),
    )
        .into_response()
}

async fn post_to_connection(
    State(gw): State<Arc<Gateway>>,
    Path(id): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let limit = gw.limits.max_message_bytes;
    let too_large = |size: String| {
        (
            StatusCode::PAYLOAD_TOO_LARGE,
            [("x-amzn-errortype", "PayloadTooLargeException")],
            axum::Json(serde_json::json!({
                "message": format!("{size} bytes; the limit is {limit}")
            })),
        )
            .into_response()
    };
    let body = match body {
        Ok(body) if body.len() > limit => return too_large(body.len().to_string()),
        Ok(body) => body,
        Err(rejection) if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            return too_large(format!("over {limit}"));
        }
        Err(rejection) => {
            return (
                StatusCode::BAD_REQUEST,
                [("x-amzn-errortype", "BadRequestException")],
                axum::Json(serde_json::json!({ "message": rejection.body_text() })),
            )
                .into_response();
        }
    };
    let out = match String::from_utf8(body.to_vec()) {
        Ok(text) => Outbound::Text(text.into()),
        Err(e) => Outbound::Binary(e.into_bytes()),
    };
    match gw.registry.post(&ConnectionId::new(id.clone()), out) {
        Ok(()) => StatusCode::OK.into_response(),
        Err(PostError::Gone) => gone(&id),
        Err(PostError::Other(e)) => (
            StatusCode::TOO_MANY_REQUESTS,
            [("x-amzn-errortype", "LimitExceededException")],
            axum::Json(serde_json::json!({ "message": e })),
        )
            .into_response(),
    }
}

async fn describe_connection(State(gw): State<Arc<Gateway>>, Path(id): Path<String>) -> Response {
    match gw.registry.describe(&ConnectionId::new(id.clone())) {
        Some(d) => axum::Json(serde_json::json!({
            "connectedAt": iso(d.connected_at),
            "lastActiveAt": iso(d.last_active),
            "identity": { "sourceIp": d.source_ip, "userAgent": d.user_agent },
        }))
        .into_response(),
        None => gone(&id),
    }
}

async fn delete_connection(State(gw): State<Arc<Gateway>>, Path(id): Path<String>) -> Response {
    if gw.registry.close(
        &ConnectionId::new(id.clone()),
        close::NORMAL,
        "closed by DeleteConnection",
    ) {
        StatusCode::NO_CONTENT.into_response()
    } else {
        gone(&id)
    }
}

async fn post_staged(
    gw: State<Arc<Gateway>>,
    Path((_stage, id)): Path<(String, String)>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    post_to_connection(gw, Path(id), body).await
}

async fn describe_staged(
    gw: State<Arc<Gateway>>,
    Path((_stage, id)): Path<(String, String)>,
) -> Response {
    describe_connection(gw, Path(id)).await
}

async fn delete_staged(
    gw: State<Arc<Gateway>>,
    Path((_stage, id)): Path<(String, String)>,
) -> Response {
    delete_connection(gw, Path(id)).await
}
