//! In-memory adapters of every port: the reference behaviour the SQLite and DynamoDB adapters are
//! held to, and the fixture the handler's unit tests run on. Not durable; not for production.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Mutex;

use async_trait::async_trait;

use crate::domain::{
    ClientMsgId, Connection, ConnectionId, Message, MessageId, Recall, RoomName, UserName,
};
use crate::ports::{
    AppendOutcome, ConnectionSender, ConnectionStore, HistoryPage, MessageStore, PortResult,
    PostError, RecallOutcome, RoomEvent, Topic,
};

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[derive(Debug, Default)]
struct Messages {
    /// Every version of every message, oldest first.
    versions: BTreeMap<MessageId, Vec<Message>>,
    by_client_id: HashMap<(RoomName, UserName, ClientMsgId), MessageId>,
}

#[derive(Debug, Default)]
pub struct MemoryMessageStore {
    inner: Mutex<Messages>,
}

#[async_trait]
impl MessageStore for MemoryMessageStore {
    async fn append(&self, message: &Message) -> PortResult<AppendOutcome> {
        let mut inner = lock(&self.inner);
        if let Some(key) = &message.client_msg_id {
            let key = (message.room.clone(), message.user.clone(), key.clone());
            if let Some(id) = inner.by_client_id.get(&key) {
                let existing = inner.versions[id].last().cloned();
                if let Some(existing) = existing {
                    return Ok(AppendOutcome::Duplicate(existing));
                }
            }
            inner.by_client_id.insert(key, message.id);
        }
        inner.versions.insert(message.id, vec![message.clone()]);
        Ok(AppendOutcome::Stored)
    }

    async fn history(
        &self,
        room: &RoomName,
        before: Option<MessageId>,
        limit: usize,
    ) -> PortResult<HistoryPage> {
        let inner = lock(&self.inner);
        let mut newest_first = inner
            .versions
            .values()
            .rev()
            .filter_map(|v| v.last())
            .filter(|m| &m.room == room && before.is_none_or(|b| m.id < b));
        let mut messages: Vec<Message> = newest_first.by_ref().take(limit).cloned().collect();
        let more = newest_first.next().is_some();
        messages.reverse();
        Ok(HistoryPage { messages, more })
    }

    async fn history_after(
        &self,
        room: &RoomName,
        after: MessageId,
        limit: usize,
    ) -> PortResult<HistoryPage> {
        let inner = lock(&self.inner);
        let oldest_first: Vec<Message> = inner
            .versions
            .range((std::ops::Bound::Excluded(after), std::ops::Bound::Unbounded))
            .filter_map(|(_, v)| v.last())
            .filter(|m| &m.room == room)
            .take(limit + 1)
            .cloned()
            .collect();
        Ok(HistoryPage::from_oldest_first(oldest_first, limit))
    }

    async fn get(&self, id: MessageId) -> PortResult<Option<Message>> {
        Ok(lock(&self.inner)
            .versions
            .get(&id)
            .and_then(|v| v.last().cloned()))
    }

    async fn recall(
        &self,
        id: MessageId,
        expected_version: u32,
        recall: Recall,
    ) -> PortResult<RecallOutcome> {
        let mut inner = lock(&self.inner);
        let Some(versions) = inner.versions.get_mut(&id) else {
            return Ok(RecallOutcome::NotFound);
        };
        let Some(current) = versions.last() else {
            return Ok(RecallOutcome::NotFound);
        };
        if current.version != expected_version {
            return Ok(RecallOutcome::VersionConflict);
        }
        let tombstone = current.recalled(recall);
        versions.push(tombstone.clone());
        Ok(RecallOutcome::Recalled(tombstone))
    }

    async fn versions(&self, id: MessageId) -> PortResult<Vec<Message>> {
        Ok(lock(&self.inner)
            .versions
            .get(&id)
            .cloned()
            .unwrap_or_default())
    }

