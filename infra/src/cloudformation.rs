//! The stack model as a CloudFormation template: the same desired state `chatctl deploy` applies,
//! for accounts that may deploy only through CloudFormation, and the model's first independent
//! check against AWS's own resource schemas (cfn-lint). Pure: no AWS call, no build.
//!
//! The model is rendered with a placeholder environment (`${AWS::AccountId}`, `${AWS::Region}`,
//! `${AWS::Partition}`, `${AWS::URLSuffix}` and `${Api}` for the WebSocket API's id) and every
//! string holding one becomes an `Fn::Sub`, so names and ARNs come from the one `names` module
//! exactly as for a direct deploy. Each kind's renderer takes its properties out of the model and
//! fails on any left over: a property added to the model and not rendered fails the export.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::Serialize;
use serde_json::{Map, Value, json};

use crate::kinds::{Properties, Tags};
use crate::names::{FUNCTION_ROLES, Partition, live};
use crate::outputs::outputs;
use crate::stack::{
    Code, DesiredStack, Environment, Kind, Resource, StackName, StageSettings, desired,
    role_description,
};

/// The template parameter naming the S3 bucket that holds the functions' zips.
pub const CODE_BUCKET_PARAMETER: &str = "CodeBucket";

/// The template parameter naming the S3 key of `role`'s zip (`WsCodeKey`, `FanoutCodeKey`).
pub fn code_key_parameter(role: &str) -> String {
    format!("{}CodeKey", camel(role))
}

/// The template parameter holding the `CodeSha256` of `role`'s zip (`WsCodeSha256` …): a new
/// value publishes a new version for the `live` alias.
pub fn code_sha256_parameter(role: &str) -> String {
    format!("{}CodeSha256", camel(role))
}

/// How to write the template.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    Json,
    Yaml,
}

/// A rendering failure: a model property of an unexpected shape, a bug in chatctl caught by the
/// export's tests before a user sees them. (A property no renderer handles does not compile:
/// each kind binds every field of its properties by name.)
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExportError {
    #[error("the {kind} {name}: property {key:?} is missing or not {expected}")]
    Shape {
        kind: &'static str,
        name: String,
        key: String,
        expected: &'static str,
    },
}

/// A resource of the model the template leaves out, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Omitted {
    pub kind: Kind,
    pub name: String,
    pub reason: &'static str,
}

impl fmt::Display for Omitted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "not in the template: {} {}: {}",
            self.kind.label(),
            self.name,
            self.reason
        )
    }
}

/// A rendered template and what it holds. (Not `Serialize`: `logical_ids` has tuple keys, which
/// JSON cannot hold; `body` is the template.)
#[derive(Debug, Clone, PartialEq)]
pub struct Template {
    pub body: Value,
    /// Model resource → the logical ids it became (one, or two for a queue with a policy).
    pub logical_ids: BTreeMap<(Kind, String), Vec<String>>,
    pub omitted: Vec<Omitted>,
}

impl Template {
    pub fn resource_count(&self) -> usize {
        self.body["Resources"].as_object().map_or(0, Map::len)
    }

    /// The template's parameter names, in order.
    pub fn parameters(&self) -> Vec<String> {
        self.body["Parameters"]
            .as_object()
            .map(|p| p.keys().cloned().collect())
            .unwrap_or_default()
    }

    pub fn render(&self, format: Format) -> String {
        match format {
            // Pretty-printed: a template is read by people and diffed in review.
            Format::Json => {
                let mut text = serde_json::to_string_pretty(&self.body).unwrap_or_default();
                text.push('\n');
                text
            }
            Format::Yaml => yaml(&self.body),
        }
    }
}

/// Why the SecureString parameter is not in the template.
pub const SECURE_STRING_REASON: &str = "CloudFormation cannot create SecureString parameters \
     (AWS::SSM::Parameter takes String or StringList only): create it before the stack";

/// The logical id of the WebSocket API (`${Api}` in every `Fn::Sub`).
fn api_logical_id(name: &StackName) -> String {
    logical_id(name, Kind::Api, &name.names().api())
}

