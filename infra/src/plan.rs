//! Plan: a pure function from (desired, observed) to the ordered actions that make the observed
//! state the desired one — create, update (with the changed fields), replace, delete, or keep.
//! Creates, updates and replaces follow dependency order; deletes come last, in reverse. The plan
//! is data: it prints as a diff, serialises as JSON, and apply executes it one action at a time.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::Serialize;
use serde_json::Value;

use crate::kinds::Properties;
use crate::stack::{
    Code, DesiredStack, Environment, KNOWN_AFTER_APPLY, Kind, StackName, StageSettings, desired,
};

/// What exists now, as read from AWS: each resource of the stage by kind and name, with the same
/// property names the stack model uses.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Observed {
    pub resources: BTreeMap<(Kind, String), Properties>,
    /// The ids AWS assigned, for resources that are addressed by id rather than by name: the API,
    /// its integration, routes and stage, the subscription's ARN. Apply needs them; plan does not.
    pub ids: BTreeMap<(Kind, String), String>,
}

/// One field that differs.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FieldChange {
    pub field: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from: Option<Value>,
    pub to: Value,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "change", rename_all = "kebab-case")]
pub enum Change {
    Create,
    Update { fields: Vec<FieldChange> },
    Replace { fields: Vec<FieldChange> },
    Delete,
    Keep,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Action {
    pub kind: Kind,
    pub name: String,
    #[serde(flatten)]
    pub change: Change,
    /// Why, when the change is not this resource's own: e.g. replaced along with its API.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cause: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Plan {
    pub stack: String,
    pub actions: Vec<Action>,
}

/// Counts per change, for summaries and exit codes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Summary {
    pub create: usize,
    pub update: usize,
    pub replace: usize,
    pub delete: usize,
    pub keep: usize,
}

impl Change {
    /// `create`, `update`, `replace`, `delete` or `keep`.
    pub fn label(&self) -> &'static str {
        match self {
            Change::Create => "create",
            Change::Update { .. } => "update",
            Change::Replace { .. } => "replace",
            Change::Delete => "delete",
            Change::Keep => "keep",
        }
    }
}

impl Plan {
    pub fn summary(&self) -> Summary {
        let mut s = Summary::default();
        for a in &self.actions {
            match a.change {
                Change::Create => s.create += 1,
                Change::Update { .. } => s.update += 1,
                Change::Replace { .. } => s.replace += 1,
                Change::Delete => s.delete += 1,
                Change::Keep => s.keep += 1,
            }
        }
        s
    }

    pub fn has_changes(&self) -> bool {
        self.actions.iter().any(|a| a.change != Change::Keep)
    }
}

fn differs(desired: &Value, observed: Option<&Value>) -> bool {
    // A value AWS assigns later cannot be compared yet: it will change when it is known.
    if desired.to_string().contains(KNOWN_AFTER_APPLY) {
        return true;
    }
    observed != Some(desired)
}

/// The actions that turn `observed` into `desired`.
pub fn plan(desired: &DesiredStack, observed: &Observed) -> Plan {
    let mut actions = Vec::with_capacity(desired.resources.len());
    let mut wanted = BTreeSet::new();
    for resource in &desired.resources {
        wanted.insert((resource.kind, resource.name.clone()));
        let change = match observed
            .resources
            .get(&(resource.kind, resource.name.clone()))
        {
            None => Change::Create,
            Some(current) => {
                let current = current.fields();
                let fields: Vec<FieldChange> = resource
                    .fields()
                    .into_iter()
                    .filter(|(field, value)| differs(value, current.get(field)))
                    .map(|(field, value)| FieldChange {
                        from: current.get(&field).cloned(),
                        field,
                        to: value,
                    })
                    .collect();
                if fields.is_empty() {
                    Change::Keep
                } else if fields
                    .iter()
                    .any(|f| resource.replace_on.contains(&f.field.as_str()))
                {
                    Change::Replace { fields }
                } else {
                    Change::Update { fields }
                }
            }
        };
        actions.push(Action {
            kind: resource.kind,
            name: resource.name.clone(),
            change,
            cause: None,
        });
    }
    // What the stage has but no longer wants goes last, dependents first.
    let mut orphans: Vec<&(Kind, String)> = observed
        .resources
        .keys()
        .filter(|key| !wanted.contains(*key))
        .collect();
    orphans.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
    actions.extend(orphans.into_iter().map(|(kind, name)| Action {
        kind: *kind,
        name: name.clone(),
        change: Change::Delete,
        cause: None,
    }));
    Plan {
        stack: desired.name.to_string(),
        actions,
    }
}

