//! The order apply may run a plan's actions in, as data: for each changing action, the actions it
//! must wait for. A create, update or replace waits for the actions on what its resource needs
//! (the stack model's `needs`); a delete waits for every create and update, and for the deletes
//! of whatever needs it. Everything else may overlap. Pure, so the graph is tested without AWS.

use std::collections::{BTreeMap, BTreeSet};

use crate::plan::{Change, Plan};
use crate::stack::{DesiredStack, Kind};

/// For each action of the plan (by index), the indices of the actions it waits for. Actions that
/// change nothing wait for nothing and are waited for by nobody.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schedule {
    pub waits: Vec<BTreeSet<usize>>,
}

impl Schedule {
    /// Waves of actions that could all run at once: the critical path's length in actions, and
    /// what a bound on concurrency cuts into. For plans printed with `--output json` and tests.
    pub fn waves(&self, plan: &Plan) -> Vec<Vec<usize>> {
        let mut wave_of: Vec<Option<usize>> = vec![None; self.waits.len()];
        // A delete may wait for a later one (a queue for the queue that dead-letters into it),
        // so repeat until every action has its wave; the graph is acyclic (see the tests).
        let mut placed = true;
        while placed {
            placed = false;
            for (i, waits) in self.waits.iter().enumerate() {
                if wave_of[i].is_some() || plan.actions[i].change == Change::Keep {
                    continue;
                }
                let before: Option<Vec<usize>> = waits.iter().map(|j| wave_of[*j]).collect();
                if let Some(before) = before {
                    wave_of[i] = Some(before.into_iter().max().map_or(0, |w| w + 1));
                    placed = true;
                }
            }
        }
        let mut waves: Vec<Vec<usize>> = Vec::new();
        for (i, wave) in wave_of.iter().enumerate() {
            if let Some(w) = *wave {
                if waves.len() <= w {
                    waves.resize(w + 1, Vec::new());
                }
                waves[w].push(i);
            }
        }
        waves
    }
}

/// The kinds that need `kind`, directly or through others, according to the model.
fn dependents(model: &DesiredStack) -> BTreeMap<Kind, BTreeSet<Kind>> {
    let mut direct: BTreeMap<Kind, BTreeSet<Kind>> = BTreeMap::new();
    for r in &model.resources {
        for (kind, _) in &r.needs {
            if *kind != r.kind {
                direct.entry(*kind).or_default().insert(r.kind);
            }
        }
    }
    let mut closed = BTreeMap::new();
    for kind in direct.keys().copied() {
        let mut seen = BTreeSet::new();
        let mut todo = vec![kind];
        while let Some(k) = todo.pop() {
            for d in direct.get(&k).into_iter().flatten() {
                if seen.insert(*d) {
                    todo.push(*d);
                }
            }
        }
        closed.insert(kind, seen);
    }
    closed
}