/// The environment the template is rendered in: CloudFormation's pseudo parameters, and the
/// API's id as the `Ref` of its logical id.
pub fn placeholder_environment(name: &StackName) -> Environment {
    Environment {
        account_id: "${AWS::AccountId}".into(),
        region: "${AWS::Region}".into(),
        partition: Partition {
            id: "${AWS::Partition}".into(),
            dns_suffix: "${AWS::URLSuffix}".into(),
        },
        api_id: None,
        api_endpoint: None,
    }
    .with_api(&format!("${{{}}}", api_logical_id(name)))
}

/// The template of a stage: resources, parameters for the code location, outputs.
pub fn template(name: &StackName, settings: &StageSettings) -> Result<Template, ExportError> {
    let env = placeholder_environment(name);
    // The code comes from the CodeBucket/…CodeKey parameters; its hash is not a template value.
    let code = Code {
        ws_sha256: String::new(),
        fanout_sha256: String::new(),
    };
    let stack = desired(name, settings, &env, &code);
    render_stack(&stack, &env)
}

/// Render a model (exposed for tests that add properties to one).
pub fn render_stack(stack: &DesiredStack, env: &Environment) -> Result<Template, ExportError> {
    let name = &stack.name;
    let ids: Vec<String> = stack
        .resources
        .iter()
        .map(|r| logical_id(name, r.kind, &r.name))
        .collect();
    let mut resources = Map::new();
    let mut logical_ids = BTreeMap::new();
    let mut omitted = Vec::new();
    for (i, r) in stack.resources.iter().enumerate() {
        if r.kind == Kind::Parameter {
            omitted.push(Omitted {
                kind: r.kind,
                name: r.name.clone(),
                reason: SECURE_STRING_REASON,
            });
            continue;
        }
        let ctx = Context { name, stack };
        let rendered = ctx.resource(r)?;
        // Waiting for a model resource is waiting for all it became (a queue and its policy).
        let deps: BTreeSet<String> = ctx
            .depends_on(i)
            .into_iter()
            .flat_map(|j| {
                let earlier = &stack.resources[j];
                logical_ids
                    .get(&(earlier.kind, earlier.name.clone()))
                    .cloned()
                    .unwrap_or_default()
            })
            .collect();
        let mut own = Vec::new();
        for (suffix, mut body) in rendered {
            let id = format!("{}{suffix}", ids[i]);
            let implied = references(&body);
            let explicit: Vec<Value> = deps
                .iter()
                .filter(|d| !implied.contains(*d) && **d != id)
                .map(|d| json!(d))
                .collect();
            if !explicit.is_empty() {
                body["DependsOn"] = Value::Array(explicit);
            }
            if let Some(policy) = deletion_policy(r.kind) {
                body["DeletionPolicy"] = json!(policy);
                body["UpdateReplacePolicy"] = json!(policy);
            }
            own.push(id.clone());
            resources.insert(id, body);
        }
        logical_ids.insert((r.kind, r.name.clone()), own);
    }
    let mut parameters = Map::new();
    parameters.insert(
        CODE_BUCKET_PARAMETER.into(),
        json!({
            "Type": "String",
            "MinLength": 3,
            "Description": "The S3 bucket, in the stack's region, holding the functions' zips (from `chatctl build`).",
        }),
    );
    for role in FUNCTION_ROLES {
        parameters.insert(
            code_key_parameter(role),
            json!({
                "Type": "String",
                "MinLength": 1,
                "Description": format!("The S3 key of the {role} handler's zip (`chatctl build` writes {role}/bootstrap.zip)."),
            }),
        );
        parameters.insert(
            code_sha256_parameter(role),
            json!({
                "Type": "String",
                "MinLength": 44,
                "MaxLength": 44,
                "Description": format!("The CodeSha256 of the {role} handler's zip (base64 SHA-256, as `chatctl build` prints it): the version the live alias serves is published only for this code."),
            }),
        );
    }
    let names = name.names();
    let secret = names.secret_parameter();
    let body = json!({
        "AWSTemplateFormatVersion": "2010-09-09",
        "Description": format!(
            "chatctl {name}: serverless WebSocket chat backend, rendered from the model `chatctl deploy` applies. Needs CAPABILITY_NAMED_IAM and the SecureString parameter {secret}."
        ),
        "Metadata": {
            "chatctl": {
                "app": name.app,
                "stage": name.stage,
                "generator": format!("chatctl {}", env!("CARGO_PKG_VERSION")),
                "prerequisites": [
                    format!("The token secret, a SecureString of 64 hex digits that CloudFormation cannot create: aws ssm put-parameter --type SecureString --name {secret} --value \"$(openssl rand -hex 32)\""),
                    "CAPABILITY_NAMED_IAM: the roles have fixed names, scoped to this stage",
                ],
            }
        },
        "Parameters": parameters,
        "Resources": resources,
        "Outputs": template_outputs(name, env),
    });
    Ok(Template {
        body,
        logical_ids,
        omitted,
    })
}

