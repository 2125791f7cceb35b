//! What the stage commands (`plan`, `deploy`, `destroy`, `status`, `outputs`) share: resolving
//! the stage's settings (chatctl.toml, then `--set` and flags), the AWS configuration, and the
//! build artifacts.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use chatctl_infra::apply::Artifacts;
use chatctl_infra::build::{self, Arch, HANDLERS};
use chatctl_infra::config::{ProjectFile, StageConfig, StageTable};
use chatctl_infra::observe::Clients;
use chatctl_infra::outputs::{self, Outputs};
use chatctl_infra::plan::{Plan, Summary};
use chatctl_infra::stack::{Code, Environment};

use serde::Serialize;

use crate::args::{OutputFormat, ProjectArgs, StageArgs};
use crate::error::{CliError, UsageError};
use crate::output;

/// The stage's configuration: the file's defaults and stage table, then `--set`, then flags.
pub fn resolve(args: &StageArgs) -> Result<StageConfig, CliError> {
    let aws = &args.aws;
    let flags = StageTable {
        region: aws.region.clone(),
        profile: aws.profile.clone(),
        endpoint_url: aws.endpoint_url.clone(),
        ..StageTable::default()
    };
    resolve_layers(&aws.project, &args.stage, &args.set, &flags)
}

/// The layers in order: the project file's `[defaults]` and `[stages.X]`, then `--set`, then
/// the dedicated flags.
pub fn resolve_layers(
    project: &ProjectArgs,
    stage: &str,
    set: &[String],
    flags: &StageTable,
) -> Result<StageConfig, CliError> {
    let file = ProjectFile::load(&project.config)?;
    let overrides = StageTable::from_pairs(set)?.overlaid(flags);
    Ok(file.stage(&project.config, project.app.as_deref(), stage, &overrides)?)
}

/// AWS clients for the stage: its region, profile and endpoint over the standard AWS settings.
pub async fn clients(stage: &StageConfig) -> Clients {
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
    Clients::new(&loader.load().await)
}

/// The deployed stage's outputs, or the error that it is not deployed (`local_too`: the command
/// could use the local `chatctl dev` instead).
pub fn deployed_outputs(
    stage: &StageConfig,
    environment: &Environment,
    local_too: bool,
) -> Result<Outputs, CliError> {
    outputs::outputs(&stage.name, environment).ok_or_else(|| CliError::NotDeployed {
        name: stage.name.to_string(),
        stage: stage.name.stage.clone(),
        region: environment.region.to_string(),
        api: stage.name.names().api(),
        local_too,
    })
}

/// Where `chatctl build` leaves the zips by default for the project, relative to the current
/// directory when it is below it (as people type it).
pub fn default_artifacts(project: &ProjectArgs) -> Result<PathBuf, CliError> {
    let dir = crate::commands::build::default_out(project.dir())?;
    let cwd = std::env::current_dir().unwrap_or_default();
    Ok(dir.strip_prefix(&cwd).map(Path::to_path_buf).unwrap_or(dir))
}

/// The code hashes of the zips in `dir`, checked for `arch`.
pub fn code(dir: &Path, arch: Arch) -> Result<Code, CliError> {
    let mut shas = Vec::with_capacity(HANDLERS.len());
    for handler in HANDLERS {
        let zip = dir.join(handler).join("bootstrap.zip");
        let artifact =
            build::inspect(handler, &zip, arch).map_err(|source| CliError::Artifacts {
                dir: dir.to_owned(),
                source,
            })?;
        shas.push(artifact.code_sha256);
    }
    Ok(Code {
        ws_sha256: shas[0].clone(),
        fanout_sha256: shas[1].clone(),
    })
}

/// The zips' bytes, to upload.
pub fn artifacts(dir: &Path) -> Result<Artifacts, CliError> {
    let read = |handler: &str| {
        let path = dir.join(handler).join("bootstrap.zip");
        std::fs::read(&path).map_err(|source| CliError::ArtifactRead { path, source })
    };
    Ok(Artifacts {
        ws: read(HANDLERS[0])?,
        fanout: read(HANDLERS[1])?,
    })
}

/// Ask on the terminal; anything but y/yes is no.
pub fn confirm(question: &str) -> Result<bool, CliError> {
    eprint!("{question} [y/N] ");
    let mut answer = String::new();
    std::io::stdin()
        .read_line(&mut answer)
        .map_err(|e| CliError::system("cannot read the answer", e))?;
    Ok(matches!(answer.trim().to_lowercase().as_str(), "y" | "yes"))
}

/// Commands that change AWS need `--yes` when nobody is there to answer.
pub fn require_yes_without_terminal(yes: bool, command: &'static str) -> Result<bool, CliError> {
    let interactive = std::io::stdin().is_terminal() && std::io::stderr().is_terminal();
    if !yes && !interactive {
        return Err(UsageError::NeedsYes { command }.into());
    }
    Ok(!yes)
}

#[derive(Serialize)]
struct PlanEvent<'a> {
    event: &'static str,
    #[serde(flatten)]
    plan: &'a Plan,
    summary: Summary,
}

/// Show the plan before applying it: as a diff on stderr, or as a `plan` event in JSON.
pub fn show_plan(format: OutputFormat, plan: &Plan) {
    match format {
        OutputFormat::Text => eprintln!("{plan}"),
        OutputFormat::Json => output::json_line(&PlanEvent {
            event: "plan",
            plan,
            summary: plan.summary(),
        }),
    }
}
