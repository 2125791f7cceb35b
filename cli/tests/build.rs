//! `chatctl build` for real: cargo-lambda (installed by scripts/setup.sh) builds both handlers for
//! arm64, and the zips are checked by an independent reader (Python's zipfile), not by our code.
//! A clean build takes minutes; CI runs it once, and the second build here must compile nothing.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::process::Command;

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_chatctl");

/// Python's view of a zip: the sha256 (base64) and the bootstrap's ELF class and machine.
fn independent_look(zip: &str) -> Value {
    let script = r#"
import base64, hashlib, json, struct, sys, zipfile
path = sys.argv[1]
data = open(path, 'rb').read()
z = zipfile.ZipFile(path)
info = z.getinfo('bootstrap')
head = z.read('bootstrap')[:20]
print(json.dumps({
  'sha256': base64.b64encode(hashlib.sha256(data).digest()).decode(),
  'elf': head[:4] == b'\x7fELF',
  'class64': head[4] == 2,
  'machine': struct.unpack('<H', head[18:20])[0],
  'executable': (info.external_attr >> 16) & 0o111 != 0,
  'size': info.file_size,
}))
"#;
    let out = Command::new("python3")
        .args(["-c", script, zip])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn build(out: &Path) -> Value {
    let run = Command::new(BIN)
        .args(["build", "--output", "json", "--out"])
        .arg(out)
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "chatctl build failed: {}",
        String::from_utf8_lossy(&run.stderr)
    );
    serde_json::from_slice(&run.stdout).unwrap()
}

#[test]
fn build_makes_arm64_zips_and_an_unchanged_rebuild_compiles_nothing() {
    let out = tempfile::tempdir().unwrap();
    let first = build(out.path());
    let artifacts = first["artifacts"].as_array().unwrap();
    let functions: Vec<_> = artifacts
        .iter()
        .map(|a| a["function"].as_str().unwrap())
        .collect();
    assert_eq!(functions, ["chat-ws", "chat-fanout"]);
    for a in artifacts {
        let zip = a["zip"].as_str().unwrap();
        assert!(zip.starts_with(out.path().to_str().unwrap()), "{zip}");
        let look = independent_look(zip);
        assert_eq!(look["elf"], true, "{look}");
        assert_eq!(look["class64"], true);
        assert_eq!(look["machine"], 0xB7, "bootstrap is built for aarch64");
        assert_eq!(look["executable"], true, "bootstrap keeps its execute bit");
        assert_eq!(a["codeSha256"], look["sha256"]);
        assert_eq!(a["bootstrapBytes"], look["size"]);
        assert_eq!(a["arch"], "arm64");
    }

    let second = build(out.path());
    assert_eq!(
        second["compiledCrates"], 0,
        "unchanged sources must not rebuild"
    );
    for (a, b) in artifacts
        .iter()
        .zip(second["artifacts"].as_array().unwrap())
    {
        assert_eq!(
            a["codeSha256"], b["codeSha256"],
            "an unchanged build gives the same CodeSha256"
        );
    }
}

#[test]
fn a_missing_cargo_lambda_says_how_to_install_it() {
    let run = Command::new(BIN)
        .arg("build")
        .env_clear()
        .env("HOME", "/nonexistent")
        .env("PATH", "/usr/bin:/bin")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert_eq!(run.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("pip install cargo-lambda==1.9.2 ziglang==0.17.1"),
        "{stderr}"
    );
}

/// The installed binary in a directory of its own, run from an empty project outside this
/// repository: what a user has after `cargo install`.
struct Outside {
    _root: tempfile::TempDir,
    bin: std::path::PathBuf,
    project: std::path::PathBuf,
    cache: std::path::PathBuf,
}

impl Outside {
    fn new() -> Self {
        let root = tempfile::tempdir().unwrap();
        let bin = root.path().join("bin/chatctl");
        std::fs::create_dir_all(bin.parent().unwrap()).unwrap();
        std::fs::copy(BIN, &bin).unwrap();
        let project = root.path().join("acme-chat");
        std::fs::create_dir_all(&project).unwrap();
        let cache = root.path().join("cache");
        Outside {
            bin,
            project,
            cache,
            _root: root,
        }
    }

    fn run(&self, args: &[&str]) -> std::process::Output {
        // The handlers' registry crates are shared with this repository's build through cargo's
        // CARGO_TARGET_DIR (as CI sets it): only the bundled crates and the link are new.
        let target = std::env::var("CARGO_TARGET_DIR").unwrap_or_else(|_| {
            Path::new(env!("CARGO_TARGET_TMPDIR"))
                .parent()
                .unwrap()
                .display()
                .to_string()
        });
        Command::new(&self.bin)
            .args(args)
            .current_dir(&self.project)
            .env("CHATCTL_CACHE", &self.cache)
            .env("CARGO_TARGET_DIR", target)
            .env("AWS_ACCESS_KEY_ID", "testing")
            .env("AWS_SECRET_ACCESS_KEY", "testing")
            .env_remove("CHATCTL_CONFIG")
            .env_remove("CHATCTL_STAGE")
            .output()
            .unwrap()
    }
}

