//! Open sockets by connection id: what the Management API posts to, closes and describes. A post
//! to an id that is not here (never opened, closed, or still in `$connect`) is 410 Gone, as on AWS.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, Ordering};

use async_trait::async_trait;
use axum::extract::ws::Utf8Bytes;
use chat_core::domain::ConnectionId;
use chat_core::ports::{ConnectionSender, PostError};
use tokio::sync::{mpsc, watch};

/// Close code for a client that stopped reading (policy violation).
pub const CLOSE_NOT_READING: u16 = 1008;

/// A frame for the writer half of a socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outbound {
    /// Shared bytes: one fan-out frame is one allocation, cloned per recipient by reference.
    Text(Utf8Bytes),
    Binary(Vec<u8>),
}

/// Why and how a socket is being closed by the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloseRequest {
    pub code: u16,
    pub reason: String,
}

/// One open socket as the Management API sees it.
#[derive(Debug)]
pub struct Entry {
    pub tx: mpsc::Sender<Outbound>,
    /// Set once to close the socket; the reader and the writer both watch it, so a close never
    /// waits behind queued frames or a client that stopped reading.
    pub closer: watch::Sender<Option<CloseRequest>>,
    pub connected_at: i64,
    pub last_active: Arc<AtomicI64>,
    pub source_ip: String,
    pub user_agent: Option<String>,
}

/// What `GET @connections/{id}` tells.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Description {
    pub connected_at: i64,
    pub last_active: i64,
    pub source_ip: String,
    pub user_agent: Option<String>,
}

#[derive(Debug, Default)]
pub struct Registry {
    open: Mutex<HashMap<ConnectionId, Entry>>,
}

impl Registry {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<ConnectionId, Entry>> {
        self.open
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub fn insert(&self, id: ConnectionId, entry: Entry) {
        self.lock().insert(id, entry);
    }

    pub fn remove(&self, id: &ConnectionId) {
        self.lock().remove(id);
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn describe(&self, id: &ConnectionId) -> Option<Description> {
        self.lock().get(id).map(|e| Description {
            connected_at: e.connected_at,
            last_active: e.last_active.load(Ordering::Relaxed),
            source_ip: e.source_ip.clone(),
            user_agent: e.user_agent.clone(),
        })
    }

    /// Queue data for a socket; `Gone` when it is not open (or closing). Never waits: a full
    /// outbox closes that socket instead.
    pub fn post(&self, id: &ConnectionId, out: Outbound) -> Result<(), PostError> {
        queue(&self.lock(), id, out)
    }

    /// [`Registry::post`] for many sockets at once: one result per id, in order. The lock is
    /// taken once per chunk of ids, so a fan-out to a large room neither locks per member nor
    /// holds the lock long enough to stall a connect.
    pub fn post_all(&self, ids: &[&ConnectionId], out: &Outbound) -> Vec<Result<(), PostError>> {
        const CHUNK: usize = 64;
        let mut results = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(CHUNK) {
            let open = self.lock();
            results.extend(chunk.iter().map(|id| queue(&open, id, out.clone())));
        }
        results
    }

    /// Close a socket (`DeleteConnection`); false when it is not open.
    pub fn close(&self, id: &ConnectionId, code: u16, reason: &str) -> bool {
        match self.lock().get(id) {
            Some(entry) => {
                request_close(entry, code, reason.to_owned());
                true
            }
            None => false,
        }
    }

    /// Close every socket, e.g. on shutdown.
    pub fn close_all(&self, code: u16, reason: &str) {
        for entry in self.lock().values() {
            request_close(entry, code, reason.to_owned());
        }
    }
}

/// Queue `out` on one socket of the locked registry: `Gone` when it is not open (or closing); a
/// full outbox closes the socket instead of waiting.
fn queue(
    open: &HashMap<ConnectionId, Entry>,
    id: &ConnectionId,
    out: Outbound,
) -> Result<(), PostError> {
    let entry = open.get(id).ok_or(PostError::Gone)?;
    if entry.closer.borrow().is_some() {
        return Err(PostError::Gone);
    }
    match entry.tx.try_send(out) {
        Ok(()) => Ok(()),
        Err(mpsc::error::TrySendError::Closed(_)) => Err(PostError::Gone),
        Err(mpsc::error::TrySendError::Full(_)) => {
            let waiting = entry.tx.max_capacity();
            request_close(
                entry,
                CLOSE_NOT_READING,
                format!("not reading: {waiting} frames waiting"),
            );
            Err(PostError::Other(format!(
                "connection {id} stopped reading ({waiting} frames waiting); closed it"
            )))
        }
    }
}

/// The first close request wins; later ones (a timeout racing a DELETE, say) change nothing.
fn request_close(entry: &Entry, code: u16, reason: String) {
    entry.closer.send_if_modified(|current| {
        if current.is_some() {
            return false;
        }
        *current = Some(CloseRequest { code, reason });
        true
    });
}

/// The handlers' connection sender: posts go straight to the registry, with the Management API's
/// size limit, as `PostToConnection` does over HTTP.
#[derive(Debug, Clone)]
pub struct LocalSender {
    pub registry: Arc<Registry>,
    /// Largest post in bytes (API Gateway: 128 KB).
    pub max_bytes: usize,
}

impl LocalSender {
    fn too_large(&self, data: &str) -> PostError {
        PostError::Other(format!(
            "payload too large: {} bytes; the Management API takes at most {}",
            data.len(),
            self.max_bytes
        ))
    }
}

#[async_trait]
impl ConnectionSender for LocalSender {
    async fn post(&self, id: &ConnectionId, data: &str) -> Result<(), PostError> {
        if data.len() > self.max_bytes {
            return Err(self.too_large(data));
        }
        self.registry.post(id, Outbound::Text(data.into()))
    }

