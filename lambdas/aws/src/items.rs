//! Item shapes and keys of the two tables (see `docs/data-model.md`), and the conversions between
//! DynamoDB attribute maps and domain values. Every read is validated: a damaged item is an error
//! that names the attribute, never a panic.

use std::collections::{BTreeSet, HashMap};

use aws_sdk_dynamodb::types::AttributeValue;
use chat_core::domain::{
    ClientMsgId, Connection, ConnectionId, Message, MessageId, Recall, RoomName, UserName,
};
use chat_core::ports::PortError;

pub type Item = HashMap<String, AttributeValue>;

/// Every item a query matches, following `LastEvaluatedKey` page after page.
pub async fn query_all(
    query: aws_sdk_dynamodb::operation::query::builders::QueryFluentBuilder,
    what: &str,
) -> Result<Vec<Item>, PortError> {
    query
        .into_paginator()
        .items()
        .send()
        .try_collect()
        .await
        .map_err(|e| crate::errors::port_error(what, e))
}

pub const PK: &str = "pk";
pub const SK: &str = "sk";
/// The partition key of GSI `by-shard` (every connection, for the sweep and operator tools):
/// one of [`SHARDS`] values per connection, so the index has no hot partition.
pub const SHARD: &str = "shard";
/// How many partitions `by-shard` spreads connections over. A partition takes 1,000 writes/s;
/// connects and disconnects (the only writes to this keys-only index) stay far below that per
/// shard even in a reconnect storm of 10,000 clients.
pub const SHARDS: u32 = 16;
/// When a connection was made (ms), also on its membership items.
pub const CONNECTED_AT: &str = "connectedAt";
/// TTL attribute (seconds since the epoch) of connection items.
pub const EXPIRES_AT: &str = "expiresAt";

pub const MESSAGE_SK_PREFIX: &str = "MSG#";
pub const CONNECTION_SK: &str = "CONN";

/// The `by-shard` partition of a connection: FNV-1a of its id, a hash that is the same in every
/// build and on every machine (std's hasher is not), as two digits `00`…`15`.
pub fn shard_of(id: &ConnectionId) -> String {
    let hash = id.as_str().bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    format!("{:02}", hash % u64::from(SHARDS))
}

/// Every `by-shard` partition, for a query of all connections.
pub fn all_shards() -> impl Iterator<Item = String> {
    (0..SHARDS).map(|i| format!("{i:02}"))
}

/// The connection id in a connection item's `pk` (`CONN#{id}`), as `by-shard` projects it.
pub fn connection_id_of_pk(pk: &str) -> Option<ConnectionId> {
    pk.strip_prefix("CONN#")
        .filter(|id| !id.is_empty())
        .map(ConnectionId::new)
}

pub fn room_pk(room: &RoomName) -> String {
    format!("ROOM#{room}")
}
pub fn message_sk(id: MessageId) -> String {
    format!("{MESSAGE_SK_PREFIX}{id}")
}
pub fn versions_pk(id: MessageId) -> String {
    format!("MSG#{id}")
}
pub fn version_sk(version: u32) -> String {
    format!("V#{version:010}")
}
/// The idempotency key of (room, user, client message id). The user name is length-prefixed
/// because it may contain `#`.
pub fn client_id_pk(room: &RoomName, user: &UserName, client_msg_id: &ClientMsgId) -> String {
    format!(
        "CMID#{room}#{}:{user}#{}",
        user.as_str().len(),
        client_msg_id.as_str()
    )
}
pub fn connection_pk(id: &ConnectionId) -> String {
    format!("CONN#{id}")
}
pub fn membership_sk(id: &ConnectionId) -> String {
    format!("CONN#{id}")
}

pub fn s(v: impl Into<String>) -> AttributeValue {
    AttributeValue::S(v.into())
}
pub fn n(v: impl ToString) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

fn damaged(what: &str, why: impl std::fmt::Display) -> PortError {
    PortError::new(format!("damaged item: {what}: {why}"))
}

