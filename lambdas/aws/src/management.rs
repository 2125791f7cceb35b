//! Posts to connections through the API Gateway Management API. A 410 is `Gone` (the fan-out
//! removes that connection); throttling and 5xx answers are retried by the SDK's standard retry
//! (exponential backoff with jitter) before they are reported.

use async_trait::async_trait;
use aws_sdk_apigatewaymanagement::Client;
use aws_sdk_apigatewaymanagement::primitives::Blob;
use chat_core::domain::ConnectionId;
use chat_core::ports::{ConnectionSender, PostError};

use crate::errors::{is_delete_gone, is_get_gone, is_gone};

#[derive(Debug, Clone)]
pub struct ManagementSender {
    client: Client,
}

impl ManagementSender {
    /// A sender for the Management endpoint of one API stage: `https://{api}.execute-api.{region}.amazonaws.com/{stage}`
    /// on AWS, the local gateway's URL locally. Retries: 4 attempts with backoff.
    pub fn new(config: &aws_config::SdkConfig, endpoint: &str) -> Self {
        let conf = aws_sdk_apigatewaymanagement::config::Builder::from(config)
            .endpoint_url(endpoint)
            .retry_config(aws_config::retry::RetryConfig::standard().with_max_attempts(4))
            .build();
        Self {
            client: Client::from_conf(conf),
        }
    }

    pub fn from_client(client: Client) -> Self {
        Self { client }
    }

    /// The Management API client, for the operator calls beyond posting (get, delete).
    pub fn client(&self) -> &Client {
        &self.client
    }
}

#[async_trait]
impl ConnectionSender for ManagementSender {
    async fn post(&self, id: &ConnectionId, data: &str) -> Result<(), PostError> {
        match self
            .client
            .post_to_connection()
            .connection_id(id.as_str())
            .data(Blob::new(data.as_bytes()))
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if is_gone(&e) => Err(PostError::Gone),
            Err(e) => Err(PostError::Other(
                aws_sdk_apigatewaymanagement::error::DisplayErrorContext(e).to_string(),
            )),
        }
    }

    async fn probe(&self, id: &ConnectionId) -> Result<(), PostError> {
        match self
            .client
            .get_connection()
            .connection_id(id.as_str())
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if is_get_gone(&e) => Err(PostError::Gone),
            Err(e) => Err(PostError::Other(
                aws_sdk_apigatewaymanagement::error::DisplayErrorContext(e).to_string(),
            )),
        }
    }

    async fn close(&self, id: &ConnectionId) -> Result<(), PostError> {
        match self
            .client
            .delete_connection()
            .connection_id(id.as_str())
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if is_delete_gone(&e) => Err(PostError::Gone),
            Err(e) => Err(PostError::Other(
                aws_sdk_apigatewaymanagement::error::DisplayErrorContext(e).to_string(),
            )),
        }
    }
}
