//! The EventBridge Scheduler schedule that runs the presence sweep every minute.

use serde::Serialize;

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Schedule {
    pub schedule_expression: Option<String>,
    /// `OFF` or `FLEXIBLE`.
    pub flexible_time_window: Option<String>,
    /// `ENABLED` or `DISABLED`.
    pub state: Option<String>,
    pub target: ScheduleTarget,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ScheduleTarget {
    pub arn: Option<String>,
    pub role_arn: Option<String>,
    pub input: Option<String>,
    pub maximum_retry_attempts: Option<i64>,
    pub maximum_event_age_s: Option<i64>,
}
