//! A connection store that remembers each room's fan-out recipients, so a busy room's messages
//! do not each read its whole membership. Every write that changes a room's membership through
//! this store drops exactly that room's entry (put, join, leave, remove); heartbeats change no
//! recipient and keep it. For one process that owns the store (the local gateway). A connection
//! removed behind its back (another process's `gc`) stays cached until a post to it answers 410,
//! and the fan-out's removal of it through this store drops the entry.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;

use crate::domain::{Connection, ConnectionId, RoomName, UserName};
use crate::ports::{ConnectionStore, PortResult, Recipient};

#[derive(Debug, Default)]
struct Entries {
    rooms: HashMap<RoomName, Arc<Vec<Recipient>>>,
    /// Bumped by every invalidation of a room: a read that started before one must not store
    /// what it read.
    epochs: HashMap<RoomName, u64>,
}

pub struct CachedRecipients {
    inner: Arc<dyn ConnectionStore>,
    entries: Mutex<Entries>,
}

impl std::fmt::Debug for CachedRecipients {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CachedRecipients { .. }")
    }
}

impl CachedRecipients {
    pub fn new(inner: Arc<dyn ConnectionStore>) -> Self {
        Self {
            inner,
            entries: Mutex::default(),
        }
    }

    fn entries(&self) -> std::sync::MutexGuard<'_, Entries> {
        self.entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn invalidate<'a>(&self, rooms: impl IntoIterator<Item = &'a RoomName>) {
        let mut entries = self.entries();
        for room in rooms {
            entries.rooms.remove(room);
            *entries.epochs.entry(room.clone()).or_default() += 1;
        }
    }

    /// Rooms cached right now (for tests and diagnostics).
    pub fn cached_rooms(&self) -> usize {
        self.entries().rooms.len()
    }
}

#[async_trait]
impl ConnectionStore for CachedRecipients {
    async fn put(&self, connection: &Connection) -> PortResult<()> {
        // A put may replace a connection with other rooms: drop the old rooms too.
        let old_rooms = self
            .inner
            .get(&connection.id)
            .await?
            .map(|c| c.rooms)
            .unwrap_or_default();
        let result = self.inner.put(connection).await;
        self.invalidate(connection.rooms.iter().chain(old_rooms.iter()));
        result
    }

    async fn get(&self, id: &ConnectionId) -> PortResult<Option<Connection>> {
        self.inner.get(id).await
    }

    async fn remove(&self, id: &ConnectionId) -> PortResult<Option<Connection>> {
        let removed = self.inner.remove(id).await?;
        if let Some(c) = &removed {
            self.invalidate(&c.rooms);
        }
        Ok(removed)
    }

    async fn join(&self, id: &ConnectionId, room: &RoomName) -> PortResult<bool> {
        let result = self.inner.join(id, room).await;
        self.invalidate([room]);
        result
    }

    async fn leave(&self, id: &ConnectionId, room: &RoomName) -> PortResult<bool> {
        let result = self.inner.leave(id, room).await;
        self.invalidate([room]);
        result
    }

    async fn touch(&self, id: &ConnectionId, now: i64) -> PortResult<Option<i64>> {
        self.inner.touch(id, now).await
    }

    async fn in_room(&self, room: &RoomName) -> PortResult<Vec<Connection>> {
        self.inner.in_room(room).await
    }

    async fn recipients(&self, room: &RoomName) -> PortResult<Vec<Recipient>> {
        let epoch = {
            let entries = self.entries();
            if let Some(cached) = entries.rooms.get(room) {
                return Ok(cached.as_ref().clone());
            }
            entries.epochs.get(room).copied().unwrap_or(0)
        };
        let fresh = self.inner.recipients(room).await?;
        let mut entries = self.entries();
        // Only when no membership change of this room happened while we read.
        if entries.epochs.get(room).copied().unwrap_or(0) == epoch {
            entries.rooms.insert(room.clone(), Arc::new(fresh.clone()));
        }
        Ok(fresh)
    }

    async fn user_in_room(&self, room: &RoomName, user: &UserName) -> PortResult<Vec<Connection>> {
        self.inner.user_in_room(room, user).await
    }

    async fn all(&self) -> PortResult<Vec<Connection>> {
        self.inner.all().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::MemoryConnectionStore;

    fn conn(id: &str, user: &str, rooms: &[&str]) -> Connection {
        Connection {
            id: ConnectionId::new(id),
            user: UserName::parse(user).unwrap(),
            rooms: rooms.iter().map(|r| RoomName::parse(r).unwrap()).collect(),
            allowed_rooms: None,
            connected_at: 0,
            last_seen: 0,
            operator: false,
        }
    }

    fn ids(recipients: &[Recipient]) -> Vec<&str> {
        recipients.iter().map(|r| r.id.as_str()).collect()
    }

    #[tokio::test]
    async fn every_membership_change_is_seen_and_others_are_cached() {
        let inner: Arc<dyn ConnectionStore> = Arc::new(MemoryConnectionStore::default());
        let cache = CachedRecipients::new(Arc::clone(&inner));
        let lobby = RoomName::parse("lobby").unwrap();
        let side = RoomName::parse("side").unwrap();
        cache.put(&conn("a", "ann", &["lobby"])).await.unwrap();
        assert_eq!(ids(&cache.recipients(&lobby).await.unwrap()), ["a"]);
        assert_eq!(cache.cached_rooms(), 1);
        // Written behind the cache's back: not seen until a change through it.
        inner.put(&conn("x", "xi", &["lobby"])).await.unwrap();
        assert_eq!(ids(&cache.recipients(&lobby).await.unwrap()), ["a"]);
        cache.put(&conn("b", "bob", &["lobby"])).await.unwrap();
        let mut now = ids(&cache.recipients(&lobby).await.unwrap())
            .into_iter()
            .map(str::to_owned)
            .collect::<Vec<_>>();
        now.sort();
        assert_eq!(now, ["a", "b", "x"]);
        cache.join(&ConnectionId::new("a"), &side).await.unwrap();
        assert_eq!(ids(&cache.recipients(&side).await.unwrap()), ["a"]);
        cache.leave(&ConnectionId::new("a"), &side).await.unwrap();
        assert!(cache.recipients(&side).await.unwrap().is_empty());
        cache.remove(&ConnectionId::new("x")).await.unwrap();
        let left = cache.recipients(&lobby).await.unwrap();
        assert!(!ids(&left).contains(&"x"), "{left:?}");
        // A heartbeat changes no recipient: the entry stays.
        cache.touch(&ConnectionId::new("a"), 5).await.unwrap();
        assert_eq!(cache.cached_rooms(), 2);
    }
}
