//! The chat domain: validated names, message and connection records, presence states.
//! Every value that arrives from the network is parsed into one of these types once, at the edge,
//! so the handler logic never sees an unchecked room name or id.

use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use ulid::Ulid;

/// Why a name or id from the outside was refused; the text is shown to the client as is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidValue(pub String);

/// A room name: 1–64 characters of `[A-Za-z0-9_.-]`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RoomName(String);

impl RoomName {
    pub const MAX_LEN: usize = 64;

    pub fn parse(raw: &str) -> Result<Self, InvalidValue> {
        if raw.is_empty() || raw.len() > Self::MAX_LEN {
            return Err(InvalidValue(format!(
                "room name must be 1-{} characters long, got {}",
                Self::MAX_LEN,
                raw.chars().count()
            )));
        }
        if let Some(bad) = raw
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')))
        {
            return Err(InvalidValue(format!(
                "room name may only contain A-Z, a-z, 0-9, '_', '.' and '-'; found {bad:?}"
            )));
        }
        Ok(Self(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A user name: 1–64 printable characters (no control characters, not only white space).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct UserName(String);

impl UserName {
    pub const MAX_LEN: usize = 64;

    pub fn parse(raw: &str) -> Result<Self, InvalidValue> {
        let count = raw.chars().count();
        if count == 0 || count > Self::MAX_LEN {
            return Err(InvalidValue(format!(
                "user name must be 1-{} characters long, got {count}",
                Self::MAX_LEN
            )));
        }
        if raw.chars().any(char::is_control) {
            return Err(InvalidValue(
                "user name may not contain control characters".to_owned(),
            ));
        }
        if raw.trim().is_empty() {
            return Err(InvalidValue(
                "user name may not be only white space".to_owned(),
            ));
        }
        Ok(Self(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

macro_rules! string_serde {
    ($ty:ty) => {
        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
        impl Serialize for $ty {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.0)
            }
        }
        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let raw = String::deserialize(d)?;
                Self::parse(&raw).map_err(serde::de::Error::custom)
            }
        }
        impl FromStr for $ty {
            type Err = InvalidValue;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Self::parse(s)
            }
        }
    };
}
string_serde!(RoomName);
string_serde!(UserName);

/// A message id: a ULID, 26 characters, sortable by creation time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MessageId(Ulid);

impl MessageId {
    pub fn from_ulid(ulid: Ulid) -> Self {
        Self(ulid)
    }

    pub fn ulid(self) -> Ulid {
        self.0
    }

    pub fn parse(raw: &str) -> Result<Self, InvalidValue> {
        if raw.len() != ulid::ULID_LEN {
            return Err(InvalidValue(format!(
                "message id must be a 26-character ULID, got {} characters",
                raw.chars().count()
            )));
        }
        // 26 base-32 digits hold 130 bits; a ULID has 128, so the first digit is at most 7.
        // Larger ones would silently wrap to another id.
        if !raw.starts_with(|c: char| ('0'..='7').contains(&c)) {
            return Err(InvalidValue(
                "message id is out of the ULID range (its first character must be 0-7)".into(),
            ));
        }
        Ulid::from_string(raw)
            .map(Self)
            .map_err(|e| InvalidValue(format!("message id is not a valid ULID: {e}")))
    }

    /// Milliseconds since the epoch encoded in the id.
    pub fn timestamp_ms(self) -> u64 {
        self.0.timestamp_ms()
    }
}

impl fmt::Display for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut buf = [0u8; ulid::ULID_LEN];
        f.write_str(self.0.array_to_str(&mut buf))
    }
}

impl FromStr for MessageId {
    type Err = InvalidValue;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl Serialize for MessageId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for MessageId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(d)?;
        Self::parse(&raw).map_err(serde::de::Error::custom)
    }
}

/// A connection id as API Gateway hands it out (opaque, e.g. `L0SM9cOFvHcCIhw=`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ConnectionId(String);

