//! The plan (`chatctl_infra::plan`): for a fixed stage and settings, and any state AWS may be in
//! (a subset of the stage's resources, some drifted or half-read, plus leftovers of any kind),
//! the plan applied (create/update/replace: the resource becomes what the model wants, rendered
//! with the ids known by then; delete: gone; keep: untouched) leaves a stage that plans no
//! changes. Planned like `chatctl deploy` does it: `plan_stage` with the environment observe
//! reports (the API's id when the API exists), then again with the id a created or replaced API
//! got.
#![no_main]

use std::collections::BTreeMap;
use std::sync::OnceLock;

use arbitrary::{Result as ArbResult, Unstructured};
use chatctl_infra::build::Arch;
use chatctl_infra::kinds::{Properties, Tags};
use chatctl_infra::plan::{Change, Observed, Plan, plan_stage};
use chatctl_infra::stack::{
    Code, DesiredStack, Environment, KNOWN_AFTER_APPLY, Kind, StackName, StageSettings, desired,
};
use libfuzzer_sys::fuzz_target;
use serde_json::{Value, json};

/// Ids AWS may have given the API: the current one, an older one (resources left naming it).
const API_IDS: [&str; 2] = ["a1b2c3d4e5", "q9w8e7r6t5"];
/// The id of an API that apply creates.
const NEW_API_ID: &str = "n3wap1d000";

const KINDS: [Kind; 17] = [
    Kind::Table,
    Kind::Topic,
    Kind::Queue,
    Kind::Parameter,
    Kind::LogGroup,
    Kind::Api,
    Kind::Role,
    Kind::Function,
    Kind::Alias,
    Kind::EventInvokeConfig,
    Kind::EventSourceMapping,
    Kind::Schedule,
    Kind::Integration,
    Kind::Route,
    Kind::Stage,
    Kind::Permission,
    Kind::Subscription,
];

struct Fixture {
    name: StackName,
    settings: StageSettings,
    code: Code,
    /// The stage as deployed with each of `API_IDS`.
    deployed: [DesiredStack; 2],
    /// Other versions of the same resources (other settings, other code, another stage), as a
    /// stage deployed by an older chatctl or changed by hand would hold them.
    others: Vec<DesiredStack>,
}

fn base() -> Environment {
    Environment::new("123456789012", "eu-west-1")
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let name = StackName::new("chat", "prod").expect("a valid name");
        let settings = StageSettings::default();
        let code = Code {
            ws_sha256: "d3MtdjE=".into(),
            fanout_sha256: "ZmFub3V0LXYx".into(),
        };
        let deployed = API_IDS.map(|id| desired(&name, &settings, &base().with_api(id), &code));
        let other_settings = StageSettings {
            memory_mb: 1024,
            timeout_s: 29,
            arch: Arch::X86_64,
            recall_window_ms: 5_000,
            log_retention_days: 30,
            throttle_rate: 10.5,
            throttle_burst: 20,
            keep_releases: 3,
        };
        let other_code = Code {
            ws_sha256: "d3MtdjA=".into(),
            fanout_sha256: "ZmFub3V0LXYw".into(),
        };
        let env = base().with_api(API_IDS[0]);
        let others = vec![
            desired(&name, &other_settings, &env, &code),
            desired(&name, &settings, &env, &other_code),
            desired(
                &StackName::new("chat", "dev").expect("a valid name"),
                &settings,
                &base().with_api(API_IDS[1]),
                &other_code,
            ),
        ];
        Fixture {
            name,
            settings,
            code,
            deployed,
            others,
        }
    })
}

// --- drift ------------------------------------------------------------------------------------

const STRINGS: &[&str] = &[
    "",
    "x",
    "WEBSOCKET",
    "HTTP",
    "arm64",
    "x86_64",
    "provided.al2023",
    "PAY_PER_REQUEST",
    "PROVISIONED",
    "ENABLED",
    "DISABLED",
    "lambda",
    "sqs",
    "chat-prod",
    "arn:aws:lambda:eu-west-1:123456789012:function:chat-prod-ws",
    KNOWN_AFTER_APPLY,
];

fn string(u: &mut Unstructured<'_>) -> ArbResult<String> {
    if u.ratio(2, 3)? {
        Ok((*u.choose(STRINGS)?).to_owned())
    } else {
        u.arbitrary()
    }
}

fn opt_string(u: &mut Unstructured<'_>) -> ArbResult<Option<String>> {
    Ok(if u.ratio(1, 3)? {
        None
    } else {
        Some(string(u)?)
    })
}

fn opt_int(u: &mut Unstructured<'_>) -> ArbResult<Option<i64>> {
    Ok(match u.choose_index(3)? {
        0 => None,
        1 => Some(u.int_in_range(-1..=1000)?),
        _ => Some(u.arbitrary()?),
    })
}

