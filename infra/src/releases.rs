//! The stage's release log and rollback: which Lambda version of each function a deploy or a
//! rollback put behind the `live` aliases, when, by whom, from which commit. The log is one SSM
//! String parameter; each release is one of its versions (SSM keeps the last 100, with who wrote
//! each and when), so the release number is the parameter version and is never reused.

use std::collections::BTreeMap;
use std::fmt;

use aws_sdk_ssm::types::ParameterType;
use aws_smithy_types::date_time::Format;
use serde::{Deserialize, Serialize};

use crate::errors::{describe, is_not_found};
use crate::names::{FUNCTION_ROLES, LIVE_ALIAS};
use crate::stack::StackName;

/// What made a release.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "camelCase")]
pub enum ReleaseKind {
    /// A deploy that published new versions.
    Deploy,
    /// `chatctl rollback`: the aliases moved back to release `to`'s versions.
    Rollback { to: i64 },
}

/// One function's version behind its `live` alias.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Live {
    pub version: String,
    /// The code that version runs (Lambda's base64 SHA-256 of the zip).
    pub code_sha256: String,
}

/// What the log stores per release (the parameter's value, as JSON).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Record {
    #[serde(flatten)]
    pub kind: ReleaseKind,
    /// Function name → its live version.
    pub functions: BTreeMap<String, Live>,
    /// The git commit deployed, when the project is a git checkout (`-dirty` if it had
    /// uncommitted changes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit: Option<String>,
}

impl Record {
    /// Which version each function runs, without the code hashes.
    pub fn versions(&self) -> BTreeMap<&str, &str> {
        self.functions
            .iter()
            .map(|(f, l)| (f.as_str(), l.version.as_str()))
            .collect()
    }
}

/// One release of the log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Release {
    /// The release number (the log parameter's version).
    pub number: i64,
    /// When it was recorded (RFC 3339), as SSM says.
    pub at: Option<String>,
    /// Who recorded it: the IAM identity SSM names (ARN).
    pub by: Option<String>,
    #[serde(flatten)]
    pub record: Record,
}

impl fmt::Display for Release {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.record.kind {
            ReleaseKind::Deploy => write!(f, "release {} (deploy)", self.number),
            ReleaseKind::Rollback { to } => {
                write!(f, "release {} (rollback to {to})", self.number)
            }
        }
    }
}

/// Why the log could not be read or written, or a rollback has no target.
#[derive(Debug, thiserror::Error)]
pub enum ReleaseError {
    #[error("cannot {what} the release log {parameter}: {why}")]
    Aws {
        what: &'static str,
        parameter: String,
        why: String,
    },
    #[error("release {number} in {parameter} is not a chatctl release record: {why}")]
    Corrupt {
        parameter: String,
        number: i64,
        why: String,
    },
    #[error("stage {stack} has no releases recorded")]
    NoReleases { stack: String },
    #[error("stage {stack} has no release {number} (the log holds {oldest} to {newest})")]
    NoSuchRelease {
        stack: String,
        number: i64,
        oldest: i64,
        newest: i64,
    },
    #[error(
        "stage {stack} has no earlier release that differs from what runs now (release {current})"
    )]
    NothingEarlier { stack: String, current: i64 },
    #[error(
        "release {number} needs version {version} of {function}, which is no longer published (pruned: keep_releases keeps the newest versions only)"
    )]
    Pruned {
        number: i64,
        function: String,
        version: String,
    },
    #[error("cannot {what} {function}: {why}")]
    Lambda {
        what: &'static str,
        function: String,
        why: String,
    },
}

impl ReleaseError {
    /// What to do about it.
    pub fn hint(&self) -> Option<String> {
        Some(match self {
            ReleaseError::Aws { .. } => {
                "the release log is an SSM parameter: check that your credentials may read and \
                 write it (ssm:GetParameter, ssm:GetParameterHistory, ssm:PutParameter)"
                    .into()
            }
            ReleaseError::Corrupt { .. } => {
                "the parameter was written by something else; pick another release with --to N"
                    .into()
            }
            ReleaseError::NoReleases { .. } => {
                "releases are recorded by `chatctl deploy` (the direct engine) from the first \
                 deploy that publishes versions; a CloudFormation-engine stage rolls back with \
                 CloudFormation"
                    .into()
            }
            ReleaseError::NoSuchRelease { .. } | ReleaseError::NothingEarlier { .. } => {
                "`chatctl releases --stage STAGE` lists the releases; pass one with --to N".into()
            }
            ReleaseError::Pruned { .. } => {
                "pick a newer release from `chatctl releases --stage STAGE` (pruned ones are \
                 marked), or raise keep_releases for the future"
                    .into()
            }
            ReleaseError::Lambda { .. } => {
                "check that your credentials may read and update the functions' aliases \
                 (lambda:GetAlias, lambda:UpdateAlias)"
                    .into()
            }
        })
    }
}

