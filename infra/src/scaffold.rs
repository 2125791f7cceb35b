//! `chatctl init`: the files a new project starts with — a commented `chatctl.toml` whose values
//! are the defaults `config` applies, a CI workflow (build → plan → deploy → smoke) and
//! `.gitignore` lines — and, with `--eject`, the handler sources (`bundle`).

use std::fmt;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::build::{CARGO_LAMBDA_PIN, EJECTED_DIR};
use crate::bundle::{self, BundleError};
use crate::config::DEFAULT_FILE;
use crate::stack::{NameError, StackName, StageSettings};

/// The CI workflow's path: GitHub Actions reads it from there.
pub const WORKFLOW_FILE: &str = ".github/workflows/chatctl.yml";
const GITIGNORE: &str = ".gitignore";
/// What a project never commits: build output and `chatctl dev`'s data.
const IGNORED: [&str; 2] = ["/target/", "/.chatctl/"];

#[derive(Debug, thiserror::Error)]
pub enum InitError {
    #[error(transparent)]
    App(#[from] NameError),
    #[error("{} already exists", .0.display())]
    Exists(PathBuf),
    #[error("cannot write {}", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write the handler sources")]
    Eject(#[from] BundleError),
}

/// What to set up.
#[derive(Debug, Clone)]
pub struct InitRequest {
    pub dir: PathBuf,
    pub app: String,
    /// Copy the handler sources into `<dir>/handlers` too.
    pub eject: bool,
    /// Replace files that exist.
    pub force: bool,
}

/// What happened to one file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum FileAction {
    Created,
    Replaced,
    /// `.gitignore`: the missing lines were added at its end.
    Appended,
    /// It exists and was left as it is (`--eject` on a project that has it).
    Kept,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct InitFile {
    pub path: PathBuf,
    pub action: FileAction,
}

/// The result of `chatctl init`.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct InitReport {
    pub event: &'static str,
    pub dir: PathBuf,
    pub app: String,
    pub files: Vec<InitFile>,
    /// Where the handler sources went, with `--eject`.
    pub ejected: Option<PathBuf>,
}

impl fmt::Display for InitReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "initialised app {} in {}", self.app, self.dir.display())?;
        for file in &self.files {
            let action = match file.action {
                FileAction::Created => "created",
                FileAction::Replaced => "replaced",
                FileAction::Appended => "appended to",
                FileAction::Kept => "kept",
            };
            writeln!(f, "  {action:<11} {}", file.path.display())?;
        }
        if let Some(dir) = &self.ejected {
            writeln!(
                f,
                "  ejected     {}/ (the handler sources: `chatctl build` builds these now)",
                dir.display()
            )?;
        }
        write!(
            f,
            "next: `chatctl dev` runs it here; `chatctl deploy --stage dev` deploys it to AWS"
        )
    }
}

/// Write the project files (and the handler sources with `eject`). Without `force`, a file that
/// exists stops `init` before anything is written; with `eject` alone, existing project files are
/// kept and only the sources must be new.
pub fn init(request: &InitRequest) -> Result<InitReport, InitError> {
    StackName::new(&request.app, "dev")?;
    let files = [
        (DEFAULT_FILE, project_file(&request.app)),
        (WORKFLOW_FILE, workflow()),
    ];
    let mut report = InitReport {
        event: "initialised",
        dir: request.dir.clone(),
        app: request.app.clone(),
        files: Vec::new(),
        ejected: None,
    };
    let keep_existing = request.eject && !request.force;
    let refuse_existing = !request.force && !request.eject;
    if let Some((path, _)) = files
        .iter()
        .find(|(p, _)| refuse_existing && request.dir.join(p).exists())
    {
        return Err(InitError::Exists(request.dir.join(path)));
    }
    let ejected = request.dir.join(EJECTED_DIR);
    if request.eject && !request.force && ejected.join("Cargo.toml").exists() {
        return Err(InitError::Exists(ejected.join("Cargo.toml")));
    }
    for (path, contents) in &files {
        let full = request.dir.join(path);
        let action = match (full.exists(), keep_existing) {
            (true, true) => FileAction::Kept,
            (true, false) => FileAction::Replaced,
            (false, _) => FileAction::Created,
        };
        if action != FileAction::Kept {
            write(&full, contents)?;
        }
        report.files.push(InitFile {
            path: PathBuf::from(path),
            action,
        });
    }
    if let Some(action) = ignore_lines(&request.dir.join(GITIGNORE))? {
        report.files.push(InitFile {
            path: PathBuf::from(GITIGNORE),
            action,
        });
    }
    if request.eject {
        bundle::write_tree(&ejected, request.force)?;
        report.ejected = Some(PathBuf::from(EJECTED_DIR));
    }
    Ok(report)
}

