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
    /// This boot of the machine and the process's PID namespace (Linux): a pid means the same
    /// process only within both. Two containers can share a host name, not a PID namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub boot: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid_ns: Option<String>,
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
            boot: std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
                .ok()
                .map(|b| b.trim().to_owned()),
            pid_ns: std::fs::read_link("/proc/self/ns/pid")
                .ok()
                .map(|p| p.display().to_string()),
        }
    }

    /// Whether the holder is a process of this machine's current boot, in our PID namespace,
    /// that no longer runs. Only Linux's /proc tells that for sure; anywhere else, or when in
    /// doubt, the holder is taken to be alive.
    fn is_dead_here(&self, me: &Holder) -> bool {
        self.host == me.host
            && self.host != "unknown"
            && self.boot.is_some()
            && self.boot == me.boot
            && self.pid_ns.is_some()
            && self.pid_ns == me.pid_ns
            && self.pid != me.pid
            && cfg!(target_os = "linux")
            && !std::path::Path::new(&format!("/proc/{}", self.pid)).exists()
    }
}

impl fmt::Display for Holder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The lock's text comes from SSM: a nonsense time must not panic.
        let when = UNIX_EPOCH
            .checked_add(Duration::from_secs(self.since))
            .map_or_else(
                || "an unknown time".to_owned(),
                |since| {
                    let ago = SystemTime::now()
                        .duration_since(since)
                        .map(|d| {
                            humantime::format_duration(Duration::from_secs(d.as_secs())).to_string()
                        })
                        .unwrap_or_else(|_| "0s".to_owned());
                    format!("{} ({ago} ago)", humantime::format_rfc3339_seconds(since))
                },
            );
        write!(
            f,
            "{}@{} (pid {}, {}) since {when}",
            self.user, self.host, self.pid, self.command
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
    Held { stack: String, holder: Box<Holder> },
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
    // A few times at most: once, once more after removing a stale or broken lock, and once if
    // it was released between our reads.
    for _ in 0..3 {
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
        // Our own: an earlier attempt of this very put took the lock, and its answer was lost
        // (the SDK retried it into ParameterAlreadyExists).
        if current.as_ref() == Some(&me) {
            return Ok(Lock {
                client: client.clone(),
                parameter,
                holder: me,
                took_over,
            });
        }
        let holder = current.unwrap_or(Holder {
            user: "unknown".into(),
            host: "unknown".into(),
            pid: 0,
            command: "unreadable lock".into(),
            since: 0,
            boot: None,
            pid_ns: None,
        });
        if !(break_lock || holder.is_dead_here(&me)) {
            return Err(LockError::Held {
                stack: name.to_string(),
                holder: Box::new(holder),
            });
        }
        match client.delete_parameter().name(&parameter).send().await {
            Ok(_) => {}
            Err(e) if is_not_found(&e) => {}
            Err(e) => return Err(aws("break", describe(e))),
        }
        took_over = Some(holder);
    }
    // Others keep taking and releasing it while we try.
    match client.get_parameter().name(&parameter).send().await {
        Ok(out) => Err(LockError::Held {
            stack: name.to_string(),
            holder: Box::new(
                out.parameter
                    .and_then(|p| p.value)
                    .and_then(|v| serde_json::from_str(&v).ok())
                    .unwrap_or(me),
            ),
        }),
        Err(e) if is_not_found(&e) => Err(aws(
            "take",
            "other runs kept taking and releasing it; run the command again".to_owned(),
        )),
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

#[cfg(test)]
mod tests {
    use super::*;

    fn holder(host: &str, pid: u32) -> Holder {
        Holder {
            user: "ann".into(),
            host: host.into(),
            pid,
            command: "deploy".into(),
            since: 1_790_000_000,
            boot: Some("boot-1".into()),
            pid_ns: Some("pid:[1]".into()),
        }
    }

    #[test]
    fn only_a_dead_process_of_this_boot_and_pid_namespace_is_taken_over() {
        let me = holder("build-7", 1);
        // A pid far above any Linux pid_max: no such process.
        let dead = holder("build-7", 4_000_000_000);
        assert_eq!(dead.is_dead_here(&me), cfg!(target_os = "linux"));
        let other_container = Holder {
            pid_ns: Some("pid:[2]".into()),
            ..dead.clone()
        };
        assert!(!other_container.is_dead_here(&me));
        let rebooted = Holder {
            boot: Some("boot-0".into()),
            ..dead.clone()
        };
        assert!(!rebooted.is_dead_here(&me));
        let unknown = holder("unknown", 4_000_000_000);
        assert!(!unknown.is_dead_here(&holder("unknown", 1)));
        assert!(!holder("ci-runner-3", 4_000_000_000).is_dead_here(&me));
    }

    #[test]
    fn a_nonsense_time_in_the_lock_is_shown_not_panicked_on() {
        let h = Holder {
            since: u64::MAX,
            ..holder("build-7", 1)
        };
        assert!(h.to_string().contains("since an unknown time"), "{h}");
        let h = holder("build-7", 1).to_string();
        assert!(
            h.contains("ann@build-7 (pid 1, deploy) since 2026-09-21T"),
            "{h}"
        );
    }
}
