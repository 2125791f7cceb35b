//! The deploy fault matrix. Seeded chaos in the proxy meets 20 % of all AWS calls with a
//! throttle, a 500 or a lost answer (the change made, the answer a 503), and each seeded run
//! deploys from nothing, deploys a code change and destroys: every run must converge at once or on
//! one re-run (itself under the same chaos), leaving no duplicate and no orphan, checked from
//! outside with plain SDK clients. Then `kill -9` at each distinct apply step, before and after
//! the step's first call reached AWS, must converge on the next run.
//!
//! CI runs a short matrix; the long one is `CHATCTL_FAULT_SEEDS=20 CHATCTL_KILL_STEPS=all cargo
//! test -p chatctl --test deploy faults -- --nocapture` (docs/operations.md). Each prints a table.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use chatctl_e2e::proxy::{Chaos, ChaosFault};

use super::releases::alias_of;
use super::*;

/// The share of calls that meet a fault.
const PERCENT: u8 = 20;

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// One scenario's row of the matrix.
#[derive(Debug, Default)]
struct Row {
    runs: u64,
    faults: BTreeMap<ChaosFault, u64>,
    first_time: u64,
    on_rerun: u64,
    orphans: u64,
    duplicates: u64,
}

impl Row {
    fn faults(&self) -> u64 {
        self.faults.values().sum()
    }
}

/// Run `args` under chaos; if it fails, once more (still under chaos). True if the first run
/// converged. A second failure fails the test with both runs' errors.
fn converge(s: &Stage, args: &[&str], what: &str, seed: u64) -> bool {
    let first = s.run(args);
    if first.status.success() {
        return true;
    }
    let second = s.run(args);
    assert!(
        second.status.success(),
        "seed {seed}: {what} did not converge on a re-run\nfirst: {}\nsecond: {}",
        String::from_utf8_lossy(&first.stderr),
        String::from_utf8_lossy(&second.stderr)
    );
    false
}

/// After a converged deploy, with the chaos off: exactly one of everything, as deployed, and a
/// deploy that changes nothing.
async fn check_converged(s: &Stage, row: &mut Row) -> String {
    let apis = s.apis_named().await;
    row.duplicates += apis.saturating_sub(1) as u64;
    let events = ok(&s.deploy(&[]));
    let report = last(&events);
    let api_id = api_id_of(report);
    check_deployed(&s.moto, &s.name, &api_id).await;
    assert_eq!(report["applied"], 0, "a deploy after convergence: {report}");
    assert_eq!(s.apis_named().await, 1);
    api_id
}

fn table(rows: &[(&str, &Row)]) -> String {
    let mut out = String::from(
        "| scenario | runs | faults injected (throttle/500/lost) | converged first time | converged on re-run | duplicates | orphans |\n| --- | --- | --- | --- | --- | --- | --- |\n",
    );
    for (name, r) in rows {
        let f = |k| r.faults.get(&k).copied().unwrap_or(0);
        let _ = writeln!(
            out,
            "| {name} | {} | {} ({}/{}/{}) | {} | {} | {} | {} |",
            r.runs,
            r.faults(),
            f(ChaosFault::Throttle),
            f(ChaosFault::ServerError),
            f(ChaosFault::LostAnswer),
            r.first_time,
            r.on_rerun,
            r.duplicates,
            r.orphans
        );
    }
    out
}

fn record(
    row: &mut Row,
    before: &BTreeMap<ChaosFault, u64>,
    after: &BTreeMap<ChaosFault, u64>,
    first: bool,
) {
    row.runs += 1;
    for (kind, n) in after {
        *row.faults.entry(*kind).or_default() += n - before.get(kind).copied().unwrap_or(0);
    }
    if first {
        row.first_time += 1;
    } else {
        row.on_rerun += 1;
    }
}