pub fn get_s<'a>(item: &'a Item, name: &str) -> Result<&'a str, PortError> {
    match item.get(name) {
        Some(AttributeValue::S(v)) => Ok(v),
        Some(_) => Err(damaged(name, "not a string")),
        None => Err(damaged(name, "missing")),
    }
}

fn get_opt_s<'a>(item: &'a Item, name: &str) -> Result<Option<&'a str>, PortError> {
    match item.get(name) {
        None | Some(AttributeValue::Null(_)) => Ok(None),
        Some(AttributeValue::S(v)) => Ok(Some(v)),
        Some(_) => Err(damaged(name, "not a string")),
    }
}

pub fn get_n<T: std::str::FromStr>(item: &Item, name: &str) -> Result<T, PortError> {
    match item.get(name) {
        Some(AttributeValue::N(v)) => v.parse().map_err(|_| damaged(name, "not a number")),
        Some(_) => Err(damaged(name, "not a number")),
        None => Err(damaged(name, "missing")),
    }
}

fn get_bool(item: &Item, name: &str) -> Result<bool, PortError> {
    match item.get(name) {
        None => Ok(false),
        Some(AttributeValue::Bool(b)) => Ok(*b),
        Some(_) => Err(damaged(name, "not a boolean")),
    }
}

fn get_rooms(item: &Item, name: &str) -> Result<Option<BTreeSet<RoomName>>, PortError> {
    match item.get(name) {
        None | Some(AttributeValue::Null(_)) => Ok(None),
        Some(AttributeValue::Ss(rooms)) => rooms
            .iter()
            .map(|r| RoomName::parse(r).map_err(|e| damaged(name, e)))
            .collect::<Result<_, _>>()
            .map(Some),
        // An empty list: DynamoDB sets cannot be empty.
        Some(AttributeValue::L(list)) if list.is_empty() => Ok(Some(BTreeSet::new())),
        Some(_) => Err(damaged(name, "not a string set")),
    }
}

/// The attributes of a message, without keys.
pub fn message_attributes(m: &Message) -> Item {
    let mut item = Item::from([
        ("id".to_owned(), s(m.id.to_string())),
        ("room".to_owned(), s(m.room.as_str())),
        ("user".to_owned(), s(m.user.as_str())),
        ("ts".to_owned(), n(m.ts)),
        ("version".to_owned(), n(m.version)),
    ]);
    if let Some(text) = &m.text {
        item.insert("text".to_owned(), s(text.as_str()));
    }
    if let Some(c) = &m.client_msg_id {
        item.insert("clientMsgId".to_owned(), s(c.as_str()));
    }
    if let Some(r) = &m.recall {
        item.insert("recall".to_owned(), recall_value(r));
    }
    item
}

pub fn recall_value(r: &Recall) -> AttributeValue {
    let mut map = Item::from([
        ("by".to_owned(), s(r.by.as_str())),
        ("at".to_owned(), n(r.at)),
        ("operator".to_owned(), AttributeValue::Bool(r.operator)),
    ]);
    if let Some(reason) = &r.reason {
        map.insert("reason".to_owned(), s(reason.as_str()));
    }
    AttributeValue::M(map)
}

fn recall_from(item: &Item) -> Result<Option<Recall>, PortError> {
    match item.get("recall") {
        None | Some(AttributeValue::Null(_)) => Ok(None),
        Some(AttributeValue::M(map)) => Ok(Some(Recall {
            by: UserName::parse(get_s(map, "by")?).map_err(|e| damaged("recall.by", e))?,
            at: get_n(map, "at")?,
            operator: get_bool(map, "operator")?,
            reason: get_opt_s(map, "reason")?.map(str::to_owned),
        })),
        Some(_) => Err(damaged("recall", "not a map")),
    }
}

