//! The WebSocket API and its parts: the Lambda integration, the routes, the stage.

use serde::Serialize;

use super::Tags;

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Api {
    /// `WEBSOCKET`; a change replaces the API.
    pub protocol: Option<String>,
    pub route_selection_expression: Option<String>,
    pub tags: Tags,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Integration {
    /// `AWS_PROXY`.
    pub r#type: Option<String>,
    /// The Lambda invocation URI of the ws function.
    pub uri: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Route {
    /// `integrations/{integration name}`: the model names the integration, not its id.
    pub target: String,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Stage {
    pub auto_deploy: bool,
    pub throttle_rate: Option<f64>,
    pub throttle_burst: Option<i64>,
    pub tags: Tags,
}
