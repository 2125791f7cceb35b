//! The two tables' definitions, in one place: the stack model (`chatctl deploy`) and the local
//! `--store dynamodb` mode create them from here, so keys and indexes cannot drift apart.

use std::time::Duration;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, CreateGlobalSecondaryIndexAction, GlobalSecondaryIndex,
    GlobalSecondaryIndexUpdate, KeySchemaElement, KeyType, Projection, ProjectionType,
    ScalarAttributeType, TableStatus, TimeToLiveSpecification, TimeToLiveStatus,
};
use chat_core::ports::PortError;

use crate::errors::{is_table_in_use, port_error};
use crate::items::{EXPIRES_AT, GSI1_PK, GSI1_SK, GSI2_PK, GSI2_SK, PK, SK};

/// GSI of the connections table: a user's connections.
pub const BY_USER: &str = "by-user";
/// GSI of the connections table: all connections (one partition), for sweeps and operators.
pub const BY_KIND: &str = "by-kind";

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

fn gsi(name: &str, pk: &str, sk: &str) -> Result<GlobalSecondaryIndex, PortError> {
    GlobalSecondaryIndex::builder()
        .index_name(name)
        .key_schema(key(pk, KeyType::Hash)?)
        .key_schema(key(sk, KeyType::Range)?)
        .projection(
            Projection::builder()
                .projection_type(ProjectionType::All)
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
    } = gsi(&index.name, &index.partition_key, &index.sort_key)?;
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

/// A global secondary index (all attributes projected).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct IndexSpec {
    pub name: String,
    pub partition_key: String,
    pub sort_key: String,
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
    let index = |name: &str, pk: &str, sk: &str| IndexSpec {
        name: name.to_owned(),
        partition_key: pk.to_owned(),
        sort_key: sk.to_owned(),
    };
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
            indexes: vec![
                index(BY_USER, GSI1_PK, GSI1_SK),
                index(BY_KIND, GSI2_PK, GSI2_SK),
            ],
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
        request = request.global_secondary_indexes(gsi(
            &index.name,
            &index.partition_key,
            &index.sort_key,
        )?);
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
/// they are active. Idempotent.
pub async fn ensure(client: &Client, names: &TableNames) -> Result<(), PortError> {
    let specs = specs(names);
    for spec in &specs {
        create(client, spec).await?;
    }
    for spec in &specs {
        wait_active(client, &spec.name).await?;
        ensure_ttl(client, spec).await?;
    }
    Ok(())
}

/// Wait until a table is ACTIVE (at most two minutes).
pub async fn wait_active(client: &Client, table: &str) -> Result<(), PortError> {
    // New on-demand tables turn ACTIVE within seconds; give up after two minutes.
    for _ in 0..120 {
        let status = client
            .describe_table()
            .table_name(table)
            .send()
            .await
            .map_err(|e| port_error("describe a table", e))?
            .table
            .and_then(|t| t.table_status);
        if status == Some(TableStatus::Active) {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    Err(PortError::new(format!(
        "table {table} did not become ACTIVE within two minutes"
    )))
}
