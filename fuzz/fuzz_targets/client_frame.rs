//! Client frames: `parse_client_frame`, `route_key` and `client_ref` on any UTF-8 text (what a
//! WebSocket text frame can carry). None may panic, and they must agree with each other: API
//! Gateway routes a frame by `route_key` before the handler parses it, so a frame that parses
//! names the same action as its route, and a refusal carries the `clientMsgId` `client_ref` finds.
#![no_main]

use chat_core::protocol::{
    ACTIONS, ClientFrame, ErrorCode, FrameLimits, ServerFrame, client_ref, parse_client_frame,
    route_key,
};
use libfuzzer_sys::fuzz_target;

fn action(frame: &ClientFrame) -> &'static str {
    match frame {
        ClientFrame::Send { .. } => "send",
        ClientFrame::History { .. } => "history",
        ClientFrame::Recall { .. } => "recall",
        ClientFrame::Join { .. } => "join",
        ClientFrame::Leave { .. } => "leave",
        ClientFrame::Presence { .. } => "presence",
        ClientFrame::Ping => "ping",
    }
}

/// Longest error message: refusals never echo the frame back unbounded (an unknown action is
/// cut to 64 characters).
const MAX_MESSAGE_BYTES: usize = 1024;

fn check(body: &str, limits: &FrameLimits) {
    let route = route_key(body);
    let reference = client_ref(body);
    match parse_client_frame(body, limits) {
        Ok(frame) => {
            assert_eq!(
                route.as_deref(),
                Some(action(&frame)),
                "a parsed frame is routed by its own action"
            );
            assert!(ACTIONS.contains(&action(&frame)));
            match &frame {
                ClientFrame::Send {
                    text,
                    client_msg_id,
                    ..
                } => {
                    assert!(text.len() <= limits.max_text_bytes);
                    assert!(!text.trim().is_empty());
                    assert_eq!(
                        client_msg_id.as_ref().map(|c| c.as_str()),
                        reference.as_deref()
                    );
                }
                ClientFrame::History { limit, .. } => {
                    assert!((1..=limits.max_history).contains(limit), "{limit}");
                }
                _ => {}
            }
        }
        Err(e) => {
            assert_eq!(
                e.reference, reference,
                "a refusal refers to the frame's clientMsgId"
            );
            assert!(
                e.message.len() <= MAX_MESSAGE_BYTES,
                "error message of {} bytes",
                e.message.len()
            );
            if e.code == ErrorCode::UnknownAction {
                let route = route.expect("an unknown action is still a string action");
                assert!(!ACTIONS.contains(&route.as_str()), "{route}");
            }
            // The error frame the client gets encodes, and decodes back to itself.
            let frame = e.to_frame();
            let back: ServerFrame =
                serde_json::from_str(&frame.to_json()).expect("an error frame decodes");
            assert_eq!(back, frame);
        }
    }
}

fuzz_target!(|body: &str| {
    check(body, &FrameLimits::default());
    // Tight limits: the size and history checks at their edges.
    check(
        body,
        &FrameLimits {
            max_text_bytes: 8,
            default_history: 2,
            max_history: 3,
        },
    );
});
