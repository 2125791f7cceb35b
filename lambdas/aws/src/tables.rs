//! The two tables' definitions, in one place: the stack model (`chatctl deploy`) and the local
//! `--store dynamodb` mode create them from here, so keys and indexes cannot drift apart.

use std::time::Duration;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, CreateGlobalSecondaryIndexAction, GlobalSecondaryIndex,
    GlobalSecondaryIndexUpdate, IndexStatus, KeySchemaElement, KeyType, Projection, ProjectionType,
    ScalarAttributeType, TableStatus, TimeToLiveSpecification, TimeToLiveStatus,
};
use chat_core::ports::PortError;

use crate::errors::{is_table_in_use, port_error};
use crate::items::{EXPIRES_AT, PK, SHARD, SK};

/// GSI of the connections table: every connection, spread over 16 `shard` partitions and
/// sorted by `pk`, keys only — for the presence sweep and operator tools. It replaces `by-kind`
/// (all connections under one key value, projecting everything, so every heartbeat rewrote it:
/// a hot partition at scale) and `by-user` (never queried, yet written on every connect).
pub const BY_SHARD: &str = "by-shard";

/// The table names of one stage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableNames {
    pub messages: String,
    pub connections: String,
}

impl TableNames {
    /// `{app}-{stage}-messages` and `{app}-{stage}-connections`.
    pub fn for_stage(app: &str, stage: &str) -> Self {
        Self {
            messages: format!("{app}-{stage}-messages"),
            connections: format!("{app}-{stage}-connections"),
        }
    }
}

fn key(name: &str, kind: KeyType) -> Result<KeySchemaElement, PortError> {
    KeySchemaElement::builder()
        .attribute_name(name)
        .key_type(kind)
        .build()
        .map_err(PortError::new)
}

fn string_attr(name: &str) -> Result<AttributeDefinition, PortError> {
    AttributeDefinition::builder()
        .attribute_name(name)
        .attribute_type(ScalarAttributeType::S)
        .build()
        .map_err(PortError::new)
}

fn gsi(index: &IndexSpec) -> Result<GlobalSecondaryIndex, PortError> {
    GlobalSecondaryIndex::builder()
        .index_name(&index.name)
        .key_schema(key(&index.partition_key, KeyType::Hash)?)
        .key_schema(key(&index.sort_key, KeyType::Range)?)
        .projection(
            Projection::builder()
                .projection_type(index.projection.sdk())
                .build(),
        )
        .build()
        .map_err(PortError::new)
}

/// What an `UpdateTable` needs to add `index` to an existing table: the index and the
/// definitions of its key attributes. (AWS adds one index per call and builds it in the background.)
pub fn index_addition(
    index: &IndexSpec,
) -> Result<(GlobalSecondaryIndexUpdate, Vec<AttributeDefinition>), PortError> {
    let GlobalSecondaryIndex {
        index_name,
        key_schema,
        projection,
        ..
    } = gsi(index)?;
    let create = CreateGlobalSecondaryIndexAction::builder()
        .index_name(index_name)
        .set_key_schema(Some(key_schema))
        .set_projection(projection)
        .build()
        .map_err(PortError::new)?;
    let update = GlobalSecondaryIndexUpdate::builder().create(create).build();
    let attributes = vec![
        string_attr(&index.partition_key)?,
        string_attr(&index.sort_key)?,
    ];
    Ok((update, attributes))
}

/// Which attributes an index copies from the table. It is fixed at the index's creation: a change
/// means a new index.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum IndexProjection {
    /// The table's and the index's keys only: an update of any other attribute writes nothing
    /// to the index.
    KeysOnly,
    All,
}

impl IndexProjection {
    /// DynamoDB's name of it (`KEYS_ONLY`, `ALL`), as DescribeTable answers and templates say.
    pub fn as_str(self) -> &'static str {
        match self {
            IndexProjection::KeysOnly => "KEYS_ONLY",
            IndexProjection::All => "ALL",
        }
    }

    fn sdk(self) -> ProjectionType {
        match self {
            IndexProjection::KeysOnly => ProjectionType::KeysOnly,
            IndexProjection::All => ProjectionType::All,
        }
    }
}

/// A global secondary index.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct IndexSpec {
    pub name: String,
    pub partition_key: String,
    pub sort_key: String,
    pub projection: IndexProjection,
}

/// One table as data: string keys, on-demand billing, optional indexes and TTL.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TableSpec {
    pub name: String,
    pub partition_key: String,
    pub sort_key: String,
    pub indexes: Vec<IndexSpec>,
    pub ttl_attribute: Option<String>,
}

/// The two tables of a stage.
pub fn specs(names: &TableNames) -> [TableSpec; 2] {
    [
        TableSpec {
            name: names.messages.clone(),
            partition_key: PK.to_owned(),
            sort_key: SK.to_owned(),
            indexes: vec![],
            ttl_attribute: None,
        },
        TableSpec {
            name: names.connections.clone(),
            partition_key: PK.to_owned(),
            sort_key: SK.to_owned(),
            indexes: vec![IndexSpec {
                name: BY_SHARD.to_owned(),
                partition_key: SHARD.to_owned(),
                sort_key: PK.to_owned(),
                projection: IndexProjection::KeysOnly,
            }],
            ttl_attribute: Some(EXPIRES_AT.to_owned()),
        },
    ]
}