#[tokio::test]
async fn deploys_and_destroys_converge_under_seeded_throttles_and_server_errors() {
    let seeds = env_number("CHATCTL_FAULT_SEEDS", 3);
    let (mut fresh, mut code, mut destroy) = (Row::default(), Row::default(), Row::default());
    for seed in 1..=seeds {
        let s = Stage::new();
        let deploy = ["deploy", "--yes", "--output", "json", "--artifacts"];
        let dir = s.artifacts.path().to_str().unwrap().to_owned();
        let mut args = deploy.to_vec();
        args.push(&dir);

        // From nothing.
        s.proxy.set_chaos(Some(Chaos {
            seed,
            percent: PERCENT,
        }));
        let before = s.proxy.chaos_injected();
        let first = converge(&s, &args, "a deploy from nothing", seed);
        s.proxy.set_chaos(None);
        record(&mut fresh, &before, &s.proxy.chaos_injected(), first);
        check_converged(&s, &mut fresh).await;

        // A code change to both functions: both aliases end on versions of the new code.
        let functions = [
            format!("{}-ws", s.prefix()),
            format!("{}-fanout", s.prefix()),
        ];
        let mut old = vec![];
        for f in &functions {
            old.push(alias_of(&s.moto, f).await.1);
        }
        let flavour = format!("seed{seed}");
        fake_artifacts_of(s.artifacts.path(), &flavour, &flavour);
        s.proxy.set_chaos(Some(Chaos {
            seed: seed + 1_000,
            percent: PERCENT,
        }));
        let before = s.proxy.chaos_injected();
        let first = converge(&s, &args, "a code change", seed);
        s.proxy.set_chaos(None);
        record(&mut code, &before, &s.proxy.chaos_injected(), first);
        check_converged(&s, &mut code).await;
        let lambda = aws_sdk_lambda::Client::new(&s.moto);
        for (f, old) in functions.iter().zip(&old) {
            let uploaded = lambda
                .get_function_configuration()
                .function_name(f)
                .send()
                .await
                .unwrap()
                .code_sha256
                .unwrap();
            let live = alias_of(&s.moto, f).await.1;
            assert!(
                live == uploaded && live != *old,
                "seed {seed}: {f} serves {live}"
            );
        }
        let releases = ok(&s.run(&["releases", "--output", "json"]));
        let live = last(&releases)["releases"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["live"] == true)
            .count();
        assert_eq!(live, 1, "one live release: {releases:?}");

        // Destroy.
        s.proxy.set_chaos(Some(Chaos {
            seed: seed + 2_000,
            percent: PERCENT,
        }));
        let before = s.proxy.chaos_injected();
        let first = converge(
            &s,
            &["destroy", "--yes", "--output", "json"],
            "a destroy",
            seed,
        );
        s.proxy.set_chaos(None);
        record(&mut destroy, &before, &s.proxy.chaos_injected(), first);
        let left = leftovers(&s.moto, &s.name).await;
        destroy.orphans += left.len() as u64;
        assert_eq!(
            left,
            Vec::<String>::new(),
            "seed {seed}: destroy left these"
        );
    }
    eprintln!(
        "deploy fault matrix, {PERCENT}% of calls faulted, seeds 1..={seeds}:\n{}",
        table(&[
            ("from nothing", &fresh),
            ("code change", &code),
            ("destroy", &destroy)
        ])
    );
    for row in [&fresh, &code, &destroy] {
        assert!(row.faults() > 0, "the chaos injected nothing: {row:?}");
        assert_eq!((row.duplicates, row.orphans), (0, 0));
    }
}

