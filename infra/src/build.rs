//! Packaging the Lambda handlers: cargo-lambda (with zig) builds `chat-ws` and `chat-fanout` for
//! `provided.al2023` into `bootstrap.zip`s; each artifact is then described by its size and the
//! SHA-256 Lambda reports as `CodeSha256`, and checked to hold an ELF for the right machine.

use std::collections::HashMap;
use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::process::{self, ProcessError};

/// The handler packages, as the Lambda functions are named after them.
pub const HANDLERS: [&str; 2] = ["chat-ws", "chat-fanout"];

/// The pins `scripts/setup.sh` installs; named in install hints.
pub const CARGO_LAMBDA_PIN: &str = "cargo-lambda==1.9.2 ziglang==0.17.1";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Arch {
    Arm64,
    X86_64,
}

impl Arch {
    fn flag(self) -> &'static str {
        match self {
            Arch::Arm64 => "--arm64",
            Arch::X86_64 => "--x86-64",
        }
    }

    /// ELF `e_machine` of binaries for this architecture.
    fn elf_machine(self) -> u16 {
        match self {
            Arch::Arm64 => 0xB7,
            Arch::X86_64 => 0x3E,
        }
    }

    /// The name Lambda uses (`Architectures`).
    pub fn lambda_name(self) -> &'static str {
        match self {
            Arch::Arm64 => "arm64",
            Arch::X86_64 => "x86_64",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error(
        "no chatctl workspace found at or above {0} (looked for a Cargo.toml beside lambdas/ws); \
         run chatctl inside the chatctl repository or pass --manifest-path path/to/Cargo.toml"
    )]
    NoWorkspace(PathBuf),
    #[error(
        "cargo-lambda is not installed (looked in $CARGO_LAMBDA, {looked}); install it with \
         `pip install {CARGO_LAMBDA_PIN}` (or run scripts/setup.sh), or set CARGO_LAMBDA to its path"
    )]
    NoCargoLambda { looked: String },
    #[error(
        "zig is not available to cargo-lambda; install it with `pip install {CARGO_LAMBDA_PIN}` \
         (or run scripts/setup.sh), or set CARGO_ZIGBUILD_ZIG_PATH"
    )]
    NoZig,
    #[error("cannot create the output directory {path}: {source}; pass a writable --out")]
    OutDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Process(#[from] ProcessError),
    #[error("the build produced no {0}")]
    Missing(PathBuf),
    #[error("cannot read {path}: {why}")]
    Artifact { path: PathBuf, why: String },
}

/// Where the tools are: found once, passed in, so tests and callers can point elsewhere.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Toolchain {
    pub cargo_lambda: PathBuf,
    /// Directories to put first on PATH (the venv with `python3 -m ziglang`).
    pub path_prefix: Vec<PathBuf>,
    /// `CARGO_ZIGBUILD_ZIG_PATH`, when a `python-zig` wrapper was found.
    pub zig: Option<PathBuf>,
}

