//! Every IAM statement chatctl renders — role policies, trust policies and the presence queue's
//! resource policy, in the direct deployer's model and in the CloudFormation export — is scoped:
//! no `*` action, no `*` principal, and every resource names this stage's own resources. The
//! only wildcards are the ones AWS's resource formats require, each listed in [`WILDCARDS`] with
//! why.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use chatctl_infra::cloudformation::template;
use chatctl_infra::stack::{Code, Environment, StackName, StageSettings, desired};
use serde_json::Value;

/// Resource ARNs that end in a wildcard, and why AWS leaves no narrower form.
const WILDCARDS: &[(&str, &str)] = &[
    // CreateLogStream/PutLogEvents act on log streams, whose names Lambda picks at run time
    // (`2024/01/01/[$LATEST]abc…`): the log group's ARN with `:*` is the narrowest grant.
    (
        ":log-group:/aws/lambda/chat-prod-",
        "log streams of the function's own log group",
    ),
    // ManageConnections on `{api}/{stage}/POST/@connections/{connectionId}`: connection ids are
    // minted per connection by API Gateway, so the id is the wildcard (method and stage are not).
    (
        "/prod/POST/@connections/*",
        "any connection of this stage's API",
    ),
    (
        "/prod/GET/@connections/*",
        "the sweep's probes of this stage's connections",
    ),
    (
        "/prod/DELETE/@connections/*",
        "the sweep's closes of this stage's connections",
    ),
];

fn stage() -> StackName {
    StackName::new("chat", "prod").unwrap()
}

/// Every policy document (an object with a `Statement` array) anywhere in `value`.
fn policies<'a>(value: &'a Value, found: &mut Vec<&'a Value>) {
    match value {
        Value::Object(map) => {
            if map.get("Statement").is_some_and(Value::is_array) {
                found.push(value);
            }
            map.values().for_each(|v| policies(v, found));
        }
        Value::Array(items) => items.iter().for_each(|v| policies(v, found)),
        _ => {}
    }
}

fn as_list(v: &Value) -> Vec<&Value> {
    match v {
        Value::Array(items) => items.iter().collect(),
        Value::Null => vec![],
        one => vec![one],
    }
}

/// No statement allows every action of a service, or every principal.
fn check_actions_and_principals(where_: &str, statement: &Value) {
    for action in as_list(&statement["Action"]) {
        let action = action.as_str().unwrap();
        assert!(
            action != "*" && !action.ends_with(":*") && !action.contains('*'),
            "{where_}: action {action} is a wildcard"
        );
    }
    assert!(
        statement.get("NotAction").is_none() && statement.get("NotResource").is_none(),
        "{where_}: NotAction/NotResource grant everything else: {statement}"
    );
    if let Some(principal) = statement.get("Principal") {
        assert_ne!(principal, "*", "{where_}: any principal");
        for service in as_list(&principal["Service"]) {
            assert!(
                service.as_str().unwrap().ends_with(".amazonaws.com"),
                "{where_}: {service}"
            );
        }
        assert!(principal.get("AWS").is_none(), "{where_}: {principal}");
    }
}

fn allowed_wildcard(arn: &str) -> bool {
    WILDCARDS.iter().any(|(needle, _)| arn.contains(needle))
}

#[test]
fn every_statement_of_the_deployed_model_names_this_stages_resources() {
    let stack = desired(
        &stage(),
        &StageSettings::default(),
        &Environment::new("123456789012", "eu-west-1").with_api("a1b2c3d4e5"),
        &Code {
            ws_sha256: "d3M=".into(),
            fanout_sha256: "ZmFub3V0".into(),
        },
    );
    let mut statements = 0;
    let mut wildcards = 0;
    for resource in &stack.resources {
        let fields = serde_json::to_value(resource.fields()).unwrap();
        let mut found = vec![];
        policies(&fields, &mut found);
        for policy in found {
            for statement in policy["Statement"].as_array().unwrap() {
                statements += 1;
                let where_ = format!("{} {}", resource.kind.label(), resource.name);
                check_actions_and_principals(&where_, statement);
                for arn in as_list(&statement["Resource"]) {
                    let arn = arn.as_str().unwrap();
                    assert!(
                        arn.starts_with("arn:aws:")
                            && (arn.contains("chat-prod")
                                || arn.contains(":a1b2c3d4e5/prod/")
                                || arn.ends_with(":parameter/chatctl/chat/prod/token-secret")),
                        "{where_}: {arn} is not one of this stage's resources"
                    );
                    assert!(!arn.contains(":*:"), "{where_}: {arn}");
                    if arn.contains('*') {
                        assert!(allowed_wildcard(arn), "{where_}: {arn} is a wildcard");
                        wildcards += 1;
                    }
                }
            }
        }
    }
    // Two roles' policies, two trust policies, the scheduler's, the queue policy: not vacuous.
    assert!(statements >= 15, "only {statements} statements found");
    assert!(
        wildcards > 0 && wildcards <= 6,
        "{wildcards} wildcard resources"
    );
}

/// In the template, resources are `Fn::Sub` strings, `Ref`s and `Fn::GetAtt`s of the template's
/// own resources; a literal ARN or `*` there would grant beyond the stack.
#[test]
fn every_statement_of_the_cloudformation_template_names_the_stacks_resources() {
    let t = template(&stage(), &StageSettings::default()).unwrap();
    let logical: Vec<&String> = t.logical_ids.values().flatten().collect();
    let names_own = |text: &str| {
        text.contains("chat-prod")
            // The token secret: the stage's, though made before the stack (a SecureString).
            || text.ends_with(":parameter/chatctl/chat/prod/token-secret")
            || logical
                .iter()
                .any(|id| text.contains(&format!("${{{id}}}")) || text.contains(&format!("${{{id}.")))
    };
    let mut found = vec![];
    policies(&t.body, &mut found);
    let mut statements = 0;
    for policy in found {
        for statement in policy["Statement"].as_array().unwrap() {
            statements += 1;
            check_actions_and_principals("template", statement);
            for resource in as_list(&statement["Resource"]) {
                match resource {
                    Value::String(s) => panic!("a literal resource in the template: {s}"),
                    Value::Object(o) if o.contains_key("Ref") || o.contains_key("Fn::GetAtt") => {
                        let target = o
                            .get("Ref")
                            .or_else(|| o.get("Fn::GetAtt").and_then(|g| g.get(0)))
                            .and_then(Value::as_str)
                            .unwrap();
                        assert!(
                            logical.iter().any(|id| *id == target),
                            "{target} is not a resource of the stack"
                        );
                    }
                    Value::Object(o) => {
                        let sub = o["Fn::Sub"]
                            .as_str()
                            .unwrap_or_else(|| panic!("{resource}"));
                        assert!(names_own(sub), "{sub} names nothing of the stack");
                        if sub.contains('*') {
                            assert!(allowed_wildcard(sub), "{sub} is a wildcard");
                        }
                    }
                    other => panic!("unexpected resource {other}"),
                }
            }
        }
    }
    assert!(statements >= 15, "only {statements} statements found");
}