/// The log's parameter for the stage.
pub fn parameter(name: &StackName) -> String {
    name.names().releases_parameter().to_owned()
}

fn aws_error(
    what: &'static str,
    parameter: &str,
    e: impl std::error::Error + 'static,
) -> ReleaseError {
    ReleaseError::Aws {
        what,
        parameter: parameter.to_owned(),
        why: describe(e),
    }
}

fn parse(parameter: &str, number: i64, value: &str) -> Result<Record, ReleaseError> {
    serde_json::from_str(value).map_err(|e| ReleaseError::Corrupt {
        parameter: parameter.to_owned(),
        number,
        why: e.to_string(),
    })
}

/// The newest release, if any (one GetParameter: what the deploy guard needs).
pub async fn latest(
    ssm: &aws_sdk_ssm::Client,
    name: &StackName,
) -> Result<Option<Release>, ReleaseError> {
    let parameter = parameter(name);
    match ssm.get_parameter().name(&parameter).send().await {
        Ok(out) => {
            let Some(p) = out.parameter else {
                return Ok(None);
            };
            let number = p.version;
            Ok(Some(Release {
                number,
                at: p
                    .last_modified_date
                    .and_then(|d| d.fmt(Format::DateTime).ok()),
                by: None,
                record: parse(&parameter, number, p.value().unwrap_or_default())?,
            }))
        }
        Err(e) if is_not_found(&e) => Ok(None),
        Err(e) => Err(aws_error("read", &parameter, e)),
    }
}

/// Every release SSM still holds, oldest first. A version that is not a release record is an
/// error only when asked for (`corrupt` keeps it out of the list and says so).
pub async fn history(
    ssm: &aws_sdk_ssm::Client,
    name: &StackName,
) -> Result<Vec<Release>, ReleaseError> {
    let parameter = parameter(name);
    let mut releases = Vec::new();
    let mut token = None;
    loop {
        let out = match ssm
            .get_parameter_history()
            .name(&parameter)
            .max_results(50)
            .set_next_token(token)
            .send()
            .await
        {
            Ok(out) => out,
            Err(e) if is_not_found(&e) => return Ok(Vec::new()),
            Err(e) => return Err(aws_error("read the history of", &parameter, e)),
        };
        for p in out.parameters() {
            let number = p.version;
            releases.push(Release {
                number,
                at: p
                    .last_modified_date
                    .and_then(|d| d.fmt(Format::DateTime).ok()),
                by: p.last_modified_user.clone(),
                record: parse(&parameter, number, p.value().unwrap_or_default())?,
            });
        }
        token = out.next_token;
        if token.is_none() {
            break;
        }
    }
    releases.sort_by_key(|r| r.number);
    Ok(releases)
}

/// Append `record` to the log; returns its release number.
pub async fn record(
    ssm: &aws_sdk_ssm::Client,
    name: &StackName,
    record: &Record,
) -> Result<i64, ReleaseError> {
    let parameter = parameter(name);
    let value = serde_json::to_string(record).unwrap_or_default();
    let out = ssm
        .put_parameter()
        .name(&parameter)
        .r#type(ParameterType::String)
        .overwrite(true)
        .description(format!(
            "chatctl release log of {name}: one version per release (`chatctl releases`)"
        ))
        .value(value)
        .send()
        .await
        .map_err(|e| aws_error("write", &parameter, e))?;
    Ok(out.version)
}

/// Delete the log (destroy): the stage's releases go with its functions. Looked up first, so
/// destroying a stage that is gone already changes nothing.
pub async fn forget(ssm: &aws_sdk_ssm::Client, name: &StackName) -> Result<(), ReleaseError> {
    let parameter = parameter(name);
    match ssm.get_parameter().name(&parameter).send().await {
        Ok(_) => {}
        Err(e) if is_not_found(&e) => return Ok(()),
        Err(e) => return Err(aws_error("read", &parameter, e)),
    }
    match ssm.delete_parameter().name(&parameter).send().await {
        Ok(_) => Ok(()),
        Err(e) if is_not_found(&e) => Ok(()),
        Err(e) => Err(aws_error("delete", &parameter, e)),
    }
}

/// The version each function's `live` alias serves now (one GetAlias per function); a function
/// without the alias is left out.
pub async fn live_versions(
    lambda: &aws_sdk_lambda::Client,
    name: &StackName,
) -> Result<BTreeMap<String, String>, ReleaseError> {
    let names = name.names();
    let reads = FUNCTION_ROLES.map(|role| {
        let function = names.function(role);
        async move {
            match lambda
                .get_alias()
                .function_name(&function)
                .name(LIVE_ALIAS)
                .send()
                .await
            {
                Ok(out) => Ok(out.function_version.map(|v| (function, v))),
                Err(e) if is_not_found(&e) => Ok(None),
                Err(e) => Err(ReleaseError::Lambda {
                    what: "read the live alias of",
                    function,
                    why: describe(e),
                }),
            }
        }
    });
    let found = futures_util::future::try_join_all(reads).await?;
    Ok(found.into_iter().flatten().collect())
}