pub fn message_from(item: &Item) -> Result<Message, PortError> {
    Ok(Message {
        id: MessageId::parse(get_s(item, "id")?).map_err(|e| damaged("id", e))?,
        room: RoomName::parse(get_s(item, "room")?).map_err(|e| damaged("room", e))?,
        user: UserName::parse(get_s(item, "user")?).map_err(|e| damaged("user", e))?,
        text: get_opt_s(item, "text")?.map(str::to_owned),
        ts: get_n(item, "ts")?,
        client_msg_id: get_opt_s(item, "clientMsgId")?
            .map(|c| ClientMsgId::parse(c).map_err(|e| damaged("clientMsgId", e)))
            .transpose()?,
        version: get_n(item, "version")?,
        recall: recall_from(item)?,
    })
}

/// A connection lives at most API Gateway's 2 h; its items expire a little later in case no
/// `$disconnect` ever removes them.
pub fn expires_at(connected_at_ms: i64) -> i64 {
    connected_at_ms / 1000 + 2 * 3600 + 600
}

pub fn connection_item(c: &Connection) -> Item {
    let mut item = Item::from([
        (PK.to_owned(), s(connection_pk(&c.id))),
        (SK.to_owned(), s(CONNECTION_SK)),
        ("id".to_owned(), s(c.id.as_str())),
        ("user".to_owned(), s(c.user.as_str())),
        (CONNECTED_AT.to_owned(), n(c.connected_at)),
        ("lastSeen".to_owned(), n(c.last_seen)),
        ("operator".to_owned(), AttributeValue::Bool(c.operator)),
        (EXPIRES_AT.to_owned(), n(expires_at(c.connected_at))),
        (SHARD.to_owned(), s(shard_of(&c.id))),
    ]);
    if !c.rooms.is_empty() {
        item.insert(
            "rooms".to_owned(),
            AttributeValue::Ss(c.rooms.iter().map(|r| r.as_str().to_owned()).collect()),
        );
    }
    if let Some(allowed) = &c.allowed_rooms {
        let value = if allowed.is_empty() {
            AttributeValue::L(vec![])
        } else {
            AttributeValue::Ss(allowed.iter().map(|r| r.as_str().to_owned()).collect())
        };
        item.insert("allowedRooms".to_owned(), value);
    }
    item
}

pub fn connection_from(item: &Item) -> Result<Connection, PortError> {
    Ok(Connection {
        id: ConnectionId::new(get_s(item, "id")?),
        user: UserName::parse(get_s(item, "user")?).map_err(|e| damaged("user", e))?,
        rooms: get_rooms(item, "rooms")?.unwrap_or_default(),
        allowed_rooms: get_rooms(item, "allowedRooms")?,
        connected_at: get_n(item, CONNECTED_AT)?,
        last_seen: get_n(item, "lastSeen")?,
        operator: get_bool(item, "operator")?,
    })
}

pub fn membership_item(room: &RoomName, c: &Connection) -> Item {
    Item::from([
        (PK.to_owned(), s(room_pk(room))),
        (SK.to_owned(), s(membership_sk(&c.id))),
        ("id".to_owned(), s(c.id.as_str())),
        ("user".to_owned(), s(c.user.as_str())),
        // What the fan-out needs besides the id, so a room's recipients are one Query with no
        // read of each connection item.
        (CONNECTED_AT.to_owned(), n(c.connected_at)),
        (EXPIRES_AT.to_owned(), n(expires_at(c.connected_at))),
    ])
}

