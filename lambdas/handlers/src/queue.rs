//! The fan-out's presence path on AWS: presence events reach the function from the SQS queue the
//! topic fills (raw delivery: each record's body is the room event's JSON), up to 1,000 per
//! invocation. Records are grouped by room and each room's batch goes through
//! `ChatService::fanout_batch`, so a join storm's presence is coalesced into one frame per room.
//! Only the records of a room whose fan-out failed are reported back (`batchItemFailures`): SQS
//! redelivers those, and after two receives moves them to the dead-letter queue.

use aws_lambda_events::sqs::{BatchItemFailure, SqsBatchResponse, SqsEvent};
use chat_core::ChatService;
use chat_core::FanoutReport;
use chat_core::domain::RoomName;
use chat_core::ports::RoomEvent;
use futures_util::StreamExt;
use futures_util::stream;
use serde_json::Value;
use tracing::warn;

/// Rooms fanned out at the same time within one batch.
const ROOM_CONCURRENCY: usize = 16;

/// Whether a Lambda payload is an SQS event (`Records[].eventSource == "aws:sqs"`).
pub fn is_sqs(payload: &Value) -> bool {
    payload
        .get("Records")
        .and_then(Value::as_array)
        .and_then(|records| records.first())
        .and_then(|r| r.get("eventSource"))
        .and_then(Value::as_str)
        == Some("aws:sqs")
}

/// What one SQS batch did.
#[derive(Debug, Default)]
pub struct QueueOutcome {
    /// The records to hand back to SQS (their room's fan-out failed).
    pub response: SqsBatchResponse,
    /// One report per room that was fanned out.
    pub reports: Vec<FanoutReport>,
    /// Records whose body is not a room event: dropped (a retry could never succeed).
    pub skipped: usize,
}

/// Fan out an SQS batch, room by room.
pub async fn handle(chat: &ChatService, event: &SqsEvent) -> QueueOutcome {
    let mut outcome = QueueOutcome::default();
    // Rooms in order of first appearance, each with its events and their message ids.
    let mut rooms: Vec<(RoomName, Vec<RoomEvent>, Vec<String>)> = Vec::new();
    for record in &event.records {
        let id = record.message_id.clone().unwrap_or_default();
        let parsed = record
            .body
            .as_deref()
            .ok_or_else(|| "no body".to_owned())
            .and_then(|b| serde_json::from_str::<RoomEvent>(b).map_err(|e| e.to_string()));
        let room_event = match parsed {
            Ok(e) => e,
            Err(error) => {
                warn!(message_id = %id, %error, "skipping an SQS message that is not a room event");
                outcome.skipped += 1;
                continue;
            }
        };
        match rooms.iter_mut().find(|(room, ..)| *room == room_event.room) {
            Some((_, events, ids)) => {
                events.push(room_event);
                ids.push(id);
            }
            None => rooms.push((room_event.room.clone(), vec![room_event], vec![id])),
        }
    }
    let results: Vec<_> = stream::iter(rooms)
        .map(|(room, events, ids)| async move {
            let result = chat.fanout_batch(&events).await;
            (room, ids, result)
        })
        .buffered(ROOM_CONCURRENCY)
        .collect()
        .await;
    for (room, ids, result) in results {
        match result {
            Ok(reports) => outcome.reports.extend(reports),
            Err(error) => {
                warn!(%room, %error, records = ids.len(), "presence fan-out failed; SQS redelivers the room's records");
                outcome
                    .response
                    .batch_item_failures
                    .extend(ids.into_iter().map(|id| {
                        let mut failure = BatchItemFailure::default();
                        failure.item_identifier = id;
                        failure
                    }));
            }
        }
    }
    outcome
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqs_events_are_told_from_sns_and_the_schedule() {
        let sqs = serde_json::json!({"Records": [{"eventSource": "aws:sqs", "body": "{}"}]});
        let sns = serde_json::json!({"Records": [{"EventSource": "aws:sns", "Sns": {}}]});
        assert!(is_sqs(&sqs));
        assert!(!is_sqs(&sns));
        assert!(!is_sqs(&serde_json::json!({"chatctl": "presence-sweep"})));
        assert!(!is_sqs(&serde_json::json!({"Records": []})));
    }
}
