//! The ports the handler logic talks through. Cloud and local differ only in which adapters are
//! wired here: DynamoDB/SNS/Management API on AWS, SQLite/in-process topic/local gateway on one
//! machine, plain memory in unit tests.

use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use ulid::Ulid;

use crate::domain::{
    ClientMsgId, Connection, ConnectionId, Message, MessageId, Recall, RoomName, UserName,
};
use crate::protocol::ServerFrame;

/// A storage or transport failure in an adapter. The text names what failed; the handler turns it
/// into an `internal` error frame and a log line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct PortError(pub String);

impl PortError {
    pub fn new(context: impl std::fmt::Display) -> Self {
        Self(context.to_string())
    }
}

pub type PortResult<T> = Result<T, PortError>;

/// What [`MessageStore::append`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AppendOutcome {
    /// The message is durably stored.
    Stored,
    /// A message with the same room, user and client message id was stored before; here it is.
    Duplicate(Message),
}

/// What [`MessageStore::recall`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecallOutcome {
    /// The message is now the given tombstone; the previous version is kept for audit.
    Recalled(Message),
    /// The stored version is not the expected one: someone changed it first.
    VersionConflict,
    NotFound,
}

/// One page of a room's history, oldest first.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct HistoryPage {
    pub messages: Vec<Message>,
    /// True when further messages exist beyond this page in the direction read: older ones
    /// before the first (paging back), newer ones after the last (catching up).
    pub more: bool,
}

impl HistoryPage {
    /// A page from up to `limit + 1` messages read newest first: the extra one only tells that
    /// older messages exist.
    pub fn from_newest_first(mut messages: Vec<Message>, limit: usize) -> Self {
        let more = messages.len() > limit;
        messages.truncate(limit);
        messages.reverse();
        Self { messages, more }
    }

    /// A page from up to `limit + 1` messages read oldest first (catching up with `after`): the
    /// extra one only tells that newer messages exist.
    pub fn from_oldest_first(mut messages: Vec<Message>, limit: usize) -> Self {
        let more = messages.len() > limit;
        messages.truncate(limit);
        Self { messages, more }
    }
}

#[async_trait]
pub trait MessageStore: Send + Sync {
    /// Store a new message (version 1). Idempotent on (room, user, client message id) when the
    /// message carries one.
    async fn append(&self, message: &Message) -> PortResult<AppendOutcome>;

    /// Up to `limit` messages of `room` with ids below `before` (or the latest), oldest first.
    async fn history(
        &self,
        room: &RoomName,
        before: Option<MessageId>,
        limit: usize,
    ) -> PortResult<HistoryPage>;

    /// Up to `limit` messages of `room` with ids strictly above `after`, oldest first; `more`
    /// tells that newer messages exist beyond the last one. `after` need not name a stored
    /// message: ids are time-ordered, so any id is a cursor.
    async fn history_after(
        &self,
        room: &RoomName,
        after: MessageId,
        limit: usize,
    ) -> PortResult<HistoryPage>;

    /// A message by its id alone.
    async fn get(&self, id: MessageId) -> PortResult<Option<Message>>;

    /// Replace version `expected_version` of message `id` by its tombstone, atomically.
    async fn recall(
        &self,
        id: MessageId,
        expected_version: u32,
        recall: Recall,
    ) -> PortResult<RecallOutcome>;

    /// Every stored version of a message, oldest first (empty when unknown).
    async fn versions(&self, id: MessageId) -> PortResult<Vec<Message>>;

    /// The message that (room, user, client message id) produced, if any.
    async fn find_by_client_id(
        &self,
        room: &RoomName,
        user: &UserName,
        client_msg_id: &ClientMsgId,
    ) -> PortResult<Option<Message>>;
}

