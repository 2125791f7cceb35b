//! One module per command.

pub mod build;
pub mod deploy;
pub mod destroy;
pub mod dev;
pub mod plan;
pub mod stage;
pub mod status;
pub mod token;
