//! The operator interface: what `chatctl tail`, `presence`, `recall`, `send`, `kick` and
//! `connections gc` do, written once over the chat ports (`chat-core`) and a Management API
//! client. Where the ports point — DynamoDB/SNS/API Gateway or the local SQLite files and gateway
//! — is [`crate::target`]'s business; the logic here is the same for both.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::Arc;
use std::time::Instant;

use chat_core::domain::{Connection, ConnectionId, Message, MessageId, Recall, RoomName, UserName};
use chat_core::handler::{ChatService, RecallError};
use chat_core::policy::PresencePolicy;
use chat_core::ports::PortError;
use chat_core::sweep::ProbeScope;
use serde::Serialize;

/// An operator command that could not be done.
#[derive(Debug, thiserror::Error)]
pub enum OpsError {
    #[error("{0}")]
    Port(#[from] PortError),
    #[error(transparent)]
    Recall(#[from] RecallError),
    #[error("no connection {0} is registered")]
    UnknownConnection(String),
    /// Closing or probing a connection needs the running gateway (local) or the stage's
    /// Management API.
    #[error("{0}")]
    NoManagement(String),
    #[error("the Management API refused {what}: {why}")]
    Management { what: String, why: String },
    #[error("{0}")]
    Target(String),
}

/// A message as operators see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MessageView {
    pub id: MessageId,
    pub room: RoomName,
    pub user: UserName,
    /// `None` once recalled.
    pub text: Option<String>,
    pub ts: i64,
    pub version: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recall: Option<Recall>,
}

impl From<&Message> for MessageView {
    fn from(m: &Message) -> Self {
        Self {
            id: m.id,
            room: m.room.clone(),
            user: m.user.clone(),
            text: m.text.clone(),
            ts: m.ts,
            version: m.version,
            recall: m.recall.clone(),
        }
    }
}

/// What `tail` prints: a message, or the recall of one it showed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "event", rename_all = "lowercase")]
pub enum TailEvent {
    Message(MessageView),
    #[serde(rename_all = "camelCase")]
    Recalled {
        id: MessageId,
        room: RoomName,
        by: UserName,
        at: i64,
        operator: bool,
        #[serde(skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
}

/// How far `tail` has read a room: the versions of the recent messages it has shown, and when
/// it started (what is older was shown, or left out on purpose).
#[derive(Debug, Clone, Default)]
pub struct TailCursor {
    seen: HashMap<MessageId, u32>,
    started_ms: i64,
}

/// How many of a room's newest messages each follow poll reads: new ones and recalls among
/// these show; a burst of more than this between two polls pages further back.
const FOLLOW_WINDOW: usize = 50;
/// How many pages a poll reads back at most when a burst outran it.
const FOLLOW_PAGES: usize = 20;
/// How many shown messages the cursor remembers (recalls of older ones are not reported).
const REMEMBERED: usize = 5_000;

/// One member of a room, merged over the user's connections.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MemberView {
    pub user: UserName,
    /// `online`, `idle`, or `stale`: the heartbeat is overdue (the connection is probably dead).
    pub state: &'static str,
    pub connected_at: i64,
    pub last_seen: i64,
    pub connections: Vec<ConnectionView>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ConnectionView {
    pub id: ConnectionId,
    pub connected_at: i64,
    pub last_seen: i64,
    pub state: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PresenceReport {
    pub room: RoomName,
    pub at: i64,
    /// Sorted by user name. All members, unless `truncated`: then the `count` freshest ones.
    pub members: Vec<MemberView>,
    /// Members in the room (one per user), also those a limit left out of `members`.
    pub count: usize,
    /// `members` was cut to a limit (see [`PresenceReport::limited`]).
    pub truncated: bool,
}

impl PresenceReport {
    /// Keep at most `limit` members: the most recently seen ones (who is active matters more in a
    /// big room than who connected first), still sorted by name. `count` stays the whole room's.
    #[must_use]
    pub fn limited(mut self, limit: usize) -> Self {
        if self.members.len() > limit {
            self.members.sort_by(|a, b| {
                b.last_seen
                    .cmp(&a.last_seen)
                    .then_with(|| a.user.cmp(&b.user))
            });
            self.members.truncate(limit);
            self.members.sort_by(|a, b| a.user.cmp(&b.user));
            self.truncated = true;
        }
        self
    }
}

/// What `kick` did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct KickReport {
    pub id: ConnectionId,
    pub user: Option<UserName>,
    /// The gateway closed the socket (false: it was already gone there).
    pub closed: bool,
    /// The connection was still registered and is now removed (its rooms hear `left`).
    pub removed: bool,
}

/// A connection `gc` found dead, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DeadConnection {
    pub id: ConnectionId,
    pub user: UserName,
    pub last_seen: i64,
    pub reason: &'static str,
}

/// What `connections gc` did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct GcReport {
    pub dry_run: bool,
    pub checked: usize,
    /// Management API probes made (connections whose heartbeat was not already overdue).
    pub probed: usize,
    pub dead: Vec<DeadConnection>,
    pub removed: usize,
    /// Probes that failed for another reason than 410 (the connection was kept), and removals
    /// that failed (try again).
    pub errors: usize,
    pub elapsed_ms: u64,
}