/// Shown as a function's code when the plan has no build to compare: what deploy will upload.
pub const CODE_FROM_BUILD: &str = "(from the build at deploy)";

/// The code as deployed, for planning without a build: each function's `CodeSha256` as AWS
/// reports it, so only code changes go unplanned; a function that does not exist yet gets
/// [`CODE_FROM_BUILD`].
pub fn with_deployed_code(name: &StackName, observed: &Observed) -> Code {
    let names = name.names();
    let deployed = |role: &str| {
        observed
            .resources
            .get(&(Kind::Function, names.function(role)))
            .and_then(Properties::function)
            .and_then(|f| f.code_sha256.as_deref())
            .unwrap_or(CODE_FROM_BUILD)
            .to_owned()
    };
    Code {
        ws_sha256: deployed("ws"),
        fanout_sha256: deployed("fanout"),
    }
}

/// Plan a stage from its inputs. Like [`plan`], and when the WebSocket API must be replaced,
/// everything that lives inside it (integration, routes, stage) is replaced with it, and every value
/// that names the API's id (permissions, policies, the management endpoint) is planned as known
/// after apply, because the new API gets a new id.
pub fn plan_stage(
    name: &StackName,
    settings: &StageSettings,
    env: &Environment,
    code: &Code,
    observed: &Observed,
) -> Plan {
    let first = plan(&desired(name, settings, env, code), observed);
    let api = name.names().api();
    let api_replaced = first
        .actions
        .iter()
        .any(|a| a.kind == Kind::Api && matches!(a.change, Change::Replace { .. }));
    if !api_replaced {
        return first;
    }
    let fresh = Environment {
        api_id: None,
        api_endpoint: None,
        ..env.clone()
    };
    let mut second = plan(&desired(name, settings, &fresh, code), observed);
    for action in &mut second.actions {
        let inside = matches!(action.kind, Kind::Integration | Kind::Route | Kind::Stage)
            && action.name.starts_with(&format!("{api}/"));
        if !inside {
            continue;
        }
        let fields = match &action.change {
            Change::Keep => Vec::new(),
            Change::Update { fields } => fields.clone(),
            Change::Create | Change::Replace { .. } | Change::Delete => continue,
        };
        action.change = Change::Replace { fields };
        action.cause = Some(format!("{} {api} is replaced", Kind::Api.label()));
    }
    second
}

impl Plan {
    /// Tables the plan would delete and create again: that loses their data.
    pub fn replaced_tables(&self) -> Vec<&str> {
        self.actions
            .iter()
            .filter(|a| a.kind == Kind::Table && matches!(a.change, Change::Replace { .. }))
            .map(|a| a.name.as_str())
            .collect()
    }
}

fn short(v: &Value) -> String {
    let text = v.to_string();
    if text.chars().count() > 100 {
        format!("{}…", text.chars().take(99).collect::<String>())
    } else {
        text
    }
}

