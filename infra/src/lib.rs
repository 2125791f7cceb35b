//! `chatctl-infra`: the deployer side of chatctl. For now, packaging the Lambda handlers with
//! cargo-lambda (`build`) and the one subprocess helper (`process`); the stack model, plan and
//! apply come next.

pub mod build;
pub mod process;
