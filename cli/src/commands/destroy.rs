//! `chatctl destroy`: delete every resource of a stage, dependents first, under the deploy lock.
//! Finds everything by its deterministic name, so it also removes what a half-finished deploy
//! left behind; running it twice is harmless.

use std::fmt;
use std::time::Instant;

use chatctl_infra::apply::Applier;
use chatctl_infra::calls::CallCount;
use chatctl_infra::config::StageConfig;
use chatctl_infra::lock;
use chatctl_infra::observe::{self, Clients};
use chatctl_infra::plan;
use chatctl_infra::stack::{Code, DesiredStack};
use serde::Serialize;

use crate::args::{DestroyArgs, OutputFormat};
use crate::commands::stage;
use crate::error::CliError;
use crate::output;
use crate::progress::Step;

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DestroyReport {
    pub event: &'static str,
    pub stack: String,
    pub deleted: usize,
    pub elapsed_ms: u64,
    pub aws_calls: CallCount,
}

impl fmt::Display for DestroyReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secs = self.elapsed_ms as f64 / 1000.0;
        if self.deleted == 0 {
            write!(
                f,
                "{}: nothing to destroy ({secs:.1}s, {} AWS calls)",
                self.stack, self.aws_calls.total
            )
        } else {
            write!(
                f,
                "destroyed {}: {} resources deleted in {secs:.1}s ({} AWS calls)",
                self.stack, self.deleted, self.aws_calls.total
            )
        }
    }
}

pub fn run(args: DestroyArgs, format: OutputFormat) -> Result<u8, CliError> {
    let started = Instant::now();
    let stage = stage::resolve(&args.target)?;
    let ask = stage::require_yes_without_terminal(args.yes, "destroy")?;
    let runtime = crate::runtime()?;
    let report = runtime.block_on(async {
        let clients = stage::clients(&stage).await;
        let step = Step::start(format, format!("locking stage {}", stage.name));
        let lock = lock::acquire(&clients.ssm, &stage.name, "destroy", args.break_lock).await;
        step.finish(if lock.is_ok() { "done" } else { "refused" });
        let lock = lock?;
        let result = destroy_locked(&stage, &clients, ask, args.apply.parallel, format).await;
        let released = lock.release().await;
        let deleted = result?;
        released?;
        Ok::<_, CliError>(DestroyReport {
            event: "destroyed",
            stack: stage.name.to_string(),
            deleted,
            elapsed_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
            aws_calls: clients.calls.snapshot(),
        })
    })?;
    output::emit(format, &report);
    Ok(0)
}

async fn destroy_locked(
    stage: &StageConfig,
    clients: &Clients,
    ask: bool,
    parallel: u16,
    format: OutputFormat,
) -> Result<usize, CliError> {
    let step = Step::start(format, format!("reading stage {} from AWS", stage.name));
    let observed = observe::observe(clients, &stage.name).await;
    step.finish(if observed.is_ok() { "done" } else { "failed" });
    let (environment, observed) = observed?;
    // Nothing is wanted: every resource found plans as a deletion, dependents first.
    let nothing = DesiredStack {
        name: stage.name.clone(),
        resources: Vec::new(),
    };
    let plan = plan::plan(&nothing, &observed);
    if !plan.has_changes() {
        return Ok(0);
    }
    stage::show_plan(format, &plan);
    if ask
        && !stage::confirm(&format!(
            "Delete every resource of {}, including all messages?",
            stage.name
        ))?
    {
        return Err(CliError::Declined("destroy cancelled".to_owned()));
    }
    // Deletes need no code; the model is only consulted for names.
    let code = Code {
        ws_sha256: String::new(),
        fanout_sha256: String::new(),
    };
    let applier = Applier::new(
        clients,
        &stage.name,
        &stage.settings,
        &code,
        &environment,
        &observed,
    )
    .with_concurrency(parallel);
    let mut on_event = stage::progress(format);
    Ok(applier.apply(&plan, &mut on_event).await?)
}
