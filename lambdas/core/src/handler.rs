//! The handler logic: `$connect`, `$disconnect`, every client action, the fan-out of room events
//! and the presence sweep. Both the Lambda binaries and the local gateway call these entry points;
//! only the ports behind them differ.

use std::collections::BTreeSet;
use std::sync::Arc;

use serde::Serialize;
use tracing::{debug, warn};

use crate::domain::{
    ClientMsgId, Connection, ConnectionId, MemberState, Message, MessageId, PresenceChange, Recall,
    RoomName, UserName,
};
use crate::policy::{ChatConfig, RateLimiter};
use crate::ports::{
    AppendOutcome, Clock, ConnectionSender, ConnectionStore, IdSource, MessageStore, PortError,
    PostError, RecallOutcome, Recipient, RoomEvent, Topic,
};
use crate::presence::PresenceWindow;
use crate::protocol::{
    ClientFrame, ErrorCode, FrameError, HistoryCursor, HistoryItem, ServerFrame, client_ref,
    parse_client_frame,
};
use crate::token::{Claims, TokenError, TokenKey};

/// The adapters the logic runs on.
#[derive(Clone)]
pub struct Ports {
    pub messages: Arc<dyn MessageStore>,
    pub connections: Arc<dyn ConnectionStore>,
    pub topic: Arc<dyn Topic>,
    pub sender: Arc<dyn ConnectionSender>,
    pub clock: Arc<dyn Clock>,
    pub ids: Arc<dyn IdSource>,
}

impl std::fmt::Debug for Ports {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Ports { .. }")
    }
}

/// Who may connect.
#[derive(Debug, Clone)]
pub struct AuthConfig {
    /// The secret tokens are checked against; `None` accepts no token.
    pub key: Option<TokenKey>,
    /// Accept `?user=NAME` without a token (local development only).
    pub allow_anonymous: bool,
}

/// What the client put in the `$connect` query string.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConnectParams {
    pub room: Option<String>,
    pub token: Option<String>,
    pub user: Option<String>,
}

/// A refused upgrade: the HTTP status and a body for people.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{status}: {message}")]
pub struct ConnectRefusal {
    pub status: u16,
    pub message: String,
}

impl ConnectRefusal {
    fn new(status: u16, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
        }
    }
}

/// What one fan-out did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct FanoutReport {
    pub recipients: usize,
    pub delivered: usize,
    /// Connections that answered 410 and were removed.
    pub removed: Vec<ConnectionId>,
    /// Connections that answered 410 inside the upgrade grace period and were kept.
    pub kept_young: usize,
    pub failed: usize,
}

/// The chat backend's logic over its ports.
/// Why [`ChatService::try_recall`] did not recall a message.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RecallError {
    #[error("no message {0}")]
    NotFound(MessageId),
    #[error("message {id} was already recalled by {by}")]
    AlreadyRecalled {
        id: MessageId,
        by: UserName,
        at: i64,
    },
    /// Someone changed the message between our read and our conditional write.
    #[error("message {0} changed while it was being recalled (someone else recalled it first?)")]
    Conflict(MessageId),
    #[error("{}", .0.message)]
    Denied(FrameError),
    /// The tombstone is stored but the `recalled` event could not be published.
    #[error("recalled, but the broadcast failed: {0}")]
    Broadcast(PortError),
    #[error(transparent)]
    Port(#[from] PortError),
}

#[derive(Debug)]
pub struct ChatService {
    ports: Ports,
    config: ChatConfig,
    auth: AuthConfig,
    limiter: RateLimiter,
}

/// What a client action produced: frames for the caller, then events for its rooms. Replies are
/// posted before events are published, so a sender sees its `ack` before its own `message`.
#[derive(Debug, Default)]
struct Outcome {
    replies: Vec<ServerFrame>,
    events: Vec<RoomEvent>,
}

impl Outcome {
    fn reply(frame: ServerFrame) -> Self {
        Self {
            replies: vec![frame],
            events: vec![],
        }
    }

    fn then(mut self, event: RoomEvent) -> Self {
        self.events.push(event);
        self
    }
}

type Reply = Result<Outcome, FrameError>;

impl ChatService {
    pub fn new(ports: Ports, config: ChatConfig, auth: AuthConfig) -> Self {
        Self {
            ports,
            config,
            auth,
            limiter: RateLimiter::default(),
        }
    }

    pub fn config(&self) -> &ChatConfig {
        &self.config
    }

