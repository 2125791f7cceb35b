//! Apply: execute a plan through the AWS SDK by its dependency graph ([`crate::schedule`]), up to
//! a bounded number of actions at once, waiting where AWS needs it (tables and indexes becoming
//! active, function updates finishing, new roles becoming usable). This module dispatches and
//! sequences; each kind's calls live with its properties in [`crate::kinds`].
//! Every step is idempotent against what a killed earlier run may have left: deletes of things
//! already gone succeed, creates of things already there carry on. Values AWS assigns (the API id)
//! are fed back into the stack model as they become known, so later actions use the real ones.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::Value;

use crate::errors::{describe, is_not_found, is_queue_missing};
use crate::kinds::Properties;
use crate::names::LIVE_ALIAS;
use crate::observe::Clients;
use crate::plan::{Action, Change, FieldChange, Observed, Plan};
use crate::stack::{
    Code, Environment, INLINE_POLICY, Kind, Resource, StackName, StageSettings, desired,
    permission_sid,
};

/// An action that failed: which one, and AWS's account of why.
#[derive(Debug, thiserror::Error)]
#[error("{action}: {why}")]
pub struct ApplyError {
    pub action: String,
    pub why: String,
}

impl ApplyError {
    fn of(action: &Action, why: &str) -> Self {
        Self {
            action: format!(
                "{} {} {}",
                action.change.label(),
                action.kind.label(),
                action.name
            ),
            why: why.to_owned(),
        }
    }
}

/// How many actions apply runs at once unless told otherwise: enough to overlap every table
/// wait, IAM propagation and function activation of a first deploy (plan order puts those ahead
/// of the routes, which API Gateway's quota paces anyway), few enough to stay clear of
/// per-service request quotas.
pub const DEFAULT_CONCURRENCY: u16 = 8;

/// Where one action of the plan is.
#[derive(Debug)]
enum Slot {
    Waiting,
    Running,
    Finished(Result<(), String>, Duration),
}

/// Reports the actions' events in plan order, so the output of a run does not depend on which
/// of the actions running at once finished first: an action's `started` is reported when every
/// action before it has been reported done, its `done` when it is done too.
struct InPlanOrder<'p> {
    plan: &'p Plan,
    next: usize,
    started_reported: bool,
}

impl<'p> InPlanOrder<'p> {
    fn new(plan: &'p Plan) -> Self {
        Self {
            plan,
            next: 0,
            started_reported: false,
        }
    }

    fn event(
        action: &Action,
        status: &'static str,
        elapsed: Option<Duration>,
        error: Option<String>,
    ) -> ApplyEvent {
        ApplyEvent {
            event: "apply",
            kind: action.kind,
            name: action.name.clone(),
            change: action.change.label(),
            status,
            elapsed_ms: elapsed.map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
            error,
        }
    }

    /// Report as far as plan order allows now; `all` also skips actions that never started.
    fn advance(&mut self, slots: &[Slot], on_event: &mut dyn FnMut(&ApplyEvent), all: bool) {
        while self.next < slots.len() {
            let action = &self.plan.actions[self.next];
            if action.change == Change::Keep {
                self.next += 1;
                continue;
            }
            match &slots[self.next] {
                Slot::Waiting if all => {}
                Slot::Waiting => return,
                Slot::Running => {
                    if !self.started_reported {
                        on_event(&Self::event(action, "started", None, None));
                        self.started_reported = true;
                    }
                    return;
                }
                Slot::Finished(result, elapsed) => {
                    if !self.started_reported {
                        on_event(&Self::event(action, "started", None, None));
                    }
                    let (status, error) = match result {
                        Ok(()) => ("done", None),
                        Err(why) => ("failed", Some(why.clone())),
                    };
                    on_event(&Self::event(action, status, Some(*elapsed), error));
                }
            }
            self.next += 1;
            self.started_reported = false;
        }
    }

    fn emit(&mut self, slots: &[Slot], on_event: &mut dyn FnMut(&ApplyEvent)) {
        self.advance(slots, on_event, false);
    }

    fn flush(&mut self, slots: &[Slot], on_event: &mut dyn FnMut(&ApplyEvent)) {
        self.advance(slots, on_event, true);
    }
}

/// The zips to upload, by handler role (`ws`, `fanout`).
#[derive(Debug, Clone)]
pub struct Artifacts {
    pub ws: Vec<u8>,
    pub fanout: Vec<u8>,
}

/// What apply reports as it goes: one `started` and one `done`/`failed` per changing action.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ApplyEvent {
    pub event: &'static str,
    pub kind: Kind,
    pub name: String,
    pub change: &'static str,
    pub status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub elapsed_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Everything apply needs to know about the target.
#[derive(Debug)]
pub struct Applier<'a> {
    pub(crate) clients: &'a Clients,
    pub(crate) name: StackName,
    pub(crate) settings: StageSettings,
    pub(crate) code: Code,
    pub(crate) artifacts: Option<&'a Artifacts>,
    /// What AWS assigned so far (the API's id and endpoint, ids of what is addressed by id),
    /// shared by the actions running at once.
    pub(crate) known: Mutex<Known>,
    /// APIs this plan deletes: what lives inside them goes with them, without calls of its own.
    pub(crate) apis_going: Mutex<BTreeSet<String>>,
    /// How many actions run at once (1: one after the other).
    concurrency: usize,
    /// How long to keep waiting for AWS (tables, functions, IAM propagation, a queue name
    /// deleted less than a minute ago).
    pub patience: Duration,
    /// The pause between attempts to create a queue whose name was deleted recently.
    pub queue_retry: Duration,
    pub(crate) progress: Option<Progress<'a>>,
}

/// What AWS assigned, as apply learns it.
#[derive(Debug)]
pub(crate) struct Known {
    pub(crate) env: Environment,
    pub(crate) ids: BTreeMap<(Kind, String), String>,
}

/// Where apply says what it is waiting for.
#[derive(Clone, Copy)]
pub(crate) struct Progress<'a>(pub(crate) &'a (dyn Fn(&str) + Sync));

impl std::fmt::Debug for Progress<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Progress")
    }
}

impl<'a> Applier<'a> {
    pub fn new(
        clients: &'a Clients,
        name: &StackName,
        settings: &StageSettings,
        code: &Code,
        env: &Environment,
        observed: &Observed,
    ) -> Self {
        Self {
            clients,
            name: name.clone(),
            settings: settings.clone(),
            code: code.clone(),
            artifacts: None,
            known: Mutex::new(Known {
                env: env.clone(),
                ids: observed.ids.clone(),
            }),
            apis_going: Mutex::default(),
            concurrency: usize::from(DEFAULT_CONCURRENCY),
            patience: Duration::from_secs(300),
            queue_retry: Duration::from_secs(10),
            progress: None,
        }
    }

    /// Where apply says what it is waiting for (a queue name SQS still holds); silent by default.
    pub fn with_progress(mut self, progress: &'a (dyn Fn(&str) + Sync)) -> Self {
        self.progress = Some(Progress(progress));
        self
    }

