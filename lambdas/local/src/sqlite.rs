//! SQLite adapters of the message and connection stores. Messages live in `messages.db` (WAL,
//! `synchronous=FULL`: a commit is on disk before the `ack` goes out); connections live in
//! `connections.db`, which needs no fsync because a restart clears them anyway.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

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
    db: Arc<Mutex<Db>>,
}

impl SqliteMessageStore {
    pub fn open(path: &Path) -> Result<Self, OpenError> {
        Ok(Self {
            db: Arc::new(Mutex::new(open(path, "FULL", MESSAGES_SCHEMA)?)),
        })
    }
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

fn insert_version(tx: &rusqlite::Transaction<'_>, message: &Message) -> rusqlite::Result<()> {
    let body = serde_json::to_string(message).map_err(corrupt)?;
    tx.execute(
        "INSERT INTO message_versions (id, version, body) VALUES (?1, ?2, ?3)",
        params![message.id.to_string(), message.version, body],
    )?;
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
        let message = message.clone();
        blocking(&self.db, "store message", move |db| {
            let tx = db.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let recall = message
                .recall
                .as_ref()
                .map(serde_json::to_string)
                .transpose()
                .map_err(corrupt)?;
            let inserted = tx.execute(
                &format!("INSERT INTO messages ({MESSAGE_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)"),
                params![
                    message.id.to_string(),
                    message.room.as_str(),
                    message.user.as_str(),
                    message.text,
                    message.ts,
                    message.client_msg_id.as_ref().map(ClientMsgId::as_str),
                    message.version,
                    recall,
                ],
            );
            match inserted {
                Ok(_) => {
                    insert_version(&tx, &message)?;
                    tx.commit()?;
                    Ok(AppendOutcome::Stored)
                }
                Err(rusqlite::Error::SqliteFailure(e, _))
                    if e.code == ErrorCode::ConstraintViolation =>
                {
                    drop(tx);
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
                Err(e) => Err(e),
            }
        })
        .await
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
            let mut messages = stmt
                .query_map(params![room, after, limit as i64 + 1], message_from_row)?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            let more = messages.len() > limit;
            messages.truncate(limit);
            Ok(HistoryPage { messages, more })
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