    pub fn ports(&self) -> &Ports {
        &self.ports
    }

    fn now(&self) -> i64 {
        self.ports.clock.now_ms()
    }

    /// `$connect`: authenticate, register the connection in its first room, announce the user.
    pub async fn connect(
        &self,
        id: ConnectionId,
        params: &ConnectParams,
    ) -> Result<Connection, ConnectRefusal> {
        let now = self.now();
        let room_raw = params.room.as_deref().ok_or_else(|| {
            ConnectRefusal::new(
                400,
                "the `room` query parameter is required, e.g. ?room=lobby",
            )
        })?;
        let room = RoomName::parse(room_raw)
            .map_err(|e| ConnectRefusal::new(400, format!("room: {e}")))?;
        let (user, allowed_rooms, operator) = self.authenticate(params, now)?;
        if let Some(allowed) = &allowed_rooms
            && !allowed.contains(&room)
        {
            return Err(ConnectRefusal::new(
                403,
                format!("the token does not allow room {room}"),
            ));
        }
        let connection = Connection {
            id,
            user,
            rooms: [room.clone()].into(),
            allowed_rooms,
            connected_at: now,
            last_seen: now,
            operator,
        };
        // Write first, then look: a departure racing this arrival then sees it (and says
        // nothing), and of two arrivals only the younger stays silent.
        self.ports
            .connections
            .put(&connection)
            .await
            .map_err(internal_refusal)?;
        let already_present = self
            .user_present_before(&room, &connection, now)
            .await
            .map_err(internal_refusal)?;
        if !already_present {
            self.announce(&room, &connection.user, PresenceChange::Joined, now)
                .await;
        }
        debug!(connection = %connection.id, user = %connection.user, %room, "connected");
        Ok(connection)
    }

    fn authenticate(
        &self,
        params: &ConnectParams,
        now: i64,
    ) -> Result<(UserName, Option<BTreeSet<RoomName>>, bool), ConnectRefusal> {
        match (&params.token, &self.auth.key) {
            (Some(token), Some(key)) => {
                let Claims { sub, rooms, op, .. } = key
                    .verify(token, now.div_euclid(1000))
                    .map_err(|e| match e {
                        TokenError::Malformed(_) => ConnectRefusal::new(401, e.to_string()),
                        TokenError::BadSignature | TokenError::Expired { .. } => {
                            ConnectRefusal::new(403, e.to_string())
                        }
                    })?;
                Ok((sub, rooms, op))
            }
            (Some(_), None) => Err(ConnectRefusal::new(
                403,
                "this server has no token secret configured, so no token is valid",
            )),
            (None, _) if self.auth.allow_anonymous => {
                let raw = params.user.as_deref().ok_or_else(|| {
                    ConnectRefusal::new(
                        401,
                        "pass ?token=TOKEN (mint one with `chatctl token --user NAME`) or ?user=NAME",
                    )
                })?;
                let user = UserName::parse(raw)
                    .map_err(|e| ConnectRefusal::new(400, format!("user: {e}")))?;
                Ok((user, None, false))
            }
            (None, _) => Err(ConnectRefusal::new(
                401,
                "a token is required: pass ?token=TOKEN (mint one with `chatctl token --user NAME`)",
            )),
        }
    }

    /// `$disconnect`: forget the connection; announce users who left their last connection in a room.
    pub async fn disconnect(&self, id: &ConnectionId) -> Result<(), PortError> {
        self.limiter.forget(id);
        let Some(connection) = self.ports.connections.remove(id).await? else {
            return Ok(());
        };
        self.announce_departure(&connection, self.now()).await?;
        debug!(connection = %id, user = %connection.user, "disconnected");
        Ok(())
    }

    /// After `connection` was removed: `left` in each room where it was the user's last live
    /// connection. A connection already gone by its heartbeat was announced by the sweep.
    async fn announce_departure(&self, connection: &Connection, now: i64) -> Result<(), PortError> {
        // Announced even when the sweep already said `left` for a silent connection: there is no
        // sweep on AWS yet, and a repeated hint is better than a member who never leaves.
        for room in &connection.rooms {
            if !self
                .user_connections_in(room, &connection.user, Some(&connection.id), now)
                .await?
            {
                self.announce(room, &connection.user, PresenceChange::Left, now)
                    .await;
            }
        }
        Ok(())
    }

