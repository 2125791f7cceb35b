//! The connection store on DynamoDB: one item per connection (by id; all of them through the
//! keys-only `by-shard` index), and one membership item per room it is in, under the room's key,
//! so a room's connections are a key query. Items expire by TTL.

use std::collections::HashMap;

use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::{
    AttributeValue, Delete, DeleteRequest, KeysAndAttributes, Put, ReturnValue, TransactWriteItem,
    Update, WriteRequest,
};
use chat_core::domain::{Connection, ConnectionId, RoomName, UserName};
use chat_core::ports::{ConnectionStore, PortError, PortResult, Recipient};

use crate::errors::{is_any_condition_failed, is_condition_failed, port_error};
use crate::items::{
    CONNECTION_SK, Item, PK, SHARD, SK, all_shards, connection_from, connection_id_of_pk,
    connection_item, connection_pk, get_n, get_s, membership_item, membership_sk, n, query_all,
    recipient_from, room_pk, s, shard_of,
};
use crate::tables::BY_SHARD;

/// BatchGetItem takes at most 100 keys, BatchWriteItem 25 requests.
const BATCH_GET: usize = 100;
const BATCH_WRITE: usize = 25;

#[derive(Debug, Clone)]
pub struct DynamoConnectionStore {
    client: Client,
    table: String,
}

fn connection_key(id: &ConnectionId) -> Item {
    Item::from([
        (PK.to_owned(), s(connection_pk(id))),
        (SK.to_owned(), s(CONNECTION_SK)),
    ])
}

fn membership_key(room: &RoomName, id: &ConnectionId) -> Item {
    Item::from([
        (PK.to_owned(), s(room_pk(room))),
        (SK.to_owned(), s(membership_sk(id))),
    ])
}

impl DynamoConnectionStore {
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        Self {
            client,
            table: table.into(),
        }
    }

    /// Connection items for ids, in no particular order; ids without an item are skipped (a
    /// membership can briefly outlive its connection).
    async fn load(&self, ids: Vec<ConnectionId>) -> PortResult<Vec<Connection>> {
        let mut connections = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(BATCH_GET) {
            let mut keys: Vec<Item> = chunk.iter().map(connection_key).collect();
            // Unprocessed keys come back under load; retry them with a short backoff.
            for attempt in 0..8u32 {
                if keys.is_empty() {
                    break;
                }
                if attempt > 0 {
                    tokio::time::sleep(std::time::Duration::from_millis(20 << attempt)).await;
                }
                let request = KeysAndAttributes::builder()
                    .set_keys(Some(std::mem::take(&mut keys)))
                    .consistent_read(true)
                    .build()
                    .map_err(PortError::new)?;
                let out = self
                    .client
                    .batch_get_item()
                    .request_items(&self.table, request)
                    .send()
                    .await
                    .map_err(|e| port_error("read connections", e))?;
                if let Some(items) = out.responses.as_ref().and_then(|r| r.get(&self.table)) {
                    for item in items {
                        connections.push(connection_from(item)?);
                    }
                }
                if let Some(left) = out.unprocessed_keys.and_then(|mut u| u.remove(&self.table)) {
                    keys = left.keys;
                }
            }
            if !keys.is_empty() {
                return Err(PortError::new(format!(
                    "read connections: {} keys stayed unprocessed (throttled); retry",
                    keys.len()
                )));
            }
        }
        connections.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(connections)
    }

    /// Apply `expression` (`ADD`/`DELETE rooms :r`) to the connection item and `membership` to
    /// the room's membership item in one transaction; false when the connection is gone.
    async fn change_rooms(
        &self,
        id: &ConnectionId,
        room: &RoomName,
        expression: &str,
        membership: TransactWriteItem,
        what: &str,
    ) -> PortResult<bool> {
        let update = Update::builder()
            .table_name(&self.table)
            .set_key(Some(connection_key(id)))
            .update_expression(expression)
            .condition_expression("attribute_exists(pk)")
            .expression_attribute_values(":r", AttributeValue::Ss(vec![room.as_str().to_owned()]))
            .build()
            .map_err(PortError::new)?;
        match self
            .client
            .transact_write_items()
            .transact_items(TransactWriteItem::builder().update(update).build())
            .transact_items(membership)
            .send()
            .await
        {
            Ok(_) => Ok(true),
            Err(e) if is_any_condition_failed(&e) => Ok(false),
            Err(e) => Err(port_error(what, e)),
        }
    }

    async fn delete_memberships(&self, connection: &Connection) -> PortResult<()> {
        let requests: Vec<WriteRequest> = connection
            .rooms
            .iter()
            .map(|room| {
                DeleteRequest::builder()
                    .set_key(Some(membership_key(room, &connection.id)))
                    .build()
                    .map(|d| WriteRequest::builder().delete_request(d).build())
                    .map_err(PortError::new)
            })
            .collect::<Result<_, _>>()?;
        for chunk in requests.chunks(BATCH_WRITE) {
            let mut pending = chunk.to_vec();
            for attempt in 0..8u32 {
                if pending.is_empty() {
                    break;
                }
                if attempt > 0 {
                    tokio::time::sleep(std::time::Duration::from_millis(20 << attempt)).await;
                }
                let out = self
                    .client
                    .batch_write_item()
                    .request_items(&self.table, std::mem::take(&mut pending))
                    .send()
                    .await
                    .map_err(|e| port_error("remove memberships", e))?;
                if let Some(left) = out
                    .unprocessed_items
                    .and_then(|mut u| u.remove(&self.table))
                {
                    pending = left;
                }
            }
            if !pending.is_empty() {
                return Err(PortError::new(
                    "remove memberships: requests stayed unprocessed (throttled); they expire by TTL",
                ));
            }
        }
        Ok(())
    }
}

