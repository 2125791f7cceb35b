//! The wire protocol of DESIGN.md: typed client frames (parsed with limits into clear error codes)
//! and server frames. This is the public contract; extend it, never change a field's meaning.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::domain::{
    ClientMsgId, InvalidValue, MemberState, Message, MessageId, PresenceChange, RoomName, UserName,
};

/// The `code` of an error frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    BadRequest,
    UnknownAction,
    NotFound,
    Forbidden,
    TooLarge,
    RateLimited,
    Internal,
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadRequest => "bad_request",
            ErrorCode::UnknownAction => "unknown_action",
            ErrorCode::NotFound => "not_found",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::TooLarge => "too_large",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::Internal => "internal",
        }
    }
}

/// A refused frame: the code, a message for people, and the client's `clientMsgId` when it gave one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code:?}: {message}")]
pub struct FrameError {
    pub code: ErrorCode,
    pub message: String,
    pub reference: Option<String>,
}

impl FrameError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            reference: None,
        }
    }

    pub fn with_ref(mut self, reference: Option<String>) -> Self {
        self.reference = reference;
        self
    }

    pub fn to_frame(&self) -> ServerFrame {
        ServerFrame::Error {
            code: self.code,
            message: self.message.clone(),
            reference: self.reference.clone(),
        }
    }
}

/// The actions a client may send; the route key API Gateway selects by `$request.body.action`.
pub const ACTIONS: [&str; 7] = [
    "send", "history", "recall", "join", "leave", "presence", "ping",
];

/// A client frame, parsed and validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientFrame {
    Send {
        room: RoomName,
        text: String,
        client_msg_id: Option<ClientMsgId>,
    },
    History {
        room: RoomName,
        cursor: HistoryCursor,
        limit: usize,
    },
    Recall {
        id: MessageId,
    },
    Join {
        room: RoomName,
    },
    Leave {
        room: RoomName,
    },
    Presence {
        room: RoomName,
    },
    Ping,
}

/// Where a `history` page starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum HistoryCursor {
    /// The newest messages.
    #[default]
    Latest,
    /// The newest messages with ids strictly below this one (paging back).
    Before(MessageId),
    /// The oldest messages with ids strictly above this one (filling a gap after a reconnect).
    After(MessageId),
}

/// Limits applied while parsing client frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameLimits {
    /// Longest message text, in bytes of UTF-8.
    pub max_text_bytes: usize,
    pub default_history: usize,
    pub max_history: usize,
}

impl Default for FrameLimits {
    fn default() -> Self {
        Self {
            max_text_bytes: 4096,
            default_history: 50,
            max_history: 100,
        }
    }
}

/// The `action` of a frame body, if it is a JSON object with a string `action`; this is API
/// Gateway's route selection expression `$request.body.action`.
pub fn route_key(body: &str) -> Option<String> {
    let value: Value = serde_json::from_str(body).ok()?;
    value.get("action")?.as_str().map(str::to_owned)
}

/// The `clientMsgId` of a frame body, if it has one: the `ref` of an error about that frame.
pub fn client_ref(body: &str) -> Option<String> {
    let value: Value = serde_json::from_str(body).ok()?;
    value.get("clientMsgId")?.as_str().map(str::to_owned)
}

/// Parse one client frame. Never panics; every refusal carries the protocol's error code.
pub fn parse_client_frame(body: &str, limits: &FrameLimits) -> Result<ClientFrame, FrameError> {
    let value: Value = serde_json::from_str(body).map_err(|e| {
        FrameError::new(
            ErrorCode::BadRequest,
            format!("frame is not valid JSON: {e}"),
        )
    })?;
    let Value::Object(obj) = &value else {
        return Err(FrameError::new(
            ErrorCode::BadRequest,
            "frame must be a JSON object with an \"action\" field",
        ));
    };
    let reference = obj
        .get("clientMsgId")
        .and_then(Value::as_str)
        .map(str::to_owned);
    parse_object(obj, limits).map_err(|e| e.with_ref(reference))
}

