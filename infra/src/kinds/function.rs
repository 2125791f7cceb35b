//! A Lambda function and what hangs off it: its `live` alias (the release every trigger
//! invokes), its event-invoke configuration, the presence queue's event source mapping, and the
//! permissions that let API Gateway and SNS invoke it.

use std::collections::BTreeMap;
use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use aws_sdk_lambda::primitives::Blob;
use serde::Serialize;
use serde_json::{Value, json};

use crate::apply::{Applier, Progress, int, tag_map, text, typed};
use crate::cloudformation::{CODE_BUCKET_PARAMETER, cfn, tag_list};
use crate::errors::{
    describe, is_in_use, is_not_found, is_precondition_failed, is_role_not_ready,
    is_source_access_not_ready, is_update_in_progress,
};
use crate::kinds::Properties;
use crate::names::{LIVE_ALIAS, live};
use crate::observe::{ObserveError, Reader, our_tags, read_error};
use crate::stack::{Kind, Resource, permission_sid};

use super::Tags;

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Function {
    pub runtime: Option<String>,
    pub handler: Option<String>,
    /// `arm64` or `x86_64`.
    pub architecture: Option<String>,
    pub memory_mb: Option<i64>,
    pub timeout_s: Option<i64>,
    /// The execution role's ARN.
    pub role: Option<String>,
    /// Lambda's `CodeSha256` of the zip.
    pub code_sha256: Option<String>,
    pub environment: BTreeMap<String, String>,
    pub tags: Tags,
}

impl Function {
    /// A digest of what a published version freezes besides the code (runtime, handler,
    /// architecture, memory, timeout, role, environment): a change to any of them needs a new
    /// version for the `live` alias to serve it. Tags are not part of a version.
    pub fn configuration_digest(&self) -> String {
        use sha2::Digest;
        let frozen = json!([
            self.runtime,
            self.handler,
            self.architecture,
            self.memory_mb,
            self.timeout_s,
            self.role,
            self.environment,
        ]);
        let hash = sha2::Sha256::digest(frozen.to_string().as_bytes());
        hash.iter().take(8).map(|b| format!("{b:02x}")).collect()
    }

    /// The release a `live` alias should serve for this function.
    pub fn release(&self) -> Alias {
        Alias {
            code_sha256: self.code_sha256.clone(),
            configuration: Some(self.configuration_digest()),
        }
    }
}

/// The function's `live` alias, as the version it points at: that version's code and a digest
/// of its configuration ([`Function::configuration_digest`]). Wanted: the function's own, so a
/// deploy that changes either publishes a version and moves the alias to it.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Alias {
    pub code_sha256: Option<String>,
    pub configuration: Option<String>,
}

/// How Lambda handles the function's asynchronous invocations.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EventInvokeConfig {
    pub maximum_event_age_s: Option<i64>,
    pub maximum_retry_attempts: Option<i64>,
    /// The on-failure destination's ARN.
    pub on_failure: Option<String>,
    /// The on-success destination's ARN (none wanted: one added by hand is drift).
    pub on_success: Option<String>,
}

/// The presence queue feeding the fan-out in batches.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EventSourceMapping {
    /// The queue's ARN; a change replaces the mapping.
    pub event_source_arn: Option<String>,
    pub batch_size: Option<i64>,
    pub maximum_batching_window_s: Option<i64>,
    /// Sorted.
    pub function_response_types: Vec<String>,
}

/// One statement of the function's resource policy.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Permission {
    /// The service principal; a change replaces the statement.
    pub principal: Option<String>,
    pub action: Option<String>,
    /// The `AWS:SourceArn` condition; a change replaces the statement.
    pub source_arn: Option<String>,
}

// --- observe ------------------------------------------------------------------------------