/// The first AWS call of a create step, as the proxy names it, and what it mentions: where a
/// `kill -9` lands "at" that step.
fn first_call(kind: &str, name: &str) -> (String, String) {
    let quoted = format!("\"{name}\"");
    let (operation, needle) = match kind {
        "table" => ("CreateTable", quoted),
        "topic" => ("CreateTopic", name.to_owned()),
        "queue" => ("CreateQueue", name.to_owned()),
        "parameter" => ("PutParameter", quoted),
        "log-group" => ("CreateLogGroup", quoted),
        "api" => ("CreateApi", quoted),
        "role" => ("CreateRole", name.to_owned()),
        "function" => ("CreateFunction", quoted),
        // `chat-…-ws:live`: the version is published first.
        "alias" => (
            "PublishVersion",
            format!("functions/{}/", name.split(':').next().unwrap()),
        ),
        "event-invoke-config" => ("PUT /2019-09-25/functions/*", name.to_owned()),
        "event-source-mapping" => ("POST /2015-03-31/event-source-mappings*", String::new()),
        "schedule" => ("POST /schedules/*", name.to_owned()),
        "integration" => ("CreateIntegration", String::new()),
        // `chat-…-api/$connect`: the route key, quoted in the body.
        "route" => (
            "CreateRoute",
            format!("\"{}\"", name.rsplit('/').next().unwrap()),
        ),
        "stage" => ("CreateStage", String::new()),
        "permission" => ("AddPermission", String::new()),
        "subscription" => ("Subscribe", String::new()),
        other => panic!("no first call known for a {other}"),
    };
    (operation.to_owned(), needle)
}

#[tokio::test]
async fn a_kill_at_every_apply_step_converges_on_the_next_run() {
    // Every step of a deploy from nothing, or (the CI default) every fourth, each killed twice:
    // with its first call held before it reaches AWS, and after AWS made the change but before
    // the answer came back.
    let every = match std::env::var("CHATCTL_KILL_STEPS").as_deref() {
        Ok("all") => 1,
        _ => 4,
    };
    let probe = Stage::new();
    let planned = ok(&probe.run(&["plan", "--output", "json"]));
    let steps: Vec<(String, String)> = last(&planned)["actions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            assert_eq!(a["change"], "create", "{a}");
            let name = a["name"].as_str().unwrap();
            let generic = name.replace(&probe.name, "{stage}");
            (a["kind"].as_str().unwrap().to_owned(), generic)
        })
        .collect();
    assert_eq!(steps.len() as u64, RESOURCES, "{steps:?}");
    let (mut killed, mut converged) = (0, 0);
    let mut rows = String::new();
    for (i, (kind, generic)) in steps.iter().enumerate() {
        if i % every != 0 {
            continue;
        }
        for after_forward in [false, true] {
            let s = Stage::new();
            let name = generic.replace("{stage}", &s.name);
            let (operation, needle) = first_call(kind, &name);
            let needle = (!needle.is_empty()).then_some(needle.as_str());
            let (fault, gate) = if after_forward {
                Fault::hold_after_forward(&operation, needle)
            } else {
                Fault::hold(&operation, needle)
            };
            s.proxy.inject(fault);
            assert!(
                s.deploy_killed_at(&gate).await,
                "the deploy never got to {kind} {name} ({operation})"
            );
            killed += 1;
            s.proxy.clear_faults();
            let events = ok(&s.deploy(&[]));
            let report = last(&events);
            check_deployed(&s.moto, &s.name, &api_id_of(report)).await;
            assert_eq!(s.apis_named().await, 1, "{kind} {name}");
            assert_eq!(last(&ok(&s.deploy(&[])))["applied"], 0, "{kind} {name}");
            ok(&s.run(&["destroy", "--yes", "--output", "json"]));
            assert_eq!(leftovers(&s.moto, &s.name).await, Vec::<String>::new());
            converged += 1;
            let _ = writeln!(
                rows,
                "| {kind} {generic} | {} | {operation} | converged, {} applied |",
                if after_forward {
                    "after AWS made it"
                } else {
                    "before it reached AWS"
                },
                report["applied"]
            );
        }
    }
    eprintln!(
        "kill -9 at apply steps: {killed} kills, {converged} converged on the next run\n\
         | step | killed | held call | next run |\n| --- | --- | --- | --- |\n{rows}"
    );
    assert_eq!(killed, converged);
    assert!(killed >= 2 * (RESOURCES as usize / every), "{killed}");
}
