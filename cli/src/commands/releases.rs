//! `chatctl releases` (the stage's release log, newest first, with what is live and what was
//! pruned) and `chatctl rollback` (the library's rollback workflow: move the `live` aliases back
//! under the deploy lock, and record it as a release).

use std::fmt;
use std::time::Instant;

use chatctl_infra::calls::CallCount;
use chatctl_infra::releases::{self, AliasMove, Listed, ReleaseKind};
use chatctl_infra::workflow::{self, Options};
use serde::Serialize;

use crate::args::{OutputFormat, ReleasesArgs, RollbackArgs};
use crate::commands::events::Terminal;
use crate::commands::stage;
use crate::error::CliError;
use crate::output;

/// The result of `chatctl releases`.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ReleasesReport {
    pub stack: String,
    /// Newest first.
    pub releases: Vec<Listed>,
    /// The functions' name prefix (`{app}-{stage}-`), left out of the text table.
    #[serde(skip)]
    prefix: String,
}

fn short(sha: &str) -> &str {
    sha.get(..8).unwrap_or(sha)
}

impl fmt::Display for ReleasesReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.releases.is_empty() {
            return write!(
                f,
                "{}: no releases recorded yet (each `chatctl deploy` that puts new versions live records one)",
                self.stack
            );
        }
        writeln!(f, "releases of {} (newest first):", self.stack)?;
        for row in &self.releases {
            let r = &row.release;
            let kind = match r.record.kind {
                ReleaseKind::Deploy => "deploy".to_owned(),
                ReleaseKind::Rollback { to } => format!("rollback to {to}"),
            };
            let functions: Vec<String> = r
                .record
                .functions
                .iter()
                .map(|(name, live)| {
                    format!(
                        "{} v{} ({})",
                        name.strip_prefix(&self.prefix).unwrap_or(name),
                        live.version,
                        short(&live.code_sha256)
                    )
                })
                .collect();
            let mark = if row.live { "*" } else { " " };
            write!(
                f,
                "{mark} {:>4}  {:<15} {:<20}  {}",
                r.number,
                kind,
                r.at.as_deref().unwrap_or("-"),
                functions.join(", "),
            )?;
            if let Some(commit) = &r.record.commit {
                write!(f, "  commit {}", commit.get(..12).unwrap_or(commit))?;
            }
            if let Some(by) = &r.by {
                write!(f, "  by {by}")?;
            }
            if row.pruned {
                write!(f, "  (pruned)")?;
            }
            writeln!(f)?;
        }
        write!(
            f,
            "* live now. `chatctl rollback --stage STAGE [--to N] --yes` moves the aliases back."
        )
    }
}

pub fn list(args: ReleasesArgs, format: OutputFormat) -> Result<u8, CliError> {
    let stage = stage::resolve(&args.target)?;
    let names = stage.name.names();
    let runtime = crate::runtime()?;
    let releases = runtime.block_on(async {
        let clients = stage::clients(&stage).await;
        releases::listing(&clients.ssm, &clients.lambda, &stage.name).await
    })?;
    output::emit(
        format,
        &ReleasesReport {
            stack: stage.name.to_string(),
            releases,
            prefix: format!("{}-", names.prefix()),
        },
    );
    Ok(0)
}

/// The result of `chatctl rollback`.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RollbackReport {
    pub event: &'static str,
    pub stack: String,
    /// The release that was live.
    pub from: i64,
    /// The release restored.
    pub to: i64,
    /// The release recording this rollback (`null`: nothing had to move).
    pub release: Option<i64>,
    pub moved: Vec<AliasMove>,
    pub elapsed_ms: u64,
    pub aws_calls: CallCount,
}

impl fmt::Display for RollbackReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secs = self.elapsed_ms as f64 / 1000.0;
        let Some(release) = self.release else {
            return write!(
                f,
                "{}: release {} is live already, nothing moved ({secs:.1}s, {} AWS calls)",
                self.stack, self.to, self.aws_calls.total
            );
        };
        let moved: Vec<String> = self
            .moved
            .iter()
            .map(|m| format!("{} {} -> {}", m.function, m.from, m.to))
            .collect();
        write!(
            f,
            "rolled back {} to release {} (recorded as release {release}): {} in {secs:.1}s ({} AWS calls, {} of them changing)",
            self.stack,
            self.to,
            moved.join(", "),
            self.aws_calls.total,
            self.aws_calls.changing
        )
    }
}

pub fn rollback(args: RollbackArgs, format: OutputFormat) -> Result<u8, CliError> {
    let started = Instant::now();
    let stage = stage::resolve(&args.target)?;
    let ask = stage::require_yes_without_terminal(args.yes, "rollback")?;
    let runtime = crate::runtime()?;
    let outcome = runtime.block_on(async {
        let clients = stage::clients(&stage).await;
        let reporter = Terminal::new(
            format,
            ask.then(|| format!("Move the live aliases of {}?", stage.name)),
        );
        let target = workflow::Stage {
            clients: &clients,
            name: &stage.name,
            settings: &stage.settings,
        };
        let options = Options {
            break_lock: args.break_lock,
            ..Options::default()
        };
        workflow::rollback(&target, args.to, options, &reporter).await
    })?;
    output::emit(
        format,
        &RollbackReport {
            event: "rolledBack",
            stack: stage.name.to_string(),
            from: outcome.plan.from,
            to: outcome.plan.to.number,
            release: outcome.release,
            moved: outcome.plan.moves,
            elapsed_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
            aws_calls: outcome.aws_calls,
        },
    );
    Ok(0)
}
