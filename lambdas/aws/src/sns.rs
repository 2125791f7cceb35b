//! Room events to SNS: the body is the room event as JSON, with the room and the event type as
//! message attributes (so subscriptions can filter without parsing bodies).

use async_trait::async_trait;
use aws_sdk_sns::Client;
use aws_sdk_sns::types::MessageAttributeValue;
use chat_core::ports::{PortError, PortResult, RoomEvent, Topic};
use chat_handlers::events::{ATTR_EVENT_TYPE, ATTR_ROOM, sns_message_body};

use crate::errors::port_error;

#[derive(Debug, Clone)]
pub struct SnsTopic {
    client: Client,
    topic_arn: String,
}

impl SnsTopic {
    pub fn new(client: Client, topic_arn: impl Into<String>) -> Self {
        Self {
            client,
            topic_arn: topic_arn.into(),
        }
    }
}

fn string_attribute(value: &str) -> PortResult<MessageAttributeValue> {
    MessageAttributeValue::builder()
        .data_type("String")
        .string_value(value)
        .build()
        .map_err(PortError::new)
}

#[async_trait]
impl Topic for SnsTopic {
    async fn publish(&self, event: &RoomEvent) -> PortResult<()> {
        self.client
            .publish()
            .topic_arn(&self.topic_arn)
            .message(sns_message_body(event))
            .message_attributes(ATTR_ROOM, string_attribute(event.room.as_str())?)
            .message_attributes(ATTR_EVENT_TYPE, string_attribute(event.kind())?)
            .send()
            .await
            .map_err(|e| port_error("publish a room event", e))?;
        Ok(())
    }
}
