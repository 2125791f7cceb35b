//! The two tables' definitions, in one place: the stack model (`chatctl deploy`) and the local
//! `--store dynamodb` mode create them from here, so keys and indexes cannot drift apart.

use std::time::Duration;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, GlobalSecondaryIndex, KeySchemaElement, KeyType, Projection,
    ProjectionType, ScalarAttributeType, TableStatus, TimeToLiveSpecification, TimeToLiveStatus,
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

/// Create both tables if they are missing (on-demand billing, TTL on connections) and wait until
/// they are active. Idempotent.
pub async fn ensure(client: &Client, names: &TableNames) -> Result<(), PortError> {
    let messages = client
        .create_table()
        .table_name(&names.messages)
        .billing_mode(BillingMode::PayPerRequest)
        .key_schema(key(PK, KeyType::Hash)?)
        .key_schema(key(SK, KeyType::Range)?)
        .attribute_definitions(string_attr(PK)?)
        .attribute_definitions(string_attr(SK)?)
        .send()
        .await;
    if let Err(e) = messages
        && !is_table_in_use(&e)
    {
        return Err(port_error("create the messages table", e));
    }
    let connections = client
        .create_table()
        .table_name(&names.connections)
        .billing_mode(BillingMode::PayPerRequest)
        .key_schema(key(PK, KeyType::Hash)?)
        .key_schema(key(SK, KeyType::Range)?)
        .attribute_definitions(string_attr(PK)?)
        .attribute_definitions(string_attr(SK)?)
        .attribute_definitions(string_attr(GSI1_PK)?)
        .attribute_definitions(string_attr(GSI1_SK)?)
        .attribute_definitions(string_attr(GSI2_PK)?)
        .attribute_definitions(string_attr(GSI2_SK)?)
        .global_secondary_indexes(gsi(BY_USER, GSI1_PK, GSI1_SK)?)
        .global_secondary_indexes(gsi(BY_KIND, GSI2_PK, GSI2_SK)?)
        .send()
        .await;
    if let Err(e) = connections
        && !is_table_in_use(&e)
    {
        return Err(port_error("create the connections table", e));
    }
    for table in [&names.messages, &names.connections] {
        wait_active(client, table).await?;
    }
    // Checked on every run, not only after creating the table: a run that died between the two
    // calls must not leave connections without expiry.
    let ttl = client
        .describe_time_to_live()
        .table_name(&names.connections)
        .send()
        .await
        .map_err(|e| port_error("read TTL of the connections table", e))?;
    let enabled = ttl.time_to_live_description.is_some_and(|d| {
        d.attribute_name.as_deref() == Some(EXPIRES_AT)
            && matches!(
                d.time_to_live_status,
                Some(TimeToLiveStatus::Enabled | TimeToLiveStatus::Enabling)
            )
    });
    if !enabled {
        client
            .update_time_to_live()
            .table_name(&names.connections)
            .time_to_live_specification(
                TimeToLiveSpecification::builder()
                    .attribute_name(EXPIRES_AT)
                    .enabled(true)
                    .build()
                    .map_err(PortError::new)?,
            )
            .send()
            .await
            .map_err(|e| port_error("enable TTL on the connections table", e))?;
    }
    Ok(())
}

async fn wait_active(client: &Client, table: &str) -> Result<(), PortError> {
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