fn write(path: &Path, contents: &str) -> Result<(), InitError> {
    bundle::write_creating_dirs(path, contents.as_bytes()).map_err(|source| InitError::Write {
        path: path.to_owned(),
        source,
    })
}

/// Add the lines `.gitignore` lacks; `None` when it has them all.
fn ignore_lines(path: &Path) -> Result<Option<FileAction>, InitError> {
    let existing = match std::fs::read_to_string(path) {
        Ok(text) => Some(text),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(source) => {
            return Err(InitError::Write {
                path: path.to_owned(),
                source,
            });
        }
    };
    let text = existing.as_deref().unwrap_or("");
    let missing: Vec<&str> = IGNORED
        .iter()
        .copied()
        .filter(|line| !text.lines().any(|l| l.trim() == *line))
        .collect();
    if missing.is_empty() {
        return Ok(None);
    }
    let mut out = text.to_owned();
    if !out.is_empty() && !out.ends_with('\n') {
        out.push('\n');
    }
    out.push_str("# chatctl: build output and `chatctl dev`'s data\n");
    for line in missing {
        out.push_str(line);
        out.push('\n');
    }
    write(path, &out)?;
    Ok(Some(if existing.is_some() {
        FileAction::Appended
    } else {
        FileAction::Created
    }))
}

/// `chatctl.toml` with every setting at the default `config` applies, each explained.
pub fn project_file(app: &str) -> String {
    let d = StageSettings::default();
    let window = humantime::format_duration(std::time::Duration::from_millis(
        u64::try_from(d.recall_window_ms).unwrap_or(0),
    ));
    format!(
        r#"# chatctl.toml: the chat backend's stages. Every setting below is at its default; change it
# in [defaults] for every stage or in [stages.NAME] for one, or for one run with
# `--set KEY=VALUE`. Flags (--region, --profile, --endpoint-url) win over this file.

# Part of every resource name: {{app}}-{{stage}}-… (lowercase letters, digits, dashes).
app = "{app}"

[defaults]
# The AWS region and profile [default: AWS_REGION / AWS_PROFILE, then the profile's region].
# region = "eu-west-1"
# profile = "default"
# Send every AWS call to an emulator instead (for tests: `moto_server`).
# endpoint_url = "http://127.0.0.1:5000"

# Memory of each function, 128 to 10240 MB (CPU grows with it).
memory_mb = {memory}
# Function timeout, 1 to 29 s: API Gateway ends a WebSocket integration after 29 s.
timeout_s = {timeout}
# The functions' CPU: arm64 (Graviton, cheaper per request) or x86-64.
arch = "{arch}"
# How long a sender may still recall their own message.
recall_window = "{window}"
# How long CloudWatch keeps the functions' logs (1, 3, 5, 7, 14, 30, 60, 90 … 3653 days).
log_retention_days = {retention}
# The WebSocket API stage's throttle: steady requests per second, and the burst.
throttle_rate = {rate:?}
throttle_burst = {burst}
# Published versions kept per function: how far back `chatctl rollback` can go.
keep_releases = {keep}

[stages.dev]
# A stage for trying changes: `chatctl deploy --stage dev`.
# log_retention_days = 3

[stages.prod]
# Production: `chatctl deploy --stage prod` (CI runs it: {workflow}).
# profile = "prod"
# memory_mb = 1024
# log_retention_days = 30
"#,
        memory = d.memory_mb,
        timeout = d.timeout_s,
        arch = d.arch.lambda_name(),
        retention = d.log_retention_days,
        rate = d.throttle_rate,
        burst = d.throttle_burst,
        keep = d.keep_releases,
        workflow = WORKFLOW_FILE,
    )
}

