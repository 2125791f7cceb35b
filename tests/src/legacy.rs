//! Tables and items as earlier chatctl versions wrote them, for the tests of what a newer version
//! does with them (a migration must not need the data thrown away).

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, GlobalSecondaryIndex, KeySchemaElement,
    KeyType, Projection, ProjectionType, ScalarAttributeType,
};

fn key(name: &str, kind: KeyType) -> KeySchemaElement {
    KeySchemaElement::builder()
        .attribute_name(name)
        .key_type(kind)
        .build()
        .expect("a key")
}

/// A connections table before `by-shard`: the `by-user` and `by-kind` indexes, projecting all.
pub async fn connections_table(client: &Client, name: &str) {
    let index = |name: &str, pk: &str, sk: &str| {
        GlobalSecondaryIndex::builder()
            .index_name(name)
            .key_schema(key(pk, KeyType::Hash))
            .key_schema(key(sk, KeyType::Range))
            .projection(
                Projection::builder()
                    .projection_type(ProjectionType::All)
                    .build(),
            )
            .build()
            .expect("an index")
    };
    let mut create = client
        .create_table()
        .table_name(name)
        .billing_mode(BillingMode::PayPerRequest)
        .key_schema(key("pk", KeyType::Hash))
        .key_schema(key("sk", KeyType::Range))
        .global_secondary_indexes(index("by-user", "gsi1pk", "gsi1sk"))
        .global_secondary_indexes(index("by-kind", "gsi2pk", "gsi2sk"));
    for a in ["pk", "sk", "gsi1pk", "gsi1sk", "gsi2pk", "gsi2sk"] {
        create = create.attribute_definitions(
            AttributeDefinition::builder()
                .attribute_name(a)
                .attribute_type(ScalarAttributeType::S)
                .build()
                .expect("an attribute"),
        );
    }
    create
        .send()
        .await
        .expect("create the old connections table");
}

/// A connection item as that version wrote it (user `ann`, no `shard`).
pub async fn connection_item(client: &Client, table: &str, id: &str) {
    let s = |v: &str| AttributeValue::S(v.to_owned());
    let n = |v: i64| AttributeValue::N(v.to_string());
    client
        .put_item()
        .table_name(table)
        .item("pk", s(&format!("CONN#{id}")))
        .item("sk", s("CONN"))
        .item("id", s(id))
        .item("user", s("ann"))
        .item("connectedAt", n(1_000))
        .item("lastSeen", n(1_000))
        .item("operator", AttributeValue::Bool(false))
        .item("expiresAt", n(9_999_999_999))
        .item("gsi1pk", s("USER#ann"))
        .item("gsi1sk", s(&format!("CONN#{id}")))
        .item("gsi2pk", s("CONN"))
        .item("gsi2sk", s(&format!("CONN#{id}")))
        .send()
        .await
        .expect("write an old connection item");
}
