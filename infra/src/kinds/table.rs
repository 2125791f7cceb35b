//! A DynamoDB table: keys, on-demand billing, global secondary indexes, TTL.

use serde::Serialize;

use super::Tags;

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Table {
    /// Partition key, then sort key; a change replaces the table.
    pub keys: Vec<String>,
    /// `PAY_PER_REQUEST` or `PROVISIONED`.
    pub billing: String,
    /// Sorted by name: AWS lists indexes in no particular order, and the plan compares lists.
    pub indexes: Vec<Index>,
    /// The TTL attribute while TTL is enabled (or being enabled).
    pub ttl_attribute: Option<String>,
    pub tags: Tags,
}

/// A global secondary index.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Index {
    pub name: Option<String>,
    pub partition_key: Option<String>,
    pub sort_key: Option<String>,
    /// `ALL`, `KEYS_ONLY` or `INCLUDE`.
    pub projection: Option<String>,
}
