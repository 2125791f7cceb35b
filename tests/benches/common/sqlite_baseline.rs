//! The disk's own SQLite figures, the durable benches' baselines: serial single-row commits on
//! WAL with `synchronous=FULL` (one fsync each), and rows written in one transaction — the two
//! ends of what group commit can reach on this disk. A fresh database in a temp dir.

use std::time::{Duration, Instant};

pub struct Baseline {
    db: rusqlite::Connection,
    /// About the size of a stored chat message with its JSON.
    body: String,
    _dir: tempfile::TempDir,
}

impl Baseline {
    pub fn open() -> Result<Self, String> {
        let dir = tempfile::tempdir().map_err(|e| format!("temp dir: {e}"))?;
        let db = rusqlite::Connection::open(dir.path().join("baseline.db"))
            .map_err(|e| format!("sqlite open: {e}"))?;
        db.execute_batch(
            "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL;
             CREATE TABLE m (id INTEGER PRIMARY KEY, body TEXT NOT NULL);",
        )
        .map_err(|e| format!("sqlite setup: {e}"))?;
        Ok(Self {
            db,
            body: "x".repeat(160),
            _dir: dir,
        })
    }

    fn insert(&self) -> Result<(), String> {
        self.db
            .execute("INSERT INTO m (body) VALUES (?1)", [&self.body])
            .map(|_| ())
            .map_err(|e| format!("sqlite insert: {e}"))
    }

    /// Single-row commits per second for `duration`.
    pub fn serial_commits_per_s(&self, duration: Duration) -> Result<f64, String> {
        let start = Instant::now();
        let mut n = 0u64;
        while start.elapsed() < duration {
            self.insert()?;
            n += 1;
        }
        Ok(n as f64 / start.elapsed().as_secs_f64())
    }

    /// Rows per second for `rows` rows in one transaction.
    pub fn one_transaction_rows_per_s(&self, rows: u64) -> Result<f64, String> {
        let start = Instant::now();
        let tx = self
            .db
            .unchecked_transaction()
            .map_err(|e| format!("sqlite begin: {e}"))?;
        for _ in 0..rows {
            self.insert()?;
        }
        tx.commit().map_err(|e| format!("sqlite commit: {e}"))?;
        Ok(rows as f64 / start.elapsed().as_secs_f64())
    }
}
