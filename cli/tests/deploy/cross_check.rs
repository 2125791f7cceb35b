//! The CloudFormation export checked against what the direct deploy created in moto: every
//! resource of the stage has its counterpart in the template, with the same names, keys, indexes,
//! TTL, policies, routes and settings. The template is resolved the way CloudFormation would
//! (pseudo parameters, `Ref`, `Fn::Sub`) with the real account, region, API and integration ids;
//! the deployed side is read with plain SDK clients straight from moto, each answer rewritten into
//! the template's property shape, and the two compared as JSON.
//!
//! What moto cannot answer is left out here and said so: API Gateway v2 stores no
//! `DefaultRouteSettings` throttles (its UpdateStage answers 500; the throttles are covered by
//! the plan's snapshots and cfn-lint's schema check), and tags are compared by tests/deploy.rs.

use std::collections::{BTreeMap, BTreeSet};

use aws_config::SdkConfig;
use serde_json::{Value, json};

use super::{subscriptions_of, url_decode};

/// What CloudFormation would substitute: pseudo parameters and the `Ref` of logical ids.
pub struct Vars(pub BTreeMap<String, String>);

impl Vars {
    fn get(&self, name: &str) -> String {
        self.0.get(name).cloned().unwrap_or_else(|| {
            panic!("the template refers to {name}, which the test cannot resolve")
        })
    }

    /// The value CloudFormation would pass to the resource's API.
    pub fn resolve(&self, v: &Value) -> Value {
        match v {
            Value::Object(map) if map.len() == 1 && map.contains_key("Ref") => {
                json!(self.get(map["Ref"].as_str().unwrap()))
            }
            Value::Object(map) if map.len() == 1 && map.contains_key("Fn::Sub") => {
                let text = map["Fn::Sub"].as_str().unwrap();
                let mut out = String::new();
                let mut rest = text;
                while let Some(at) = rest.find("${") {
                    out.push_str(&rest[..at]);
                    let end = rest[at..].find('}').unwrap() + at;
                    out.push_str(&self.get(&rest[at + 2..end]));
                    rest = &rest[end + 1..];
                }
                out.push_str(rest);
                json!(out)
            }
            Value::Object(map) => Value::Object(
                map.iter()
                    .map(|(k, v)| (k.clone(), self.resolve(v)))
                    .collect(),
            ),
            Value::Array(items) => Value::Array(items.iter().map(|i| self.resolve(i)).collect()),
            other => other.clone(),
        }
    }
}

/// The resolved properties of every template resource of `kind`, by logical id.
fn of_type(template: &Value, vars: &Vars, kind: &str) -> BTreeMap<String, Value> {
    template["Resources"]
        .as_object()
        .unwrap()
        .iter()
        .filter(|(_, r)| r["Type"] == kind)
        .map(|(id, r)| (id.clone(), vars.resolve(&r["Properties"])))
        .collect()
}

/// `keys` of `props` (absent ones as null): the part of a template resource the deployed one is
/// compared on.
fn pick(props: &Value, keys: &[&str]) -> Value {
    Value::Object(
        keys.iter()
            .map(|k| {
                (
                    (*k).to_owned(),
                    props.get(*k).cloned().unwrap_or(Value::Null),
                )
            })
            .collect(),
    )
}

fn names(props: &BTreeMap<String, Value>, key: &str) -> BTreeSet<String> {
    props
        .values()
        .map(|p| p[key].as_str().unwrap().to_owned())
        .collect()
}

fn sorted_by(mut items: Vec<Value>, key: &str) -> Value {
    items.sort_by(|a, b| a[key].to_string().cmp(&b[key].to_string()));
    Value::Array(items)
}

fn key_schema(keys: &[aws_sdk_dynamodb::types::KeySchemaElement]) -> Value {
    keys.iter()
        .map(|k| json!({ "AttributeName": k.attribute_name(), "KeyType": k.key_type().as_str() }))
        .collect()
}

