//! `chatctl plan` against moto: from nothing it plans every resource of the stage; once some exist
//! (created here through the SDK, independently of chatctl's code), it plans only what differs.
//! moto lacks parts of API Gateway v2 (no CreateDeployment, UpdateStage fails): observing those
//! is covered when deploy lands with recorded responses; here the API does not exist yet.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::process::Command;

use chatctl_e2e::moto::{Moto, fake_artifacts};
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_chatctl");

fn plan(stage: &str, artifacts: &Path, endpoint: &str) -> (i32, Value) {
    let out = Command::new(BIN)
        .args([
            "plan",
            "--stage",
            stage,
            "--region",
            "us-east-1",
            "--endpoint-url",
            endpoint,
        ])
        .args([
            "--config",
            "/nonexistent/chatctl.toml",
            "--detailed-exitcode",
            "--output",
            "json",
            "--artifacts",
        ])
        .arg(artifacts)
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let json = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {stderr}"));
    (out.status.code().unwrap(), json)
}

fn changes_of(plan: &Value) -> Vec<(String, String, String)> {
    plan["actions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            let fields: Vec<_> = a["fields"]
                .as_array()
                .map(|f| {
                    f.iter()
                        .map(|f| f["field"].as_str().unwrap().to_owned())
                        .collect()
                })
                .unwrap_or_default();
            (
                a["name"].as_str().unwrap().to_owned(),
                a["change"].as_str().unwrap().to_owned(),
                fields.join(","),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn plan_reads_the_stage_and_plans_only_what_differs() {
    let moto = Moto::shared();
    let stage = format!(
        "ci{}",
        &ulid::Ulid::generate().to_string().to_lowercase()[20..]
    );
    let artifacts = tempfile::tempdir().unwrap();
    fake_artifacts(artifacts.path(), "v1");

    let (code, first) = plan(&stage, artifacts.path(), &moto.endpoint);
    assert_eq!(code, 2, "changes → exit 2 with --detailed-exitcode");
    let changes = changes_of(&first);
    assert_eq!(changes.len(), 35);
    assert!(changes.iter().all(|(_, c, _)| c == "create"), "{changes:?}");

    // Create some of the stage independently: tables (untagged), topic, secret, one log group.
    let config = moto.sdk_config();
    let names = chat_aws::TableNames::for_stage("chat", &stage);
    chat_aws::tables::ensure(&aws_sdk_dynamodb::Client::new(&config), &names)
        .await
        .unwrap();
    aws_sdk_sns::Client::new(&config)
        .create_topic()
        .name(format!("chat-{stage}-events"))
        .send()
        .await
        .unwrap();
    let logs = aws_sdk_cloudwatchlogs::Client::new(&config);
    let group = format!("/aws/lambda/chat-{stage}-ws");
    logs.create_log_group()
        .log_group_name(&group)
        .tags("chatctl:app", "chat")
        .tags("chatctl:stage", &stage)
        .send()
        .await
        .unwrap();
    logs.put_retention_policy()
        .log_group_name(&group)
        .retention_in_days(7)
        .send()
        .await
        .unwrap();

    let (code, second) = plan(&stage, artifacts.path(), &moto.endpoint);
    assert_eq!(code, 2);
    let changes = changes_of(&second);
    let find = |name: &str| changes.iter().find(|(n, _, _)| n == name).cloned().unwrap();
    // The tables match the model in keys, indexes, billing and TTL: only the tags differ.
    for table in [&names.messages, &names.connections] {
        assert_eq!(
            find(table),
            (table.clone(), "update".to_owned(), "tags".to_owned())
        );
    }
    assert_eq!(find(&format!("chat-{stage}-events")).2, "tags");
    assert_eq!(
        find(&group),
        (
            group.clone(),
            "update".to_owned(),
            "retentionDays".to_owned()
        )
    );
    assert_eq!(
        find(&format!("/aws/lambda/chat-{stage}-fanout")).1,
        "create"
    );
    assert_eq!(find(&format!("chat-{stage}-ws")).1, "create");
}

#[test]
fn plan_without_artifacts_says_to_build_first() {
    let out = Command::new(BIN)
        .args([
            "plan",
            "--stage",
            "ci",
            "--region",
            "us-east-1",
            "--artifacts",
            "/nonexistent",
            "--detailed-exitcode",
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(1),
        "errors exit 1, never 2: {stderr}"
    );
    assert!(stderr.contains("run `chatctl build` first"), "{stderr}");
}

/// `plan` needs no build: without zips (none at the default place, no `--artifacts`) it plans
/// everything but code, says so, and a deployed stage plans no changes. With a build whose code
/// differs, the functions' code is planned.
#[test]
fn plan_without_a_build_takes_the_code_as_deployed() {
    let moto = Moto::shared();
    let stage = format!(
        "ci{}",
        &ulid::Ulid::generate().to_string().to_lowercase()[20..]
    );
    let cwd = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| {
        let out = Command::new(BIN)
            .args(args)
            .args(["--stage", &stage, "--region", "us-east-1"])
            .args([
                "--endpoint-url",
                &moto.endpoint,
                "--config",
                "/nonexistent/chatctl.toml",
            ])
            .current_dir(cwd.path())
            .env("AWS_ACCESS_KEY_ID", "testing")
            .env("AWS_SECRET_ACCESS_KEY", "testing")
            .env("CI", "true")
            .output()
            .unwrap();
        (
            out.status.code().unwrap(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let plan_json = |extra: &[&str]| {
        let mut args = vec!["plan", "--detailed-exitcode", "--output", "json"];
        args.extend_from_slice(extra);
        let (code, stdout, stderr) = run(&args);
        let json: Value = serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stderr}"));
        (code, json)
    };

    let (code, first) = plan_json(&[]);
    assert_eq!(code, 2);
    assert_eq!(first["codeFrom"], Value::Null);
    let ws = first["actions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["name"] == format!("chat-{stage}-ws") && a["kind"] == "function")
        .unwrap();
    assert_eq!(ws["change"], "create");
    let (_, text, _) = run(&["plan"]);
    // The repository's build directory, where `chatctl build` would have put the zips.
    assert!(
        text.contains("no build at ") && text.contains("target/lambda-zips, so"),
        "{text}"
    );

    let artifacts = tempfile::tempdir().unwrap();
    fake_artifacts(artifacts.path(), "v1");
    let dir = artifacts.path().to_str().unwrap();
    let (code, _, stderr) = run(&["deploy", "--yes", "--output", "json", "--artifacts", dir]);
    assert_eq!(code, 0, "{stderr}");
    let (code, plan) = plan_json(&[]);
    assert_eq!(code, 0, "{plan}");

    fake_artifacts(artifacts.path(), "v2");
    let (code, plan) = plan_json(&["--artifacts", dir]);
    assert_eq!(code, 2);
    assert_eq!(
        changes_of(&plan)
            .into_iter()
            .filter(|(_, change, _)| change != "keep")
            .collect::<Vec<_>>(),
        // The function's code, then the release the `live` alias serves.
        vec![
            (
                format!("chat-{stage}-ws"),
                "update".to_owned(),
                "codeSha256".to_owned()
            ),
            (
                format!("chat-{stage}-ws:live"),
                "update".to_owned(),
                "codeSha256".to_owned()
            )
        ]
    );
    let (code, _, stderr) = run(&["destroy", "--yes", "--output", "json"]);
    assert_eq!(code, 0, "{stderr}");
}
