//! `chatctl deploy`: build (or take `--artifacts`), then the library's deploy workflow (lock,
//! plan, confirm, apply in parallel with progress, release), and print the outputs. A re-run
//! after any interruption plans from what exists, so it converges.

use std::fmt;
use std::path::PathBuf;
use std::time::Instant;

use chatctl_infra::calls::CallCount;
use chatctl_infra::config::StageConfig;
use chatctl_infra::lock::Holder;
use chatctl_infra::outputs::Outputs;
use chatctl_infra::plan::Summary;
use chatctl_infra::workflow::{self, Options};
use serde::Serialize;

use crate::args::{DeployArgs, Engine, OutputFormat};
use crate::commands::events::Terminal;
use crate::commands::stage;
use crate::error::CliError;
use crate::output;

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
    /// The release recorded (new versions went live), if any.
    pub release: Option<i64>,
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
        if let Some(release) = self.release {
            writeln!(
                f,
                "release {release} is live (`chatctl releases` lists them)"
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
        args.target.aws.project.dir(),
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
    // Recorded with the release; a project outside git deploys without one.
    let commit = chatctl_infra::releases::commit_of(args.target.aws.project.dir());
    let runtime = crate::runtime()?;
    let outcome = runtime.block_on(async {
        let clients = stage::clients(&stage).await;
        let reporter = Terminal::new(
            format,
            ask.then(|| format!("Apply these changes to {}?", stage.name)),
        );
        let options = Options {
            break_lock: args.break_lock,
            replace_tables: args.replace_tables,
            concurrency: args.apply.parallel,
            roll_forward: args.roll_forward,
            commit: commit.as_deref(),
        };
        let target = workflow::Stage {
            clients: &clients,
            name: &stage.name,
            settings: &stage.settings,
        };
        match args.apply.engine {
            Engine::Direct => {
                workflow::deploy(&target, &code, &artifacts, options, &reporter).await
            }
            Engine::Cloudformation => {
                workflow::deploy_cloudformation(&target, &code, &artifacts, options, &reporter)
                    .await
            }
        }
    })?;
    let report = DeployReport {
        event: "deployed",
        stack: stage.name.to_string(),
        applied: outcome.applied,
        summary: outcome.summary,
        elapsed_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
        aws_calls: outcome.aws_calls,
        lock_taken_over_from: outcome.lock_taken_over_from,
        release: outcome.release,
        outputs: outcome.outputs,
    };
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
