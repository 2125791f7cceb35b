//! `chat-handlers`: the Lambda entry points as plain async functions. API Gateway WebSocket proxy
//! requests and SNS events go in, `chat-core` does the work. The Lambda binaries wrap these in the
//! runtime; the local gateway builds the same event shapes (with [`events`]) and calls the same
//! functions, so the path that runs on Lambda is the path that runs locally.

pub mod events;
pub mod fanout;
pub mod queue;
pub mod sweep;
pub mod ws;
