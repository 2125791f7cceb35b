//! The in-process topic: what SNS does on AWS. Publishing wraps the room event in the SNS event a
//! subscribed Lambda would receive; one consumer task hands those to the fan-out handler in
//! publication order.

use std::sync::Arc;

use async_trait::async_trait;
use aws_lambda_events::sns::SnsEvent;
use chat_core::ChatService;
use chat_core::ports::{Clock, PortError, PortResult, RoomEvent, Topic};
use chrono::{DateTime, Utc};
use tokio::sync::mpsc;
use tracing::{debug, warn};

/// Events waiting for fan-out before publishers are slowed down.
const QUEUE: usize = 10_000;

#[derive(Debug)]
pub struct LocalTopic {
    arn: String,
    clock: Arc<dyn Clock>,
    tx: mpsc::Sender<SnsEvent>,
}

impl LocalTopic {
    /// A topic and the receiving end its subscription drains (see [`run_fanout`]).
    pub fn new(arn: String, clock: Arc<dyn Clock>) -> (Self, mpsc::Receiver<SnsEvent>) {
        let (tx, rx) = mpsc::channel(QUEUE);
        (Self { arn, clock, tx }, rx)
    }
}

#[async_trait]
impl Topic for LocalTopic {
    async fn publish(&self, event: &RoomEvent) -> PortResult<()> {
        let at = DateTime::<Utc>::from_timestamp_millis(self.clock.now_ms()).unwrap_or_default();
        let message_id = ulid::Ulid::generate().to_string();
        let sns = chat_handlers::events::sns_event(event, &self.arn, message_id, at);
        self.tx
            .send(sns)
            .await
            .map_err(|_| PortError::new("the local fan-out has stopped (server shutting down)"))
    }
}

/// The topic's subscription: deliver every event to the fan-out handler until the topic closes.
pub async fn run_fanout(chat: Arc<ChatService>, mut rx: mpsc::Receiver<SnsEvent>) {
    while let Some(event) = rx.recv().await {
        match chat_handlers::fanout::handle(&chat, &event).await {
            Ok(reports) => {
                for r in reports
                    .iter()
                    .filter(|r| !r.removed.is_empty() || r.failed > 0)
                {
                    debug!(removed = ?r.removed, failed = r.failed, "fan-out cleaned up");
                }
            }
            Err(e) => warn!(error = %e, "fan-out failed"),
        }
    }
}
