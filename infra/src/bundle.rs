//! The handler sources chatctl carries: every file of the handler crates, embedded at build time
//! (`build.rs`), so `chatctl build` works outside this repository. They are unpacked into a
//! versioned cache directory to build there, or copied into a project by `chatctl init --eject`.

use std::borrow::Cow;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

include!(concat!(env!("OUT_DIR"), "/bundle.rs"));

/// The crates bundled, as workspace members.
const MEMBERS: [&str; 5] = [
    "lambdas/aws",
    "lambdas/core",
    "lambdas/fanout",
    "lambdas/handlers",
    "lambdas/ws",
];

/// Written last into an unpacked directory: its presence means every file is there.
const COMPLETE: &str = ".chatctl-bundle";

#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    #[error("the bundled {path} is not valid TOML: {why}")]
    Manifest { path: String, why: String },
    #[error("cannot write {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{} already exists", .0.display())]
    Exists(PathBuf),
}

/// One file of the bundle: its path in the workspace and its bytes.
pub type BundledFile = (&'static str, Cow<'static, [u8]>);

/// The bundled files as a standalone workspace: the handler crates, the lock and toolchain pin,
/// and a root manifest with only the members and dependencies the handlers use.
pub fn files() -> Result<Vec<BundledFile>, BundleError> {
    FILES
        .iter()
        .map(|&(path, bytes)| {
            let bytes = if path == "Cargo.toml" {
                Cow::Owned(workspace_manifest()?.into_bytes())
            } else {
                Cow::Borrowed(bytes)
            };
            Ok((path, bytes))
        })
        .collect()
}

fn raw(path: &str) -> &'static [u8] {
    FILES
        .iter()
        .find(|(p, _)| *p == path)
        .map_or(&[][..], |(_, b)| b)
}

fn parse(path: &str) -> Result<toml::Table, BundleError> {
    let text = String::from_utf8_lossy(raw(path));
    text.parse::<toml::Table>()
        .map_err(|e| BundleError::Manifest {
            path: path.to_owned(),
            why: e.to_string(),
        })
}

/// The repository's root manifest cut down to the bundled members: `workspace.dependencies`
/// keeps what their manifests name, so versions and features are written once, in the repository.
fn workspace_manifest() -> Result<String, BundleError> {
    let mut root = parse("Cargo.toml")?;
    let mut used = std::collections::BTreeSet::new();
    for member in MEMBERS {
        let manifest = parse(&format!("{member}/Cargo.toml"))?;
        for section in ["dependencies", "dev-dependencies", "build-dependencies"] {
            if let Some(deps) = manifest.get(section).and_then(toml::Value::as_table) {
                used.extend(deps.keys().cloned());
            }
        }
    }
    if let Some(workspace) = root
        .get_mut("workspace")
        .and_then(toml::Value::as_table_mut)
    {
        workspace.insert(
            "members".into(),
            toml::Value::Array(MEMBERS.iter().map(|m| (*m).into()).collect()),
        );
        workspace.remove("default-members");
        if let Some(deps) = workspace
            .get_mut("dependencies")
            .and_then(toml::Value::as_table_mut)
        {
            deps.retain(|name, _| used.contains(name));
        }
    }
    let body = toml::to_string(&root).map_err(|e| BundleError::Manifest {
        path: "Cargo.toml".into(),
        why: e.to_string(),
    })?;
    Ok(format!(
        "# The chat backend's Lambda handlers, as bundled with chatctl {}.\n\
         # `chatctl build` builds this workspace with cargo-lambda; edit the crates freely.\n\n{body}",
        env!("CARGO_PKG_VERSION")
    ))
}

/// A short hash of every bundled path and byte: names the cache directory, so a chatctl with
/// other sources never builds in a stale copy.
pub fn digest() -> Result<String, BundleError> {
    let mut hash = Sha256::new();
    for (path, bytes) in files()? {
        hash.update(path.as_bytes());
        hash.update([0]);
        hash.update((bytes.len() as u64).to_le_bytes());
        hash.update(&bytes);
    }
    Ok(hash
        .finalize()
        .iter()
        .take(8)
        .map(|b| format!("{b:02x}"))
        .collect())
}

/// Where the bundle with `digest` (this chatctl's: [`digest`]) is unpacked under `cache`.
pub fn unpack_dir(cache: &Path, digest: &str) -> PathBuf {
    cache
        .join("handlers")
        .join(format!("{}-{digest}", env!("CARGO_PKG_VERSION")))
}

