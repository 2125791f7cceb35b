//! The message store on DynamoDB. A message is two items written in one transaction: the current
//! one under its room (history is a key-range query, newest first) and a version snapshot under
//! the message id (lookup by id alone, and the audit trail). A client message id reserves a third
//! item, so a retried send finds its first copy.

use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::{AttributeValue, Put, TransactWriteItem, Update};
use chat_core::domain::{ClientMsgId, Message, MessageId, Recall, RoomName, UserName};
use chat_core::ports::{
    AppendOutcome, HistoryPage, MessageStore, PortError, PortResult, RecallOutcome,
};

use crate::errors::{
    is_any_condition_failed, is_condition_failed_at, is_transaction_conflict, port_error,
};
use crate::items::{
    Item, MESSAGE_SK_PREFIX, PK, SK, client_id_pk, get_s, message_attributes, message_from,
    message_sk, n, query_all, recall_value, room_pk, s, version_sk, versions_pk,
};

#[derive(Debug, Clone)]
pub struct DynamoMessageStore {
    client: Client,
    table: String,
}

impl DynamoMessageStore {
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        Self {
            client,
            table: table.into(),
        }
    }

    fn put(&self, item: Item, condition: &str) -> PortResult<TransactWriteItem> {
        let put = Put::builder()
            .table_name(&self.table)
            .set_item(Some(item))
            .condition_expression(condition)
            .build()
            .map_err(PortError::new)?;
        Ok(TransactWriteItem::builder().put(put).build())
    }

    fn version_item(&self, m: &Message) -> Item {
        let mut item = message_attributes(m);
        item.insert(PK.to_owned(), s(versions_pk(m.id)));
        item.insert(SK.to_owned(), s(version_sk(m.version)));
        item
    }
}

/// The attribute names and values of a `SET … REMOVE text` update to `tombstone`.
fn tombstone_update(tombstone: &Message, expected_version: u32) -> (String, Item) {
    let values = Item::from([
        (":v".to_owned(), n(tombstone.version)),
        (":expected".to_owned(), n(expected_version)),
        (
            ":r".to_owned(),
            tombstone
                .recall
                .as_ref()
                .map_or(AttributeValue::Null(true), recall_value),
        ),
    ]);
    (
        "SET version = :v, recall = :r REMOVE #text".to_owned(),
        values,
    )
}

impl DynamoMessageStore {
    /// Up to `wanted` messages of `room` with sort keys in `range` (both ends inclusive, but an
    /// item exactly at the cursor end — `hi` going back, `lo` going forward — is the cursor
    /// itself and skipped), newest first or oldest first. One query normally answers; large
    /// texts can hit the 1 MB page cap, so it pages on.
    async fn message_range(
        &self,
        room: &RoomName,
        (lo, hi): (String, String),
        forward: bool,
        wanted: usize,
    ) -> PortResult<Vec<Message>> {
        let cursor = if forward { lo.clone() } else { hi.clone() };
        let mut messages = Vec::with_capacity(wanted);
        let mut start = None;
        loop {
            let out = self
                .client
                .query()
                .table_name(&self.table)
                .consistent_read(true)
                .key_condition_expression("pk = :pk AND sk BETWEEN :lo AND :hi")
                .expression_attribute_values(":pk", s(room_pk(room)))
                .expression_attribute_values(":lo", s(lo.clone()))
                .expression_attribute_values(":hi", s(hi.clone()))
                .scan_index_forward(forward)
                .limit(i32::try_from(wanted + 1 - messages.len()).unwrap_or(i32::MAX))
                .set_exclusive_start_key(start)
                .send()
                .await
                .map_err(|e| port_error("read history", e))?;
            for item in out.items() {
                if get_s(item, SK)? != cursor && messages.len() < wanted {
                    messages.push(message_from(item)?);
                }
            }
            start = out.last_evaluated_key;
            if start.is_none() || messages.len() >= wanted {
                return Ok(messages);
            }
        }
    }
}

#[async_trait]
impl MessageStore for DynamoMessageStore {
    async fn append(&self, message: &Message) -> PortResult<AppendOutcome> {
        let mut current = message_attributes(message);
        current.insert(PK.to_owned(), s(room_pk(&message.room)));
        current.insert(SK.to_owned(), s(message_sk(message.id)));
        let mut writes = vec![
            self.put(current, "attribute_not_exists(pk)")?,
            self.put(self.version_item(message), "attribute_not_exists(pk)")?,
        ];
        if let Some(cmid) = &message.client_msg_id {
            let key = Item::from([
                (
                    PK.to_owned(),
                    s(client_id_pk(&message.room, &message.user, cmid)),
                ),
                (SK.to_owned(), s("CMID")),
                ("id".to_owned(), s(message.id.to_string())),
            ]);
            writes.push(self.put(key, "attribute_not_exists(pk)")?);
        }
        match self
            .client
            .transact_write_items()
            .set_transact_items(Some(writes))
            .send()
            .await
        {
            Ok(_) => Ok(AppendOutcome::Stored),
            Err(e) if message.client_msg_id.is_some() && is_condition_failed_at(&e, 2) => {
                let cmid = message
                    .client_msg_id
                    .as_ref()
                    .ok_or_else(|| PortError::new("unreachable"))?;
                let existing = self
                    .find_by_client_id(&message.room, &message.user, cmid)
                    .await?
                    .ok_or_else(|| {
                        PortError::new("client message id is reserved but its message is missing")
                    })?;
                Ok(AppendOutcome::Duplicate(existing))
            }
            Err(e) => Err(port_error("store a message", e)),
        }
    }

