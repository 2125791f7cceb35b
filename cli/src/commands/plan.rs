//! `chatctl plan`: what `deploy` would change in a stage, read from AWS and diffed against the
//! stack model. Read-only.

use chatctl_infra::observe;
use chatctl_infra::plan;

use crate::args::{OutputFormat, PlanArgs};
use crate::commands::stage;
use crate::error::CliError;
use crate::output;
use crate::progress::Step;

/// Exit codes of `--detailed-exitcode`, as Terraform's.
pub const NO_CHANGES: u8 = 0;
pub const CHANGES: u8 = 2;

pub fn run(args: PlanArgs, format: OutputFormat) -> Result<u8, CliError> {
    let stage = stage::resolve(&args.target)?;
    let artifacts = args
        .artifacts
        .clone()
        .unwrap_or_else(stage::default_artifacts);
    let code = stage::code(&artifacts, stage.settings.arch)?;
    let runtime = crate::runtime()?;
    let plan = runtime.block_on(async {
        let clients = stage::clients(&stage).await;
        let step = Step::start(format, format!("reading stage {} from AWS", stage.name));
        let observed = observe::observe(&clients, &stage.name).await;
        step.finish(if observed.is_ok() { "done" } else { "failed" });
        let (environment, observed) = observed?;
        Ok::<_, CliError>(plan::plan_stage(
            &stage.name,
            &stage.settings,
            &environment,
            &code,
            &observed,
        ))
    })?;
    output::emit(format, &plan);
    Ok(if args.detailed_exitcode && plan.has_changes() {
        CHANGES
    } else {
        NO_CHANGES
    })
}
