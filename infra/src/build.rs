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

use crate::bundle::{self, BundleError};
use crate::process::{self, ProcessError};

/// The release profile of the handlers, over the workspace's own `[profile.release]` (which the
/// chatctl binary keeps, for build time): whole-program LTO in one codegen unit, optimised for
/// size. cargo-lambda adds `panic = "abort"` and arm64's `target-cpu` itself. Measured by
/// `scripts/zip-sizes.sh` (arm64, ws handler): 5.38 MB zip (13.7 MB bootstrap) with the
/// workspace profile, 4.68 MB with fat LTO, 2.98 MB adding `opt-level = "z"`.
pub const PROFILE_OVERRIDES: [&str; 3] = [
    "profile.release.lto=\"fat\"",
    "profile.release.codegen-units=1",
    "profile.release.opt-level=\"z\"",
];

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
    #[error("--manifest-path: {0} holds no handler workspace (a Cargo.toml beside lambdas/ws)")]
    NoWorkspace(PathBuf),
    #[error("cargo is not installed (looked on PATH and in ~/.cargo/bin)")]
    NoCargo,
    #[error("cannot unpack the bundled handler sources")]
    Bundle(#[from] BundleError),
    #[error("cargo-lambda is not installed (looked in $CARGO_LAMBDA, {looked})")]
    NoCargoLambda { looked: String },
    #[error("zig is not available to cargo-lambda")]
    NoZig,
    #[error("cannot create the output directory {}", path.display())]
    OutDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Process(#[from] ProcessError),
    #[error("the build produced no {0}")]
    Missing(PathBuf),
    #[error("cannot write {path}")]
    Zip {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot read {path}: {why}")]
    Artifact { path: PathBuf, why: String },
}

impl BuildError {
    /// What to do about it: the install command, the flag.
    pub fn hint(&self) -> Option<String> {
        match self {
            BuildError::NoWorkspace(_) => Some(
                "point --manifest-path at a chatctl repository's or an ejected copy's \
                 Cargo.toml, or leave it out to build the sources bundled with chatctl"
                    .into(),
            ),
            BuildError::NoCargo => Some(
                "install Rust with rustup (https://rustup.rs), then run the build again".into(),
            ),
            BuildError::NoCargoLambda { .. } => Some(format!(
                "install it with `pip install {CARGO_LAMBDA_PIN}` (in a chatctl clone \
                 scripts/setup.sh does it), or set CARGO_LAMBDA to its path"
            )),
            BuildError::NoZig => Some(format!(
                "install it with `pip install {CARGO_LAMBDA_PIN}` (in a chatctl clone \
                 scripts/setup.sh does it), or set CARGO_ZIGBUILD_ZIG_PATH"
            )),
            BuildError::OutDir { .. } => Some("pass a writable --out DIR".into()),
            BuildError::Process(_)
            | BuildError::Bundle(_)
            | BuildError::Missing(_)
            | BuildError::Zip { .. }
            | BuildError::Artifact { .. } => None,
        }
    }
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
        // cargo-lambda drives cargo; rustup's proxies put it on PATH (or in ~/.cargo/bin).
        let cargo_home_bin = env
            .get("CARGO_HOME")
            .map(PathBuf::from)
            .or_else(|| env.get("HOME").map(|h| Path::new(h).join(".cargo")))
            .map(|c| c.join("bin/cargo"));
        if on_path("cargo").is_none() && !cargo_home_bin.is_some_and(|c| c.is_file()) {
            return Err(BuildError::NoCargo);
        }
        Ok(Self {
            cargo_lambda,
            path_prefix: venv_bin.into_iter().collect(),
            zig,
        })
    }
}

/// Where `chatctl init --eject` puts the handler sources in a project, and where `build` looks
/// for them.
pub const EJECTED_DIR: &str = "handlers";

/// Which handler sources a build uses, in the order they are looked for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Sources {
    /// A chatctl repository's working tree: `--manifest-path`, or the nearest directory at or
    /// above the current one whose Cargo.toml sits beside `lambdas/ws`.
    Workspace { dir: PathBuf },
    /// The project's own copy, from `chatctl init --eject` (`<project>/handlers`).
    Ejected { dir: PathBuf },
    /// The sources this chatctl carries, unpacked into `dir` in the cache on first use.
    Bundled { dir: PathBuf, digest: String },
}