impl Toolchain {
    /// Find cargo-lambda and zig: `$CARGO_LAMBDA`, then `$CHATCTL_TOOLS/bin` (default
    /// `~/.cache/chatctl/tools/bin`, where scripts/setup.sh installs them), then `PATH`.
    pub fn locate(env: &HashMap<String, String>) -> Result<Self, BuildError> {
        let tools_bin = env
            .get("CHATCTL_TOOLS")
            .map(PathBuf::from)
            .or_else(|| {
                env.get("HOME")
                    .map(|h| Path::new(h).join(".cache/chatctl/tools"))
            })
            .map(|t| t.join("bin"));
        let on_path = |name: &str| {
            env.get("PATH").and_then(|p| {
                std::env::split_paths(p)
                    .map(|d| d.join(name))
                    .find(|c| c.is_file())
            })
        };
        let cargo_lambda = env
            .get("CARGO_LAMBDA")
            .map(PathBuf::from)
            .filter(|p| p.is_file())
            .or_else(|| {
                tools_bin
                    .as_ref()
                    .map(|b| b.join("cargo-lambda"))
                    .filter(|p| p.is_file())
            })
            .or_else(|| on_path("cargo-lambda"))
            .ok_or_else(|| BuildError::NoCargoLambda {
                looked: format!(
                    "{}, PATH",
                    tools_bin.as_ref().map_or_else(
                        || "~/.cache/chatctl/tools/bin".to_owned(),
                        |b| b.display().to_string()
                    )
                ),
            })?;
        let venv_bin = cargo_lambda.parent().map(Path::to_path_buf);
        let zig = env
            .get("CARGO_ZIGBUILD_ZIG_PATH")
            .map(PathBuf::from)
            .or_else(|| {
                venv_bin
                    .as_ref()
                    .map(|b| b.join("python-zig"))
                    .filter(|p| p.is_file())
            });
        if zig.is_none() && on_path("zig").is_none() {
            return Err(BuildError::NoZig);
        }
        Ok(Self {
            cargo_lambda,
            path_prefix: venv_bin.into_iter().collect(),
            zig,
        })
    }
}

/// The workspace holding the handler sources: `manifest_path`'s directory, or the nearest
/// directory at or above `start` whose Cargo.toml sits beside `lambdas/ws`.
pub fn find_workspace(start: &Path, manifest_path: Option<&Path>) -> Result<PathBuf, BuildError> {
    if let Some(manifest) = manifest_path {
        let dir = match manifest.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        return if is_workspace(&dir) {
            Ok(dir)
        } else {
            Err(BuildError::NoWorkspace(dir))
        };
    }
    start
        .ancestors()
        .find(|d| is_workspace(d))
        .map(Path::to_path_buf)
        .ok_or_else(|| BuildError::NoWorkspace(start.to_path_buf()))
}

fn is_workspace(dir: &Path) -> bool {
    dir.join("Cargo.toml").is_file() && dir.join("lambdas/ws/Cargo.toml").is_file()
}

/// What to build.
#[derive(Debug, Clone)]
pub struct BuildRequest {
    pub workspace: PathBuf,
    pub arch: Arch,
    pub out_dir: PathBuf,
}

/// The cargo-lambda invocation for a request: data, printable and testable.
pub fn command(request: &BuildRequest, tools: &Toolchain, path: Option<&str>) -> Command {
    let mut cmd = Command::new(&tools.cargo_lambda);
    cmd.current_dir(&request.workspace)
        .args(["lambda", "build", "--release", request.arch.flag()])
        .args(["--output-format", "zip", "--lambda-dir"])
        .arg(&request.out_dir);
    for handler in HANDLERS {
        cmd.args(["-p", handler]);
    }
    if !tools.path_prefix.is_empty() {
        let rest = path.map(std::env::split_paths).into_iter().flatten();
        if let Ok(joined) = std::env::join_paths(tools.path_prefix.iter().cloned().chain(rest)) {
            cmd.env("PATH", joined);
        }
    }
    if let Some(zig) = &tools.zig {
        cmd.env("CARGO_ZIGBUILD_ZIG_PATH", zig);
    }
    cmd
}

/// One deployable zip.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Artifact {
    pub function: String,
    pub zip: PathBuf,
    pub zip_bytes: u64,
    pub bootstrap_bytes: u64,
    /// Base64 of the zip's SHA-256, as Lambda's `CodeSha256`.
    pub code_sha256: String,
    pub arch: Arch,
}

/// The result of `chatctl build`.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BuildReport {
    pub artifacts: Vec<Artifact>,
    pub elapsed_ms: u128,
    /// Crates cargo compiled in this run: 0 when nothing changed.
    pub compiled_crates: usize,
}

