//! `chatctl build`: package the Lambda handlers into deployable zips. `deploy` builds through
//! the same function when it is not given `--artifacts`. Which sources are built (a repository,
//! an ejected copy, the bundle) is `chatctl_infra::build::Sources`' choice.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use chatctl_infra::build::{self, Arch, BuildReport, BuildRequest, Sources, Toolchain};

use crate::args::{BuildArch, BuildArgs, OutputFormat};
use crate::error::CliError;
use crate::output;
use crate::progress::Step;

/// What a build looks at: the environment, the current directory, chatctl's cache.
struct Here {
    env: HashMap<String, String>,
    cwd: PathBuf,
    cache: PathBuf,
}

impl Here {
    fn read() -> Result<Self, CliError> {
        let env: HashMap<String, String> = std::env::vars().collect();
        let cwd = std::env::current_dir()
            .map_err(|e| CliError::system("cannot read the current directory", e))?;
        let cache = build::cache_root(&env);
        Ok(Here { env, cwd, cache })
    }

    /// The sources a build in `project` would use; looks, changes nothing.
    fn sources(&self, project: &Path, manifest_path: Option<&Path>) -> Result<Sources, CliError> {
        let project = absolute(&self.cwd, project);
        Ok(Sources::locate(
            &self.cwd,
            &project,
            manifest_path,
            &self.cache,
        )?)
    }
}

/// Where the zips of a build in `project` are unless `--out`/`--artifacts` say otherwise,
/// absolute.
pub fn default_out(project: &Path) -> Result<PathBuf, CliError> {
    let here = Here::read()?;
    let sources = here.sources(project, None)?;
    Ok(sources.default_out(&absolute(&here.cwd, project)))
}

/// Build both handlers for `arch` into `out` (relative to the current directory; default
/// `Sources::default_out`), showing `label` as the step. Returns where the zips are, absolute.
pub fn build_handlers(
    format: OutputFormat,
    arch: Arch,
    out: Option<&Path>,
    project: &Path,
    manifest_path: Option<&Path>,
    label: String,
) -> Result<(PathBuf, BuildReport), CliError> {
    let here = Here::read()?;
    let sources = here.sources(project, manifest_path)?;
    let tools = Toolchain::locate(&here.env)?;
    // Absolute: cargo-lambda runs in the sources' workspace, not here.
    let out_dir = match out {
        Some(dir) => absolute(&here.cwd, dir),
        None => sources.default_out(&absolute(&here.cwd, project)),
    };
    let step = Step::start(format, format!("{label} from {sources}"));
    let request = sources.prepare().map(|workspace| BuildRequest {
        workspace,
        arch,
        out_dir: out_dir.clone(),
        target_dir: sources.target_dir(&here.cache, &here.env),
    });
    let report = request.and_then(|request| {
        build::build(
            sources,
            &request,
            &tools,
            here.env.get("PATH").map(String::as_str),
        )
    });
    step.finish(if report.is_ok() { "done" } else { "failed" });
    Ok((out_dir, report?))
}

/// `path` from `cwd`, without `.` components (`./target` → `/project/target`).
fn absolute(cwd: &Path, path: &Path) -> PathBuf {
    cwd.join(path)
        .components()
        .filter(|c| !matches!(c, std::path::Component::CurDir))
        .collect()
}

pub fn run(args: BuildArgs, format: OutputFormat) -> Result<(), CliError> {
    let arch = match args.arch {
        BuildArch::Arm64 => Arch::Arm64,
        BuildArch::X86_64 => Arch::X86_64,
    };
    let label = format!(
        "building {} for {} with cargo-lambda (release)",
        build::HANDLERS.join(", "),
        arch.lambda_name()
    );
    let (_, report) = build_handlers(
        format,
        arch,
        args.out.as_deref(),
        Path::new("."),
        args.manifest_path.as_deref(),
        label,
    )?;
    output::emit(format, &report);
    Ok(())
}