    /// A frame on any other route: parse it, act, and reply to the sender through the sender port.
    /// Returns the frames posted back, for logs and tests.
    pub async fn frame(&self, id: &ConnectionId, body: &str) -> Vec<ServerFrame> {
        let outcome = match self.handle_frame(id, body).await {
            Ok(outcome) => outcome,
            Err(err) => Outcome::reply(err.to_frame()),
        };
        let mut sent = outcome.replies;
        for frame in &sent {
            self.reply(id, frame).await;
        }
        for event in outcome.events {
            if let Err(err) = self.publish(event).await {
                let frame = err.with_ref(client_ref(body)).to_frame();
                self.reply(id, &frame).await;
                sent.push(frame);
            }
        }
        sent
    }

    /// Answer a frame that never reached parsing (a binary frame, say) with an error frame.
    pub async fn refuse(&self, id: &ConnectionId, err: FrameError) {
        let err = if self.limiter.allow(&self.config.rate_limit, id, self.now()) {
            err
        } else {
            FrameError::new(
                ErrorCode::RateLimited,
                "too many frames; slow down and retry",
            )
        };
        self.reply(id, &err.to_frame()).await;
    }

    async fn handle_frame(&self, id: &ConnectionId, body: &str) -> Reply {
        let now = self.now();
        if !self.limiter.allow(&self.config.rate_limit, id, now) {
            return Err(FrameError::new(
                ErrorCode::RateLimited,
                format!(
                    "more than {} frames per second; slow down and retry",
                    self.config.rate_limit.per_second
                ),
            )
            .with_ref(client_ref(body)));
        }
        let frame = parse_client_frame(body, &self.config.frames)?;
        let reference = match &frame {
            ClientFrame::Send { client_msg_id, .. } => {
                client_msg_id.as_ref().map(|c| c.as_str().to_owned())
            }
            _ => None,
        };
        let connection = self
            .ports
            .connections
            .get(id)
            .await
            .map_err(internal)?
            .ok_or_else(not_registered)?;
        match frame {
            ClientFrame::Send {
                room,
                text,
                client_msg_id,
            } => self.send(&connection, room, text, client_msg_id, now).await,
            ClientFrame::History {
                room,
                cursor,
                limit,
            } => self.history(&connection, room, cursor, limit).await,
            ClientFrame::Recall { id } => self.recall(&connection, id, now).await,
            ClientFrame::Join { room } => self.join(&connection, room, now).await,
            ClientFrame::Leave { room } => self.leave(&connection, room, now).await,
            ClientFrame::Presence { room } => self.presence(&connection, room, now).await,
            ClientFrame::Ping => self.ping(&connection, now).await,
        }
        .map_err(|e| e.with_ref(reference))
    }

    async fn send(
        &self,
        connection: &Connection,
        room: RoomName,
        text: String,
        client_msg_id: Option<ClientMsgId>,
        now: i64,
    ) -> Reply {
        if !connection.rooms.contains(&room) {
            return Err(FrameError::new(
                ErrorCode::Forbidden,
                format!("join room {room} before sending to it"),
            ));
        }
        // A retried send usually finds its first copy here, before spending an id.
        if let Some(key) = &client_msg_id
            && let Some(existing) = self
                .ports
                .messages
                .find_by_client_id(&room, &connection.user, key)
                .await
                .map_err(internal)?
        {
            return Ok(Outcome::reply(ack(&existing, true)));
        }
        let message = Message {
            id: self.ports.ids.next_id(now),
            room: room.clone(),
            user: connection.user.clone(),
            text: Some(text),
            ts: now,
            client_msg_id,
            version: 1,
            recall: None,
        };
        match self
            .ports
            .messages
            .append(&message)
            .await
            .map_err(internal)?
        {
            AppendOutcome::Duplicate(existing) => Ok(Outcome::reply(ack(&existing, true))),
            AppendOutcome::Stored => {
                let mut outcome = Outcome::reply(ack(&message, false));
                // Sending is a sign of life as good as a ping; a failed heartbeat only ages
                // presence, it must not hide the stored message.
                match self.heartbeat(connection, now).await {
                    Ok(events) => outcome.events = events,
                    Err(e) => {
                        warn!(connection = %connection.id, error = %e.message, "heartbeat update failed")
                    }
                }
                if let Some(frame) = ServerFrame::message(&message) {
                    outcome = outcome.then(RoomEvent::new(room, frame));
                }
                Ok(outcome)
            }
        }
    }