/// The GitHub Actions workflow: build → plan → deploy → smoke, with the exit codes each step
/// branches on.
pub fn workflow() -> String {
    format!(
        r#"# Deploys the chat backend on every push to main: build → plan → deploy → smoke.
#
# Exit codes: `plan --detailed-exitcode` 0 = nothing to change, 2 = changes, 1 = error;
# `deploy` 0 = applied, 1 = failed (what was applied stays; run it again to continue),
# 3 = another deploy holds the stage's lock (this workflow's concurrency group prevents that);
# `smoke` 0 = two clients chatted through the deployed stage, 1 = they could not.
#
# Set up once: an IAM role this repository may assume (GitHub OIDC), as the secret
# AWS_DEPLOY_ROLE_ARN, and the region as the variable AWS_REGION. Everything else, the token
# secret included, `chatctl deploy` creates.
name: chatctl

on:
  push:
    branches: [main]
  workflow_dispatch:

permissions:
  id-token: write
  contents: read

# One deploy per stage at a time, and never cancelled halfway.
concurrency:
  group: chatctl-prod
  cancel-in-progress: false

env:
  CHATCTL_STAGE: prod
  AWS_REGION: ${{{{ vars.AWS_REGION }}}}
  CARGO_TERM_COLOR: never

jobs:
  deploy:
    runs-on: ubuntu-latest
    timeout-minutes: 45
    steps:
      - uses: actions/checkout@v4
      - uses: dtolnay/rust-toolchain@stable
      - uses: actions/cache@v4
        with:
          path: |
            ~/.cargo/registry
            ~/.cache/chatctl
          key: chatctl-${{{{ runner.os }}}}-${{{{ hashFiles('chatctl.toml', '{ejected}/**') }}}}
          restore-keys: chatctl-${{{{ runner.os }}}}-
      - name: Install chatctl, cargo-lambda and zig
        run: |
          cargo install --locked --git https://github.com/chatctl/chatctl --tag v{version} chatctl
          pip install {pin}
      - uses: aws-actions/configure-aws-credentials@v4
        with:
          role-to-assume: ${{{{ secrets.AWS_DEPLOY_ROLE_ARN }}}}
          aws-region: ${{{{ vars.AWS_REGION }}}}
      - name: Build the Lambda zips
        run: chatctl build
      - name: Plan
        run: |
          set +e
          chatctl plan --stage "$CHATCTL_STAGE" --detailed-exitcode
          code=$?
          set -e
          case $code in
            0) echo "nothing to change" ;;
            2) echo "changes to apply" ;;
            *) exit "$code" ;;
          esac
      - name: Deploy
        run: chatctl deploy --stage "$CHATCTL_STAGE" --artifacts target/lambda-zips --yes
      - name: Smoke test
        run: chatctl smoke --stage "$CHATCTL_STAGE"
