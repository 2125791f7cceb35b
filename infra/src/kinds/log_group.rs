//! A function's CloudWatch log group, created ahead of the function so its retention is ours.

use serde::Serialize;

use super::Tags;

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LogGroup {
    pub retention_days: Option<i64>,
    pub tags: Tags,
}
