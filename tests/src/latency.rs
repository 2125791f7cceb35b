//! An AWS latency model for the test proxy ([`crate::proxy::AwsProxy::set_latency`]). moto answers
//! every call at once and every resource is ready the moment it exists; AWS is not like that, and
//! a deploy's wall time is mostly its waits. Under the model:
//!
//! - every call takes a round trip (IAM, a global service served from us-east-1, a longer one);
//! - a new DynamoDB table is `CREATING` for a while, an updated one `UPDATING` (its new indexes
//!   `CREATING`), and UpdateTable / UpdateTimeToLive / DeleteTable on a busy table are refused
//!   with `ResourceInUseException`, as DynamoDB does;
//! - a new role cannot be assumed by Lambda (CreateFunction: `InvalidParameterValueException`) or
//!   by EventBridge Scheduler (CreateSchedule: `ValidationException`) until IAM has propagated
//!   it, and a role's new policy does not yet let CreateEventSourceMapping read the queue;
//! - a new function is `Pending`, an updated one `InProgress`, and the next update or
//!   PutFunctionEventInvokeConfig meanwhile is refused with `ResourceConflictException`.
//!
//! The durations are parameters. [`Latency::aws`] holds typical figures for a commercial region
//! (see its comment): they are assumptions to plan against, not measurements of AWS.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::proxy::Call;

/// How long AWS takes: the parameters of the model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Latency {
    /// Added to every call before it is forwarded: request, service time and answer.
    pub round_trip: Duration,
    /// The same for IAM.
    pub iam_round_trip: Duration,
    /// How long a new table (with its indexes) is `CREATING`.
    pub table_creating: Duration,
    /// How long an updated table is `UPDATING` (a new index `CREATING`).
    pub table_updating: Duration,
    /// How long after CreateRole / PutRolePolicy before other services see the role / policy.
    pub iam_propagation: Duration,
    /// How long a new function is `Pending`.
    pub function_pending: Duration,
    /// How long a code or configuration update is `InProgress`.
    pub function_updating: Duration,
}

impl Latency {
    /// Typical figures for a commercial region, from a client in the same region: ~80 ms per
    /// control-plane call (IAM ~150 ms), an on-demand table ACTIVE after ~8 s (DynamoDB takes
    /// 5–20 s; an index on an empty table about as long), IAM propagation ~8 s (Lambda's
    /// "cannot be assumed" window is commonly 5–10 s), a zip function Pending ~3 s and an
    /// update InProgress ~2 s. Assumptions, not measurements: no AWS account is reachable here.
    pub fn aws() -> Self {
        Self {
            round_trip: Duration::from_millis(80),
            iam_round_trip: Duration::from_millis(150),
            table_creating: Duration::from_secs(8),
            table_updating: Duration::from_secs(8),
            iam_propagation: Duration::from_secs(8),
            function_pending: Duration::from_secs(3),
            function_updating: Duration::from_secs(2),
        }
    }
}

/// An answer the model gives instead of forwarding: what AWS says while something is not ready.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub status: u16,
    pub code: &'static str,
    pub message: String,
}

#[derive(Debug, Clone)]
struct BusyTable {
    until: Instant,
    status: &'static str,
    indexes: Vec<String>,
}

#[derive(Debug, Default)]
struct State {
    tables: HashMap<String, BusyTable>,
    /// When each role created in this run can be assumed.
    roles: HashMap<String, Instant>,
    /// When each role's latest policy is in effect.
    policies: HashMap<String, Instant>,
    /// Functions still Pending / InProgress, and until when.
    functions: HashMap<String, (Instant, &'static str)>,
    /// Each function's role (from CreateFunction), for the policy a mapping needs.
    function_roles: HashMap<String, String>,
}

/// The model's state: what was created or changed when.
#[derive(Debug)]
pub(crate) struct Model {
    latency: Latency,
    state: Mutex<State>,
}

/// What a call is about, read from its body or path.
fn json_body(call: &Call) -> Value {
    serde_json::from_str(&call.body).unwrap_or(Value::Null)
}

fn str_at<'a>(v: &'a Value, pointer: &str) -> Option<&'a str> {
    v.pointer(pointer).and_then(Value::as_str)
}