#[async_trait]
pub trait ConnectionStore: Send + Sync {
    async fn put(&self, connection: &Connection) -> PortResult<()>;
    async fn get(&self, id: &ConnectionId) -> PortResult<Option<Connection>>;
    /// Remove a connection and return what it was.
    async fn remove(&self, id: &ConnectionId) -> PortResult<Option<Connection>>;
    /// Add a room to a connection; false when the connection is unknown.
    async fn join(&self, id: &ConnectionId, room: &RoomName) -> PortResult<bool>;
    /// Remove a room from a connection; false when the connection is unknown.
    async fn leave(&self, id: &ConnectionId, room: &RoomName) -> PortResult<bool>;
    /// Record a heartbeat; returns the previous `last_seen`, `None` when the connection is unknown.
    async fn touch(&self, id: &ConnectionId, now: i64) -> PortResult<Option<i64>>;
    /// The connections that are members of `room` (by key or index, never a scan).
    async fn in_room(&self, room: &RoomName) -> PortResult<Vec<Connection>>;
    /// What a fan-out needs of a room's members: one key query where the store allows, with no
    /// read of each connection.
    async fn recipients(&self, room: &RoomName) -> PortResult<Vec<Recipient>> {
        Ok(self
            .in_room(room)
            .await?
            .iter()
            .map(Recipient::from)
            .collect())
    }
    /// The connections of `user` in `room`: what presence decisions on join and leave need,
    /// without reading the whole room where the store can avoid it.
    async fn user_in_room(&self, room: &RoomName, user: &UserName) -> PortResult<Vec<Connection>> {
        let mut connections = self.in_room(room).await?;
        connections.retain(|c| &c.user == user);
        Ok(connections)
    }
    /// Every connection: for maintenance sweeps and operator tools, not the message path.
    async fn all(&self) -> PortResult<Vec<Connection>>;
}

/// A member connection as the fan-out sees it: where to post, whose it is, and since when (a
/// 410 inside the upgrade grace is not a departure).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recipient {
    pub id: ConnectionId,
    pub user: UserName,
    pub connected_at: i64,
}

impl From<&Connection> for Recipient {
    fn from(c: &Connection) -> Self {
        Self {
            id: c.id.clone(),
            user: c.user.clone(),
            connected_at: c.connected_at,
        }
    }
}

/// A room event as it travels through the topic to the fan-out: the frame every member receives.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoomEvent {
    pub room: RoomName,
    pub frame: ServerFrame,
}

impl RoomEvent {
    pub fn new(room: RoomName, frame: ServerFrame) -> Self {
        Self { room, frame }
    }

    /// The event type used as a message attribute (`message`, `recalled`, `presence` …).
    pub fn kind(&self) -> &'static str {
        self.frame.kind()
    }
}

#[async_trait]
pub trait Topic: Send + Sync {
    async fn publish(&self, event: &RoomEvent) -> PortResult<()>;
}

/// Why a post to a connection failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PostError {
    /// The connection is gone (HTTP 410): remove it.
    #[error("connection is gone")]
    Gone,
    #[error("post failed: {0}")]
    Other(String),
}

/// Posts data to one connection: the API Gateway Management API's `PostToConnection`.
#[async_trait]
pub trait ConnectionSender: Send + Sync {
    async fn post(&self, id: &ConnectionId, data: &str) -> Result<(), PostError>;

    /// Post the same `data` to every connection in `ids`: one result per id, in the order of
    /// `ids`. The default keeps up to `concurrency` posts in flight (on AWS each is one HTTP
    /// call). A sender that reaches its sockets in-process overrides it to check the payload
    /// once and share one copy of it between all recipients — the fan-out's per-member cost.
    async fn post_all(
        &self,
        ids: &[&ConnectionId],
        data: &str,
        concurrency: usize,
    ) -> Vec<Result<(), PostError>> {
        use futures_util::StreamExt;
        use futures_util::stream::FuturesUnordered;
        // A hand-run window rather than `buffer_unordered` over a closure: the closure's
        // borrowed arguments make the boxed future fail `Send` under async_trait.
        let mut results: Vec<Option<Result<(), PostError>>> = vec![None; ids.len()];
        let mut in_flight = FuturesUnordered::new();
        let mut next = ids.iter().enumerate();
        loop {
            while in_flight.len() < concurrency.max(1) {
                let Some((i, id)) = next.next() else { break };
                in_flight.push(async move { (i, self.post(id, data).await) });
            }
            match in_flight.next().await {
                Some((i, result)) => results[i] = Some(result),
                None => break,
            }
        }
        results
            .into_iter()
            .map(|result| result.unwrap_or_else(|| Err(PostError::Other("not posted".into()))))
            .collect()
    }

    /// Whether the connection is still open: the Management API's `GetConnection` (`Gone` for a
    /// 410). Senders that cannot tell answer `Other`, and sweeps keep the connection.
    async fn probe(&self, id: &ConnectionId) -> Result<(), PostError> {
        let _ = id;
        Err(PostError::Other(
            "this sender cannot probe connections".into(),
        ))
    }

