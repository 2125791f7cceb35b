//! Open sockets by connection id: what the Management API posts to, closes and describes. A post
//! to an id that is not here (never opened, closed, or still in `$connect`) is 410 Gone, as on AWS.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use chat_core::domain::ConnectionId;
use chat_core::ports::{ConnectionSender, PostError};
use tokio::sync::mpsc;

/// Frames queued for one socket before a post waits for the client to read.
pub const OUTBOX: usize = 1024;
/// How long a post waits for room in a slow client's outbox before it fails.
const POST_WAIT: Duration = Duration::from_secs(2);

/// What the writer half of a socket is told to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outbound {
    Text(String),
    Binary(Vec<u8>),
    Close { code: u16, reason: String },
}

/// One open socket as the Management API sees it.
#[derive(Debug)]
pub struct Entry {
    pub tx: mpsc::Sender<Outbound>,
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

    fn sender(&self, id: &ConnectionId) -> Option<mpsc::Sender<Outbound>> {
        self.lock().get(id).map(|e| e.tx.clone())
    }

    pub fn describe(&self, id: &ConnectionId) -> Option<Description> {
        self.lock().get(id).map(|e| Description {
            connected_at: e.connected_at,
            last_active: e.last_active.load(Ordering::Relaxed),
            source_ip: e.source_ip.clone(),
            user_agent: e.user_agent.clone(),
        })
    }

    /// Queue data for a socket; `Gone` when it is not open.
    pub async fn post(&self, id: &ConnectionId, out: Outbound) -> Result<(), PostError> {
        let tx = self.sender(id).ok_or(PostError::Gone)?;
        match tx.send_timeout(out, POST_WAIT).await {
            Ok(()) => Ok(()),
            Err(mpsc::error::SendTimeoutError::Closed(_)) => Err(PostError::Gone),
            Err(mpsc::error::SendTimeoutError::Timeout(_)) => Err(PostError::Other(format!(
                "connection {id} is not reading; {OUTBOX} frames are waiting"
            ))),
        }
    }

    /// Close a socket (`DeleteConnection`); false when it is not open.
    pub async fn close(&self, id: &ConnectionId, code: u16, reason: &str) -> bool {
        let Some(tx) = self.sender(id) else {
            return false;
        };
        // A full outbox still gets the close: it waits its turn behind the queued frames.
        tx.send(Outbound::Close {
            code,
            reason: reason.to_owned(),
        })
        .await
        .is_ok()
    }

    /// Close every socket, e.g. on shutdown.
    pub async fn close_all(&self, code: u16, reason: &str) {
        let ids: Vec<ConnectionId> = self.lock().keys().cloned().collect();
        for id in ids {
            self.close(&id, code, reason).await;
        }
    }
}

/// The handlers' connection sender: posts go straight to the registry, as the Management API's
/// `PostToConnection` does over HTTP.
#[derive(Debug, Clone)]
pub struct LocalSender(pub Arc<Registry>);

#[async_trait]
impl ConnectionSender for LocalSender {
    async fn post(&self, id: &ConnectionId, data: &str) -> Result<(), PostError> {
        self.0.post(id, Outbound::Text(data.to_owned())).await
    }
}