#[test]
fn outside_the_repository_the_installed_binary_inits_plans_and_builds_the_bundled_sources() {
    let outside = Outside::new();
    assert!(!outside.project.starts_with(env!("CARGO_MANIFEST_DIR")));

    let init = outside.run(&["init", "--output", "json"]);
    assert!(
        init.status.success(),
        "{}",
        String::from_utf8_lossy(&init.stderr)
    );
    let report: Value = serde_json::from_slice(&init.stdout).unwrap();
    assert_eq!(report["app"], "acme-chat", "the directory names the app");
    for file in [
        "chatctl.toml",
        ".github/workflows/chatctl.yml",
        ".gitignore",
    ] {
        assert!(outside.project.join(file).is_file(), "{file}");
    }
    let again = outside.run(&["init"]);
    assert_eq!(
        again.status.code(),
        Some(1),
        "init never overwrites unasked"
    );
    assert!(String::from_utf8_lossy(&again.stderr).contains("--force"));

    let completions = outside.run(&["completions", "bash"]);
    assert!(completions.status.success());
    let script = String::from_utf8_lossy(&completions.stdout);
    assert!(script.contains("complete -F _chatctl"), "{script}");
    assert!(
        script.contains("deploy") && script.contains("init"),
        "{script}"
    );
    // bash itself accepts the script.
    let parsed = Command::new("bash")
        .args(["-n", "-c"])
        .arg(&*script)
        .status()
        .unwrap();
    assert!(parsed.success(), "bash -n rejects the completion script");

    // No zips yet: the plan takes the code as deployed and plans the whole stage (exit 2).
    let moto = chatctl_e2e::moto::Moto::shared();
    let run_plan = |extra: &[&str]| {
        let mut args = vec![
            "plan",
            "--stage",
            "ci",
            "--region",
            "us-east-1",
            "--endpoint-url",
            &moto.endpoint,
        ];
        args.extend_from_slice(extra);
        outside.run(&args)
    };
    let plan = run_plan(&["--detailed-exitcode"]);
    let text = String::from_utf8_lossy(&plan.stdout);
    assert_eq!(
        plan.status.code(),
        Some(2),
        "{text}{}",
        String::from_utf8_lossy(&plan.stderr)
    );
    assert!(text.contains("acme-chat-ci"), "{text}");
    assert!(text.contains("no build at target/lambda-zips"), "{text}");

    let started = std::time::Instant::now();
    let build = outside.run(&["build", "--output", "json"]);
    assert!(
        build.status.success(),
        "{}",
        String::from_utf8_lossy(&build.stderr)
    );
    eprintln!(
        "bundled build outside the repository: {:?}",
        started.elapsed()
    );
    let report: Value = serde_json::from_slice(&build.stdout).unwrap();
    assert_eq!(report["sources"]["kind"], "bundled", "{report}");
    let unpacked = report["sources"]["dir"].as_str().unwrap();
    assert!(
        unpacked.starts_with(outside.cache.to_str().unwrap()),
        "{unpacked}"
    );
    let artifacts = report["artifacts"].as_array().unwrap();
    assert_eq!(artifacts.len(), 2);
    for a in artifacts {
        let zip = a["zip"].as_str().unwrap();
        assert!(
            zip.starts_with(outside.project.join("target/lambda-zips").to_str().unwrap()),
            "{zip}"
        );
        let look = independent_look(zip);
        assert_eq!(look["machine"], 0xB7, "bootstrap is built for aarch64");
        assert_eq!(look["executable"], true);
        assert_eq!(a["codeSha256"], look["sha256"]);
    }
    // Now plan finds the build by itself.
    let plan = run_plan(&[]);
    let text = String::from_utf8_lossy(&plan.stdout);
    assert!(!text.contains("no build at"), "{text}");

    // The same sources give the same zips: a second build compiles nothing, changes no hash.
    let second = outside.run(&["build", "--output", "json"]);
    let second: Value = serde_json::from_slice(&second.stdout).unwrap();
    assert_eq!(second["compiledCrates"], 0);
    for (a, b) in artifacts
        .iter()
        .zip(second["artifacts"].as_array().unwrap())
    {
        assert_eq!(a["codeSha256"], b["codeSha256"]);
    }
}

#[test]
fn an_ejected_copy_is_what_build_builds() {
    let outside = Outside::new();
    let init = outside.run(&["init", "--eject", "--output", "json"]);
    assert!(
        init.status.success(),
        "{}",
        String::from_utf8_lossy(&init.stderr)
    );
    let report: Value = serde_json::from_slice(&init.stdout).unwrap();
    assert_eq!(report["ejected"], "handlers");
    let main = outside.project.join("handlers/lambdas/ws/src/main.rs");
    assert!(main.is_file());
    // Ejecting twice would overwrite the team's changes: refused.
    let again = outside.run(&["init", "--eject"]);
    assert_eq!(again.status.code(), Some(1));
    // `build --manifest-path` naming something else is refused with the flag in the message.
    let wrong = outside.run(&["build", "--manifest-path", "nowhere/Cargo.toml"]);
    assert_eq!(wrong.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&wrong.stderr).contains("--manifest-path"));
}