impl ConnectionId {
    pub fn new(raw: impl Into<String>) -> Self {
        Self(raw.into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ConnectionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An idempotency key chosen by the client: 1–128 printable characters.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ClientMsgId(String);

impl ClientMsgId {
    pub const MAX_LEN: usize = 128;

    pub fn parse(raw: &str) -> Result<Self, InvalidValue> {
        let count = raw.chars().count();
        if count == 0 || count > Self::MAX_LEN || raw.chars().any(char::is_control) {
            return Err(InvalidValue(format!(
                "clientMsgId must be 1-{} printable characters",
                Self::MAX_LEN
            )));
        }
        Ok(Self(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Who recalled a message, when, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Recall {
    pub by: UserName,
    pub at: i64,
    /// True when an operator recalled it (outside the sender's window, or someone else's message).
    #[serde(default)]
    pub operator: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// A stored chat message. `version` starts at 1 and grows with every change (recall); the store
/// keeps every earlier version for audit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Message {
    pub id: MessageId,
    pub room: RoomName,
    pub user: UserName,
    /// `None` once recalled: a tombstone keeps no text.
    pub text: Option<String>,
    pub ts: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_msg_id: Option<ClientMsgId>,
    pub version: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recall: Option<Recall>,
}

impl Message {
    pub fn is_recalled(&self) -> bool {
        self.recall.is_some()
    }

    /// The next version of this message as a tombstone.
    pub fn recalled(&self, recall: Recall) -> Message {
        Message {
            text: None,
            version: self.version + 1,
            recall: Some(recall),
            ..self.clone()
        }
    }
}

/// One WebSocket connection and the rooms it is a member of.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Connection {
    pub id: ConnectionId,
    pub user: UserName,
    pub rooms: BTreeSet<RoomName>,
    /// Rooms the token allows; `None` means any room.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowed_rooms: Option<BTreeSet<RoomName>>,
    pub connected_at: i64,
    pub last_seen: i64,
    /// Operators may recall any message at any time.
    #[serde(default)]
    pub operator: bool,
}

impl Connection {
    pub fn may_enter(&self, room: &RoomName) -> bool {
        self.allowed_rooms
            .as_ref()
            .is_none_or(|allowed| allowed.contains(room))
    }
}

/// A member's state as derived from its freshest heartbeat.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MemberState {
    Online,
    Idle,
}

/// What a `presence` frame announces.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PresenceChange {
    Joined,
    Left,
    Online,
    Idle,
}

impl From<MemberState> for PresenceChange {
    fn from(state: MemberState) -> Self {
        match state {
            MemberState::Online => PresenceChange::Online,
            MemberState::Idle => PresenceChange::Idle,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn room_names_follow_the_contract() {
        assert!(RoomName::parse("lobby").is_ok());
        assert!(RoomName::parse("a.b_c-D9").is_ok());
        assert!(RoomName::parse(&"x".repeat(64)).is_ok());
        assert!(RoomName::parse("").is_err());
        assert!(RoomName::parse(&"x".repeat(65)).is_err());
        assert!(RoomName::parse("has space").is_err());
        assert!(RoomName::parse("émoji").is_err());
        assert!(RoomName::parse("a/b").is_err());
    }

    #[test]
    fn user_names_are_printable() {
        assert!(UserName::parse("Zoë O'Brien").is_ok());
        assert!(UserName::parse(&"é".repeat(64)).is_ok());
        assert!(UserName::parse(&"é".repeat(65)).is_err());
        assert!(UserName::parse("").is_err());
        assert!(UserName::parse("   ").is_err());
        assert!(UserName::parse("bell\u{7}").is_err());
        assert!(UserName::parse("new\nline").is_err());
    }

    #[test]
    fn message_ids_round_trip_and_reject_garbage() {
        let id = MessageId::from_ulid(Ulid::from_parts(1_700_000_000_000, 42));
        let text = id.to_string();
        assert_eq!(text.len(), 26);
        assert_eq!(MessageId::parse(&text), Ok(id));
        assert_eq!(id.timestamp_ms(), 1_700_000_000_000);
        assert!(MessageId::parse("not-a-ulid").is_err());
        assert!(MessageId::parse("UUUUUUUUUUUUUUUUUUUUUUUUUU").is_err());
        assert!(MessageId::parse("ZZZZZZZZZZZZZZZZZZZZZZZZZZ").is_err());
        assert!(MessageId::parse("8ZZZZZZZZZZZZZZZZZZZZZZZZZ").is_err());
        assert!(MessageId::parse("7ZZZZZZZZZZZZZZZZZZZZZZZZZ").is_ok());
    }

    #[test]
    fn token_room_lists_limit_rooms() {
        let lobby = RoomName::parse("lobby").unwrap();
        let other = RoomName::parse("other").unwrap();
        let mut conn = Connection {
            id: ConnectionId::new("c1"),
            user: UserName::parse("u").unwrap(),
            rooms: BTreeSet::new(),
            allowed_rooms: None,
            connected_at: 0,
            last_seen: 0,
            operator: false,
        };
        assert!(conn.may_enter(&other));
        conn.allowed_rooms = Some([lobby.clone()].into());
        assert!(conn.may_enter(&lobby));
        assert!(!conn.may_enter(&other));
    }
}
