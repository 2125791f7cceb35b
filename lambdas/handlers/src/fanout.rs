//! The fan-out handler: SNS notifications of room events in, posts to the room's connections out.

use aws_lambda_events::sns::SnsEvent;
use chat_core::ChatService;
use chat_core::FanoutReport;
use chat_core::ports::RoomEvent;
use tracing::warn;

/// Why a record could not be fanned out.
#[derive(Debug, thiserror::Error)]
pub enum FanoutError {
    /// The store failed; the invocation fails, and Lambda retries it (asynchronous invocation)
    /// or returns the records to the queue (SQS).
    #[error("fan-out of a {kind} event to room {room} failed: {source}")]
    Store {
        kind: &'static str,
        room: String,
        source: chat_core::ports::PortError,
    },
}

/// Fan out every record of an SNS event, as one batch: each room's members are read once and
/// its presence changes coalesced into one frame (see `ChatService::fanout_batch`). A record
/// that is not a room event is logged and skipped (retrying it could never succeed); a store
/// failure fails the invocation, so Lambda's asynchronous retry (bounded by the function's
/// event-invoke configuration) runs it again.
pub async fn handle(
    chat: &ChatService,
    event: &SnsEvent,
) -> Result<Vec<FanoutReport>, FanoutError> {
    let events: Vec<RoomEvent> = event
        .records
        .iter()
        .filter_map(|record| match serde_json::from_str(&record.sns.message) {
            Ok(e) => Some(e),
            Err(e) => {
                warn!(message_id = %record.sns.message_id, error = %e, "skipping an SNS message that is not a room event");
                None
            }
        })
        .collect();
    chat.fanout_batch(&events)
        .await
        .map_err(|source| FanoutError::Store {
            kind: events.first().map_or("room", RoomEvent::kind),
            room: events
                .first()
                .map(|e| e.room.to_string())
                .unwrap_or_default(),
            source,
        })
}