fn template_outputs(name: &StackName, env: &Environment) -> Value {
    let Some(o) = outputs(name, env) else {
        return json!({});
    };
    let entries = [
        ("WebSocketUrl", "Where clients connect", o.websocket_url),
        (
            "ManagementEndpoint",
            "Where the backend posts to connections",
            o.management_endpoint,
        ),
        ("MessagesTable", "The messages table", o.messages_table),
        (
            "ConnectionsTable",
            "The connections table",
            o.connections_table,
        ),
        ("TopicArn", "The events topic", o.topic_arn),
        (
            "TokenSecretParameter",
            "The SSM parameter holding the token secret",
            o.token_secret_parameter,
        ),
    ];
    let map: Map<String, Value> = entries
        .into_iter()
        .map(|(key, description, value)| {
            (
                key.to_owned(),
                json!({ "Description": description, "Value": substitute(json!(value)) }),
            )
        })
        .collect();
    Value::Object(map)
}

struct Context<'a> {
    name: &'a StackName,
    stack: &'a DesiredStack,
}

/// `tags` as CloudFormation's usual list of `{Key, Value}`.
pub(crate) fn tag_list(tags: &Tags) -> Value {
    tags.iter()
        .map(|(k, v)| json!({ "Key": k, "Value": v }))
        .collect()
}

/// A resource of type `kind`, with the stage's names and ARNs turned into CloudFormation
/// substitutions.
pub(crate) fn cfn(kind: &str, properties: Value) -> Value {
    json!({ "Type": kind, "Properties": substitute(properties) })
}

