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

/// What the fan-out function was invoked with.
#[derive(Debug)]
pub enum Invocation {
    /// Room events from the SNS subscription.
    Sns(SnsEvent),
    /// The schedule's presence sweep.
    Sweep,
}

/// Why an invocation payload is not one the fan-out function serves.
#[derive(Debug, thiserror::Error)]
#[error(
    "the fan-out function got a payload it does not serve ({0}); it takes SNS events and the presence sweep's schedule input"
)]
pub struct UnknownPayload(String);

impl Invocation {
    /// Tell the payload's shape: the schedule's input, or an SNS event.
    pub fn parse(payload: serde_json::Value) -> Result<Self, UnknownPayload> {
        if crate::sweep::is_sweep(&payload) {
            return Ok(Invocation::Sweep);
        }
        serde_json::from_value(payload)
            .map(Invocation::Sns)
            .map_err(|e| UnknownPayload(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_payload_shape_picks_the_work() {
        let sweep = serde_json::from_str(crate::sweep::SWEEP_INPUT).unwrap();
        assert!(matches!(Invocation::parse(sweep), Ok(Invocation::Sweep)));
        let sns = serde_json::json!({"Records": []});
        assert!(matches!(Invocation::parse(sns), Ok(Invocation::Sns(e)) if e.records.is_empty()));
        let other = Invocation::parse(serde_json::json!({"detail-type": "x"})).unwrap_err();
        assert!(other.to_string().contains("presence sweep"), "{other}");
    }
}