fn opt_uint(u: &mut Unstructured<'_>) -> ArbResult<Option<u64>> {
    Ok(if u.ratio(1, 3)? {
        None
    } else {
        Some(u.arbitrary()?)
    })
}

/// A JSON value changed a little (a policy document edited by hand) or replaced.
fn value(u: &mut Unstructured<'_>, v: &mut Value) -> ArbResult<()> {
    match u.choose_index(4)? {
        0 => *v = Value::Null,
        1 => *v = Value::String(string(u)?),
        2 => {
            if let Value::Object(map) = v {
                map.insert(string(u)?, json!(string(u)?));
            } else {
                *v = json!({});
            }
        }
        _ => {
            if let Value::Object(map) = v {
                let keys: Vec<String> = map.keys().cloned().collect();
                if !keys.is_empty() {
                    let key = u.choose(&keys)?.clone();
                    map.shift_remove(&key);
                }
            }
        }
    }
    Ok(())
}

fn tags(u: &mut Unstructured<'_>, t: &mut Tags) -> ArbResult<()> {
    match u.choose_index(3)? {
        0 => t.clear(),
        1 => {
            t.insert(
                (*u.choose(&["chatctl:app", "chatctl:stage", "chatctl:x"])?).to_owned(),
                string(u)?,
            );
        }
        _ => {
            let keys: Vec<String> = t.keys().cloned().collect();
            if !keys.is_empty() {
                t.remove(u.choose(&keys)?);
            }
        }
    }
    Ok(())
}

fn map(u: &mut Unstructured<'_>, m: &mut BTreeMap<String, String>) -> ArbResult<()> {
    let keys: Vec<String> = m.keys().cloned().collect();
    if !keys.is_empty() && u.arbitrary()? {
        let key = u.choose(&keys)?.clone();
        if u.arbitrary()? {
            m.remove(&key);
        } else {
            m.insert(key, string(u)?);
        }
    } else {
        m.insert(string(u)?, string(u)?);
    }
    Ok(())
}

fn strings(u: &mut Unstructured<'_>, list: &mut Vec<String>) -> ArbResult<()> {
    match u.choose_index(3)? {
        0 => list.clear(),
        1 => list.push(string(u)?),
        _ => list.reverse(),
    }
    Ok(())
}

