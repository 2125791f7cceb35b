//! `chatctl-infra`: the deployer side of chatctl. Packaging the Lambda handlers with cargo-lambda
//! (`build`, through the one subprocess helper `process`); the stack model (`stack`: the desired
//! state of a stage, pure); `observe` (AWS → observed state); `plan` (desired vs observed →
//! ordered actions, pure, printable); `apply` (the actions as SDK calls, with waits); the deploy
//! `lock`; `outputs`; `calls` (counting AWS requests); `config` (chatctl.toml).

pub mod apply;
pub mod build;
pub mod calls;
pub mod cloudformation;
pub mod config;
pub mod errors;
pub mod lock;
pub mod names;
pub mod observe;
pub mod outputs;
pub mod pace;
pub mod plan;
pub mod process;
pub mod schedule;
pub mod stack;
