//! `chatctl-infra`: the deployer side of chatctl. Packaging the Lambda handlers with cargo-lambda
//! (`build`, through the one subprocess helper `process`); the stack model (`stack`: the desired
//! state of a stage, pure); `observe` (AWS → observed state); `plan` (desired vs observed →
//! ordered actions, pure, printable); `apply` (the actions as SDK calls, with waits); the deploy
//! `lock`; `outputs`; `calls` (counting AWS requests); `config` (chatctl.toml); `schedule` (which
//! actions may run at once) and `pace` (API Gateway's quota); `workflow` (deploy, destroy and
//! plan as library calls reporting typed events).

pub mod apply;
pub mod build;
pub mod bundle;
pub mod calls;
pub mod cfn_engine;
pub mod cloudformation;
pub mod config;
pub mod errors;
pub mod kinds;
pub mod lock;
pub mod names;
pub mod observe;
pub mod outputs;
pub mod pace;
pub mod plan;
pub mod process;
pub mod releases;
pub mod scaffold;
pub mod schedule;
pub mod stack;
#[cfg(test)]
mod testing;
pub mod workflow;
