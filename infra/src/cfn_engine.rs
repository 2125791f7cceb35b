//! `deploy --engine cloudformation`: the same stack model deployed as a CloudFormation stack, for
//! accounts where changes may only go through CloudFormation. The zips go to the account's
//! artifact bucket under content-addressed keys (a code change is a parameter change), the
//! template is [`crate::cloudformation::template`], and a change set is created, shown, and
//! executed while the stack's events stream out. An empty change set is "no changes" and is
//! deleted; a failed stack names its first failing resource and CloudFormation's reason.

use std::collections::BTreeSet;
use std::fmt;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use aws_sdk_cloudformation::types::{
    Capability, ChangeAction, ChangeSetStatus, ChangeSetType, Parameter, Replacement,
    ResourceStatus, StackStatus, Tag,
};
use base64::Engine as _;
use serde::Serialize;

use crate::apply::Artifacts;
use crate::cloudformation::{
    self, CODE_BUCKET_PARAMETER, code_key_parameter, code_sha256_parameter,
};
use crate::errors::{describe, is_not_found};
use crate::observe::Clients;
use crate::plan::Summary;
use crate::stack::{Code, Environment, StackName, StageSettings};

/// CloudFormation takes a template body of at most this many bytes; a larger one goes by URL.
const MAX_TEMPLATE_BODY: usize = 51_200;

/// A failure of the CloudFormation engine.
#[derive(Debug, thiserror::Error)]
pub enum CfnError {
    #[error("{what}: {why}")]
    Aws { what: String, why: String },
    #[error(transparent)]
    Export(#[from] cloudformation::ExportError),
    /// The stack is in a state no change set can start from.
    #[error("stack {stack} is {status}: {why}")]
    Unusable {
        stack: String,
        status: String,
        why: &'static str,
    },
    #[error("CloudFormation could not create the change set for {stack}: {reason}")]
    ChangeSetFailed { stack: String, reason: String },
    /// The stack ended in a failed or rolled-back state.
    #[error("stack {stack} ended {status}: {resource} ({resource_type}) failed: {reason}")]
    StackFailed {
        stack: String,
        status: String,
        resource: String,
        resource_type: String,
        reason: String,
    },
    #[error("gave up waiting for stack {stack} after {}s; it may still finish: run deploy again to see", waited.as_secs())]
    Timeout { stack: String, waited: Duration },
}

fn aws(what: impl Into<String>) -> impl FnOnce(String) -> CfnError {
    let what = what.into();
    move |why| CfnError::Aws { what, why }
}

/// CloudFormation's ways of saying "nothing to do": a change set FAILED with "The submitted
/// information didn't contain changes…", and UpdateStack's ValidationError "No updates are to be
/// performed."
fn says_no_changes(reason: Option<&str>) -> bool {
    reason.is_some_and(|r| {
        r.contains("didn't contain changes") || r.contains("No updates are to be performed")
    })
}

/// One change of a change set, as CloudFormation states it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ResourceChange {
    /// `Add`, `Modify`, `Remove` …
    pub action: String,
    pub logical_id: String,
    pub resource_type: String,
    /// `True`, `False`, `Conditional` for a Modify.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replacement: Option<String>,
}

/// A change set before it is executed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ChangeSet {
    pub stack: String,
    pub name: String,
    pub changes: Vec<ResourceChange>,
}

impl ChangeSet {
    pub fn summary(&self) -> Summary {
        let mut s = Summary::default();
        for c in &self.changes {
            match (c.action.as_str(), c.replacement.as_deref()) {
                ("Add" | "Import", _) => s.create += 1,
                ("Remove", _) => s.delete += 1,
                (_, Some("True")) => s.replace += 1,
                _ => s.update += 1,
            }
        }
        s
    }
}

impl fmt::Display for ChangeSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "change set {} of stack {}:", self.name, self.stack)?;
        for c in &self.changes {
            let replace = match c.replacement.as_deref() {
                Some("True") => " (replaced)",
                Some("Conditional") => " (may be replaced)",
                _ => "",
            };
            writeln!(
                f,
                "  {:<7} {} {}{replace}",
                c.action, c.resource_type, c.logical_id
            )?;
        }
        Ok(())
    }
}