fn parse_object(
    obj: &serde_json::Map<String, Value>,
    limits: &FrameLimits,
) -> Result<ClientFrame, FrameError> {
    let action = match obj.get("action") {
        Some(Value::String(a)) => a.as_str(),
        Some(_) => {
            return Err(FrameError::new(
                ErrorCode::BadRequest,
                "\"action\" must be a string",
            ));
        }
        None => {
            return Err(FrameError::new(
                ErrorCode::BadRequest,
                "frame has no \"action\" field",
            ));
        }
    };
    match action {
        "send" => {
            let room = room_field(obj, "room")?;
            let text = required_str(obj, "text")?;
            if text.trim().is_empty() {
                return Err(bad("\"text\" may not be empty"));
            }
            if text.len() > limits.max_text_bytes {
                return Err(FrameError::new(
                    ErrorCode::TooLarge,
                    format!(
                        "message text is {} bytes; the limit is {} bytes",
                        text.len(),
                        limits.max_text_bytes
                    ),
                ));
            }
            let client_msg_id = optional_str(obj, "clientMsgId")?
                .map(ClientMsgId::parse)
                .transpose()
                .map_err(invalid)?;
            Ok(ClientFrame::Send {
                room,
                text: text.to_owned(),
                client_msg_id,
            })
        }
        "history" => {
            let room = room_field(obj, "room")?;
            let cursor_field = |name: &str| {
                optional_str(obj, name)?
                    .map(MessageId::parse)
                    .transpose()
                    .map_err(|e| bad(format!("\"{name}\": {e}")))
            };
            let cursor = match (cursor_field("before")?, cursor_field("after")?) {
                (None, None) => HistoryCursor::Latest,
                (Some(before), None) => HistoryCursor::Before(before),
                (None, Some(after)) => HistoryCursor::After(after),
                (Some(_), Some(_)) => {
                    return Err(bad(
                        "give \"before\" (page back) or \"after\" (catch up), not both",
                    ));
                }
            };
            let limit = match obj.get("limit") {
                None | Some(Value::Null) => limits.default_history,
                Some(v) => match v.as_u64() {
                    Some(n) if n >= 1 && n <= limits.max_history as u64 => n as usize,
                    _ => {
                        return Err(bad(format!(
                            "\"limit\" must be a whole number from 1 to {}",
                            limits.max_history
                        )));
                    }
                },
            };
            Ok(ClientFrame::History {
                room,
                cursor,
                limit,
            })
        }
        "recall" => {
            let id = MessageId::parse(required_str(obj, "id")?)
                .map_err(|e| bad(format!("\"id\": {e}")))?;
            Ok(ClientFrame::Recall { id })
        }
        "join" => Ok(ClientFrame::Join {
            room: room_field(obj, "room")?,
        }),
        "leave" => Ok(ClientFrame::Leave {
            room: room_field(obj, "room")?,
        }),
        "presence" => Ok(ClientFrame::Presence {
            room: room_field(obj, "room")?,
        }),
        "ping" => Ok(ClientFrame::Ping),
        other => Err(FrameError::new(
            ErrorCode::UnknownAction,
            format!(
                "unknown action {:?}; expected one of {}",
                truncate(other, 64),
                ACTIONS.join(", ")
            ),
        )),
    }
}

fn bad(message: impl Into<String>) -> FrameError {
    FrameError::new(ErrorCode::BadRequest, message)
}

fn invalid(e: InvalidValue) -> FrameError {
    bad(e.0)
}

fn truncate(s: &str, max_chars: usize) -> String {
    s.chars().take(max_chars).collect()
}

fn required_str<'a>(
    obj: &'a serde_json::Map<String, Value>,
    field: &str,
) -> Result<&'a str, FrameError> {
    match obj.get(field) {
        Some(Value::String(s)) => Ok(s),
        Some(_) => Err(bad(format!("\"{field}\" must be a string"))),
        None => Err(bad(format!("frame is missing \"{field}\""))),
    }
}

fn optional_str<'a>(
    obj: &'a serde_json::Map<String, Value>,
    field: &str,
) -> Result<Option<&'a str>, FrameError> {
    match obj.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(bad(format!("\"{field}\" must be a string"))),
    }
}

fn room_field(obj: &serde_json::Map<String, Value>, field: &str) -> Result<RoomName, FrameError> {
    RoomName::parse(required_str(obj, field)?).map_err(invalid)
}

/// One message as it appears in a `history` answer: recalled ones are tombstones without text.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HistoryItem {
    pub id: MessageId,
    pub room: RoomName,
    pub user: UserName,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    pub ts: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_msg_id: Option<ClientMsgId>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub recalled: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recalled_by: Option<UserName>,
}

impl From<&Message> for HistoryItem {
    fn from(m: &Message) -> Self {
        HistoryItem {
            id: m.id,
            room: m.room.clone(),
            user: m.user.clone(),
            text: m.text.clone(),
            ts: m.ts,
            client_msg_id: m.client_msg_id.clone(),
            recalled: m.is_recalled(),
            recalled_by: m.recall.as_ref().map(|r| r.by.clone()),
        }
    }
}