/// Check the template against the stage `prefix` (`chat-{stage}`) deployed in moto.
pub async fn check(config: &SdkConfig, template: &Value, prefix: &str, vars: &Vars) {
    let db = aws_sdk_dynamodb::Client::new(config);
    let tables = of_type(template, vars, "AWS::DynamoDB::Table");
    let deployed: BTreeSet<String> = db
        .list_tables()
        .into_paginator()
        .items()
        .send()
        .try_collect()
        .await
        .unwrap()
        .into_iter()
        .filter(|t| t.starts_with(&format!("{prefix}-")))
        .collect();
    assert_eq!(deployed, names(&tables, "TableName"), "tables");
    for props in tables.values() {
        let name = props["TableName"].as_str().unwrap();
        let t = db
            .describe_table()
            .table_name(name)
            .send()
            .await
            .unwrap()
            .table
            .unwrap();
        let ttl = db
            .describe_time_to_live()
            .table_name(name)
            .send()
            .await
            .unwrap()
            .time_to_live_description
            .unwrap();
        let mut observed = json!({
            "TableName": t.table_name(),
            "AttributeDefinitions": sorted_by(t.attribute_definitions().iter().map(|a| json!({
                "AttributeName": a.attribute_name(),
                "AttributeType": a.attribute_type().as_str(),
            })).collect(), "AttributeName"),
            "KeySchema": key_schema(t.key_schema()),
            "BillingMode": t.billing_mode_summary().and_then(|b| b.billing_mode()).map(|b| b.as_str()),
            "GlobalSecondaryIndexes": sorted_by(t.global_secondary_indexes().iter().map(|i| json!({
                "IndexName": i.index_name(),
                "KeySchema": key_schema(i.key_schema()),
                "Projection": { "ProjectionType": i.projection().and_then(|p| p.projection_type()).map(|p| p.as_str()) },
            })).collect(), "IndexName"),
            "TimeToLiveSpecification": ttl.attribute_name().map(|a| json!({
                "AttributeName": a,
                "Enabled": ttl.time_to_live_status().map(|s| s.as_str()) == Some("ENABLED"),
            })),
        });
        let mut expected = pick(
            props,
            &[
                "TableName",
                "AttributeDefinitions",
                "KeySchema",
                "BillingMode",
                "GlobalSecondaryIndexes",
                "TimeToLiveSpecification",
            ],
        );
        // A table without indexes: AWS answers none, the template leaves the property out.
        for v in [&mut observed, &mut expected] {
            if v["GlobalSecondaryIndexes"] == json!([]) {
                v["GlobalSecondaryIndexes"] = Value::Null;
            }
        }
        expected["AttributeDefinitions"] = sorted_by(
            expected["AttributeDefinitions"].as_array().unwrap().clone(),
            "AttributeName",
        );
        expected["GlobalSecondaryIndexes"] = match &expected["GlobalSecondaryIndexes"] {
            Value::Array(items) => sorted_by(items.clone(), "IndexName"),
            other => other.clone(),
        };
        assert_eq!(observed, expected, "table {name}");
    }

    let sns = aws_sdk_sns::Client::new(config);
    let topics = of_type(template, vars, "AWS::SNS::Topic");
    let topic_arns: Vec<String> = sns
        .list_topics()
        .into_paginator()
        .items()
        .send()
        .try_collect()
        .await
        .unwrap()
        .into_iter()
        .filter_map(|t| t.topic_arn)
        .filter(|arn| {
            arn.rsplit(':')
                .next()
                .is_some_and(|n| n.starts_with(&format!("{prefix}-")))
        })
        .collect();
    let deployed: BTreeSet<String> = topic_arns
        .iter()
        .filter_map(|arn| arn.rsplit(':').next().map(str::to_owned))
        .collect();
    assert_eq!(deployed, names(&topics, "TopicName"), "topics");

    let sqs = aws_sdk_sqs::Client::new(config);
    let queues = of_type(template, vars, "AWS::SQS::Queue");
    let policies = of_type(template, vars, "AWS::SQS::QueuePolicy");
    let urls = sqs
        .list_queues()
        .queue_name_prefix(format!("{prefix}-"))
        .send()
        .await
        .unwrap()
        .queue_urls
        .unwrap_or_default();
    let deployed: BTreeSet<String> = urls
        .iter()
        .map(|u| u.rsplit('/').next().unwrap().to_owned())
        .collect();
    assert_eq!(deployed, names(&queues, "QueueName"), "queues");
    for url in &urls {
        use aws_sdk_sqs::types::QueueAttributeName as Q;
        let attributes = sqs
            .get_queue_attributes()
            .queue_url(url)
            .attribute_names(Q::All)
            .send()
            .await
            .unwrap()
            .attributes
            .unwrap_or_default();
        let number = |q: Q| json!(attributes[&q].parse::<u64>().unwrap());
        let json_attribute = |q: Q| {
            attributes
                .get(&q)
                .map_or(Value::Null, |t| serde_json::from_str(t).unwrap())
        };
        let mut redrive = json_attribute(Q::RedrivePolicy);
        // SQS answers the count as a number or a string, depending on how it was set.
        if let Some(count) = redrive.get("maxReceiveCount").cloned() {
            redrive["maxReceiveCount"] =
                json!(count.to_string().trim_matches('"').parse::<u64>().unwrap());
        }
        let name = url.rsplit('/').next().unwrap();
        let observed = json!({
            "QueueName": name,
            "MessageRetentionPeriod": number(Q::MessageRetentionPeriod),
            "VisibilityTimeout": number(Q::VisibilityTimeout),
            "RedrivePolicy": redrive,
        });
        let props = queues.values().find(|p| p["QueueName"] == name).unwrap();
        let expected = pick(
            props,
            &[
                "QueueName",
                "MessageRetentionPeriod",
                "VisibilityTimeout",
                "RedrivePolicy",
            ],
        );
        assert_eq!(observed, expected, "queue {name}");
        let policy = policies
            .values()
            .find(|p| p["Queues"][0] == url.as_str())
            .map_or(Value::Null, |p| p["PolicyDocument"].clone());
        assert_eq!(json_attribute(Q::Policy), policy, "queue policy of {name}");
    }

    let logs = aws_sdk_cloudwatchlogs::Client::new(config);
    let groups = of_type(template, vars, "AWS::Logs::LogGroup");
    let deployed: BTreeMap<String, Value> = logs
        .describe_log_groups()
        .log_group_name_prefix(format!("/aws/lambda/{prefix}-"))
        .into_paginator()
        .items()
        .send()
        .try_collect()
        .await
        .unwrap()
        .iter()
        .map(|g| {
            let name = g.log_group_name().unwrap().to_owned();
            let props = json!({ "LogGroupName": name, "RetentionInDays": g.retention_in_days() });
            (name, props)
        })
        .collect();
    let expected: BTreeMap<String, Value> = groups
        .values()
        .map(|p| {
            (
                p["LogGroupName"].as_str().unwrap().to_owned(),
                pick(p, &["LogGroupName", "RetentionInDays"]),
            )
        })
        .collect();
    assert_eq!(deployed, expected, "log groups");

    let iam = aws_sdk_iam::Client::new(config);
    let roles = of_type(template, vars, "AWS::IAM::Role");
    let deployed: BTreeSet<String> = iam
        .list_roles()
        .into_paginator()
        .items()
        .send()
        .try_collect()
        .await
        .unwrap()
        .iter()
        .map(|r| r.role_name().to_owned())
        .filter(|n| n.starts_with(&format!("{prefix}-")))
        .collect();
    assert_eq!(deployed, names(&roles, "RoleName"), "roles");
    for props in roles.values() {
        let name = props["RoleName"].as_str().unwrap();
        let role = iam.get_role().role_name(name).send().await.unwrap();
        let trust: Value = serde_json::from_str(&url_decode(
            role.role().unwrap().assume_role_policy_document().unwrap(),
        ))
        .unwrap();
        let inline = iam
            .list_role_policies()
            .role_name(name)
            .send()
            .await
            .unwrap()
            .policy_names()
            .to_vec();
        let mut policies = Vec::new();
        for policy in &inline {
            let document = iam
                .get_role_policy()
                .role_name(name)
                .policy_name(policy)
                .send()
                .await
                .unwrap();
            policies.push(json!({
                "PolicyName": policy,
                "PolicyDocument": serde_json::from_str::<Value>(&url_decode(document.policy_document())).unwrap(),
            }));
        }
        let observed = json!({
            "RoleName": name,
            "AssumeRolePolicyDocument": trust,
            "Policies": policies,
        });
        let expected = pick(props, &["RoleName", "AssumeRolePolicyDocument", "Policies"]);
        assert_eq!(observed, expected, "role {name}");
    }

    let lambda = aws_sdk_lambda::Client::new(config);
    let functions = of_type(template, vars, "AWS::Lambda::Function");
    let deployed: BTreeSet<String> = lambda
        .list_functions()
        .into_paginator()
        .items()
        .send()
        .try_collect()
        .await
        .unwrap()
        .iter()
        .filter_map(|f| f.function_name())
        .filter(|n| n.starts_with(&format!("{prefix}-")))
        .map(str::to_owned)
        .collect();
    assert_eq!(deployed, names(&functions, "FunctionName"), "functions");
    for props in functions.values() {
        let name = props["FunctionName"].as_str().unwrap();
        let f = lambda
            .get_function_configuration()
            .function_name(name)
            .send()
            .await
            .unwrap();
        let observed = json!({
            "FunctionName": f.function_name(),
            "Runtime": f.runtime().map(|r| r.as_str()),
            "Handler": f.handler(),
            "Architectures": f.architectures().iter().map(|a| a.as_str()).collect::<Vec<_>>(),
            "MemorySize": f.memory_size(),
            "Timeout": f.timeout(),
            "Role": f.role(),
            "Environment": { "Variables": f.environment().and_then(|e| e.variables()) },
        });
        let expected = pick(
            props,
            &[
                "FunctionName",
                "Runtime",
                "Handler",
                "Architectures",
                "MemorySize",
                "Timeout",
                "Role",
                "Environment",
            ],
        );
        assert_eq!(observed, expected, "function {name}");

        // Its asynchronous-invocation bounds, event sources and resource policy.
        let configs = of_type(template, vars, "AWS::Lambda::EventInvokeConfig");
        let expected = configs
            .values()
            .find(|c| c["FunctionName"] == name)
            .map(|c| {
                pick(
                    c,
                    &[
                        "MaximumEventAgeInSeconds",
                        "MaximumRetryAttempts",
                        "DestinationConfig",
                    ],
                )
            });
        let observed = lambda
            .get_function_event_invoke_config()
            .function_name(name)
            .send()
            .await
            .ok()
            .map(|c| {
                json!({
                    "MaximumEventAgeInSeconds": c.maximum_event_age_in_seconds(),
                    "MaximumRetryAttempts": c.maximum_retry_attempts(),
                    "DestinationConfig": {
                        "OnFailure": {
                            "Destination": c.destination_config().and_then(|d| d.on_failure()).and_then(|f| f.destination()),
                        },
                    },
                })
            });
        assert_eq!(observed, expected, "event-invoke config of {name}");

        let mappings = of_type(template, vars, "AWS::Lambda::EventSourceMapping");
        let expected: Vec<Value> = mappings
            .values()
            .filter(|m| m["FunctionName"] == super::live_arn(name))
            .map(|m| {
                pick(
                    m,
                    &[
                        "EventSourceArn",
                        "BatchSize",
                        "MaximumBatchingWindowInSeconds",
                        "FunctionResponseTypes",
                    ],
                )
            })
            .collect();
        let observed: Vec<Value> = lambda
            .list_event_source_mappings()
            .function_name(super::live_arn(name))
            .send()
            .await
            .unwrap()
            .event_source_mappings()
            .iter()
            .map(|m| {
                json!({
                    "EventSourceArn": m.event_source_arn(),
                    "BatchSize": m.batch_size(),
                    "MaximumBatchingWindowInSeconds": m.maximum_batching_window_in_seconds(),
                    "FunctionResponseTypes": m.function_response_types().iter().map(|t| t.as_str()).collect::<Vec<_>>(),
                })
            })
            .collect();
        assert_eq!(observed, expected, "event source mappings of {name}");

        let permissions = of_type(template, vars, "AWS::Lambda::Permission");
        let mut expected: Vec<Value> = permissions
            .values()
            // Permissions are granted to the `live` alias the triggers invoke.
            .filter(|p| p["FunctionName"] == format!("{name}:live"))
            .map(|p| pick(p, &["Principal", "Action", "SourceArn"]))
            .collect();
        let policy: Value = serde_json::from_str(
            lambda
                .get_policy()
                .function_name(name)
                .qualifier("live")
                .send()
                .await
                .unwrap()
                .policy()
                .unwrap(),
        )
        .unwrap();
        let mut observed: Vec<Value> = policy["Statement"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| {
                json!({
                    "Principal": s["Principal"]["Service"],
                    "Action": s["Action"],
                    "SourceArn": s["Condition"]["ArnLike"]["AWS:SourceArn"],
                })
            })
            .collect();
        expected.sort_by_key(Value::to_string);
        observed.sort_by_key(Value::to_string);
        assert_eq!(observed, expected, "invoke permissions of {name}");

        // One `live` alias per function, serving a published version (never $LATEST).
        let aliases = of_type(template, vars, "AWS::Lambda::Alias");
        let expected: Vec<Value> = aliases
            .values()
            .filter(|a| a["FunctionName"] == name)
            .map(|a| pick(a, &["Name"]))
            .collect();
        let observed: Vec<Value> = lambda
            .list_aliases()
            .function_name(name)
            .send()
            .await
            .unwrap()
            .aliases()
            .iter()
            .map(|a| {
                assert!(
                    a.function_version()
                        .is_some_and(|v| v.parse::<u64>().is_ok()),
                    "{a:?}"
                );
                json!({"Name": a.name()})
            })
            .collect();
        assert_eq!(observed, expected, "aliases of {name}");
    }

    let scheduler = aws_sdk_scheduler::Client::new(config);
    let schedules = of_type(template, vars, "AWS::Scheduler::Schedule");
    let deployed: BTreeSet<String> = scheduler
        .list_schedules()
        .name_prefix(format!("{prefix}-"))
        .send()
        .await
        .unwrap()
        .schedules()
        .iter()
        .filter_map(|s| s.name().map(str::to_owned))
        .collect();
    assert_eq!(deployed, names(&schedules, "Name"), "schedules");
    for props in schedules.values() {
        let name = props["Name"].as_str().unwrap();
        let s = scheduler.get_schedule().name(name).send().await.unwrap();
        let target = s.target().unwrap();
        let retry = target.retry_policy();
        let observed = json!({
            "Name": s.name(),
            "ScheduleExpression": s.schedule_expression(),
            "FlexibleTimeWindow": { "Mode": s.flexible_time_window().map(|w| w.mode().as_str()) },
            "State": s.state().map(|st| st.as_str()),
            "Target": {
                "Arn": target.arn(),
                "RoleArn": target.role_arn(),
                "Input": target.input(),
                "RetryPolicy": {
                    "MaximumRetryAttempts": retry.and_then(|r| r.maximum_retry_attempts()),
                    "MaximumEventAgeInSeconds": retry.and_then(|r| r.maximum_event_age_in_seconds()),
                },
            },
        });
        let expected = pick(
            props,
            &[
                "Name",
                "ScheduleExpression",
                "FlexibleTimeWindow",
                "State",
                "Target",
            ],
        );
        assert_eq!(observed, expected, "schedule {name}");
    }

    let apigw = aws_sdk_apigatewayv2::Client::new(config);
    let apis = of_type(template, vars, "AWS::ApiGatewayV2::Api");
    let deployed: Vec<Value> = apigw
        .get_apis()
        .send()
        .await
        .unwrap()
        .items()
        .iter()
        .filter(|a| {
            a.name()
                .is_some_and(|n| n.starts_with(&format!("{prefix}-")))
        })
        .map(|a| {
            json!({
                "Name": a.name(),
                "ProtocolType": a.protocol_type().map(|p| p.as_str()),
                "RouteSelectionExpression": a.route_selection_expression(),
            })
        })
        .collect();
    let expected: Vec<Value> = apis
        .values()
        .map(|a| pick(a, &["Name", "ProtocolType", "RouteSelectionExpression"]))
        .collect();
    assert_eq!(deployed, expected, "APIs");
    let api_id = vars.get("Api");
    let integrations: Vec<Value> = apigw
        .get_integrations()
        .api_id(&api_id)
        .send()
        .await
        .unwrap()
        .items()
        .iter()
        .map(|i| {
            json!({
                "ApiId": api_id,
                "IntegrationType": i.integration_type().map(|t| t.as_str()),
                "IntegrationMethod": i.integration_method(),
                "IntegrationUri": i.integration_uri(),
            })
        })
        .collect();
    let expected: Vec<Value> = of_type(template, vars, "AWS::ApiGatewayV2::Integration")
        .values()
        .cloned()
        .collect();
    assert_eq!(integrations, expected, "integrations");
    let mut routes: Vec<Value> = apigw
        .get_routes()
        .api_id(&api_id)
        .send()
        .await
        .unwrap()
        .items()
        .iter()
        .map(|r| json!({ "ApiId": api_id, "RouteKey": r.route_key(), "Target": r.target() }))
        .collect();
    let mut expected: Vec<Value> = of_type(template, vars, "AWS::ApiGatewayV2::Route")
        .into_values()
        .collect();
    routes.sort_by_key(|r| r["RouteKey"].to_string());
    expected.sort_by_key(|r| r["RouteKey"].to_string());
    assert_eq!(routes, expected, "routes");
    let stages: Vec<Value> = apigw
        .get_stages()
        .api_id(&api_id)
        .send()
        .await
        .unwrap()
        .items()
        .iter()
        .map(|s| json!({ "ApiId": api_id, "StageName": s.stage_name(), "AutoDeploy": s.auto_deploy() }))
        .collect();
    let expected: Vec<Value> = of_type(template, vars, "AWS::ApiGatewayV2::Stage")
        .values()
        .map(|s| pick(s, &["ApiId", "StageName", "AutoDeploy"]))
        .collect();
    assert_eq!(stages, expected, "stages");

    let subscriptions = of_type(template, vars, "AWS::SNS::Subscription");
    let mut expected: Vec<Value> = subscriptions
        .values()
        .map(|s| {
            pick(
                s,
                &[
                    "TopicArn",
                    "Protocol",
                    "Endpoint",
                    "FilterPolicy",
                    "RawMessageDelivery",
                ],
            )
        })
        .collect();
    let mut observed = Vec::new();
    for arn in &topic_arns {
        for (protocol, endpoint, filter, raw) in subscriptions_of(&sns, arn).await {
            observed.push(json!({
                "TopicArn": arn,
                "Protocol": protocol,
                "Endpoint": endpoint,
                "FilterPolicy": filter,
                "RawMessageDelivery": raw,
            }));
        }
    }
    expected.sort_by_key(Value::to_string);
    observed.sort_by_key(Value::to_string);
    assert_eq!(observed, expected, "subscriptions");
}
