//! `chatctl status` and `chatctl outputs`: what is deployed for a stage, whether it still matches
//! the desired state (drift: someone changed it by hand, or a deploy did not finish), and the
//! outputs clients need. Read-only.

use std::fmt;

use chatctl_infra::observe;
use chatctl_infra::outputs::{self, Outputs};
use chatctl_infra::plan::{self, Action, Change};
use chatctl_infra::releases::{self, Release};
use serde::Serialize;

use crate::args::{OutputFormat, OutputsArgs, StatusArgs};
use crate::commands::plan::{CHANGES, NO_CHANGES};
use crate::commands::stage;
use crate::error::CliError;
use crate::output;
use crate::progress::Step;

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StatusReport {
    pub stack: String,
    pub region: String,
    pub account_id: String,
    /// Resources of the stage that exist.
    pub deployed: usize,
    /// Resources the stage should have.
    pub expected: usize,
    pub in_sync: bool,
    /// Whether the functions' code was compared with build artifacts.
    pub code_compared: bool,
    /// What differs from the desired state (what `deploy` would change).
    pub drift: Vec<Action>,
    /// Fan-out events Lambda gave up on (too old, or failed after its retry), when the stage has
    /// its dead-letter queue. Reported, not drift: the stage is as deployed, events were lost.
    pub dead_lettered: Option<DeadLettered>,
    /// The newest release of the log (what `deploy` or `rollback` last put live).
    pub release: Option<Release>,
    pub outputs: Option<Outputs>,
}

/// The fan-out's dead-letter queue and how many events wait in it (SQS's approximate count).
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DeadLettered {
    pub queue: String,
    pub events: u64,
}

impl fmt::Display for StatusReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "stage {} in {} (account {})",
            self.stack, self.region, self.account_id
        )?;
        if self.deployed == 0 {
            return write!(f, "  not deployed: run `chatctl deploy --stage …`");
        }
        writeln!(
            f,
            "  {} of {} resources deployed; {}",
            self.deployed,
            self.expected,
            if self.in_sync {
                "in sync with the desired state"
            } else {
                "drifted (what `chatctl deploy` would change is below)"
            }
        )?;
        if !self.code_compared {
            writeln!(
                f,
                "  code not compared (no build artifacts: pass --artifacts DIR)"
            )?;
        }
        for a in &self.drift {
            let what = match &a.change {
                Change::Create => "missing".to_owned(),
                Change::Delete => "not in the desired state".to_owned(),
                Change::Update { fields } | Change::Replace { fields } => fields
                    .iter()
                    .map(|f| f.field.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
                Change::Keep => continue,
            };
            writeln!(f, "  drift: {} {}: {what}", a.kind.label(), a.name)?;
        }
        if let Some(r) = &self.release {
            write!(f, "  live: {r}")?;
            if let Some(at) = &r.at {
                write!(f, " at {at}")?;
            }
            if let Some(commit) = &r.record.commit {
                write!(f, ", commit {}", commit.get(..12).unwrap_or(commit))?;
            }
            writeln!(f, " (`chatctl releases` lists them)")?;
        }
        if let Some(d) = &self.dead_lettered {
            writeln!(f, "  dead-lettered events: {} in {}", d.events, d.queue)?;
        }
        match &self.outputs {
            Some(o) => write!(f, "{o}"),
            None => write!(f, "  (no outputs: the stage has no API)"),
        }
    }
}

pub fn run(args: StatusArgs, format: OutputFormat) -> Result<u8, CliError> {
    let stage = stage::resolve(&args.target)?;
    let dir = match args.artifacts.clone() {
        Some(dir) => dir,
        None => stage::default_artifacts(&args.target.aws.project)?,
    };
    // Without artifacts the code cannot be compared; an explicit --artifacts must be usable.
    let code = match stage::code(&dir, stage.settings.arch) {
        Ok(code) => Some(code),
        Err(e) if args.artifacts.is_some() => return Err(e),
        Err(_) => None,
    };
    let runtime = crate::runtime()?;
    let report = runtime.block_on(async {
        let clients = stage::clients(&stage).await;
        let step = Step::start(format, format!("reading stage {} from AWS", stage.name));
        let observed = observe::observe(&clients, &stage.name).await;
        step.finish(if observed.is_ok() { "done" } else { "failed" });
        let observed = observed?;
        let (dead_lettered, release) = tokio::join!(
            observe::dead_lettered(&clients, &stage.name),
            releases::latest(&clients.ssm, &stage.name),
        );
        Ok::<_, CliError>((observed, dead_lettered?, release?))
    })?;
    let ((environment, observed), dead_lettered, release) = report;
    let dead_lettered = dead_lettered.map(|events| DeadLettered {
        queue: stage.name.names().dead_letter_queue(),
        events,
    });
    let code_compared = code.is_some();
    let code = code.unwrap_or_else(|| plan::with_deployed_code(&stage.name, &observed));
    let plan = plan::plan_stage(&stage.name, &stage.settings, &environment, &code, &observed);
    // The plan has one action per wanted resource, plus deletions of what is not wanted.
    let expected = plan
        .actions
        .iter()
        .filter(|a| a.change != Change::Delete)
        .count();
    let drift: Vec<Action> = plan
        .actions
        .into_iter()
        .filter(|a| a.change != Change::Keep)
        .collect();
    let report = StatusReport {
        stack: stage.name.to_string(),
        region: environment.region.clone(),
        account_id: environment.account_id.clone(),
        deployed: observed.resources.len(),
        expected,
        in_sync: drift.is_empty(),
        code_compared,
        drift,
        dead_lettered,
        release,
        outputs: outputs::outputs(&stage.name, &environment),
    };
    output::emit(format, &report);
    Ok(if args.detailed_exitcode && !report.in_sync {
        CHANGES
    } else {
        NO_CHANGES
    })
}

pub fn outputs(args: OutputsArgs, format: OutputFormat) -> Result<u8, CliError> {
    let stage = stage::resolve(&args.target)?;
    let runtime = crate::runtime()?;
    let environment = runtime.block_on(async {
        let clients = stage::clients(&stage).await;
        Ok::<_, CliError>(observe::environment(&clients, &stage.name).await?)
    })?;
    let outputs = stage::deployed_outputs(&stage, &environment, false)?;
    output::emit(format, &outputs);
    Ok(0)
}
