//! Presence coalescing: the presence changes of one room over one window become at most one
//! frame, so a join storm of N members costs each member one frame per window instead of N.
//! Pure: the fan-out (local lane or one Lambda batch) decides the window and counts the members.

use std::collections::BTreeMap;

use crate::domain::{PresenceChange, RoomName, UserName};
use crate::protocol::{PresenceItem, ServerFrame};

/// How a room's presence is pushed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CoalescePolicy {
    /// How long a room's presence changes are collected before one frame goes out, in ms.
    pub window_ms: i64,
    /// Above this many members a room pushes counts (`occupancy`) instead of per-user changes:
    /// a list of who changed is useful to read up to a few hundred people, and beyond that
    /// every change would be a frame of kilobytes to every member.
    pub detail_limit: usize,
}

impl Default for CoalescePolicy {
    fn default() -> Self {
        Self {
            window_ms: 500,
            detail_limit: 200,
        }
    }
}

/// The presence changes of one room collected over one window.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PresenceWindow {
    /// Per user: the first and the last change seen in the window.
    changes: BTreeMap<UserName, (PresenceChange, PresenceChange)>,
    latest_ts: i64,
}

impl PresenceWindow {
    pub fn push(&mut self, user: &UserName, state: PresenceChange, ts: i64) {
        self.latest_ts = self.latest_ts.max(ts);
        self.changes
            .entry(user.clone())
            .and_modify(|(_, last)| *last = state)
            .or_insert((state, state));
    }

    /// Add a room event's frame when it is a presence change; false for any other frame.
    pub fn push_frame(&mut self, frame: &ServerFrame) -> bool {
        match frame {
            ServerFrame::Presence {
                user, state, ts, ..
            } => {
                self.push(user, *state, *ts);
                true
            }
            _ => false,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.changes.is_empty()
    }

    /// The net change per user: last state wins, and who joined and left inside the window did
    /// nothing anyone needs to hear about.
    fn net(&self) -> Vec<PresenceItem> {
        self.changes
            .iter()
            .filter(|(_, (first, last))| {
                !(*first == PresenceChange::Joined && *last == PresenceChange::Left)
            })
            .map(|(user, (_, last))| PresenceItem {
                user: user.clone(),
                state: *last,
            })
            .collect()
    }

    /// The one frame the window becomes for a room of `members` users (counted after the
    /// changes), or `None` when nothing is left to say: one change is the classic `presence`
    /// frame, several a `presence_batch`, and a room above the detail limit gets `occupancy`.
    pub fn into_frame(
        self,
        room: &RoomName,
        members: usize,
        policy: &CoalescePolicy,
    ) -> Option<ServerFrame> {
        let net = self.net();
        let ts = self.latest_ts;
        if net.is_empty() {
            return None;
        }
        if members > policy.detail_limit {
            let count = |state| net.iter().filter(|c| c.state == state).count();
            return Some(ServerFrame::Occupancy {
                room: room.clone(),
                ts,
                members,
                joined: count(PresenceChange::Joined),
                left: count(PresenceChange::Left),
            });
        }
        if let [only] = net.as_slice() {
            return Some(ServerFrame::Presence {
                room: room.clone(),
                user: only.user.clone(),
                state: only.state,
                ts,
            });
        }
        Some(ServerFrame::PresenceBatch {
            room: room.clone(),
            ts,
            changes: net,
            members,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(name: &str) -> UserName {
        UserName::parse(name).unwrap()
    }

    fn room() -> RoomName {
        RoomName::parse("r").unwrap()
    }

    const POLICY: CoalescePolicy = CoalescePolicy {
        window_ms: 500,
        detail_limit: 3,
    };

    #[test]
    fn one_change_is_the_classic_presence_frame() {
        let mut w = PresenceWindow::default();
        w.push(&user("ann"), PresenceChange::Joined, 5);
        assert_eq!(
            w.into_frame(&room(), 1, &POLICY),
            Some(ServerFrame::Presence {
                room: room(),
                user: user("ann"),
                state: PresenceChange::Joined,
                ts: 5
            })
        );
    }

    #[test]
    fn several_changes_are_one_batch_with_the_last_state_per_user() {
        let mut w = PresenceWindow::default();
        w.push(&user("bob"), PresenceChange::Joined, 5);
        w.push(&user("ann"), PresenceChange::Idle, 6);
        w.push(&user("ann"), PresenceChange::Online, 7);
        w.push(&user("cy"), PresenceChange::Joined, 8);
        w.push(&user("cy"), PresenceChange::Left, 9);
        let Some(ServerFrame::PresenceBatch {
            changes,
            ts,
            members,
            ..
        }) = w.into_frame(&room(), 2, &POLICY)
        else {
            panic!("expected a batch");
        };
        assert_eq!((ts, members), (9, 2));
        let got: Vec<_> = changes.iter().map(|c| (c.user.as_str(), c.state)).collect();
        // cy joined and left inside the window: nobody needs to hear of it.
        assert_eq!(
            got,
            [
                ("ann", PresenceChange::Online),
                ("bob", PresenceChange::Joined)
            ]
        );
    }

    #[test]
    fn a_large_room_gets_counts() {
        let mut w = PresenceWindow::default();
        for (i, name) in ["a", "b", "c"].iter().enumerate() {
            w.push(&user(name), PresenceChange::Joined, i as i64);
        }
        w.push(&user("d"), PresenceChange::Left, 10);
        assert_eq!(
            w.into_frame(&room(), 4, &POLICY),
            Some(ServerFrame::Occupancy {
                room: room(),
                ts: 10,
                members: 4,
                joined: 3,
                left: 1
            })
        );
    }

    #[test]
    fn a_window_that_cancels_out_says_nothing() {
        let mut w = PresenceWindow::default();
        assert!(w.clone().into_frame(&room(), 0, &POLICY).is_none());
        w.push(&user("ann"), PresenceChange::Joined, 1);
        w.push(&user("ann"), PresenceChange::Left, 2);
        assert!(!w.is_empty());
        assert!(w.into_frame(&room(), 0, &POLICY).is_none());
    }
}