    async fn history(
        &self,
        connection: &Connection,
        room: RoomName,
        cursor: HistoryCursor,
        limit: usize,
    ) -> Reply {
        self.check_may_read(connection, &room)?;
        let messages = &self.ports.messages;
        let page = match cursor {
            HistoryCursor::Latest => messages.history(&room, None, limit).await,
            HistoryCursor::Before(before) => messages.history(&room, Some(before), limit).await,
            HistoryCursor::After(after) => messages.history_after(&room, after, limit).await,
        }
        .map_err(internal)?;
        let mut messages: Vec<HistoryItem> = page.messages.iter().map(HistoryItem::from).collect();
        let mut more = page.more;
        // A reply must fit in one Management API post (128 KB): 50 messages of 4 KB do not, so
        // the page gives up the messages farthest from its cursor — the oldest when paging back,
        // the newest when catching up, so a gap still fills without a hole — and `more` tells
        // the client to ask again.
        let sizes: Vec<usize> = messages
            .iter()
            .map(|m| serde_json::to_string(m).map_or(0, |s| s.len() + 1))
            .collect();
        let budget = self.config.max_reply_bytes;
        let mut total: usize = sizes.iter().sum::<usize>() + 256 + room.as_str().len();
        let mut keep = messages.len();
        let catching_up = matches!(cursor, HistoryCursor::After(_));
        while total > budget && keep > 1 {
            let dropped = if catching_up {
                keep - 1
            } else {
                messages.len() - keep
            };
            total -= sizes[dropped];
            keep -= 1;
        }
        if keep < messages.len() {
            if catching_up {
                messages.truncate(keep);
            } else {
                messages.drain(..messages.len() - keep);
            }
            more = true;
        }
        Ok(Outcome::reply(ServerFrame::History {
            room,
            messages,
            more,
        }))
    }

    async fn recall(&self, connection: &Connection, id: MessageId, now: i64) -> Reply {
        let recall = Recall {
            by: connection.user.clone(),
            at: now,
            operator: connection.operator,
            reason: None,
        };
        let message = self.recall_message(id, recall, |message| {
            if connection.operator {
                return if connection.may_enter(&message.room) {
                    Ok(())
                } else {
                    Err(FrameError::new(
                        ErrorCode::Forbidden,
                        format!("your operator token does not cover room {}", message.room),
                    ))
                };
            }
            if message.user != connection.user {
                return Err(FrameError::new(
                    ErrorCode::Forbidden,
                    "only the sender or an operator may recall a message",
                ));
            }
            let age = now.saturating_sub(message.ts);
            if age > self.config.recall_window_ms {
                return Err(FrameError::new(
                    ErrorCode::Forbidden,
                    format!(
                        "the recall window of {} s has passed (message is {} s old)",
                        self.config.recall_window_ms / 1000,
                        age / 1000
                    ),
                ));
            }
            Ok(())
        });
        let tombstone = message.await?;
        // Members hear of it through the room; a recaller outside the room (an operator) is told
        // directly.
        Ok(if connection.rooms.contains(&tombstone.room) {
            Outcome::default()
        } else {
            Outcome::reply(ServerFrame::Recalled {
                room: tombstone.room.clone(),
                id,
                by: connection.user.clone(),
                ts: now,
            })
        })
    }

    /// Recall a message as `recall.by`, once: the versioned, conditional update of the store,
    /// then the `recalled` event to the room. `permit` decides first whether this caller may
    /// (a sender within the window, an operator always). A lost race is reported, not retried.
    pub async fn try_recall(
        &self,
        id: MessageId,
        recall: Recall,
        permit: impl Fn(&Message) -> Result<(), FrameError>,
    ) -> Result<Message, RecallError> {
        let message = self
            .ports
            .messages
            .get(id)
            .await?
            .ok_or(RecallError::NotFound(id))?;
        // Permission first, so that who may not recall a message learns nothing more of it.
        permit(&message).map_err(RecallError::Denied)?;
        if let Some(earlier) = &message.recall {
            return Err(RecallError::AlreadyRecalled {
                id,
                by: earlier.by.clone(),
                at: earlier.at,
            });
        }
        match self
            .ports
            .messages
            .recall(id, message.version, recall.clone())
            .await?
        {
            RecallOutcome::Recalled(tombstone) => {
                let frame = ServerFrame::Recalled {
                    room: tombstone.room.clone(),
                    id,
                    by: recall.by.clone(),
                    ts: recall.at,
                };
                self.ports
                    .topic
                    .publish(&RoomEvent::new(tombstone.room.clone(), frame))
                    .await
                    .map_err(RecallError::Broadcast)?;
                Ok(tombstone)
            }
            RecallOutcome::NotFound => Err(RecallError::NotFound(id)),
            RecallOutcome::VersionConflict => Err(RecallError::Conflict(id)),
        }
    }

