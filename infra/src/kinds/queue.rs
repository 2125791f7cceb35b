//! An SQS queue: the fan-out's dead-letter queue and the presence queue.

use serde::Serialize;
use serde_json::Value;

use super::Tags;

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Queue {
    pub message_retention_seconds: Option<u64>,
    pub visibility_timeout_s: Option<u64>,
    /// `{deadLetterTargetArn, maxReceiveCount}`, or null for none.
    pub redrive_policy: Value,
    /// The queue's resource policy document, or null for none.
    pub policy: Value,
    pub tags: Tags,
}
