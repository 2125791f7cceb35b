//! The WebSocket handler: every route of the API (`$connect`, `$disconnect`, the actions and
//! `$default`) in one function, as one Lambda serves them all.

use aws_lambda_events::apigw::{ApiGatewayProxyResponse, ApiGatewayWebsocketProxyRequest};
use aws_lambda_events::encodings::Body;
use chat_core::domain::ConnectionId;
use chat_core::protocol::{ErrorCode, FrameError};
use chat_core::{ChatService, ConnectParams};
use tracing::warn;

/// Handle one API Gateway WebSocket event. A non-2xx answer to `$connect` refuses the upgrade with
/// that status; answers to other routes are ignored by API Gateway (replies go through the
/// Management API instead).
pub async fn handle(
    chat: &ChatService,
    request: ApiGatewayWebsocketProxyRequest,
) -> ApiGatewayProxyResponse {
    let ctx = &request.request_context;
    let Some(connection_id) = ctx.connection_id.as_deref().map(ConnectionId::new) else {
        return response(400, "the event has no requestContext.connectionId");
    };
    match ctx.event_type.as_deref() {
        Some("CONNECT") => {
            let query = &request.query_string_parameters;
            let params = ConnectParams {
                room: query.first("room").map(str::to_owned),
                token: query.first("token").map(str::to_owned),
                user: query.first("user").map(str::to_owned),
            };
            match chat.connect(connection_id, &params).await {
                Ok(_) => response(200, ""),
                Err(refusal) => response(i64::from(refusal.status), &refusal.message),
            }
        }
        Some("DISCONNECT") => match chat.disconnect(&connection_id).await {
            Ok(()) => response(200, ""),
            Err(e) => {
                warn!(connection = %connection_id, error = %e, "disconnect cleanup failed");
                response(500, "disconnect cleanup failed")
            }
        },
        Some("MESSAGE") => {
            if request.is_base64_encoded {
                // Binary frames are not part of the protocol, whatever they contain.
                chat.refuse(
                    &connection_id,
                    FrameError::new(
                        ErrorCode::BadRequest,
                        "binary frames are not supported; send JSON text frames",
                    ),
                )
                .await;
            } else {
                chat.frame(&connection_id, request.body.as_deref().unwrap_or_default())
                    .await;
            }
            response(200, "")
        }
        other => response(400, &format!("unsupported WebSocket event type {other:?}")),
    }
}

fn response(status: i64, body: &str) -> ApiGatewayProxyResponse {
    let mut r = ApiGatewayProxyResponse::default();
    r.status_code = status;
    if !body.is_empty() {
        r.body = Some(Body::Text(body.to_owned()));
    }
    r
}