/// The versions of `function` still published (not `$LATEST`).
pub async fn published(
    lambda: &aws_sdk_lambda::Client,
    function: &str,
) -> Result<Vec<u64>, ReleaseError> {
    crate::kinds::function::published_versions(lambda, function)
        .await
        .map_err(|e| ReleaseError::Lambda {
            what: "list the versions of",
            function: function.to_owned(),
            why: describe(e),
        })
}

/// One function's alias move in a rollback.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AliasMove {
    pub function: String,
    pub from: String,
    pub to: String,
}

/// What a failed Lambda call about release `number`'s version of `m.function` means: that
/// version is gone (pruned), or the call failed.
fn version_error<E>(
    e: aws_sdk_lambda::error::SdkError<E, aws_smithy_runtime_api::http::Response>,
    what: &'static str,
    number: i64,
    m: &AliasMove,
) -> ReleaseError
where
    E: std::error::Error + aws_sdk_lambda::error::ProvideErrorMetadata + 'static,
{
    if is_not_found(&e) {
        ReleaseError::Pruned {
            number,
            function: m.function.clone(),
            version: m.to.clone(),
        }
    } else {
        ReleaseError::Lambda {
            what,
            function: m.function.clone(),
            why: describe(e),
        }
    }
}

/// That the version `m` moves to is still published (one GetFunctionConfiguration).
pub async fn check_published(
    lambda: &aws_sdk_lambda::Client,
    number: i64,
    m: &AliasMove,
) -> Result<(), ReleaseError> {
    lambda
        .get_function_configuration()
        .function_name(&m.function)
        .qualifier(&m.to)
        .send()
        .await
        .map(|_| ())
        .map_err(|e| version_error(e, "read the version to restore of", number, m))
}

/// Point `m.function`'s `live` alias at `m.to` (one UpdateAlias).
pub async fn move_alias(
    lambda: &aws_sdk_lambda::Client,
    number: i64,
    m: &AliasMove,
) -> Result<(), ReleaseError> {
    lambda
        .update_alias()
        .function_name(&m.function)
        .name(LIVE_ALIAS)
        .function_version(&m.to)
        .send()
        .await
        .map(|_| ())
        .map_err(|e| version_error(e, "move the live alias of", number, m))
}

/// One release as listed: whether it is live, and whether it can still be rolled back to.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Listed {
    #[serde(flatten)]
    pub release: Release,
    /// The newest release running what the aliases serve now (older ones may run the same
    /// versions — a rollback restores them — but this one is why they run).
    pub live: bool,
    /// A version it needs is no longer published (pruned): it cannot be rolled back to.
    pub pruned: bool,
}

/// The release log, newest first, marked against Lambda: one history read, one GetAlias and
/// one version listing per function.
pub async fn listing(
    ssm: &aws_sdk_ssm::Client,
    lambda: &aws_sdk_lambda::Client,
    name: &StackName,
) -> Result<Vec<Listed>, ReleaseError> {
    let names = name.names();
    let published = FUNCTION_ROLES.map(|role| {
        let function = names.function(role);
        async move {
            let versions = published(lambda, &function).await?;
            Ok::<_, ReleaseError>(
                versions
                    .into_iter()
                    .map(|v| (function.clone(), v.to_string()))
                    .collect::<Vec<_>>(),
            )
        }
    });
    let (history, live, published) = tokio::try_join!(
        history(ssm, name),
        live_versions(lambda, name),
        futures_util::future::try_join_all(published),
    )?;
    let published: std::collections::BTreeSet<(String, String)> =
        published.into_iter().flatten().collect();
    let live: BTreeMap<&str, &str> = live.iter().map(|(f, v)| (f.as_str(), v.as_str())).collect();
    let live_number = history
        .iter()
        .rev()
        .find(|r| r.record.versions() == live)
        .map(|r| r.number);
    Ok(history
        .into_iter()
        .rev()
        .map(|release| Listed {
            live: Some(release.number) == live_number,
            pruned: release
                .record
                .functions
                .iter()
                .any(|(f, l)| !published.contains(&(f.clone(), l.version.clone()))),
            release,
        })
        .collect())
}