    /// An operator's announcement to `room` as `user`: stored like any message (history shows it,
    /// it can be recalled) and delivered through the same topic and fan-out. Needs no connection.
    pub async fn post_announcement(
        &self,
        room: RoomName,
        user: UserName,
        text: String,
    ) -> Result<Message, PortError> {
        let now = self.now();
        let message = Message {
            id: self.ports.ids.next_id(now),
            room: room.clone(),
            user,
            text: Some(text),
            ts: now,
            client_msg_id: None,
            version: 1,
            recall: None,
        };
        self.ports.messages.append(&message).await?;
        if let Some(frame) = ServerFrame::message(&message) {
            self.ports
                .topic
                .publish(&RoomEvent::new(room, frame))
                .await
                .map_err(|e| {
                    PortError::new(format!(
                        "stored as {}, but the broadcast failed: {e}",
                        message.id
                    ))
                })?;
        }
        Ok(message)
    }

    /// A client's `recall`: [`Self::try_recall`], with a lost race retried once against the fresh
    /// version, which then tells whether the winner already recalled it.
    pub async fn recall_message(
        &self,
        id: MessageId,
        recall: Recall,
        permit: impl Fn(&Message) -> Result<(), FrameError>,
    ) -> Result<Message, FrameError> {
        for _ in 0..2 {
            match self.try_recall(id, recall.clone(), &permit).await {
                Ok(tombstone) => return Ok(tombstone),
                Err(RecallError::Conflict(_)) => continue,
                Err(RecallError::Denied(e)) => return Err(e),
                Err(RecallError::NotFound(id)) => {
                    return Err(FrameError::new(
                        ErrorCode::NotFound,
                        format!("no message {id}"),
                    ));
                }
                Err(RecallError::AlreadyRecalled { id, .. }) => {
                    return Err(FrameError::new(
                        ErrorCode::BadRequest,
                        format!("message {id} is already recalled"),
                    ));
                }
                Err(RecallError::Broadcast(e)) => {
                    warn!(error = %e, "publish failed");
                    return Err(FrameError::new(
                        ErrorCode::Internal,
                        format!("stored, but the broadcast failed: {e}"),
                    ));
                }
                Err(RecallError::Port(e)) => return Err(internal(e)),
            }
        }
        Err(FrameError::new(
            ErrorCode::Internal,
            format!("message {id} kept changing while it was being recalled; retry"),
        ))
    }

    async fn join(&self, connection: &Connection, room: RoomName, now: i64) -> Reply {
        if !connection.may_enter(&room) {
            return Err(FrameError::new(
                ErrorCode::Forbidden,
                format!("your token does not allow room {room}"),
            ));
        }
        let mut announce = false;
        if !connection.rooms.contains(&room)
            && connection.rooms.len() >= self.config.max_rooms_per_connection
        {
            return Err(FrameError::new(
                ErrorCode::BadRequest,
                format!(
                    "this connection is already in {} rooms, the most allowed; leave one first",
                    connection.rooms.len()
                ),
            ));
        }
        if !connection.rooms.contains(&room) {
            let registered = self
                .ports
                .connections
                .join(&connection.id, &room)
                .await
                .map_err(internal)?;
            if !registered {
                return Err(not_registered());
            }
            announce = !self
                .user_present_before(&room, connection, now)
                .await
                .map_err(internal)?;
        }
        let outcome = self.presence(connection, room.clone(), now).await?;
        Ok(if announce {
            outcome.then(presence_event(
                &room,
                &connection.user,
                PresenceChange::Joined,
                now,
            ))
        } else {
            outcome
        })
    }