impl fmt::Display for BuildReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "built {} handlers in {:.1}s ({} crates compiled)",
            self.artifacts.len(),
            self.elapsed_ms as f64 / 1000.0,
            self.compiled_crates
        )?;
        for a in &self.artifacts {
            writeln!(
                f,
                "  {:<12} {:<7} {:>9} zip  {:>10} bootstrap  sha256 {}  {}",
                a.function,
                a.arch.lambda_name(),
                human(a.zip_bytes),
                human(a.bootstrap_bytes),
                a.code_sha256,
                a.zip.display()
            )?;
        }
        Ok(())
    }
}

fn human(bytes: u64) -> String {
    format!("{:.1} MB", bytes as f64 / 1_000_000.0)
}

/// Build every handler and describe the zips.
pub fn build(
    request: &BuildRequest,
    tools: &Toolchain,
    path: Option<&str>,
) -> Result<BuildReport, BuildError> {
    std::fs::create_dir_all(&request.out_dir).map_err(|source| BuildError::OutDir {
        path: request.out_dir.clone(),
        source,
    })?;
    let started = Instant::now();
    let captured = process::run(&mut command(request, tools, path))?;
    let compiled_crates = captured
        .stderr
        .lines()
        .filter(|l| l.trim_start().starts_with("Compiling "))
        .count();
    let artifacts = HANDLERS
        .iter()
        .map(|h| {
            inspect(
                h,
                &request.out_dir.join(h).join("bootstrap.zip"),
                request.arch,
            )
        })
        .collect::<Result<_, _>>()?;
    Ok(BuildReport {
        artifacts,
        elapsed_ms: started.elapsed().as_millis(),
        compiled_crates,
    })
}