impl Sources {
    /// Choose the sources without touching the disk beyond looking: `manifest_path`, then an
    /// ejected copy in `project`, then a chatctl repository at or above `cwd`, then the bundle.
    pub fn locate(
        cwd: &Path,
        project: &Path,
        manifest_path: Option<&Path>,
        cache: &Path,
    ) -> Result<Self, BuildError> {
        if let Some(manifest) = manifest_path {
            let dir = match manifest.parent() {
                Some(p) if !p.as_os_str().is_empty() => cwd.join(p),
                _ => cwd.to_path_buf(),
            };
            return if is_workspace(&dir) {
                Ok(Sources::Workspace { dir })
            } else {
                Err(BuildError::NoWorkspace(dir))
            };
        }
        let ejected = project.join(EJECTED_DIR);
        if is_workspace(&ejected) {
            return Ok(Sources::Ejected { dir: ejected });
        }
        if let Some(dir) = cwd.ancestors().find(|d| is_workspace(d)) {
            return Ok(Sources::Workspace {
                dir: dir.to_path_buf(),
            });
        }
        let digest = bundle::digest()?;
        Ok(Sources::Bundled {
            dir: bundle::unpack_dir(cache, &digest),
            digest,
        })
    }

    /// The workspace to build in; unpacks the bundle if it is not yet.
    pub fn prepare(&self) -> Result<PathBuf, BuildError> {
        match self {
            Sources::Workspace { dir } | Sources::Ejected { dir } => Ok(dir.clone()),
            Sources::Bundled { dir, .. } => Ok(bundle::unpack(dir)?),
        }
    }

    /// Where the zips go unless told: the repository's `target/lambda-zips`, else the project's.
    pub fn default_out(&self, project: &Path) -> PathBuf {
        match self {
            Sources::Workspace { dir } => dir.join("target/lambda-zips"),
            Sources::Ejected { .. } | Sources::Bundled { .. } => project.join("target/lambda-zips"),
        }
    }

    /// Cargo's target directory for the build: the bundle's is shared by every version in the
    /// cache, so a new chatctl recompiles only what changed. `CARGO_TARGET_DIR` wins, as for any
    /// cargo build; the repository and an ejected copy use their own `target/`.
    pub fn target_dir(&self, cache: &Path, env: &HashMap<String, String>) -> Option<PathBuf> {
        match self {
            Sources::Bundled { .. } if !env.contains_key("CARGO_TARGET_DIR") => {
                Some(cache.join("handlers").join("target"))
            }
            _ => None,
        }
    }
}

impl fmt::Display for Sources {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Sources::Workspace { dir } => write!(f, "the workspace at {}", dir.display()),
            Sources::Ejected { dir } => write!(f, "the ejected sources in {}", dir.display()),
            Sources::Bundled { digest, .. } => write!(
                f,
                "the sources bundled with chatctl {} ({digest})",
                env!("CARGO_PKG_VERSION")
            ),
        }
    }
}

/// chatctl's cache: `$CHATCTL_CACHE`, else `$XDG_CACHE_HOME/chatctl`, else `~/.cache/chatctl`.
pub fn cache_root(env: &HashMap<String, String>) -> PathBuf {
    let nonempty = |k: &str| env.get(k).filter(|v| !v.is_empty()).map(PathBuf::from);
    nonempty("CHATCTL_CACHE")
        .or_else(|| nonempty("XDG_CACHE_HOME").map(|c| c.join("chatctl")))
        .or_else(|| nonempty("HOME").map(|h| h.join(".cache/chatctl")))
        .unwrap_or_else(|| PathBuf::from(".chatctl/cache"))
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
    /// `CARGO_TARGET_DIR` for cargo-lambda (which refuses `--target-dir`), when not cargo's own.
    pub target_dir: Option<PathBuf>,
}

