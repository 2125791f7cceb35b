//! Embeds the Lambda handlers' sources in the library (and so in the `chatctl` binary), so
//! `chatctl build` works in any directory: `bundle.rs` in OUT_DIR lists every file of the
//! handler crates with `include_bytes!`. The workspace manifest is derived at run time
//! (`bundle::files`), from the repository's own Cargo.toml, so no version is written twice.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// The crates the two handler binaries are built from: closed under their path dependencies
/// (`bundle`'s tests check it).
const CRATES: [&str; 5] = [
    "lambdas/aws",
    "lambdas/core",
    "lambdas/fanout",
    "lambdas/handlers",
    "lambdas/ws",
];
/// Workspace files beside them: the lock (the bundled build uses the repository's versions) and
/// the toolchain pin.
const ROOT_FILES: [&str; 3] = ["Cargo.toml", "Cargo.lock", "rust-toolchain.toml"];

fn main() {
    let infra = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_default());
    let root = infra.parent().unwrap_or(&infra).to_path_buf();
    let mut files = Vec::new();
    for name in ROOT_FILES {
        files.push((name.to_owned(), root.join(name)));
    }
    for krate in CRATES {
        let dir = root.join(krate);
        println!("cargo:rerun-if-changed={}", dir.display());
        files.push((format!("{krate}/Cargo.toml"), dir.join("Cargo.toml")));
        for sub in ["src", "tests"] {
            walk(&dir.join(sub), &format!("{krate}/{sub}"), &mut files);
        }
    }
    for name in ROOT_FILES {
        println!("cargo:rerun-if-changed={}", root.join(name).display());
    }
    files.sort();
    let mut out =
        String::from("/// Every bundled file: its path in the workspace and its bytes.\n");
    out.push_str("pub(crate) const FILES: &[(&str, &[u8])] = &[\n");
    for (rel, path) in &files {
        let _ = writeln!(
            out,
            "    ({rel:?}, include_bytes!({:?})),",
            path.display().to_string()
        );
    }
    out.push_str("];\n");
    let dest = PathBuf::from(std::env::var_os("OUT_DIR").unwrap_or_default()).join("bundle.rs");
    if let Err(e) = std::fs::write(&dest, out) {
        println!("cargo:warning=cannot write {}: {e}", dest.display());
        std::process::exit(1);
    }
}

/// Every file under `dir`, as (`prefix/…`, path); directories in name order.
fn walk(dir: &Path, prefix: &str, files: &mut Vec<(String, PathBuf)>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let mut entries: Vec<_> = entries.flatten().collect();
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let name = entry.file_name().to_string_lossy().into_owned();
        let path = entry.path();
        if path.is_dir() {
            walk(&path, &format!("{prefix}/{name}"), files);
        } else if !name.starts_with('.') {
            files.push((format!("{prefix}/{name}"), path));
        }
    }
}