impl Context<'_> {
    fn id_of(&self, kind: Kind, name: &str) -> String {
        logical_id(self.name, kind, name)
    }

    /// The CloudFormation resources of one model resource, as (logical id suffix, body). Each
    /// kind renders its own typed properties (crate::kinds), binding every field by name.
    fn resource(&self, r: &Resource) -> Result<Vec<(&'static str, Value)>, ExportError> {
        let api = api_logical_id(self.name);
        let one = |body| Ok(vec![("", body)]);
        // Permissions, mappings and subscriptions are named `{function or topic}/{…}`.
        let owner = r.name.split('/').next().unwrap_or_default();
        match &r.properties {
            Properties::Table(t) => one(t.cloudformation(&r.name)?),
            Properties::Topic(t) => one(t.cloudformation(&r.name)),
            Properties::Queue(q) => Ok(q.cloudformation(&r.name, &self.id_of(r.kind, &r.name))),
            Properties::Parameter(_) => Ok(vec![]),
            Properties::LogGroup(l) => one(l.cloudformation(&r.name)),
            Properties::Api(a) => one(a.cloudformation(&r.name)),
            Properties::Role(role) => {
                one(role.cloudformation(&r.name, &role_description(self.name)))
            }
            Properties::Function(f) => {
                let role = r
                    .name
                    .strip_prefix(&format!("{}-", self.name.prefix()))
                    .unwrap_or(&r.name);
                one(f.cloudformation(&r.name, &code_key_parameter(role)))
            }
            Properties::Alias(a) => {
                let function = r.name.split(':').next().unwrap_or_default();
                let role = function
                    .strip_prefix(&format!("{}-", self.name.prefix()))
                    .unwrap_or(function);
                Ok(a.cloudformation(
                    function,
                    &code_sha256_parameter(role),
                    &format!("{}Version", self.id_of(r.kind, &r.name)),
                ))
            }
            Properties::EventInvokeConfig(c) => one(c.cloudformation(&r.name)),
            // Triggers invoke the `live` alias.
            Properties::EventSourceMapping(m) => one(m.cloudformation(
                &placeholder_environment(self.name)
                    .arns()
                    .function(&live(owner)),
            )),
            Properties::Schedule(s) => one(s.cloudformation(&r.name)),
            Properties::Integration(i) => one(i.cloudformation(&api)),
            Properties::Route(route) => {
                let route_key = r.name.rsplit_once('/').map_or("", |(_, k)| k);
                let integration = route.integration().ok_or_else(|| ExportError::Shape {
                    kind: r.kind.label(),
                    name: r.name.clone(),
                    key: "target".into(),
                    expected: "integrations/{integration}",
                })?;
                one(route.cloudformation(
                    &api,
                    route_key,
                    &self.id_of(Kind::Integration, integration),
                ))
            }
            Properties::Stage(s) => one(s.cloudformation(&api, &self.name.stage)),
            Properties::Permission(p) => one(p.cloudformation(&live(owner))),
            Properties::Subscription(s) => one(s.cloudformation(&self.id_of(Kind::Topic, owner))),
        }
    }

    /// What resource `i` must wait for: every earlier resource (the model is in dependency order)
    /// whose name its own name or properties mention, its log group for a function (else Lambda may create it
    /// first, without retention, and the stack's LogGroup fails as existing), and every route for
    /// the stage (a WebSocket stage deploys only an API that has routes). Roles wait for nothing:
    /// a policy may name resources that do not exist yet.
    fn depends_on(&self, i: usize) -> BTreeSet<usize> {
        let resources = &self.stack.resources;
        let r = &resources[i];
        let mut deps = BTreeSet::new();
        if r.kind == Kind::Role {
            return deps;
        }
        // Its own name counts: a permission or an event-invoke config names its function so.
        let mut texts: Vec<&str> = r.name.split('/').collect();
        let fields = r.fields();
        for v in fields.values() {
            strings(v, &mut texts);
        }
        for (j, other) in resources.iter().enumerate().take(i) {
            let mentioned = texts.iter().any(|t| mentions(t, &other.name));
            let log_group = r.kind == Kind::Function
                && other.kind == Kind::LogGroup
                && other.name == format!("/aws/lambda/{}", r.name);
            let route = r.kind == Kind::Stage && other.kind == Kind::Route;
            // A permission or mapping names its function, not the alias it is attached to.
            let needed = r.needs.contains(&(other.kind, other.name.clone()));
            if mentioned || log_group || route || needed {
                deps.insert(j);
            }
        }
        deps
    }
}

/// What CloudFormation does with a stateful resource when the stack is deleted or the resource
/// replaced. The tables keep the chat history: a stack deletion has no confirmation prompt (unlike
/// `chatctl destroy`), so they outlive it — delete them by hand to drop the data. Queues and log
/// groups hold only transient events and logs, and go with the stack.
fn deletion_policy(kind: Kind) -> Option<&'static str> {
    match kind {
        Kind::Table => Some("Retain"),
        Kind::Queue | Kind::LogGroup => Some("Delete"),
        _ => None,
    }
}

/// Whether `text` names `name` as a whole (not as the start of a longer name: `…-fanout` is not
/// mentioned by `…-fanout-dlq`).
fn mentions(text: &str, name: &str) -> bool {
    let is_name_char = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '_';
    text.match_indices(name).any(|(at, _)| {
        let before = text[..at].chars().next_back();
        let after = text[at + name.len()..].chars().next();
        !before.is_some_and(is_name_char) && !after.is_some_and(is_name_char)
    })
}

