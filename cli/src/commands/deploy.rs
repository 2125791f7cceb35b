//! `chatctl deploy`: build (or take `--artifacts`), lock the stage, plan, confirm, apply one
//! action at a time with progress, release the lock, print the outputs. A re-run after any
//! interruption plans from what exists, so it converges.

use std::fmt;
use std::path::PathBuf;
use std::time::Instant;

use chatctl_infra::apply::Applier;
use chatctl_infra::calls::CallCount;
use chatctl_infra::config::StageConfig;
use chatctl_infra::lock::{self, Holder};
use chatctl_infra::observe::{self, Clients};
use chatctl_infra::outputs::{self, Outputs};
use chatctl_infra::plan::{self, Summary};
use serde::Serialize;

use crate::args::{DeployArgs, OutputFormat};
use crate::commands::stage;
use crate::error::CliError;
use crate::output;
use crate::progress::Step;

/// The result of a deploy.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DeployReport {
    pub event: &'static str,
    pub stack: String,
    /// Actions applied (0: nothing changed).
    pub applied: usize,
    pub summary: Summary,
    pub elapsed_ms: u64,
    pub aws_calls: CallCount,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lock_taken_over_from: Option<Holder>,
    pub outputs: Option<Outputs>,
}

impl fmt::Display for DeployReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secs = self.elapsed_ms as f64 / 1000.0;
        if let Some(holder) = &self.lock_taken_over_from {
            writeln!(f, "took over the deploy lock of {holder}")?;
        }
        if self.applied == 0 {
            writeln!(
                f,
                "{}: no changes, {} resources up to date ({secs:.1}s, {} AWS calls)",
                self.stack, self.summary.keep, self.aws_calls.total
            )?;
        } else {
            let s = &self.summary;
            writeln!(
                f,
                "deployed {}: {} created, {} updated, {} replaced, {} deleted in {secs:.1}s ({} AWS calls, {} of them changing)",
                self.stack,
                s.create,
                s.update,
                s.replace,
                s.delete,
                self.aws_calls.total,
                self.aws_calls.changing
            )?;
        }
        match &self.outputs {
            Some(o) => write!(f, "{o}"),
            None => write!(f, "(no outputs: the stage has no API yet)"),
        }
    }
}

fn build_artifacts(
    args: &DeployArgs,
    stage: &StageConfig,
    format: OutputFormat,
) -> Result<PathBuf, CliError> {
    let arch = stage.settings.arch;
    let label = format!(
        "building the handlers for {} (pass --artifacts DIR to deploy a build you made earlier)",
        arch.lambda_name()
    );
    let (out_dir, _) = crate::commands::build::build_handlers(
        format,
        arch,
        None,
        args.manifest_path.as_deref(),
        label,
    )?;
    Ok(out_dir)
}

pub fn run(args: DeployArgs, format: OutputFormat) -> Result<u8, CliError> {
    let started = Instant::now();
    let stage = stage::resolve(&args.target)?;
    let ask = stage::require_yes_without_terminal(args.yes, "deploy")?;
    let dir = match &args.artifacts {
        Some(dir) => dir.clone(),
        None => build_artifacts(&args, &stage, format)?,
    };
    let code = stage::code(&dir, stage.settings.arch)?;
    let artifacts = stage::artifacts(&dir)?;
    let runtime = crate::runtime()?;
    let report = runtime.block_on(async {
        let clients = stage::clients(&stage).await;
        let step = Step::start(format, format!("locking stage {}", stage.name));
        let lock = lock::acquire(&clients.ssm, &stage.name, "deploy", args.break_lock).await;
        step.finish(if lock.is_ok() { "done" } else { "refused" });
        let lock = lock?;
        let took_over = lock.took_over.clone();
        let result = deploy_locked(&args, &stage, &clients, &code, &artifacts, ask, format).await;
        // Released whatever happened; a failure to release is reported but does not hide the
        // deploy's own error.
        let released = lock.release().await;
        let (applied, summary, outputs) = result?;
        released?;
        Ok::<_, CliError>(DeployReport {
            event: "deployed",
            stack: stage.name.to_string(),
            applied,
            summary,
            elapsed_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
            aws_calls: clients.calls.snapshot(),
            lock_taken_over_from: took_over,
            outputs,
        })
    })?;
    if let (Some(path), Some(outputs)) = (&args.outputs_file, &report.outputs) {
        let json = serde_json::to_string_pretty(outputs).unwrap_or_default();
        std::fs::write(path, json + "\n").map_err(|e| {
            CliError::Environment(format!(
                "deployed, but cannot write --outputs-file {}: {e}",
                path.display()
            ))
        })?;
    }
    output::emit(format, &report);
    Ok(0)
}

async fn deploy_locked(
    args: &DeployArgs,
    stage: &StageConfig,
    clients: &Clients,
    code: &chatctl_infra::stack::Code,
    artifacts: &chatctl_infra::apply::Artifacts,
    ask: bool,
    format: OutputFormat,
) -> Result<(usize, Summary, Option<Outputs>), CliError> {
    let step = Step::start(format, format!("reading stage {} from AWS", stage.name));
    let observed = observe::observe(clients, &stage.name).await;
    step.finish(if observed.is_ok() { "done" } else { "failed" });
    let (environment, observed) = observed?;
    let plan = plan::plan_stage(&stage.name, &stage.settings, &environment, code, &observed);
    let summary = plan.summary();
    if !plan.has_changes() {
        return Ok((0, summary, outputs::outputs(&stage.name, &environment)));
    }
    stage::show_plan(format, &plan);
    let tables = plan.replaced_tables();
    if !tables.is_empty() && !args.replace_tables {
        return Err(CliError::Unsafe(format!(
            "the plan replaces {} (a key changed), which deletes every item in it; pass --replace-tables to accept losing that data, or revert the change",
            tables.join(" and ")
        )));
    }
    if ask && !stage::confirm(&format!("Apply these changes to {}?", stage.name))? {
        return Err(CliError::Declined("deploy cancelled".to_owned()));
    }
    let waiting = stage::waiting(format);
    let applier = Applier::new(
        clients,
        &stage.name,
        &stage.settings,
        code,
        &environment,
        &observed,
    )
    .with_artifacts(artifacts)
    .with_progress(&waiting)
    .with_concurrency(args.apply.parallel);
    let mut on_event = stage::progress(format);
    let applied = applier.apply(&plan, &mut on_event).await?;
    Ok((
        applied,
        summary,
        outputs::outputs(&stage.name, &applier.environment()),
    ))
}
