//! `chat-local`: the whole chat backend on one machine. A WebSocket gateway with API Gateway's
//! semantics hands the Lambda handlers (`chat-handlers`) the event shapes AWS sends; SQLite stands
//! in for DynamoDB and an in-process topic for SNS. `chatctl dev` runs it.

pub mod gateway;
pub mod page;
pub mod registry;
pub mod secret;
pub mod server;
pub mod sqlite;
pub mod topic;

pub use gateway::GatewayLimits;
pub use server::{LocalConfig, LocalServer, StartError, Stores};