/// The last segment of an ARN's resource (`arn:aws:iam::1:role/NAME` → `NAME`).
fn arn_name(arn: &str) -> String {
    arn.rsplit('/').next().unwrap_or(arn).to_owned()
}

/// A path's segments, without the query.
fn segments(call: &Call) -> Vec<String> {
    let path = call.path.split('?').next().unwrap_or_default();
    path.split('/')
        .filter(|s| !s.is_empty())
        .map(crate::proxy::percent_decode)
        .collect()
}

/// The function a Lambda REST call addresses (`/{version}/functions/{name}/…`).
fn function_of(call: &Call) -> Option<String> {
    let segments = segments(call);
    let at = segments.iter().position(|s| s == "functions")?;
    segments.get(at + 1).map(|name| arn_name(name))
}

fn form(call: &Call, key: &str) -> Option<String> {
    crate::proxy::form_value(&call.body, key)
}

impl Model {
    pub(crate) fn new(latency: Latency) -> Self {
        Self {
            latency,
            state: Mutex::default(),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// How long the call takes before it reaches the service.
    pub(crate) fn delay(&self, call: &Call) -> Duration {
        if call.service == "iam" {
            self.latency.iam_round_trip
        } else {
            self.latency.round_trip
        }
    }

    /// What AWS would answer instead, while something the call needs is not ready.
    pub(crate) fn before(&self, call: &Call) -> Option<Refusal> {
        let now = Instant::now();
        let mut state = self.state();
        state.tables.retain(|_, t| t.until > now);
        state.functions.retain(|_, (until, _)| *until > now);
        let not_yet =
            |map: &HashMap<String, Instant>, key: &str| map.get(key).is_some_and(|t| *t > now);
        match (call.service.as_str(), call.operation.as_str()) {
            ("dynamodb", "UpdateTable" | "UpdateTimeToLive" | "DeleteTable") => {
                let body = json_body(call);
                let table = str_at(&body, "/TableName")?;
                let busy = state.tables.get(table)?;
                Some(Refusal {
                    status: 400,
                    code: "ResourceInUseException",
                    message: format!(
                        "Attempt to change a resource which is still in use: Table is {}: {table}",
                        busy.status.to_lowercase()
                    ),
                })
            }
            ("lambda", "CreateFunction") => {
                let body = json_body(call);
                let role = arn_name(str_at(&body, "/Role")?);
                not_yet(&state.roles, &role).then(|| Refusal {
                    status: 400,
                    code: "InvalidParameterValueException",
                    message: "The role defined for the function cannot be assumed by Lambda."
                        .to_owned(),
                })
            }
            ("lambda", op)
                if op == "UpdateFunctionCode"
                    || op == "UpdateFunctionConfiguration"
                    || op.ends_with("/event-invoke-config") =>
            {
                let function = function_of(call)?;
                state.functions.get(&function).map(|_| Refusal {
                    status: 409,
                    code: "ResourceConflictException",
                    message: format!(
                        "The operation cannot be performed at this time. An update is in progress for resource: {function}"
                    ),
                })
            }
            ("lambda", op) if op.starts_with("POST ") && op.ends_with("/event-source-mappings") => {
                let body = json_body(call);
                let function = arn_name(str_at(&body, "/FunctionName")?);
                let role = state.function_roles.get(&function)?.clone();
                (not_yet(&state.roles, &role) || not_yet(&state.policies, &role)).then(|| Refusal {
                    status: 400,
                    code: "InvalidParameterValueException",
                    message: "The function execution role does not have permissions to call ReceiveMessage on SQS".to_owned(),
                })
            }
            ("scheduler", op) if op.starts_with("POST /schedules/") => {
                let body = json_body(call);
                let role = arn_name(str_at(&body, "/Target/RoleArn")?);
                not_yet(&state.roles, &role).then(|| Refusal {
                    status: 400,
                    code: "ValidationException",
                    message: "The execution role you provide must allow AWS EventBridge Scheduler to assume the role.".to_owned(),
                })
            }
            _ => None,
        }
    }

    /// Record what a successful call created or changed, and return the answer's body as AWS
    /// would give it while that is still in progress (`None`: unchanged).
    pub(crate) fn after(&self, call: &Call, status: u16, answer: &[u8]) -> Option<Vec<u8>> {
        if !(200..300).contains(&status) {
            return None;
        }
        let now = Instant::now();
        let l = &self.latency;
        let mut state = self.state();
        match (call.service.as_str(), call.operation.as_str()) {
            ("dynamodb", "CreateTable") => {
                let body = json_body(call);
                let table = str_at(&body, "/TableName")?.to_owned();
                let indexes = body["GlobalSecondaryIndexes"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|i| i["IndexName"].as_str().map(str::to_owned))
                    .collect();
                let busy = BusyTable {
                    until: now + l.table_creating,
                    status: "CREATING",
                    indexes,
                };
                state.tables.insert(table, busy.clone());
                rewrite_table(answer, "/TableDescription", &busy)
            }
            ("dynamodb", "UpdateTable") => {
                let body = json_body(call);
                let table = str_at(&body, "/TableName")?.to_owned();
                let indexes = body["GlobalSecondaryIndexUpdates"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|u| u.pointer("/Create/IndexName").and_then(Value::as_str))
                    .map(str::to_owned)
                    .collect();
                let busy = BusyTable {
                    until: now + l.table_updating,
                    status: "UPDATING",
                    indexes,
                };
                state.tables.insert(table, busy.clone());
                rewrite_table(answer, "/TableDescription", &busy)
            }
            ("dynamodb", "DescribeTable") => {
                let body = json_body(call);
                let busy = state.tables.get(str_at(&body, "/TableName")?)?;
                if busy.until <= now {
                    return None;
                }
                rewrite_table(answer, "/Table", busy)
            }
            ("dynamodb", "DeleteTable") => {
                let body = json_body(call);
                state.tables.remove(str_at(&body, "/TableName")?);
                None
            }
            ("iam", "CreateRole") => {
                state
                    .roles
                    .insert(form(call, "RoleName")?, now + l.iam_propagation);
                None
            }
            ("iam", "PutRolePolicy") => {
                state
                    .policies
                    .insert(form(call, "RoleName")?, now + l.iam_propagation);
                None
            }
            ("lambda", "CreateFunction") => {
                let body = json_body(call);
                let function = str_at(&body, "/FunctionName")?.to_owned();
                let role = arn_name(str_at(&body, "/Role")?);
                state.function_roles.insert(function.clone(), role);
                state
                    .functions
                    .insert(function, (now + l.function_pending, "Pending"));
                rewrite_function(answer, "", "Pending")
            }
            ("lambda", "UpdateFunctionCode" | "UpdateFunctionConfiguration") => {
                let function = function_of(call)?;
                state
                    .functions
                    .insert(function, (now + l.function_updating, "InProgress"));
                rewrite_function(answer, "", "InProgress")
            }
            ("lambda", op @ ("GetFunctionConfiguration" | "GetFunction")) => {
                let (until, status) = *state.functions.get(&function_of(call)?)?;
                if until <= now {
                    return None;
                }
                let at = if op == "GetFunction" {
                    "/Configuration"
                } else {
                    ""
                };
                rewrite_function(answer, at, status)
            }
            ("lambda", "DeleteFunction") => {
                let function = function_of(call)?;
                state.functions.remove(&function);
                state.function_roles.remove(&function);
                None
            }
            _ => None,
        }
    }
}

/// The table description at `at` with the busy status, and its new indexes `CREATING`.
fn rewrite_table(answer: &[u8], at: &str, busy: &BusyTable) -> Option<Vec<u8>> {
    let mut doc: Value = serde_json::from_slice(answer).ok()?;
    let table = doc.pointer_mut(at)?;
    table["TableStatus"] = Value::from(busy.status);
    if let Some(indexes) = table
        .get_mut("GlobalSecondaryIndexes")
        .and_then(Value::as_array_mut)
    {
        for index in indexes {
            let creating = index["IndexName"]
                .as_str()
                .is_some_and(|n| busy.indexes.iter().any(|b| b == n));
            if creating {
                index["IndexStatus"] = Value::from("CREATING");
            }
        }
    }
    serde_json::to_vec(&doc).ok()
}

/// The function configuration at `at`: `Pending` (a new function) or an update `InProgress`.
fn rewrite_function(answer: &[u8], at: &str, status: &str) -> Option<Vec<u8>> {
    let mut doc: Value = serde_json::from_slice(answer).ok()?;
    let config = doc.pointer_mut(at)?;
    if status == "Pending" {
        config["State"] = Value::from("Pending");
        config["StateReasonCode"] = Value::from("Creating");
    } else {
        config["LastUpdateStatus"] = Value::from("InProgress");
    }
    serde_json::to_vec(&doc).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(service: &str, operation: &str, body: &str, path: &str) -> Call {
        Call {
            service: service.to_owned(),
            operation: operation.to_owned(),
            body: body.to_owned(),
            path: path.to_owned(),
            status: 0,
        }
    }

    fn quick() -> Latency {
        Latency {
            table_creating: Duration::from_secs(60),
            iam_propagation: Duration::from_secs(60),
            function_pending: Duration::from_secs(60),
            ..Latency::aws()
        }
    }

    #[test]
    fn a_new_table_is_creating_and_refuses_changes_until_it_is_active() {
        let model = Model::new(quick());
        let create = call(
            "dynamodb",
            "CreateTable",
            r#"{"TableName":"t","GlobalSecondaryIndexes":[{"IndexName":"by-shard"}]}"#,
            "/",
        );
        let answer = br#"{"TableDescription":{"TableName":"t","TableStatus":"ACTIVE","GlobalSecondaryIndexes":[{"IndexName":"by-shard","IndexStatus":"ACTIVE"}]}}"#;
        let rewritten: Value =
            serde_json::from_slice(&model.after(&create, 200, answer).unwrap()).unwrap();
        assert_eq!(rewritten["TableDescription"]["TableStatus"], "CREATING");
        assert_eq!(
            rewritten["TableDescription"]["GlobalSecondaryIndexes"][0]["IndexStatus"],
            "CREATING"
        );
        let ttl = call("dynamodb", "UpdateTimeToLive", r#"{"TableName":"t"}"#, "/");
        assert_eq!(model.before(&ttl).unwrap().code, "ResourceInUseException");
        let other = call("dynamodb", "UpdateTimeToLive", r#"{"TableName":"u"}"#, "/");
        assert_eq!(model.before(&other), None);
    }

    #[test]
    fn a_new_role_cannot_be_assumed_until_it_has_propagated() {
        let model = Model::new(quick());
        model.after(
            &call("iam", "CreateRole", "Action=CreateRole&RoleName=r", "/"),
            200,
            b"",
        );
        let create = call(
            "lambda",
            "CreateFunction",
            r#"{"FunctionName":"f","Role":"arn:aws:iam::1:role/r"}"#,
            "/2015-03-31/functions",
        );
        let refused = model.before(&create).unwrap();
        assert!(refused.message.contains("cannot be assumed"), "{refused:?}");
        let old_role = create.body.replace("role/r", "role/old");
        assert_eq!(
            model.before(&call(
                "lambda",
                "CreateFunction",
                &old_role,
                "/2015-03-31/functions"
            )),
            None
        );
    }

    #[test]
    fn a_new_function_is_pending_and_refuses_updates() {
        let model = Model::new(quick());
        let create = call(
            "lambda",
            "CreateFunction",
            r#"{"FunctionName":"f","Role":"arn:aws:iam::1:role/r"}"#,
            "/2015-03-31/functions",
        );
        model.after(&create, 201, br#"{"FunctionName":"f","State":"Active"}"#);
        let get = call(
            "lambda",
            "GetFunctionConfiguration",
            "",
            "/2015-03-31/functions/f/configuration",
        );
        let seen: Value = serde_json::from_slice(
            &model
                .after(&get, 200, br#"{"FunctionName":"f","State":"Active"}"#)
                .unwrap(),
        )
        .unwrap();
        assert_eq!(seen["State"], "Pending");
        let update = call(
            "lambda",
            "UpdateFunctionCode",
            "{}",
            "/2015-03-31/functions/f/code",
        );
        assert_eq!(model.before(&update).unwrap().status, 409);
    }
}