    /// Run up to `n` actions at once (at least one).
    pub fn with_concurrency(mut self, n: u16) -> Self {
        self.concurrency = usize::from(n.max(1));
        self
    }

    /// The zips, needed when the plan creates functions or changes their code.
    pub fn with_artifacts(mut self, artifacts: &'a Artifacts) -> Self {
        self.artifacts = Some(artifacts);
        self
    }

    /// The environment as apply leaves it (with the API's id once it exists).
    pub fn environment(&self) -> Environment {
        self.known().env.clone()
    }

    pub(crate) fn known(&self) -> MutexGuard<'_, Known> {
        self.known.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Apply every changing action of `plan`, up to [`Applier::with_concurrency`] at a time, each
    /// once what it waits for is done (see [`crate::schedule`]), reporting each through
    /// `on_event` in plan order whatever order they finish in. At the first failure no further
    /// action starts; those running finish, what was done stays done, and the next run plans
    /// from there. Returns how many actions were applied.
    pub async fn apply(
        &self,
        plan: &Plan,
        on_event: &mut dyn FnMut(&ApplyEvent),
    ) -> Result<usize, ApplyError> {
        use futures_util::StreamExt;
        use futures_util::stream::FuturesUnordered;

        let going: BTreeSet<String> = plan
            .actions
            .iter()
            .filter(|a| a.kind == Kind::Api && a.change == Change::Delete)
            .map(|a| a.name.clone())
            .collect();
        *self
            .apis_going
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = going;
        let model = desired(&self.name, &self.settings, &self.environment(), &self.code);
        let schedule = crate::schedule::schedule(plan, &model);
        let mut slots: Vec<Slot> = plan
            .actions
            .iter()
            .map(|a| {
                if a.change == Change::Keep {
                    Slot::Finished(Ok(()), Duration::ZERO)
                } else {
                    Slot::Waiting
                }
            })
            .collect();
        let mut events = InPlanOrder::new(plan);
        let mut running = FuturesUnordered::new();
        let mut failed = false;
        loop {
            if !failed {
                for i in 0..slots.len() {
                    if running.len() >= self.concurrency {
                        break;
                    }
                    let ready = matches!(slots[i], Slot::Waiting)
                        && schedule.waits[i]
                            .iter()
                            .all(|j| matches!(slots[*j], Slot::Finished(Ok(()), _)));
                    if ready {
                        slots[i] = Slot::Running;
                        let action = &plan.actions[i];
                        running.push(async move {
                            let started = Instant::now();
                            (i, self.one(action).await, started.elapsed())
                        });
                    }
                }
            }
            events.emit(&slots, on_event);
            let Some((i, result, elapsed)) = running.next().await else {
                break;
            };
            failed |= result.is_err();
            slots[i] = Slot::Finished(result, elapsed);
        }
        events.flush(&slots, on_event);
        let mut applied = 0;
        for (i, slot) in slots.iter().enumerate() {
            let action = &plan.actions[i];
            match slot {
                Slot::Finished(Ok(()), _) if action.change != Change::Keep => applied += 1,
                Slot::Finished(Err(why), _) => return Err(ApplyError::of(action, why)),
                _ => {}
            }
        }
        if let Some(stuck) = slots.iter().position(|s| matches!(s, Slot::Waiting)) {
            // Only reachable if the model's needs formed a cycle (the schedule's tests rule it
            // out): say so rather than report success.
            return Err(ApplyError::of(
                &plan.actions[stuck],
                "what it waits for never finished (a dependency cycle in the stack model)",
            ));
        }
        Ok(applied)
    }

    /// The desired state of one resource, rendered with everything known so far.
    pub(crate) fn wanted(&self, kind: Kind, name: &str) -> Result<Resource, String> {
        desired(&self.name, &self.settings, &self.environment(), &self.code)
            .resources
            .into_iter()
            .find(|r| r.kind == kind && r.name == name)
            .ok_or_else(|| format!("{} {name} is not part of the stack model", kind.label()))
    }

    pub(crate) fn id(&self, kind: Kind, name: &str) -> Option<String> {
        self.known().ids.get(&(kind, name.to_owned())).cloned()
    }

    pub(crate) fn api_id(&self) -> Result<String, String> {
        self.known()
            .env
            .api_id
            .clone()
            .ok_or_else(|| "the WebSocket API does not exist yet".to_owned())
    }

    pub(crate) fn arn(&self, service: &str, resource: &str) -> String {
        self.environment().arns().arn(service, resource)
    }

    async fn one(&self, action: &Action) -> Result<(), String> {
        match &action.change {
            Change::Keep => Ok(()),
            Change::Create => self.create(action.kind, &action.name).await,
            Change::Delete => self.delete(action.kind, &action.name).await,
            Change::Replace { .. } => {
                self.delete(action.kind, &action.name).await?;
                self.create(action.kind, &action.name).await
            }
            Change::Update { fields } => self.update(action.kind, &action.name, fields).await,
        }
    }

    async fn create(&self, kind: Kind, name: &str) -> Result<(), String> {
        let r = self.wanted(kind, name)?;
        match kind {
            Kind::Table => self.create_table(&r).await,
            Kind::Topic => self.create_topic(&r).await,
            Kind::Queue => self.create_queue(&r).await,
            Kind::EventInvokeConfig => self.put_event_invoke_config(&r).await,
            Kind::EventSourceMapping => self.create_event_source_mapping(&r).await,
            Kind::Schedule => self.put_schedule(&r, true).await,
            Kind::Parameter => self.create_parameter(&r).await,
            Kind::LogGroup => self.create_log_group(&r).await,
            Kind::Api => self.create_api(&r).await,
            Kind::Role => self.create_role(&r).await,
            Kind::Function => self.create_function(&r).await,
            Kind::Alias => self.put_alias(&r).await,
            Kind::Integration => self.create_integration(&r).await,
            Kind::Route => self.create_route(&r).await,
            Kind::Stage => self.create_stage(&r).await,
            Kind::Permission => self.create_permission(&r).await,
            Kind::Subscription => self.create_subscription(&r).await,
        }
    }

