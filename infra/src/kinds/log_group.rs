//! A function's CloudWatch log group, created ahead of the function so its retention is ours.

use serde::Serialize;
use serde_json::{Value, json};

use crate::apply::{Applier, int, typed};
use crate::cloudformation::{cfn, tag_list};
use crate::errors::{describe, is_already_there};
use crate::kinds::Properties;
use crate::observe::{ObserveError, Reader, our_tags, read_error};
use crate::stack::Resource;

use super::Tags;

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LogGroup {
    pub retention_days: Option<i64>,
    pub tags: Tags,
}

// --- observe ------------------------------------------------------------------------------

pub(crate) async fn read_log_group(r: &Reader<'_>, name: &str) -> Result<(), ObserveError> {
    let groups = r
        .clients
        .logs
        .describe_log_groups()
        .log_group_name_prefix(name)
        .send()
        .await
        .map_err(|e| read_error(format!("log group {name}"), e))?
        .log_groups
        .unwrap_or_default();
    let Some(group) = groups
        .into_iter()
        .find(|g| g.log_group_name() == Some(name))
    else {
        return Ok(());
    };
    let arn = group
        .log_group_arn()
        .map(str::to_owned)
        .or_else(|| group.arn().map(|a| a.trim_end_matches(":*").to_owned()))
        .unwrap_or_default();
    let tags = r
        .clients
        .logs
        .list_tags_for_resource()
        .resource_arn(arn)
        .send()
        .await
        .map_err(|e| read_error(format!("tags of log group {name}"), e))?
        .tags
        .unwrap_or_default();
    r.put(
        name,
        LogGroup {
            retention_days: group.retention_in_days().map(i64::from),
            tags: our_tags(tags.iter().map(|(k, v)| (k.as_str(), v.as_str()))),
        },
    );
    Ok(())
}

// --- apply --------------------------------------------------------------------------------

impl Applier<'_> {
    pub(crate) async fn create_log_group(&self, r: &Resource) -> Result<(), String> {
        match self
            .clients
            .logs
            .create_log_group()
            .log_group_name(&r.name)
            .send()
            .await
        {
            Ok(_) => {}
            Err(e) if is_already_there(&e) => {}
            Err(e) => return Err(describe(e)),
        }
        self.put_retention(r).await?;
        self.retag(r, None).await
    }

    pub(crate) async fn put_retention(&self, r: &Resource) -> Result<(), String> {
        self.clients
            .logs
            .put_retention_policy()
            .log_group_name(&r.name)
            .retention_in_days(int(typed(r, Properties::log_group)?.retention_days))
            .send()
            .await
            .map_err(describe)?;
        Ok(())
    }
}

// --- CloudFormation ---------------------------------------------------------------------------

impl LogGroup {
    pub(crate) fn cloudformation(&self, name: &str) -> Value {
        let LogGroup {
            retention_days,
            tags,
        } = self;
        cfn(
            "AWS::Logs::LogGroup",
            json!({
                "LogGroupName": name,
                "RetentionInDays": retention_days,
                "Tags": tag_list(tags),
            }),
        )
    }
}
