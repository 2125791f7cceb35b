//! `chatctl build` for real: cargo-lambda (installed by scripts/setup.sh) builds both handlers for
//! arm64, and the zips are checked by an independent reader (Python's zipfile), not by our code.
//! A clean build takes minutes; CI runs it once, and the second build here must compile nothing.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

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

fn build(out: &std::path::Path) -> Value {
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

#[test]
fn outside_a_workspace_build_asks_for_the_manifest() {
    let run = Command::new(BIN)
        .arg("build")
        .current_dir("/")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert_eq!(run.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("--manifest-path"), "{stderr}");
}
