//! `cargo bench -p chatctl --bench deploy [-- --runs N --latency-runs M]`: how long `chatctl
//! deploy` and `destroy` take, one action at a time (`--parallel 1`) and in parallel (the
//! default), and how many AWS calls they make: a full deploy from nothing, a no-op deploy, a
//! code-only deploy and a destroy. First against moto as it is (instant), then through the test
//! proxy's AWS latency model (round trips, tables CREATING, IAM propagation, functions Pending),
//! where the waits dominate as on AWS. The baseline, measured in the same process, is one AWS
//! call from an SDK client to the same endpoint, so each figure can be read as "so many round
//! trips' worth".

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::Command;
use std::time::{Duration, Instant};

use chatctl_e2e::bench_arg;
use chatctl_e2e::latency::Latency;
use chatctl_e2e::moto::{Moto, fake_artifacts, fake_artifacts_of};
use chatctl_e2e::proxy::{AwsProxy, sdk_config_for};
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_chatctl");

fn chatctl(endpoint: &str, stage: &str, args: &[&str]) -> (Duration, Value) {
    let started = Instant::now();
    let out = Command::new(BIN)
        .args(args)
        .args([
            "--stage",
            stage,
            "--region",
            "us-east-1",
            "--yes",
            "--output",
            "json",
        ])
        .args([
            "--endpoint-url",
            endpoint,
            "--config",
            "/nonexistent/chatctl.toml",
        ])
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("CI", "true")
        .output()
        .unwrap();
    let elapsed = started.elapsed();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let last = String::from_utf8_lossy(&out.stdout)
        .lines()
        .last()
        .map(|l| serde_json::from_str(l).unwrap())
        .unwrap();
    (elapsed, last)
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// One pass over the four steps (a stage of its own) with `extra` flags; the wall times and the
/// last pass's call counts.
fn pass(
    endpoint: &str,
    extra: &[&str],
    run: usize,
    times: &mut [Vec<Duration>],
    calls: &mut [(u64, u64)],
) {
    let stage = format!(
        "bench{run}{}",
        &ulid::Ulid::generate().to_string().to_lowercase()[20..]
    );
    let dir = tempfile::tempdir().unwrap();
    let artifacts = dir.path().to_str().unwrap().to_owned();
    fake_artifacts(dir.path(), "v1");
    let deploy: Vec<&str> = ["deploy", "--artifacts", &artifacts]
        .into_iter()
        .chain(extra.iter().copied())
        .collect();
    let destroy: Vec<&str> = std::iter::once("destroy")
        .chain(extra.iter().copied())
        .collect();
    let mut record = |i: usize, (elapsed, report): (Duration, Value)| {
        times[i].push(elapsed);
        calls[i] = (
            report["awsCalls"]["total"].as_u64().unwrap(),
            report["awsCalls"]["changing"].as_u64().unwrap(),
        );
    };
    record(0, chatctl(endpoint, &stage, &deploy));
    record(1, chatctl(endpoint, &stage, &deploy));
    // A change to shared code: both zips change.
    let next = format!("v{}", run + 2);
    fake_artifacts_of(dir.path(), &next, &next);
    record(2, chatctl(endpoint, &stage, &deploy));
    record(3, chatctl(endpoint, &stage, &destroy));
}

const STEPS: [&str; 4] = ["full deploy", "no-op deploy", "code-only deploy", "destroy"];

/// The median time of one SDK call to `endpoint`, measured in this process.
fn one_call(endpoint: &str) -> Duration {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let sts = aws_sdk_sts::Client::new(&sdk_config_for(endpoint));
    let mut baseline = Vec::new();
    for _ in 0..20 {
        let started = Instant::now();
        runtime.block_on(sts.get_caller_identity().send()).unwrap();
        baseline.push(started.elapsed());
    }
    median(baseline)
}

/// Sequential (`--parallel 1`) and parallel (the default) passes against `endpoint`, printed.
fn compare(title: &str, endpoint: &str, runs: usize) {
    let call = one_call(endpoint);
    let modes: [(&str, &[&str]); 2] = [("sequential", &["--parallel", "1"]), ("parallel", &[])];
    let mut times = vec![vec![Vec::new(); STEPS.len()]; modes.len()];
    let mut calls = vec![vec![(0, 0); STEPS.len()]; modes.len()];
    // A pass not counted first: moto sets up each service's backend on its first call.
    pass(
        endpoint,
        &[],
        runs,
        &mut vec![Vec::new(); STEPS.len()],
        &mut vec![(0, 0); STEPS.len()],
    );
    for run in 0..runs {
        for (m, (_, extra)) in modes.iter().enumerate() {
            pass(endpoint, extra, run, &mut times[m], &mut calls[m]);
        }
    }
    println!("{title}, median of {runs} runs (wall time includes process start)");
    println!(
        "baseline: one AWS call from an SDK client in this process: {:.2} ms",
        call.as_secs_f64() * 1000.0
    );
    println!(
        "{:<18} {:>12} {:>12} {:>10} {:>10} {:>10} {:>14}",
        "step", "sequential", "parallel", "seq/par", "AWS calls", "changing", "par ÷ one call"
    );
    for (i, step) in STEPS.iter().enumerate() {
        let seq = median(times[0][i].clone());
        let par = median(times[1][i].clone());
        println!(
            "{:<18} {:>10.0}ms {:>10.0}ms {:>9.2}× {:>10} {:>10} {:>13.0}×",
            step,
            seq.as_secs_f64() * 1000.0,
            par.as_secs_f64() * 1000.0,
            seq.as_secs_f64() / par.as_secs_f64(),
            calls[1][i].0,
            calls[1][i].1,
            par.as_secs_f64() / call.as_secs_f64()
        );
    }
    println!();
}

fn main() {
    let runs = bench_arg("--runs", 3);
    let modelled_runs = bench_arg("--latency-runs", 1);
    let moto = Moto::shared();
    compare("chatctl against moto on 127.0.0.1", &moto.endpoint, runs);
    // The same moto behind the proxy's AWS latency model: round trips, tables CREATING, IAM
    // propagation, functions Pending (tests/src/latency.rs; its figures are assumptions).
    let proxy = AwsProxy::start(&moto.endpoint);
    let latency = Latency::aws();
    proxy.set_latency(latency.clone());
    compare(
        &format!("chatctl against moto under the AWS latency model {latency:?}"),
        &proxy.endpoint,
        modelled_runs,
    );
}