"#,
        ejected = EJECTED_DIR,
        version = env!("CARGO_PKG_VERSION"),
        pin = CARGO_LAMBDA_PIN,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{ProjectFile, StageTable};

    #[test]
    fn the_project_file_parses_to_the_defaults_for_both_stages() {
        let text = project_file("acme");
        let file = ProjectFile::parse(&text).unwrap();
        assert_eq!(file.app.as_deref(), Some("acme"));
        for stage in ["dev", "prod"] {
            assert!(file.stages.contains_key(stage), "{stage}");
            let config = file
                .stage(Path::new(DEFAULT_FILE), None, stage, &StageTable::default())
                .unwrap();
            assert_eq!(config.settings, StageSettings::default(), "{stage}");
            assert_eq!(config.name.prefix(), format!("acme-{stage}"));
        }
        // Every setting a stage table takes is written out, set or commented.
        for key in [
            "region",
            "profile",
            "endpoint_url",
            "memory_mb",
            "timeout_s",
            "arch",
            "recall_window",
            "log_retention_days",
            "throttle_rate",
            "throttle_burst",
            "keep_releases",
        ] {
            assert!(text.contains(&format!("{key} = ")), "{key} missing");
        }
    }

    #[test]
    fn the_workflow_runs_the_four_steps_in_order() {
        let text = workflow();
        let at = |step: &str| {
            let needle = format!("run: chatctl {step}");
            text.find(&needle).unwrap_or_else(|| panic!("{needle}"))
        };
        assert!(at("build") < at("deploy"));
        assert!(text.find("chatctl plan --stage").unwrap() < at("deploy"));
        assert!(at("build") < text.find("chatctl plan --stage").unwrap());
        assert!(at("deploy") < at("smoke"));
        assert!(text.contains("--detailed-exitcode") && text.contains("--yes"));
        assert!(text.contains(CARGO_LAMBDA_PIN));
        assert!(
            text.contains("aws-region: ${{ vars.AWS_REGION }}"),
            "{text}"
        );
        assert!(
            text.contains("hashFiles('chatctl.toml', 'handlers/**')"),
            "{text}"
        );
    }

    #[test]
    fn init_refuses_to_overwrite_and_appends_to_gitignore() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(GITIGNORE), "node_modules/").unwrap();
        let request = InitRequest {
            dir: dir.path().to_path_buf(),
            app: "acme".into(),
            eject: false,
            force: false,
        };
        let report = init(&request).unwrap();
        let actions: Vec<_> = report.files.iter().map(|f| f.action).collect();
        assert_eq!(
            actions,
            [
                FileAction::Created,
                FileAction::Created,
                FileAction::Appended
            ]
        );
        let ignore = std::fs::read_to_string(dir.path().join(GITIGNORE)).unwrap();
        assert!(ignore.starts_with("node_modules/\n") && ignore.contains("/target/\n"));

        std::fs::write(dir.path().join(DEFAULT_FILE), "app = \"mine\"\n").unwrap();
        let err = init(&request).unwrap_err();
        assert!(
            matches!(&err, InitError::Exists(p) if p.ends_with(DEFAULT_FILE)),
            "{err}"
        );
        assert_eq!(
            std::fs::read_to_string(dir.path().join(DEFAULT_FILE)).unwrap(),
            "app = \"mine\"\n",
            "a refusal writes nothing"
        );

        // --eject on an existing project keeps its files and adds the sources, once.
        let eject = InitRequest {
            eject: true,
            ..request.clone()
        };
        let report = init(&eject).unwrap();
        assert!(
            report
                .files
                .iter()
                .take(2)
                .all(|f| f.action == FileAction::Kept)
        );
        assert_eq!(report.files.len(), 2, ".gitignore already has the lines");
        assert!(dir.path().join("handlers/lambdas/ws/src/main.rs").is_file());
        assert!(matches!(init(&eject), Err(InitError::Exists(_))));

        let forced = init(&InitRequest {
            force: true,
            ..request
        })
        .unwrap();
        assert_eq!(forced.files[0].action, FileAction::Replaced);
        assert!(
            std::fs::read_to_string(dir.path().join(DEFAULT_FILE))
                .unwrap()
                .contains("app = \"acme\"")
        );
    }

    #[test]
    fn a_bad_app_name_is_refused_before_anything_is_written() {
        let dir = tempfile::tempdir().unwrap();
        let err = init(&InitRequest {
            dir: dir.path().to_path_buf(),
            app: "Not A Name".into(),
            eject: false,
            force: false,
        })
        .unwrap_err();
        assert!(matches!(err, InitError::App(_)));
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}