/// One stack event, as it streams while the change set executes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StackEvent {
    pub event: &'static str,
    pub logical_id: String,
    pub resource_type: String,
    pub status: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

impl fmt::Display for StackEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {} {}",
            self.status, self.resource_type, self.logical_id
        )?;
        if let Some(reason) = &self.reason {
            write!(f, ": {reason}")?;
        }
        Ok(())
    }
}

/// The S3 bucket of a region's chatctl artifacts, shared by every stage of the account there
/// (bucket names are global: the account and region make it unique).
pub fn artifact_bucket(account: &str, region: &str) -> String {
    format!("chatctl-artifacts-{account}-{region}")
}

/// The key of a zip: content-addressed, so new code is a new key (and a parameter change).
pub fn code_key(name: &StackName, role: &str, code_sha256: &str) -> String {
    let hex: String = base64::engine::general_purpose::STANDARD
        .decode(code_sha256)
        .map(|bytes| bytes.iter().map(|b| format!("{b:02x}")).collect())
        .unwrap_or_else(|_| code_sha256.replace(['/', '+', '='], "_"));
    format!("{}/{}/{role}-{hex}.zip", name.app, name.stage)
}

/// The stack of a stage.
pub fn stack_name(name: &StackName) -> String {
    name.prefix()
}

/// What the engine needs and reports.
pub struct Engine<'a> {
    pub clients: &'a Clients,
    pub name: &'a StackName,
    pub settings: &'a StageSettings,
    /// How long to wait for a change set or the stack.
    pub patience: Duration,
}

impl fmt::Debug for Engine<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Engine")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// Poll pauses: growing gently to 2 s, as apply's waits.
fn next_pause(pause: Duration) -> Duration {
    pause.mul_f64(1.5).min(Duration::from_secs(2))
}

