//! Dead connections: found by their heartbeat (past the idle threshold) or by the Management
//! API (`GetConnection` answers 410), and removed with their departure announced. One logic for
//! `chatctl connections gc` and for the scheduled sweep on AWS, where `$disconnect` is only best
//! effort and a vanished client would otherwise stay a member until its item's TTL.

use futures_util::StreamExt;
use futures_util::stream;
use serde::Serialize;

use crate::ChatService;
use crate::domain::{Connection, ConnectionId, UserName};
use crate::ports::{PortError, PostError};

/// Why a connection counts as dead.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum DeadReason {
    /// No heartbeat for longer than the idle threshold; its socket may still be open.
    HeartbeatOverdue,
    /// The Management API answers 410: the socket is gone.
    Gone,
}

impl DeadReason {
    pub fn as_str(self) -> &'static str {
        match self {
            DeadReason::HeartbeatOverdue => "heartbeat overdue",
            DeadReason::Gone => "the Management API answers 410 Gone",
        }
    }
}

/// A dead connection, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadConnection {
    pub id: ConnectionId,
    pub user: UserName,
    pub last_seen: i64,
    pub reason: DeadReason,
}

/// Which live-looking connections to ask the Management API about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProbeScope {
    /// Every connection whose heartbeat is not overdue (an operator's thorough `gc`).
    All,
    /// Only those not seen for this many ms: a client that pings keeps itself out of the probes,
    /// so a sweep every minute costs little at any room size.
    NotSeenWithin(i64),
}

/// What a scan for dead connections found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeadScan {
    pub checked: usize,
    pub probed: usize,
    /// Sorted by connection id.
    pub dead: Vec<DeadConnection>,
    /// Probes that failed for another reason than 410 (the connection was kept).
    pub errors: usize,
}

/// What one scheduled sweep did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct SweepReport {
    /// Presence changes (idle, left) announced from heartbeats.
    pub announced: usize,
    pub checked: usize,
    pub probed: usize,
    /// Connections removed (410, or heartbeat overdue), their departures announced.
    pub removed: usize,
    /// Failed probes and removals (tried again by the next sweep).
    pub errors: usize,
}

impl ChatService {
    /// Find dead connections: overdue by heartbeat, or gone by the Management API's answer.
    pub async fn find_dead(
        &self,
        scope: ProbeScope,
        concurrency: usize,
    ) -> Result<DeadScan, PortError> {
        let now = self.ports().clock.now_ms();
        let idle_ms = self.config().presence.idle_ms;
        let all = self.ports().connections.all().await?;
        let checked = all.len();
        let (overdue, fresh): (Vec<Connection>, Vec<Connection>) = all
            .into_iter()
            .partition(|c| now.saturating_sub(c.last_seen) > idle_ms);
        let mut dead: Vec<DeadConnection> = overdue
            .into_iter()
            .map(|c| dead(c, DeadReason::HeartbeatOverdue))
            .collect();
        let to_probe: Vec<Connection> = fresh
            .into_iter()
            .filter(|c| match scope {
                ProbeScope::All => true,
                ProbeScope::NotSeenWithin(ms) => now.saturating_sub(c.last_seen) > ms,
            })
            .collect();
        let probed = to_probe.len();
        let sender = &self.ports().sender;
        let probes: Vec<(Connection, Result<(), PostError>)> = stream::iter(to_probe)
            .map(|c| async move {
                let answer = sender.probe(&c.id).await;
                (c, answer)
            })
            .buffer_unordered(concurrency.max(1))
            .collect()
            .await;
        let mut errors = 0;
        for (c, answer) in probes {
            match answer {
                Ok(()) => {}
                Err(PostError::Gone) => dead.push(dead_of(c)),
                Err(PostError::Other(e)) => {
                    tracing::warn!(connection = %c.id, error = %e, "probe failed; connection kept");
                    errors += 1;
                }
            }
        }
        dead.sort_by(|a, b| a.id.as_str().cmp(b.id.as_str()));
        Ok(DeadScan {
            checked,
            probed,
            dead,
            errors,
        })
    }

    /// Remove dead connections and announce their departures; (removed, failed). A connection
    /// overdue by heartbeat is closed first: its socket may still be open, and its client should
    /// reconnect rather than talk to a connection nobody knows.
    pub async fn remove_dead(&self, dead: &[DeadConnection], concurrency: usize) -> (usize, usize) {
        let results: Vec<Result<(), PortError>> = stream::iter(dead)
            .map(|d| async move {
                if d.reason == DeadReason::HeartbeatOverdue {
                    let _ = self.ports().sender.close(&d.id).await;
                }
                self.disconnect(&d.id).await
            })
            .buffer_unordered(concurrency.max(1))
            .collect()
            .await;
        let failed = results.iter().filter(|r| r.is_err()).count();
        (results.len() - failed, failed)
    }

    /// The scheduled sweep: announce the presence changes heartbeats show since `since`, then
    /// remove connections that are gone (probing only those not seen within the online
    /// threshold) or overdue. A client that vanished without a close is announced `left` by the
    /// first sweep after its heartbeat is older than the online threshold.
    pub async fn sweep(&self, since: i64, now: i64) -> Result<SweepReport, PortError> {
        let announced = self.sweep_presence(since, now).await?;
        let scope = ProbeScope::NotSeenWithin(self.config().presence.online_ms);
        let concurrency = self.config().fanout_concurrency;
        let scan = self.find_dead(scope, concurrency).await?;
        let (removed, failed) = self.remove_dead(&scan.dead, concurrency).await;
        Ok(SweepReport {
            announced,
            checked: scan.checked,
            probed: scan.probed,
            removed,
            errors: scan.errors + failed,
        })
    }
}

fn dead(c: Connection, reason: DeadReason) -> DeadConnection {
    DeadConnection {
        id: c.id,
        user: c.user,
        last_seen: c.last_seen,
        reason,
    }
}

fn dead_of(c: Connection) -> DeadConnection {
    dead(c, DeadReason::Gone)
}
