//! `chat-core`: the chat backend without I/O — the wire protocol, the domain, the ports and the
//! handler logic that the Lambda binaries and the local gateway both run. It knows nothing of AWS,
//! SQLite or sockets; adapters for those live in `chat-aws` and `chat-local`.

pub mod cache;
pub mod domain;
pub mod handler;
pub mod memory;
pub mod policy;
pub mod ports;
pub mod presence;
pub mod protocol;
pub mod sweep;
pub mod token;

pub use handler::{AuthConfig, ChatService, ConnectParams, ConnectRefusal, FanoutReport, Ports};
pub use policy::ChatConfig;
