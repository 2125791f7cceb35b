//! SQLite adapters of the message and connection stores. Messages live in `messages.db` (WAL,
//! `synchronous=FULL`: a commit is on disk before the `ack` goes out); connections live in
//! `connections.db`, which needs no fsync because a restart clears them anyway.
//!
//! Appends are group-committed: one writer thread owns its own connection to `messages.db`, takes
//! every append that queued while its previous commit ran, and writes them in one transaction —
//! one fsync for the batch instead of one per message. Each `append` returns only after the
//! commit that holds its row, so the `ack` the handler sends afterwards still follows the disk.
//! Nothing waits for a batch to fill: a lone sender's batch is itself. Reads stay on the other
//! connection; WAL lets them run beside the writer and they see committed rows only.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, mpsc};

use async_trait::async_trait;
use chat_core::domain::{
    ClientMsgId, Connection, ConnectionId, Message, MessageId, Recall, RoomName, UserName,
};
use chat_core::ports::{
    AppendOutcome, ConnectionStore, HistoryPage, MessageStore, PortError, PortResult,
    RecallOutcome, Recipient,
};
use rusqlite::{Connection as Db, ErrorCode, OptionalExtension, TransactionBehavior, params};

/// A store that could not be opened: the file and what to do.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error(
        "cannot open {path}: {source}; check that the data directory is writable or pass another --data-dir"
    )]
    Open {
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error(
        "{path} has schema version {found}, this chatctl knows up to {known}; upgrade chatctl or use another --data-dir"
    )]
    TooNew {
        path: PathBuf,
        found: i64,
        known: i64,
    },
    #[error("cannot start the writer thread for {path}: {source}")]
    Writer {
        path: PathBuf,
        source: std::io::Error,
    },
}

const SCHEMA_VERSION: i64 = 1;

const MESSAGES_SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS messages (
    id            TEXT PRIMARY KEY,
    room          TEXT NOT NULL,
    user          TEXT NOT NULL,
    text          TEXT,
    ts            INTEGER NOT NULL,
    client_msg_id TEXT,
    version       INTEGER NOT NULL,
    recall        TEXT
) WITHOUT ROWID;
-- history of a room by id range
CREATE INDEX IF NOT EXISTS messages_by_room ON messages (room, id);
-- idempotent sends
CREATE UNIQUE INDEX IF NOT EXISTS messages_by_client_id
    ON messages (room, user, client_msg_id) WHERE client_msg_id IS NOT NULL;
-- every version of every message, for audit
CREATE TABLE IF NOT EXISTS message_versions (
    id      TEXT NOT NULL,
    version INTEGER NOT NULL,
    body    TEXT NOT NULL,
    PRIMARY KEY (id, version)
) WITHOUT ROWID;
";

