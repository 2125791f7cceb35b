//! A DynamoDB table: keys, on-demand billing, global secondary indexes, TTL.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;
use serde_json::{Value, json};

use crate::apply::Applier;
use crate::cloudformation::{ExportError, cfn, tag_list};
use crate::errors::{describe, is_in_use, is_not_found};
use crate::observe::{ObserveError, Reader, our_tags, read_error};
use crate::plan::FieldChange;
use crate::stack::Kind;
use crate::stack::Resource;

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

// --- observe ------------------------------------------------------------------------------

pub(crate) async fn read_table(r: &Reader<'_>, name: &str) -> Result<(), ObserveError> {
    let table = match r
        .clients
        .dynamodb
        .describe_table()
        .table_name(name)
        .send()
        .await
    {
        Ok(out) => out.table,
        Err(e) if is_not_found(&e) => {
            return Ok(());
        }
        Err(e) => return Err(read_error(format!("table {name}"), e)),
    };
    let Some(table) = table else { return Ok(()) };
    // A table being deleted is as good as gone: destroy does not wait for it, and a deploy
    // creates it again once it is (apply waits for that).
    if table.table_status() == Some(&aws_sdk_dynamodb::types::TableStatus::Deleting) {
        return Ok(());
    }
    let keys: Vec<String> = table
        .key_schema()
        .iter()
        .map(|k| k.attribute_name().to_owned())
        .collect();
    let mut indexes: Vec<Index> = table
        .global_secondary_indexes()
        .iter()
        .map(|i| {
            let key = |t: aws_sdk_dynamodb::types::KeyType| {
                i.key_schema()
                    .iter()
                    .find(|k| *k.key_type() == t)
                    .map(|k| k.attribute_name().to_owned())
            };
            Index {
                name: i.index_name().map(str::to_owned),
                partition_key: key(aws_sdk_dynamodb::types::KeyType::Hash),
                sort_key: key(aws_sdk_dynamodb::types::KeyType::Range),
                projection: i
                    .projection()
                    .and_then(|p| p.projection_type())
                    .map(|p| p.as_str().to_owned()),
            }
        })
        .collect();
    indexes.sort_by(|a, b| a.name.cmp(&b.name));
    let billing = table
        .billing_mode_summary()
        .and_then(|b| b.billing_mode())
        .map_or("PROVISIONED", |m| m.as_str());
    let ttl = r
        .clients
        .dynamodb
        .describe_time_to_live()
        .table_name(name)
        .send()
        .await
        .map_err(|e| read_error(format!("TTL of {name}"), e))?
        .time_to_live_description
        .filter(|d| {
            matches!(
                d.time_to_live_status(),
                Some(
                    aws_sdk_dynamodb::types::TimeToLiveStatus::Enabled
                        | aws_sdk_dynamodb::types::TimeToLiveStatus::Enabling
                )
            )
        })
        .and_then(|d| d.attribute_name);
    let tags = match table.table_arn() {
        Some(arn) => r
            .clients
            .dynamodb
            .list_tags_of_resource()
            .resource_arn(arn)
            .send()
            .await
            .map_err(|e| read_error(format!("tags of {name}"), e))?
            .tags
            .unwrap_or_default(),
        None => vec![],
    };
    r.put(
        name,
        Table {
            keys,
            billing: billing.to_owned(),
            indexes,
            ttl_attribute: ttl,
            tags: our_tags(tags.iter().map(|t| (t.key(), t.value()))),
        },
    );
    Ok(())
}

// --- apply --------------------------------------------------------------------------------

