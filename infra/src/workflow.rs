//! The stage workflows as a library: `deploy` (lock → observe → plan → table-loss guard →
//! confirm → apply → outputs → release), `destroy` (the same towards nothing) and `plan`
//! (observe → plan, without a lock or a build). What happens is told to a [`Reporter`] as typed
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
}

/// What is deployed and how.
#[derive(Debug, Clone)]
pub struct Stage<'a> {
    pub clients: &'a Clients,
    pub name: &'a StackName,
    pub settings: &'a StageSettings,
}

/// How a deploy or destroy runs.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// Take the lock even if a live run holds it.
    pub break_lock: bool,
    /// Allow replacing a table whose keys changed (its data is lost).
    pub replace_tables: bool,
    /// Actions applied at once.
    pub concurrency: u16,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            break_lock: false,
            replace_tables: false,
            concurrency: DEFAULT_CONCURRENCY,
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

/// Deploy `code` (whose zips are `artifacts`) to the stage.
pub async fn deploy(
    stage: &Stage<'_>,
    code: &Code,
    artifacts: &Artifacts,
    options: Options,
    reporter: &dyn Reporter,
) -> Result<Outcome, WorkflowError> {
    locked(stage, "deploy", options, reporter, async |stage| {
        let (env, observed) = observe_stage(stage, reporter).await?;
        let plan = plan_stage(stage.name, stage.settings, &env, code, &observed);
        run(
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
        .await
    })
    .await
}

/// Delete every resource of the stage.
pub async fn destroy(
    stage: &Stage<'_>,
    options: Options,
    reporter: &dyn Reporter,
) -> Result<Outcome, WorkflowError> {
    locked(stage, "destroy", options, reporter, async |stage| {
        delete_everything(stage, options, reporter).await
    })
    .await
}

/// Read the stage and delete whatever of it exists, dependents first (asking `reporter` first).
async fn delete_everything(
    stage: &Stage<'_>,
    options: Options,
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

/// `body` under the stage's lock, released afterwards whatever happened.
async fn locked(
    stage: &Stage<'_>,
    command: &'static str,
    options: Options,
    reporter: &dyn Reporter,
    body: impl AsyncFnOnce(&Stage<'_>) -> Result<Outcome, WorkflowError>,
) -> Result<Outcome, WorkflowError> {
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
    outcome.lock_taken_over_from = took_over;
    outcome.aws_calls = stage.clients.calls.snapshot();
    Ok(outcome)
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
    options: Options,
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
    options: Options,
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
    options: Options,
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