/// One user's change in a `presence_batch` frame.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PresenceItem {
    pub user: UserName,
    pub state: PresenceChange,
}

/// One member in a `members` answer: a user, merged over all its connections.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MemberInfo {
    pub user: UserName,
    pub state: MemberState,
    pub last_seen: i64,
}

/// A frame the server sends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum ServerFrame {
    #[serde(rename_all = "camelCase")]
    Ack {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        client_msg_id: Option<ClientMsgId>,
        id: MessageId,
        ts: i64,
        /// True when this send repeated an earlier `clientMsgId`: nothing new was stored.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        duplicate: bool,
    },
    #[serde(rename_all = "camelCase")]
    Message {
        room: RoomName,
        id: MessageId,
        user: UserName,
        text: String,
        ts: i64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        client_msg_id: Option<ClientMsgId>,
    },
    History {
        room: RoomName,
        messages: Vec<HistoryItem>,
        more: bool,
    },
    Recalled {
        room: RoomName,
        id: MessageId,
        by: UserName,
        ts: i64,
    },
    Presence {
        room: RoomName,
        user: UserName,
        state: PresenceChange,
        ts: i64,
    },
    /// Several presence changes of one room, coalesced over one window (a join storm costs each
    /// member one frame per window, not one per joiner). Sent instead of `presence` when a
    /// window holds more than one change.
    #[serde(rename = "presence_batch")]
    PresenceBatch {
        room: RoomName,
        ts: i64,
        changes: Vec<PresenceItem>,
        /// Users in the room after these changes.
        members: usize,
    },
    /// A large room's presence over one window: counts instead of per-user changes. The member
    /// list is still one `presence` request away.
    Occupancy {
        room: RoomName,
        ts: i64,
        /// Users in the room after this window.
        members: usize,
        /// Users who joined during the window.
        joined: usize,
        /// Users who left during the window.
        left: usize,
    },
    Members {
        room: RoomName,
        members: Vec<MemberInfo>,
        /// True when the list was cut to fit one frame (rooms of thousands of members): the
        /// freshest members are kept.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        truncated: bool,
        /// Every member of the room, including those a truncated list left out.
        #[serde(default)]
        count: usize,
    },
    Pong {
        ts: i64,
    },
    Error {
        code: ErrorCode,
        message: String,
        #[serde(default, rename = "ref", skip_serializing_if = "Option::is_none")]
        reference: Option<String>,
    },
}

