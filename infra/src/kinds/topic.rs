//! The stage's SNS topic and its two subscriptions (the fan-out function, the presence queue).

use serde::Serialize;
use serde_json::Value;

use super::Tags;

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Topic {
    pub tags: Tags,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Subscription {
    /// `lambda` or `sqs`; a change replaces the subscription.
    pub protocol: Option<String>,
    /// The function's or queue's ARN; a change replaces the subscription.
    pub endpoint: Option<String>,
    /// The `FilterPolicy` document (on message attributes).
    pub filter_policy: Value,
    pub raw_message_delivery: bool,
}
