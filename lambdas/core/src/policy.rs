//! Policies with configurable thresholds: presence (online / idle / gone from the freshest
//! heartbeat), the sender's recall window, and the per-connection rate limit.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use crate::domain::{Connection, ConnectionId, MemberState, UserName};
use crate::presence::CoalescePolicy;
use crate::protocol::{FrameLimits, MemberInfo};

/// Presence thresholds, in milliseconds since the last heartbeat.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PresencePolicy {
    /// Seen within this long: `online`.
    pub online_ms: i64,
    /// Seen within this long (but not online): `idle`; after it the member is gone.
    pub idle_ms: i64,
}

impl Default for PresencePolicy {
    fn default() -> Self {
        Self {
            online_ms: 60_000,
            idle_ms: 300_000,
        }
    }
}

impl PresencePolicy {
    /// Heartbeats closer together than this are not written again: a connection's `last_seen`
    /// may lag by up to this much, far inside the `online` threshold (never above it).
    pub const HEARTBEAT_WRITE_INTERVAL_MS: i64 = 1_000;

    /// [`Self::HEARTBEAT_WRITE_INTERVAL_MS`], capped by a (test-sized) `online` threshold.
    pub fn heartbeat_write_interval_ms(&self) -> i64 {
        Self::HEARTBEAT_WRITE_INTERVAL_MS.min(self.online_ms)
    }

    /// The state of a member last seen at `last_seen`, or `None` when it counts as gone.
    pub fn state(&self, last_seen: i64, now: i64) -> Option<MemberState> {
        let age = now.saturating_sub(last_seen);
        if age <= self.online_ms {
            Some(MemberState::Online)
        } else if age <= self.idle_ms {
            Some(MemberState::Idle)
        } else {
            None
        }
    }

    /// Members of a room from its connections: one entry per user, from the user's freshest
    /// connection, sorted by user name; gone users are left out.
    pub fn members(&self, connections: &[Connection], now: i64) -> Vec<MemberInfo> {
        let mut freshest: BTreeMap<&UserName, i64> = BTreeMap::new();
        for c in connections {
            let seen = freshest.entry(&c.user).or_insert(c.last_seen);
            *seen = (*seen).max(c.last_seen);
        }
        freshest
            .into_iter()
            .filter_map(|(user, last_seen)| {
                self.state(last_seen, now).map(|state| MemberInfo {
                    user: user.clone(),
                    state,
                    last_seen,
                })
            })
            .collect()
    }
}

/// Token-bucket rate limit per connection.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateLimit {
    /// Sustained frames per second.
    pub per_second: f64,
    /// Frames allowed in a burst.
    pub burst: f64,
}

impl Default for RateLimit {
    fn default() -> Self {
        Self {
            per_second: 10.0,
            burst: 40.0,
        }
    }
}

/// Everything the handler logic can be tuned by.
#[derive(Debug, Clone, PartialEq)]
pub struct ChatConfig {
    pub frames: FrameLimits,
    pub presence: PresencePolicy,
    /// How long a sender may recall its own message, in milliseconds.
    pub recall_window_ms: i64,
    pub rate_limit: RateLimit,
    /// Posts in flight at once during one fan-out.
    pub fanout_concurrency: usize,
    /// A connection younger than this that answers 410 is still completing its upgrade (API
    /// Gateway answers 410 until `$connect` returns), so fan-out does not remove it.
    pub gone_grace_ms: i64,
    /// Rooms one connection may be in at once. Each room costs a write on connect and
    /// disconnect, and DynamoDB transactions hold at most 100 items.
    pub max_rooms_per_connection: usize,
    /// Largest reply frame: API Gateway posts at most 128 KB, less a margin.
    pub max_reply_bytes: usize,
    /// How presence changes are coalesced and when rooms switch to counts.
    pub presence_push: CoalescePolicy,
}

impl Default for ChatConfig {
    fn default() -> Self {
        Self {
            frames: FrameLimits::default(),
            presence: PresencePolicy::default(),
            recall_window_ms: 120_000,
            rate_limit: RateLimit::default(),
            fanout_concurrency: 32,
            gone_grace_ms: 5_000,
            max_rooms_per_connection: 50,
            max_reply_bytes: 120 * 1024,
            presence_push: CoalescePolicy::default(),
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: i64,
}

/// In-memory token buckets keyed by connection. On Lambda each instance keeps its own buckets, so
/// the limit is per connection per instance: a best-effort guard against floods, not a quota.
#[derive(Debug, Default)]
pub struct RateLimiter {
    buckets: Mutex<HashMap<ConnectionId, Bucket>>,
}

impl RateLimiter {
    /// Take one token for `id` at `now`; false when the connection is over its limit.
    pub fn allow(&self, limit: &RateLimit, id: &ConnectionId, now: i64) -> bool {
        let mut buckets = self
            .buckets
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let bucket = buckets.entry(id.clone()).or_insert(Bucket {
            tokens: limit.burst,
            at: now,
        });
        let elapsed_s = (now.saturating_sub(bucket.at)).max(0) as f64 / 1000.0;
        bucket.tokens = (bucket.tokens + elapsed_s * limit.per_second).min(limit.burst);
        bucket.at = now.max(bucket.at);
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    pub fn forget(&self, id: &ConnectionId) {
        self.buckets
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::RoomName;

    fn conn(id: &str, user: &str, last_seen: i64) -> Connection {
        Connection {
            id: ConnectionId::new(id),
            user: UserName::parse(user).unwrap(),
            rooms: [RoomName::parse("r").unwrap()].into(),
            allowed_rooms: None,
            connected_at: 0,
            last_seen,
            operator: false,
        }
    }

    #[test]
    fn presence_thresholds() {
        let p = PresencePolicy {
            online_ms: 60,
            idle_ms: 300,
        };
        assert_eq!(p.state(1000, 1000), Some(MemberState::Online));
        assert_eq!(p.state(1000, 1060), Some(MemberState::Online));
        assert_eq!(p.state(1000, 1061), Some(MemberState::Idle));
        assert_eq!(p.state(1000, 1300), Some(MemberState::Idle));
        assert_eq!(p.state(1000, 1301), None);
    }

    #[test]
    fn members_merge_connections_per_user() {
        let p = PresencePolicy {
            online_ms: 60,
            idle_ms: 300,
        };
        let members = p.members(
            &[
                conn("a1", "ann", 900),
                conn("a2", "ann", 990),
                conn("b1", "bob", 800),
                conn("c1", "cy", 100),
            ],
            1000,
        );
        let summary: Vec<_> = members
            .iter()
            .map(|m| (m.user.as_str(), m.state, m.last_seen))
            .collect();
        assert_eq!(
            summary,
            [
                ("ann", MemberState::Online, 990),
                ("bob", MemberState::Idle, 800)
            ]
        );
    }

    #[test]
    fn rate_limit_refills_over_time() {
        let limit = RateLimit {
            per_second: 2.0,
            burst: 3.0,
        };
        let limiter = RateLimiter::default();
        let id = ConnectionId::new("c");
        assert!((0..3).all(|_| limiter.allow(&limit, &id, 0)));
        assert!(!limiter.allow(&limit, &id, 0));
        assert!(limiter.allow(&limit, &id, 500));
        assert!(!limiter.allow(&limit, &id, 500));
        limiter.forget(&id);
        assert!(limiter.allow(&limit, &id, 500));
    }
}