/// The git commit of the project in `dir` (`-dirty` when tracked files have changes), or `None`
/// when it is not a git checkout or git is missing: the log records it when it can.
pub fn commit_of(dir: &std::path::Path) -> Option<String> {
    let git = |args: &[&str]| {
        let mut cmd = std::process::Command::new("git");
        cmd.arg("-C").arg(dir).args(args);
        crate::process::run(&mut cmd).ok()
    };
    let head = git(&["rev-parse", "--verify", "HEAD"])?
        .stdout
        .trim()
        .to_owned();
    if head.is_empty() {
        return None;
    }
    let dirty = git(&["status", "--porcelain", "--untracked-files=no"])
        .is_some_and(|out| !out.stdout.trim().is_empty());
    Some(if dirty { format!("{head}-dirty") } else { head })
}

/// The release a rollback goes to. With `to`, that release. Without, the newest release before
/// the one now live that runs different versions; "the one now live" follows a rollback to the
/// release it restored, so rolling back twice goes two releases back rather than forth again.
pub fn target<'a>(
    stack: &StackName,
    history: &'a [Release],
    to: Option<i64>,
) -> Result<&'a Release, ReleaseError> {
    let (Some(oldest), Some(current)) = (history.first(), history.last()) else {
        return Err(ReleaseError::NoReleases {
            stack: stack.to_string(),
        });
    };
    let find = |number: i64| history.iter().find(|r| r.number == number);
    if let Some(number) = to {
        return find(number).ok_or(ReleaseError::NoSuchRelease {
            stack: stack.to_string(),
            number,
            oldest: oldest.number,
            newest: current.number,
        });
    }
    let mut base = current;
    // Each step goes to a lower number, so this ends.
    while let ReleaseKind::Rollback { to } = base.record.kind {
        match find(to) {
            Some(earlier) if earlier.number < base.number => base = earlier,
            _ => break,
        }
    }
    let live = current.record.versions();
    history
        .iter()
        .rev()
        .filter(|r| r.number < base.number)
        .find(|r| r.record.versions() != live)
        .ok_or(ReleaseError::NothingEarlier {
            stack: stack.to_string(),
            current: current.number,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn release(number: i64, kind: ReleaseKind, ws: &str, fanout: &str) -> Release {
        let live = |v: &str| Live {
            version: v.into(),
            code_sha256: format!("sha-{v}"),
        };
        Release {
            number,
            at: None,
            by: None,
            record: Record {
                kind,
                functions: BTreeMap::from([
                    ("chat-prod-ws".into(), live(ws)),
                    ("chat-prod-fanout".into(), live(fanout)),
                ]),
                commit: None,
            },
        }
    }

    fn stack() -> StackName {
        StackName::new("chat", "prod").unwrap()
    }

    #[test]
    fn a_rollback_goes_to_the_newest_earlier_release_that_differs() {
        let log = [
            release(1, ReleaseKind::Deploy, "1", "1"),
            release(2, ReleaseKind::Deploy, "2", "1"),
            release(3, ReleaseKind::Deploy, "3", "2"),
        ];
        assert_eq!(target(&stack(), &log, None).unwrap().number, 2);
        assert_eq!(target(&stack(), &log, Some(1)).unwrap().number, 1);
    }

    #[test]
    fn rolling_back_twice_goes_further_back_not_forth_again() {
        let log = [
            release(1, ReleaseKind::Deploy, "1", "1"),
            release(2, ReleaseKind::Deploy, "2", "2"),
            release(3, ReleaseKind::Deploy, "3", "3"),
            release(4, ReleaseKind::Rollback { to: 2 }, "2", "2"),
        ];
        assert_eq!(target(&stack(), &log, None).unwrap().number, 1);
    }

    #[test]
    fn without_an_earlier_different_release_there_is_no_target() {
        let log = [release(1, ReleaseKind::Deploy, "1", "1")];
        let err = target(&stack(), &log, None).unwrap_err();
        assert!(
            matches!(err, ReleaseError::NothingEarlier { current: 1, .. }),
            "{err}"
        );
        assert!(matches!(
            target(&stack(), &[], None),
            Err(ReleaseError::NoReleases { .. })
        ));
        let err = target(&stack(), &log, Some(7)).unwrap_err();
        assert_eq!(
            err.to_string(),
            "stage chat/prod has no release 7 (the log holds 1 to 1)"
        );
    }

    #[test]
    fn the_record_is_stable_json() {
        let r = release(2, ReleaseKind::Rollback { to: 1 }, "1", "1");
        insta::assert_json_snapshot!(r.record, @r###"
        {
          "kind": "rollback",
          "to": 1,
          "functions": {
            "chat-prod-fanout": {
              "version": "1",
              "codeSha256": "sha-1"
            },
            "chat-prod-ws": {
              "version": "1",
              "codeSha256": "sha-1"
            }
          }
        }
        "###);
        let back: Record =
            serde_json::from_value(serde_json::to_value(&r.record).unwrap()).unwrap();
        assert_eq!(back, r.record);
    }
}
