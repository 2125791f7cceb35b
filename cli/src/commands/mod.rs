//! One module per command, and `events`, which renders the stage workflows.

pub mod build;
pub mod deploy;
pub mod destroy;
pub mod dev;
pub mod events;
pub mod export;
pub mod init;
pub mod ops;
pub mod plan;
pub mod reference;
pub mod releases;
pub mod smoke;
pub mod stage;
pub mod status;
pub mod tail;
pub mod target;
pub mod token;