const CONNECTIONS_SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS connections (
    id            TEXT PRIMARY KEY,
    user          TEXT NOT NULL,
    allowed_rooms TEXT,
    connected_at  INTEGER NOT NULL,
    last_seen     INTEGER NOT NULL,
    operator      INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS connection_rooms (
    room          TEXT NOT NULL,
    connection_id TEXT NOT NULL,
    PRIMARY KEY (room, connection_id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS connection_rooms_by_connection ON connection_rooms (connection_id);
-- presence decisions look up one user's connections
CREATE INDEX IF NOT EXISTS connections_by_user ON connections (user);
";

fn open(path: &Path, synchronous: &str, schema: &str) -> Result<Db, OpenError> {
    let wrap = |source| OpenError::Open {
        path: path.to_owned(),
        source,
    };
    let db = Db::open(path).map_err(wrap)?;
    // Other processes use these files too (`chatctl tail`, `recall`, `kick` beside a running
    // `dev`): writers wait for each other up to 5 s. Write transactions start IMMEDIATE, because a
    // deferred one that reads first and writes later fails at once with "database is locked"
    // (SQLite does not wait there, to avoid deadlock) when another process wrote in between.
    db.busy_timeout(std::time::Duration::from_secs(5))
        .map_err(wrap)?;
    db.execute_batch(&format!(
        "PRAGMA journal_mode = WAL; PRAGMA synchronous = {synchronous}; PRAGMA foreign_keys = ON;"
    ))
    .map_err(wrap)?;
    let found: i64 = db
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .map_err(wrap)?;
    if found > SCHEMA_VERSION {
        return Err(OpenError::TooNew {
            path: path.to_owned(),
            found,
            known: SCHEMA_VERSION,
        });
    }
    db.execute_batch(schema).map_err(wrap)?;
    db.execute_batch(&format!("PRAGMA user_version = {SCHEMA_VERSION}"))
        .map_err(wrap)?;
    Ok(db)
}

/// Run blocking SQLite work off the async threads.
async fn blocking<T, F>(db: &Arc<Mutex<Db>>, what: &'static str, f: F) -> PortResult<T>
where
    T: Send + 'static,
    F: FnOnce(&mut Db) -> rusqlite::Result<T> + Send + 'static,
{
    let db = Arc::clone(db);
    tokio::task::spawn_blocking(move || {
        let mut guard = db.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        f(&mut guard)
    })
    .await
    .map_err(|e| PortError::new(format!("{what}: worker failed: {e}")))?
    .map_err(|e| PortError::new(format!("{what}: {e}")))
}

fn corrupt(what: impl std::fmt::Display) -> rusqlite::Error {
    rusqlite::Error::ToSqlConversionFailure(format!("corrupt row: {what}").into())
}

/// The message store on SQLite.
#[derive(Debug, Clone)]
pub struct SqliteMessageStore {
    /// Reads, and recalls (rare; they wait for the writer through the busy timeout).
    db: Arc<Mutex<Db>>,
    /// Appends for the writer thread. The thread ends once every clone of this is dropped and
    /// what was queued is written.
    appends: mpsc::Sender<AppendRequest>,
    commits: Arc<AtomicU64>,
}

/// The most appends one transaction takes: a bound on how long the first of them waits for the
/// others to be written (a few ms at most), far above what 100 concurrent senders queue.
const MAX_BATCH: usize = 512;

/// One append waiting for the writer, and where its outcome goes.
#[derive(Debug)]
struct AppendRequest {
    message: Message,
    reply: tokio::sync::oneshot::Sender<PortResult<AppendOutcome>>,
}

impl SqliteMessageStore {
    pub fn open(path: &Path) -> Result<Self, OpenError> {
        let db = open(path, "FULL", MESSAGES_SCHEMA)?;
        // The writer gets a connection of its own rather than sharing `db`: a commit holds its
        // connection for the fsync, and behind a shared mutex every history read would wait for
        // it. Two connections in WAL mode let readers run during the commit (they see the last
        // committed state), and the writer needs no lock at all — it is the connection's only user.
        let writer = open(path, "FULL", MESSAGES_SCHEMA)?;
        let (appends, queue) = mpsc::channel();
        let commits = Arc::new(AtomicU64::new(0));
        let counter = Arc::clone(&commits);
        std::thread::Builder::new()
            .name("messages-writer".to_owned())
            .spawn(move || write_appends(writer, &queue, &counter))
            .map_err(|source| OpenError::Writer {
                path: path.to_owned(),
                source,
            })?;
        Ok(Self {
            db: Arc::new(Mutex::new(db)),
            appends,
            commits,
        })
    }

    /// How many append transactions the writer has committed (each holds one or more appends).
    pub fn commits(&self) -> u64 {
        self.commits.load(Ordering::Relaxed)
    }
}

/// The writer thread: batch whatever is queued, commit it, answer each request; end when the
/// store is gone and the queue is empty.
fn write_appends(mut db: Db, queue: &mpsc::Receiver<AppendRequest>, commits: &AtomicU64) {
    while let Ok(first) = queue.recv() {
        let mut batch = Vec::with_capacity(16);
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match queue.try_recv() {
                Ok(request) => batch.push(request),
                Err(_) => break,
            }
        }
        let messages: Vec<&Message> = batch.iter().map(|r| &r.message).collect();
        match append_batch(&mut db, &messages) {
            Ok(outcomes) => {
                // Counted before anyone is answered, so a caller that saw its ack sees the count.
                commits.fetch_add(1, Ordering::Relaxed);
                for (request, outcome) in batch.into_iter().zip(outcomes) {
                    // A caller that stopped waiting (its task was cancelled) needs no answer.
                    let _ = request.reply.send(outcome);
                }
            }
            Err(e) => {
                // Nothing of the batch is on disk: every request of it fails, none is acked.
                tracing::warn!(appends = batch.len(), error = %e, "message batch not committed");
                for request in batch {
                    let _ = request
                        .reply
                        .send(Err(PortError::new(format!("store message: {e}"))));
                }
            }
        }
    }
}

fn is_constraint(e: &rusqlite::Error) -> bool {
    matches!(e, rusqlite::Error::SqliteFailure(f, _) if f.code == ErrorCode::ConstraintViolation)
}

/// Write `messages` in one IMMEDIATE transaction. Each item runs in its own savepoint, so a
/// duplicate rolls back only itself (and is answered with the copy stored before, which may be
/// an earlier item of this very batch). `Err` means the transaction did not commit.
fn append_batch(
    db: &mut Db,
    messages: &[&Message],
) -> rusqlite::Result<Vec<PortResult<AppendOutcome>>> {
    // The transaction and savepoint statements are prepared once and kept (rusqlite's
    // `Transaction`/`Savepoint` parse their SQL on every use: two parses per message here).
    exec_cached(db, "BEGIN IMMEDIATE")?;
    let written = append_items(db, messages).and_then(|outcomes| {
        exec_cached(db, "COMMIT")?;
        Ok(outcomes)
    });
    if written.is_err() && !db.is_autocommit() {
        // Whatever failed, nothing of the batch may stay half-written.
        let _ = exec_cached(db, "ROLLBACK");
    }
    written
}

fn append_items(
    db: &Db,
    messages: &[&Message],
) -> rusqlite::Result<Vec<PortResult<AppendOutcome>>> {
    let mut outcomes = Vec::with_capacity(messages.len());
    for message in messages {
        exec_cached(db, "SAVEPOINT item")?;
        let outcome = match insert_message(db, message) {
            Ok(()) => {
                exec_cached(db, "RELEASE item")?;
                Ok(AppendOutcome::Stored)
            }
            Err(e) => {
                if db.is_autocommit() {
                    // SQLite gave up the whole transaction (I/O error, disk full): so does the batch.
                    return Err(e);
                }
                // Roll back this item only.
                exec_cached(db, "ROLLBACK TO item")?;
                exec_cached(db, "RELEASE item")?;
                if is_constraint(&e) {
                    duplicate_of(db, message)
                } else {
                    Err(e)
                }
            }
        };
        outcomes.push(outcome.map_err(|e| PortError::new(format!("store message: {e}"))));
    }
    Ok(outcomes)
}

fn exec_cached(db: &Db, sql: &str) -> rusqlite::Result<()> {
    db.prepare_cached(sql)?.execute([])?;
    Ok(())
}

fn insert_message(db: &Db, message: &Message) -> rusqlite::Result<()> {
    let recall = message
        .recall
        .as_ref()
        .map(serde_json::to_string)
        .transpose()
        .map_err(corrupt)?;
    db.prepare_cached(&format!(
        "INSERT INTO messages ({MESSAGE_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)"
    ))?
    .execute(params![
        message.id.to_string(),
        message.room.as_str(),
        message.user.as_str(),
        message.text,
        message.ts,
        message.client_msg_id.as_ref().map(ClientMsgId::as_str),
        message.version,
        recall,
    ])?;
    insert_version(db, message)
}

/// The stored message a constraint failure of `message` ran into: the first copy with its
/// (room, user, client message id). Any other collision (the same id twice) is an error.
fn duplicate_of(db: &Db, message: &Message) -> rusqlite::Result<AppendOutcome> {
    let existing = message
        .client_msg_id
        .as_ref()
        .map(|c| by_client_id(db, message.room.as_str(), message.user.as_str(), c.as_str()))
        .transpose()?
        .flatten();
    existing
        .map(AppendOutcome::Duplicate)
        .ok_or_else(|| corrupt(format!("message id {} already stored", message.id)))
}

fn message_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<Message> {
    let id: String = row.get(0)?;
    let room: String = row.get(1)?;
    let user: String = row.get(2)?;
    let client_msg_id: Option<String> = row.get(5)?;
    let recall: Option<String> = row.get(7)?;
    Ok(Message {
        id: MessageId::parse(&id).map_err(corrupt)?,
        room: RoomName::parse(&room).map_err(corrupt)?,
        user: UserName::parse(&user).map_err(corrupt)?,
        text: row.get(3)?,
        ts: row.get(4)?,
        client_msg_id: client_msg_id
            .map(|c| ClientMsgId::parse(&c).map_err(corrupt))
            .transpose()?,
        version: row.get(6)?,
        recall: recall
            .map(|r| serde_json::from_str::<Recall>(&r).map_err(corrupt))
            .transpose()?,
    })
}

const MESSAGE_COLUMNS: &str = "id, room, user, text, ts, client_msg_id, version, recall";

fn insert_version(db: &Db, message: &Message) -> rusqlite::Result<()> {
    let body = serde_json::to_string(message).map_err(corrupt)?;
    // Cached: the writer runs this once per append, hundreds of times per transaction.
    db.prepare_cached("INSERT INTO message_versions (id, version, body) VALUES (?1, ?2, ?3)")?
        .execute(params![message.id.to_string(), message.version, body])?;
    Ok(())
}

fn get_message(db: &Db, id: &str) -> rusqlite::Result<Option<Message>> {
    db.query_row(
        &format!("SELECT {MESSAGE_COLUMNS} FROM messages WHERE id = ?1"),
        [id],
        message_from_row,
    )
    .optional()
}

fn by_client_id(
    db: &Db,
    room: &str,
    user: &str,
    client_msg_id: &str,
) -> rusqlite::Result<Option<Message>> {
    db.query_row(
        &format!(
            "SELECT {MESSAGE_COLUMNS} FROM messages WHERE room = ?1 AND user = ?2 AND client_msg_id = ?3"
        ),
        [room, user, client_msg_id],
        message_from_row,
    )
    .optional()
}

#[async_trait]
impl MessageStore for SqliteMessageStore {
    async fn append(&self, message: &Message) -> PortResult<AppendOutcome> {
        let (reply, outcome) = tokio::sync::oneshot::channel();
        self.appends
            .send(AppendRequest {
                message: message.clone(),
                reply,
            })
            .map_err(|_| PortError::new("store message: the message writer has stopped"))?;
        outcome.await.map_err(|_| {
            PortError::new("store message: the message writer stopped before answering")
        })?
    }

    async fn history(
        &self,
        room: &RoomName,
        before: Option<MessageId>,
        limit: usize,
    ) -> PortResult<HistoryPage> {
        let room = room.as_str().to_owned();
        // Every id sorts below this one: 26 characters, past the last of Crockford's alphabet.
        let before = before.map_or_else(|| "~".repeat(26), |b| b.to_string());
        blocking(&self.db, "read history", move |db| {
            let mut stmt = db.prepare_cached(&format!(
                "SELECT {MESSAGE_COLUMNS} FROM messages WHERE room = ?1 AND id < ?2 ORDER BY id DESC LIMIT ?3"
            ))?;
            let messages = stmt
                .query_map(params![room, before, limit as i64 + 1], message_from_row)?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(HistoryPage::from_newest_first(messages, limit))
        })
        .await
    }

    async fn history_after(
        &self,
        room: &RoomName,
        after: MessageId,
        limit: usize,
    ) -> PortResult<HistoryPage> {
        let (room, after) = (room.as_str().to_owned(), after.to_string());
        blocking(&self.db, "read history", move |db| {
            let mut stmt = db.prepare_cached(&format!(
                "SELECT {MESSAGE_COLUMNS} FROM messages WHERE room = ?1 AND id > ?2 ORDER BY id ASC LIMIT ?3"
            ))?;
            let messages = stmt
                .query_map(params![room, after, limit as i64 + 1], message_from_row)?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(HistoryPage::from_oldest_first(messages, limit))
        })
        .await
    }

    async fn get(&self, id: MessageId) -> PortResult<Option<Message>> {
        blocking(&self.db, "read message", move |db| {
            get_message(db, &id.to_string())
        })
        .await
    }

    async fn recall(
        &self,
        id: MessageId,
        expected_version: u32,
        recall: Recall,
    ) -> PortResult<RecallOutcome> {
        blocking(&self.db, "recall message", move |db| {
            let tx = db.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let key = id.to_string();
            let Some(current) = get_message(&tx, &key)? else {
                return Ok(RecallOutcome::NotFound);
            };
            if current.version != expected_version {
                return Ok(RecallOutcome::VersionConflict);
            }
            let tombstone = current.recalled(recall);
            let recall_json = serde_json::to_string(&tombstone.recall).map_err(corrupt)?;
            // The version condition is the optimistic lock; inside one transaction it cannot fail,
            // but it states the contract the DynamoDB adapter implements with a condition.
            let changed = tx.execute(
                "UPDATE messages SET text = NULL, version = ?1, recall = ?2 WHERE id = ?3 AND version = ?4",
                params![tombstone.version, recall_json, key, expected_version],
            )?;
            if changed == 0 {
                return Ok(RecallOutcome::VersionConflict);
            }
            insert_version(&tx, &tombstone)?;
            tx.commit()?;
            Ok(RecallOutcome::Recalled(tombstone))
        })
        .await
    }

    async fn versions(&self, id: MessageId) -> PortResult<Vec<Message>> {
        blocking(&self.db, "read versions", move |db| {
            let mut stmt = db.prepare_cached(
                "SELECT body FROM message_versions WHERE id = ?1 ORDER BY version",
            )?;
            let rows = stmt.query_map([id.to_string()], |r| r.get::<_, String>(0))?;
            rows.map(|body| serde_json::from_str(&body?).map_err(corrupt))
                .collect()
        })
        .await
    }

    async fn find_by_client_id(
        &self,
        room: &RoomName,
        user: &UserName,
        client_msg_id: &ClientMsgId,
    ) -> PortResult<Option<Message>> {
        let (room, user, cid) = (
            room.as_str().to_owned(),
            user.as_str().to_owned(),
            client_msg_id.as_str().to_owned(),
        );
        blocking(&self.db, "find by client id", move |db| {
            by_client_id(db, &room, &user, &cid)
        })
        .await
    }
}

/// The connection store on SQLite.
#[derive(Debug, Clone)]
pub struct SqliteConnectionStore {
    db: Arc<Mutex<Db>>,
}

impl SqliteConnectionStore {
    pub fn open(path: &Path) -> Result<Self, OpenError> {
        Ok(Self {
            db: Arc::new(Mutex::new(open(path, "OFF", CONNECTIONS_SCHEMA)?)),
        })
    }

    /// Forget every connection: on start, those of a previous process are dead sockets.
    pub async fn clear(&self) -> PortResult<usize> {
        blocking(&self.db, "clear connections", |db| {
            let tx = db.transaction_with_behavior(TransactionBehavior::Immediate)?;
            tx.execute("DELETE FROM connection_rooms", [])?;
            let n = tx.execute("DELETE FROM connections", [])?;
            tx.commit()?;
            Ok(n)
        })
        .await
    }
}

fn load_connections(db: &Db, where_clause: &str, arg: &str) -> rusqlite::Result<Vec<Connection>> {
    let mut stmt = db.prepare_cached(&format!(
        "SELECT c.id, c.user, c.allowed_rooms, c.connected_at, c.last_seen, c.operator,
                (SELECT group_concat(r.room, ' ') FROM connection_rooms r WHERE r.connection_id = c.id)
         FROM connections c {where_clause} ORDER BY c.id"
    ))?;
    let rows = stmt.query_map([arg], |row| {
        let id: String = row.get(0)?;
        let user: String = row.get(1)?;
        let allowed: Option<String> = row.get(2)?;
        let rooms: Option<String> = row.get(6)?;
        let parse_rooms = |s: &str| -> rusqlite::Result<BTreeSet<RoomName>> {
            s.split(' ')
                .filter(|r| !r.is_empty())
                .map(|r| RoomName::parse(r).map_err(corrupt))
                .collect()
        };
        Ok(Connection {
            id: ConnectionId::new(id),
            user: UserName::parse(&user).map_err(corrupt)?,
            rooms: parse_rooms(rooms.as_deref().unwrap_or(""))?,
            allowed_rooms: allowed.as_deref().map(parse_rooms).transpose()?,
            connected_at: row.get(3)?,
            last_seen: row.get(4)?,
            operator: row.get(5)?,
        })
    })?;
    rows.collect()
}

#[async_trait]
impl ConnectionStore for SqliteConnectionStore {
    async fn put(&self, connection: &Connection) -> PortResult<()> {
        let c = connection.clone();
        blocking(&self.db, "store connection", move |db| {
            let tx = db.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let allowed = c.allowed_rooms.as_ref().map(|rooms| {
                rooms
                    .iter()
                    .map(RoomName::as_str)
                    .collect::<Vec<_>>()
                    .join(" ")
            });
            tx.execute(
                "INSERT OR REPLACE INTO connections (id, user, allowed_rooms, connected_at, last_seen, operator)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![c.id.as_str(), c.user.as_str(), allowed, c.connected_at, c.last_seen, c.operator],
            )?;
            tx.execute("DELETE FROM connection_rooms WHERE connection_id = ?1", [c.id.as_str()])?;
            for room in &c.rooms {
                tx.execute(
                    "INSERT INTO connection_rooms (room, connection_id) VALUES (?1, ?2)",
                    [room.as_str(), c.id.as_str()],
                )?;
            }
            tx.commit()
        })
        .await
    }

    async fn get(&self, id: &ConnectionId) -> PortResult<Option<Connection>> {
        let id = id.as_str().to_owned();
        blocking(&self.db, "read connection", move |db| {
            Ok(load_connections(db, "WHERE c.id = ?1", &id)?.pop())
        })
        .await
    }

    async fn remove(&self, id: &ConnectionId) -> PortResult<Option<Connection>> {
        let id = id.as_str().to_owned();
        blocking(&self.db, "remove connection", move |db| {
            let tx = db.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let existing = load_connections(&tx, "WHERE c.id = ?1", &id)?.pop();
            tx.execute(
                "DELETE FROM connection_rooms WHERE connection_id = ?1",
                [&id],
            )?;
            tx.execute("DELETE FROM connections WHERE id = ?1", [&id])?;
            tx.commit()?;
            Ok(existing)
        })
        .await
    }

    async fn join(&self, id: &ConnectionId, room: &RoomName) -> PortResult<bool> {
        let (id, room) = (id.as_str().to_owned(), room.as_str().to_owned());
        blocking(&self.db, "join room", move |db| {
            let tx = db.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let known: bool = tx.query_row(
                "SELECT EXISTS (SELECT 1 FROM connections WHERE id = ?1)",
                [&id],
                |r| r.get(0),
            )?;
            if known {
                tx.execute(
                    "INSERT OR IGNORE INTO connection_rooms (room, connection_id) VALUES (?1, ?2)",
                    [&room, &id],
                )?;
            }
            tx.commit()?;
            Ok(known)
        })
        .await
    }

    async fn leave(&self, id: &ConnectionId, room: &RoomName) -> PortResult<bool> {
        let (id, room) = (id.as_str().to_owned(), room.as_str().to_owned());
        blocking(&self.db, "leave room", move |db| {
            let known: bool = db.query_row(
                "SELECT EXISTS (SELECT 1 FROM connections WHERE id = ?1)",
                [&id],
                |r| r.get(0),
            )?;
            db.execute(
                "DELETE FROM connection_rooms WHERE room = ?1 AND connection_id = ?2",
                [&room, &id],
            )?;
            Ok(known)
        })
        .await
    }

    async fn touch(&self, id: &ConnectionId, now: i64) -> PortResult<Option<i64>> {
        let id = id.as_str().to_owned();
        blocking(&self.db, "record heartbeat", move |db| {
            let tx = db.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let previous: Option<i64> = tx
                .query_row(
                    "SELECT last_seen FROM connections WHERE id = ?1",
                    [&id],
                    |r| r.get(0),
                )
                .optional()?;
            if previous.is_some() {
                tx.execute(
                    "UPDATE connections SET last_seen = ?1 WHERE id = ?2",
                    params![now, id],
                )?;
            }
            tx.commit()?;
            Ok(previous)
        })
        .await
    }

    async fn in_room(&self, room: &RoomName) -> PortResult<Vec<Connection>> {
        let room = room.as_str().to_owned();
        blocking(&self.db, "read room connections", move |db| {
            load_connections(
                db,
                "WHERE c.id IN (SELECT connection_id FROM connection_rooms WHERE room = ?1)",
                &room,
            )
        })
        .await
    }

    async fn recipients(&self, room: &RoomName) -> PortResult<Vec<Recipient>> {
        let room = room.as_str().to_owned();
        blocking(&self.db, "read room recipients", move |db| {
            let mut stmt = db.prepare_cached(
                "SELECT c.id, c.user, c.connected_at FROM connection_rooms r
                 JOIN connections c ON c.id = r.connection_id
                 WHERE r.room = ?1 ORDER BY c.id",
            )?;
            let rows = stmt.query_map([&room], |row| {
                let id: String = row.get(0)?;
                let user: String = row.get(1)?;
                Ok(Recipient {
                    id: ConnectionId::new(id),
                    user: UserName::parse(&user).map_err(corrupt)?,
                    connected_at: row.get(2)?,
                })
            })?;
            rows.collect()
        })
        .await
    }

    async fn user_in_room(&self, room: &RoomName, user: &UserName) -> PortResult<Vec<Connection>> {
        let (room, user) = (room.as_str().to_owned(), user.as_str().to_owned());
        blocking(&self.db, "read a user's room connections", move |db| {
            let mut found = load_connections(db, "WHERE c.user = ?1", &user)?;
            found.retain(|c| c.rooms.iter().any(|r| r.as_str() == room));
            Ok(found)
        })
        .await
    }

    async fn all(&self) -> PortResult<Vec<Connection>> {
        blocking(&self.db, "read connections", |db| {
            load_connections(db, "WHERE ?1 = ?1", "")
        })
        .await
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    //! Group commit against real SQLite files in a temp dir.

    use std::sync::atomic::AtomicUsize;

    use super::*;

    /// A fresh directory under the system temp dir, removed on drop.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new() -> Self {
            static NEXT: AtomicUsize = AtomicUsize::new(0);
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos());
            let dir = std::env::temp_dir().join(format!(
                "chat-local-sqlite-{}-{}-{nanos}",
                std::process::id(),
                NEXT.fetch_add(1, Ordering::Relaxed),
            ));
            std::fs::create_dir_all(&dir).unwrap();
            Self(dir)
        }

        fn db(&self) -> PathBuf {
            self.0.join("messages.db")
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    /// A fresh id each call, growing: the time part is fixed, the counter part counts.
    fn next_id() -> MessageId {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        MessageId::from_ulid(ulid::Ulid::from_parts(
            1_700_000_000_000,
            u128::from(NEXT.fetch_add(1, Ordering::Relaxed)),
        ))
    }

    fn message(room: &str, user: &str, text: &str, client_msg_id: Option<&str>) -> Message {
        Message {
            id: next_id(),
            room: RoomName::parse(room).unwrap(),
            user: UserName::parse(user).unwrap(),
            text: Some(text.to_owned()),
            ts: 1_700_000_000_000,
            client_msg_id: client_msg_id.map(|c| ClientMsgId::parse(c).unwrap()),
            version: 1,
            recall: None,
        }
    }

    /// Every message of `room`, oldest first, through `before` pages.
    async fn all_of(store: &SqliteMessageStore, room: &str) -> Vec<Message> {
        let room = RoomName::parse(room).unwrap();
        let mut all = vec![];
        let mut before = None;
        loop {
            let page = store.history(&room, before, 100).await.unwrap();
            before = page.messages.first().map(|m| m.id);
            let more = page.more;
            all.splice(0..0, page.messages);
            if !more {
                return all;
            }
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_appends_are_committed_together_and_all_readable() {
        let dir = TempDir::new();
        let store = SqliteMessageStore::open(&dir.db()).unwrap();
        // Ids made up front, appended in whatever order 200 tasks reach the writer.
        let mut sent: Vec<Message> = (0..200)
            .map(|i| message("lobby", &format!("u{i}"), &format!("m{i}"), None))
            .collect();
        let tasks: Vec<_> = sent
            .iter()
            .cloned()
            .map(|m| {
                let store = store.clone();
                tokio::spawn(async move { store.append(&m).await })
            })
            .collect();
        for t in tasks {
            assert!(matches!(t.await.unwrap().unwrap(), AppendOutcome::Stored));
        }
        let commits = store.commits();
        assert!(
            commits < 200,
            "200 concurrent appends took {commits} commits: nothing was batched"
        );
        assert!(commits >= 1);

        // History is in id order whatever order the batches wrote the rows in.
        sent.sort_by_key(|m| m.id.to_string());
        let stored = all_of(&store, "lobby").await;
        assert_eq!(stored, sent);
        // A second connection (an operator command) sees every committed row as well.
        let reader = SqliteMessageStore::open(&dir.db()).unwrap();
        assert_eq!(all_of(&reader, "lobby").await.len(), 200);
        for m in &sent {
            assert_eq!(reader.versions(m.id).await.unwrap(), vec![m.clone()]);
            assert_eq!(store.get(m.id).await.unwrap().as_ref(), Some(m));
        }
    }

    #[test]
    fn a_batch_answers_each_item_on_its_own() {
        let dir = TempDir::new();
        let _store = SqliteMessageStore::open(&dir.db()).unwrap();
        let mut db = open(&dir.db(), "FULL", MESSAGES_SCHEMA).unwrap();
        let first = message("lobby", "ann", "first", Some("c-1"));
        let again = message("lobby", "ann", "first, resent", Some("c-1"));
        let third = message("lobby", "ann", "first, resent twice", Some("c-1"));
        let other_user = message("lobby", "bob", "same client id, other user", Some("c-1"));
        let plain = message("lobby", "ann", "no client id", None);
        // The same message id twice under another client id: an error for that item only.
        let mut clash = message("lobby", "ann", "clash", Some("c-2"));
        clash.id = plain.id;
        let batch = [&first, &again, &other_user, &plain, &clash, &third];
        let outcomes = append_batch(&mut db, &batch).unwrap();
        assert_eq!(outcomes.len(), 6);
        assert!(matches!(outcomes[0], Ok(AppendOutcome::Stored)));
        match &outcomes[1] {
            Ok(AppendOutcome::Duplicate(m)) => assert_eq!(m, &first),
            other => panic!("expected the first copy, got {other:?}"),
        }
        assert!(matches!(outcomes[2], Ok(AppendOutcome::Stored)));
        assert!(matches!(outcomes[3], Ok(AppendOutcome::Stored)));
        match &outcomes[4] {
            Err(e) => assert!(e.to_string().contains("already stored"), "{e}"),
            other => panic!("expected an error for the clashing id, got {other:?}"),
        }
        match &outcomes[5] {
            Ok(AppendOutcome::Duplicate(m)) => assert_eq!(m, &first),
            other => panic!("expected the first copy, got {other:?}"),
        }
        let rows: i64 = db
            .query_row("SELECT count(*) FROM messages", [], |r| r.get(0))
            .unwrap();
        assert_eq!(
            rows, 3,
            "first, other_user and plain; no duplicate, no clash"
        );
        let versions: i64 = db
            .query_row("SELECT count(*) FROM message_versions", [], |r| r.get(0))
            .unwrap();
        assert_eq!(versions, 3, "a rolled-back item leaves no version row");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_duplicates_store_one_copy_and_answer_it_to_the_rest() {
        let dir = TempDir::new();
        let store = SqliteMessageStore::open(&dir.db()).unwrap();
        let tasks: Vec<_> = (0..50)
            .map(|i| {
                let store = store.clone();
                let m = message("lobby", "ann", &format!("try {i}"), Some("once"));
                tokio::spawn(async move { (m.clone(), store.append(&m).await.unwrap()) })
            })
            .collect();
        let mut stored = vec![];
        let mut duplicates = vec![];
        for t in tasks {
            match t.await.unwrap() {
                (m, AppendOutcome::Stored) => stored.push(m),
                (_, AppendOutcome::Duplicate(existing)) => duplicates.push(existing),
            }
        }
        assert_eq!(stored.len(), 1, "exactly one copy is stored");
        assert_eq!(duplicates.len(), 49);
        assert!(duplicates.iter().all(|d| d == &stored[0]));
        assert_eq!(all_of(&store, "lobby").await, stored);
    }

    #[test]
    fn a_transaction_that_cannot_start_fails_the_whole_batch() {
        let dir = TempDir::new();
        let mut db = open(&dir.db(), "FULL", MESSAGES_SCHEMA).unwrap();
        db.busy_timeout(std::time::Duration::from_millis(100))
            .unwrap();
        // Another process holds the write lock past the busy timeout.
        let other = open(&dir.db(), "FULL", MESSAGES_SCHEMA).unwrap();
        other.execute_batch("BEGIN IMMEDIATE").unwrap();
        let a = message("lobby", "ann", "a", None);
        let b = message("lobby", "bob", "b", None);
        assert!(append_batch(&mut db, &[&a, &b]).is_err());
        other.execute_batch("ROLLBACK").unwrap();
        let rows: i64 = db
            .query_row("SELECT count(*) FROM messages", [], |r| r.get(0))
            .unwrap();
        assert_eq!(rows, 0);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_dropped_store_writes_what_was_queued_before_its_writer_ends() {
        let dir = TempDir::new();
        let store = SqliteMessageStore::open(&dir.db()).unwrap();
        // Queued, then the store (the last sender) is dropped before anyone waits.
        let pending: Vec<_> = (0..20)
            .map(|i| {
                let m = message("lobby", "ann", &format!("m{i}"), None);
                let (reply, outcome) = tokio::sync::oneshot::channel();
                store
                    .appends
                    .send(AppendRequest { message: m, reply })
                    .unwrap();
                outcome
            })
            .collect();
        drop(store);
        for outcome in pending {
            assert!(matches!(outcome.await.unwrap(), Ok(AppendOutcome::Stored)));
        }
        let reopened = SqliteMessageStore::open(&dir.db()).unwrap();
        assert_eq!(all_of(&reopened, "lobby").await.len(), 20);
    }
}

#[cfg(test)]
mod group_commit {
    //! Group commit on a real `messages.db`: concurrent appends share commits, every one of them
    //! is stored and readable, and duplicates are answered per item.

    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;

    fn message(i: u128, user: &str, client_msg_id: Option<&str>) -> Message {
        Message {
            // Ascending ids in `i`, so history order is known.
            id: MessageId::from_ulid(ulid::Ulid::from_parts(1_700_000_000_000, i)),
            room: RoomName::parse("lobby").unwrap(),
            user: UserName::parse(user).unwrap(),
            text: Some(format!("m{i}")),
            ts: 1_700_000_000_000,
            client_msg_id: client_msg_id.map(|c| ClientMsgId::parse(c).unwrap()),
            version: 1,
            recall: None,
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_appends_share_commits_and_are_all_stored() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteMessageStore::open(&dir.path().join("messages.db")).unwrap();
        let tasks: Vec<_> = (0..200u128)
            .map(|i| {
                let store = store.clone();
                tokio::spawn(async move { store.append(&message(i, "ann", None)).await })
            })
            .collect();
        for t in tasks {
            assert_eq!(t.await.unwrap().unwrap(), AppendOutcome::Stored);
        }
        let commits = store.commits();
        assert!(
            commits < 200,
            "200 concurrent appends took {commits} commits: no batching"
        );
        let room = RoomName::parse("lobby").unwrap();
        let page = store.history(&room, None, 100).await.unwrap();
        assert!(page.more);
        let mut ids: Vec<MessageId> = Vec::new();
        let mut after = None;
        loop {
            let page = match after {
                None => store
                    .history_after(&room, MessageId::from_ulid(ulid::Ulid::nil()), 100)
                    .await
                    .unwrap(),
                Some(a) => store.history_after(&room, a, 100).await.unwrap(),
            };
            ids.extend(page.messages.iter().map(|m| m.id));
            after = ids.last().copied();
            if !page.more {
                break;
            }
        }
        let expected: Vec<MessageId> = (0..200u128).map(|i| message(i, "ann", None).id).collect();
        assert_eq!(ids, expected, "every append readable, in id order");
        // The audit row went in the same transaction.
        assert_eq!(store.versions(expected[199]).await.unwrap().len(), 1);
    }

    #[tokio::test]
    async fn duplicates_inside_one_batch_get_the_first_copy() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("messages.db");
        let store = SqliteMessageStore::open(&path).unwrap();
        // One batch, written the way the writer writes it: good items, a duplicate of an item of
        // the same batch (twice), and a duplicate of a message committed before.
        store
            .append(&message(1, "ann", Some("c-old")))
            .await
            .unwrap();
        let batch = [
            message(10, "ann", Some("c1")),
            message(11, "ann", Some("c1")),
            message(12, "bob", Some("c1")), // another user: not a duplicate
            message(13, "ann", Some("c1")),
            message(14, "ann", Some("c-old")),
            message(15, "ann", None),
            message(15, "bob", None), // the same id again: an error for this item only
        ];
        let refs: Vec<&Message> = batch.iter().collect();
        let mut db = open(&path, "FULL", MESSAGES_SCHEMA).unwrap();
        let outcomes = append_batch(&mut db, &refs).unwrap();
        assert_eq!(outcomes.len(), 7);
        assert_eq!(outcomes[0].as_ref().unwrap(), &AppendOutcome::Stored);
        assert_eq!(
            outcomes[1].as_ref().unwrap(),
            &AppendOutcome::Duplicate(batch[0].clone())
        );
        assert_eq!(outcomes[2].as_ref().unwrap(), &AppendOutcome::Stored);
        assert_eq!(
            outcomes[3].as_ref().unwrap(),
            &AppendOutcome::Duplicate(batch[0].clone())
        );
        assert_eq!(
            outcomes[4].as_ref().unwrap(),
            &AppendOutcome::Duplicate(message(1, "ann", Some("c-old")))
        );
        assert_eq!(outcomes[5].as_ref().unwrap(), &AppendOutcome::Stored);
        let err = outcomes[6].as_ref().unwrap_err().to_string();
        assert!(err.contains("already stored"), "{err}");

        let room = RoomName::parse("lobby").unwrap();
        let page = store.history(&room, None, 50).await.unwrap();
        let stored: Vec<MessageId> = page.messages.iter().map(|m| m.id).collect();
        let want: Vec<MessageId> = [1, 10, 12, 15]
            .iter()
            .map(|&i| message(i, "ann", None).id)
            .collect();
        assert_eq!(stored, want);
        // The rolled-back items left no audit rows; the stored ones have exactly one.
        assert!(store.versions(batch[1].id).await.unwrap().is_empty());
        assert_eq!(store.versions(batch[0].id).await.unwrap().len(), 1);
        assert_eq!(
            store.versions(batch[5].id).await.unwrap()[0].user.as_str(),
            "ann"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_duplicates_through_the_store_answer_with_one_copy() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteMessageStore::open(&dir.path().join("messages.db")).unwrap();
        // 50 retries of one send and 50 distinct sends, all at once.
        let tasks: Vec<_> = (0..100u128)
            .map(|i| {
                let store = store.clone();
                let m = if i % 2 == 0 {
                    message(i, "ann", Some("same"))
                } else {
                    message(i, "ann", Some(&format!("c{i}")))
                };
                tokio::spawn(async move { (i, store.append(&m).await.unwrap()) })
            })
            .collect();
        let mut stored_same = Vec::new();
        let mut duplicates = Vec::new();
        for t in tasks {
            match t.await.unwrap() {
                (i, AppendOutcome::Stored) if i % 2 == 0 => stored_same.push(i),
                (_, AppendOutcome::Stored) => {}
                (i, AppendOutcome::Duplicate(first)) => {
                    assert_eq!(i % 2, 0, "a distinct send was answered as a duplicate");
                    duplicates.push(first.id);
                }
            }
        }
        assert_eq!(stored_same.len(), 1, "exactly one copy of the retried send");
        let first = message(stored_same[0], "ann", Some("same")).id;
        assert_eq!(duplicates.len(), 49);
        assert!(duplicates.iter().all(|d| *d == first));
        let room = RoomName::parse("lobby").unwrap();
        assert_eq!(
            store
                .history(&room, None, 100)
                .await
                .unwrap()
                .messages
                .len(),
            51
        );
        assert!(store.commits() < 100);
    }
}
