//! Releases and rollback against moto: each deploy that puts new code live publishes versions and
//! records a release; `rollback` moves the `live` aliases back with one UpdateAlias per function;
//! a deploy over a rollback needs `--roll-forward`; `keep_releases` prunes old versions. Where the
//! aliases point is read with plain SDK clients, never through chatctl.
//!
//! moto gaps: it numbers a new version len(versions)+1, so after a prune it would reuse a number
//! (AWS never does) — the prune is this test's last publish; and it answers `LastModifiedUser`
//! "N/A" in the parameter history, where AWS names the caller's ARN.

use super::*;

/// The version `function`'s `live` alias serves, and that version's code hash.
pub(super) async fn alias_of(config: &SdkConfig, function: &str) -> (String, String) {
    let lambda = aws_sdk_lambda::Client::new(config);
    let version = lambda
        .get_alias()
        .function_name(function)
        .name("live")
        .send()
        .await
        .unwrap()
        .function_version
        .unwrap();
    let sha = lambda
        .get_function_configuration()
        .function_name(function)
        .qualifier(&version)
        .send()
        .await
        .unwrap()
        .code_sha256
        .unwrap();
    (version, sha)
}

fn git(dir: &std::path::Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(["-c", "user.name=ci", "-c", "user.email=ci@example.com"])
        .args(args)
        .output()
        .expect("git runs");
    assert!(out.status.success(), "git {args:?}: {out:?}");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

fn failed(out: &Output) -> Value {
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    serde_json::from_str(stderr.lines().last().unwrap()).unwrap_or_else(|e| panic!("{e}: {stderr}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn deploys_are_releases_a_rollback_moves_the_aliases_back_and_a_deploy_over_it_is_explicit() {
    let s = Stage::new();
    let project = s.artifacts.path();
    git(project, &["init", "-q"]);
    git(project, &["commit", "-q", "--allow-empty", "-m", "first"]);
    let commit = git(project, &["rev-parse", "HEAD"]);
    let ws = format!("{}-ws", s.prefix());
    let fanout = format!("{}-fanout", s.prefix());

    // Release 1: the first deploy publishes version 1 of each function.
    let first = last(&ok(&s.deploy(&[]))).clone();
    assert_eq!(first["release"], 1, "{first}");
    let (ws_v1, ws_sha1) = alias_of(&s.moto, &ws).await;
    let (fanout_v1, _) = alias_of(&s.moto, &fanout).await;

    // Release 2: new code for both, new versions behind both aliases.
    fake_artifacts_of(project, "v2", "v2");
    let second = last(&ok(&s.deploy(&[]))).clone();
    assert_eq!(second["release"], 2, "{second}");
    let (ws_v2, ws_sha2) = alias_of(&s.moto, &ws).await;
    let (fanout_v2, _) = alias_of(&s.moto, &fanout).await;
    assert_ne!(ws_v2, ws_v1);
    assert_ne!(fanout_v2, fanout_v1);
    assert_ne!(ws_sha2, ws_sha1);
    // A no-op deploy is no release.
    assert_eq!(last(&ok(&s.deploy(&[])))["release"], Value::Null);

    let listed = ok(&s.run(&["releases", "--output", "json"]));
    let releases = listed[0]["releases"].as_array().unwrap();
    assert_eq!(releases.len(), 2, "{listed:?}");
    assert_eq!(releases[0]["number"], 2);
    assert_eq!(releases[0]["kind"], "deploy");
    assert_eq!(releases[0]["live"], true);
    assert_eq!(releases[1]["live"], false);
    assert_eq!(releases[0]["functions"][&ws]["version"], ws_v2.as_str());
    assert_eq!(
        releases[0]["functions"][&ws]["codeSha256"],
        ws_sha2.as_str()
    );
    assert_eq!(releases[1]["functions"][&ws]["version"], ws_v1.as_str());
    assert_eq!(releases[0]["commit"], commit.as_str());
    assert!(
        releases[0]["at"].as_str().unwrap().starts_with("20"),
        "{listed:?}"
    );
    let text = s.run(&["releases"]);
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(text.contains("*    2  deploy"), "{text}");
    assert!(
        text.contains(&format!("ws v{ws_v1} ({})", &ws_sha1[..8])),
        "{text}"
    );

    // Without --yes and a terminal, nothing moves.
    let refused = s.run(&["rollback"]);
    assert_eq!(refused.status.code(), Some(2), "{refused:?}");
    assert_eq!(alias_of(&s.moto, &ws).await.0, ws_v2);

    // Rollback: the aliases go back to release 1's versions, one UpdateAlias each and no other
    // change but the release record (and the lock).
    s.proxy.take_calls();
    let started = Instant::now();
    let rolled = last(&ok(&s.run(&["rollback", "--yes", "--output", "json"]))).clone();
    let wall = started.elapsed();
    assert_eq!(
        (rolled["from"].clone(), rolled["to"].clone()),
        (2.into(), 1.into()),
        "{rolled}"
    );
    assert_eq!(rolled["release"], 3);
    assert_eq!(rolled["moved"].as_array().unwrap().len(), 2, "{rolled}");
    let changes = s.changes();
    let mut changed = ops(&changes);
    changed.sort();
    assert_eq!(
        changed,
        ["PutParameter", "UpdateAlias", "UpdateAlias"],
        "{changes:?}"
    );
    // Shown with --nocapture, for the note: what a rollback costs.
    eprintln!(
        "rollback: {:.2}s wall, AWS calls {}",
        wall.as_secs_f64(),
        rolled["awsCalls"]
    );
    assert_eq!(
        alias_of(&s.moto, &ws).await,
        (ws_v1.clone(), ws_sha1.clone())
    );
    assert_eq!(alias_of(&s.moto, &fanout).await.0, fanout_v1);
    let listed = ok(&s.run(&["releases", "--output", "json"]));
    let latest = &listed[0]["releases"][0];
    assert_eq!(
        (latest["kind"].clone(), latest["to"].clone()),
        ("rollback".into(), 1.into())
    );
    assert_eq!(latest["live"], true);
    let status = s.run(&["status", "--output", "json"]);
    let status: Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(status["release"]["number"], 3, "{status}");
    assert_eq!(status["release"]["kind"], "rollback", "{status}");
    let status = s.run(&["status"]);
    let status = String::from_utf8_lossy(&status.stdout);
    assert!(
        status.contains("live: release 3 (rollback to 1)"),
        "{status}"
    );

    // The same build again (a CI job re-run) would undo the rollback: refused, nothing moves.
    let over = failed(&s.deploy(&[]));
    assert_eq!(over["kind"], "rolled-back", "{over}");
    assert!(
        over["hint"].as_str().unwrap().contains("--roll-forward"),
        "{over}"
    );
    assert_eq!(alias_of(&s.moto, &ws).await.0, ws_v1);
    // A deploy that puts no new version live still goes ahead over a rollback: here the build
    // that was rolled back to, with a setting changed.
    fake_artifacts(project, "v1");
    std::fs::write(
        &s.config,
        format!(
            "app = \"chat\"\n[stages.{}]\nlog_retention_days = 30\n",
            s.name
        ),
    )
    .unwrap();
    let setting = last(&ok(&s.deploy(&[]))).clone();
    assert_eq!(setting["release"], Value::Null, "{setting}");
    assert_eq!(alias_of(&s.moto, &ws).await.0, ws_v1);

    // Rolling forward is explicit: the aliases serve the new build's code again.
    fake_artifacts_of(project, "v2", "v2");
    let forward = last(&ok(&s.deploy(&["--roll-forward"]))).clone();
    assert_eq!(forward["release"], 4, "{forward}");
    assert_eq!(alias_of(&s.moto, &ws).await.1, ws_sha2);

    // A release that is not in the log is a clear error; so is rolling back from the first.
    let missing = failed(&s.run(&["rollback", "--yes", "--to", "99", "--output", "json"]));
    assert!(
        missing["message"]
            .as_str()
            .unwrap()
            .contains("no release 99"),
        "{missing}"
    );
    assert!(
        missing["hint"]
            .as_str()
            .unwrap()
            .contains("chatctl releases"),
        "{missing}"
    );

    // keep_releases = 2: this deploy publishes the third version and prunes the first; the
    // release that needs it is marked, and cannot be rolled back to.
    fake_artifacts_of(project, "v3", "v3");
    ok(&s.deploy(&["--set", "keep_releases=2"]));
    let versions = aws_sdk_lambda::Client::new(&s.moto)
        .list_versions_by_function()
        .function_name(&ws)
        .send()
        .await
        .unwrap();
    let published: Vec<&str> = versions
        .versions()
        .iter()
        .filter_map(|v| v.version())
        .filter(|v| *v != "$LATEST")
        .collect();
    assert_eq!(published.len(), 2, "{published:?}");
    assert!(!published.contains(&ws_v1.as_str()), "{published:?}");
    let listed = ok(&s.run(&["releases", "--output", "json"]));
    let first_release = listed[0]["releases"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["number"] == 1)
        .unwrap()
        .clone();
    assert_eq!(first_release["pruned"], true, "{first_release}");
    let live_before = alias_of(&s.moto, &ws).await;
    let pruned = failed(&s.run(&["rollback", "--yes", "--to", "1", "--output", "json"]));
    assert!(
        pruned["message"]
            .as_str()
            .unwrap()
            .contains("no longer published"),
        "{pruned}"
    );
    assert_eq!(alias_of(&s.moto, &ws).await, live_before);

    // Destroy takes the release log with the functions.
    ok(&s.run(&["destroy", "--yes", "--output", "json"]));
    assert_eq!(leftovers(&s.moto, &s.name).await, Vec::<String>::new());
}

/// A stage deployed before releases had its chat subscription and presence mapping on the
/// function itself ($LATEST). Made here by hand next to a current stage's: plan shows both as
/// deletions, one deploy removes them, and what stays invokes the alias only.
#[tokio::test(flavor = "multi_thread")]
async fn the_triggers_of_a_stage_from_before_releases_are_moved_onto_the_alias() {
    let s = Stage::new();
    ok(&s.deploy(&[]));
    let prefix = s.prefix();
    let fanout = format!("{prefix}-fanout");
    let unqualified = format!("arn:aws:lambda:us-east-1:123456789012:function:{fanout}");
    let topic_arn = format!("arn:aws:sns:us-east-1:123456789012:{prefix}-events");
    let queue_arn = format!("arn:aws:sqs:us-east-1:123456789012:{prefix}-presence");
    let sns = aws_sdk_sns::Client::new(&s.moto);
    let lambda = aws_sdk_lambda::Client::new(&s.moto);
    sns.subscribe()
        .topic_arn(&topic_arn)
        .protocol("lambda")
        .endpoint(&unqualified)
        .send()
        .await
        .unwrap();
    lambda
        .create_event_source_mapping()
        .function_name(&fanout)
        .event_source_arn(&queue_arn)
        .send()
        .await
        .unwrap();

    let plan = s.run(&["plan", "--detailed-exitcode"]);
    let text = String::from_utf8_lossy(&plan.stdout);
    assert_eq!(plan.status.code(), Some(2), "{text}");
    assert!(
        text.contains(&format!(
            "sns subscription {prefix}-events/{fanout} ($LATEST)"
        )),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "lambda event source mapping {fanout}/{prefix}-presence ($LATEST)"
        )),
        "{text}"
    );
    s.proxy.take_calls();
    ok(&s.deploy(&[]));
    let mut changed = ops(&s.changes());
    changed.sort();
    // (The proxy names Lambda's REST calls it has no name for by method and path.)
    assert_eq!(changed.len(), 2, "{changed:?}");
    assert!(
        changed[0].starts_with("DELETE /2015-03-31/event-source-mappings/"),
        "{changed:?}"
    );
    assert_eq!(changed[1], "Unsubscribe");

    let endpoints: Vec<String> = subscriptions_of(&sns, &topic_arn)
        .await
        .into_iter()
        .filter(|(protocol, ..)| protocol == "lambda")
        .map(|(_, endpoint, ..)| endpoint)
        .collect();
    assert_eq!(endpoints, [live_arn(&fanout)]);
    let legacy = lambda
        .list_event_source_mappings()
        .function_name(&fanout)
        .send()
        .await
        .unwrap();
    assert_eq!(legacy.event_source_mappings().len(), 0, "{legacy:?}");
    assert_eq!(last(&ok(&s.deploy(&[])))["applied"], 0);
    ok(&s.run(&["destroy", "--yes", "--output", "json"]));
}
