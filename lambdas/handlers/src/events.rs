//! Builders for the event shapes API Gateway and SNS send, as `aws_lambda_events` types. The local
//! gateway and the tests use them so that locally built events match what AWS delivers.

use std::collections::HashMap;

use aws_lambda_events::apigw::{
    ApiGatewayWebsocketProxyRequest, ApiGatewayWebsocketProxyRequestContext,
};
use aws_lambda_events::http::{HeaderMap, HeaderName, HeaderValue};
use aws_lambda_events::sns::{MessageAttribute, SnsEvent, SnsMessage, SnsRecord};
use chat_core::ports::RoomEvent;
use chrono::{DateTime, Utc};

/// Where a WebSocket event happened: the API and stage, as API Gateway reports them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WsContext {
    pub api_id: String,
    pub stage: String,
    pub domain_name: String,
}

/// The kind of WebSocket event, with its route key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WsEventKind {
    Connect,
    Disconnect {
        status_code: i64,
        reason: String,
    },
    /// A data frame routed to `route_key` (an action name or `$default`).
    Message {
        route_key: String,
    },
}

/// One WebSocket event for the `ws` handler.
#[derive(Debug, Clone)]
pub struct WsEvent<'a> {
    pub context: &'a WsContext,
    pub kind: WsEventKind,
    pub connection_id: &'a str,
    pub connected_at_ms: i64,
    pub request_time_ms: i64,
    pub request_id: String,
    /// `$connect` only: the query string, single values.
    pub query: Vec<(String, String)>,
    /// `$connect` only: the upgrade request's headers.
    pub headers: Vec<(String, String)>,
    pub source_ip: Option<String>,
    /// Message events: the frame, as text or base64 of a binary frame.
    pub body: Option<String>,
    pub is_base64_encoded: bool,
}

impl<'a> WsEvent<'a> {
    /// An event without query, headers or body; set those fields for `$connect` and messages.
    pub fn new(
        context: &'a WsContext,
        kind: WsEventKind,
        connection_id: &'a str,
        connected_at_ms: i64,
        request_time_ms: i64,
        request_id: String,
    ) -> Self {
        Self {
            context,
            kind,
            connection_id,
            connected_at_ms,
            request_time_ms,
            request_id,
            query: vec![],
            headers: vec![],
            source_ip: None,
            body: None,
            is_base64_encoded: false,
        }
    }

    /// The `ApiGatewayWebsocketProxyRequest` API Gateway would send for this event.
    pub fn to_request(&self) -> ApiGatewayWebsocketProxyRequest {
        let mut ctx = ApiGatewayWebsocketProxyRequestContext::default();
        let (route_key, event_type) = match &self.kind {
            WsEventKind::Connect => ("$connect".to_owned(), "CONNECT"),
            WsEventKind::Disconnect {
                status_code,
                reason,
            } => {
                ctx.disconnect_status_code = Some(*status_code);
                ctx.disconnect_reason = Some(reason.clone());
                ("$disconnect".to_owned(), "DISCONNECT")
            }
            WsEventKind::Message { route_key } => {
                ctx.message_direction = Some("IN".to_owned());
                ctx.message_id = Some(self.request_id.clone());
                (route_key.clone(), "MESSAGE")
            }
        };
        ctx.route_key = Some(route_key);
        ctx.event_type = Some(event_type.to_owned());
        ctx.connection_id = Some(self.connection_id.to_owned());
        ctx.connected_at = self.connected_at_ms;
        ctx.request_time_epoch = self.request_time_ms;
        ctx.request_time = DateTime::<Utc>::from_timestamp_millis(self.request_time_ms)
            .map(|t| t.format("%d/%b/%Y:%H:%M:%S +0000").to_string());
        ctx.request_id = Some(self.request_id.clone());
        ctx.extended_request_id = Some(self.request_id.clone());
        ctx.apiid = Some(self.context.api_id.clone());
        ctx.stage = Some(self.context.stage.clone());
        ctx.domain_name = Some(self.context.domain_name.clone());
        ctx.identity.source_ip = self.source_ip.clone();

        let mut request = ApiGatewayWebsocketProxyRequest::default();
        request.request_context = ctx;
        request.is_base64_encoded = self.is_base64_encoded;
        request.body = self.body.clone();
        if matches!(self.kind, WsEventKind::Connect) {
            let single: HashMap<String, String> = self.query.iter().cloned().collect();
            let multi: HashMap<String, Vec<String>> =
                self.query.iter().fold(HashMap::new(), |mut m, (k, v)| {
                    m.entry(k.clone()).or_default().push(v.clone());
                    m
                });
            request.query_string_parameters = single.into();
            request.multi_value_query_string_parameters = multi.into();
            request.headers = headers(&self.headers);
            request.multi_value_headers = request.headers.clone();
        }
        request
    }
}

fn headers(pairs: &[(String, String)]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (name, value) in pairs {
        // Headers that are not valid HTTP cannot have come through the upgrade; skip them.
        if let (Ok(n), Ok(v)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(value),
        ) {
            map.append(n, v);
        }
    }
    map
}

/// SNS message attribute names the publisher sets on every room event.
pub const ATTR_ROOM: &str = "room";
pub const ATTR_EVENT_TYPE: &str = "eventType";

/// The SNS message body of a room event.
pub fn sns_message_body(event: &RoomEvent) -> String {
    serde_json::to_string(event).unwrap_or_default()
}

/// The SNS event a subscribed Lambda receives when `event` is published to `topic_arn`.
pub fn sns_event(
    event: &RoomEvent,
    topic_arn: &str,
    message_id: String,
    at: DateTime<Utc>,
) -> SnsEvent {
    let attribute = |value: &str| {
        let mut a = MessageAttribute::default();
        a.data_type = "String".to_owned();
        a.value = value.to_owned();
        a
    };
    let mut message = SnsMessage::default();
    message.sns_message_type = "Notification".to_owned();
    message.message_id = message_id;
    message.topic_arn = topic_arn.to_owned();
    message.timestamp = at;
    message.signature_version = "1".to_owned();
    message.message = sns_message_body(event);
    message.message_attributes = HashMap::from([
        (ATTR_ROOM.to_owned(), attribute(event.room.as_str())),
        (ATTR_EVENT_TYPE.to_owned(), attribute(event.kind())),
    ]);
    let mut record = SnsRecord::default();
    record.event_source = "aws:sns".to_owned();
    record.event_version = "1.0".to_owned();
    record.event_subscription_arn = format!("{topic_arn}:local-fanout");
    record.sns = message;
    let mut sns = SnsEvent::default();
    sns.records = vec![record];
    sns
}
