//! `chatctl.toml`: `ProjectFile::parse` (what `ProjectFile::load` does with the file's text) and
//! `ProjectFile::stage` (the stage settings the CLI plans and deploys with) on any text, and the
//! `--set KEY=VALUE` pairs (`StageTable::from_pairs`) made of its lines. Errors only, never a
//! panic, and every error prints. A stage that validates builds a stack model, which, deployed
//! exactly, plans no changes.
#![no_main]

use std::collections::BTreeMap;
use std::path::Path;

use chatctl_infra::config::{ProjectFile, StageTable};
use chatctl_infra::plan::{Observed, plan};
use chatctl_infra::stack::{Code, Environment, StageSettings, desired};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    let path = Path::new("chatctl.toml");
    let file = match ProjectFile::parse(text) {
        Ok(file) => file,
        Err(message) => {
            assert!(!message.is_empty());
            ProjectFile::default()
        }
    };
    // `--set` pairs: each line of the input is one.
    let pairs: Vec<String> = text.lines().take(16).map(str::to_owned).collect();
    let overrides = match StageTable::from_pairs(&pairs) {
        Ok(table) => table,
        Err(e) => {
            let _ = e.to_string();
            StageTable::default()
        }
    };
    let mut stages: Vec<&str> = file.stages.keys().map(String::as_str).take(8).collect();
    stages.extend(["dev", "prod"]);
    let mut valid = Vec::new();
    for stage in stages {
        for over in [&StageTable::default(), &overrides] {
            for app in [None, Some("chat")] {
                match file.stage(path, app, stage, over) {
                    Ok(config) => valid.push(config),
                    Err(e) => {
                        let _ = e.to_string();
                    }
                }
            }
        }
    }
    // Building and planning a stack costs far more than reading settings: once per distinct
    // settings, for a few of them.
    let mut checked: Vec<&StageSettings> = Vec::new();
    for config in &valid {
        if checked.len() < 3 && !checked.contains(&&config.settings) {
            deployed_plans_nothing(config);
            checked.push(&config.settings);
        }
    }
});

/// The stack of a valid stage, as AWS would report it after an exact deploy, plans no changes.
fn deployed_plans_nothing(config: &chatctl_infra::config::StageConfig) {
    // The region of the environment comes from the SDK's configuration, which refuses a region
    // that is not a host label; the file's is not checked here, so a fixed one stands in.
    let env = Environment::new("123456789012", "eu-west-1").with_api("a1b2c3d4e5");
    let code = Code {
        ws_sha256: "d3M=".into(),
        fanout_sha256: "ZmFub3V0".into(),
    };
    let stack = desired(&config.name, &config.settings, &env, &code);
    let observed = Observed {
        resources: stack
            .resources
            .iter()
            .map(|r| ((r.kind, r.name.clone()), r.properties.clone()))
            .collect(),
        ids: BTreeMap::new(),
    };
    let plan = plan(&stack, &observed);
    assert!(!plan.has_changes(), "{:?}\n{plan}", config.settings);
}
