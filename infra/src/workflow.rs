//! The stage workflows as a library: `deploy` (lock → observe → plan → table-loss and
//! rollback guards → confirm → apply → record the release → outputs → unlock), `destroy` (the
//! same towards nothing, then the release log), `rollback` (lock → release log and aliases →
//! confirm → move the aliases → record) and `plan` (observe → plan, without a lock or a build). What happens is told to a [`Reporter`] as typed
//! [`Event`]s, and the reporter answers the one question (apply this plan?); the CLI only renders
//! and asks. The lock is released whatever happened, and a failure to release never hides the
//! workflow's own error.

use crate::apply::{Applier, ApplyError, ApplyEvent, Artifacts, DEFAULT_CONCURRENCY};
use crate::calls::CallCount;
use crate::cfn_engine::{CfnError, ChangeSet, Engine, StackEvent};
use crate::lock::{self, Holder, LockError};
use crate::observe::{self, Clients, ObserveError};
use crate::outputs::{self, Outputs};
use crate::plan::{Action, Change, Observed, Plan, Summary, plan_stage, with_deployed_code};
use crate::releases::{self, AliasMove, Live, Record, Release, ReleaseError, ReleaseKind};
use crate::stack::{Code, DesiredStack, Environment, Kind, StackName, StageSettings};

