//! One module per command.

pub mod build;
pub mod dev;
pub mod plan;
pub mod token;
