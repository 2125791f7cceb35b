//! The fan-out handler: SNS notifications of room events in, posts to the room's connections out.

use aws_lambda_events::sns::SnsEvent;
use chat_core::ChatService;
use chat_core::FanoutReport;
use chat_core::ports::RoomEvent;
use tracing::warn;

/// Why a record could not be fanned out.
#[derive(Debug, thiserror::Error)]
pub enum FanoutError {
    /// The store failed; SNS retries the whole event when the Lambda returns an error.
    #[error("fan-out of a {kind} event to room {room} failed: {source}")]
    Store {
        kind: &'static str,
        room: String,
        source: chat_core::ports::PortError,
    },
}

/// Fan out every record of an SNS event. A record that is not a room event is logged and skipped
/// (retrying it could never succeed); a store failure fails the event so SNS retries it.
pub async fn handle(
    chat: &ChatService,
    event: &SnsEvent,
) -> Result<Vec<FanoutReport>, FanoutError> {
    let mut reports = Vec::with_capacity(event.records.len());
    for record in &event.records {
        let room_event: RoomEvent = match serde_json::from_str(&record.sns.message) {
            Ok(e) => e,
            Err(e) => {
                warn!(message_id = %record.sns.message_id, error = %e, "skipping an SNS message that is not a room event");
                continue;
            }
        };
        let report = chat
            .fanout(&room_event)
            .await
            .map_err(|source| FanoutError::Store {
                kind: room_event.kind(),
                room: room_event.room.to_string(),
                source,
            })?;
        reports.push(report);
    }
    Ok(reports)
}