/// Unpack the bundle into `dir` (its [`unpack_dir`]) unless it already is. Files go into a
/// fresh directory renamed into place, so a killed run never leaves half a workspace.
pub fn unpack(dir: &Path) -> Result<PathBuf, BundleError> {
    let dir = dir.to_path_buf();
    if dir.join(COMPLETE).is_file() {
        return Ok(dir);
    }
    let parent = dir.parent().unwrap_or(&dir);
    let staging = parent.join(format!(
        ".unpacking-{}-{}",
        std::process::id(),
        dir.file_name()
            .map(|n| n.to_string_lossy())
            .unwrap_or_default()
    ));
    let _ = std::fs::remove_dir_all(&staging);
    write_tree(&staging, false)?;
    write(
        &staging.join(COMPLETE),
        env!("CARGO_PKG_VERSION").as_bytes(),
    )?;
    // Another chatctl may have unpacked the same bundle meanwhile: the same bytes, keep theirs.
    if std::fs::rename(&staging, &dir).is_err() {
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::rename(&staging, &dir).map_err(|source| BundleError::Write {
            path: dir.clone(),
            source,
        })?;
    }
    Ok(dir)
}

/// Write the bundle as a workspace in `dir` (`init --eject`). Refuses to replace any file that
/// exists unless `force`. Returns the files written, relative to `dir`.
pub fn write_tree(dir: &Path, force: bool) -> Result<Vec<PathBuf>, BundleError> {
    let files = files()?;
    if let Some((path, _)) = files.iter().find(|(p, _)| !force && dir.join(p).exists()) {
        return Err(BundleError::Exists(dir.join(path)));
    }
    let mut written = Vec::with_capacity(files.len());
    for (path, bytes) in &files {
        write(&dir.join(path), bytes)?;
        written.push(PathBuf::from(path));
    }
    Ok(written)
}

fn write(path: &Path, bytes: &[u8]) -> Result<(), BundleError> {
    write_creating_dirs(path, bytes).map_err(|source| BundleError::Write {
        path: path.to_owned(),
        source,
    })
}

/// Write `bytes` to `path`, creating its directory first.
pub(crate) fn write_creating_dirs(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(path, bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bundle_holds_both_handlers_and_every_crate_they_use() {
        let files = files().unwrap();
        let paths: Vec<&str> = files.iter().map(|(p, _)| *p).collect();
        for needed in [
            "Cargo.toml",
            "Cargo.lock",
            "rust-toolchain.toml",
            "lambdas/ws/src/main.rs",
            "lambdas/fanout/src/main.rs",
        ] {
            assert!(paths.contains(&needed), "{needed} missing from {paths:?}");
        }
        // Closed under path dependencies: every workspace crate a member names is a member.
        let manifest = &files.iter().find(|(p, _)| *p == "Cargo.toml").unwrap().1;
        let root: toml::Table = std::str::from_utf8(manifest).unwrap().parse().unwrap();
        let deps = root["workspace"]["dependencies"].as_table().unwrap();
        for (name, spec) in deps {
            if let Some(path) = spec.get("path").and_then(toml::Value::as_str) {
                assert!(
                    MEMBERS.contains(&path),
                    "{name} is a path dependency ({path}) the bundle does not carry"
                );
            }
        }
        assert!(deps.contains_key("aws-sdk-dynamodb"));
        assert!(
            !deps.contains_key("aws-sdk-cloudformation"),
            "only what the handlers use"
        );
        assert!(root["workspace"].get("default-members").is_none());
        assert_eq!(
            root["workspace"]["members"].as_array().unwrap().len(),
            MEMBERS.len()
        );
        assert!(root.get("profile").is_some(), "the build profile travels");
    }

    #[test]
    fn the_bundle_is_the_working_tree() {
        // Embedded at build time: a test binary built from this tree carries this tree.
        let repo = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
        for (path, bytes) in FILES {
            let on_disk = std::fs::read(repo.join(path)).unwrap();
            assert_eq!(&on_disk[..], *bytes, "{path}");
        }
        assert!(FILES.len() > 20, "{} files", FILES.len());
    }

    #[test]
    fn unpacking_is_complete_once_and_then_reused() {
        let cache = tempfile::tempdir().unwrap();
        let dir = unpack(&unpack_dir(cache.path(), &digest().unwrap())).unwrap();
        assert!(dir.join("lambdas/ws/Cargo.toml").is_file());
        assert!(dir.join(COMPLETE).is_file());
        assert_eq!(
            dir.file_name().unwrap().to_string_lossy(),
            format!("{}-{}", env!("CARGO_PKG_VERSION"), digest().unwrap())
        );
        // A file changed in the cache is not rewritten: the marker says the unpack finished.
        std::fs::write(dir.join("lambdas/ws/src/main.rs"), "edited").unwrap();
        assert_eq!(unpack(&dir).unwrap(), dir);
        assert_eq!(
            std::fs::read_to_string(dir.join("lambdas/ws/src/main.rs")).unwrap(),
            "edited"
        );
        let leftovers: Vec<_> = std::fs::read_dir(cache.path().join("handlers"))
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with(".unpacking"))
            .collect();
        assert!(leftovers.is_empty());
    }

    #[test]
    fn writing_the_tree_refuses_to_overwrite_without_force() {
        let project = tempfile::tempdir().unwrap();
        let written = write_tree(project.path(), false).unwrap();
        assert_eq!(written.len(), FILES.len());
        let err = write_tree(project.path(), false).unwrap_err();
        assert!(matches!(err, BundleError::Exists(_)), "{err}");
        assert!(write_tree(project.path(), true).is_ok());
    }
}
