//! The exact error text of the common mistakes, through the real binary: `error:` with what went
//! wrong, `caused by:` lines for the cause chain, `hint:` with what to do, and the exit code (2 for
//! a command-line mistake, 1 for anything else, e.g. a bad chatctl.toml). Every command here fails
//! before any AWS call or any write: the endpoint is a closed port, and each test runs in an empty
//! temporary directory (so no real chatctl.toml is read and the snapshots hold relative paths).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_chatctl");

/// Flags that point a stage command at nothing: it must fail before it would call AWS.
const NO_AWS: [&str; 4] = [
    "--region",
    "us-east-1",
    "--endpoint-url",
    "http://127.0.0.1:9",
];

/// Run `chatctl args` in `dir` with no terminal and none of the settings' environment variables;
/// check the exit code, that nothing went to stdout, and snapshot stderr as `name`.
fn fails(dir: &Path, name: &str, code: i32, args: &[&str]) {
    let out = Command::new(BIN)
        .current_dir(dir)
        .args(args)
        .env_remove("CHATCTL_STAGE")
        .env_remove("CHATCTL_CONFIG")
        .env_remove("CHATCTL_APP")
        .env_remove("CHATCTL_OUTPUT")
        .env_remove("AWS_PROFILE")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("NO_COLOR", "1")
        .output()
        .expect("run chatctl");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(code), "{args:?}: {stderr}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "",
        "{args:?}: nothing on stdout"
    );
    let command: Vec<String> = args.iter().map(|a| quoted(a)).collect();
    insta::with_settings!({ description => format!("chatctl {}", command.join(" ")), omit_expression => true }, {
        insta::assert_snapshot!(name, stderr);
    });
}

/// `a` as a shell would need it written (for the snapshot's description).
fn quoted(a: &str) -> String {
    if !a.is_empty()
        && a.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_=./:".contains(c))
    {
        a.to_owned()
    } else {
        format!("'{a}'")
    }
}

fn empty_dir() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}

fn with_project(toml: &str) -> tempfile::TempDir {
    let dir = empty_dir();
    std::fs::write(dir.path().join("chatctl.toml"), toml).unwrap();
    dir
}

fn plan<'a>(extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec!["plan"];
    args.extend_from_slice(extra);
    args.extend_from_slice(&NO_AWS);
    args
}

#[test]
fn set_without_an_equals_sign_exits_2() {
    let dir = empty_dir();
    let args = plan(&["--stage", "prod", "--set", "nonsense"]);
    fails(dir.path(), "set_not_a_pair", 2, &args);
}

#[test]
fn set_with_a_value_out_of_range_exits_2() {
    let dir = empty_dir();
    let args = plan(&["--stage", "prod", "--set", "timeout_s=900"]);
    fails(dir.path(), "set_out_of_range", 2, &args);
}

#[test]
fn set_with_a_value_of_the_wrong_type_exits_2() {
    let dir = empty_dir();
    let args = plan(&["--stage", "prod", "--set", "memory_mb=lots"]);
    fails(dir.path(), "set_wrong_type", 2, &args);
}

#[test]
fn a_stage_name_in_capitals_exits_2_and_suggests_the_lowercase_one() {
    let dir = empty_dir();
    let args = plan(&["--stage", "Prod"]);
    fails(dir.path(), "stage_name", 2, &args);
}

#[test]
fn a_bad_value_in_the_project_file_names_the_table_and_exits_1() {
    let dir = with_project("[stages.prod]\nmemory_mb = 64\n");
    let args = plan(&["--stage", "prod"]);
    fails(dir.path(), "file_value_out_of_range", 1, &args);
}

#[test]
fn a_malformed_project_file_shows_the_parser_as_the_cause() {
    let dir = with_project("app = \"chat\"\n[stages.prod\nmemory_mb = 1024\n");
    let args = plan(&["--stage", "prod"]);
    fails(dir.path(), "file_malformed", 1, &args);
}

#[test]
fn an_unknown_key_in_the_project_file_lists_the_known_ones() {
    let dir = with_project("[stages.prod]\nmemmory_mb = 1024\n");
    let args = plan(&["--stage", "prod"]);
    fails(dir.path(), "file_unknown_key", 1, &args);
}

#[test]
fn deploy_without_yes_and_without_a_terminal_exits_2() {
    let dir = empty_dir();
    let mut args = vec!["deploy", "--stage", "prod"];
    args.extend_from_slice(&NO_AWS);
    fails(dir.path(), "deploy_needs_yes", 2, &args);
}

#[test]
fn deploy_with_missing_artifacts_says_to_build_first() {
    let dir = empty_dir();
    let mut args = vec![
        "deploy",
        "--stage",
        "prod",
        "--yes",
        "--artifacts",
        "/nonexistent",
    ];
    args.extend_from_slice(&NO_AWS);
    fails(dir.path(), "deploy_missing_artifacts", 1, &args);
    // The same error as JSON: the hint and the causes are fields of the one object.
    args.extend_from_slice(&["--output", "json"]);
    fails(dir.path(), "deploy_missing_artifacts_json", 1, &args);
}

#[test]
fn dev_presence_thresholds_in_the_wrong_order_exit_2() {
    let dir = empty_dir();
    let args = ["dev", "--online-within", "10m", "--data-dir", "data"];
    fails(dir.path(), "dev_presence_thresholds", 2, &args);
    assert!(!dir.path().join("data").exists(), "refused before starting");
}

#[test]
fn dev_presence_window_too_long_exits_2() {
    let dir = empty_dir();
    let args = ["dev", "--presence-window", "30s", "--data-dir", "data"];
    fails(dir.path(), "dev_presence_window", 2, &args);
}

#[test]
fn token_with_a_bad_room_exits_2_before_creating_a_secret() {
    let dir = empty_dir();
    let args = [
        "token",
        "--user",
        "ann",
        "--room",
        "no spaces",
        "--data-dir",
        "data",
    ];
    fails(dir.path(), "token_bad_room", 2, &args);
    assert!(
        !dir.path().join("data").exists(),
        "a refused token creates no data directory or secret"
    );
}

#[test]
fn token_with_an_empty_user_exits_2() {
    let dir = empty_dir();
    let args = ["token", "--user", "", "--data-dir", "data"];
    fails(dir.path(), "token_empty_user", 2, &args);
}

#[test]
fn token_ttl_without_a_unit_is_clap_s_error_and_exits_2() {
    let dir = empty_dir();
    let args = [
        "token",
        "--user",
        "ann",
        "--ttl",
        "10",
        "--data-dir",
        "data",
    ];
    fails(dir.path(), "token_ttl_without_unit", 2, &args);
}

#[test]
fn recall_of_something_that_is_not_an_id_exits_2() {
    let dir = empty_dir();
    let args = ["recall", "not-an-id", "--data-dir", "data"];
    fails(dir.path(), "recall_not_an_id", 2, &args);
}