impl fmt::Display for Plan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = self.summary();
        if !self.has_changes() {
            return write!(
                f,
                "stack {}: no changes ({} resources up to date)",
                self.stack, s.keep
            );
        }
        writeln!(f, "stack {}:", self.stack)?;
        for a in &self.actions {
            let (mark, fields) = match &a.change {
                Change::Keep => continue,
                Change::Create => ("+", None),
                Change::Delete => ("-", None),
                Change::Update { fields } => ("~", Some(fields)),
                Change::Replace { fields } => ("-/+", Some(fields)),
            };
            writeln!(f, "  {mark:<3} {} {}", a.kind.label(), a.name)?;
            if let Some(cause) = &a.cause {
                writeln!(f, "        (because {cause})")?;
            }
            for field in fields.into_iter().flatten() {
                match &field.from {
                    Some(from) => writeln!(
                        f,
                        "        {}: {} -> {}",
                        field.field,
                        short(from),
                        short(&field.to)
                    )?,
                    None => writeln!(f, "        {}: (none) -> {}", field.field, short(&field.to))?,
                }
            }
        }
        write!(
            f,
            "{} to create, {} to update, {} to replace, {} to delete, {} unchanged",
            s.create, s.update, s.replace, s.delete, s.keep
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stack(settings: &StageSettings, code: &Code, api_id: Option<&str>) -> DesiredStack {
        desired(
            &StackName::new("chat", "prod").unwrap(),
            settings,
            &match api_id {
                Some(id) => Environment::new("123456789012", "eu-west-1").with_api(id),
                None => Environment::new("123456789012", "eu-west-1"),
            },
            code,
        )
    }

    fn code() -> Code {
        Code {
            ws_sha256: "d3MtdjE=".into(),
            fanout_sha256: "ZmFub3V0LXYx".into(),
        }
    }

    /// What AWS would report after applying `desired` exactly.
    fn observed_as(desired: &DesiredStack) -> Observed {
        Observed {
            resources: desired
                .resources
                .iter()
                .map(|r| ((r.kind, r.name.clone()), r.properties.clone()))
                .collect(),
            ids: BTreeMap::new(),
        }
    }

    #[test]
    fn from_nothing_everything_is_created_in_dependency_order() {
        let plan = plan(
            &stack(&StageSettings::default(), &code(), None),
            &Observed::default(),
        );
        assert!(plan.actions.iter().all(|a| a.change == Change::Create));
        insta::assert_snapshot!(plan.to_string());
    }

    #[test]
    fn an_unchanged_stack_plans_no_changes() {
        let desired = stack(&StageSettings::default(), &code(), Some("a1b2c3d4e5"));
        let plan = plan(&desired, &observed_as(&desired));
        assert!(!plan.has_changes());
        assert_eq!(
            plan.to_string(),
            "stack chat/prod: no changes (35 resources up to date)"
        );
    }

    #[test]
    fn a_code_change_updates_only_that_functions_code() {
        let before = stack(&StageSettings::default(), &code(), Some("a1b2c3d4e5"));
        let new_code = Code {
            ws_sha256: "d3MtdjI=".into(),
            ..code()
        };
        let plan = plan(
            &stack(&StageSettings::default(), &new_code, Some("a1b2c3d4e5")),
            &observed_as(&before),
        );
        let changed: Vec<_> = plan
            .actions
            .iter()
            .filter(|a| a.change != Change::Keep)
            .collect();
        // The code, then the release: a new version behind the `live` alias.
        assert_eq!(changed.len(), 2);
        assert_eq!(changed[0].name, "chat-prod-ws");
        assert_eq!(
            (changed[1].kind, changed[1].name.as_str()),
            (Kind::Alias, "chat-prod-ws:live")
        );
        insta::assert_snapshot!(plan.to_string());
        insta::assert_json_snapshot!(changed[0]);
    }

    #[test]
    fn a_setting_change_updates_only_that_resource() {
        let before = stack(&StageSettings::default(), &code(), Some("a1b2c3d4e5"));
        let settings = StageSettings {
            log_retention_days: 30,
            ..StageSettings::default()
        };
        let plan = plan(
            &stack(&settings, &code(), Some("a1b2c3d4e5")),
            &observed_as(&before),
        );
        let s = plan.summary();
        assert_eq!(
            (s.update, s.create, s.replace, s.delete),
            (2, 0, 0, 0),
            "{plan}"
        );
        assert!(
            plan.to_string().contains("retentionDays: 14 -> 30"),
            "{plan}"
        );
    }

    #[test]
    fn immutable_fields_replace_and_orphans_are_deleted_last() {
        let desired = stack(&StageSettings::default(), &code(), Some("a1b2c3d4e5"));
        let mut observed = observed_as(&desired);
        let table = observed
            .resources
            .get_mut(&(Kind::Table, "chat-prod-messages".to_owned()))
            .and_then(Properties::table_mut)
            .unwrap();
        table.keys = vec!["id".into()];
        let old_table = Properties::Table(table.clone());
        let ws = observed
            .resources
            .get_mut(&(Kind::Function, "chat-prod-ws".to_owned()))
            .and_then(Properties::function_mut)
            .unwrap();
        ws.architecture = Some("x86_64".into());
        observed.resources.insert(
            (Kind::Route, "chat-prod-api/typing".into()),
            crate::kinds::Route {
                target: "integrations/chat-prod-api/ws".into(),
            }
            .into(),
        );
        observed
            .resources
            .insert((Kind::Table, "chat-prod-old".into()), old_table);
        let plan = plan(&desired, &observed);
        insta::assert_snapshot!(plan.to_string());
        let s = plan.summary();
        assert_eq!(
            (s.replace, s.update, s.delete),
            (1, 1, 2),
            "keys replace, architecture updates in place"
        );
        let last: Vec<_> = plan
            .actions
            .iter()
            .rev()
            .take(2)
            .map(|a| (a.kind, a.change.clone()))
            .collect();
        assert_eq!(
            last,
            [(Kind::Table, Change::Delete), (Kind::Route, Change::Delete)]
        );
    }

    #[test]
    fn replacing_the_api_replaces_what_lives_in_it_and_what_names_its_id() {
        let name = StackName::new("chat", "prod").unwrap();
        let env = Environment::new("123456789012", "eu-west-1").with_api("a1b2c3d4e5");
        let settings = StageSettings::default();
        let desired = desired(&name, &settings, &env, &code());
        let mut observed = observed_as(&desired);
        observed
            .resources
            .get_mut(&(Kind::Api, "chat-prod-api".to_owned()))
            .and_then(Properties::api_mut)
            .unwrap()
            .protocol = Some("HTTP".into());
        let plan = plan_stage(&name, &settings, &env, &code(), &observed);
        let change = |kind: Kind, name: &str| {
            plan.actions
                .iter()
                .find(|a| a.kind == kind && a.name == name)
                .map(|a| (a.change.label(), a.cause.is_some()))
                .unwrap()
        };
        assert_eq!(change(Kind::Api, "chat-prod-api"), ("replace", false));
        assert_eq!(
            change(Kind::Integration, "chat-prod-api/ws"),
            ("replace", true)
        );
        assert_eq!(change(Kind::Route, "chat-prod-api/send"), ("replace", true));
        assert_eq!(change(Kind::Stage, "chat-prod-api/prod"), ("replace", true));
        // The new API has a new id: the invoke permission and the endpoint follow it.
        assert_eq!(
            change(Kind::Permission, "chat-prod-ws/apigateway"),
            ("replace", false)
        );
        assert_eq!(change(Kind::Function, "chat-prod-ws"), ("update", false));
        assert_eq!(change(Kind::Role, "chat-prod-ws-role"), ("update", false));
        assert_eq!(change(Kind::Table, "chat-prod-messages"), ("keep", false));
        assert!(
            plan.to_string()
                .contains("(because websocket api chat-prod-api is replaced)")
        );
    }

    #[test]
    fn the_plan_serialises_for_scripts() {
        let desired = stack(&StageSettings::default(), &code(), None);
        let plan = plan(&desired, &Observed::default());
        let json = serde_json::to_value(&plan).unwrap();
        assert_eq!(
            json["actions"][0],
            serde_json::json!({"kind":"table","name":"chat-prod-messages","change":"create"})
        );
        assert_eq!(serde_json::to_value(plan.summary()).unwrap()["create"], 35);
    }
}