    async fn leave(&self, connection: &Connection, room: RoomName, now: i64) -> Reply {
        if !connection.rooms.contains(&room) {
            return Err(FrameError::new(
                ErrorCode::NotFound,
                format!("this connection is not in room {room}"),
            ));
        }
        self.ports
            .connections
            .leave(&connection.id, &room)
            .await
            .map_err(internal)?;
        let still_present = self
            .user_connections_in(&room, &connection.user, Some(&connection.id), now)
            .await
            .map_err(internal)?;
        // The leaver no longer receives the room's events, so it is told directly.
        let mut outcome = Outcome::reply(presence_frame(
            &room,
            &connection.user,
            PresenceChange::Left,
            now,
        ));
        if !still_present {
            outcome = outcome.then(presence_event(
                &room,
                &connection.user,
                PresenceChange::Left,
                now,
            ));
        }
        Ok(outcome)
    }

    async fn presence(&self, connection: &Connection, room: RoomName, now: i64) -> Reply {
        self.check_may_read(connection, &room)?;
        let connections = self
            .ports
            .connections
            .in_room(&room)
            .await
            .map_err(internal)?;
        let mut members = self.config.presence.members(&connections, now);
        let count = members.len();
        // Like history, the answer must fit one post: keep the freshest members, in name order.
        let sizes: Vec<usize> = members
            .iter()
            .map(|m| serde_json::to_string(m).map_or(0, |s| s.len() + 1))
            .collect();
        let mut truncated = false;
        if sizes.iter().sum::<usize>() + 256 > self.config.max_reply_bytes {
            let mut by_freshness: Vec<usize> = (0..members.len()).collect();
            by_freshness.sort_by_key(|&i| std::cmp::Reverse(members[i].last_seen));
            let mut keep = vec![false; members.len()];
            let mut total = 256;
            for i in by_freshness {
                if total + sizes[i] > self.config.max_reply_bytes {
                    break;
                }
                total += sizes[i];
                keep[i] = true;
            }
            let mut flags = keep.into_iter();
            members.retain(|_| flags.next().unwrap_or(false));
            truncated = true;
        }
        Ok(Outcome::reply(ServerFrame::Members {
            members,
            room,
            truncated,
            count,
        }))
    }

    async fn ping(&self, connection: &Connection, now: i64) -> Reply {
        let events = self.heartbeat(connection, now).await?;
        let mut outcome = Outcome::reply(ServerFrame::Pong { ts: now });
        outcome.events = events;
        Ok(outcome)
    }

    /// Record a sign of life. A user who was idle is announced `online` again, one who counted
    /// as gone `joined` again, in each room where no other connection of theirs kept them so.
    async fn heartbeat(
        &self,
        connection: &Connection,
        now: i64,
    ) -> Result<Vec<RoomEvent>, FrameError> {
        let policy = self.config.presence;
        // Seen moments ago (the record was read for this very frame): the member is online and
        // stays so, and a write would change nothing anyone can see, since presence moves in
        // tens of seconds. Skipping it saves a store write per message of a busy sender — a
        // DynamoDB write on AWS, a SQLite transaction locally.
        if now.saturating_sub(connection.last_seen) < policy.heartbeat_write_interval_ms() {
            return Ok(vec![]);
        }
        let previous = self
            .ports
            .connections
            .touch(&connection.id, now)
            .await
            .map_err(internal)?
            .unwrap_or(now);
        if policy.state(previous, now) == Some(MemberState::Online) {
            return Ok(vec![]);
        }
        let mut events = vec![];
        for room in &connection.rooms {
            let others = self
                .ports
                .connections
                .user_in_room(room, &connection.user)
                .await
                .map_err(internal)?;
            let freshest = others
                .iter()
                .filter(|c| c.id != connection.id)
                .map(|c| c.last_seen)
                .fold(previous, i64::max);
            let change = match policy.state(freshest, now) {
                Some(MemberState::Online) => None,
                Some(MemberState::Idle) => Some(PresenceChange::Online),
                None => Some(PresenceChange::Joined),
            };
            if let Some(change) = change {
                events.push(presence_event(room, &connection.user, change, now));
            }
        }
        Ok(events)
    }