impl Applier<'_> {
    pub(crate) fn table_spec(&self, name: &str) -> Result<chat_aws::tables::TableSpec, String> {
        chat_aws::tables::specs(&self.name.tables())
            .into_iter()
            .find(|s| s.name == name)
            .ok_or_else(|| format!("table {name} is not part of the stack model"))
    }

    /// Delete a table. "In use" means DELETING (a destroy before this one: gone, as far as we are
    /// concerned) or CREATING/UPDATING (a killed run left it busy): then wait until it is ACTIVE
    /// and delete it for real.
    pub(crate) async fn delete_table(&self, name: &str) -> Result<(), String> {
        use aws_sdk_dynamodb::types::TableStatus;
        let db = &self.clients.dynamodb;
        for _ in 0..2 {
            match db.delete_table().table_name(name).send().await {
                Ok(_) => return Ok(()),
                Err(e) if is_not_found(&e) => return Ok(()),
                Err(e) if is_in_use(&e) => {
                    let status = match db.describe_table().table_name(name).send().await {
                        Ok(out) => out.table().and_then(|t| t.table_status()).cloned(),
                        Err(e) if is_not_found(&e) => return Ok(()),
                        Err(e) => return Err(describe(e)),
                    };
                    if status == Some(TableStatus::Deleting) {
                        return Ok(());
                    }
                    self.wait_table(name).await?;
                }
                Err(e) => return Err(describe(e)),
            }
        }
        Err(format!(
            "table {name} stayed busy (CREATING or UPDATING); run the command again"
        ))
    }

    pub(crate) async fn create_table(&self, r: &Resource) -> Result<(), String> {
        let spec = self.table_spec(&r.name)?;
        let db = &self.clients.dynamodb;
        // A destroy just before leaves the table DELETING for a while (destroy does not wait):
        // creating it again has to wait until it is gone.
        self.wait_gone_if_deleting(&r.name).await?;
        chat_aws::tables::create(db, &spec)
            .await
            .map_err(|e| e.to_string())?;
        self.wait_table(&r.name).await?;
        chat_aws::tables::ensure_ttl(db, &spec)
            .await
            .map_err(|e| e.to_string())?;
        self.retag(r, None).await
    }

    pub(crate) async fn wait_gone_if_deleting(&self, name: &str) -> Result<(), String> {
        use aws_sdk_dynamodb::types::TableStatus;
        let db = &self.clients.dynamodb;
        self.wait(&format!("table {name} to finish deleting"), || async {
            match db.describe_table().table_name(name).send().await {
                Ok(out) => {
                    Ok(out.table().and_then(|t| t.table_status()) != Some(&TableStatus::Deleting))
                }
                Err(e) if is_not_found(&e) => Ok(true),
                Err(e) => Err(describe(e)),
            }
        })
        .await
    }

    pub(crate) async fn wait_table(&self, name: &str) -> Result<(), String> {
        use aws_sdk_dynamodb::types::{IndexStatus, TableStatus};
        let db = &self.clients.dynamodb;
        self.wait(&format!("table {name} to become ACTIVE"), || async {
            let table = db
                .describe_table()
                .table_name(name)
                .send()
                .await
                .map_err(describe)?
                .table
                .ok_or("DescribeTable returned no table")?;
            let indexes_ready = table
                .global_secondary_indexes()
                .iter()
                .all(|i| i.index_status().is_none_or(|s| *s == IndexStatus::Active));
            Ok(table.table_status() == Some(&TableStatus::Active) && indexes_ready)
        })
        .await
    }

    pub(crate) async fn update_table(
        &self,
        r: &Resource,
        changed: &BTreeSet<&str>,
        fields: &[FieldChange],
    ) -> Result<(), String> {
        let db = &self.clients.dynamodb;
        let spec = self.table_spec(&r.name)?;
        // A table or index still CREATING/UPDATING (after an interrupted run) answers UpdateTable
        // with ResourceInUseException or LimitExceededException: wait until all are ACTIVE.
        if changed.contains("billing") || changed.contains("indexes") {
            self.wait_table(&r.name).await?;
        }
        if changed.contains("billing") {
            db.update_table()
                .table_name(&r.name)
                .billing_mode(aws_sdk_dynamodb::types::BillingMode::PayPerRequest)
                .send()
                .await
                .map_err(describe)?;
            self.wait_table(&r.name).await?;
        }
        if changed.contains("indexes") {
            // What exists, by name, as the plan saw it (name, partitionKey, sortKey).
            let had: BTreeMap<String, Value> = fields
                .iter()
                .find(|f| f.field == "indexes")
                .and_then(|f| f.from.as_ref())
                .and_then(Value::as_array)
                .map(|list| {
                    list.iter()
                        .filter_map(|i| Some((i["name"].as_str()?.to_owned(), i.clone())))
                        .collect()
                })
                .unwrap_or_default();
            let wanted =
                |i| serde_json::to_value(crate::stack::index_properties(i)).unwrap_or_default();
            // An index cannot change its keys or projection: one whose differ goes, then comes
            // back.
            let stale: Vec<&String> = had
                .iter()
                .filter(|(name, existing)| {
                    spec.indexes
                        .iter()
                        .find(|i| &&i.name == name)
                        .is_none_or(|i| wanted(i) != **existing)
                })
                .map(|(name, _)| name)
                .collect();
            // AWS changes one index per call and builds it in the background: wait between.
            for extra in &stale {
                let delete = aws_sdk_dynamodb::types::DeleteGlobalSecondaryIndexAction::builder()
                    .index_name(extra.as_str())
                    .build()
                    .map_err(|e| e.to_string())?;
                db.update_table()
                    .table_name(&r.name)
                    .global_secondary_index_updates(
                        aws_sdk_dynamodb::types::GlobalSecondaryIndexUpdate::builder()
                            .delete(delete)
                            .build(),
                    )
                    .send()
                    .await
                    .map_err(describe)?;
                self.wait_table(&r.name).await?;
            }
            let missing = spec
                .indexes
                .iter()
                .filter(|i| !had.contains_key(&i.name) || stale.contains(&&i.name));
            for index in missing {
                let (update, attributes) =
                    chat_aws::tables::index_addition(index).map_err(|e| e.to_string())?;
                db.update_table()
                    .table_name(&r.name)
                    .set_attribute_definitions(Some(attributes))
                    .global_secondary_index_updates(update)
                    .send()
                    .await
                    .map_err(describe)?;
                self.wait_table(&r.name).await?;
            }
        }
        if changed.contains("ttlAttribute") {
            // DynamoDB takes up to an hour to finish a TTL change and refuses the next one
            // (ValidationException) until it has: a change still in progress is waited out by
            // the operator, not retried here for an hour.
            let now = db
                .describe_time_to_live()
                .table_name(&r.name)
                .send()
                .await
                .map_err(describe)?
                .time_to_live_description;
            let status = now.as_ref().and_then(|d| d.time_to_live_status());
            if let Some(
                status @ (aws_sdk_dynamodb::types::TimeToLiveStatus::Enabling
                | aws_sdk_dynamodb::types::TimeToLiveStatus::Disabling),
            ) = status
            {
                let attribute = now.as_ref().and_then(|d| d.attribute_name()).unwrap_or("?");
                return Err(format!(
                    "TTL on {} is {} for attribute {attribute:?}: DynamoDB takes up to an hour to \
                     finish a TTL change and accepts no other until then; run deploy again once \
                     it is done",
                    r.name,
                    status.as_str()
                ));
            }
            // TTL can be on for one attribute at a time: turn off one the model does not want
            // (set by hand, or the model changed) before turning on the wanted one.
            let current = fields
                .iter()
                .find(|f| f.field == "ttlAttribute")
                .and_then(|f| f.from.as_ref())
                .and_then(Value::as_str);
            if let Some(old) = current
                && spec.ttl_attribute.as_deref() != Some(old)
            {
                db.update_time_to_live()
                    .table_name(&r.name)
                    .time_to_live_specification(
                        aws_sdk_dynamodb::types::TimeToLiveSpecification::builder()
                            .attribute_name(old)
                            .enabled(false)
                            .build()
                            .map_err(|e| e.to_string())?,
                    )
                    .send()
                    .await
                    .map_err(describe)?;
                // Enabling the wanted attribute now would be refused for up to an hour.
                if let Some(wanted) = &spec.ttl_attribute {
                    return Err(format!(
                        "turned off TTL on {} for attribute {old:?}; DynamoDB accepts the next \
                         TTL change only once that has finished (up to an hour): run deploy \
                         again then to turn it on for {wanted:?}",
                        r.name
                    ));
                }
            }
            chat_aws::tables::ensure_ttl(db, &spec)
                .await
                .map_err(|e| e.to_string())?;
        }
        Ok(())
    }
}