/// The mapping from `queue_arn` to `function`'s `live` alias (`alias_arn`), found by both (there
/// is no name to read it by).
pub(crate) async fn read_event_source_mapping(
    r: &Reader<'_>,
    function: &str,
    alias_arn: &str,
    queue_arn: &str,
    queue: &str,
) -> Result<(), ObserveError> {
    let mappings = match r
        .clients
        .lambda
        .list_event_source_mappings()
        .function_name(alias_arn)
        .event_source_arn(queue_arn)
        .send()
        .await
    {
        Ok(out) => out.event_source_mappings.unwrap_or_default(),
        Err(e) if is_not_found(&e) => {
            return Ok(());
        }
        Err(e) => {
            return Err(read_error(
                format!("event source mappings of {function}"),
                e,
            ));
        }
    };
    // One being deleted is as good as gone; a deploy creates a new one.
    if let Some(m) = mappings
        .iter()
        .find(|m| m.event_source_arn() == Some(queue_arn) && m.state() != Some("Deleting"))
    {
        put_mapping(r, &format!("{function}/{queue}"), m);
    }
    // A stage deployed before releases mapped the queue to the function itself ($LATEST): an
    // orphan now, deleted by the deploy that maps the alias (two mappings would split the
    // queue's batches between the releases).
    let legacy = match r
        .clients
        .lambda
        .list_event_source_mappings()
        .function_name(function)
        .event_source_arn(queue_arn)
        .send()
        .await
    {
        Ok(out) => out.event_source_mappings.unwrap_or_default(),
        Err(e) if is_not_found(&e) => Vec::new(),
        Err(e) => {
            return Err(read_error(
                format!("event source mappings of {function}"),
                e,
            ));
        }
    };
    let unqualified = alias_arn
        .strip_suffix(&format!(":{LIVE_ALIAS}"))
        .unwrap_or(alias_arn);
    if let Some(m) = legacy.iter().find(|m| {
        m.function_arn() == Some(unqualified)
            && m.event_source_arn() == Some(queue_arn)
            && m.state() != Some("Deleting")
    }) {
        put_mapping(r, &format!("{function}/{queue} ($LATEST)"), m);
    }
    Ok(())
}

fn put_mapping(
    r: &Reader<'_>,
    key: &str,
    m: &aws_sdk_lambda::types::EventSourceMappingConfiguration,
) {
    if let Some(uuid) = m.uuid() {
        r.id(Kind::EventSourceMapping, key, uuid);
    }
    let mut response_types: Vec<String> = m
        .function_response_types()
        .iter()
        .map(|t| t.as_str().to_owned())
        .collect();
    response_types.sort_unstable();
    r.put(
        key,
        EventSourceMapping {
            event_source_arn: m.event_source_arn().map(str::to_owned),
            batch_size: m.batch_size().map(i64::from),
            maximum_batching_window_s: m.maximum_batching_window_in_seconds().map(i64::from),
            function_response_types: response_types,
        },
    );
}

pub(crate) async fn read_event_invoke_config(
    r: &Reader<'_>,
    function: &str,
) -> Result<(), ObserveError> {
    let out = match r
        .clients
        .lambda
        .get_function_event_invoke_config()
        .function_name(function)
        .qualifier(LIVE_ALIAS)
        .send()
        .await
    {
        Ok(out) => out,
        // No configuration, or no function (which then has none either).
        Err(e) if is_not_found(&e) => {
            return Ok(());
        }
        Err(e) => {
            return Err(read_error(format!("event-invoke config of {function}"), e));
        }
    };
    let destinations = out.destination_config();
    r.put(
        function,
        EventInvokeConfig {
            maximum_event_age_s: out.maximum_event_age_in_seconds().map(i64::from),
            maximum_retry_attempts: out.maximum_retry_attempts().map(i64::from),
            on_failure: destinations
                .and_then(|d| d.on_failure())
                .and_then(|f| f.destination())
                .map(str::to_owned),
            on_success: destinations
                .and_then(|d| d.on_success())
                .and_then(|f| f.destination())
                .map(str::to_owned),
        },
    );
    Ok(())
}