/// The cargo-lambda invocation for a request: data, printable and testable. It leaves the
/// bootstrap binaries; `build` zips them itself so the zip depends on the binary's bytes only.
pub fn command(request: &BuildRequest, tools: &Toolchain, path: Option<&str>) -> Command {
    let mut cmd = Command::new(&tools.cargo_lambda);
    cmd.current_dir(&request.workspace)
        .args(["lambda", "build", "--release", request.arch.flag()])
        .args(["--output-format", "binary", "--lambda-dir"])
        .arg(&request.out_dir);
    for setting in PROFILE_OVERRIDES {
        cmd.args(["--config", setting]);
    }
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
    if let Some(target) = &request.target_dir {
        cmd.env("CARGO_TARGET_DIR", target);
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
    pub sources: Sources,
    pub artifacts: Vec<Artifact>,
    pub elapsed_ms: u128,
    /// Crates cargo compiled in this run: 0 when nothing changed.
    pub compiled_crates: usize,
}

impl fmt::Display for BuildReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "built {} handlers from {} in {:.1}s ({} crates compiled)",
            self.artifacts.len(),
            self.sources,
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

/// Build every handler from `sources` and describe the zips.
pub fn build(
    sources: Sources,
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
            let dir = request.out_dir.join(h);
            let zip = dir.join("bootstrap.zip");
            package(&dir.join("bootstrap"), &zip)?;
            inspect(h, &zip, request.arch)
        })
        .collect::<Result<_, _>>()?;
    Ok(BuildReport {
        sources,
        artifacts,
        elapsed_ms: started.elapsed().as_millis(),
        compiled_crates,
    })
}