/// The presence state names operators see: the chat's own, plus `stale` past the idle limit.
fn state_name(policy: &PresencePolicy, last_seen: i64, now: i64) -> &'static str {
    match policy.state(last_seen, now) {
        Some(chat_core::domain::MemberState::Online) => "online",
        Some(chat_core::domain::MemberState::Idle) => "idle",
        None => "stale",
    }
}

/// The operator side of one target.
#[derive(Debug)]
pub struct Operator {
    chat: ChatService,
    management: Option<aws_sdk_apigatewaymanagement::Client>,
    /// Why there is no Management API (the local backend is not running).
    no_management: String,
    policy: PresencePolicy,
    /// How many connections `gc` probes at once.
    pub probe_concurrency: usize,
}

impl Operator {
    pub fn new(
        chat: ChatService,
        management: Result<aws_sdk_apigatewaymanagement::Client, String>,
    ) -> Self {
        let policy = chat.config().presence;
        let (management, no_management) = match management {
            Ok(client) => (Some(client), String::new()),
            Err(why) => (None, why),
        };
        Self {
            chat,
            management,
            no_management,
            policy,
            probe_concurrency: 32,
        }
    }

    /// The chat service the operator works through.
    pub fn chat(&self) -> &ChatService {
        &self.chat
    }

    fn now(&self) -> i64 {
        self.chat.ports().clock.now_ms()
    }

    fn management(&self) -> Result<&aws_sdk_apigatewaymanagement::Client, OpsError> {
        self.management
            .as_ref()
            .ok_or_else(|| OpsError::NoManagement(self.no_management.clone()))
    }

    /// The last `limit` messages of `room` (only those since `since_ms` when given), oldest
    /// first, and a cursor to follow the room from there.
    pub async fn tail_start(
        &self,
        room: &RoomName,
        limit: usize,
        since_ms: Option<i64>,
    ) -> Result<(Vec<TailEvent>, TailCursor), OpsError> {
        // Taken before reading, less a second: a message sent just before but stored just after
        // this read still shows on the first poll.
        let started_ms = self.now() - 1_000;
        let messages = &self.chat.ports().messages;
        let mut newest_first: Vec<Message> = Vec::new();
        let mut before = None;
        // Page back until `limit` messages, or past `since`.
        loop {
            let page = messages.history(room, before, limit.clamp(1, 100)).await?;
            let reached_since =
                since_ms.is_some_and(|s| page.messages.first().is_some_and(|m| m.ts < s));
            before = page.messages.first().map(|m| m.id);
            newest_first.extend(page.messages.into_iter().rev());
            if !page.more || reached_since || newest_first.len() >= limit || before.is_none() {
                break;
            }
        }
        newest_first.retain(|m| since_ms.is_none_or(|s| m.ts >= s));
        newest_first.truncate(limit);
        let mut cursor = TailCursor {
            seen: HashMap::new(),
            started_ms,
        };
        let events = newest_first
            .iter()
            .rev()
            .map(|m| {
                cursor.seen.insert(m.id, m.version);
                TailEvent::Message(m.into())
            })
            .collect();
        Ok((events, cursor))
    }