    async fn update(&self, kind: Kind, name: &str, fields: &[FieldChange]) -> Result<(), String> {
        let r = self.wanted(kind, name)?;
        let changed: BTreeSet<&str> = fields.iter().map(|f| f.field.as_str()).collect();
        let old_tags = fields
            .iter()
            .find(|f| f.field == "tags")
            .and_then(|f| f.from.clone());
        match kind {
            Kind::Table => self.update_table(&r, &changed, fields).await?,
            Kind::LogGroup if changed.contains("retentionDays") => {
                self.put_retention(&r).await?;
            }
            Kind::Api if changed.contains("routeSelectionExpression") => {
                self.clients
                    .apigw()
                    .await
                    .update_api()
                    .api_id(self.api_id()?)
                    .route_selection_expression(text(
                        &typed(&r, Properties::api)?.route_selection_expression,
                    ))
                    .send()
                    .await
                    .map_err(describe)?;
            }
            Kind::Role => self.update_role(&r, &changed).await?,
            Kind::Function => self.update_function(&r, &changed).await?,
            // A new release: publish the function as it now is and move the alias.
            Kind::Alias => self.put_alias(&r).await?,
            Kind::Queue if changed.iter().any(|f| *f != "tags") => {
                self.set_queue_attributes(&r).await?;
            }
            // Put replaces the whole configuration, which is what an update means here.
            Kind::EventInvokeConfig => self.put_event_invoke_config(&r).await?,
            Kind::EventSourceMapping => self.update_event_source_mapping(&r).await?,
            // UpdateSchedule also replaces the whole schedule.
            Kind::Schedule => self.put_schedule(&r, false).await?,
            // The filter and the delivery format change in place: no gap in delivery.
            Kind::Subscription => self.set_subscription_attributes(&r, &changed).await?,
            Kind::Integration => {
                let id = self
                    .id(Kind::Integration, &r.name)
                    .ok_or("the integration's id is unknown")?;
                self.clients
                    .apigw()
                    .await
                    .update_integration()
                    .api_id(self.api_id()?)
                    .integration_id(id)
                    .integration_type(aws_sdk_apigatewayv2::types::IntegrationType::AwsProxy)
                    .integration_uri(text(&typed(&r, Properties::integration)?.uri))
                    .send()
                    .await
                    .map_err(describe)?;
            }
            Kind::Route => {
                let id = self
                    .id(Kind::Route, &r.name)
                    .ok_or("the route's id is unknown")?;
                self.clients
                    .apigw()
                    .await
                    .update_route()
                    .api_id(self.api_id()?)
                    .route_id(id)
                    .target(self.route_target()?)
                    .send()
                    .await
                    .map_err(describe)?;
            }
            Kind::Stage if changed.iter().any(|f| *f != "tags") => {
                self.clients
                    .apigw()
                    .await
                    .update_stage()
                    .api_id(self.api_id()?)
                    .stage_name(&self.name.stage)
                    .auto_deploy(true)
                    .default_route_settings(self.route_settings())
                    .send()
                    .await
                    .map_err(describe)?;
            }
            // Permissions cannot be edited: remove and add.
            Kind::Permission => {
                self.delete(kind, name).await?;
                self.create(kind, name).await?;
            }
            Kind::Topic
            | Kind::Queue
            | Kind::Parameter
            | Kind::LogGroup
            | Kind::Api
            | Kind::Stage => {}
        }
        if changed.contains("tags") {
            self.retag(&r, old_tags.as_ref()).await?;
        }
        Ok(())
    }

    async fn delete(&self, kind: Kind, name: &str) -> Result<(), String> {
        let c = self.clients;
        // Deleting what is already gone is success: destroy and re-runs must be repeatable.
        macro_rules! gone_ok {
            ($call:expr) => {
                match $call.await {
                    Ok(_) => Ok(()),
                    Err(e) if is_not_found(&e) => Ok(()),
                    Err(e) => Err(describe(e)),
                }
            };
        }
        match kind {
            Kind::Table => self.delete_table(name).await,
            Kind::Topic => gone_ok!(c.sns.delete_topic().topic_arn(self.arn("sns", name)).send()),
            Kind::Queue => {
                let Some(url) = self.queue_url(name).await? else {
                    return Ok(());
                };
                match c.sqs.delete_queue().queue_url(url).send().await {
                    Ok(_) => Ok(()),
                    Err(e) if is_queue_missing(&e) => Ok(()),
                    Err(e) => Err(describe(e)),
                }
            }
            Kind::EventInvokeConfig => gone_ok!(
                c.lambda
                    .delete_function_event_invoke_config()
                    .function_name(name)
                    .qualifier(LIVE_ALIAS)
                    .send()
            ),
            Kind::EventSourceMapping => {
                let Some(uuid) = self.id(kind, name) else {
                    return Ok(());
                };
                gone_ok!(c.lambda.delete_event_source_mapping().uuid(&uuid).send())?;
                self.known().ids.remove(&(kind, name.to_owned()));
                Ok(())
            }
            Kind::Schedule => gone_ok!(c.scheduler.delete_schedule().name(name).send()),
            Kind::Parameter => gone_ok!(c.ssm.delete_parameter().name(name).send()),
            Kind::LogGroup => gone_ok!(c.logs.delete_log_group().log_group_name(name).send()),
            Kind::Api => {
                let Some(id) = self.id(kind, name) else {
                    return Ok(());
                };
                gone_ok!(c.apigw().await.delete_api().api_id(&id).send())?;
                let mut known = self.known();
                if known.env.api_id.as_deref() == Some(id.as_str()) {
                    known.env.api_id = None;
                    known.env.api_endpoint = None;
                }
                known.ids.retain(|(k, n), _| {
                    !(*k == Kind::Api && n == name
                        || matches!(k, Kind::Integration | Kind::Route | Kind::Stage)
                            && n.starts_with(&format!("{name}/")))
                });
                Ok(())
            }
            Kind::Role => {
                gone_ok!(
                    c.iam
                        .delete_role_policy()
                        .role_name(name)
                        .policy_name(INLINE_POLICY)
                        .send()
                )?;
                gone_ok!(c.iam.delete_role().role_name(name).send())
            }
            Kind::Function => gone_ok!(c.lambda.delete_function().function_name(name).send()),
            Kind::Alias => {
                let function = name.split(':').next().unwrap_or_default();
                gone_ok!(
                    c.lambda
                        .delete_alias()
                        .function_name(function)
                        .name(LIVE_ALIAS)
                        .send()
                )
            }
            Kind::Integration | Kind::Route | Kind::Stage => {
                let parent = name.split('/').next().unwrap_or_default();
                if self
                    .apis_going
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .contains(parent)
                {
                    return Ok(());
                }
                let api_id = self.known().env.api_id.clone();
                let (Some(api_id), Some(id)) = (api_id, self.id(kind, name)) else {
                    return Ok(());
                };
                match kind {
                    Kind::Integration => gone_ok!(
                        c.apigw()
                            .await
                            .delete_integration()
                            .api_id(api_id)
                            .integration_id(&id)
                            .send()
                    ),
                    Kind::Route => {
                        gone_ok!(
                            c.apigw()
                                .await
                                .delete_route()
                                .api_id(api_id)
                                .route_id(&id)
                                .send()
                        )
                    }
                    _ => gone_ok!(
                        c.apigw()
                            .await
                            .delete_stage()
                            .api_id(api_id)
                            .stage_name(&id)
                            .send()
                    ),
                }?;
                self.known().ids.remove(&(kind, name.to_owned()));
                Ok(())
            }
            Kind::Permission => {
                let (function, source) = name.rsplit_once('/').unwrap_or((name, ""));
                gone_ok!(
                    c.lambda
                        .remove_permission()
                        .function_name(function)
                        .qualifier(LIVE_ALIAS)
                        .statement_id(permission_sid(source))
                        .send()
                )
            }
            Kind::Subscription => {
                let Some(arn) = self.id(kind, name) else {
                    return Ok(());
                };
                gone_ok!(c.sns.unsubscribe().subscription_arn(&arn).send())?;
                self.known().ids.remove(&(kind, name.to_owned()));
                Ok(())
            }
        }
    }

