//! `chatctl build`: package the Lambda handlers into deployable zips.

use std::collections::HashMap;

use chatctl_infra::build::{self, Arch, BuildRequest, Toolchain};

use crate::args::{BuildArch, BuildArgs, OutputFormat};
use crate::error::CliError;
use crate::output;
use crate::progress::Step;

pub fn run(args: BuildArgs, format: OutputFormat) -> Result<(), CliError> {
    let env: HashMap<String, String> = std::env::vars().collect();
    let cwd = std::env::current_dir()
        .map_err(|e| CliError::Environment(format!("cannot read the current directory: {e}")))?;
    let workspace = build::find_workspace(&cwd, args.manifest_path.as_deref())?;
    let tools = Toolchain::locate(&env)?;
    let arch = match args.arch {
        BuildArch::Arm64 => Arch::Arm64,
        BuildArch::X86_64 => Arch::X86_64,
    };
    let out_dir = args
        .out
        .map_or_else(|| workspace.join("target/lambda-zips"), |o| cwd.join(o));
    let request = BuildRequest {
        workspace,
        arch,
        out_dir,
    };
    let step = Step::start(
        format,
        format!(
            "building {} for {} with cargo-lambda (release)",
            build::HANDLERS.join(", "),
            arch.lambda_name()
        ),
    );
    let report = build::build(&request, &tools, env.get("PATH").map(String::as_str));
    step.finish(if report.is_ok() { "done" } else { "failed" });
    output::emit(format, &report?);
    Ok(())
}
