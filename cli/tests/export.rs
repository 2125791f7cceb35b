//! `chatctl export cloudformation` through the binary, with no AWS anywhere: the template is
//! checked by cfn-lint (pinned in scripts/setup.sh; it validates every property name, type and
//! value against AWS's resource schemas, which it ships), in regions of three partitions, and the
//! YAML rendering is read back by PyYAML (cfn-lint's own parser) and compared with the JSON one.
//! cfn-lint is required: a missing one fails the test with the install hint, it never skips it.
//! The cross-check against what `deploy` creates is in tests/deploy.rs (it needs moto).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::process::{Command, Output};

use chatctl_e2e::moto::tool;
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_chatctl");

fn chatctl(dir: &Path, args: &[&str]) -> Output {
    Command::new(BIN)
        .current_dir(dir)
        .args(args)
        .env_remove("CHATCTL_STAGE")
        .env_remove("CHATCTL_CONFIG")
        .env_remove("CHATCTL_OUTPUT")
        .output()
        .unwrap()
}

fn text(out: &[u8]) -> String {
    String::from_utf8_lossy(out).into_owned()
}

fn run_tool(name: &str, env: &str, args: &[&str]) -> Output {
    let bin = tool(name, env);
    Command::new(&bin).args(args).output().unwrap_or_else(|e| {
        panic!(
            "cannot run {}: {e}; run scripts/setup.sh (it installs the pinned {name})",
            bin.display()
        )
    })
}

/// A project whose settings differ from every default, so the template shows it read them.
fn project() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("chatctl.toml"),
        "app = \"acme\"\n\n[defaults]\nmemory_mb = 1024\n\n[stages.prod]\narch = \"x86_64\"\nlog_retention_days = 30\nthrottle_rate = 50\nthrottle_burst = 100\n",
    )
    .unwrap();
    dir
}

#[test]
fn the_exported_template_passes_cfn_lint_in_json_and_yaml_and_both_say_the_same() {
    let dir = project();
    for (file, extra) in [
        ("stack.json", &[][..]),
        ("stack.yaml", &[][..]),
        // --format wins over the extension.
        ("forced.template", &["--format", "yaml"][..]),
    ] {
        let mut args = vec!["export", "cloudformation", "--stage", "prod", "--out", file];
        args.extend_from_slice(extra);
        let out = chatctl(dir.path(), &args);
        assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
        let said = text(&out.stdout);
        assert!(said.contains(&format!("to {file}")), "{said}");
        assert!(
            said.contains("CodeBucket, WsCodeKey, WsCodeSha256, FanoutCodeKey, FanoutCodeSha256"),
            "{said}"
        );
        assert!(
            said.contains("not in the template: ssm parameter /chatctl/acme/prod/token-secret"),
            "{said}"
        );
    }
    let json: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("stack.json")).unwrap())
            .unwrap();
    let resources = json["Resources"].as_object().unwrap();
    // The stage's 35 resources but the secret, and each alias's published version.
    assert_eq!(resources.len(), 37, "{:?}", resources.keys());
    for role in ["Ws", "Fanout"] {
        let version = &resources[&format!("{role}LiveAliasVersion")];
        assert_eq!(version["Type"], "AWS::Lambda::Version");
        assert_eq!(
            version["UpdateReplacePolicy"], "Retain",
            "a rollback needs the old one"
        );
        assert_eq!(
            resources[&format!("{role}LiveAlias")]["Properties"]["Name"],
            "live"
        );
    }
    let ws = &resources["WsFunction"]["Properties"];
    assert_eq!(ws["FunctionName"], "acme-prod-ws");
    assert_eq!(ws["MemorySize"], 1024);
    assert_eq!(ws["Architectures"][0], "x86_64");
    assert_eq!(resources["WsLogGroup"]["Properties"]["RetentionInDays"], 30);
    let throttles = &resources["ApiProdStage"]["Properties"]["DefaultRouteSettings"];
    assert_eq!(throttles["ThrottlingBurstLimit"], 100);

    // Every warning and informational finding counts too: the template is meant to be clean.
    // us-east-1, eu-west-1 (aws), cn-north-1 (aws-cn), us-gov-west-1 (aws-us-gov).
    let stack_json = dir.path().join("stack.json");
    let stack_yaml = dir.path().join("stack.yaml");
    let forced = dir.path().join("forced.template");
    let lint = run_tool(
        "cfn-lint",
        "CFN_LINT",
        &[
            "--regions",
            "us-east-1",
            "eu-west-1",
            "cn-north-1",
            "us-gov-west-1",
            "--include-checks",
            "I",
            "--format",
            "parseable",
            "--",
            stack_json.to_str().unwrap(),
            stack_yaml.to_str().unwrap(),
        ],
    );
    assert_eq!(
        lint.status.code(),
        Some(0),
        "cfn-lint found problems:\n{}{}",
        text(&lint.stdout),
        text(&lint.stderr)
    );
    assert_eq!(text(&lint.stdout), "", "cfn-lint said something");

    // cfn-lint can fail: the same check on a template with a property AWS does not have.
    let broken = dir.path().join("broken.json");
    std::fs::write(
        &broken,
        std::fs::read_to_string(&stack_json)
            .unwrap()
            .replace("\"MemorySize\"", "\"MemorySizeMb\""),
    )
    .unwrap();
    let lint = run_tool(
        "cfn-lint",
        "CFN_LINT",
        &["--format", "parseable", "--", broken.to_str().unwrap()],
    );
    assert_ne!(lint.status.code(), Some(0));
    assert!(
        text(&lint.stdout).contains("E3002"),
        "{}",
        text(&lint.stdout)
    );

    // The YAML, read by PyYAML, is the JSON exactly (both through Python's json for the numbers).
    let compare = "import json, sys, yaml\n\
        a = yaml.safe_load(open(sys.argv[1]))\n\
        b = json.load(open(sys.argv[2]))\n\
        c = yaml.safe_load(open(sys.argv[3]))\n\
        sys.exit(0 if a == b == c else 1)\n";
    let same = run_tool(
        "python",
        "CHATCTL_PYTHON",
        &[
            "-c",
            compare,
            stack_yaml.to_str().unwrap(),
            stack_json.to_str().unwrap(),
            forced.to_str().unwrap(),
        ],
    );
    assert_eq!(
        same.status.code(),
        Some(0),
        "YAML and JSON differ: {}",
        text(&same.stderr)
    );
}