/// Change one field of `p`, as drift or a partial read by observe would.
fn mutate(u: &mut Unstructured<'_>, p: &mut Properties) -> ArbResult<()> {
    match p {
        Properties::Table(t) => match u.choose_index(5)? {
            0 => strings(u, &mut t.keys)?,
            1 => t.billing = string(u)?,
            2 => match u.choose_index(3)? {
                0 => t.indexes.clear(),
                1 => t.indexes.reverse(),
                _ => {
                    if let Some(i) = t.indexes.first_mut() {
                        match u.choose_index(4)? {
                            0 => i.name = opt_string(u)?,
                            1 => i.partition_key = opt_string(u)?,
                            2 => i.sort_key = opt_string(u)?,
                            _ => i.projection = opt_string(u)?,
                        }
                    }
                }
            },
            3 => t.ttl_attribute = opt_string(u)?,
            _ => tags(u, &mut t.tags)?,
        },
        Properties::Topic(t) => tags(u, &mut t.tags)?,
        Properties::Queue(q) => match u.choose_index(5)? {
            0 => q.message_retention_seconds = opt_uint(u)?,
            1 => q.visibility_timeout_s = opt_uint(u)?,
            2 => value(u, &mut q.redrive_policy)?,
            3 => value(u, &mut q.policy)?,
            _ => tags(u, &mut q.tags)?,
        },
        Properties::Parameter(x) => match u.choose_index(2)? {
            0 => x.r#type = opt_string(u)?,
            _ => tags(u, &mut x.tags)?,
        },
        Properties::LogGroup(l) => match u.choose_index(2)? {
            0 => l.retention_days = opt_int(u)?,
            _ => tags(u, &mut l.tags)?,
        },
        Properties::Api(a) => match u.choose_index(3)? {
            0 => a.protocol = opt_string(u)?,
            1 => a.route_selection_expression = opt_string(u)?,
            _ => tags(u, &mut a.tags)?,
        },
        Properties::Role(r) => match u.choose_index(3)? {
            0 => value(u, &mut r.assume_role_policy)?,
            1 => value(u, &mut r.inline_policy)?,
            _ => tags(u, &mut r.tags)?,
        },
        Properties::Function(f) => match u.choose_index(9)? {
            0 => f.runtime = opt_string(u)?,
            1 => f.handler = opt_string(u)?,
            2 => f.architecture = opt_string(u)?,
            3 => f.memory_mb = opt_int(u)?,
            4 => f.timeout_s = opt_int(u)?,
            5 => f.role = opt_string(u)?,
            6 => f.code_sha256 = opt_string(u)?,
            7 => map(u, &mut f.environment)?,
            _ => tags(u, &mut f.tags)?,
        },
        Properties::Alias(a) => match u.choose_index(2)? {
            0 => a.code_sha256 = opt_string(u)?,
            _ => a.configuration = opt_string(u)?,
        },
        Properties::EventInvokeConfig(e) => match u.choose_index(4)? {
            0 => e.maximum_event_age_s = opt_int(u)?,
            1 => e.maximum_retry_attempts = opt_int(u)?,
            2 => e.on_failure = opt_string(u)?,
            _ => e.on_success = opt_string(u)?,
        },
        Properties::EventSourceMapping(m) => match u.choose_index(4)? {
            0 => m.event_source_arn = opt_string(u)?,
            1 => m.batch_size = opt_int(u)?,
            2 => m.maximum_batching_window_s = opt_int(u)?,
            _ => strings(u, &mut m.function_response_types)?,
        },
        Properties::Schedule(s) => match u.choose_index(8)? {
            0 => s.schedule_expression = opt_string(u)?,
            1 => s.flexible_time_window = opt_string(u)?,
            2 => s.state = opt_string(u)?,
            3 => s.target.arn = opt_string(u)?,
            4 => s.target.role_arn = opt_string(u)?,
            5 => s.target.input = opt_string(u)?,
            6 => s.target.maximum_retry_attempts = opt_int(u)?,
            _ => s.target.maximum_event_age_s = opt_int(u)?,
        },
        Properties::Integration(i) => match u.choose_index(2)? {
            0 => i.r#type = opt_string(u)?,
            _ => i.uri = opt_string(u)?,
        },
        Properties::Route(r) => r.target = string(u)?,
        Properties::Stage(s) => match u.choose_index(4)? {
            0 => s.auto_deploy = !s.auto_deploy,
            1 => {
                s.throttle_rate = match u.choose_index(4)? {
                    0 => None,
                    1 => Some(f64::NAN),
                    2 => Some(f64::from(u.int_in_range(0..=2000_u16)?)),
                    _ => Some(u.arbitrary()?),
                }
            }
            2 => s.throttle_burst = opt_int(u)?,
            _ => tags(u, &mut s.tags)?,
        },
        Properties::Permission(x) => match u.choose_index(3)? {
            0 => x.principal = opt_string(u)?,
            1 => x.action = opt_string(u)?,
            _ => x.source_arn = opt_string(u)?,
        },
        Properties::Subscription(s) => match u.choose_index(4)? {
            0 => s.protocol = opt_string(u)?,
            1 => s.endpoint = opt_string(u)?,
            2 => value(u, &mut s.filter_policy)?,
            _ => s.raw_message_delivery = !s.raw_message_delivery,
        },
    }
    Ok(())
}

// --- the observed state ---------------------------------------------------------------------

/// What observe could report, and the environment it reports with it.
fn observed(u: &mut Unstructured<'_>, f: &Fixture) -> ArbResult<(Environment, Observed)> {
    let api = f.name.names().api();
    let api_exists = u.ratio(3, 4)?;
    // The stage was deployed with this API id; if the API is gone, what is left still names it.
    let deployed_with = usize::from(!api_exists || u.ratio(1, 8)?);
    let source = &f.deployed[deployed_with];
    let env = if api_exists {
        let env = base().with_api(API_IDS[0]);
        if u.arbitrary()? {
            env
        } else {
            // Observe takes the endpoint AWS reports; without one, it is derived from the id.
            Environment {
                api_endpoint: None,
                ..env
            }
        }
    } else {
        base()
    };
    let mut observed = Observed::default();
    // Observe finds the API's integration, routes and stage through the API: none without it;
    // and it reports the API's id with the API.
    let observable = |kind: Kind, name: &str| {
        let inside_api = matches!(kind, Kind::Integration | Kind::Route | Kind::Stage)
            && name.starts_with(&format!("{api}/"));
        api_exists || !(inside_api || (kind == Kind::Api && name == api))
    };
    for r in &source.resources {
        let key = (r.kind, r.name.clone());
        if !observable(r.kind, &r.name) {
            continue;
        }
        let mut props = match u.choose_index(8)? {
            0 if !(r.kind == Kind::Api && r.name == api) => continue, // not there (yet)
            1 => {
                let other = u.choose(&f.others)?;
                match other
                    .resources
                    .iter()
                    .find(|o| o.kind == r.kind && o.name == r.name)
                {
                    Some(o) => o.properties.clone(),
                    None => r.properties.clone(),
                }
            }
            _ => r.properties.clone(),
        };
        let drifts = u.ratio(1, 3)?;
        let drift = if drifts { u.int_in_range(1..=3)? } else { 0 };
        for _ in 0..drift {
            mutate(u, &mut props)?;
        }
        observed.resources.insert(key, props);
    }
    if api_exists {
        observed
            .ids
            .insert((Kind::Api, api.clone()), API_IDS[0].to_owned());
    }
    // Leftovers: anything of any kind under any name (an older layout, a retried create, a
    // duplicate API, a route added by hand).
    let orphans = u.int_in_range(0..=4)?;
    for _ in 0..orphans {
        let kind = *u.choose(&KINDS)?;
        let all: Vec<_> = f
            .deployed
            .iter()
            .chain(&f.others)
            .flat_map(|s| &s.resources)
            .collect();
        let like = all
            .iter()
            .filter(|r| r.kind == kind)
            .nth(u.int_in_range(0..=3)?)
            .or_else(|| all.iter().find(|r| r.kind == kind))
            .expect("the model has every kind");
        let name = match u.choose_index(4)? {
            0 => like.name.clone(),
            1 => format!("{}-{}", like.name, string(u)?),
            2 => format!("{api}/{}", string(u)?),
            _ => u.arbitrary()?,
        };
        if !observable(kind, &name) {
            continue;
        }
        let mut props = like.properties.clone();
        if u.arbitrary()? {
            mutate(u, &mut props)?;
        }
        observed.resources.insert((kind, name), props);
    }
    Ok((env, observed))
}