    /// Announce users whose freshest heartbeat crossed the online or idle threshold in
    /// `(since, now]`: `idle`, then (after the idle threshold) `left`. Run it periodically.
    pub async fn sweep_presence(&self, since: i64, now: i64) -> Result<usize, PortError> {
        let policy = self.config.presence;
        let connections = self.ports.connections.all().await?;
        let mut freshest: std::collections::BTreeMap<(&RoomName, &UserName), i64> =
            std::collections::BTreeMap::new();
        for c in &connections {
            for room in &c.rooms {
                let seen = freshest.entry((room, &c.user)).or_insert(c.last_seen);
                *seen = (*seen).max(c.last_seen);
            }
        }
        let mut announced = 0;
        for ((room, user), last_seen) in freshest {
            let before = policy.state(last_seen, since);
            let after = policy.state(last_seen, now);
            let change = match (before, after) {
                (Some(a), Some(b)) if a != b => Some(PresenceChange::from(b)),
                (Some(_), None) => Some(PresenceChange::Left),
                _ => None,
            };
            if let Some(change) = change {
                self.announce(room, user, change, now).await;
                announced += 1;
            }
        }
        Ok(announced)
    }

    /// Deliver one room event to every connection in the room: [`Self::fanout_batch`] of one.
    pub async fn fanout(&self, event: &RoomEvent) -> Result<FanoutReport, PortError> {
        Ok(self
            .fanout_batch(std::slice::from_ref(event))
            .await?
            .pop()
            .unwrap_or_default())
    }

    /// Deliver a batch of room events (one SNS or SQS batch, one local lane's drain), one
    /// report per room in order of first appearance. Per room: one recipients read; the chat
    /// events (`message`, `recalled` …) in their order, each to every member before the next;
    /// then the room's presence changes coalesced into at most one frame, after the messages —
    /// presence is the lower priority. A 410 removes that connection (never another), unless it
    /// is still inside its upgrade grace.
    pub async fn fanout_batch(&self, events: &[RoomEvent]) -> Result<Vec<FanoutReport>, PortError> {
        let mut rooms: Vec<(&RoomName, Vec<&RoomEvent>)> = Vec::new();
        for event in events {
            match rooms.iter_mut().find(|(room, _)| *room == &event.room) {
                Some((_, list)) => list.push(event),
                None => rooms.push((&event.room, vec![event])),
            }
        }
        let mut reports = Vec::with_capacity(rooms.len());
        for (room, room_events) in rooms {
            reports.push(self.fanout_room(room, &room_events).await?);
        }
        Ok(reports)
    }

    async fn fanout_room(
        &self,
        room: &RoomName,
        events: &[&RoomEvent],
    ) -> Result<FanoutReport, PortError> {
        let mut recipients = self.ports.connections.recipients(room).await?;
        let mut window = PresenceWindow::default();
        let mut report = FanoutReport {
            recipients: recipients.len(),
            ..FanoutReport::default()
        };
        for event in events {
            if !window.push_frame(&event.frame) {
                self.deliver(&mut recipients, &event.frame.to_json(), &mut report)
                    .await;
            }
        }
        let members = recipients
            .iter()
            .map(|r| &r.user)
            .collect::<BTreeSet<_>>()
            .len();
        if let Some(frame) = window.into_frame(room, members, &self.config.presence_push) {
            self.deliver(&mut recipients, &frame.to_json(), &mut report)
                .await;
        }
        Ok(report)
    }

    /// Post `data` to every recipient with bounded concurrency, count the outcome in `report`,
    /// and drop the connections that answered 410 from `recipients` (removing them from the
    /// store and announcing their departure) so later frames of the batch skip them.
    async fn deliver(
        &self,
        recipients: &mut Vec<Recipient>,
        data: &str,
        report: &mut FanoutReport,
    ) {
        let now = self.now();
        let ids: Vec<&ConnectionId> = recipients.iter().map(|r| &r.id).collect();
        let results = self
            .ports
            .sender
            .post_all(&ids, data, self.config.fanout_concurrency)
            .await;
        let mut gone = BTreeSet::new();
        for (i, result) in results.into_iter().enumerate() {
            // One result per id is the sender's contract; a short answer leaves the rest
            // uncounted rather than panicking on a sender's bug.
            let Some(recipient) = recipients.get(i) else {
                break;
            };
            match result {
                Ok(()) => report.delivered += 1,
                Err(PostError::Gone)
                    if now - recipient.connected_at < self.config.gone_grace_ms =>
                {
                    report.kept_young += 1;
                }
                Err(PostError::Gone) => {
                    gone.insert(i);
                    // Remove exactly this connection; if it was still registered, its user may
                    // have left the room with it. A failure here is logged, not returned: the
                    // posts are done, and failing the batch would have it delivered again.
                    match self.ports.connections.remove(&recipient.id).await {
                        Ok(Some(removed)) => {
                            if let Err(e) = self.announce_departure(&removed, now).await {
                                warn!(connection = %recipient.id, error = %e, "departure not announced");
                            }
                        }
                        Ok(None) => {}
                        Err(e) => {
                            warn!(connection = %recipient.id, error = %e, "gone connection not removed");
                            report.failed += 1;
                            continue;
                        }
                    }
                    self.limiter.forget(&recipient.id);
                    report.removed.push(recipient.id.clone());
                }
                Err(PostError::Other(e)) => {
                    warn!(connection = %recipient.id, error = %e, "fan-out post failed");
                    report.failed += 1;
                }
            }
        }
        if !gone.is_empty() {
            let mut index = 0;
            recipients.retain(|_| {
                let keep = !gone.contains(&index);
                index += 1;
                keep
            });
        }
    }

