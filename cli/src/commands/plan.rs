//! `chatctl plan`: what `deploy` would change in a stage, read from AWS and diffed against the
//! stack model. Read-only.

use std::path::PathBuf;

use chatctl_infra::build::{self, HANDLERS};
use chatctl_infra::config::{ProjectFile, StageTable};
use chatctl_infra::observe::{self, Clients};
use chatctl_infra::plan;
use chatctl_infra::stack::{self, Code};

use crate::args::{OutputFormat, PlanArgs};
use crate::error::CliError;
use crate::output;
use crate::progress::Step;

/// Exit codes of `--detailed-exitcode`, as Terraform's.
pub const NO_CHANGES: u8 = 0;
pub const CHANGES: u8 = 2;

pub fn run(args: PlanArgs, format: OutputFormat) -> Result<u8, CliError> {
    let project = ProjectFile::load(&args.config)?;
    let overrides = StageTable {
        region: args.region.clone(),
        profile: args.profile.clone(),
        endpoint_url: args.endpoint_url.clone(),
        ..StageTable::default()
    };
    let stage = project.stage(&args.config, args.app.as_deref(), &args.stage, &overrides)?;
    let artifacts = args
        .artifacts
        .clone()
        .unwrap_or_else(|| PathBuf::from("target/lambda-zips"));
    let mut shas = Vec::with_capacity(HANDLERS.len());
    for handler in HANDLERS {
        let zip = artifacts.join(handler).join("bootstrap.zip");
        let artifact = build::inspect(handler, &zip, stage.settings.arch).map_err(|e| {
            CliError::Artifacts(format!(
                "{e}; run `chatctl build` first, or pass --artifacts DIR"
            ))
        })?;
        shas.push(artifact.code_sha256);
    }
    let code = Code {
        ws_sha256: shas[0].clone(),
        fanout_sha256: shas[1].clone(),
    };
    let runtime = crate::runtime()?;
    let plan = runtime.block_on(async {
        let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest());
        if let Some(region) = &stage.region {
            loader = loader.region(aws_config::Region::new(region.clone()));
        }
        if let Some(profile) = &stage.profile {
            loader = loader.profile_name(profile);
        }
        if let Some(url) = &stage.endpoint_url {
            loader = loader.endpoint_url(url);
        }
        let config = loader.load().await;
        let step = Step::start(format, format!("reading stage {} from AWS", stage.name));
        let observed = observe::observe(&Clients::new(&config), &stage.name).await;
        step.finish(if observed.is_ok() { "done" } else { "failed" });
        let (environment, observed) = observed?;
        let desired = stack::desired(&stage.name, &stage.settings, &environment, &code);
        Ok::<_, CliError>(plan::plan(&desired, &observed))
    })?;
    output::emit(format, &plan);
    Ok(if args.detailed_exitcode && plan.has_changes() {
        CHANGES
    } else {
        NO_CHANGES
    })
}