fn strings<'v>(v: &'v Value, out: &mut Vec<&'v str>) {
    match v {
        Value::String(s) => out.push(s),
        Value::Array(items) => items.iter().for_each(|i| strings(i, out)),
        Value::Object(map) => map.values().for_each(|i| strings(i, out)),
        _ => {}
    }
}

/// The logical ids a rendered body already depends on through `Ref` and `Fn::Sub` (a DependsOn
/// on those is redundant, and cfn-lint says so).
fn references(v: &Value) -> BTreeSet<String> {
    fn walk(v: &Value, out: &mut BTreeSet<String>) {
        match v {
            Value::Object(map) => {
                if let Some(Value::String(id)) = map.get("Ref") {
                    out.insert(id.clone());
                }
                if let Some(Value::String(s)) = map.get("Fn::Sub") {
                    for part in s.split("${").skip(1) {
                        if let Some((var, _)) = part.split_once('}')
                            && !var.contains("::")
                        {
                            out.insert(var.to_owned());
                        }
                    }
                }
                map.values().for_each(|i| walk(i, out));
            }
            Value::Array(items) => items.iter().for_each(|i| walk(i, out)),
            _ => {}
        }
    }
    let mut out = BTreeSet::new();
    walk(v, &mut out);
    out
}

/// Every string holding a `${…}` placeholder becomes an `Fn::Sub` of itself.
fn substitute(v: Value) -> Value {
    match v {
        Value::String(s) if s.contains("${") => json!({ "Fn::Sub": s }),
        Value::Array(items) => Value::Array(items.into_iter().map(substitute).collect()),
        Value::Object(map) => {
            // An intrinsic function already built (Ref, Fn::Sub) stays as it is.
            if map.len() == 1 && map.keys().any(|k| k == "Ref" || k.starts_with("Fn::")) {
                return Value::Object(map);
            }
            Value::Object(map.into_iter().map(|(k, v)| (k, substitute(v))).collect())
        }
        other => other,
    }
}

/// `api` → `Api`, `fanout-dlq` → `FanoutDlq`, `$connect` → `Connect`.
fn camel(text: &str) -> String {
    text.split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(|w| {
            let mut chars = w.chars();
            chars.next().map_or_else(String::new, |c| {
                c.to_ascii_uppercase().to_string() + chars.as_str()
            })
        })
        .collect()
}

/// A resource's logical id, from its kind and name: `{app}-{stage}-` dropped from each part of
/// the name, the rest in CamelCase, then the kind (`chat-prod-fanout-dlq` → `FanoutDlqQueue`,
/// `chat-prod-api/$connect` → `ApiConnectRoute`). Unique because names are unique per kind.
pub fn logical_id(name: &StackName, kind: Kind, resource: &str) -> String {
    let prefix = format!("{}-", name.prefix());
    let body: String = resource
        .trim_start_matches("/aws/lambda/")
        .split('/')
        .map(|part| camel(part.strip_prefix(&prefix).unwrap_or(part)))
        .collect();
    let suffix = camel(&format!("{kind:?}"));
    if body.ends_with(&suffix) {
        body
    } else {
        body + &suffix
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Format::Json => "json",
            Format::Yaml => "yaml",
        })
    }
}

/// YAML in block style over a JSON value. Every string and key is written as a JSON string,
/// which is a valid YAML double-quoted scalar, so nothing is ever re-typed (`"on"`, `"0755"`,
/// `"$default"` stay strings) and no escaping rules beyond JSON's are needed.
pub fn yaml(v: &Value) -> String {
    let mut out = String::new();
    match v {
        Value::Object(map) if !map.is_empty() => yaml_map(map, 0, &mut out),
        Value::Array(items) if !items.is_empty() => yaml_list(items, 0, &mut out),
        scalar => {
            out.push_str(&yaml_scalar(scalar));
            out.push('\n');
        }
    }
    out
}

fn yaml_scalar(v: &Value) -> String {
    match v {
        Value::Object(_) => "{}".into(),
        Value::Array(_) => "[]".into(),
        // serde_json's string escaping is YAML's double-quoted escaping for these characters.
        other => other.to_string(),
    }
}

