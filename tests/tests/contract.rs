//! The store and topic contract (`chatctl_e2e::contract`) against every adapter: the in-memory
//! reference, SQLite, and DynamoDB/SNS on a moto server this test binary starts on 127.0.0.1.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use aws_lambda_events::sns::SnsMessage;
use chat_aws::{DynamoConnectionStore, DynamoMessageStore, SnsTopic, TableNames};
use chat_core::memory::{MemoryConnectionStore, MemoryMessageStore};
use chat_core::ports::SystemClock;
use chat_local::sqlite::{SqliteConnectionStore, SqliteMessageStore};
use chat_local::topic::LocalTopic;
use chatctl_e2e::contract;
use chatctl_e2e::moto::{Moto, unique};

#[tokio::test]
async fn memory_adapters_meet_the_contract() {
    contract::message_store(&MemoryMessageStore::default()).await;
    contract::connection_store(&MemoryConnectionStore::default()).await;
}

#[tokio::test]
async fn sqlite_adapters_meet_the_contract() {
    let dir = tempfile::tempdir().unwrap();
    contract::message_store(&SqliteMessageStore::open(&dir.path().join("m.db")).unwrap()).await;
    contract::connection_store(&SqliteConnectionStore::open(&dir.path().join("c.db")).unwrap())
        .await;
}

async fn dynamo_tables() -> (aws_sdk_dynamodb::Client, TableNames) {
    let config = Moto::shared().sdk_config();
    let client = aws_sdk_dynamodb::Client::new(&config);
    let names = TableNames::for_stage("contract", &unique("t"));
    chat_aws::tables::ensure(&client, &names).await.unwrap();
    (client, names)
}

#[tokio::test]
async fn dynamodb_adapters_meet_the_contract() {
    let (client, names) = dynamo_tables().await;
    contract::message_store(&DynamoMessageStore::new(client.clone(), &names.messages)).await;
    contract::connection_store(&DynamoConnectionStore::new(client, &names.connections)).await;
}

#[tokio::test]
async fn creating_the_tables_twice_is_harmless() {
    let (client, names) = dynamo_tables().await;
    chat_aws::tables::ensure(&client, &names).await.unwrap();
    let described = client
        .describe_table()
        .table_name(&names.connections)
        .send()
        .await
        .unwrap();
    let indexes: Vec<_> = described
        .table
        .unwrap()
        .global_secondary_indexes()
        .iter()
        .filter_map(|i| i.index_name().map(str::to_owned))
        .collect();
    assert_eq!(indexes, ["by-shard"]);
    let ttl = client
        .describe_time_to_live()
        .table_name(&names.connections)
        .send()
        .await
        .unwrap();
    assert_eq!(
        ttl.time_to_live_description.and_then(|d| d.attribute_name),
        Some("expiresAt".to_owned())
    );
}

/// A connections table made before `by-shard` (the old `by-kind` and `by-user` indexes) and a
/// connection item written by that version (no `shard`): `ensure` adds the index, and the old
/// connection is listed by `all()` after its next heartbeat, which fills in its shard.
#[tokio::test]
async fn an_older_connections_table_gets_the_shard_index_and_old_connections_join_it() {
    use aws_sdk_dynamodb::types::ProjectionType;
    use chat_core::domain::ConnectionId;
    use chat_core::ports::ConnectionStore;
    let config = Moto::shared().sdk_config();
    let client = aws_sdk_dynamodb::Client::new(&config);
    let names = TableNames::for_stage("contract", &unique("old"));
    chatctl_e2e::legacy::connections_table(&client, &names.connections).await;
    chatctl_e2e::legacy::connection_item(&client, &names.connections, "legacy=").await;

    chat_aws::tables::ensure(&client, &names).await.unwrap();
    let described = client
        .describe_table()
        .table_name(&names.connections)
        .send()
        .await
        .unwrap()
        .table
        .unwrap();
    let shard_index = described
        .global_secondary_indexes()
        .iter()
        .find(|i| i.index_name() == Some("by-shard"))
        .expect("by-shard added");
    assert_eq!(
        shard_index.projection().and_then(|p| p.projection_type()),
        Some(&ProjectionType::KeysOnly)
    );

    let store = DynamoConnectionStore::new(client, &names.connections);
    assert!(
        store.all().await.unwrap().is_empty(),
        "not in the index yet"
    );
    let id = ConnectionId::new("legacy=");
    assert_eq!(store.touch(&id, 2_000).await.unwrap(), Some(1_000));
    let all = store.all().await.unwrap();
    assert_eq!(all.len(), 1);
    assert_eq!(all[0].id, id);
    assert_eq!(all[0].last_seen, 2_000);
}

/// The local topic's subscriber for the contract: every batch into a channel.
#[derive(Debug)]
struct Channel(tokio::sync::mpsc::UnboundedSender<aws_lambda_events::sns::SnsEvent>);

#[async_trait::async_trait]
impl chat_local::topic::Subscriber for Channel {
    async fn deliver(&self, event: aws_lambda_events::sns::SnsEvent) {
        let _ = self.0.send(event);
    }
}

#[tokio::test]
async fn the_local_topic_meets_the_contract() {
    let topic = LocalTopic::new(
        "arn:aws:sns:local:000000000000:t".into(),
        std::sync::Arc::new(SystemClock),
    );
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    topic.subscribe(std::sync::Arc::new(Channel(tx)), Duration::from_millis(10));
    let rx = tokio::sync::Mutex::new(rx);
    contract::topic(&topic, || async {
        let mut rx = rx.lock().await;
        let mut out: Vec<SnsMessage> = vec![];
        while let Ok(Some(event)) =
            tokio::time::timeout(Duration::from_millis(100), rx.recv()).await
        {
            out.extend(event.records.into_iter().map(|r| r.sns));
        }
        out
    })
    .await;
}

/// moto keeps SNS notifications nowhere a client can read them, so the test subscribes an SQS
/// queue (standard SNS → SQS delivery, not raw) and reads the notifications from there.
#[tokio::test]
async fn the_sns_topic_meets_the_contract() {
    let config = Moto::shared().sdk_config();
    let (topic_arn, sqs, queue_url) = chatctl_e2e::moto::topic_with_queue(&config).await;
    let topic = SnsTopic::new(aws_sdk_sns::Client::new(&config), &topic_arn);
    contract::topic(&topic, || async {
        let out = sqs
            .receive_message()
            .queue_url(&queue_url)
            .max_number_of_messages(10)
            .wait_time_seconds(1)
            .send()
            .await
            .unwrap();
        out.messages()
            .iter()
            .map(|m| serde_json::from_str::<SnsMessage>(m.body().unwrap()).unwrap())
            .collect()
    })
    .await;
}
