//! The deploy lock: one deploy or destroy of a stage at a time. It is an SSM parameter
//! `/chatctl/{app}/{stage}/deploy-lock` created with `Overwrite=false` — an atomic
//! create-if-absent that exists before any of the stage's resources do — holding who took it,
//! where, and since when. A lock left by a killed run on this machine (its process is gone) is
//! taken over; any other stale lock needs `--break-lock`.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_sdk_ssm::Client;
use aws_sdk_ssm::types::ParameterType;
use serde::{Deserialize, Serialize};

use crate::errors::{describe, is_already_there, is_not_found};
use crate::stack::StackName;

/// `/chatctl/{app}/{stage}/deploy-lock`
pub fn parameter_name(name: &StackName) -> String {
    format!("/chatctl/{}/{}/deploy-lock", name.app, name.stage)
}

/// Who holds a lock.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Holder {
    pub user: String,
    pub host: String,
    pub pid: u32,
    /// `deploy` or `destroy`.
    pub command: String,
    /// Seconds since the Unix epoch.
    pub since: u64,
}

impl Holder {
    /// This process.
    pub fn me(command: &str) -> Self {
        let user = std::env::var("USER")
            .or_else(|_| std::env::var("USERNAME"))
            .unwrap_or_else(|_| "unknown".to_owned());
        let host = std::fs::read_to_string("/etc/hostname")
            .ok()
            .map(|h| h.trim().to_owned())
            .filter(|h| !h.is_empty())
            .or_else(|| std::env::var("HOSTNAME").ok())
            .unwrap_or_else(|| "unknown".to_owned());
        Self {
            user,
            host,
            pid: std::process::id(),
            command: command.to_owned(),
            since: now(),
        }
    }

    /// Whether the holder is a process on this machine that no longer runs.
    fn is_dead_here(&self, me: &Holder) -> bool {
        // Only Linux's /proc tells us for sure; elsewhere assume the holder still runs.
        self.host == me.host
            && self.pid != me.pid
            && cfg!(target_os = "linux")
            && !std::path::Path::new(&format!("/proc/{}", self.pid)).exists()
    }
}

impl fmt::Display for Holder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let since = UNIX_EPOCH + Duration::from_secs(self.since);
        let ago = SystemTime::now()
            .duration_since(since)
            .map(|d| humantime::format_duration(Duration::from_secs(d.as_secs())).to_string())
            .unwrap_or_else(|_| "0s".to_owned());
        write!(
            f,
            "{}@{} (pid {}, {}) since {} ({ago} ago)",
            self.user,
            self.host,
            self.pid,
            self.command,
            humantime::format_rfc3339_seconds(since)
        )
    }
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
}

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error(
        "stage {stack} is locked by {holder}; wait for that run to finish, or if it is dead, run again with --break-lock"
    )]
    Held { stack: String, holder: Holder },
    #[error("cannot {what} the deploy lock {parameter}: {why}")]
    Aws {
        what: &'static str,
        parameter: String,
        why: String,
    },
}

/// A held lock; release it when done.
#[derive(Debug)]
pub struct Lock {
    client: Client,
    parameter: String,
    pub holder: Holder,
    /// The holder whose lock was taken over (a dead run here, or one broken with --break-lock).
    pub took_over: Option<Holder>,
}

/// Take the lock of `name` for `command`. With `break_lock`, any current holder is removed first.
pub async fn acquire(
    client: &Client,
    name: &StackName,
    command: &str,
    break_lock: bool,
) -> Result<Lock, LockError> {
    let parameter = parameter_name(name);
    let me = Holder::me(command);
    let aws = |what: &'static str, why: String| LockError::Aws {
        what,
        parameter: parameter.clone(),
        why,
    };
    let value = serde_json::to_string(&me).map_err(|e| aws("write", e.to_string()))?;
    let mut took_over = None;
    // Twice at most: once, and once more after removing a stale or broken lock.
    for _ in 0..2 {
        match client
            .put_parameter()
            .name(&parameter)
            .value(&value)
            .r#type(ParameterType::String)
            .overwrite(false)
            .description("chatctl: a deploy or destroy of this stage is running")
            .send()
            .await
        {
            Ok(_) => {
                return Ok(Lock {
                    client: client.clone(),
                    parameter,
                    holder: me,
                    took_over,
                });
            }
            Err(e) if is_already_there(&e) => {}
            Err(e) => return Err(aws("take", describe(e))),
        }
        let current = match client.get_parameter().name(&parameter).send().await {
            Ok(out) => out
                .parameter
                .and_then(|p| p.value)
                .and_then(|v| serde_json::from_str::<Holder>(&v).ok()),
            // Released between our two calls: just try again.
            Err(e) if is_not_found(&e) => continue,
            Err(e) => return Err(aws("read", describe(e))),
        };
        let holder = current.unwrap_or(Holder {
            user: "unknown".into(),
            host: "unknown".into(),
            pid: 0,
            command: "unreadable lock".into(),
            since: 0,
        });
        if !(break_lock || holder.is_dead_here(&me)) {
            return Err(LockError::Held {
                stack: name.to_string(),
                holder,
            });
        }
        match client.delete_parameter().name(&parameter).send().await {
            Ok(_) => {}
            Err(e) if is_not_found(&e) => {}
            Err(e) => return Err(aws("break", describe(e))),
        }
        took_over = Some(holder);
    }
    // Someone else took it between our delete and our create.
    match client.get_parameter().name(&parameter).send().await {
        Ok(out) => Err(LockError::Held {
            stack: name.to_string(),
            holder: out
                .parameter
                .and_then(|p| p.value)
                .and_then(|v| serde_json::from_str(&v).ok())
                .unwrap_or(me),
        }),
        Err(e) => Err(aws("read", describe(e))),
    }
}

impl Lock {
    /// Give the lock up. Only our own lock is removed: if it was broken and taken by another run
    /// meanwhile, that run's lock stays.
    pub async fn release(self) -> Result<(), LockError> {
        let current = match self
            .client
            .get_parameter()
            .name(&self.parameter)
            .send()
            .await
        {
            Ok(out) => out
                .parameter
                .and_then(|p| p.value)
                .and_then(|v| serde_json::from_str::<Holder>(&v).ok()),
            Err(e) if is_not_found(&e) => return Ok(()),
            Err(e) => {
                return Err(LockError::Aws {
                    what: "read",
                    parameter: self.parameter,
                    why: describe(e),
                });
            }
        };
        if current.as_ref() != Some(&self.holder) {
            return Ok(());
        }
        match self
            .client
            .delete_parameter()
            .name(&self.parameter)
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if is_not_found(&e) => Ok(()),
            Err(e) => Err(LockError::Aws {
                what: "release",
                parameter: self.parameter,
                why: describe(e),
            }),
        }
    }
}