    // --- tags ---------------------------------------------------------------------------------

    /// Set the resource's chatctl tags, and remove chatctl tags it had but should not have.
    pub(crate) async fn retag(&self, r: &Resource, old: Option<&Value>) -> Result<(), String> {
        let wanted = tag_map(r);
        if wanted.is_empty() {
            return Ok(());
        }
        let stale: Vec<String> = old
            .and_then(Value::as_object)
            .map(|m| {
                m.keys()
                    .filter(|k| !wanted.contains_key(*k))
                    .cloned()
                    .collect()
            })
            .unwrap_or_default();
        let c = self.clients;
        // Each service spells tagging its own way; the steps are the same: set what is wanted,
        // then remove chatctl tags that are no longer wanted.
        macro_rules! tag_list {
            ($tag:ty) => {
                wanted
                    .iter()
                    .map(|(k, v)| {
                        <$tag>::builder()
                            .key(k)
                            .value(v)
                            .build()
                            .map_err(|e| e.to_string())
                    })
                    .collect::<Result<Vec<_>, _>>()?
            };
        }
        macro_rules! apply_tags {
            ($tag:expr, $tags:expr, $untag:expr) => {{
                $tag.set_tags(Some($tags)).send().await.map_err(describe)?;
                if !stale.is_empty() {
                    $untag
                        .set_tag_keys(Some(stale.clone()))
                        .send()
                        .await
                        .map_err(describe)?;
                }
            }};
        }
        match r.kind {
            Kind::Table => {
                let arn = self.arn("dynamodb", &format!("table/{}", r.name));
                apply_tags!(
                    c.dynamodb.tag_resource().resource_arn(&arn),
                    tag_list!(aws_sdk_dynamodb::types::Tag),
                    c.dynamodb.untag_resource().resource_arn(&arn)
                );
            }
            Kind::Topic => {
                let arn = self.arn("sns", &r.name);
                apply_tags!(
                    c.sns.tag_resource().resource_arn(&arn),
                    tag_list!(aws_sdk_sns::types::Tag),
                    c.sns.untag_resource().resource_arn(&arn)
                );
            }
            Kind::Parameter => {
                use aws_sdk_ssm::types::ResourceTypeForTagging::Parameter;
                apply_tags!(
                    c.ssm
                        .add_tags_to_resource()
                        .resource_type(Parameter)
                        .resource_id(&r.name),
                    tag_list!(aws_sdk_ssm::types::Tag),
                    c.ssm
                        .remove_tags_from_resource()
                        .resource_type(Parameter)
                        .resource_id(&r.name)
                );
            }
            Kind::LogGroup => {
                let arn = self.arn("logs", &format!("log-group:{}", r.name));
                apply_tags!(
                    c.logs.tag_resource().resource_arn(&arn),
                    wanted,
                    c.logs.untag_resource().resource_arn(&arn)
                );
            }
            Kind::Queue => {
                let url = self
                    .queue_url(&r.name)
                    .await?
                    .ok_or_else(|| format!("queue {} does not exist", r.name))?;
                apply_tags!(
                    c.sqs.tag_queue().queue_url(&url),
                    wanted,
                    c.sqs.untag_queue().queue_url(&url)
                );
            }
            Kind::Role => apply_tags!(
                c.iam.tag_role().role_name(&r.name),
                tag_list!(aws_sdk_iam::types::Tag),
                c.iam.untag_role().role_name(&r.name)
            ),
            Kind::Function => {
                let arn = self.arn("lambda", &format!("function:{}", r.name));
                apply_tags!(
                    c.lambda.tag_resource().resource(&arn),
                    wanted,
                    c.lambda.untag_resource().resource(&arn)
                );
            }
            Kind::Api | Kind::Stage => {
                let api_id = self.api_id()?;
                let env = self.environment();
                let arns = env.arns();
                let arn = if r.kind == Kind::Api {
                    arns.apigateway(&format!("/apis/{api_id}"))
                } else {
                    arns.apigateway(&format!("/apis/{api_id}/stages/{}", self.name.stage))
                };
                apply_tags!(
                    c.apigw().await.tag_resource().resource_arn(&arn),
                    wanted,
                    c.apigw().await.untag_resource().resource_arn(&arn)
                );
            }
            Kind::Integration
            | Kind::Route
            | Kind::Permission
            | Kind::Subscription
            | Kind::Alias
            | Kind::EventInvokeConfig
            | Kind::EventSourceMapping
            | Kind::Schedule => {}
        }
        Ok(())
    }

    /// Poll `ready` with growing pauses until it says yes or patience runs out.
    pub(crate) async fn wait<F, Fut>(&self, what: &str, mut ready: F) -> Result<(), String>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<bool, String>>,
    {
        let started = Instant::now();
        let mut pause = Duration::from_millis(250);
        loop {
            if ready().await? {
                return Ok(());
            }
            if started.elapsed() > self.patience {
                return Err(format!(
                    "gave up waiting for {what} after {}s; run deploy again to continue",
                    self.patience.as_secs()
                ));
            }
            tokio::time::sleep(pause).await;
            // Gentle growth and a 2 s cap: a table ACTIVE after 8 s is seen within ~1.5 s of it
            // (doubling to 5 s saw it at 12.75 s); Describe/Get calls have ample quota.
            pause = pause.mul_f64(1.5).min(Duration::from_secs(2));
        }
    }
}

/// `r`'s properties as the kind `T` they must be: the model gives each kind its own, so another
/// is a bug in the model, reported rather than panicked on.
pub(crate) fn typed<T>(r: &Resource, pick: fn(&Properties) -> Option<&T>) -> Result<&T, String> {
    pick(&r.properties).ok_or_else(|| {
        format!(
            "{} {} has the properties of a {} (a bug in the stack model)",
            r.kind.label(),
            r.name,
            r.properties.kind().label()
        )
    })
}

/// A wanted string value (the model sets every one it sends).
pub(crate) fn text(value: &Option<String>) -> String {
    value.clone().unwrap_or_default()
}

/// A wanted number as the SDKs take it.
pub(crate) fn int(value: Option<i64>) -> i32 {
    value
        .and_then(|n| i32::try_from(n).ok())
        .unwrap_or_default()
}

pub(crate) fn tag_map(r: &Resource) -> std::collections::HashMap<String, String> {
    let tags = match &r.properties {
        Properties::Table(p) => &p.tags,
        Properties::Topic(p) => &p.tags,
        Properties::Queue(p) => &p.tags,
        Properties::Parameter(p) => &p.tags,
        Properties::LogGroup(p) => &p.tags,
        Properties::Api(p) => &p.tags,
        Properties::Role(p) => &p.tags,
        Properties::Function(p) => &p.tags,
        Properties::Stage(p) => &p.tags,
        Properties::Alias(_)
        | Properties::EventInvokeConfig(_)
        | Properties::EventSourceMapping(_)
        | Properties::Schedule(_)
        | Properties::Integration(_)
        | Properties::Route(_)
        | Properties::Permission(_)
        | Properties::Subscription(_) => return Default::default(),
    };
    tags.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
}

