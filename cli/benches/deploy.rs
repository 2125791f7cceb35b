//! `cargo bench -p chatctl --bench deploy [-- --runs N]`: how long `chatctl deploy` and `destroy`
//! take against a moto server on this machine, and how many AWS calls they make: a full deploy
//! from nothing, a no-op deploy, a code-only deploy and a destroy. The baseline, measured in the
//! same process, is one AWS call from an SDK client to the same moto, so each figure can be read
//! as "so many round trips' worth". Real AWS adds its own latency and waits on top (see
//! docs/operations.md).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::Command;
use std::time::{Duration, Instant};

use chatctl_e2e::bench_arg;
use chatctl_e2e::moto::{Moto, fake_artifacts};
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_chatctl");

fn chatctl(moto: &Moto, stage: &str, args: &[&str]) -> (Duration, Value) {
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
            &moto.endpoint,
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

fn main() {
    let runs = bench_arg("--runs", 5);
    let moto = Moto::shared();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let sts = aws_sdk_sts::Client::new(&moto.sdk_config());
    let mut baseline = Vec::new();
    for _ in 0..50 {
        let started = Instant::now();
        runtime.block_on(sts.get_caller_identity().send()).unwrap();
        baseline.push(started.elapsed());
    }
    let call = median(baseline);

    let steps = ["full deploy", "no-op deploy", "code-only deploy", "destroy"];
    let mut times: Vec<Vec<Duration>> = vec![Vec::new(); steps.len()];
    let mut calls: Vec<(u64, u64)> = vec![(0, 0); steps.len()];
    for run in 0..runs {
        let stage = format!(
            "bench{run}{}",
            &ulid::Ulid::generate().to_string().to_lowercase()[20..]
        );
        let dir = tempfile::tempdir().unwrap();
        let artifacts = dir.path().to_str().unwrap().to_owned();
        fake_artifacts(dir.path(), "v1");
        let deploy = ["deploy", "--artifacts", &artifacts];
        let mut record = |i: usize, (elapsed, report): (Duration, Value)| {
            times[i].push(elapsed);
            calls[i] = (
                report["awsCalls"]["total"].as_u64().unwrap(),
                report["awsCalls"]["changing"].as_u64().unwrap(),
            );
        };
        record(0, chatctl(moto, &stage, &deploy));
        record(1, chatctl(moto, &stage, &deploy));
        fake_artifacts(dir.path(), &format!("v{}", run + 2));
        record(2, chatctl(moto, &stage, &deploy));
        record(3, chatctl(moto, &stage, &["destroy"]));
    }
    println!(
        "chatctl against moto on 127.0.0.1, median of {runs} runs (wall time includes process start)"
    );
    println!(
        "baseline: one AWS call from an SDK client in this process: {:.2} ms",
        call.as_secs_f64() * 1000.0
    );
    println!(
        "{:<18} {:>10} {:>10} {:>10} {:>16}",
        "step", "wall", "AWS calls", "changing", "× one AWS call"
    );
    for (i, step) in steps.iter().enumerate() {
        let t = median(times[i].clone());
        println!(
            "{:<18} {:>8.0}ms {:>10} {:>10} {:>15.0}×",
            step,
            t.as_secs_f64() * 1000.0,
            calls[i].0,
            calls[i].1,
            t.as_secs_f64() / call.as_secs_f64()
        );
    }
}