// --- CloudFormation ---------------------------------------------------------------------------

impl Table {
    /// `AWS::DynamoDB::Table`. Every field is bound by name, so one added to the kind and not
    /// rendered does not compile.
    pub(crate) fn cloudformation(&self, name: &str) -> Result<Value, ExportError> {
        let Table {
            keys,
            billing,
            indexes,
            ttl_attribute,
            tags,
        } = self;
        let shape = |key: &str, expected| ExportError::Shape {
            kind: Kind::Table.label(),
            name: name.to_owned(),
            key: key.to_owned(),
            expected,
        };
        let [pk, sk] = keys.as_slice() else {
            return Err(shape("keys", "[partition key, sort key]"));
        };
        let key_schema = |pk: &str, sk: &str| {
            json!([
                { "AttributeName": pk, "KeyType": "HASH" },
                { "AttributeName": sk, "KeyType": "RANGE" },
            ])
        };
        let mut attributes: BTreeSet<&str> = [pk.as_str(), sk.as_str()].into();
        let mut gsis = Vec::new();
        for index in indexes {
            let Index {
                name: Some(n),
                partition_key: Some(ipk),
                sort_key: Some(isk),
                projection: Some(projection),
            } = index
            else {
                return Err(shape(
                    "indexes",
                    "indexes with a name, both keys and a projection",
                ));
            };
            attributes.insert(ipk);
            attributes.insert(isk);
            gsis.push(json!({
                "IndexName": n,
                "KeySchema": key_schema(ipk, isk),
                "Projection": { "ProjectionType": projection },
            }));
        }
        let definitions: Vec<Value> = attributes
            .iter()
            .map(|a| json!({ "AttributeName": a, "AttributeType": "S" }))
            .collect();
        let mut props = json!({
            "TableName": name,
            "AttributeDefinitions": definitions,
            "KeySchema": key_schema(pk, sk),
            "BillingMode": billing,
            "Tags": tag_list(tags),
        });
        if !gsis.is_empty() {
            props["GlobalSecondaryIndexes"] = json!(gsis);
        }
        if let Some(a) = ttl_attribute {
            props["TimeToLiveSpecification"] = json!({ "AttributeName": a, "Enabled": true });
        }
        Ok(cfn("AWS::DynamoDB::Table", props))
    }
}