    /// Close the socket: the Management API's `DeleteConnection` (`Gone` when it was not open).
    async fn close(&self, id: &ConnectionId) -> Result<(), PostError> {
        let _ = id;
        Err(PostError::Other(
            "this sender cannot close connections".into(),
        ))
    }
}

/// Milliseconds since the epoch.
pub trait Clock: Send + Sync + std::fmt::Debug {
    fn now_ms(&self) -> i64;
}

/// The wall clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> i64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
    }
}

/// A clock that moves only when told to: for tests of presence thresholds and recall windows.
#[derive(Debug, Default)]
pub struct ManualClock(AtomicI64);

impl ManualClock {
    pub fn new(start_ms: i64) -> Self {
        Self(AtomicI64::new(start_ms))
    }

    pub fn advance(&self, ms: i64) {
        self.0.fetch_add(ms, Ordering::SeqCst);
    }

    pub fn set(&self, ms: i64) {
        self.0.store(ms, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> i64 {
        self.0.load(Ordering::SeqCst)
    }
}

/// Source of message ids.
pub trait IdSource: Send + Sync {
    fn next_id(&self, now_ms: i64) -> MessageId;
}

/// ULIDs that never go backwards within one process, even within one millisecond or when the clock
/// steps back, so that a room's messages sort in the order they were accepted.
#[derive(Debug, Default)]
pub struct MonotonicUlids {
    last: Mutex<Ulid>,
}

impl IdSource for MonotonicUlids {
    fn next_id(&self, now_ms: i64) -> MessageId {
        let fresh = Ulid::from_parts(
            u64::try_from(now_ms).unwrap_or(0),
            Ulid::generate().random(),
        );
        let mut last = self
            .last
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let next = if fresh > *last {
            fresh
        } else {
            last.increment().unwrap_or_else(|max| max)
        };
        *last = next;
        MessageId::from_ulid(next)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Posts that finish in reverse order of their start, and count how many run at once.
    struct Staggered {
        running: std::sync::atomic::AtomicUsize,
        most: std::sync::atomic::AtomicUsize,
    }

    #[async_trait]
    impl ConnectionSender for Staggered {
        async fn post(&self, id: &ConnectionId, _data: &str) -> Result<(), PostError> {
            let now = self.running.fetch_add(1, Ordering::SeqCst) + 1;
            self.most.fetch_max(now, Ordering::SeqCst);
            let n: u64 = id.as_str().parse().unwrap_or(0);
            tokio::time::sleep(std::time::Duration::from_millis(20 - n)).await;
            self.running.fetch_sub(1, Ordering::SeqCst);
            if n.is_multiple_of(3) {
                Err(PostError::Gone)
            } else {
                Ok(())
            }
        }
    }

    #[tokio::test]
    async fn post_all_keeps_the_order_of_ids_and_the_concurrency_bound() {
        let sender = Staggered {
            running: 0.into(),
            most: 0.into(),
        };
        let ids: Vec<ConnectionId> = (0..10).map(|n| ConnectionId::new(n.to_string())).collect();
        let refs: Vec<&ConnectionId> = ids.iter().collect();
        let results = sender.post_all(&refs, "x", 4).await;
        let expected: Vec<Result<(), PostError>> = (0..10)
            .map(|n: u64| {
                if n.is_multiple_of(3) {
                    Err(PostError::Gone)
                } else {
                    Ok(())
                }
            })
            .collect();
        assert_eq!(results, expected);
        assert_eq!(sender.most.load(Ordering::SeqCst), 4);
    }

    #[test]
    fn ids_are_monotonic_within_a_millisecond_and_when_time_steps_back() {
        let ids = MonotonicUlids::default();
        let mut prev = ids.next_id(1_000);
        for now in [1_000, 1_000, 999, 500, 1_000, 2_000] {
            let next = ids.next_id(now);
            assert!(next > prev, "{next} after {prev}");
            prev = next;
        }
        assert_eq!(prev.timestamp_ms(), 2_000);
    }

    #[test]
    fn manual_clock_moves_only_when_told() {
        let clock = ManualClock::new(10);
        assert_eq!(clock.now_ms(), 10);
        clock.advance(5);
        assert_eq!(clock.now_ms(), 15);
        clock.set(1);
        assert_eq!(clock.now_ms(), 1);
    }
}