/// Zip `bootstrap` as Lambda wants it (`bootstrap` at the root, executable) from its bytes alone:
/// a fixed timestamp and the best deflate level, so an unchanged binary keeps its `CodeSha256`
/// however often it is relinked, and a no-op deploy stays a no-op.
pub fn package(bootstrap: &Path, zip_path: &Path) -> Result<(), BuildError> {
    use std::io::Write;
    let bytes = std::fs::read(bootstrap).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            BuildError::Missing(bootstrap.to_path_buf())
        } else {
            BuildError::Artifact {
                path: bootstrap.to_path_buf(),
                why: e.to_string(),
            }
        }
    })?;
    let fail = |source: std::io::Error| BuildError::Zip {
        path: zip_path.to_path_buf(),
        source,
    };
    let options = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated)
        .compression_level(Some(9))
        .last_modified_time(zip::DateTime::default())
        .unix_permissions(0o755);
    let mut out = std::io::Cursor::new(Vec::with_capacity(bytes.len() / 2));
    {
        let mut writer = zip::ZipWriter::new(&mut out);
        writer
            .start_file("bootstrap", options)
            .map_err(|e| fail(std::io::Error::other(e)))?;
        writer.write_all(&bytes).map_err(fail)?;
        writer
            .finish()
            .map_err(|e| fail(std::io::Error::other(e)))?;
    }
    std::fs::write(zip_path, out.into_inner()).map_err(fail)
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
            target_dir: Some(PathBuf::from("/cache/handlers/target")),
        };
        let cmd = command(&request, &tools, Some("/usr/bin"));
        assert_eq!(
            process::display(&cmd),
            "/tools/bin/cargo-lambda lambda build --release --arm64 --output-format binary --lambda-dir /out \
             --config profile.release.lto=\"fat\" --config profile.release.codegen-units=1 \
             --config profile.release.opt-level=\"z\" -p chat-ws -p chat-fanout"
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
        assert_eq!(
            envs["CARGO_TARGET_DIR"].as_deref(),
            Some("/cache/handlers/target")
        );
    }

    #[test]
    fn missing_tools_say_how_to_install_them() {
        let env = HashMap::from([
            ("HOME".to_owned(), "/nonexistent".to_owned()),
            ("PATH".to_owned(), "/nonexistent/bin".to_owned()),
        ]);
        let err = Toolchain::locate(&env).unwrap_err();
        assert!(matches!(err, BuildError::NoCargoLambda { .. }), "{err}");
        let hint = err.hint().unwrap();
        assert!(
            hint.contains("pip install cargo-lambda==1.9.2 ziglang==0.17.1"),
            "{hint}"
        );
    }

    #[test]
    fn sources_are_the_flag_then_an_ejected_copy_then_the_repository_then_the_bundle() {
        let here = Path::new(env!("CARGO_MANIFEST_DIR"));
        let cache = Path::new("/cache");
        let project = tempfile::tempdir().unwrap();
        let root = match Sources::locate(&here.join("src"), project.path(), None, cache).unwrap() {
            Sources::Workspace { dir } => dir,
            other => panic!("{other:?}"),
        };
        assert!(root.join("lambdas/ws").is_dir());
        assert_eq!(
            Sources::Workspace { dir: root.clone() }.default_out(project.path()),
            root.join("target/lambda-zips")
        );
        // Outside any repository: the bundle, unpacked under the cache, zips in the project.
        let outside = Sources::locate(project.path(), project.path(), None, cache).unwrap();
        let Sources::Bundled { dir, digest } = &outside else {
            panic!("{outside:?}")
        };
        assert_eq!(dir, &bundle::unpack_dir(cache, digest));
        assert_eq!(digest.len(), 16);
        assert_eq!(
            outside.default_out(project.path()),
            project.path().join("target/lambda-zips")
        );
        assert_eq!(
            outside.target_dir(cache, &HashMap::new()),
            Some(PathBuf::from("/cache/handlers/target"))
        );
        let cargo_set = HashMap::from([("CARGO_TARGET_DIR".to_owned(), "/t".to_owned())]);
        assert_eq!(outside.target_dir(cache, &cargo_set), None);
        // An ejected copy wins over the repository around it.
        bundle::write_tree(&project.path().join(EJECTED_DIR), false).unwrap();
        assert_eq!(
            Sources::locate(&here.join("src"), project.path(), None, cache).unwrap(),
            Sources::Ejected {
                dir: project.path().join(EJECTED_DIR)
            }
        );
        // --manifest-path wins over everything, and must name a handler workspace.
        let flagged = Sources::locate(
            project.path(),
            project.path(),
            Some(&root.join("Cargo.toml")),
            cache,
        );
        assert_eq!(flagged.unwrap(), Sources::Workspace { dir: root });
        let err = Sources::locate(
            project.path(),
            project.path(),
            Some(Path::new("elsewhere/Cargo.toml")),
            cache,
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("--manifest-path") && err.contains("elsewhere"),
            "{err}"
        );
    }

    #[test]
    fn the_zip_depends_on_the_binary_bytes_only() {
        let dir = tempfile::tempdir().unwrap();
        let bootstrap = dir.path().join("bootstrap");
        std::fs::write(&bootstrap, elf(0xB7)).unwrap();
        let (a, b) = (dir.path().join("a.zip"), dir.path().join("b.zip"));
        package(&bootstrap, &a).unwrap();
        // Relinking writes the same bytes with a new mtime: the zip must not change.
        std::thread::sleep(std::time::Duration::from_millis(1100));
        std::fs::write(&bootstrap, elf(0xB7)).unwrap();
        package(&bootstrap, &b).unwrap();
        assert_eq!(std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap());
        let artifact = inspect("chat-ws", &a, Arch::Arm64).unwrap();
        assert_eq!(artifact.bootstrap_bytes, elf(0xB7).len() as u64);
        let mut archive = zip::ZipArchive::new(std::fs::File::open(&a).unwrap()).unwrap();
        assert_eq!(archive.by_index(0).unwrap().unix_mode(), Some(0o100755));
        assert!(matches!(
            package(&dir.path().join("none"), &a),
            Err(BuildError::Missing(_))
        ));
    }
}