impl Engine<'_> {
    /// Make sure the artifact bucket of `env` exists and holds both zips; returns their keys.
    pub async fn upload(
        &self,
        env: &Environment,
        code: &Code,
        artifacts: &Artifacts,
        say: &(dyn Fn(&str) + Sync),
    ) -> Result<[String; 2], CfnError> {
        let s3 = &self.clients.s3;
        let region = env.region.as_str();
        let bucket = artifact_bucket(&env.account_id, region);
        match s3.head_bucket().bucket(&bucket).send().await {
            Ok(_) => {}
            Err(e) if e.as_service_error().is_some_and(|s| s.is_not_found()) => {
                let mut create = s3.create_bucket().bucket(&bucket);
                // us-east-1 is the default and must not be named as a constraint.
                if region != "us-east-1" {
                    create = create.create_bucket_configuration(
                        aws_sdk_s3::types::CreateBucketConfiguration::builder()
                            .location_constraint(region.into())
                            .build(),
                    );
                }
                match create.send().await {
                    Ok(_) => say(&format!("created the artifact bucket s3://{bucket}")),
                    Err(e)
                        if e.as_service_error()
                            .is_some_and(|s| s.is_bucket_already_owned_by_you()) => {}
                    Err(e) => return Err(aws(format!("create bucket {bucket}"))(describe(e))),
                }
            }
            Err(e) => return Err(aws(format!("read bucket {bucket}"))(describe(e))),
        }
        let keys = [
            code_key(self.name, "ws", &code.ws_sha256),
            code_key(self.name, "fanout", &code.fanout_sha256),
        ];
        for (key, zip) in keys.iter().zip([&artifacts.ws, &artifacts.fanout]) {
            // Content-addressed: a key that exists holds these very bytes.
            if s3
                .head_object()
                .bucket(&bucket)
                .key(key)
                .send()
                .await
                .is_ok()
            {
                continue;
            }
            s3.put_object()
                .bucket(&bucket)
                .key(key)
                .body(zip.clone().into())
                .send()
                .await
                .map_err(|e| aws(format!("upload s3://{bucket}/{key}"))(describe(e)))?;
            say(&format!("uploaded s3://{bucket}/{key}"));
        }
        Ok(keys)
    }

    /// The stack's status, or `None` when there is no stack.
    async fn status(&self) -> Result<Option<StackStatus>, CfnError> {
        let stack = stack_name(self.name);
        match self
            .clients
            .cloudformation
            .describe_stacks()
            .stack_name(&stack)
            .send()
            .await
        {
            Ok(out) => Ok(out.stacks().first().and_then(|s| s.stack_status().cloned())),
            // CloudFormation says "Stack with id … does not exist" as a ValidationError.
            Err(e)
                if is_not_found(&e)
                    || e.as_service_error()
                        .and_then(|s| {
                            aws_sdk_cloudformation::error::ProvideErrorMetadata::message(s)
                        })
                        .is_some_and(|m| m.contains("does not exist")) =>
            {
                Ok(None)
            }
            Err(e) => Err(aws(format!("read stack {stack}"))(describe(e))),
        }
    }

    /// Create a change set for the template with these code keys (and the code's hashes, which
    /// the versions the aliases serve are published for) and wait until it is ready.
    /// `None`: it holds no changes (and was deleted).
    pub async fn change_set(
        &self,
        env: &Environment,
        code: &Code,
        keys: &[String; 2],
    ) -> Result<Option<ChangeSet>, CfnError> {
        let cfn = &self.clients.cloudformation;
        let bucket = artifact_bucket(&env.account_id, &env.region);
        let bucket = bucket.as_str();
        let stack = stack_name(self.name);
        let kind = match self.status().await? {
            None | Some(StackStatus::ReviewInProgress) => ChangeSetType::Create,
            Some(s @ StackStatus::RollbackComplete) => {
                return Err(CfnError::Unusable {
                    stack,
                    status: s.as_str().to_owned(),
                    why: "its first create failed and was rolled back; delete it (chatctl destroy --engine cloudformation) and deploy again",
                });
            }
            Some(s) if s.as_str().ends_with("_IN_PROGRESS") => {
                return Err(CfnError::Unusable {
                    stack,
                    status: s.as_str().to_owned(),
                    why: "another operation on it is still running; wait for it to finish",
                });
            }
            Some(_) => ChangeSetType::Update,
        };
        let template = cloudformation::template(self.name, self.settings)?;
        let body = serde_json::to_string(&template.body).unwrap_or_default();
        let millis = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis())
            .unwrap_or_default();
        let name = format!("chatctl-{millis}");
        let parameter = |key: &str, value: &str| {
            Parameter::builder()
                .parameter_key(key)
                .parameter_value(value)
                .build()
        };
        let mut create = cfn
            .create_change_set()
            .stack_name(&stack)
            .change_set_name(&name)
            .change_set_type(kind)
            .capabilities(Capability::CapabilityNamedIam)
            .parameters(parameter(CODE_BUCKET_PARAMETER, bucket))
            .parameters(parameter(&code_key_parameter("ws"), &keys[0]))
            .parameters(parameter(&code_key_parameter("fanout"), &keys[1]))
            .parameters(parameter(&code_sha256_parameter("ws"), &code.ws_sha256))
            .parameters(parameter(
                &code_sha256_parameter("fanout"),
                &code.fanout_sha256,
            ))
            .tags(
                Tag::builder()
                    .key("chatctl:app")
                    .value(&self.name.app)
                    .build(),
            )
            .tags(
                Tag::builder()
                    .key("chatctl:stage")
                    .value(&self.name.stage)
                    .build(),
            )
            .description(format!("chatctl deploy of {}", self.name));
        create = if body.len() <= MAX_TEMPLATE_BODY {
            create.template_body(body)
        } else {
            let key = format!(
                "{}/{}/template-{millis}.json",
                self.name.app, self.name.stage
            );
            self.clients
                .s3
                .put_object()
                .bucket(bucket)
                .key(&key)
                .body(body.into_bytes().into())
                .send()
                .await
                .map_err(|e| {
                    aws(format!("upload the template to s3://{bucket}/{key}"))(describe(e))
                })?;
            create.template_url(env.arns().s3_object_url(bucket, &key))
        };
        match create.send().await {
            Ok(_) => {}
            // AWS creates the change set and fails it with "didn't contain changes" (below);
            // an implementation that refuses up front with UpdateStack's ValidationError says the
            // same thing, and nothing was created to delete.
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| says_no_changes(s.meta().message())) =>
            {
                return Ok(None);
            }
            Err(e) => {
                return Err(aws(format!("create change set {name} of {stack}"))(
                    describe(e),
                ));
            }
        }
        let started = Instant::now();
        let mut pause = Duration::from_millis(250);
        loop {
            let out = cfn
                .describe_change_set()
                .stack_name(&stack)
                .change_set_name(&name)
                .send()
                .await
                .map_err(|e| aws(format!("read change set {name}"))(describe(e)))?;
            match out.status() {
                Some(ChangeSetStatus::CreateComplete) => {
                    let changes = out
                        .changes()
                        .iter()
                        .filter_map(|c| c.resource_change())
                        .map(|c| ResourceChange {
                            action: c.action().map_or("?", ChangeAction::as_str).to_owned(),
                            logical_id: c.logical_resource_id().unwrap_or_default().to_owned(),
                            resource_type: c.resource_type().unwrap_or_default().to_owned(),
                            replacement: c.replacement().map(|r| Replacement::as_str(r).to_owned()),
                        })
                        .collect();
                    return Ok(Some(ChangeSet {
                        stack,
                        name,
                        changes,
                    }));
                }
                Some(ChangeSetStatus::Failed) => {
                    let reason = out.status_reason().unwrap_or("no reason given").to_owned();
                    if says_no_changes(Some(&reason)) {
                        cfn.delete_change_set()
                            .stack_name(&stack)
                            .change_set_name(&name)
                            .send()
                            .await
                            .map_err(|e| {
                                aws(format!("delete the empty change set {name}"))(describe(e))
                            })?;
                        return Ok(None);
                    }
                    return Err(CfnError::ChangeSetFailed { stack, reason });
                }
                _ if started.elapsed() > self.patience => {
                    return Err(CfnError::Timeout {
                        stack,
                        waited: self.patience,
                    });
                }
                _ => {
                    tokio::time::sleep(pause).await;
                    pause = next_pause(pause);
                }
            }
        }
    }

    /// The stack's events not in `seen`, oldest first; with no `seen`, the newest page only
    /// (what "before" means). DescribeStackEvents pages newest first, so paging stops at the
    /// first page that reaches a seen event: a stack's whole history (thousands of events on an
    /// old stack) is not read again on every poll.
    async fn events(
        &self,
        seen: Option<&BTreeSet<String>>,
    ) -> Result<Vec<aws_sdk_cloudformation::types::StackEvent>, CfnError> {
        let is_seen = |e: &aws_sdk_cloudformation::types::StackEvent| {
            e.event_id()
                .is_some_and(|id| seen.is_some_and(|s| s.contains(id)))
        };
        let stack = stack_name(self.name);
        let mut all = Vec::new();
        let mut token = None;
        loop {
            let page = self
                .clients
                .cloudformation
                .describe_stack_events()
                .stack_name(&stack)
                .set_next_token(token)
                .send()
                .await
                .map_err(|e| aws(format!("read the events of {stack}"))(describe(e)))?;
            let events = page.stack_events.unwrap_or_default();
            let enough = seen.is_none() || events.iter().any(is_seen);
            all.extend(events.into_iter().filter(|e| !is_seen(e)));
            token = page.next_token;
            if token.is_none() || enough {
                all.reverse();
                return Ok(all);
            }
        }
    }

    /// Execute the change set and follow the stack to its end, reporting each new event.
    pub async fn execute(
        &self,
        change_set: &ChangeSet,
        on_event: &mut dyn FnMut(&StackEvent),
    ) -> Result<(), CfnError> {
        let cfn = &self.clients.cloudformation;
        let stack = &change_set.stack;
        let before: BTreeSet<String> = self
            .events(None)
            .await?
            .into_iter()
            .filter_map(|e| e.event_id)
            .collect();
        cfn.execute_change_set()
            .stack_name(stack)
            .change_set_name(&change_set.name)
            // A retried call whose first attempt went through is not executed twice.
            .client_request_token(&change_set.name)
            .send()
            .await
            .map_err(|e| aws(format!("execute change set {}", change_set.name))(describe(e)))?;
        let started = Instant::now();
        let mut seen = before;
        let mut first_failure: Option<StackEvent> = None;
        let mut pause = Duration::from_millis(250);
        loop {
            for e in self.events(Some(&seen)).await? {
                let Some(id) = e.event_id.clone() else {
                    continue;
                };
                if !seen.insert(id) {
                    continue;
                }
                let status = e
                    .resource_status()
                    .map_or("", ResourceStatus::as_str)
                    .to_owned();
                let event = StackEvent {
                    event: "stack",
                    logical_id: e.logical_resource_id().unwrap_or_default().to_owned(),
                    resource_type: e.resource_type().unwrap_or_default().to_owned(),
                    status: status.clone(),
                    reason: e.resource_status_reason().map(str::to_owned),
                };
                // The first resource that failed, not the stack's summary or a cancellation it
                // caused elsewhere.
                let cancelled = event
                    .reason
                    .as_deref()
                    .is_some_and(|r| r.contains("cancelled"));
                if status.ends_with("_FAILED")
                    && event.resource_type != "AWS::CloudFormation::Stack"
                    && !cancelled
                    && first_failure.is_none()
                {
                    first_failure = Some(event.clone());
                }
                on_event(&event);
            }
            let status = self.status().await?;
            let text = status
                .as_ref()
                .map_or("GONE", StackStatus::as_str)
                .to_owned();
            match status {
                Some(StackStatus::CreateComplete | StackStatus::UpdateComplete) => return Ok(()),
                Some(_) if text.ends_with("_IN_PROGRESS") => {}
                // Failed, rolled back, or gone.
                _ => {
                    let failure = first_failure.unwrap_or(StackEvent {
                        event: "stack",
                        logical_id: stack.clone(),
                        resource_type: "AWS::CloudFormation::Stack".into(),
                        status: text.clone(),
                        reason: None,
                    });
                    return Err(CfnError::StackFailed {
                        stack: stack.clone(),
                        status: text,
                        resource: failure.logical_id,
                        resource_type: failure.resource_type,
                        reason: failure.reason.unwrap_or_else(|| "no reason given".into()),
                    });
                }
            }
            if started.elapsed() > self.patience {
                return Err(CfnError::Timeout {
                    stack: stack.clone(),
                    waited: self.patience,
                });
            }
            tokio::time::sleep(pause).await;
            pause = next_pause(pause);
        }
    }

    /// Delete the stack (its tables are retained by their DeletionPolicy) and wait until it is
    /// gone. Nothing to do without a stack.
    pub async fn delete(&self, on_event: &mut dyn FnMut(&StackEvent)) -> Result<bool, CfnError> {
        let stack = stack_name(self.name);
        if self.status().await?.is_none() {
            return Ok(false);
        }
        self.clients
            .cloudformation
            .delete_stack()
            .stack_name(&stack)
            .send()
            .await
            .map_err(|e| aws(format!("delete stack {stack}"))(describe(e)))?;
        let started = Instant::now();
        let mut pause = Duration::from_millis(250);
        loop {
            match self.status().await? {
                None | Some(StackStatus::DeleteComplete) => {
                    on_event(&StackEvent {
                        event: "stack",
                        logical_id: stack,
                        resource_type: "AWS::CloudFormation::Stack".into(),
                        status: "DELETE_COMPLETE".into(),
                        reason: None,
                    });
                    return Ok(true);
                }
                Some(StackStatus::DeleteFailed) => {
                    return Err(CfnError::StackFailed {
                        stack: stack.clone(),
                        status: "DELETE_FAILED".into(),
                        resource: stack,
                        resource_type: "AWS::CloudFormation::Stack".into(),
                        reason: "see `aws cloudformation describe-stack-events`".into(),
                    });
                }
                _ if started.elapsed() > self.patience => {
                    return Err(CfnError::Timeout {
                        stack,
                        waited: self.patience,
                    });
                }
                _ => {
                    tokio::time::sleep(pause).await;
                    pause = next_pause(pause);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use aws_sdk_cloudformation::operation::create_change_set::CreateChangeSetOutput;
    use aws_sdk_cloudformation::operation::delete_change_set::DeleteChangeSetOutput;
    use aws_sdk_cloudformation::operation::describe_change_set::DescribeChangeSetOutput;
    use aws_sdk_cloudformation::operation::describe_stack_events::DescribeStackEventsOutput;
    use aws_sdk_cloudformation::operation::describe_stacks::DescribeStacksOutput;
    use aws_sdk_cloudformation::operation::execute_change_set::ExecuteChangeSetOutput;
    use aws_sdk_cloudformation::types::{ExecutionStatus, Stack};
    use aws_smithy_mocks::mock;

    use super::*;
    use crate::testing::mocked_clients as mocked;

    fn engine<'a>(
        clients: &'a Clients,
        name: &'a StackName,
        settings: &'a StageSettings,
    ) -> Engine<'a> {
        Engine {
            clients,
            name,
            settings,
            patience: Duration::from_secs(5),
        }
    }

    fn stack_in(status: StackStatus) -> DescribeStacksOutput {
        DescribeStacksOutput::builder()
            .stacks(
                Stack::builder()
                    .stack_name("chat-prod")
                    .stack_status(status)
                    .creation_time(aws_smithy_types::DateTime::from_secs(0))
                    .build(),
            )
            .build()
    }

    fn event(
        id: &str,
        logical: &str,
        kind: &str,
        status: ResourceStatus,
        reason: Option<&str>,
    ) -> aws_sdk_cloudformation::types::StackEvent {
        aws_sdk_cloudformation::types::StackEvent::builder()
            .event_id(id)
            .stack_id("arn:aws:cloudformation:eu-west-1:123456789012:stack/chat-prod/1")
            .stack_name("chat-prod")
            .logical_resource_id(logical)
            .resource_type(kind)
            .resource_status(status)
            .set_resource_status_reason(reason.map(str::to_owned))
            .timestamp(aws_smithy_types::DateTime::from_secs(0))
            .build()
    }

    /// An update that fails as AWS documents it: the failing resource's `UPDATE_FAILED` with the
    /// handler's message, a sibling's "Resource update cancelled", the stack's own summary, and
    /// the rollback. moto cannot show this (its stacks never fail per resource and send no
    /// resource events), so the answers are recorded from AWS's documented event stream.
    #[tokio::test]
    async fn a_failed_update_names_the_first_failing_resource_and_its_reason() {
        let handler = "Resource handler returned message: \"Error occurred while GetObject. S3 Error Code: NoSuchKey. S3 Error Message: The specified key does not exist. (Service: Lambda, Status Code: 400)\" (RequestToken: 1f0b, HandlerErrorCode: InvalidRequest)";
        // DescribeStackEvents answers newest first.
        let after = vec![
            event(
                "9",
                "chat-prod",
                "AWS::CloudFormation::Stack",
                ResourceStatus::UpdateRollbackComplete,
                None,
            ),
            event(
                "8",
                "WsFunction",
                "AWS::Lambda::Function",
                ResourceStatus::UpdateComplete,
                None,
            ),
            event(
                "7",
                "chat-prod",
                "AWS::CloudFormation::Stack",
                ResourceStatus::UpdateRollbackInProgress,
                Some("The following resource(s) failed to update: [WsFunction]."),
            ),
            event(
                "6",
                "FanoutFunction",
                "AWS::Lambda::Function",
                ResourceStatus::UpdateFailed,
                Some("Resource update cancelled"),
            ),
            event(
                "5",
                "WsFunction",
                "AWS::Lambda::Function",
                ResourceStatus::UpdateFailed,
                Some(handler),
            ),
            event(
                "4",
                "WsFunction",
                "AWS::Lambda::Function",
                ResourceStatus::UpdateInProgress,
                None,
            ),
            event(
                "3",
                "chat-prod",
                "AWS::CloudFormation::Stack",
                ResourceStatus::UpdateInProgress,
                Some("User Initiated"),
            ),
            event(
                "1",
                "chat-prod",
                "AWS::CloudFormation::Stack",
                ResourceStatus::CreateComplete,
                None,
            ),
        ];
        let before = vec![after.last().cloned().unwrap()];
        let events = mock!(aws_sdk_cloudformation::Client::describe_stack_events)
            .sequence()
            .output(move || {
                DescribeStackEventsOutput::builder()
                    .set_stack_events(Some(before.clone()))
                    .build()
            })
            .output(move || {
                DescribeStackEventsOutput::builder()
                    .set_stack_events(Some(after.clone()))
                    .build()
            })
            .build();
        let execute = mock!(aws_sdk_cloudformation::Client::execute_change_set)
            .then_output(|| ExecuteChangeSetOutput::builder().build());
        let stacks = mock!(aws_sdk_cloudformation::Client::describe_stacks)
            .then_output(|| stack_in(StackStatus::UpdateRollbackComplete));
        let clients = mocked(&[&events, &execute, &stacks]);
        let name = StackName::new("chat", "prod").unwrap();
        let settings = StageSettings::default();
        let engine = engine(&clients, &name, &settings);
        let change_set = ChangeSet {
            stack: "chat-prod".into(),
            name: "chatctl-1".into(),
            changes: Vec::new(),
        };
        let mut streamed = Vec::new();
        let err = engine
            .execute(&change_set, &mut |e| streamed.push(e.to_string()))
            .await
            .unwrap_err();
        let CfnError::StackFailed {
            status,
            resource,
            resource_type,
            reason,
            ..
        } = &err
        else {
            panic!("{err:?}");
        };
        assert_eq!(status, "UPDATE_ROLLBACK_COMPLETE");
        assert_eq!(
            resource, "WsFunction",
            "not the cancelled sibling nor the stack"
        );
        assert_eq!(resource_type, "AWS::Lambda::Function");
        assert_eq!(reason, handler);
        // Only the new events, oldest first.
        assert_eq!(streamed.len(), 7, "{streamed:#?}");
        assert_eq!(
            streamed[0],
            "UPDATE_IN_PROGRESS AWS::CloudFormation::Stack chat-prod: User Initiated"
        );
        assert_eq!(
            streamed[6],
            "UPDATE_ROLLBACK_COMPLETE AWS::CloudFormation::Stack chat-prod"
        );
        assert_eq!(execute.num_calls(), 1);
    }

    /// DescribeStackEvents pages newest first: a poll reads pages only until it reaches an
    /// event already seen, never a long stack's whole history again (the second page of each
    /// answer below is never asked for; an unexpected call would fail the test).
    #[tokio::test]
    async fn following_a_stack_reads_only_the_new_events() {
        let page = |events: Vec<aws_sdk_cloudformation::types::StackEvent>| {
            DescribeStackEventsOutput::builder()
                .set_stack_events(Some(events))
                .next_token("older")
                .build()
        };
        let stack = "AWS::CloudFormation::Stack";
        let old = event(
            "1",
            "chat-prod",
            stack,
            ResourceStatus::UpdateComplete,
            None,
        );
        let started = event(
            "2",
            "chat-prod",
            stack,
            ResourceStatus::UpdateInProgress,
            None,
        );
        let done = event(
            "3",
            "chat-prod",
            stack,
            ResourceStatus::UpdateComplete,
            None,
        );
        let events = mock!(aws_sdk_cloudformation::Client::describe_stack_events)
            .sequence()
            .output({
                let old = old.clone();
                move || page(vec![old.clone()])
            })
            .output(move || page(vec![done.clone(), started.clone(), old.clone()]))
            .build();
        let execute = mock!(aws_sdk_cloudformation::Client::execute_change_set)
            .then_output(|| ExecuteChangeSetOutput::builder().build());
        let stacks = mock!(aws_sdk_cloudformation::Client::describe_stacks)
            .then_output(|| stack_in(StackStatus::UpdateComplete));
        let clients = mocked(&[&events, &execute, &stacks]);
        let name = StackName::new("chat", "prod").unwrap();
        let settings = StageSettings::default();
        let engine = engine(&clients, &name, &settings);
        let change_set = ChangeSet {
            stack: "chat-prod".into(),
            name: "chatctl-1".into(),
            changes: Vec::new(),
        };
        let mut streamed = Vec::new();
        engine
            .execute(&change_set, &mut |e| streamed.push(e.status.clone()))
            .await
            .unwrap();
        assert_eq!(streamed, ["UPDATE_IN_PROGRESS", "UPDATE_COMPLETE"]);
        assert_eq!(events.num_calls(), 2, "one page before, one page after");
    }

    /// AWS creates a change set for an unchanged stack and then fails it with "didn't contain
    /// changes"; that is "no changes", and the failed change set is deleted, not left behind.
    #[tokio::test]
    async fn an_empty_change_set_is_no_changes_and_is_deleted() {
        let stacks = mock!(aws_sdk_cloudformation::Client::describe_stacks)
            .then_output(|| stack_in(StackStatus::UpdateComplete));
        let create = mock!(aws_sdk_cloudformation::Client::create_change_set).then_output(|| {
            CreateChangeSetOutput::builder()
                .id("arn:cs")
                .stack_id("arn:stack")
                .build()
        });
        let describe = mock!(aws_sdk_cloudformation::Client::describe_change_set)
            .sequence()
            .output(|| {
                DescribeChangeSetOutput::builder()
                    .status(ChangeSetStatus::CreatePending)
                    .execution_status(ExecutionStatus::Unavailable)
                    .build()
            })
            .output(|| {
                DescribeChangeSetOutput::builder()
                    .status(ChangeSetStatus::Failed)
                    .execution_status(ExecutionStatus::Unavailable)
                    .status_reason("The submitted information didn't contain changes. Submit different information to create a change set.")
                    .build()
            })
            .build();
        let delete = mock!(aws_sdk_cloudformation::Client::delete_change_set)
            .then_output(|| DeleteChangeSetOutput::builder().build());
        let clients = mocked(&[&stacks, &create, &describe, &delete]);
        let name = StackName::new("chat", "prod").unwrap();
        let settings = StageSettings::default();
        let engine = engine(&clients, &name, &settings);
        let keys = [
            code_key(&name, "ws", "d3M="),
            code_key(&name, "fanout", "ZmFub3V0"),
        ];
        let change_set = engine
            .change_set(
                &Environment::new("123456789012", "eu-west-1"),
                &Code {
                    ws_sha256: "d3M=".into(),
                    fanout_sha256: "ZmFub3V0".into(),
                },
                &keys,
            )
            .await
            .unwrap();
        assert!(change_set.is_none());
        assert_eq!(create.num_calls(), 1);
        assert_eq!(
            delete.num_calls(),
            1,
            "the failed, empty change set is removed"
        );
    }

    /// A change set that fails for another reason is an error carrying CloudFormation's reason.
    #[tokio::test]
    async fn a_change_set_that_fails_otherwise_is_an_error_with_the_reason() {
        let stacks = mock!(aws_sdk_cloudformation::Client::describe_stacks)
            .then_output(|| stack_in(StackStatus::UpdateComplete));
        let create = mock!(aws_sdk_cloudformation::Client::create_change_set)
            .then_output(|| CreateChangeSetOutput::builder().build());
        let describe =
            mock!(aws_sdk_cloudformation::Client::describe_change_set).then_output(|| {
                DescribeChangeSetOutput::builder()
                    .status(ChangeSetStatus::Failed)
                    .status_reason("Requires capabilities : [CAPABILITY_NAMED_IAM]")
                    .build()
            });
        let clients = mocked(&[&stacks, &create, &describe]);
        let name = StackName::new("chat", "prod").unwrap();
        let settings = StageSettings::default();
        let engine = engine(&clients, &name, &settings);
        let keys = [
            code_key(&name, "ws", "d3M="),
            code_key(&name, "fanout", "ZmFub3V0"),
        ];
        let err = engine
            .change_set(
                &Environment::new("123456789012", "eu-west-1"),
                &Code {
                    ws_sha256: "d3M=".into(),
                    fanout_sha256: "ZmFub3V0".into(),
                },
                &keys,
            )
            .await
            .unwrap_err();
        assert!(
            matches!(&err, CfnError::ChangeSetFailed { reason, .. } if reason.contains("CAPABILITY_NAMED_IAM")),
            "{err:?}"
        );
    }

    #[test]
    fn code_keys_are_content_addressed_and_url_safe() {
        let name = StackName::new("chat", "prod").unwrap();
        let key = code_key(&name, "ws", "d3MtdjE=");
        assert_eq!(key, "chat/prod/ws-77732d7631.zip");
        assert_ne!(key, code_key(&name, "ws", "d3MtdjI="));
        assert!(artifact_bucket("123456789012", "ap-southeast-2").len() <= 63);
    }
}
