//! `chatctl destroy`: the library's destroy workflow — delete every resource of a stage,
//! dependents first, under the deploy lock.
//! Finds everything by its deterministic name, so it also removes what a half-finished deploy
//! left behind; running it twice is harmless.

use std::fmt;
use std::time::Instant;

use chatctl_infra::calls::CallCount;
use chatctl_infra::workflow::{self, Options};
use serde::Serialize;

use crate::args::{DestroyArgs, Engine, OutputFormat};
use crate::commands::events::Terminal;
use crate::commands::stage;
use crate::error::CliError;
use crate::output;

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
    let outcome = runtime.block_on(async {
        let clients = stage::clients(&stage).await;
        let reporter = Terminal::new(
            format,
            ask.then(|| {
                format!(
                    "Delete every resource of {}, including all messages?",
                    stage.name
                )
            }),
        );
        let options = Options {
            break_lock: args.break_lock,
            concurrency: args.apply.parallel,
            ..Options::default()
        };
        let target = workflow::Stage {
            clients: &clients,
            name: &stage.name,
            settings: &stage.settings,
        };
        match args.apply.engine {
            Engine::Direct => workflow::destroy(&target, options, &reporter).await,
            Engine::Cloudformation => {
                workflow::destroy_cloudformation(&target, options, &reporter).await
            }
        }
    })?;
    let report = DestroyReport {
        event: "destroyed",
        stack: stage.name.to_string(),
        deleted: outcome.applied,
        elapsed_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
        aws_calls: outcome.aws_calls,
    };
    output::emit(format, &report);
    Ok(0)
}