impl ServerFrame {
    /// The frame's `type`, as used for SNS message attributes and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            ServerFrame::Ack { .. } => "ack",
            ServerFrame::Message { .. } => "message",
            ServerFrame::History { .. } => "history",
            ServerFrame::Recalled { .. } => "recalled",
            ServerFrame::Presence { .. } => "presence",
            ServerFrame::PresenceBatch { .. } => "presence_batch",
            ServerFrame::Occupancy { .. } => "occupancy",
            ServerFrame::Members { .. } => "members",
            ServerFrame::Pong { .. } => "pong",
            ServerFrame::Error { .. } => "error",
        }
    }

    pub fn to_json(&self) -> String {
        // Serialising these plain structs cannot fail: every key is a string and no value is a
        // float or a map with non-string keys.
        serde_json::to_string(self).unwrap_or_else(|e| {
            format!(r#"{{"type":"error","code":"internal","message":"encoding failed: {e}"}}"#)
        })
    }

    pub fn message(m: &Message) -> Option<ServerFrame> {
        Some(ServerFrame::Message {
            room: m.room.clone(),
            id: m.id,
            user: m.user.clone(),
            text: m.text.clone()?,
            ts: m.ts,
            client_msg_id: m.client_msg_id.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(body: &str) -> Result<ClientFrame, FrameError> {
        parse_client_frame(body, &FrameLimits::default())
    }

    fn code(body: &str) -> ErrorCode {
        parse(body).expect_err(body).code
    }

    #[test]
    fn parses_every_action() {
        assert_eq!(
            parse(r#"{"action":"send","room":"lobby","text":"hi","clientMsgId":"c1"}"#).unwrap(),
            ClientFrame::Send {
                room: RoomName::parse("lobby").unwrap(),
                text: "hi".into(),
                client_msg_id: Some(ClientMsgId::parse("c1").unwrap()),
            }
        );
        assert_eq!(
            parse(r#"{"action":"history","room":"lobby"}"#).unwrap(),
            ClientFrame::History {
                room: RoomName::parse("lobby").unwrap(),
                cursor: HistoryCursor::Latest,
                limit: 50
            }
        );
        assert!(matches!(
            parse(
                r#"{"action":"history","room":"r","before":"01ARZ3NDEKTSV4RRFFQ69G5FAV","limit":100}"#
            ),
            Ok(ClientFrame::History {
                limit: 100,
                cursor: HistoryCursor::Before(_),
                ..
            })
        ));
        assert!(matches!(
            parse(r#"{"action":"history","room":"r","after":"01ARZ3NDEKTSV4RRFFQ69G5FAV"}"#),
            Ok(ClientFrame::History {
                limit: 50,
                cursor: HistoryCursor::After(_),
                ..
            })
        ));
        assert!(matches!(
            parse(r#"{"action":"recall","id":"01ARZ3NDEKTSV4RRFFQ69G5FAV"}"#),
            Ok(ClientFrame::Recall { .. })
        ));
        assert!(matches!(
            parse(r#"{"action":"join","room":"a"}"#),
            Ok(ClientFrame::Join { .. })
        ));
        assert!(matches!(
            parse(r#"{"action":"leave","room":"a"}"#),
            Ok(ClientFrame::Leave { .. })
        ));
        assert!(matches!(
            parse(r#"{"action":"presence","room":"a"}"#),
            Ok(ClientFrame::Presence { .. })
        ));
        assert_eq!(parse(r#"{"action":"ping"}"#).unwrap(), ClientFrame::Ping);
        // Unknown fields are ignored so that clients may be newer than the server.
        assert_eq!(
            parse(r#"{"action":"ping","extra":1}"#).unwrap(),
            ClientFrame::Ping
        );
    }

    #[test]
    fn bad_request_for_malformed_frames() {
        for body in [
            "",
            "not json",
            "{\"action\":",
            "[1,2]",
            "\"send\"",
            "{}",
            r#"{"action":5}"#,
            r#"{"action":"send","text":"no room"}"#,
            r#"{"action":"send","room":"lobby"}"#,
            r#"{"action":"send","room":"lobby","text":"   "}"#,
            r#"{"action":"send","room":"bad room","text":"x"}"#,
            r#"{"action":"send","room":"","text":"x"}"#,
            r#"{"action":"send","room":"lobby","text":7}"#,
            r#"{"action":"send","room":"lobby","text":"x","clientMsgId":""}"#,
            r#"{"action":"history","room":"lobby","limit":0}"#,
            r#"{"action":"history","room":"lobby","limit":101}"#,
            r#"{"action":"history","room":"lobby","limit":"ten"}"#,
            r#"{"action":"history","room":"lobby","before":"nope"}"#,
            r#"{"action":"history","room":"lobby","after":"nope"}"#,
            r#"{"action":"history","room":"lobby","after":5}"#,
            r#"{"action":"history","room":"l","after":"01ARZ3NDEKTSV4RRFFQ69G5FAV","before":"01ARZ3NDEKTSV4RRFFQ69G5FAV"}"#,
            r#"{"action":"recall"}"#,
            r#"{"action":"recall","id":"short"}"#,
            r#"{"action":"join","room":"a/b"}"#,
        ] {
            assert_eq!(code(body), ErrorCode::BadRequest, "{body}");
        }
    }

    #[test]
    fn unknown_action_names_the_known_ones() {
        let err = parse(r#"{"action":"dance"}"#).unwrap_err();
        assert_eq!(err.code, ErrorCode::UnknownAction);
        assert!(err.message.contains("send, history"), "{}", err.message);
    }

    #[test]
    fn too_large_text_is_refused_with_its_size() {
        let text = "é".repeat(2049); // 4098 bytes
        let body = serde_json::json!({"action":"send","room":"r","text":text,"clientMsgId":"c9"})
            .to_string();
        let err = parse(&body).unwrap_err();
        assert_eq!(err.code, ErrorCode::TooLarge);
        assert!(err.message.contains("4098"));
        assert_eq!(err.reference.as_deref(), Some("c9"));
        let ok = serde_json::json!({"action":"send","room":"r","text":"a".repeat(4096)});
        assert!(parse(&ok.to_string()).is_ok());
    }

    #[test]
    fn route_key_is_the_action_field() {
        assert_eq!(route_key(r#"{"action":"send"}"#).as_deref(), Some("send"));
        assert_eq!(route_key(r#"{"action":3}"#), None);
        assert_eq!(route_key("nope"), None);
    }

    #[test]
    fn server_frames_match_the_contract() {
        let id = MessageId::parse("01ARZ3NDEKTSV4RRFFQ69G5FAV").unwrap();
        let room = RoomName::parse("lobby").unwrap();
        let user = UserName::parse("ann").unwrap();
        let frames = [
            ServerFrame::Ack {
                client_msg_id: Some(ClientMsgId::parse("c1").unwrap()),
                id,
                ts: 5,
                duplicate: false,
            },
            ServerFrame::Message {
                room: room.clone(),
                id,
                user: user.clone(),
                text: "<b>hi</b>".into(),
                ts: 5,
                client_msg_id: None,
            },
            ServerFrame::History {
                room: room.clone(),
                messages: vec![HistoryItem {
                    id,
                    room: room.clone(),
                    user: user.clone(),
                    text: None,
                    ts: 5,
                    client_msg_id: None,
                    recalled: true,
                    recalled_by: Some(user.clone()),
                }],
                more: false,
            },
            ServerFrame::Recalled {
                room: room.clone(),
                id,
                by: user.clone(),
                ts: 6,
            },
            ServerFrame::Presence {
                room: room.clone(),
                user: user.clone(),
                state: PresenceChange::Joined,
                ts: 7,
            },
            ServerFrame::PresenceBatch {
                room: room.clone(),
                ts: 7,
                changes: vec![PresenceItem {
                    user: user.clone(),
                    state: PresenceChange::Left,
                }],
                members: 4,
            },
            ServerFrame::Occupancy {
                room: room.clone(),
                ts: 7,
                members: 1000,
                joined: 3,
                left: 1,
            },
            ServerFrame::Members {
                truncated: false,
                count: 1,
                room: room.clone(),
                members: vec![MemberInfo {
                    user: user.clone(),
                    state: MemberState::Idle,
                    last_seen: 3,
                }],
            },
            ServerFrame::Pong { ts: 8 },
            FrameError::new(ErrorCode::RateLimited, "slow down")
                .with_ref(Some("c2".into()))
                .to_frame(),
        ];
        let json: Vec<String> = frames.iter().map(ServerFrame::to_json).collect();
        assert_eq!(
            json,
            [
                r#"{"type":"ack","clientMsgId":"c1","id":"01ARZ3NDEKTSV4RRFFQ69G5FAV","ts":5}"#,
                r#"{"type":"message","room":"lobby","id":"01ARZ3NDEKTSV4RRFFQ69G5FAV","user":"ann","text":"<b>hi</b>","ts":5}"#,
                r#"{"type":"history","room":"lobby","messages":[{"id":"01ARZ3NDEKTSV4RRFFQ69G5FAV","room":"lobby","user":"ann","ts":5,"recalled":true,"recalledBy":"ann"}],"more":false}"#,
                r#"{"type":"recalled","room":"lobby","id":"01ARZ3NDEKTSV4RRFFQ69G5FAV","by":"ann","ts":6}"#,
                r#"{"type":"presence","room":"lobby","user":"ann","state":"joined","ts":7}"#,
                r#"{"type":"presence_batch","room":"lobby","ts":7,"changes":[{"user":"ann","state":"left"}],"members":4}"#,
                r#"{"type":"occupancy","room":"lobby","ts":7,"members":1000,"joined":3,"left":1}"#,
                r#"{"type":"members","room":"lobby","members":[{"user":"ann","state":"idle","lastSeen":3}],"count":1}"#,
                r#"{"type":"pong","ts":8}"#,
                r#"{"type":"error","code":"rate_limited","message":"slow down","ref":"c2"}"#,
            ]
        );
        for (frame, text) in frames.iter().zip(&json) {
            let back: ServerFrame = serde_json::from_str(text).unwrap();
            assert_eq!(&back, frame);
        }
    }

    #[test]
    fn every_error_code_has_its_wire_name() {
        for (code, name) in [
            (ErrorCode::BadRequest, "bad_request"),
            (ErrorCode::UnknownAction, "unknown_action"),
            (ErrorCode::NotFound, "not_found"),
            (ErrorCode::Forbidden, "forbidden"),
            (ErrorCode::TooLarge, "too_large"),
            (ErrorCode::RateLimited, "rate_limited"),
            (ErrorCode::Internal, "internal"),
        ] {
            assert_eq!(code.as_str(), name);
            assert_eq!(serde_json::to_value(code).unwrap(), name);
        }
    }
}
