//! The SSM parameter holding the stage's token secret (its value is never compared).

use serde::Serialize;

use super::Tags;

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Parameter {
    /// `SecureString`; a change replaces the parameter.
    pub r#type: Option<String>,
    pub tags: Tags,
}