    async fn find_by_client_id(
        &self,
        room: &RoomName,
        user: &UserName,
        client_msg_id: &ClientMsgId,
    ) -> PortResult<Option<Message>> {
        let inner = lock(&self.inner);
        let key = (room.clone(), user.clone(), client_msg_id.clone());
        Ok(inner
            .by_client_id
            .get(&key)
            .and_then(|id| inner.versions.get(id))
            .and_then(|v| v.last().cloned()))
    }
}

#[derive(Debug, Default)]
pub struct MemoryConnectionStore {
    inner: Mutex<BTreeMap<ConnectionId, Connection>>,
}

#[async_trait]
impl ConnectionStore for MemoryConnectionStore {
    async fn put(&self, connection: &Connection) -> PortResult<()> {
        lock(&self.inner).insert(connection.id.clone(), connection.clone());
        Ok(())
    }

    async fn get(&self, id: &ConnectionId) -> PortResult<Option<Connection>> {
        Ok(lock(&self.inner).get(id).cloned())
    }

    async fn remove(&self, id: &ConnectionId) -> PortResult<Option<Connection>> {
        Ok(lock(&self.inner).remove(id))
    }

    async fn join(&self, id: &ConnectionId, room: &RoomName) -> PortResult<bool> {
        Ok(lock(&self.inner)
            .get_mut(id)
            .map(|c| c.rooms.insert(room.clone()))
            .is_some())
    }

    async fn leave(&self, id: &ConnectionId, room: &RoomName) -> PortResult<bool> {
        Ok(lock(&self.inner)
            .get_mut(id)
            .map(|c| c.rooms.remove(room))
            .is_some())
    }

    async fn touch(&self, id: &ConnectionId, now: i64) -> PortResult<Option<i64>> {
        Ok(lock(&self.inner)
            .get_mut(id)
            .map(|c| std::mem::replace(&mut c.last_seen, now)))
    }

    async fn in_room(&self, room: &RoomName) -> PortResult<Vec<Connection>> {
        Ok(lock(&self.inner)
            .values()
            .filter(|c| c.rooms.contains(room))
            .cloned()
            .collect())
    }

    async fn all(&self) -> PortResult<Vec<Connection>> {
        Ok(lock(&self.inner).values().cloned().collect())
    }
}

/// A topic that records what was published; the test decides when to fan it out.
#[derive(Debug, Default)]
pub struct RecordingTopic {
    events: Mutex<Vec<RoomEvent>>,
}

impl RecordingTopic {
    /// Everything published since the last call.
    pub fn take(&self) -> Vec<RoomEvent> {
        std::mem::take(&mut *lock(&self.events))
    }
}

#[async_trait]
impl Topic for RecordingTopic {
    async fn publish(&self, event: &RoomEvent) -> PortResult<()> {
        lock(&self.events).push(event.clone());
        Ok(())
    }
}

/// A sender that records posts per connection and answers 410 for connections marked gone.
#[derive(Debug, Default)]
pub struct RecordingSender {
    posts: Mutex<HashMap<ConnectionId, Vec<String>>>,
    gone: Mutex<HashSet<ConnectionId>>,
}

impl RecordingSender {
    pub fn mark_gone(&self, id: &ConnectionId) {
        lock(&self.gone).insert(id.clone());
    }

    /// The posts to `id` since the last call, oldest first.
    pub fn take(&self, id: &ConnectionId) -> Vec<String> {
        lock(&self.posts).remove(id).unwrap_or_default()
    }
}

#[async_trait]
impl ConnectionSender for RecordingSender {
    async fn probe(&self, id: &ConnectionId) -> Result<(), PostError> {
        if lock(&self.gone).contains(id) {
            Err(PostError::Gone)
        } else {
            Ok(())
        }
    }

    async fn close(&self, id: &ConnectionId) -> Result<(), PostError> {
        if lock(&self.gone).insert(id.clone()) {
            Ok(())
        } else {
            Err(PostError::Gone)
        }
    }

    async fn post(&self, id: &ConnectionId, data: &str) -> Result<(), PostError> {
        if lock(&self.gone).contains(id) {
            return Err(PostError::Gone);
        }
        lock(&self.posts)
            .entry(id.clone())
            .or_default()
            .push(data.to_owned());
        Ok(())
    }
}