    async fn reply(&self, id: &ConnectionId, frame: &ServerFrame) {
        match self.ports.sender.post(id, &frame.to_json()).await {
            Ok(()) | Err(PostError::Gone) => {}
            Err(PostError::Other(e)) => {
                warn!(connection = %id, error = %e, kind = frame.kind(), "reply failed");
            }
        }
    }

    async fn publish(&self, event: RoomEvent) -> Result<(), FrameError> {
        self.ports.topic.publish(&event).await.map_err(|e| {
            warn!(room = %event.room, kind = event.kind(), error = %e, "publish failed");
            FrameError::new(
                ErrorCode::Internal,
                format!("stored, but the broadcast failed: {e}"),
            )
        })
    }

    /// Presence changes are best effort: a failed announcement is logged, never fatal.
    async fn announce(&self, room: &RoomName, user: &UserName, state: PresenceChange, now: i64) {
        let _ = self.publish(presence_event(room, user, state, now)).await;
    }

    /// Whether the user of `connection` has another live connection in `room` that arrived
    /// before it (older `connected_at`, ties broken by id).
    async fn user_present_before(
        &self,
        room: &RoomName,
        connection: &Connection,
        now: i64,
    ) -> Result<bool, PortError> {
        let policy = self.config.presence;
        let mine = self
            .ports
            .connections
            .user_in_room(room, &connection.user)
            .await?;
        Ok(mine.iter().any(|c| {
            c.id != connection.id
                && (c.connected_at, &c.id) < (connection.connected_at, &connection.id)
                && policy.state(c.last_seen, now).is_some()
        }))
    }

    /// Whether `user` has another live connection (not gone by its heartbeat) in `room`.
    async fn user_connections_in(
        &self,
        room: &RoomName,
        user: &UserName,
        except: Option<&ConnectionId>,
        now: i64,
    ) -> Result<bool, PortError> {
        let policy = self.config.presence;
        let theirs = self.ports.connections.user_in_room(room, user).await?;
        Ok(theirs
            .iter()
            .any(|c| Some(&c.id) != except && policy.state(c.last_seen, now).is_some()))
    }

    fn check_may_read(&self, connection: &Connection, room: &RoomName) -> Result<(), FrameError> {
        if connection.rooms.contains(room) || connection.may_enter(room) {
            Ok(())
        } else {
            Err(FrameError::new(
                ErrorCode::Forbidden,
                format!("your token does not allow room {room}"),
            ))
        }
    }
}

fn presence_frame(room: &RoomName, user: &UserName, state: PresenceChange, ts: i64) -> ServerFrame {
    ServerFrame::Presence {
        room: room.clone(),
        user: user.clone(),
        state,
        ts,
    }
}

fn presence_event(room: &RoomName, user: &UserName, state: PresenceChange, ts: i64) -> RoomEvent {
    RoomEvent::new(room.clone(), presence_frame(room, user, state, ts))
}

fn ack(message: &Message, duplicate: bool) -> ServerFrame {
    ServerFrame::Ack {
        client_msg_id: message.client_msg_id.clone(),
        id: message.id,
        ts: message.ts,
        duplicate,
    }
}

fn not_registered() -> FrameError {
    FrameError::new(
        ErrorCode::Forbidden,
        "this connection is not registered (it may have been removed); reconnect",
    )
}

fn internal(e: PortError) -> FrameError {
    warn!(error = %e, "storage failure");
    FrameError::new(
        ErrorCode::Internal,
        "the server could not complete this; retry",
    )
}

fn internal_refusal(e: PortError) -> ConnectRefusal {
    warn!(error = %e, "storage failure during $connect");
    ConnectRefusal::new(500, "the server could not register the connection; retry")
}