#[cfg(test)]
mod tests {
    //! moto answers API Gateway v2 `UpdateStage` with a 500, so the one in-place stage update
    //! (throttling) is checked here against recorded responses instead; everything else apply does
    //! runs against moto in cli/tests/deploy.rs.

    use aws_sdk_apigatewayv2::operation::update_stage::UpdateStageOutput;
    use aws_smithy_mocks::mock;

    use super::*;
    use crate::plan::plan;
    use crate::testing::mocked_clients;

    #[tokio::test]
    async fn a_table_still_deleting_is_waited_for_before_it_is_created_again() {
        use aws_sdk_dynamodb::operation::create_table::CreateTableOutput;
        use aws_sdk_dynamodb::operation::describe_table::{
            DescribeTableError, DescribeTableOutput,
        };
        use aws_sdk_dynamodb::operation::tag_resource::TagResourceOutput;
        use aws_sdk_dynamodb::types::error::ResourceNotFoundException;
        use aws_sdk_dynamodb::types::{TableDescription, TableStatus};

        let table = |status: TableStatus| {
            DescribeTableOutput::builder()
                .table(TableDescription::builder().table_status(status).build())
                .build()
        };
        // DELETING, then gone, then (after CreateTable) ACTIVE.
        let describe = mock!(aws_sdk_dynamodb::Client::describe_table)
            .sequence()
            .output(move || table(TableStatus::Deleting))
            .error(|| {
                DescribeTableError::ResourceNotFoundException(
                    // The code is what AWS's response carries and what `is_not_found` reads.
                    ResourceNotFoundException::builder()
                        .message("gone")
                        .meta(
                            aws_sdk_dynamodb::error::ErrorMetadata::builder()
                                .code("ResourceNotFoundException")
                                .build(),
                        )
                        .build(),
                )
            })
            .output(move || table(TableStatus::Active))
            .build();
        let create = mock!(aws_sdk_dynamodb::Client::create_table)
            .then_output(|| CreateTableOutput::builder().build());
        let tag = mock!(aws_sdk_dynamodb::Client::tag_resource)
            .then_output(|| TagResourceOutput::builder().build());
        let clients = mocked_clients(&[&describe, &create, &tag]);
        let name = StackName::new("chat", "prod").unwrap();
        let env = Environment::new("123456789012", "eu-west-1");
        let code = Code {
            ws_sha256: "d3M=".into(),
            fanout_sha256: "ZmFub3V0".into(),
        };
        let applier = Applier::new(
            &clients,
            &name,
            &StageSettings::default(),
            &code,
            &env,
            &Observed::default(),
        );
        let plan = Plan {
            stack: name.to_string(),
            actions: vec![crate::plan::Action {
                kind: Kind::Table,
                name: "chat-prod-messages".into(),
                change: Change::Create,
                cause: None,
            }],
        };
        applier
            .apply(&plan, &mut |_: &ApplyEvent| {})
            .await
            .unwrap();
        assert_eq!(describe.num_calls(), 3, "waited while DELETING");
        assert_eq!(create.num_calls(), 1);
        assert_eq!(tag.num_calls(), 1);
    }

    fn sample_env() -> (StackName, Environment, Code) {
        (
            StackName::new("chat", "prod").unwrap(),
            Environment::new("123456789012", "eu-west-1").with_api("a1b2c3d4e5"),
            Code {
                ws_sha256: "d3M=".into(),
                fanout_sha256: "ZmFub3V0".into(),
            },
        )
    }

    fn one_action(name: &StackName, kind: Kind, resource: &str, change: Change) -> Plan {
        Plan {
            stack: name.to_string(),
            actions: vec![crate::plan::Action {
                kind,
                name: resource.into(),
                change,
                cause: None,
            }],
        }
    }

    // moto re-creates a queue at once after deleting it; AWS refuses the name for 60 s.
    #[tokio::test]
    async fn a_queue_name_deleted_recently_is_waited_for_and_said_so() {
        use aws_sdk_sqs::operation::create_queue::{CreateQueueError, CreateQueueOutput};
        use aws_sdk_sqs::types::error::QueueDeletedRecently;

        let create = mock!(aws_sdk_sqs::Client::create_queue)
            .match_requests(|req| {
                req.queue_name() == Some("chat-prod-fanout-dlq")
                    && req
                        .attributes()
                        .and_then(|a| {
                            a.get(&aws_sdk_sqs::types::QueueAttributeName::MessageRetentionPeriod)
                        })
                        .map(String::as_str)
                        == Some("1209600")
                    && req.tags().and_then(|t| t.get("chatctl:stage")).map(String::as_str)
                        == Some("prod")
            })
            .sequence()
            .error(|| {
                CreateQueueError::QueueDeletedRecently(
                    QueueDeletedRecently::builder()
                        .message("You must wait 60 seconds after deleting a queue before you can create another with the same name.")
                        .meta(
                            aws_sdk_sqs::error::ErrorMetadata::builder()
                                .code("AWS.SimpleQueueService.QueueDeletedRecently")
                                .build(),
                        )
                        .build(),
                )
            })
            .times(2)
            .output(|| {
                CreateQueueOutput::builder()
                    .queue_url("https://sqs.eu-west-1.amazonaws.com/123456789012/chat-prod-fanout-dlq")
                    .build()
            })
            .build();
        let clients = mocked_clients(&[&create]);
        let (name, env, code) = sample_env();
        let said = std::sync::Mutex::new(Vec::<String>::new());
        let say = |m: &str| said.lock().unwrap().push(m.to_owned());
        let mut applier = Applier::new(
            &clients,
            &name,
            &StageSettings::default(),
            &code,
            &env,
            &Observed::default(),
        )
        .with_progress(&say);
        applier.queue_retry = Duration::from_millis(10);
        let plan = one_action(&name, Kind::Queue, "chat-prod-fanout-dlq", Change::Create);
        applier
            .apply(&plan, &mut |_: &ApplyEvent| {})
            .await
            .unwrap();
        assert_eq!(create.num_calls(), 3, "two refusals, then created");
        {
            let said = said.lock().unwrap();
            assert_eq!(said.len(), 2, "{said:?}");
            assert!(
                said[0].contains("chat-prod-fanout-dlq") && said[0].contains("60 s"),
                "{said:?}"
            );
        }

        // Out of patience: a clear error, not a hang.
        let refuse = mock!(aws_sdk_sqs::Client::create_queue).then_error(|| {
            CreateQueueError::QueueDeletedRecently(
                QueueDeletedRecently::builder()
                    .meta(
                        aws_sdk_sqs::error::ErrorMetadata::builder()
                            .code("AWS.SimpleQueueService.QueueDeletedRecently")
                            .build(),
                    )
                    .build(),
            )
        });
        let clients = mocked_clients(&[&refuse]);
        let mut applier = Applier::new(
            &clients,
            &name,
            &StageSettings::default(),
            &code,
            &env,
            &Observed::default(),
        );
        applier.patience = Duration::ZERO;
        let err = applier
            .apply(&plan, &mut |_: &ApplyEvent| {})
            .await
            .unwrap_err();
        assert!(err.why.contains("run deploy again in a minute"), "{err}");
    }

