//! Renders the stage workflows' events (`chatctl_infra::workflow`): progress steps on a terminal,
//! plain lines in CI, NDJSON events for `--output json`; and asks the one question on the
//! terminal when `--yes` was not given.

use std::sync::{Mutex, PoisonError};

use chatctl_infra::cfn_engine::ChangeSet;
use chatctl_infra::plan::Summary;
use chatctl_infra::workflow::{Event, Reporter, WorkflowError};

use crate::args::OutputFormat;
use crate::commands::stage;
use crate::error::CliError;
use crate::output;
use crate::progress::Step;

/// The `changeSet` event of `--output json`.
#[derive(serde::Serialize)]
struct ChangeSetEvent<'a> {
    event: &'static str,
    #[serde(flatten)]
    change_set: &'a ChangeSet,
    summary: Summary,
}

/// The CLI's reporter for one command.
#[derive(Debug)]
pub struct Terminal {
    format: OutputFormat,
    /// The question before applying, or `None` with `--yes`.
    question: Option<String>,
    /// The step in progress (locking, reading, or the action at the head of the plan).
    step: Mutex<Option<Step>>,
}

impl Terminal {
    pub fn new(format: OutputFormat, question: Option<String>) -> Self {
        Self {
            format,
            question,
            step: Mutex::new(None),
        }
    }

    fn start(&self, label: String) {
        *self.step.lock().unwrap_or_else(PoisonError::into_inner) =
            Some(Step::start(self.format, label));
    }

    fn finish(&self, outcome: &str) {
        let step = self
            .step
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(step) = step {
            step.finish(outcome);
        }
    }
}

impl Reporter for Terminal {
    fn event(&self, event: Event<'_>) {
        match event {
            Event::Locking { stack } => self.start(format!("locking stage {stack}")),
            Event::Locked { held, .. } => self.finish(if held { "done" } else { "refused" }),
            Event::Observing { stack } => self.start(format!("reading stage {stack} from AWS")),
            Event::Observed { ok } => self.finish(if ok { "done" } else { "failed" }),
            Event::Planned(plan) => stage::show_plan(self.format, plan),
            Event::Apply(e) => match self.format {
                OutputFormat::Json => output::json_line(e),
                OutputFormat::Text if e.status == "started" => {
                    self.start(format!("{} {} {}", e.change, e.kind.label(), e.name));
                }
                OutputFormat::Text => self.finish(e.status),
            },
            Event::Waiting(message) => match self.format {
                OutputFormat::Json => {
                    output::json_line(&serde_json::json!({"event": "waiting", "message": message}));
                }
                OutputFormat::Text => eprintln!("  {message}"),
            },
            Event::ChangeSet(change_set) => match self.format {
                OutputFormat::Json => output::json_line(&ChangeSetEvent {
                    event: "changeSet",
                    change_set,
                    summary: change_set.summary(),
                }),
                OutputFormat::Text => eprint!("{change_set}"),
            },
            Event::Stack(e) => match self.format {
                OutputFormat::Json => output::json_line(e),
                OutputFormat::Text => eprintln!("  {e}"),
            },
            Event::RollingBack(plan) => match self.format {
                OutputFormat::Json => output::json_line(&serde_json::json!({
                    "event": "rollbackPlan",
                    "plan": plan,
                })),
                OutputFormat::Text => eprint!("{plan}"),
            },
        }
    }

    fn confirm(&self) -> bool {
        // An unreadable terminal is a no: nothing is changed without a yes.
        self.question
            .as_deref()
            .is_none_or(|q| stage::confirm(q).unwrap_or(false))
    }
}

impl From<WorkflowError> for CliError {
    fn from(e: WorkflowError) -> Self {
        match e {
            WorkflowError::Lock(e) => e.into(),
            WorkflowError::Observe(e) => e.into(),
            WorkflowError::Apply(e) => e.into(),
            WorkflowError::TablesReplaced { tables } => CliError::ReplacesTables { tables },
            WorkflowError::Declined { command } => {
                CliError::Declined(format!("{command} cancelled"))
            }
            WorkflowError::CloudFormation(e) => CliError::CloudFormation(e),
            WorkflowError::Release(e) => CliError::Release(e),
            WorkflowError::RolledBack { stack, release, to } => CliError::RolledBack {
                stage: stack.split_once('/').map_or(&*stack, |(_, s)| s).to_owned(),
                stack,
                release,
                to,
            },
        }
    }
}