    /// What happened in `room` since the cursor: new messages, and recalls of recent ones. Reads
    /// the room's newest messages by key (never a scan).
    pub async fn tail_poll(
        &self,
        room: &RoomName,
        cursor: &mut TailCursor,
    ) -> Result<Vec<TailEvent>, OpsError> {
        let messages = &self.chat.ports().messages;
        let mut newest_first: Vec<Message> = Vec::new();
        let mut before = None;
        for _ in 0..FOLLOW_PAGES {
            let page = messages.history(room, before, FOLLOW_WINDOW).await?;
            // Stop once the page reaches what was shown, what is older than the start of tail
            // (when nothing was shown), or the room's start.
            let reached_known = page
                .messages
                .first()
                .is_some_and(|m| cursor.seen.contains_key(&m.id) || m.ts < cursor.started_ms);
            before = page.messages.first().map(|m| m.id);
            newest_first.extend(page.messages.into_iter().rev());
            if !page.more || reached_known || before.is_none() {
                break;
            }
        }
        let mut events = Vec::new();
        // Older than the start and never shown: left out on purpose (-n, --since).
        newest_first.retain(|m| m.ts >= cursor.started_ms || cursor.seen.contains_key(&m.id));
        for m in newest_first.iter().rev() {
            match cursor.seen.insert(m.id, m.version) {
                None => events.push(TailEvent::Message(m.into())),
                Some(shown) if shown < m.version => {
                    if let Some(r) = &m.recall {
                        events.push(TailEvent::Recalled {
                            id: m.id,
                            room: m.room.clone(),
                            by: r.by.clone(),
                            at: r.at,
                            operator: r.operator,
                            reason: r.reason.clone(),
                        });
                    }
                }
                Some(_) => {}
            }
        }
        if cursor.seen.len() > REMEMBERED {
            // Ids are ULIDs: the smallest are the oldest.
            let mut ids: Vec<MessageId> = cursor.seen.keys().copied().collect();
            ids.sort_unstable();
            for id in &ids[..ids.len() - REMEMBERED] {
                cursor.seen.remove(id);
            }
        }
        Ok(events)
    }

    /// The members of `room`, one per user, with each of their connections.
    pub async fn presence(&self, room: &RoomName) -> Result<PresenceReport, OpsError> {
        let now = self.now();
        let connections = self.chat.ports().connections.in_room(room).await?;
        let mut by_user: BTreeMap<UserName, Vec<Connection>> = BTreeMap::new();
        for c in connections {
            by_user.entry(c.user.clone()).or_default().push(c);
        }
        let members: Vec<MemberView> = by_user
            .into_iter()
            .map(|(user, mut conns)| {
                conns.sort_by_key(|c| c.connected_at);
                let last_seen = conns.iter().map(|c| c.last_seen).max().unwrap_or_default();
                let connected_at = conns
                    .iter()
                    .map(|c| c.connected_at)
                    .min()
                    .unwrap_or_default();
                MemberView {
                    state: state_name(&self.policy, last_seen, now),
                    user,
                    connected_at,
                    last_seen,
                    connections: conns
                        .iter()
                        .map(|c| ConnectionView {
                            id: c.id.clone(),
                            connected_at: c.connected_at,
                            last_seen: c.last_seen,
                            state: state_name(&self.policy, c.last_seen, now),
                        })
                        .collect(),
                }
            })
            .collect();
        Ok(PresenceReport {
            room: room.clone(),
            at: now,
            count: members.len(),
            truncated: false,
            members,
        })
    }

    /// Recall any message as operator `by`, with an optional reason: the same conditional,
    /// versioned update and `recalled` event as a sender's recall. A lost race is reported.
    pub async fn recall(
        &self,
        id: MessageId,
        by: UserName,
        reason: Option<String>,
    ) -> Result<Message, OpsError> {
        let recall = Recall {
            by,
            at: self.now(),
            operator: true,
            reason,
        };
        Ok(self.chat.try_recall(id, recall, |_| Ok(())).await?)
    }

    /// Every stored version of a message, oldest first (the audit trail).
    pub async fn versions(&self, id: MessageId) -> Result<Vec<Message>, OpsError> {
        Ok(self.chat.ports().messages.versions(id).await?)
    }

    /// An announcement to `room` from `user`, stored and delivered like any message.
    pub async fn send(
        &self,
        room: RoomName,
        user: UserName,
        text: String,
    ) -> Result<Message, OpsError> {
        Ok(self.chat.post_announcement(room, user, text).await?)
    }

    /// Close a connection through the Management API and remove it (its rooms hear `left`).
    pub async fn kick(&self, id: &ConnectionId) -> Result<KickReport, OpsError> {
        let registered = self.chat.ports().connections.get(id).await?;
        let management = self.management()?;
        let closed = match management
            .delete_connection()
            .connection_id(id.as_str())
            .send()
            .await
        {
            Ok(_) => true,
            Err(e) if is_gone(&e) => false,
            Err(e) => {
                return Err(OpsError::Management {
                    what: format!("closing connection {id}"),
                    why: aws_sdk_apigatewaymanagement::error::DisplayErrorContext(e).to_string(),
                });
            }
        };
        if registered.is_none() && !closed {
            return Err(OpsError::UnknownConnection(id.to_string()));
        }
        // The gateway's $disconnect removes it too; whichever comes first announces `left`.
        let removed = self.chat.ports().connections.get(id).await?.is_some();
        self.chat.disconnect(id).await?;
        Ok(KickReport {
            id: id.clone(),
            user: registered.map(|c| c.user),
            closed,
            removed,
        })
    }

