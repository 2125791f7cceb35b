//! `chatctl-ops`: the operator side of chatctl. One operator interface over the chat ports —
//! tail a room, see its presence, recall a message, announce, kick, collect dead connections —
//! with two targets behind it: a deployed stage (DynamoDB, SNS, the Management API) and the local
//! instance (its SQLite data directory and the running gateway's Management API). `smoke` is the
//! post-deploy check: two real WebSocket clients through the target's public URL.

pub mod operator;
pub mod smoke;
pub mod target;
