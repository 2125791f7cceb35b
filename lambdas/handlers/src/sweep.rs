//! The scheduled presence sweep: an EventBridge Scheduler schedule invokes the fan-out function
//! every minute with [`SWEEP_INPUT`]; the sweep announces `idle`/`left` from heartbeats and
//! removes connections the Management API answers 410 for (`ChatService::sweep`). Locally the
//! gateway runs the same sweep on a timer.

use chat_core::ChatService;
use chat_core::ports::PortError;
use chat_core::sweep::SweepReport;
use serde_json::Value;

/// The payload the schedule sends.
pub const SWEEP_INPUT: &str = r#"{"chatctl":"presence-sweep"}"#;

/// How far back one sweep looks for presence changes: the schedule's period plus slack, so a late
/// invocation misses no transition (an overlap repeats a hint at worst).
pub const LOOK_BACK_MS: i64 = 60_000 + 5_000;

/// Whether a Lambda payload is the schedule's sweep request.
pub fn is_sweep(payload: &Value) -> bool {
    payload.get("chatctl").and_then(Value::as_str) == Some("presence-sweep")
}

/// Run one sweep at `now`.
pub async fn handle(chat: &ChatService, now: i64) -> Result<SweepReport, PortError> {
    chat.sweep(now - LOOK_BACK_MS, now).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_schedule_input_is_recognised_and_nothing_else() {
        let input: Value = serde_json::from_str(SWEEP_INPUT).unwrap();
        assert!(is_sweep(&input));
        assert!(!is_sweep(&serde_json::json!({"Records": []})));
        assert!(!is_sweep(&serde_json::json!({"chatctl": "other"})));
    }
}