    /// Find connections whose heartbeat stopped (past the idle limit) or that the Management API
    /// answers 410 for, and remove them — unless `dry_run`. The same logic as the scheduled
    /// sweep on AWS (`ChatService::find_dead`/`remove_dead`), probing every connection.
    pub async fn gc(&self, dry_run: bool) -> Result<GcReport, OpsError> {
        let started = Instant::now();
        // Probes and closes go through the Management API: refuse early without one.
        self.management()?;
        let scan = self
            .chat
            .find_dead(ProbeScope::All, self.probe_concurrency)
            .await?;
        let (removed, failed) = if dry_run {
            (0, 0)
        } else {
            // A removal that fails is counted, not fatal: the report still says what was done.
            self.chat
                .remove_dead(&scan.dead, self.probe_concurrency)
                .await
        };
        Ok(GcReport {
            dry_run,
            checked: scan.checked,
            probed: scan.probed,
            dead: scan
                .dead
                .iter()
                .map(|d| DeadConnection {
                    id: d.id.clone(),
                    user: d.user.clone(),
                    last_seen: d.last_seen,
                    reason: d.reason.as_str(),
                })
                .collect(),
            removed,
            errors: scan.errors + failed,
            elapsed_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
        })
    }
}

fn is_gone<R>(
    err: &aws_sdk_apigatewaymanagement::error::SdkError<
        aws_sdk_apigatewaymanagement::operation::delete_connection::DeleteConnectionError,
        R,
    >,
) -> bool {
    matches!(
        err.as_service_error(),
        Some(
            aws_sdk_apigatewaymanagement::operation::delete_connection::DeleteConnectionError::GoneException(_)
        )
    )
}

/// Milliseconds since the epoch as `HH:MM:SS` UTC, for aligned human output.
pub fn clock_time(ms: i64) -> String {
    let secs = ms.div_euclid(1000).rem_euclid(86_400);
    format!(
        "{:02}:{:02}:{:02}",
        secs / 3600,
        (secs / 60) % 60,
        secs % 60
    )
}

impl fmt::Display for PresenceReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.count == 0 {
            return write!(f, "room {}: nobody connected", self.room);
        }
        writeln!(
            f,
            "room {}: {} member{}",
            self.room,
            self.count,
            if self.count == 1 { "" } else { "s" }
        )?;
        let hidden = self.count.saturating_sub(self.members.len());
        let width = self
            .members
            .iter()
            .map(|m| m.user.as_str().chars().count())
            .max()
            .unwrap_or(4)
            .max(4);
        writeln!(
            f,
            "  {:<width$}  {:<6}  {:>9}  {:>9}  connections",
            "user", "state", "connected", "last seen"
        )?;
        for (i, m) in self.members.iter().enumerate() {
            let ids: Vec<&str> = m.connections.iter().map(|c| c.id.as_str()).collect();
            write!(
                f,
                "  {:<width$}  {:<6}  {:>9}  {:>9}  {}",
                m.user.as_str(),
                m.state,
                clock_time(m.connected_at),
                clock_time(m.last_seen),
                ids.join(", ")
            )?;
            if i + 1 < self.members.len() {
                writeln!(f)?;
            }
        }
        if hidden > 0 {
            if !self.members.is_empty() {
                writeln!(f)?;
            }
            write!(f, "  … and {hidden} more (use --limit or --output json)")?;
        }
        Ok(())
    }
}

impl fmt::Display for KickReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let who = self
            .user
            .as_ref()
            .map_or_else(String::new, |u| format!(" ({u})"));
        match (self.closed, self.removed) {
            (true, _) => write!(f, "closed connection {}{who}", self.id),
            (false, true) => write!(
                f,
                "connection {}{who} was already closed at the gateway; removed it",
                self.id
            ),
            (false, false) => write!(f, "connection {}{who} was already gone", self.id),
        }
    }
}

impl fmt::Display for GcReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for d in &self.dead {
            writeln!(
                f,
                "  {} {}  {:<14} last seen {}  ({})",
                if self.dry_run {
                    "would remove"
                } else {
                    "removed"
                },
                d.id,
                d.user.as_str(),
                clock_time(d.last_seen),
                d.reason
            )?;
        }
        write!(
            f,
            "checked {} connections ({} probed) in {} ms: {} dead{}{}",
            self.checked,
            self.probed,
            self.elapsed_ms,
            self.dead.len(),
            if self.dry_run {
                ", nothing removed (--dry-run)".to_owned()
            } else {
                format!(", {} removed", self.removed)
            },
            if self.errors > 0 {
                format!(
                    "; {} probes or removals failed (kept; run again)",
                    self.errors
                )
            } else {
                String::new()
            }
        )
    }
}

/// Used by targets: a chat service needs a sender even where nothing is posted.
pub(crate) type SharedSender = Arc<dyn chat_core::ports::ConnectionSender>;