/// What a workflow is doing, in the order it happens.
#[derive(Debug, Clone, Copy)]
pub enum Event<'a> {
    /// Taking the stage's deploy lock.
    Locking {
        stack: &'a StackName,
    },
    /// The lock is ours (`took_over`: the holder whose dead or broken lock was removed), or
    /// was refused (`held: false`).
    Locked {
        held: bool,
        took_over: Option<&'a Holder>,
    },
    /// Reading the stage from AWS.
    Observing {
        stack: &'a StackName,
    },
    Observed {
        ok: bool,
    },
    /// The plan, before anything is applied (only when it changes something).
    Planned(&'a Plan),
    /// One action started, finished or failed (in plan order, see [`Applier::apply`]).
    Apply(&'a ApplyEvent),
    /// Apply waits on AWS for something it says (a queue name SQS still holds …), or the
    /// CloudFormation engine says what it did (created the artifact bucket, uploaded a zip).
    Waiting(&'a str),
    /// The CloudFormation engine's change set, before it is executed.
    ChangeSet(&'a ChangeSet),
    /// A stack event while the change set executes or the stack is deleted.
    Stack(&'a StackEvent),
    /// What a rollback will move, before it is confirmed.
    RollingBack(&'a RollbackPlan),
}

/// Receives a workflow's events and answers its question. Shared with the actions apply runs at
/// once, hence `&self` and `Sync`: a reporter with state keeps it behind a lock.
pub trait Reporter: Sync {
    fn event(&self, event: Event<'_>);
    /// Whether to apply the plan or change set just reported (it changes something and passed
    /// the guards).
    fn confirm(&self) -> bool;
}

/// Why a workflow stopped.
#[derive(Debug, thiserror::Error)]
pub enum WorkflowError {
    #[error(transparent)]
    Lock(#[from] LockError),
    #[error(transparent)]
    Observe(#[from] ObserveError),
    /// The plan replaces tables (a key changed), which deletes their items, and that was not
    /// allowed.
    #[error("the plan replaces {}, which deletes every item in it", tables.join(" and "))]
    TablesReplaced { tables: Vec<String> },
    /// The reporter said no.
    #[error("{command} cancelled")]
    Declined { command: &'static str },
    #[error(transparent)]
    Apply(#[from] ApplyError),
    #[error(transparent)]
    CloudFormation(#[from] CfnError),
    #[error(transparent)]
    Release(#[from] ReleaseError),
    /// The stage was rolled back, and this deploy would publish new versions over it without
    /// `--roll-forward` (a CI job re-running would otherwise undo an incident's rollback).
    #[error(
        "stage {stack} was rolled back (release {release} restored release {to}); this deploy would put new versions live"
    )]
    RolledBack {
        stack: String,
        release: i64,
        to: i64,
    },
}

/// What is deployed and how.
#[derive(Debug, Clone)]
pub struct Stage<'a> {
    pub clients: &'a Clients,
    pub name: &'a StackName,
    pub settings: &'a StageSettings,
}

/// How a deploy, destroy or rollback runs.
#[derive(Debug, Clone, Copy)]
pub struct Options<'a> {
    /// Take the lock even if a live run holds it.
    pub break_lock: bool,
    /// Allow replacing a table whose keys changed (its data is lost).
    pub replace_tables: bool,
    /// Actions applied at once.
    pub concurrency: u16,
    /// Deploy new versions over a rollback.
    pub roll_forward: bool,
    /// The commit being deployed, for the release log.
    pub commit: Option<&'a str>,
}

impl Default for Options<'_> {
    fn default() -> Self {
        Self {
            break_lock: false,
            replace_tables: false,
            concurrency: DEFAULT_CONCURRENCY,
            roll_forward: false,
            commit: None,
        }
    }
}

/// What a deploy or destroy did.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// Actions applied (0: nothing changed).
    pub applied: usize,
    pub summary: Summary,
    /// The stage's outputs afterwards (`None` while it has no API).
    pub outputs: Option<Outputs>,
    pub lock_taken_over_from: Option<Holder>,
    pub aws_calls: CallCount,
    /// The release this deploy recorded (it published new versions), if any.
    pub release: Option<i64>,
}

/// Read the stage and plan it. Without `code` (no build), the functions' code is taken as what
/// is deployed: the plan then shows every change but code changes.
pub async fn plan(
    stage: &Stage<'_>,
    code: Option<&Code>,
    reporter: &dyn Reporter,
) -> Result<(Plan, Environment), WorkflowError> {
    let (env, observed) = observe_stage(stage, reporter).await?;
    let code = code
        .cloned()
        .unwrap_or_else(|| with_deployed_code(stage.name, &observed));
    let plan = plan_stage(stage.name, stage.settings, &env, &code, &observed);
    Ok((plan, env))
}

async fn observe_stage(
    stage: &Stage<'_>,
    reporter: &dyn Reporter,
) -> Result<(Environment, Observed), WorkflowError> {
    reporter.event(Event::Observing { stack: stage.name });
    let observed = observe::observe(stage.clients, stage.name).await;
    reporter.event(Event::Observed {
        ok: observed.is_ok(),
    });
    Ok(observed?)
}

/// Deploy `code` (whose zips are `artifacts`) to the stage. A deploy that puts new versions
/// live records a release; over a rollback it needs [`Options::roll_forward`].
pub async fn deploy(
    stage: &Stage<'_>,
    code: &Code,
    artifacts: &Artifacts,
    options: Options<'_>,
    reporter: &dyn Reporter,
) -> Result<Outcome, WorkflowError> {
    locked(stage, "deploy", options, reporter, async |stage| {
        let (env, observed) = observe_stage(stage, reporter).await?;
        let plan = plan_stage(stage.name, stage.settings, &env, code, &observed);
        let releases = releases_something(&plan);
        if releases && !options.roll_forward {
            refuse_over_a_rollback(stage).await?;
        }
        let mut outcome = run(
            stage,
            &plan,
            &env,
            &observed,
            code,
            Some(artifacts),
            options,
            reporter,
            "deploy",
        )
        .await?;
        if releases {
            outcome.release = Some(record_deploy(stage, code, options.commit).await?);
        }
        Ok(outcome)
    })
    .await
}

/// Whether applying `plan` moves a `live` alias (publishes a version).
fn releases_something(plan: &Plan) -> bool {
    plan.actions
        .iter()
        .any(|a| a.kind == Kind::Alias && !matches!(a.change, Change::Keep | Change::Delete))
}

/// The deploy guard: after a rollback, new versions go live only when asked for.
async fn refuse_over_a_rollback(stage: &Stage<'_>) -> Result<(), WorkflowError> {
    match releases::latest(&stage.clients.ssm, stage.name).await? {
        Some(Release {
            number,
            record:
                Record {
                    kind: ReleaseKind::Rollback { to },
                    ..
                },
            ..
        }) => Err(WorkflowError::RolledBack {
            stack: stage.name.to_string(),
            release: number,
            to,
        }),
        _ => Ok(()),
    }
}

/// Record what a successful deploy put live: the aliases' versions (read back from Lambda),
/// each running `code` (the deploy converged, so every function runs this build).
async fn record_deploy(
    stage: &Stage<'_>,
    code: &Code,
    commit: Option<&str>,
) -> Result<i64, WorkflowError> {
    let names = stage.name.names();
    let live = releases::live_versions(&stage.clients.lambda, stage.name).await?;
    let functions = live
        .into_iter()
        .map(|(function, version)| {
            let code_sha256 = if function == names.function("ws") {
                code.ws_sha256.clone()
            } else {
                code.fanout_sha256.clone()
            };
            (
                function,
                Live {
                    version,
                    code_sha256,
                },
            )
        })
        .collect();
    let record = Record {
        kind: ReleaseKind::Deploy,
        functions,
        commit: commit.map(str::to_owned),
    };
    Ok(releases::record(&stage.clients.ssm, stage.name, &record).await?)
}

/// Delete every resource of the stage.
pub async fn destroy(
    stage: &Stage<'_>,
    options: Options<'_>,
    reporter: &dyn Reporter,
) -> Result<Outcome, WorkflowError> {
    locked(stage, "destroy", options, reporter, async |stage| {
        let outcome = delete_everything(stage, options, reporter).await?;
        // The releases name versions that are gone with their functions.
        releases::forget(&stage.clients.ssm, stage.name).await?;
        Ok(outcome)
    })
    .await
}

/// Read the stage and delete whatever of it exists, dependents first (asking `reporter` first).
async fn delete_everything(
    stage: &Stage<'_>,
    options: Options<'_>,
    reporter: &dyn Reporter,
) -> Result<Outcome, WorkflowError> {
    let (env, observed) = observe_stage(stage, reporter).await?;
    // Nothing is wanted: every resource found plans as a deletion, dependents first.
    let nothing = DesiredStack {
        name: stage.name.clone(),
        resources: Vec::new(),
    };
    let plan = crate::plan::plan(&nothing, &observed);
    // Deletes need no code; the model is only consulted for names and dependencies.
    let code = with_deployed_code(stage.name, &observed);
    run(
        stage, &plan, &env, &observed, &code, None, options, reporter, "destroy",
    )
    .await
}

/// What a workflow run under the lock reports about the lock and its AWS calls.
trait LockedOutcome {
    fn finish(&mut self, lock_taken_over_from: Option<Holder>, aws_calls: CallCount);
}

impl LockedOutcome for Outcome {
    fn finish(&mut self, lock_taken_over_from: Option<Holder>, aws_calls: CallCount) {
        self.lock_taken_over_from = lock_taken_over_from;
        self.aws_calls = aws_calls;
    }
}

impl LockedOutcome for RollbackOutcome {
    fn finish(&mut self, lock_taken_over_from: Option<Holder>, aws_calls: CallCount) {
        self.lock_taken_over_from = lock_taken_over_from;
        self.aws_calls = aws_calls;
    }
}

/// `body` under the stage's lock, released afterwards whatever happened.
async fn locked<T: LockedOutcome>(
    stage: &Stage<'_>,
    command: &'static str,
    options: Options<'_>,
    reporter: &dyn Reporter,
    body: impl AsyncFnOnce(&Stage<'_>) -> Result<T, WorkflowError>,
) -> Result<T, WorkflowError> {
    reporter.event(Event::Locking { stack: stage.name });
    let lock = lock::acquire(&stage.clients.ssm, stage.name, command, options.break_lock).await;
    reporter.event(Event::Locked {
        held: lock.is_ok(),
        took_over: lock.as_ref().ok().and_then(|l| l.took_over.as_ref()),
    });
    let lock = lock?;
    let took_over = lock.took_over.clone();
    let result = body(stage).await;
    // A failure to release is reported, but never in place of the body's own error.
    let released = lock.release().await;
    let mut outcome = result?;
    released?;
    outcome.finish(took_over, stage.clients.calls.snapshot());
    Ok(outcome)
}

/// What a rollback does: the release it restores, and the aliases that move (those already
/// there stay untouched).
#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RollbackPlan {
    pub stack: String,
    /// The release live now.
    pub from: i64,
    pub to: Release,
    pub moves: Vec<AliasMove>,
}

impl std::fmt::Display for RollbackPlan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "rollback of {} from release {} to release {}:",
            self.stack, self.from, self.to.number
        )?;
        for m in &self.moves {
            writeln!(
                f,
                "  ~   lambda alias {}:live  version {} -> {}",
                m.function, m.from, m.to
            )?;
        }
        Ok(())
    }
}

/// What a rollback did.
#[derive(Debug, Clone)]
pub struct RollbackOutcome {
    pub plan: RollbackPlan,
    /// The release recording the rollback (`None`: the target was live already, nothing moved).
    pub release: Option<i64>,
    pub lock_taken_over_from: Option<Holder>,
    pub aws_calls: CallCount,
}

/// Move the `live` aliases back to release `to`'s versions (default: the release before the
/// one live, see [`releases::target`]), one UpdateAlias per function that differs, and record
/// it as a release. Nothing is built, planned or otherwise changed: each version carries its
/// own code and configuration.
pub async fn rollback(
    stage: &Stage<'_>,
    to: Option<i64>,
    options: Options<'_>,
    reporter: &dyn Reporter,
) -> Result<RollbackOutcome, WorkflowError> {
    locked(stage, "rollback", options, reporter, async |stage| {
        let clients = stage.clients;
        let (history, live) = tokio::try_join!(
            releases::history(&clients.ssm, stage.name),
            releases::live_versions(&clients.lambda, stage.name),
        )?;
        let target = releases::target(stage.name, &history, to)?.clone();
        let current = history.last().map_or(0, |r| r.number);
        let moves: Vec<AliasMove> = target
            .record
            .functions
            .iter()
            .filter_map(|(function, wanted)| {
                let now = live.get(function).map_or("-", String::as_str);
                (now != wanted.version).then(|| AliasMove {
                    function: function.clone(),
                    from: now.to_owned(),
                    to: wanted.version.clone(),
                })
            })
            .collect();
        let plan = RollbackPlan {
            stack: stage.name.to_string(),
            from: current,
            to: target,
            moves,
        };
        let done = |plan: RollbackPlan, release| RollbackOutcome {
            plan,
            release,
            lock_taken_over_from: None,
            aws_calls: CallCount::default(),
        };
        if plan.moves.is_empty() {
            return Ok(done(plan, None));
        }
        // Every version must still be published before any alias moves: a pruned one would
        // otherwise leave the stage half rolled back.
        let number = plan.to.number;
        let lambda = &clients.lambda;
        futures_util::future::try_join_all(
            plan.moves
                .iter()
                .map(|m| releases::check_published(lambda, number, m)),
        )
        .await?;
        reporter.event(Event::RollingBack(&plan));
        if !reporter.confirm() {
            return Err(WorkflowError::Declined {
                command: "rollback",
            });
        }
        // The moves run at once; should one fail (a version pruned since the check), the other
        // alias stays where it went and `rollback --to N` again finishes the job.
        futures_util::future::try_join_all(
            plan.moves
                .iter()
                .map(|m| releases::move_alias(lambda, number, m)),
        )
        .await?;
        let record = Record {
            kind: ReleaseKind::Rollback { to: plan.to.number },
            functions: plan.to.record.functions.clone(),
            commit: plan.to.record.commit.clone(),
        };
        let release = releases::record(&clients.ssm, stage.name, &record).await?;
        Ok(done(plan, Some(release)))
    })
    .await
}

/// Guard, confirm and apply `plan`.
#[allow(clippy::too_many_arguments)]
async fn run(
    stage: &Stage<'_>,
    plan: &Plan,
    env: &Environment,
    observed: &Observed,
    code: &Code,
    artifacts: Option<&Artifacts>,
    options: Options<'_>,
    reporter: &dyn Reporter,
    command: &'static str,
) -> Result<Outcome, WorkflowError> {
    let summary = plan.summary();
    let done = |applied, env: &Environment| Outcome {
        applied,
        summary,
        outputs: outputs::outputs(stage.name, env),
        lock_taken_over_from: None,
        aws_calls: CallCount::default(),
        release: None,
    };
    if !plan.has_changes() {
        return Ok(done(0, env));
    }
    reporter.event(Event::Planned(plan));
    let tables = plan.replaced_tables();
    if !tables.is_empty() && !options.replace_tables {
        return Err(WorkflowError::TablesReplaced {
            tables: tables.into_iter().map(str::to_owned).collect(),
        });
    }
    if !reporter.confirm() {
        return Err(WorkflowError::Declined { command });
    }
    let waiting = |message: &str| reporter.event(Event::Waiting(message));
    let mut applier = Applier::new(
        stage.clients,
        stage.name,
        stage.settings,
        code,
        env,
        observed,
    )
    .with_progress(&waiting)
    .with_concurrency(options.concurrency);
    if let Some(artifacts) = artifacts {
        applier = applier.with_artifacts(artifacts);
    }
    let applied = applier
        .apply(plan, &mut |e| reporter.event(Event::Apply(e)))
        .await?;
    Ok(done(applied, &applier.environment()))
}

/// How long the CloudFormation engine waits for a change set or the stack.
const STACK_PATIENCE: std::time::Duration = std::time::Duration::from_secs(3600);

fn cloudformation_engine<'a>(stage: &Stage<'a>) -> Engine<'a> {
    Engine {
        clients: stage.clients,
        name: stage.name,
        settings: stage.settings,
        patience: STACK_PATIENCE,
    }
}

/// Deploy through CloudFormation (`deploy --engine cloudformation`): under the same lock, make
/// sure the token secret exists (CloudFormation cannot create a SecureString), upload the zips,
/// create the change set, confirm, execute it following the stack's events.
pub async fn deploy_cloudformation(
    stage: &Stage<'_>,
    code: &Code,
    artifacts: &Artifacts,
    options: Options<'_>,
    reporter: &dyn Reporter,
) -> Result<Outcome, WorkflowError> {
    locked(stage, "deploy", options, reporter, async |stage| {
        let (env, observed) = observe_stage(stage, reporter).await?;
        ensure_secret(stage, &env, &observed, code, reporter).await?;
        let engine = cloudformation_engine(stage);
        let say = |message: &str| reporter.event(Event::Waiting(message));
        let keys = engine.upload(&env, code, artifacts, &say).await?;
        let Some(change_set) = engine.change_set(&env, code, &keys).await? else {
            return Ok(Outcome {
                applied: 0,
                summary: Summary::default(),
                outputs: crate::outputs::outputs(stage.name, &env),
                lock_taken_over_from: None,
                aws_calls: CallCount::default(),
                release: None,
            });
        };
        reporter.event(Event::ChangeSet(&change_set));
        if !reporter.confirm() {
            // Left for review in the console; the next deploy creates a fresh one.
            return Err(WorkflowError::Declined { command: "deploy" });
        }
        engine
            .execute(&change_set, &mut |e| reporter.event(Event::Stack(e)))
            .await?;
        let env = observe::environment(stage.clients, stage.name).await?;
        Ok(Outcome {
            applied: change_set.changes.len(),
            summary: change_set.summary(),
            outputs: crate::outputs::outputs(stage.name, &env),
            lock_taken_over_from: None,
            aws_calls: CallCount::default(),
            release: None,
        })
    })
    .await
}

/// Create the token secret when the stage lacks one, through the direct engine's own action.
async fn ensure_secret(
    stage: &Stage<'_>,
    env: &Environment,
    observed: &Observed,
    code: &Code,
    reporter: &dyn Reporter,
) -> Result<(), WorkflowError> {
    let secret = stage.name.names().secret_parameter().to_owned();
    if observed
        .resources
        .contains_key(&(Kind::Parameter, secret.clone()))
    {
        return Ok(());
    }
    let plan = Plan {
        stack: stage.name.to_string(),
        actions: vec![Action {
            kind: Kind::Parameter,
            name: secret,
            change: Change::Create,
            cause: Some("CloudFormation cannot create a SecureString".into()),
        }],
    };
    Applier::new(
        stage.clients,
        stage.name,
        stage.settings,
        code,
        env,
        observed,
    )
    .apply(&plan, &mut |e| reporter.event(Event::Apply(e)))
    .await?;
    Ok(())
}

/// Destroy a stage deployed through CloudFormation: delete the stack, then whatever it kept
/// (the tables it retains, the token secret) the direct way. Returns the direct deletes.
pub async fn destroy_cloudformation(
    stage: &Stage<'_>,
    options: Options<'_>,
    reporter: &dyn Reporter,
) -> Result<Outcome, WorkflowError> {
    // The question first: deleting the stack is the irreversible part.
    let engine = cloudformation_engine(stage);
    let mut deleted_stack = false;
    let mut outcome = locked(stage, "destroy", options, reporter, async |stage| {
        if !reporter.confirm() {
            return Err(WorkflowError::Declined { command: "destroy" });
        }
        deleted_stack = engine
            .delete(&mut |e| reporter.event(Event::Stack(e)))
            .await?;
        delete_everything(stage, options, &NoQuestion(reporter)).await
    })
    .await?;
    outcome.applied += usize::from(deleted_stack);
    Ok(outcome)
}

/// A reporter that passes events on and does not ask again (the question was asked already).
struct NoQuestion<'a>(&'a dyn Reporter);

impl Reporter for NoQuestion<'_> {
    fn event(&self, event: Event<'_>) {
        self.0.event(event);
    }

    fn confirm(&self) -> bool {
        true
    }
}