/// Describe a built zip and check that it holds a `bootstrap` ELF for `arch`.
pub fn inspect(function: &str, zip_path: &Path, arch: Arch) -> Result<Artifact, BuildError> {
    let bad = |why: String| BuildError::Artifact {
        path: zip_path.to_path_buf(),
        why,
    };
    let bytes = std::fs::read(zip_path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            BuildError::Missing(zip_path.to_path_buf())
        } else {
            bad(e.to_string())
        }
    })?;
    let mut archive =
        zip::ZipArchive::new(std::io::Cursor::new(&bytes)).map_err(|e| bad(e.to_string()))?;
    let mut bootstrap = archive
        .by_name("bootstrap")
        .map_err(|_| bad("no `bootstrap` entry".into()))?;
    let bootstrap_bytes = bootstrap.size();
    let mut header = [0u8; 20];
    bootstrap
        .read_exact(&mut header)
        .map_err(|e| bad(format!("bootstrap: {e}")))?;
    if &header[..4] != b"\x7fELF" {
        return Err(bad("bootstrap is not an ELF executable".into()));
    }
    let machine = u16::from_le_bytes([header[18], header[19]]);
    if machine != arch.elf_machine() {
        return Err(bad(format!(
            "bootstrap is built for ELF machine {machine:#x}, not {} ({:#x})",
            arch.lambda_name(),
            arch.elf_machine()
        )));
    }
    Ok(Artifact {
        function: function.to_owned(),
        zip: zip_path.to_path_buf(),
        zip_bytes: bytes.len() as u64,
        bootstrap_bytes,
        code_sha256: STANDARD.encode(Sha256::digest(&bytes)),
        arch,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn zip_with(entry: &str, content: &[u8]) -> tempfile::NamedTempFile {
        let file = tempfile::NamedTempFile::new().unwrap();
        let mut writer = zip::ZipWriter::new(file.reopen().unwrap());
        writer
            .start_file(entry, zip::write::SimpleFileOptions::default())
            .unwrap();
        writer.write_all(content).unwrap();
        writer.finish().unwrap();
        file
    }

    fn elf(machine: u16) -> Vec<u8> {
        let mut h = b"\x7fELF\x02\x01\x01\0\0\0\0\0\0\0\0\0\x02\0".to_vec();
        h.extend_from_slice(&machine.to_le_bytes());
        h.extend_from_slice(&[0; 64]);
        h
    }

    #[test]
    fn inspect_checks_the_bootstrap_machine_and_hashes_like_lambda() {
        let zip = zip_with("bootstrap", &elf(0xB7));
        let a = inspect("chat-ws", zip.path(), Arch::Arm64).unwrap();
        let expected = STANDARD.encode(Sha256::digest(std::fs::read(zip.path()).unwrap()));
        assert_eq!(a.code_sha256, expected);
        assert_eq!(a.code_sha256.len(), 44);
        assert_eq!(a.bootstrap_bytes, 84);
        let err = inspect("chat-ws", zip.path(), Arch::X86_64)
            .unwrap_err()
            .to_string();
        assert!(err.contains("0xb7") && err.contains("x86_64"), "{err}");
    }

    #[test]
    fn inspect_refuses_what_is_not_a_lambda_zip() {
        let wrong_name = zip_with("main", &elf(0xB7));
        assert!(
            inspect("f", wrong_name.path(), Arch::Arm64)
                .unwrap_err()
                .to_string()
                .contains("bootstrap")
        );
        let script = zip_with("bootstrap", b"#!/bin/sh\necho hi\n and some more bytes");
        assert!(
            inspect("f", script.path(), Arch::Arm64)
                .unwrap_err()
                .to_string()
                .contains("ELF")
        );
        let not_zip = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(not_zip.path(), b"nope").unwrap();
        assert!(inspect("f", not_zip.path(), Arch::Arm64).is_err());
        assert!(matches!(
            inspect("f", Path::new("/nonexistent.zip"), Arch::Arm64),
            Err(BuildError::Missing(_))
        ));
    }

    #[test]
    fn the_command_builds_both_handlers_with_zig_on_the_path() {
        let tools = Toolchain {
            cargo_lambda: PathBuf::from("/tools/bin/cargo-lambda"),
            path_prefix: vec![PathBuf::from("/tools/bin")],
            zig: Some(PathBuf::from("/tools/bin/python-zig")),
        };
        let request = BuildRequest {
            workspace: PathBuf::from("/src"),
            arch: Arch::Arm64,
            out_dir: PathBuf::from("/out"),
        };
        let cmd = command(&request, &tools, Some("/usr/bin"));
        assert_eq!(
            process::display(&cmd),
            "/tools/bin/cargo-lambda lambda build --release --arm64 --output-format zip --lambda-dir /out -p chat-ws -p chat-fanout"
        );
        let envs: HashMap<_, _> = cmd
            .get_envs()
            .map(|(k, v)| {
                (
                    k.to_string_lossy().into_owned(),
                    v.map(|v| v.to_string_lossy().into_owned()),
                )
            })
            .collect();
        assert_eq!(envs["PATH"].as_deref(), Some("/tools/bin:/usr/bin"));
        assert_eq!(
            envs["CARGO_ZIGBUILD_ZIG_PATH"].as_deref(),
            Some("/tools/bin/python-zig")
        );
    }

    #[test]
    fn missing_tools_say_how_to_install_them() {
        let env = HashMap::from([
            ("HOME".to_owned(), "/nonexistent".to_owned()),
            ("PATH".to_owned(), "/nonexistent/bin".to_owned()),
        ]);
        let err = Toolchain::locate(&env).unwrap_err().to_string();
        assert!(
            err.contains("pip install cargo-lambda==1.9.2 ziglang==0.17.1"),
            "{err}"
        );
    }

    #[test]
    fn the_workspace_is_found_from_inside_it() {
        let here = Path::new(env!("CARGO_MANIFEST_DIR"));
        let root = find_workspace(&here.join("src"), None).unwrap();
        assert!(root.join("lambdas/ws").is_dir());
        assert!(matches!(
            find_workspace(Path::new("/"), None),
            Err(BuildError::NoWorkspace(_))
        ));
        assert!(find_workspace(here, Some(&root.join("Cargo.toml"))).is_ok());
    }
}