    // moto's UpdateFunctionEventInvokeConfig and a second Put append a configuration while Get
    // keeps answering the first, so the in-place update is checked against recorded responses.
    #[tokio::test]
    async fn a_changed_event_invoke_config_is_put_back_whole() {
        use aws_sdk_lambda::operation::put_function_event_invoke_config::PutFunctionEventInvokeConfigOutput;

        let (name, env, code) = sample_env();
        let wanted = desired(&name, &StageSettings::default(), &env, &code);
        let mut observed = Observed {
            resources: wanted
                .resources
                .iter()
                .map(|r| ((r.kind, r.name.clone()), r.properties.clone()))
                .collect(),
            ids: BTreeMap::new(),
        };
        // Set by hand: Lambda's default retries and a success destination.
        let current = observed
            .resources
            .get_mut(&(Kind::EventInvokeConfig, "chat-prod-fanout".into()))
            .and_then(Properties::event_invoke_config_mut)
            .unwrap();
        current.maximum_retry_attempts = Some(2);
        current.on_success = Some("arn:aws:sqs:eu-west-1:123456789012:elsewhere".into());
        let plan = plan(&wanted, &observed);
        assert_eq!(plan.summary().update, 1, "{plan}");

        let put = mock!(aws_sdk_lambda::Client::put_function_event_invoke_config)
            .match_requests(|req| {
                let destinations = req.destination_config();
                req.function_name() == Some("chat-prod-fanout")
                    && req.maximum_event_age_in_seconds() == Some(60)
                    && req.maximum_retry_attempts() == Some(1)
                    && destinations
                        .and_then(|d| d.on_failure())
                        .and_then(|f| f.destination())
                        == Some("arn:aws:sqs:eu-west-1:123456789012:chat-prod-fanout-dlq")
                    && destinations.and_then(|d| d.on_success()).is_none()
            })
            .then_output(|| PutFunctionEventInvokeConfigOutput::builder().build());
        let clients = mocked_clients(&[&put]);
        let applier = Applier::new(
            &clients,
            &name,
            &StageSettings::default(),
            &code,
            &env,
            &observed,
        );
        assert_eq!(
            applier
                .apply(&plan, &mut |_: &ApplyEvent| {})
                .await
                .unwrap(),
            1
        );
        assert_eq!(put.num_calls(), 1);
    }

    // moto creates a second route with the same key; AWS answers ConflictException, which is
    // what an SDK retry of a CreateRoute whose first attempt succeeded runs into.
    #[tokio::test]
    async fn a_route_that_already_exists_is_adopted_not_failed() {
        use aws_sdk_apigatewayv2::operation::create_route::CreateRouteError;
        use aws_sdk_apigatewayv2::operation::get_routes::GetRoutesOutput;
        use aws_sdk_apigatewayv2::types::Route;
        use aws_sdk_apigatewayv2::types::error::ConflictException;

        let (name, env, code) = sample_env();
        let create = mock!(aws_sdk_apigatewayv2::Client::create_route)
            .match_requests(|req| {
                req.route_key() == Some("$default") && req.target() == Some("integrations/int1")
            })
            .then_error(|| {
                CreateRouteError::ConflictException(
                    ConflictException::builder()
                        .message("Unable to complete operation due to concurrent modification")
                        .meta(
                            aws_sdk_apigatewayv2::error::ErrorMetadata::builder()
                                .code("ConflictException")
                                .build(),
                        )
                        .build(),
                )
            });
        // Two pages: the route is on the second.
        let routes = mock!(aws_sdk_apigatewayv2::Client::get_routes)
            .match_requests(|req| req.api_id() == Some("a1b2c3d4e5"))
            .sequence()
            .output(|| {
                GetRoutesOutput::builder()
                    .items(
                        Route::builder()
                            .route_id("r-connect")
                            .route_key("$connect")
                            .build(),
                    )
                    .next_token("page-2")
                    .build()
            })
            .output(|| {
                GetRoutesOutput::builder()
                    .items(
                        Route::builder()
                            .route_id("r-default")
                            .route_key("$default")
                            .build(),
                    )
                    .build()
            })
            .build();
        let clients = mocked_clients(&[&create, &routes]);
        let observed = Observed {
            resources: BTreeMap::new(),
            ids: BTreeMap::from([(
                (Kind::Integration, "chat-prod-api/ws".to_owned()),
                "int1".to_owned(),
            )]),
        };
        let settings = StageSettings::default();
        let applier = Applier::new(&clients, &name, &settings, &code, &env, &observed);
        let plan = one_action(&name, Kind::Route, "chat-prod-api/$default", Change::Create);
        let applied = applier
            .apply(&plan, &mut |_: &ApplyEvent| {})
            .await
            .unwrap();
        assert_eq!(applied, 1);
        assert_eq!(create.num_calls(), 1);
        assert_eq!(routes.num_calls(), 2);
        assert_eq!(
            applier.id(Kind::Route, "chat-prod-api/$default").as_deref(),
            Some("r-default")
        );
    }

    /// A TTL update of the connections table (`from` the observed attribute to the model's).
    fn ttl_update(name: &StackName, from: Option<&str>) -> Plan {
        let table = name.tables().connections;
        one_action(
            name,
            Kind::Table,
            &table,
            Change::Update {
                fields: vec![crate::plan::FieldChange {
                    field: "ttlAttribute".into(),
                    from: from.map(|f| serde_json::json!(f)),
                    to: serde_json::json!("expiresAt"),
                }],
            },
        )
    }

    fn ttl_described(
        status: aws_sdk_dynamodb::types::TimeToLiveStatus,
        attribute: &str,
    ) -> aws_sdk_dynamodb::operation::describe_time_to_live::DescribeTimeToLiveOutput {
        aws_sdk_dynamodb::operation::describe_time_to_live::DescribeTimeToLiveOutput::builder()
            .time_to_live_description(
                aws_sdk_dynamodb::types::TimeToLiveDescription::builder()
                    .time_to_live_status(status)
                    .attribute_name(attribute)
                    .build(),
            )
            .build()
    }

