//! A Lambda function and what hangs off it: its event-invoke configuration, the presence queue's
//! event source mapping, and the permissions that let API Gateway and SNS invoke it.

use std::collections::BTreeMap;

use serde::Serialize;

use super::Tags;

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Function {
    pub runtime: Option<String>,
    pub handler: Option<String>,
    /// `arm64` or `x86_64`.
    pub architecture: Option<String>,
    pub memory_mb: Option<i64>,
    pub timeout_s: Option<i64>,
    /// The execution role's ARN.
    pub role: Option<String>,
    /// Lambda's `CodeSha256` of the zip.
    pub code_sha256: Option<String>,
    pub environment: BTreeMap<String, String>,
    pub tags: Tags,
}

/// How Lambda handles the function's asynchronous invocations.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EventInvokeConfig {
    pub maximum_event_age_s: Option<i64>,
    pub maximum_retry_attempts: Option<i64>,
    /// The on-failure destination's ARN.
    pub on_failure: Option<String>,
    /// The on-success destination's ARN (none wanted: one added by hand is drift).
    pub on_success: Option<String>,
}

/// The presence queue feeding the fan-out in batches.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EventSourceMapping {
    /// The queue's ARN; a change replaces the mapping.
    pub event_source_arn: Option<String>,
    pub batch_size: Option<i64>,
    pub maximum_batching_window_s: Option<i64>,
    /// Sorted.
    pub function_response_types: Vec<String>,
}

/// One statement of the function's resource policy.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Permission {
    /// The service principal; a change replaces the statement.
    pub principal: Option<String>,
    pub action: Option<String>,
    /// The `AWS:SourceArn` condition; a change replaces the statement.
    pub source_arn: Option<String>,
}
