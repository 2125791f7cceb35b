//! The local token secret: 32 random bytes kept in the data directory (mode 0600), created on
//! first use, so `chatctl token` and `chatctl dev` agree without configuration.

use std::io::Write;
use std::path::{Path, PathBuf};

use chat_core::token::{TokenKey, decode_hex, encode_hex};

pub const SECRET_FILE: &str = "token-secret";

#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error(
        "cannot read or create the token secret {path}: {source}; check the data directory's permissions or pass another --data-dir"
    )]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "the token secret {path} is damaged ({reason}); delete it to mint a new one (existing tokens stop working)"
    )]
    Damaged { path: PathBuf, reason: String },
}

/// The secret of `data_dir`, created if missing.
pub fn load_or_create(data_dir: &Path) -> Result<TokenKey, SecretError> {
    let path = data_dir.join(SECRET_FILE);
    let io = |source| SecretError::Io {
        path: path.clone(),
        source,
    };
    std::fs::create_dir_all(data_dir).map_err(io)?;
    if !path.exists() {
        create(data_dir, &path).map_err(io)?;
    }
    let hex = std::fs::read_to_string(&path).map_err(io)?;
    let bytes = decode_hex(&hex).ok_or_else(|| SecretError::Damaged {
        path: path.clone(),
        reason: "not hexadecimal".into(),
    })?;
    TokenKey::new(bytes).map_err(|e| SecretError::Damaged {
        path,
        reason: e.to_string(),
    })
}

/// Write a fresh secret beside `path` and link it into place, so a concurrent reader never sees a
/// half-written file and a concurrent creator's secret wins over ours, never replaced.
fn create(data_dir: &Path, path: &Path) -> std::io::Result<()> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| std::io::Error::other(e.to_string()))?;
    let hex = encode_hex(&bytes);
    let tmp = data_dir.join(format!(".{SECRET_FILE}.{}.tmp", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    write_private(&tmp, &hex)?;
    let linked = std::fs::hard_link(&tmp, path);
    let _ = std::fs::remove_file(&tmp);
    match linked {
        Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => Err(e),
        _ => Ok(()),
    }
}

fn write_private(path: &Path, contents: &str) -> std::io::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path)?;
    file.write_all(contents.as_bytes())?;
    file.sync_all()
}