#[test]
fn without_out_the_template_goes_to_stdout_and_the_note_to_stderr() {
    let dir = project();
    let out = chatctl(
        dir.path(),
        &[
            "export",
            "cloudformation",
            "--stage",
            "dev",
            "--format",
            "json",
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let template: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        template["Resources"]["MessagesTable"]["Properties"]["TableName"],
        "acme-dev-messages"
    );
    // [stages.prod] does not apply to dev; [defaults] does.
    let ws = &template["Resources"]["WsFunction"]["Properties"];
    assert_eq!(ws["Architectures"][0], "arm64");
    assert_eq!(ws["MemorySize"], 1024);
    assert!(text(&out.stderr).contains("note: not in the template"));
    // YAML is the default on stdout.
    let out = chatctl(dir.path(), &["export", "cloudformation", "--stage", "dev"]);
    assert!(text(&out.stdout).starts_with("\"AWSTemplateFormatVersion\": \"2010-09-09\"\n"));
}

#[test]
fn export_mistakes_exit_2_and_say_what_to_fix() {
    let dir = project();
    // Command-line mistakes exit 2, like clap's own; each message names what to fix, and a
    // value out of range is blamed on the layer it came from (here --set, not the file).
    for (extra, says) in [
        (
            &["--out", "no/such/dir/t.yaml"][..],
            "--out no/such/dir/t.yaml: cannot write the template there",
        ),
        (&["--set", "memory_mb=lots"][..], "--set memory_mb=lots"),
        (
            &["--set", "timeout_s=900"][..],
            "--set timeout_s=900: use 1 to 29",
        ),
    ] {
        let mut args = vec!["export", "cloudformation", "--stage", "prod"];
        args.extend_from_slice(extra);
        let out = chatctl(dir.path(), &args);
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(
            err.starts_with(&format!("error: {says}")),
            "{args:?}: {err}"
        );
        assert_eq!(out.stdout, b"", "{args:?}");
    }
    assert!(!dir.path().join("no").exists());
    let out = chatctl(dir.path(), &["export", "cloudformation", "--stage", "Prod"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("stage name \"Prod\" is not valid"));
}
