//! `chatctl build`: package the Lambda handlers into deployable zips. `deploy` builds through
//! the same function when it is not given `--artifacts`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use chatctl_infra::build::{self, Arch, BuildReport, BuildRequest, Toolchain};

use crate::args::{BuildArch, BuildArgs, OutputFormat};
use crate::error::CliError;
use crate::output;
use crate::progress::Step;

/// Build both handlers for `arch` into `out` (relative to the current directory; default
/// `<workspace>/target/lambda-zips`), showing `label` as the step. Returns where the zips are.
pub fn build_handlers(
    format: OutputFormat,
    arch: Arch,
    out: Option<&Path>,
    manifest_path: Option<&Path>,
    label: String,
) -> Result<(PathBuf, BuildReport), CliError> {
    let env: HashMap<String, String> = std::env::vars().collect();
    let cwd = std::env::current_dir()
        .map_err(|e| CliError::system("cannot read the current directory", e))?;
    let workspace = build::find_workspace(&cwd, manifest_path)?;
    let tools = Toolchain::locate(&env)?;
    let out_dir = out.map_or_else(|| workspace.join("target/lambda-zips"), |o| cwd.join(o));
    let request = BuildRequest {
        workspace,
        arch,
        out_dir,
    };
    let step = Step::start(format, label);
    let report = build::build(&request, &tools, env.get("PATH").map(String::as_str));
    step.finish(if report.is_ok() { "done" } else { "failed" });
    Ok((request.out_dir, report?))
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
        args.manifest_path.as_deref(),
        label,
    )?;
    output::emit(format, &report);
    Ok(())
}