#[async_trait]
impl ConnectionStore for DynamoConnectionStore {
    async fn put(&self, connection: &Connection) -> PortResult<()> {
        let mut writes = vec![
            TransactWriteItem::builder()
                .put(
                    Put::builder()
                        .table_name(&self.table)
                        .set_item(Some(connection_item(connection)))
                        .build()
                        .map_err(PortError::new)?,
                )
                .build(),
        ];
        for room in &connection.rooms {
            writes.push(
                TransactWriteItem::builder()
                    .put(
                        Put::builder()
                            .table_name(&self.table)
                            .set_item(Some(membership_item(room, connection)))
                            .build()
                            .map_err(PortError::new)?,
                    )
                    .build(),
            );
        }
        self.client
            .transact_write_items()
            .set_transact_items(Some(writes))
            .send()
            .await
            .map_err(|e| port_error("store a connection", e))?;
        Ok(())
    }

    async fn get(&self, id: &ConnectionId) -> PortResult<Option<Connection>> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .consistent_read(true)
            .set_key(Some(connection_key(id)))
            .send()
            .await
            .map_err(|e| port_error("read a connection", e))?;
        out.item.as_ref().map(connection_from).transpose()
    }

    async fn remove(&self, id: &ConnectionId) -> PortResult<Option<Connection>> {
        // Only the caller whose delete returned the item goes on to announce the departure.
        let out = self
            .client
            .delete_item()
            .table_name(&self.table)
            .set_key(Some(connection_key(id)))
            .return_values(ReturnValue::AllOld)
            .send()
            .await
            .map_err(|e| port_error("remove a connection", e))?;
        let Some(item) = out.attributes else {
            return Ok(None);
        };
        let connection = connection_from(&item)?;
        // This caller alone got the item, so it alone can announce the departure: a failure to
        // delete the memberships must not hide it. They expire by TTL, and `in_room` skips
        // memberships whose connection is gone.
        if let Err(e) = self.delete_memberships(&connection).await {
            tracing::warn!(connection = %connection.id, error = %e, "memberships left for TTL");
        }
        Ok(Some(connection))
    }

    async fn join(&self, id: &ConnectionId, room: &RoomName) -> PortResult<bool> {
        let Some(connection) = self.get(id).await? else {
            return Ok(false);
        };
        let membership = Put::builder()
            .table_name(&self.table)
            .set_item(Some(membership_item(room, &connection)))
            .build()
            .map_err(PortError::new)?;
        let write = TransactWriteItem::builder().put(membership).build();
        self.change_rooms(id, room, "ADD rooms :r", write, "join a room")
            .await
    }

    async fn leave(&self, id: &ConnectionId, room: &RoomName) -> PortResult<bool> {
        let membership = Delete::builder()
            .table_name(&self.table)
            .set_key(Some(membership_key(room, id)))
            .build()
            .map_err(PortError::new)?;
        let write = TransactWriteItem::builder().delete(membership).build();
        self.change_rooms(id, room, "DELETE rooms :r", write, "leave a room")
            .await
    }

    async fn touch(&self, id: &ConnectionId, now: i64) -> PortResult<Option<i64>> {
        let out = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(connection_key(id)))
            // The shard too, only where it is missing: a connection made by a version before
            // `by-shard` enters the index at its next heartbeat. Where it exists it is left
            // alone, so a heartbeat changes no key of the index and costs it no write.
            .update_expression("SET lastSeen = :now, #shard = if_not_exists(#shard, :shard)")
            .condition_expression("attribute_exists(pk)")
            .expression_attribute_names("#shard", SHARD)
            .expression_attribute_values(":now", n(now))
            .expression_attribute_values(":shard", s(shard_of(id)))
            .return_values(ReturnValue::UpdatedOld)
            .send()
            .await;
        match out {
            Ok(out) => {
                let old: HashMap<String, AttributeValue> = out.attributes.unwrap_or_default();
                Ok(Some(get_n(&old, "lastSeen").unwrap_or(now)))
            }
            Err(e) if is_condition_failed(&e) => Ok(None),
            Err(e) => Err(port_error("record a heartbeat", e)),
        }
    }

    async fn in_room(&self, room: &RoomName) -> PortResult<Vec<Connection>> {
        let query = self
            .client
            .query()
            .table_name(&self.table)
            .consistent_read(true)
            .key_condition_expression("pk = :pk AND begins_with(sk, :conn)")
            .expression_attribute_values(":pk", s(room_pk(room)))
            .expression_attribute_values(":conn", s("CONN#"))
            .projection_expression("id");
        let ids = query_all(query, "read a room's connections")
            .await?
            .iter()
            .map(|item| get_s(item, "id").map(ConnectionId::new))
            .collect::<Result<_, _>>()?;
        self.load(ids).await
    }

    async fn recipients(&self, room: &RoomName) -> PortResult<Vec<Recipient>> {
        // One Query on the room's membership items, which carry what the fan-out needs.
        let query = self
            .client
            .query()
            .table_name(&self.table)
            .consistent_read(true)
            .key_condition_expression("pk = :pk AND begins_with(sk, :conn)")
            .expression_attribute_values(":pk", s(room_pk(room)))
            .expression_attribute_values(":conn", s("CONN#"))
            .projection_expression("id, #user, connectedAt")
            .expression_attribute_names("#user", "user");
        query_all(query, "read a room's recipients")
            .await?
            .iter()
            .map(recipient_from)
            .collect()
    }

    async fn user_in_room(&self, room: &RoomName, user: &UserName) -> PortResult<Vec<Connection>> {
        // The filter runs after the key read (the room's memberships are read either way), but
        // only the user's own connection items are fetched.
        let query = self
            .client
            .query()
            .table_name(&self.table)
            .consistent_read(true)
            .key_condition_expression("pk = :pk AND begins_with(sk, :conn)")
            .filter_expression("#user = :user")
            .expression_attribute_values(":pk", s(room_pk(room)))
            .expression_attribute_values(":conn", s("CONN#"))
            .expression_attribute_values(":user", s(user.as_str()))
            .expression_attribute_names("#user", "user")
            .projection_expression("id");
        let ids = query_all(query, "read a user's room connections")
            .await?
            .iter()
            .map(|item| get_s(item, "id").map(ConnectionId::new))
            .collect::<Result<_, _>>()?;
        self.load(ids).await
    }

    /// Every connection: the ids from each `by-shard` partition (keys only, so heartbeats do not
    /// write the index), the shards queried concurrently, then the items themselves by
    /// BatchGetItem. The index is eventually consistent: a connection made a moment ago may be
    /// missing, which the sweep that calls this (once a minute) tolerates.
    async fn all(&self) -> PortResult<Vec<Connection>> {
        let queries = all_shards().map(|shard| {
            let query = self
                .client
                .query()
                .table_name(&self.table)
                .index_name(BY_SHARD)
                .key_condition_expression("#shard = :shard")
                .expression_attribute_names("#shard", SHARD)
                .expression_attribute_values(":shard", s(shard));
            query_all(query, "list connections")
        });
        let mut ids = Vec::new();
        for items in futures_util::future::try_join_all(queries).await? {
            for item in &items {
                let pk = get_s(item, PK)?;
                ids.push(connection_id_of_pk(pk).ok_or_else(|| {
                    PortError::new(format!(
                        "a by-shard entry with a pk that is no connection: {pk}"
                    ))
                })?);
            }
        }
        self.load(ids).await
    }
}
