//! `chatctl plan`: what `deploy` would change in a stage, read from AWS and diffed against the
//! stack model (the library's plan workflow). Read-only, and no build needed: without zips the
//! functions' code is compared as deployed, and the plan says so.

use std::fmt;
use std::path::PathBuf;

use chatctl_infra::plan::Plan;
use chatctl_infra::workflow;
use serde::Serialize;

use crate::args::{OutputFormat, PlanArgs};
use crate::commands::events::Terminal;
use crate::commands::stage;
use crate::error::CliError;
use crate::output;

/// Exit codes of `--detailed-exitcode`, as Terraform's.
pub const NO_CHANGES: u8 = 0;
pub const CHANGES: u8 = 2;

/// The plan, and what its code was compared with.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PlanReport {
    #[serde(flatten)]
    pub plan: Plan,
    /// The build the functions' code was compared with; `None`: compared as deployed (no build).
    pub code_from: Option<PathBuf>,
    /// Where a build would have been looked for.
    #[serde(skip)]
    pub looked_in: PathBuf,
}

impl fmt::Display for PlanReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.plan)?;
        if self.code_from.is_none() {
            write!(
                f,
                "\nnote: no build at {}, so the functions' code is taken as deployed; run `chatctl build` (or pass --artifacts DIR) to plan code changes too",
                self.looked_in.display()
            )?;
        }
        Ok(())
    }
}

pub fn run(args: PlanArgs, format: OutputFormat) -> Result<u8, CliError> {
    let stage = stage::resolve(&args.target)?;
    // Zips named with --artifacts must be there; the default place may simply have none yet.
    let looked_in = stage::default_artifacts(&args.target.aws.project)?;
    let code_from = match args.artifacts.clone() {
        Some(dir) => Some(dir),
        None => Some(looked_in.clone()).filter(|d| d.is_dir()),
    };
    let code = code_from
        .as_deref()
        .map(|dir| stage::code(dir, stage.settings.arch))
        .transpose()?;
    let runtime = crate::runtime()?;
    let (plan, _) = runtime.block_on(async {
        let clients = stage::clients(&stage).await;
        let target = workflow::Stage {
            clients: &clients,
            name: &stage.name,
            settings: &stage.settings,
        };
        workflow::plan(&target, code.as_ref(), &Terminal::new(format, None)).await
    })?;
    let changes = plan.has_changes();
    output::emit(
        format,
        &PlanReport {
            plan,
            code_from,
            looked_in,
        },
    );
    Ok(if args.detailed_exitcode && changes {
        CHANGES
    } else {
        NO_CHANGES
    })
}