/// The fan-out's view of a membership item. Items written before `connectedAt` was stored count
/// as old connections (no upgrade grace).
pub fn recipient_from(item: &Item) -> Result<chat_core::ports::Recipient, PortError> {
    Ok(chat_core::ports::Recipient {
        id: ConnectionId::new(get_s(item, "id")?),
        user: UserName::parse(get_s(item, "user")?).map_err(|e| damaged("user", e))?,
        connected_at: if item.contains_key(CONNECTED_AT) {
            get_n(item, CONNECTED_AT)?
        } else {
            0
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_are_stable_and_spread_connections_evenly() {
        // Fixed values (FNV-1a, computed independently): a different hash would move every
        // connection to another partition between versions.
        assert_eq!(shard_of(&ConnectionId::new("L0SM9cOFvHcCIhw=")), "13");
        assert_eq!(shard_of(&ConnectionId::new("legacy=")), "09");
        let expected: Vec<String> = all_shards().collect();
        assert_eq!(expected.len(), SHARDS as usize);
        assert_eq!(expected[0], "00");
        assert_eq!(expected[15], "15");
        let mut counts = std::collections::BTreeMap::<String, usize>::new();
        for i in 0..16_000 {
            // API Gateway connection ids: 16 characters of base64.
            let id = ConnectionId::new(format!("L0SM{i:08}Ihw="));
            let shard = shard_of(&id);
            assert!(expected.contains(&shard), "{shard}");
            *counts.entry(shard).or_default() += 1;
        }
        assert_eq!(counts.len(), 16);
        assert!(
            counts.values().all(|&c| (800..=1200).contains(&c)),
            "uneven: {counts:?}"
        );
    }

    #[test]
    fn a_connection_pk_gives_its_id_back() {
        let id = ConnectionId::new("abc=");
        assert_eq!(connection_id_of_pk(&connection_pk(&id)), Some(id));
        assert_eq!(connection_id_of_pk("CONN#"), None);
        assert_eq!(connection_id_of_pk("ROOM#x"), None);
    }

    #[test]
    fn messages_round_trip_through_items() {
        let m = Message {
            id: MessageId::parse("01ARZ3NDEKTSV4RRFFQ69G5FAV").unwrap(),
            room: RoomName::parse("lobby").unwrap(),
            user: UserName::parse("a#b").unwrap(),
            text: None,
            ts: 5,
            client_msg_id: Some(ClientMsgId::parse("c").unwrap()),
            version: 2,
            recall: Some(Recall {
                by: UserName::parse("mod").unwrap(),
                at: 9,
                operator: true,
                reason: Some("spam".into()),
            }),
        };
        assert_eq!(message_from(&message_attributes(&m)).unwrap(), m);
    }

    #[test]
    fn client_id_keys_cannot_collide_through_hashes_in_names() {
        let room = RoomName::parse("r").unwrap();
        let a = client_id_pk(
            &room,
            &UserName::parse("a#b").unwrap(),
            &ClientMsgId::parse("c").unwrap(),
        );
        let b = client_id_pk(
            &room,
            &UserName::parse("a").unwrap(),
            &ClientMsgId::parse("b#c").unwrap(),
        );
        assert_ne!(a, b);
    }

    #[test]
    fn damaged_items_are_errors_not_panics() {
        let mut item = message_attributes(&Message {
            id: MessageId::parse("01ARZ3NDEKTSV4RRFFQ69G5FAV").unwrap(),
            room: RoomName::parse("lobby").unwrap(),
            user: UserName::parse("ann").unwrap(),
            text: Some("t".into()),
            ts: 5,
            client_msg_id: None,
            version: 1,
            recall: None,
        });
        item.insert("ts".into(), s("yesterday"));
        assert!(message_from(&item).unwrap_err().0.contains("ts"));
        item.remove("room");
        assert!(message_from(&item).is_err());
    }

    #[test]
    fn connections_round_trip_through_items() {
        let c = Connection {
            id: ConnectionId::new("abc="),
            user: UserName::parse("ann").unwrap(),
            rooms: [RoomName::parse("a").unwrap(), RoomName::parse("b").unwrap()].into(),
            allowed_rooms: Some(BTreeSet::new()),
            connected_at: 1_000,
            last_seen: 2_000,
            operator: true,
        };
        assert_eq!(connection_from(&connection_item(&c)).unwrap(), c);
    }
}