    /// One size check and one copy of the payload for the whole room; the sockets' queues share it.
    async fn post_all(
        &self,
        ids: &[&ConnectionId],
        data: &str,
        _concurrency: usize,
    ) -> Vec<Result<(), PostError>> {
        if data.len() > self.max_bytes {
            let error = self.too_large(data);
            return ids.iter().map(|_| Err(error.clone())).collect();
        }
        self.registry.post_all(ids, &Outbound::Text(data.into()))
    }

    async fn probe(&self, id: &ConnectionId) -> Result<(), PostError> {
        self.registry
            .describe(id)
            .map(|_| ())
            .ok_or(PostError::Gone)
    }

    async fn close(&self, id: &ConnectionId) -> Result<(), PostError> {
        if self.registry.close(id, 1000, "closed by DeleteConnection") {
            Ok(())
        } else {
            Err(PostError::Gone)
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::panic)]

    use super::*;

    fn open(registry: &Registry, id: &str) -> mpsc::Receiver<Outbound> {
        let (tx, rx) = mpsc::channel(4);
        let (closer, _) = watch::channel(None);
        registry.insert(
            ConnectionId::new(id),
            Entry {
                tx,
                closer,
                connected_at: 0,
                last_active: Arc::new(AtomicI64::new(0)),
                source_ip: "127.0.0.1".into(),
                user_agent: None,
            },
        );
        rx
    }

    fn text(out: Outbound) -> Utf8Bytes {
        match out {
            Outbound::Text(t) => t,
            Outbound::Binary(_) => panic!("expected text"),
        }
    }

    #[tokio::test]
    async fn post_all_answers_per_id_in_order_and_shares_one_payload() {
        let registry = Arc::new(Registry::default());
        let mut a = open(&registry, "a");
        let mut c = open(&registry, "c");
        let closed = open(&registry, "closed");
        drop(closed);
        let sender = LocalSender {
            registry: Arc::clone(&registry),
            max_bytes: 16,
        };
        let ids = ["a", "missing", "closed", "c"].map(ConnectionId::new);
        let refs: Vec<&ConnectionId> = ids.iter().collect();
        let results = sender.post_all(&refs, "hello", 8).await;
        assert_eq!(
            results,
            vec![Ok(()), Err(PostError::Gone), Err(PostError::Gone), Ok(())]
        );
        let (to_a, to_c) = (text(a.recv().await.unwrap()), text(c.recv().await.unwrap()));
        assert_eq!(to_a.as_str(), "hello");
        // One copy for the whole room: both queues hold the same bytes.
        assert_eq!(to_a.as_str().as_ptr(), to_c.as_str().as_ptr());

        let too_large = sender.post_all(&refs, &"x".repeat(17), 8).await;
        assert_eq!(too_large.len(), 4);
        assert!(
            too_large
                .iter()
                .all(|r| matches!(r, Err(PostError::Other(e)) if e.contains("payload too large")))
        );
        assert!(
            a.try_recv().is_err(),
            "nothing queued for a refused payload"
        );
    }
}