/// Create a table from its spec; `false` when it existed already.
pub async fn create(client: &Client, spec: &TableSpec) -> Result<bool, PortError> {
    let mut attributes: Vec<&str> = vec![&spec.partition_key, &spec.sort_key];
    for index in &spec.indexes {
        attributes.push(&index.partition_key);
        attributes.push(&index.sort_key);
    }
    attributes.sort_unstable();
    attributes.dedup();
    let mut request = client
        .create_table()
        .table_name(&spec.name)
        .billing_mode(BillingMode::PayPerRequest)
        .key_schema(key(&spec.partition_key, KeyType::Hash)?)
        .key_schema(key(&spec.sort_key, KeyType::Range)?);
    for attribute in attributes {
        request = request.attribute_definitions(string_attr(attribute)?);
    }
    for index in &spec.indexes {
        request = request.global_secondary_indexes(gsi(index)?);
    }
    match request.send().await {
        Ok(_) => Ok(true),
        Err(e) if is_table_in_use(&e) => Ok(false),
        Err(e) => Err(port_error(&format!("create table {}", spec.name), e)),
    }
}

/// Turn on TTL for a spec that has one, unless it is on already. Checked on every run, not only
/// after creating the table: a run that died between the two calls must not leave items without
/// expiry.
pub async fn ensure_ttl(client: &Client, spec: &TableSpec) -> Result<(), PortError> {
    let Some(attribute) = &spec.ttl_attribute else {
        return Ok(());
    };
    let ttl = client
        .describe_time_to_live()
        .table_name(&spec.name)
        .send()
        .await
        .map_err(|e| port_error(&format!("read TTL of {}", spec.name), e))?;
    let enabled = ttl.time_to_live_description.is_some_and(|d| {
        d.attribute_name.as_deref() == Some(attribute.as_str())
            && matches!(
                d.time_to_live_status,
                Some(TimeToLiveStatus::Enabled | TimeToLiveStatus::Enabling)
            )
    });
    if enabled {
        return Ok(());
    }
    client
        .update_time_to_live()
        .table_name(&spec.name)
        .time_to_live_specification(
            TimeToLiveSpecification::builder()
                .attribute_name(attribute)
                .enabled(true)
                .build()
                .map_err(PortError::new)?,
        )
        .send()
        .await
        .map_err(|e| port_error(&format!("enable TTL on {}", spec.name), e))?;
    Ok(())
}

/// Create both tables if they are missing (on-demand billing, TTL on connections) and wait until
/// they are active; add an index a table made by an earlier version lacks. Idempotent.
pub async fn ensure(client: &Client, names: &TableNames) -> Result<(), PortError> {
    let specs = specs(names);
    for spec in &specs {
        create(client, spec).await?;
    }
    for spec in &specs {
        wait_active(client, &spec.name).await?;
        ensure_indexes(client, spec).await?;
        ensure_ttl(client, spec).await?;
    }
    Ok(())
}

/// Add the spec's indexes a table does not have, one per UpdateTable (DynamoDB's limit), waiting
/// for each to become ACTIVE. Indexes it has beyond the spec are left: this serves the local
/// `--store dynamodb` mode, where `chatctl deploy`'s plan (which deletes them) does not run.
pub async fn ensure_indexes(client: &Client, spec: &TableSpec) -> Result<(), PortError> {
    let table = client
        .describe_table()
        .table_name(&spec.name)
        .send()
        .await
        .map_err(|e| port_error(&format!("describe table {}", spec.name), e))?
        .table;
    let has: Vec<String> = table
        .iter()
        .flat_map(|t| t.global_secondary_indexes())
        .filter_map(|i| i.index_name().map(str::to_owned))
        .collect();
    for index in spec.indexes.iter().filter(|i| !has.contains(&i.name)) {
        let (update, attributes) = index_addition(index)?;
        client
            .update_table()
            .table_name(&spec.name)
            .set_attribute_definitions(Some(attributes))
            .global_secondary_index_updates(update)
            .send()
            .await
            .map_err(|e| port_error(&format!("add index {} to {}", index.name, spec.name), e))?;
        wait_active(client, &spec.name).await?;
    }
    Ok(())
}

/// Wait until a table and its indexes are ACTIVE (at most two minutes).
pub async fn wait_active(client: &Client, table: &str) -> Result<(), PortError> {
    // New on-demand tables turn ACTIVE within seconds; give up after two minutes.
    for _ in 0..120 {
        let described = client
            .describe_table()
            .table_name(table)
            .send()
            .await
            .map_err(|e| port_error("describe a table", e))?
            .table;
        let ready = described.is_some_and(|t| {
            t.table_status == Some(TableStatus::Active)
                && t.global_secondary_indexes()
                    .iter()
                    .all(|i| i.index_status().is_none_or(|s| *s == IndexStatus::Active))
        });
        if ready {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    Err(PortError::new(format!(
        "table {table} did not become ACTIVE within two minutes"
    )))
}