/// The schedule of `plan`, whose resources `model` describes (the model of the same stage: its
/// `needs` do not depend on what AWS assigned).
pub fn schedule(plan: &Plan, model: &DesiredStack) -> Schedule {
    let changing = |i: usize| plan.actions[i].change != Change::Keep;
    let deleting = |i: usize| plan.actions[i].change == Change::Delete;
    let index: BTreeMap<(Kind, &str), usize> = plan
        .actions
        .iter()
        .enumerate()
        .filter(|(i, _)| changing(*i))
        .map(|(i, a)| ((a.kind, a.name.as_str()), i))
        .collect();
    let needs: BTreeMap<(Kind, &str), &[(Kind, String)]> = model
        .resources
        .iter()
        .map(|r| ((r.kind, r.name.as_str()), r.needs.as_slice()))
        .collect();
    let needed_by = dependents(model);
    let builds: BTreeSet<usize> = (0..plan.actions.len())
        .filter(|i| changing(*i) && !deleting(*i))
        .collect();
    let mut waits = vec![BTreeSet::new(); plan.actions.len()];
    for (i, action) in plan.actions.iter().enumerate() {
        if !changing(i) {
            continue;
        }
        let key = (action.kind, action.name.as_str());
        if deleting(i) {
            // Deletes start when the stage is otherwise in its new shape …
            waits[i].extend(builds.iter().copied());
            let kinds = needed_by.get(&action.kind);
            for (j, other) in plan.actions.iter().enumerate() {
                if j == i || !deleting(j) {
                    continue;
                }
                // … and after whatever needs this resource is gone: of a dependent kind, or of
                // the same kind and needing it by name.
                let dependent_kind = kinds.is_some_and(|k| k.contains(&other.kind));
                let needs_this = other.kind == action.kind
                    && needs
                        .get(&(other.kind, other.name.as_str()))
                        .is_some_and(|n| n.iter().any(|(k, n)| (*k, n.as_str()) == key));
                if dependent_kind || needs_this {
                    waits[i].insert(j);
                }
            }
        } else {
            for (kind, name) in needs.get(&key).copied().unwrap_or_default() {
                if let Some(j) = index.get(&(*kind, name.as_str()))
                    && !deleting(*j)
                {
                    waits[i].insert(*j);
                }
            }
        }
    }
    Schedule { waits }
}

#[cfg(test)]
mod tests {
    use std::fmt::Write;

    use super::*;
    use crate::plan::{Observed, plan};
    use crate::stack::{Code, Environment, StackName, StageSettings, desired};

    fn model(code: &str) -> DesiredStack {
        desired(
            &StackName::new("chat", "prod").unwrap(),
            &StageSettings::default(),
            &Environment::new("123456789012", "eu-west-1").with_api("a1b2c3d4e5"),
            &Code {
                ws_sha256: format!("ws-{code}"),
                fanout_sha256: format!("fanout-{code}"),
            },
        )
    }

    fn observed_as(stack: &DesiredStack) -> Observed {
        Observed {
            resources: stack
                .resources
                .iter()
                .map(|r| ((r.kind, r.name.clone()), r.properties.clone()))
                .collect(),
            ids: BTreeMap::new(),
        }
    }

    fn render(plan: &Plan, schedule: &Schedule) -> String {
        let mut out = String::new();
        for (n, wave) in schedule.waves(plan).iter().enumerate() {
            writeln!(out, "wave {n}:").unwrap();
            for i in wave {
                let a = &plan.actions[*i];
                writeln!(out, "  {} {} {}", a.change.label(), a.kind.label(), a.name).unwrap();
            }
        }
        out
    }

    /// Every wait of every action points at one that is changing, and following waits always
    /// ends (no cycle): each action is placed in some wave.
    fn check_acyclic(plan: &Plan, schedule: &Schedule) {
        let placed: usize = schedule.waves(plan).iter().map(Vec::len).sum();
        let changing = plan
            .actions
            .iter()
            .filter(|a| a.change != Change::Keep)
            .count();
        assert_eq!(placed, changing, "an action waits in a cycle");
        for (i, waits) in schedule.waits.iter().enumerate() {
            for j in waits {
                assert_ne!(
                    plan.actions[*j].change,
                    Change::Keep,
                    "{i} waits for a keep"
                );
            }
        }
    }

    #[test]
    fn every_need_is_a_resource_that_comes_earlier_in_the_model() {
        let stack = model("v1");
        for (i, r) in stack.resources.iter().enumerate() {
            for (kind, name) in &r.needs {
                let at = stack
                    .resources
                    .iter()
                    .position(|o| o.kind == *kind && o.name == *name)
                    .unwrap_or_else(|| {
                        panic!("{} needs {kind:?} {name}, not in the model", r.name)
                    });
                assert!(at < i, "{} needs {name}, which comes after it", r.name);
            }
        }
    }

