//! `chatctl-infra`: the deployer side of chatctl. Packaging the Lambda handlers with cargo-lambda
//! (`build`), the one subprocess helper (`process`), the stack model (`stack`: the desired state
//! of a stage, pure) and the plan (`plan`: desired vs observed → ordered actions, pure). Reading
//! the observed state and applying a plan come next.

pub mod apply;
pub mod build;
pub mod calls;
pub mod config;
pub mod errors;
pub mod lock;
pub mod observe;
pub mod outputs;
pub mod plan;
pub mod process;
pub mod stack;