/// The properties of one function configuration ($LATEST, or a published version).
fn function_properties(c: &aws_sdk_lambda::types::FunctionConfiguration, tags: Tags) -> Function {
    let environment: BTreeMap<String, String> = c
        .environment()
        .and_then(|e| e.variables())
        .cloned()
        .map(|v| v.into_iter().collect())
        .unwrap_or_default();
    Function {
        runtime: c.runtime().map(|r| r.as_str().to_owned()),
        handler: c.handler().map(str::to_owned),
        architecture: c.architectures().first().map(|a| a.as_str().to_owned()),
        memory_mb: c.memory_size().map(i64::from),
        timeout_s: c.timeout().map(i64::from),
        role: c.role().map(str::to_owned),
        code_sha256: c.code_sha256().map(str::to_owned),
        environment,
        tags,
    }
}

pub(crate) async fn read_function(r: &Reader<'_>, name: &str) -> Result<(), ObserveError> {
    let out = match r
        .clients
        .lambda
        .get_function()
        .function_name(name)
        .send()
        .await
    {
        Ok(out) => out,
        Err(e) if is_not_found(&e) => {
            return Ok(());
        }
        Err(e) => return Err(read_error(format!("function {name}"), e)),
    };
    let Some(c) = out.configuration() else {
        return Ok(());
    };
    let tags = out.tags().cloned().unwrap_or_default();
    let tags = our_tags(tags.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    r.put(name, function_properties(c, tags));
    Ok(())
}

/// The numbers of `function`'s published versions (every page; `$LATEST` is not one).
pub(crate) async fn published_versions(
    lambda: &aws_sdk_lambda::Client,
    function: &str,
) -> Result<
    Vec<u64>,
    aws_sdk_lambda::error::SdkError<
        aws_sdk_lambda::operation::list_versions_by_function::ListVersionsByFunctionError,
    >,
> {
    let mut versions = Vec::new();
    let mut marker = None;
    loop {
        let out = lambda
            .list_versions_by_function()
            .function_name(function)
            .set_marker(marker)
            .send()
            .await?;
        versions.extend(
            out.versions()
                .iter()
                .filter_map(|v| v.version()?.parse::<u64>().ok()),
        );
        marker = out.next_marker;
        if marker.is_none() {
            return Ok(versions);
        }
    }
}

/// The `live` alias of `function`: the version it points at (kept as the alias's id, for
/// releases and status) and that version's code and configuration.
pub(crate) async fn read_alias(r: &Reader<'_>, function: &str) -> Result<(), ObserveError> {
    let lambda = &r.clients.lambda;
    let name = live(function);
    let alias = match lambda
        .get_alias()
        .function_name(function)
        .name(LIVE_ALIAS)
        .send()
        .await
    {
        Ok(out) => out,
        Err(e) if is_not_found(&e) => return Ok(()),
        Err(e) => return Err(read_error(format!("alias {name}"), e)),
    };
    let Some(version) = alias.function_version() else {
        return Ok(());
    };
    r.id(Kind::Alias, &name, version);
    let release = match lambda
        .get_function()
        .function_name(function)
        .qualifier(version)
        .send()
        .await
    {
        Ok(out) => out
            .configuration()
            .map(|c| function_properties(c, Tags::new()).release()),
        // An alias always points at an existing version; gone means the function is going.
        Err(e) if is_not_found(&e) => None,
        Err(e) => return Err(read_error(format!("version {version} of {function}"), e)),
    };
    r.put(
        &name,
        release.unwrap_or(Alias {
            code_sha256: None,
            configuration: None,
        }),
    );
    Ok(())
}

pub(crate) async fn read_permission(
    r: &Reader<'_>,
    function: &str,
    source: &str,
) -> Result<(), ObserveError> {
    let policy = match r
        .clients
        .lambda
        .get_policy()
        .function_name(function)
        .qualifier(LIVE_ALIAS)
        .send()
        .await
    {
        Ok(out) => out.policy.unwrap_or_default(),
        Err(e) if is_not_found(&e) => {
            return Ok(());
        }
        Err(e) => return Err(read_error(format!("resource policy of {function}"), e)),
    };
    let policy: Value = serde_json::from_str(&policy).unwrap_or(Value::Null);
    let sid = crate::stack::permission_sid(source);
    let Some(statement) = policy["Statement"]
        .as_array()
        .and_then(|s| s.iter().find(|st| st["Sid"] == json!(sid)))
    else {
        return Ok(());
    };
    let text = |v: &Value| v.as_str().map(str::to_owned);
    r.put(
        &format!("{function}/{source}"),
        Permission {
            principal: text(&statement["Principal"]["Service"]),
            action: text(&statement["Action"]),
            source_arn: text(&statement["Condition"]["ArnLike"]["AWS:SourceArn"]),
        },
    );
    Ok(())
}

// --- apply --------------------------------------------------------------------------------

impl Applier<'_> {
    /// PutFunctionEventInvokeConfig: creates or replaces the whole configuration (idempotent).
    pub(crate) async fn put_event_invoke_config(&self, r: &Resource) -> Result<(), String> {
        use aws_sdk_lambda::types::{DestinationConfig, OnFailure, OnSuccess};
        let config = typed(r, Properties::event_invoke_config)?;
        let mut destinations = DestinationConfig::builder().on_failure(
            OnFailure::builder()
                .destination(text(&config.on_failure))
                .build(),
        );
        if let Some(success) = &config.on_success {
            destinations =
                destinations.on_success(OnSuccess::builder().destination(success).build());
        }
        let started = Instant::now();
        loop {
            match self
                .clients
                .lambda
                .put_function_event_invoke_config()
                .function_name(&r.name)
                .qualifier(LIVE_ALIAS)
                .maximum_event_age_in_seconds(int(config.maximum_event_age_s))
                .maximum_retry_attempts(int(config.maximum_retry_attempts))
                .destination_config(destinations.clone().build())
                .send()
                .await
            {
                Ok(_) => return Ok(()),
                // The function is still being created or updated.
                Err(e) if is_update_in_progress(&e) && started.elapsed() < self.patience => {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
                Err(e) => return Err(describe(e)),
            }
        }
    }

    pub(crate) fn response_types(
        m: &EventSourceMapping,
    ) -> Vec<aws_sdk_lambda::types::FunctionResponseType> {
        m.function_response_types
            .iter()
            .map(|t| aws_sdk_lambda::types::FunctionResponseType::from(t.as_str()))
            .collect()
    }

    /// CreateEventSourceMapping. Lambda checks that the function's role may read the queue: a
    /// role policy written moments ago may not be visible yet, so that refusal is waited out.
    pub(crate) async fn create_event_source_mapping(&self, r: &Resource) -> Result<(), String> {
        let function = r.name.split('/').next().unwrap_or_default().to_owned();
        let m = typed(r, Properties::event_source_mapping)?;
        let started = Instant::now();
        loop {
            match self
                .clients
                .lambda
                .create_event_source_mapping()
                .function_name(self.alias_arn(&function))
                .event_source_arn(text(&m.event_source_arn))
                .batch_size(int(m.batch_size))
                .maximum_batching_window_in_seconds(int(m.maximum_batching_window_s))
                .set_function_response_types(Some(Self::response_types(m)))
                .enabled(true)
                .send()
                .await
            {
                Ok(out) => {
                    if let Some(uuid) = out.uuid {
                        self.known()
                            .ids
                            .insert((Kind::EventSourceMapping, r.name.clone()), uuid);
                    }
                    return Ok(());
                }
                // An earlier, interrupted run created it (ResourceConflictException): adopt it
                // and make it the wanted one.
                Err(e) if is_update_in_progress(&e) => {
                    let uuid = self.find_event_source_mapping(&function, r).await?;
                    self.known()
                        .ids
                        .insert((Kind::EventSourceMapping, r.name.clone()), uuid);
                    return self.update_event_source_mapping(r).await;
                }
                Err(e) if is_source_access_not_ready(&e) && started.elapsed() < self.patience => {
                    tokio::time::sleep(Duration::from_secs(2)).await;
                }
                Err(e) => return Err(describe(e)),
            }
        }
    }

    pub(crate) async fn find_event_source_mapping(
        &self,
        function: &str,
        r: &Resource,
    ) -> Result<String, String> {
        let source = text(&typed(r, Properties::event_source_mapping)?.event_source_arn);
        self.clients
            .lambda
            .list_event_source_mappings()
            .function_name(self.alias_arn(function))
            .event_source_arn(&source)
            .send()
            .await
            .map_err(describe)?
            .event_source_mappings()
            .iter()
            .find(|m| m.event_source_arn() == Some(source.as_str()))
            .and_then(|m| m.uuid().map(str::to_owned))
            .ok_or_else(|| format!("no event source mapping from {source} to {function}"))
    }

    pub(crate) async fn update_event_source_mapping(&self, r: &Resource) -> Result<(), String> {
        let uuid = self
            .id(Kind::EventSourceMapping, &r.name)
            .ok_or("the event source mapping's id is unknown")?;
        let m = typed(r, Properties::event_source_mapping)?;
        let started = Instant::now();
        loop {
            match self
                .clients
                .lambda
                .update_event_source_mapping()
                .uuid(&uuid)
                .batch_size(int(m.batch_size))
                .maximum_batching_window_in_seconds(int(m.maximum_batching_window_s))
                .set_function_response_types(Some(Self::response_types(m)))
                .send()
                .await
            {
                Ok(_) => return Ok(()),
                // Still being created or updated (the same code DynamoDB uses for a busy table).
                Err(e) if is_in_use(&e) && started.elapsed() < self.patience => {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
                Err(e) => return Err(describe(e)),
            }
        }
    }

    pub(crate) fn zip_for(&self, function: &str) -> Result<Blob, String> {
        let artifacts = self
            .artifacts
            .ok_or("no build artifacts were given for a code change")?;
        let names = self.name.names();
        if function == names.function("ws") {
            Ok(Blob::new(artifacts.ws.clone()))
        } else if function == names.function("fanout") {
            Ok(Blob::new(artifacts.fanout.clone()))
        } else {
            Err(format!("no artifact for function {function}"))
        }
    }

    pub(crate) fn function_environment(f: &Function) -> aws_sdk_lambda::types::Environment {
        aws_sdk_lambda::types::Environment::builder()
            .set_variables(Some(f.environment.clone().into_iter().collect()))
            .build()
    }

    pub(crate) async fn create_function(&self, r: &Resource) -> Result<(), String> {
        use aws_sdk_lambda::types::{Architecture, FunctionCode, Runtime};
        let zip = self.zip_for(&r.name)?;
        let f = typed(r, Properties::function)?;
        let started = Instant::now();
        loop {
            let result = self
                .clients
                .lambda
                .create_function()
                .function_name(&r.name)
                .runtime(Runtime::from(text(&f.runtime).as_str()))
                .handler(text(&f.handler))
                .role(text(&f.role))
                .architectures(Architecture::from(text(&f.architecture).as_str()))
                .memory_size(int(f.memory_mb))
                .timeout(int(f.timeout_s))
                .environment(Self::function_environment(f))
                .code(FunctionCode::builder().zip_file(zip.clone()).build())
                .set_tags(Some(tag_map(r)))
                .send()
                .await;
            match result {
                Ok(_) => break,
                // The run that created it was killed before it could record that; carry on.
                Err(e) if is_update_in_progress(&e) => break,
                Err(e) if is_role_not_ready(&e) && started.elapsed() < self.patience => {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
                Err(e) => return Err(describe(e)),
            }
        }
        self.wait_function(&r.name).await
    }

    /// Wait until the function is Active and no update is in progress.
    pub(crate) async fn wait_function(&self, name: &str) -> Result<(), String> {
        use aws_sdk_lambda::types::{LastUpdateStatus, State};
        let lambda = &self.clients.lambda;
        self.wait(&format!("function {name} to finish updating"), || async {
            let c = lambda
                .get_function_configuration()
                .function_name(name)
                .send()
                .await
                .map_err(describe)?;
            if c.state() == Some(&State::Failed)
                || c.last_update_status() == Some(&LastUpdateStatus::Failed)
            {
                return Err(format!(
                    "Lambda reports the function failed: {}",
                    c.state_reason()
                        .or(c.last_update_status_reason())
                        .unwrap_or("no reason given")
                ));
            }
            Ok(c.state().is_none_or(|s| *s == State::Active)
                && c.last_update_status() != Some(&LastUpdateStatus::InProgress))
        })
        .await
    }

    pub(crate) async fn update_function(
        &self,
        r: &Resource,
        changed: &BTreeSet<&str>,
    ) -> Result<(), String> {
        use aws_sdk_lambda::types::{Architecture, Runtime};
        let lambda = &self.clients.lambda;
        let f = typed(r, Properties::function)?;
        // An update still in progress (a run killed mid-update, a hand edit) makes Lambda refuse
        // the next one with ResourceConflictException: wait it out first.
        self.wait_function(&r.name).await?;
        if changed.contains("codeSha256") || changed.contains("architecture") {
            lambda
                .update_function_code()
                .function_name(&r.name)
                .zip_file(self.zip_for(&r.name)?)
                .architectures(Architecture::from(text(&f.architecture).as_str()))
                .send()
                .await
                .map_err(describe)?;
            self.wait_function(&r.name).await?;
        }
        let config = [
            "runtime",
            "handler",
            "memoryMb",
            "timeoutS",
            "role",
            "environment",
        ];
        if config.iter().any(|f| changed.contains(f)) {
            lambda
                .update_function_configuration()
                .function_name(&r.name)
                .runtime(Runtime::from(text(&f.runtime).as_str()))
                .handler(text(&f.handler))
                .role(text(&f.role))
                .memory_size(int(f.memory_mb))
                .timeout(int(f.timeout_s))
                .environment(Self::function_environment(f))
                .send()
                .await
                .map_err(describe)?;
            self.wait_function(&r.name).await?;
        }
        Ok(())
    }

    /// The ARN of `function`'s `live` alias, which every trigger invokes.
    pub(crate) fn alias_arn(&self, function: &str) -> String {
        self.arn("lambda", &format!("function:{}", live(function)))
    }

    /// Make the `live` alias serve the function as it now is: publish a version of $LATEST (Lambda
    /// returns the newest version instead when nothing changed since it was published, so a
    /// re-run publishes nothing twice) and point the alias at it, then prune old versions.
    pub(crate) async fn put_alias(&self, r: &Resource) -> Result<(), String> {
        let function = r.name.split(':').next().unwrap_or_default();
        let release = typed(r, Properties::alias)?;
        // PublishVersion during an update is refused (ResourceConflictException).
        self.wait_function(function).await?;
        let version = self.publish_version(function, release).await?;
        self.point_alias(function, &version).await?;
        self.known()
            .ids
            .insert((Kind::Alias, r.name.clone()), version.clone());
        self.prune_versions(function, &version).await
    }

    async fn publish_version(&self, function: &str, release: &Alias) -> Result<String, String> {
        let code = release
            .code_sha256
            .as_deref()
            .filter(|sha| !sha.starts_with('('));
        let description = format!(
            "chatctl {}: code {}, configuration {}",
            self.name,
            code.unwrap_or("as uploaded"),
            release.configuration.as_deref().unwrap_or("-")
        );
        let started = Instant::now();
        loop {
            match self
                .clients
                .lambda
                .publish_version()
                .function_name(function)
                // Publish only the code this deploy uploaded: if another run changed it since,
                // Lambda refuses (PreconditionFailedException) instead of releasing that.
                .set_code_sha256(code.map(str::to_owned))
                .description(&description)
                .send()
                .await
            {
                Ok(out) => {
                    return out
                        .version
                        .ok_or_else(|| format!("Lambda published {function} without a version"));
                }
                Err(e) if is_update_in_progress(&e) && started.elapsed() < self.patience => {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
                Err(e) if is_precondition_failed(&e) => {
                    return Err(format!(
                        "{}; the code of {function} changed while this deploy ran (another deploy?): run deploy again",
                        describe(e)
                    ));
                }
                Err(e) => return Err(describe(e)),
            }
        }
    }

    /// Point `function`'s `live` alias at `version`, creating the alias if it is missing.
    pub(crate) async fn point_alias(&self, function: &str, version: &str) -> Result<(), String> {
        let lambda = &self.clients.lambda;
        match lambda
            .update_alias()
            .function_name(function)
            .name(LIVE_ALIAS)
            .function_version(version)
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if is_not_found(&e) => lambda
                .create_alias()
                .function_name(function)
                .name(LIVE_ALIAS)
                .function_version(version)
                .description("the release every trigger of this stage invokes (chatctl)")
                .send()
                .await
                .map(|_| ())
                .map_err(describe),
            Err(e) => Err(describe(e)),
        }
    }

    /// Delete all but the newest `keep_releases` versions of `function` (never `live`, the one
    /// the alias now serves). A version something else still references is left alone.
    async fn prune_versions(&self, function: &str, live: &str) -> Result<(), String> {
        let mut versions: Vec<u64> = published_versions(&self.clients.lambda, function)
            .await
            .map_err(describe)?;
        versions.sort_unstable_by(|a, b| b.cmp(a));
        let keep = usize::try_from(self.settings.keep_releases.max(1)).unwrap_or(usize::MAX);
        let mut pruned = Vec::new();
        for version in versions.into_iter().skip(keep) {
            let version = version.to_string();
            if version == live {
                continue;
            }
            match self
                .clients
                .lambda
                .delete_function()
                .function_name(function)
                .qualifier(&version)
                .send()
                .await
            {
                Ok(_) => pruned.push(version),
                Err(e) if is_not_found(&e) || is_update_in_progress(&e) => {}
                Err(e) => return Err(describe(e)),
            }
        }
        if let (Some(Progress(say)), false) = (self.progress, pruned.is_empty()) {
            say(&format!(
                "pruned {function} versions {} (keep_releases = {})",
                pruned.join(", "),
                self.settings.keep_releases
            ));
        }
        Ok(())
    }

    pub(crate) async fn create_permission(&self, r: &Resource) -> Result<(), String> {
        let (function, source) = r.name.rsplit_once('/').ok_or("permission without source")?;
        let permission = typed(r, Properties::permission)?;
        match self
            .clients
            .lambda
            .add_permission()
            .function_name(function)
            .qualifier(LIVE_ALIAS)
            .statement_id(permission_sid(source))
            .action(text(&permission.action))
            .principal(text(&permission.principal))
            .source_arn(text(&permission.source_arn))
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if is_update_in_progress(&e) => Err(format!(
                "{}; either the statement {} exists already with other values or the function is still updating: run deploy again",
                describe(e),
                permission_sid(source)
            )),
            Err(e) => Err(describe(e)),
        }
    }
}

// --- CloudFormation ---------------------------------------------------------------------------

impl Function {
    /// `code_key`: the template parameter holding the zip's S3 key.
    pub(crate) fn cloudformation(&self, name: &str, code_key: &str) -> Value {
        let Function {
            runtime,
            handler,
            architecture,
            memory_mb,
            timeout_s,
            role,
            // Not a template value: the code is wherever the parameters say.
            code_sha256: _,
            environment,
            tags,
        } = self;
        cfn(
            "AWS::Lambda::Function",
            json!({
                "FunctionName": name,
                "Runtime": runtime,
                "Handler": handler,
                "Architectures": [architecture],
                "MemorySize": memory_mb,
                "Timeout": timeout_s,
                "Role": role,
                "Code": {
                    "S3Bucket": { "Ref": CODE_BUCKET_PARAMETER },
                    "S3Key": { "Ref": code_key },
                },
                "Environment": { "Variables": environment },
                "Tags": tag_list(tags),
            }),
        )
    }
}

impl Alias {
    /// A version of `function` (logical id `version_id`) and the `live` alias serving it.
    /// AWS::Lambda::Version is immutable: CloudFormation publishes a new one when its
    /// `CodeSha256` (the template parameter `code_parameter`, the zip's hash) or its description
    /// (naming the configuration digest) changes, and the alias follows it.
    pub(crate) fn cloudformation(
        &self,
        function: &str,
        code_parameter: &str,
        version_id: &str,
    ) -> Vec<(&'static str, Value)> {
        let Alias {
            // Not a template value: the parameter holds it.
            code_sha256: _,
            configuration,
        } = self;
        let mut version = cfn(
            "AWS::Lambda::Version",
            json!({
                "FunctionName": function,
                "CodeSha256": { "Ref": code_parameter },
                "Description": format!("chatctl release: configuration {}", configuration.as_deref().unwrap_or("-")),
            }),
        );
        // A replaced version stays published, so the alias can be pointed back at it
        // (`aws lambda update-alias`); deleting the function deletes its versions anyway.
        version["UpdateReplacePolicy"] = json!("Retain");
        vec![
            ("Version", version),
            (
                "",
                cfn(
                    "AWS::Lambda::Alias",
                    json!({
                        "FunctionName": function,
                        "Name": LIVE_ALIAS,
                        "FunctionVersion": { "Fn::GetAtt": [version_id, "Version"] },
                    }),
                ),
            ),
        ]
    }
}

impl EventInvokeConfig {
    pub(crate) fn cloudformation(&self, function: &str) -> Value {
        let EventInvokeConfig {
            maximum_event_age_s,
            maximum_retry_attempts,
            on_failure,
            on_success,
        } = self;
        let mut destinations = json!({ "OnFailure": { "Destination": on_failure } });
        if let Some(d) = on_success {
            destinations["OnSuccess"] = json!({ "Destination": d });
        }
        cfn(
            "AWS::Lambda::EventInvokeConfig",
            json!({
                "FunctionName": function,
                // SNS invokes the `live` alias.
                "Qualifier": LIVE_ALIAS,
                "MaximumEventAgeInSeconds": maximum_event_age_s,
                "MaximumRetryAttempts": maximum_retry_attempts,
                "DestinationConfig": destinations,
            }),
        )
    }
}

impl EventSourceMapping {
    pub(crate) fn cloudformation(&self, function: &str) -> Value {
        let EventSourceMapping {
            event_source_arn,
            batch_size,
            maximum_batching_window_s,
            function_response_types,
        } = self;
        cfn(
            "AWS::Lambda::EventSourceMapping",
            json!({
                "FunctionName": function,
                "EventSourceArn": event_source_arn,
                "BatchSize": batch_size,
                "MaximumBatchingWindowInSeconds": maximum_batching_window_s,
                "FunctionResponseTypes": function_response_types,
            }),
        )
    }
}

impl Permission {
    pub(crate) fn cloudformation(&self, function: &str) -> Value {
        let Permission {
            principal,
            action,
            source_arn,
        } = self;
        cfn(
            "AWS::Lambda::Permission",
            json!({
                "FunctionName": function,
                "Principal": principal,
                "Action": action,
                "SourceArn": source_arn,
            }),
        )
    }
}