fn is_block(v: &Value) -> bool {
    match v {
        Value::Object(m) => !m.is_empty(),
        Value::Array(a) => !a.is_empty(),
        _ => false,
    }
}

fn yaml_map(map: &Map<String, Value>, indent: usize, out: &mut String) {
    for (i, (key, value)) in map.iter().enumerate() {
        // The first key of a list item continues the `- ` line.
        if i > 0 || indent == 0 || !out.ends_with("- ") {
            out.push_str(&" ".repeat(indent));
        }
        out.push_str(&Value::String(key.clone()).to_string());
        out.push(':');
        yaml_value(value, indent + 2, out);
    }
}

fn yaml_list(items: &[Value], indent: usize, out: &mut String) {
    for item in items {
        out.push_str(&" ".repeat(indent));
        match item {
            Value::Object(m) if !m.is_empty() => {
                out.push_str("- ");
                yaml_map(m, indent + 2, out);
            }
            Value::Array(a) if !a.is_empty() => {
                out.push_str("-\n");
                yaml_list(a, indent + 2, out);
            }
            scalar => {
                out.push_str("- ");
                out.push_str(&yaml_scalar(scalar));
                out.push('\n');
            }
        }
    }
}

fn yaml_value(value: &Value, indent: usize, out: &mut String) {
    if is_block(value) {
        out.push('\n');
        match value {
            Value::Object(m) => yaml_map(m, indent, out),
            Value::Array(a) => yaml_list(a, indent, out),
            _ => {}
        }
    } else {
        out.push(' ');
        out.push_str(&yaml_scalar(value));
        out.push('\n');
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stage() -> StackName {
        StackName::new("chat", "prod").unwrap()
    }

    fn sample() -> Template {
        template(&stage(), &StageSettings::default()).unwrap()
    }

    #[test]
    fn logical_ids_read_well_and_are_unique_and_alphanumeric() {
        let name = stage();
        assert_eq!(
            logical_id(&name, Kind::Queue, "chat-prod-fanout-dlq"),
            "FanoutDlqQueue"
        );
        assert_eq!(
            logical_id(&name, Kind::Route, "chat-prod-api/$connect"),
            "ApiConnectRoute"
        );
        assert_eq!(logical_id(&name, Kind::Api, "chat-prod-api"), "Api");
        assert_eq!(logical_id(&name, Kind::Role, "chat-prod-ws-role"), "WsRole");
        assert_eq!(
            logical_id(&name, Kind::LogGroup, "/aws/lambda/chat-prod-ws"),
            "WsLogGroup"
        );
        let t = sample();
        let all: Vec<&String> = t.logical_ids.values().flatten().collect();
        let unique: BTreeSet<&String> = all.iter().copied().collect();
        assert_eq!(all.len(), unique.len(), "{all:?}");
        assert_eq!(all.len(), t.resource_count());
        for id in all {
            assert!(
                !id.is_empty() && id.chars().all(|c| c.is_ascii_alphanumeric()) && id.len() <= 255,
                "{id}"
            );
        }
    }

    #[test]
    fn every_model_resource_has_a_counterpart_except_the_secret() {
        let name = stage();
        let stack = desired(
            &name,
            &StageSettings::default(),
            &placeholder_environment(&name),
            &Code {
                ws_sha256: String::new(),
                fanout_sha256: String::new(),
            },
        );
        let t = sample();
        for r in &stack.resources {
            let ids = t.logical_ids.get(&(r.kind, r.name.clone()));
            if r.kind == Kind::Parameter {
                assert!(ids.is_none());
                assert_eq!(t.omitted.len(), 1);
                assert_eq!(t.omitted[0].name, r.name);
            } else {
                let ids = ids.unwrap_or_else(|| panic!("{:?} {} missing", r.kind, r.name));
                assert!(t.body["Resources"][&ids[0]].is_object());
            }
        }
    }

    /// A property the export does not render cannot exist (each kind binds every field by
    /// name); what is left to fail at run time is a value of a shape no template can take.
    #[test]
    fn a_model_value_of_the_wrong_shape_fails_the_export() {
        let name = stage();
        let env = placeholder_environment(&name);
        let code = Code {
            ws_sha256: String::new(),
            fanout_sha256: String::new(),
        };
        let model = desired(&name, &StageSettings::default(), &env, &code);
        let broken = |kind: Kind, edit: &dyn Fn(&mut Properties)| {
            let mut stack = model.clone();
            // The last of the kind: the connections table, which has an index.
            let r = stack
                .resources
                .iter_mut()
                .rfind(|r| r.kind == kind)
                .unwrap();
            edit(&mut r.properties);
            render_stack(&stack, &env).unwrap_err()
        };
        let err = broken(Kind::Table, &|p| {
            p.table_mut().unwrap().keys.pop();
        });
        assert!(
            matches!(&err, ExportError::Shape { key, .. } if key == "keys"),
            "{err}"
        );
        let err = broken(Kind::Table, &|p| {
            p.table_mut().unwrap().indexes[0].projection = None;
        });
        assert!(
            matches!(&err, ExportError::Shape { key, .. } if key == "indexes"),
            "{err}"
        );
        let err = broken(Kind::Route, &|p| {
            p.route_mut().unwrap().target = "arn:aws:lambda:somewhere".into();
        });
        assert!(
            matches!(&err, ExportError::Shape { key, .. } if key == "target"),
            "{err}"
        );
    }

    #[test]
    fn names_and_arns_are_substituted_not_hard_coded() {
        let text = sample().render(Format::Json);
        assert!(!text.contains("arn:aws:"), "a hard-coded partition");
        // The only literal `amazonaws.com` are service principals (`"lambda.amazonaws.com"`),
        // which keep that spelling in every partition; hosts use `${AWS::URLSuffix}`.
        for (at, _) in text.match_indices("amazonaws.com") {
            let before = &text[..at];
            let start = before.rfind('"').unwrap();
            let service = &before[start + 1..];
            assert!(
                service.ends_with('.')
                    && service[..service.len() - 1]
                        .chars()
                        .all(|c| c.is_ascii_lowercase() || c == '-')
                    && text[at + "amazonaws.com".len()..].starts_with('"'),
                "a hard-coded DNS suffix after {service:?}"
            );
        }
        assert!(!text.contains("123456789012"));
        let body = sample().body;
        let role = &body["Resources"]["WsFunction"]["Properties"]["Role"];
        assert_eq!(
            role,
            &json!({ "Fn::Sub": "arn:${AWS::Partition}:iam::${AWS::AccountId}:role/chat-prod-ws-role" })
        );
    }

    #[test]
    fn dependencies_follow_the_model_and_skip_what_refs_imply() {
        let body = sample().body;
        let deps = |id: &str| body["Resources"][id]["DependsOn"].clone();
        // The function waits for its role (named by ARN in a Sub, not a Ref) and its log group.
        let ws = deps("WsFunction");
        for id in ["WsRole", "WsLogGroup", "MessagesTable", "ConnectionsTable"] {
            assert!(ws.as_array().unwrap().contains(&json!(id)), "{ws}");
        }
        // The redrive policy names the dead-letter queue.
        assert!(
            deps("PresenceQueue")
                .as_array()
                .unwrap()
                .contains(&json!("FanoutDlqQueue"))
        );
        // Refs already order these.
        assert_eq!(deps("ApiConnectRoute"), Value::Null);
        assert_eq!(deps("WsRole"), Value::Null);
        assert_eq!(deps("ApiProdStage").as_array().unwrap().len(), 10);
    }

    #[test]
    fn yaml_is_block_style_with_json_strings() {
        let v = json!({ "a": { "b": [1, "on", { "c": null, "d": [] }, ["x"]] }, "e": {} });
        assert_eq!(
            yaml(&v),
            "\"a\":\n  \"b\":\n    - 1\n    - \"on\"\n    - \"c\": null\n      \"d\": []\n    -\n      - \"x\"\n\"e\": {}\n"
        );
    }

    #[test]
    fn the_template_is_stable() {
        insta::assert_snapshot!(sample().render(Format::Yaml));
    }
}