    // moto finishes a TTL change at once and accepts the next one; DynamoDB takes up to an hour
    // and answers ValidationException to any UpdateTimeToLive meanwhile.
    #[tokio::test]
    async fn a_ttl_change_still_in_progress_is_reported_not_retried() {
        use aws_sdk_dynamodb::types::TimeToLiveStatus;

        let (name, env, code) = sample_env();
        let describe = mock!(aws_sdk_dynamodb::Client::describe_time_to_live)
            .then_output(|| ttl_described(TimeToLiveStatus::Disabling, "expiresAt"));
        // Any UpdateTimeToLive would fail the test: no rule answers it.
        let clients = mocked_clients(&[&describe]);
        let settings = StageSettings::default();
        let observed = Observed::default();
        let applier = Applier::new(&clients, &name, &settings, &code, &env, &observed);
        let err = applier
            .apply(&ttl_update(&name, None), &mut |_: &ApplyEvent| {})
            .await
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("chat-prod-connections")
                && err.contains("DISABLING")
                && err.contains("up to an hour")
                && err.contains("run deploy again"),
            "{err}"
        );
        assert_eq!(describe.num_calls(), 1);
    }

    #[tokio::test]
    async fn a_ttl_on_another_attribute_is_turned_off_and_the_rerun_asked_for() {
        use aws_sdk_dynamodb::operation::update_time_to_live::UpdateTimeToLiveOutput;
        use aws_sdk_dynamodb::types::TimeToLiveStatus;

        let (name, env, code) = sample_env();
        let describe = mock!(aws_sdk_dynamodb::Client::describe_time_to_live)
            .then_output(|| ttl_described(TimeToLiveStatus::Enabled, "handSet"));
        // Only the disabling call is answered: enabling back to back would be refused by AWS.
        let disable = mock!(aws_sdk_dynamodb::Client::update_time_to_live)
            .match_requests(|req| {
                req.time_to_live_specification()
                    .is_some_and(|t| t.attribute_name() == "handSet" && !t.enabled())
            })
            .then_output(|| UpdateTimeToLiveOutput::builder().build());
        let clients = mocked_clients(&[&describe, &disable]);
        let settings = StageSettings::default();
        let observed = Observed::default();
        let applier = Applier::new(&clients, &name, &settings, &code, &env, &observed);
        let err = applier
            .apply(
                &ttl_update(&name, Some("handSet")),
                &mut |_: &ApplyEvent| {},
            )
            .await
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("turned off TTL")
                && err.contains("\"expiresAt\"")
                && err.contains("run deploy again"),
            "{err}"
        );
        assert_eq!(disable.num_calls(), 1);
    }

    // moto finishes a function update at once; Lambda keeps LastUpdateStatus InProgress for a
    // while and refuses another update meanwhile (ResourceConflictException).
    #[tokio::test]
    async fn a_function_update_waits_for_one_still_in_progress() {
        use aws_sdk_lambda::operation::get_function_configuration::GetFunctionConfigurationOutput;
        use aws_sdk_lambda::operation::update_function_configuration::UpdateFunctionConfigurationOutput;
        use aws_sdk_lambda::types::{LastUpdateStatus, State};
        use std::sync::Arc;
        use std::sync::atomic::{AtomicUsize, Ordering};

        let (name, env, code) = sample_env();
        let configuration = |status: LastUpdateStatus| {
            GetFunctionConfigurationOutput::builder()
                .state(State::Active)
                .last_update_status(status)
                .build()
        };
        let reads = Arc::new(AtomicUsize::new(0));
        let counted = Arc::clone(&reads);
        // In progress on the first read, done on every later one.
        let describe = mock!(aws_sdk_lambda::Client::get_function_configuration)
            .match_requests(move |_| {
                counted.fetch_add(1, Ordering::SeqCst);
                true
            })
            .sequence()
            .output(move || configuration(LastUpdateStatus::InProgress))
            .output(move || configuration(LastUpdateStatus::Successful))
            .output(move || configuration(LastUpdateStatus::Successful))
            .build();
        let seen = Arc::clone(&reads);
        // Answered only once the in-progress update was seen finished (two reads).
        let update = mock!(aws_sdk_lambda::Client::update_function_configuration)
            .match_requests(move |req| {
                req.memory_size() == Some(512) && seen.load(Ordering::SeqCst) >= 2
            })
            .then_output(|| UpdateFunctionConfigurationOutput::builder().build());
        let clients = mocked_clients(&[&describe, &update]);
        let settings = StageSettings {
            memory_mb: 512,
            ..StageSettings::default()
        };
        let observed = Observed::default();
        let applier = Applier::new(&clients, &name, &settings, &code, &env, &observed);
        let plan = one_action(
            &name,
            Kind::Function,
            "chat-prod-ws",
            Change::Update {
                fields: vec![crate::plan::FieldChange {
                    field: "memoryMb".into(),
                    from: Some(serde_json::json!(128)),
                    to: serde_json::json!(512),
                }],
            },
        );
        let applied = applier
            .apply(&plan, &mut |_: &ApplyEvent| {})
            .await
            .unwrap();
        assert_eq!(applied, 1);
        assert_eq!(update.num_calls(), 1);
        assert_eq!(
            describe.num_calls(),
            3,
            "waited, updated, waited for the update"
        );
    }

    // moto's tables are ACTIVE at once; an interrupted run on AWS can leave one UPDATING, and
    // UpdateTable then answers ResourceInUseException.
    #[tokio::test]
    async fn a_table_update_waits_for_the_table_to_be_active() {
        use aws_sdk_dynamodb::operation::describe_table::DescribeTableOutput;
        use aws_sdk_dynamodb::operation::update_table::UpdateTableOutput;
        use aws_sdk_dynamodb::types::{TableDescription, TableStatus};
        use std::sync::Arc;
        use std::sync::atomic::{AtomicUsize, Ordering};

        let (name, env, code) = sample_env();
        let table = |status: TableStatus| {
            DescribeTableOutput::builder()
                .table(TableDescription::builder().table_status(status).build())
                .build()
        };
        let reads = Arc::new(AtomicUsize::new(0));
        let counted = Arc::clone(&reads);
        let describe = mock!(aws_sdk_dynamodb::Client::describe_table)
            .match_requests(move |_| {
                counted.fetch_add(1, Ordering::SeqCst);
                true
            })
            .sequence()
            .output(move || table(TableStatus::Updating))
            .output(move || table(TableStatus::Active))
            .output(move || table(TableStatus::Active))
            .build();
        let seen = Arc::clone(&reads);
        let update = mock!(aws_sdk_dynamodb::Client::update_table)
            .match_requests(move |_| seen.load(Ordering::SeqCst) >= 2)
            .then_output(|| UpdateTableOutput::builder().build());
        let clients = mocked_clients(&[&describe, &update]);
        let settings = StageSettings::default();
        let observed = Observed::default();
        let applier = Applier::new(&clients, &name, &settings, &code, &env, &observed);
        let plan = one_action(
            &name,
            Kind::Table,
            "chat-prod-messages",
            Change::Update {
                fields: vec![crate::plan::FieldChange {
                    field: "billing".into(),
                    from: Some(serde_json::json!("PROVISIONED")),
                    to: serde_json::json!("PAY_PER_REQUEST"),
                }],
            },
        );
        let applied = applier
            .apply(&plan, &mut |_: &ApplyEvent| {})
            .await
            .unwrap();
        assert_eq!(applied, 1);
        assert_eq!(update.num_calls(), 1);
        assert_eq!(describe.num_calls(), 3);
    }

    // moto deletes and builds an index at once; DynamoDB keeps a deleted index DELETING and a new
    // one CREATING (backfilling) for seconds to minutes, and refuses another index change on the
    // table meanwhile (ResourceInUseException / LimitExceededException). The migration from
    // by-kind/by-user to by-shard must wait for each step; these answers are DynamoDB's
    // documented statuses.
    #[tokio::test]
    async fn an_index_migration_waits_for_each_index_change_to_finish() {
        use aws_sdk_dynamodb::operation::describe_table::DescribeTableOutput;
        use aws_sdk_dynamodb::operation::update_table::{UpdateTableInput, UpdateTableOutput};
        use aws_sdk_dynamodb::types::{
            GlobalSecondaryIndexDescription, IndexStatus, TableDescription, TableStatus,
        };
        use std::sync::{Arc, Mutex};

        let (name, env, code) = sample_env();
        // What each DescribeTable answered, and what each UpdateTable asked for, in order.
        let log: Arc<Mutex<Vec<String>>> = Arc::default();
        let answer =
            |log: &Arc<Mutex<Vec<String>>>, table: TableStatus, indexes: &[(&str, IndexStatus)]| {
                let log = Arc::clone(log);
                let indexes: Vec<(String, IndexStatus)> = indexes
                    .iter()
                    .map(|(n, s)| ((*n).to_owned(), s.clone()))
                    .collect();
                move || {
                    let ready = table == TableStatus::Active
                        && indexes.iter().all(|(_, s)| *s == IndexStatus::Active);
                    log.lock()
                        .unwrap()
                        .push(if ready { "ready" } else { "busy" }.to_owned());
                    DescribeTableOutput::builder()
                        .table(
                            TableDescription::builder()
                                .table_status(table.clone())
                                .set_global_secondary_indexes(Some(
                                    indexes
                                        .iter()
                                        .map(|(n, s)| {
                                            GlobalSecondaryIndexDescription::builder()
                                                .index_name(n)
                                                .index_status(s.clone())
                                                .build()
                                        })
                                        .collect(),
                                ))
                                .build(),
                        )
                        .build()
                }
            };
        use IndexStatus::{Active, Creating, Deleting};
        let describe = mock!(aws_sdk_dynamodb::Client::describe_table)
            .sequence()
            .output(answer(
                &log,
                TableStatus::Active,
                &[("by-kind", Active), ("by-user", Active)],
            ))
            .output(answer(
                &log,
                TableStatus::Updating,
                &[("by-kind", Deleting), ("by-user", Active)],
            ))
            .output(answer(&log, TableStatus::Active, &[("by-user", Active)]))
            .output(answer(&log, TableStatus::Active, &[]))
            .output(answer(
                &log,
                TableStatus::Updating,
                &[("by-shard", Creating)],
            ))
            .output(answer(&log, TableStatus::Active, &[("by-shard", Active)]))
            .build();
        let asked = Arc::clone(&log);
        let update = mock!(aws_sdk_dynamodb::Client::update_table)
            .match_requests(move |r: &UpdateTableInput| {
                let mut log = asked.lock().unwrap();
                // Only ever sent when the last look found the table and every index ACTIVE.
                let ready = log.last().map(String::as_str) == Some("ready");
                for u in r.global_secondary_index_updates() {
                    if let Some(d) = u.delete() {
                        log.push(format!("delete {}", d.index_name()));
                    }
                    if let Some(c) = u.create() {
                        log.push(format!("create {}", c.index_name()));
                    }
                }
                ready
            })
            .then_output(|| UpdateTableOutput::builder().build());
        let clients = mocked_clients(&[&describe, &update]);
        let settings = StageSettings::default();
        let observed = Observed::default();
        let applier = Applier::new(&clients, &name, &settings, &code, &env, &observed);
        let old = |n: &str, pk: &str, sk: &str| serde_json::json!({ "name": n, "partitionKey": pk, "sortKey": sk, "projection": "ALL" });
        let spec = chat_aws::tables::specs(&name.tables());
        let wanted: Vec<Value> = spec[1]
            .indexes
            .iter()
            .map(|i| serde_json::to_value(crate::stack::index_properties(i)).unwrap())
            .collect();
        let plan = one_action(
            &name,
            Kind::Table,
            "chat-prod-connections",
            Change::Update {
                fields: vec![crate::plan::FieldChange {
                    field: "indexes".into(),
                    from: Some(serde_json::json!([
                        old("by-kind", "gsi2pk", "gsi2sk"),
                        old("by-user", "gsi1pk", "gsi1sk"),
                    ])),
                    to: serde_json::json!(wanted),
                }],
            },
        );
        let applied = applier
            .apply(&plan, &mut |_: &ApplyEvent| {})
            .await
            .unwrap();
        assert_eq!(applied, 1);
        assert_eq!(
            *log.lock().unwrap(),
            [
                "ready",
                "delete by-kind",
                "busy",
                "ready",
                "delete by-user",
                "ready",
                "create by-shard",
                "busy",
                "ready",
            ]
        );
    }

    #[tokio::test]
    async fn a_throttle_change_updates_the_stage_in_place() {
        let name = StackName::new("chat", "prod").unwrap();
        let env = Environment::new("123456789012", "eu-west-1").with_api("a1b2c3d4e5");
        let code = Code {
            ws_sha256: "d3M=".into(),
            fanout_sha256: "ZmFub3V0".into(),
        };
        let before = desired(&name, &StageSettings::default(), &env, &code);
        let observed = Observed {
            resources: before
                .resources
                .iter()
                .map(|r| ((r.kind, r.name.clone()), r.properties.clone()))
                .collect(),
            ids: BTreeMap::new(),
        };
        let settings = StageSettings {
            throttle_rate: 50.0,
            throttle_burst: 100,
            ..StageSettings::default()
        };
        let plan = plan(&desired(&name, &settings, &env, &code), &observed);
        assert_eq!(plan.summary().update, 1, "{plan}");

        let update = mock!(aws_sdk_apigatewayv2::Client::update_stage)
            .match_requests(|req| {
                let throttle = req.default_route_settings();
                req.api_id() == Some("a1b2c3d4e5")
                    && req.stage_name() == Some("prod")
                    && req.auto_deploy() == Some(true)
                    && throttle.and_then(|t| t.throttling_rate_limit()) == Some(50.0)
                    && throttle.and_then(|t| t.throttling_burst_limit()) == Some(100)
            })
            .then_output(|| UpdateStageOutput::builder().stage_name("prod").build());
        // Only the matching request is answered: any other call fails the apply.
        let clients = mocked_clients(&[&update]);
        let applier = Applier::new(&clients, &name, &settings, &code, &env, &observed);
        let mut events = Vec::new();
        let applied = applier
            .apply(&plan, &mut |e: &ApplyEvent| events.push(e.status))
            .await
            .unwrap();
        assert_eq!(applied, 1);
        assert_eq!(update.num_calls(), 1);
        assert_eq!(events, ["started", "done"]);
    }
}
