//! An IAM role with its one inline policy (the functions' and the schedule's).

use serde::Serialize;
use serde_json::Value;

use super::Tags;

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Role {
    /// The trust policy document.
    pub assume_role_policy: Value,
    /// The inline policy document (`chatctl`), or null when the role has none.
    pub inline_policy: Value,
    pub tags: Tags,
}