    async fn history(
        &self,
        room: &RoomName,
        before: Option<MessageId>,
        limit: usize,
    ) -> PortResult<HistoryPage> {
        // `BETWEEN` is inclusive, so `before` itself is skipped; one message more than the page
        // tells whether older ones exist.
        let upper = before.map_or_else(|| format!("{MESSAGE_SK_PREFIX}~"), message_sk);
        let messages = self
            .message_range(
                room,
                (MESSAGE_SK_PREFIX.to_owned(), upper),
                false,
                limit + 1,
            )
            .await?;
        Ok(HistoryPage::from_newest_first(messages, limit))
    }

    async fn history_after(
        &self,
        room: &RoomName,
        after: MessageId,
        limit: usize,
    ) -> PortResult<HistoryPage> {
        // Oldest first from `after` (skipped: `BETWEEN` is inclusive); one message more than the
        // page tells whether newer ones exist.
        let range = (message_sk(after), format!("{MESSAGE_SK_PREFIX}~"));
        let messages = self.message_range(room, range, true, limit + 1).await?;
        Ok(HistoryPage::from_oldest_first(messages, limit))
    }

    async fn get(&self, id: MessageId) -> PortResult<Option<Message>> {
        let out = self
            .client
            .query()
            .table_name(&self.table)
            .consistent_read(true)
            .key_condition_expression("pk = :pk")
            .expression_attribute_values(":pk", s(versions_pk(id)))
            .scan_index_forward(false)
            .limit(1)
            .send()
            .await
            .map_err(|e| port_error("read a message", e))?;
        out.items().first().map(message_from).transpose()
    }

    async fn recall(
        &self,
        id: MessageId,
        expected_version: u32,
        recall: Recall,
    ) -> PortResult<RecallOutcome> {
        let Some(current) = self.get(id).await? else {
            return Ok(RecallOutcome::NotFound);
        };
        if current.version != expected_version {
            return Ok(RecallOutcome::VersionConflict);
        }
        let tombstone = current.recalled(recall);
        let (expression, values) = tombstone_update(&tombstone, expected_version);
        let update = Update::builder()
            .table_name(&self.table)
            .key(PK, s(room_pk(&current.room)))
            .key(SK, s(message_sk(id)))
            .update_expression(expression)
            .condition_expression("version = :expected")
            .expression_attribute_names("#text", "text")
            .set_expression_attribute_values(Some(values))
            .build()
            .map_err(PortError::new)?;
        let writes = vec![
            TransactWriteItem::builder().update(update).build(),
            self.put(self.version_item(&tombstone), "attribute_not_exists(pk)")?,
        ];
        match self
            .client
            .transact_write_items()
            .set_transact_items(Some(writes))
            .send()
            .await
        {
            Ok(_) => Ok(RecallOutcome::Recalled(tombstone)),
            // A concurrent transaction on the same message is a lost race too: the caller re-reads.
            Err(e) if is_any_condition_failed(&e) || is_transaction_conflict(&e) => {
                Ok(RecallOutcome::VersionConflict)
            }
            Err(e) => Err(port_error("recall a message", e)),
        }
    }

    async fn versions(&self, id: MessageId) -> PortResult<Vec<Message>> {
        let query = self
            .client
            .query()
            .table_name(&self.table)
            .consistent_read(true)
            .key_condition_expression("pk = :pk")
            .expression_attribute_values(":pk", s(versions_pk(id)));
        query_all(query, "read message versions")
            .await?
            .iter()
            .map(message_from)
            .collect()
    }

    async fn find_by_client_id(
        &self,
        room: &RoomName,
        user: &UserName,
        client_msg_id: &ClientMsgId,
    ) -> PortResult<Option<Message>> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .consistent_read(true)
            .key(PK, s(client_id_pk(room, user, client_msg_id)))
            .key(SK, s("CMID"))
            .send()
            .await
            .map_err(|e| port_error("read a client message id", e))?;
        let Some(item) = out.item else {
            return Ok(None);
        };
        let id = MessageId::parse(get_s(&item, "id")?).map_err(PortError::new)?;
        self.get(id).await
    }
}