    #[test]
    fn a_first_deploy_overlaps_the_tables_roles_and_functions() {
        let stack = model("v1");
        let plan = plan(&stack, &Observed::default());
        let schedule = schedule(&plan, &stack);
        check_acyclic(&plan, &schedule);
        let waves = schedule.waves(&plan);
        // Tables, topic, dead-letter queue, parameter, log groups and the API start at once; the
        // functions wait only for their role and log group (and the API's id).
        let first: BTreeSet<Kind> = waves[0].iter().map(|i| plan.actions[*i].kind).collect();
        assert!(
            first.contains(&Kind::Table) && first.contains(&Kind::Api),
            "{first:?}"
        );
        // One wave more than before releases: the aliases wait for their function's first
        // version, and everything that invokes a function waits for its alias.
        assert!(waves.len() <= 7, "{}", render(&plan, &schedule));
        insta::assert_snapshot!(render(&plan, &schedule));
    }

    #[test]
    fn a_code_change_updates_both_functions_then_both_aliases_at_once() {
        let old = model("v1");
        let new = model("v2");
        let plan = plan(&new, &observed_as(&old));
        let schedule = schedule(&plan, &new);
        let waves = schedule.waves(&plan);
        assert_eq!(waves.len(), 2, "{}", render(&plan, &schedule));
        let kinds = |w: &Vec<usize>| -> BTreeSet<Kind> {
            w.iter().map(|i| plan.actions[*i].kind).collect()
        };
        assert_eq!(waves[0].len(), 2);
        assert_eq!(kinds(&waves[0]), BTreeSet::from([Kind::Function]));
        // A version can only be published once its function's code update has finished.
        assert_eq!(waves[1].len(), 2);
        assert_eq!(kinds(&waves[1]), BTreeSet::from([Kind::Alias]));
    }

    #[test]
    fn a_destroy_deletes_dependents_first_and_the_tables_at_once() {
        let stack = model("v1");
        let nothing = DesiredStack {
            name: stack.name.clone(),
            resources: Vec::new(),
        };
        let plan = plan(&nothing, &observed_as(&stack));
        let schedule = schedule(&plan, &stack);
        check_acyclic(&plan, &schedule);
        let waves = schedule.waves(&plan);
        let wave_of = |kind: Kind, name_part: &str| {
            waves
                .iter()
                .position(|w| {
                    w.iter().any(|i| {
                        plan.actions[*i].kind == kind && plan.actions[*i].name.contains(name_part)
                    })
                })
                .unwrap()
        };
        assert_eq!(wave_of(Kind::Table, "messages"), 0);
        assert_eq!(wave_of(Kind::Table, "connections"), 0);
        assert!(wave_of(Kind::Function, "fanout") > wave_of(Kind::Subscription, "fanout"));
        assert!(wave_of(Kind::Function, "fanout") > wave_of(Kind::EventSourceMapping, "fanout"));
        assert!(wave_of(Kind::Role, "fanout") > wave_of(Kind::Function, "fanout"));
        assert!(wave_of(Kind::Api, "api") > wave_of(Kind::Route, "$connect"));
        // The dead-letter queue goes after the queue that dead-letters into it.
        assert!(wave_of(Kind::Queue, "dlq") > wave_of(Kind::Queue, "presence"));
        insta::assert_snapshot!(render(&plan, &schedule));
    }

    #[test]
    fn deletes_wait_for_every_create_and_update() {
        let old = model("v1");
        let mut new = model("v2");
        // A route the stage no longer wants: deleted, but only once the rest is in shape.
        new.resources
            .retain(|r| !(r.kind == Kind::Route && r.name.ends_with("/ping")));
        let plan = plan(&new, &observed_as(&old));
        let schedule = schedule(&plan, &new);
        let delete = plan
            .actions
            .iter()
            .position(|a| a.change == Change::Delete)
            .unwrap();
        let updates: BTreeSet<usize> = plan
            .actions
            .iter()
            .enumerate()
            .filter(|(_, a)| matches!(a.change, Change::Update { .. }))
            .map(|(i, _)| i)
            .collect();
        // Both functions' code and both aliases.
        assert_eq!(updates.len(), 4);
        assert!(updates.is_subset(&schedule.waits[delete]));
    }
}