fn key_of(kind: Kind, name: &str) -> (Kind, String) {
    (kind, name.to_owned())
}

fn check(env: &Environment, observed: &Observed) {
    let f = fixture();
    let api = f.name.names().api();
    let first = plan_stage(&f.name, &f.settings, env, &f.code, observed);

    // Shape: every resource of the model once, in the model's order, then every leftover once,
    // as a delete.
    let model = desired(&f.name, &f.settings, env, &f.code);
    let n = model.resources.len();
    assert!(first.actions.len() >= n);
    for (a, r) in first.actions.iter().zip(&model.resources) {
        assert_eq!((a.kind, &a.name), (r.kind, &r.name));
        assert_ne!(a.change, Change::Delete, "{} {}", a.kind.label(), a.name);
        let seen = observed.resources.contains_key(&key_of(a.kind, &a.name));
        assert_eq!(
            a.change == Change::Create,
            !seen,
            "{} {}",
            a.kind.label(),
            a.name
        );
    }
    let leftovers = observed
        .resources
        .keys()
        .filter(|k| {
            !model
                .resources
                .iter()
                .any(|r| (r.kind, &r.name) == (k.0, &k.1))
        })
        .count();
    assert_eq!(first.actions.len(), n + leftovers, "{first}");
    assert!(
        first.actions[n..]
            .iter()
            .all(|a| a.change == Change::Delete)
    );

    // A new API gets a new id: everything inside it comes new, and what names it changes.
    let api_new = first.actions.iter().any(|a| {
        a.kind == Kind::Api
            && a.name == api
            && matches!(a.change, Change::Create | Change::Replace { .. })
    });
    if api_new {
        for a in &first.actions[..n] {
            let inside = matches!(a.kind, Kind::Integration | Kind::Route | Kind::Stage)
                && a.name.starts_with(&format!("{api}/"));
            if inside {
                assert!(
                    matches!(a.change, Change::Create | Change::Replace { .. }),
                    "{} {} is not recreated with its API:\n{first}",
                    a.kind.label(),
                    a.name
                );
            }
        }
    }

    // Apply, as a model: each action's resource becomes what the stack model wants, rendered with
    // the ids known by then.
    let after_env = if api_new {
        base().with_api(NEW_API_ID)
    } else {
        env.clone()
    };
    let wanted = desired(&f.name, &f.settings, &after_env, &f.code);
    let mut applied = observed.clone();
    for a in &first.actions {
        let key = key_of(a.kind, &a.name);
        match a.change {
            Change::Create | Change::Update { .. } | Change::Replace { .. } => {
                let r = wanted
                    .resources
                    .iter()
                    .find(|r| r.kind == a.kind && r.name == a.name)
                    .expect("only the model's resources are created or changed");
                applied.resources.insert(key, r.properties.clone());
            }
            Change::Delete => {
                applied.resources.remove(&key);
            }
            Change::Keep => {}
        }
    }
    if api_new {
        applied
            .ids
            .insert(key_of(Kind::Api, &api), NEW_API_ID.to_owned());
    }
    let second: Plan = plan_stage(&f.name, &f.settings, &after_env, &f.code, &applied);
    assert!(
        !second.has_changes(),
        "the applied plan leaves changes.\nfirst plan:\n{first}\nsecond plan:\n{second}"
    );
}

fuzz_target!(|data: &[u8]| {
    let mut u = Unstructured::new(data);
    let Ok((env, observed)) = observed(&mut u, fixture()) else {
        return;
    };
    check(&env, &observed);
});
