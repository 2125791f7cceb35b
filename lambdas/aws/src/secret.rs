//! A stage's token secret lives in SSM Parameter Store as a SecureString of 64 hex digits (32
//! random bytes), so it never appears in a function's configuration. The deployer creates it once;
//! the WebSocket handler and `chatctl token` read it.

use aws_sdk_ssm::Client;
use aws_sdk_ssm::error::SdkError;
use aws_sdk_ssm::operation::get_parameter::GetParameterError;
use aws_sdk_ssm::operation::put_parameter::PutParameterError;
use aws_sdk_ssm::types::ParameterType;
use chat_core::ports::PortError;
use chat_core::token::TokenKey;

use crate::errors::port_error;

/// `/chatctl/{app}/{stage}/token-secret`
pub fn parameter_name(app: &str, stage: &str) -> String {
    format!("/chatctl/{app}/{stage}/token-secret")
}

fn is_already_there<R>(err: &SdkError<PutParameterError, R>) -> bool {
    matches!(
        err.as_service_error(),
        Some(PutParameterError::ParameterAlreadyExists(_))
    )
}

fn is_parameter_missing<R>(err: &SdkError<GetParameterError, R>) -> bool {
    matches!(
        err.as_service_error(),
        Some(GetParameterError::ParameterNotFound(_))
    )
}

/// Create the secret if it does not exist; never replaces one (that would end every token).
/// Returns whether it was created.
pub async fn ensure(client: &Client, name: &str) -> Result<bool, PortError> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| PortError::new(format!("no randomness: {e}")))?;
    let hex = chat_core::token::encode_hex(&bytes);
    match client
        .put_parameter()
        .name(name)
        .value(hex)
        .r#type(ParameterType::SecureString)
        .overwrite(false)
        .description("chatctl: HMAC secret of this stage's connection tokens")
        .send()
        .await
    {
        Ok(_) => Ok(true),
        Err(e) if is_already_there(&e) => Ok(false),
        Err(e) => Err(port_error(&format!("create the token secret {name}"), e)),
    }
}

/// An SSM client for reading the secret when a function starts. Parameter Store's standard
/// throughput is 40 GetParameter calls per second per account and region, shared with the
/// deploy lock, so a reconnect storm that starts many instances at once is throttled. More
/// attempts with jittered backoff (50 ms doubling to 2 s, 8 attempts: at most about 5 s, inside
/// Lambda's 10 s init) spread the instances out instead of failing their init; each instance
/// then keeps the key for its lifetime. Not adaptive mode: its client-side rate limiter is per
/// instance, so it coordinates nothing here, and it held 4 throttled attempts for 8 s in the
/// test below (standard: 0.4 s).
/// Stages with very large storms turn on Parameter Store's higher throughput (docs/operations.md).
pub fn reader(config: &aws_config::SdkConfig) -> Client {
    use aws_sdk_ssm::config::retry::RetryConfig;
    let retry = RetryConfig::standard()
        .with_max_attempts(8)
        .with_initial_backoff(std::time::Duration::from_millis(50))
        .with_max_backoff(std::time::Duration::from_secs(2));
    Client::from_conf(
        aws_sdk_ssm::config::Builder::from(config)
            .retry_config(retry)
            .build(),
    )
}

/// Read the secret.
pub async fn load(client: &Client, name: &str) -> Result<TokenKey, PortError> {
    let out = client
        .get_parameter()
        .name(name)
        .with_decryption(true)
        .send()
        .await
        .map_err(|e| {
            if is_parameter_missing(&e) {
                PortError::new(format!(
                    "the token secret {name} does not exist; deploy the stage first (chatctl deploy creates it)"
                ))
            } else {
                port_error(&format!("read the token secret {name}"), e)
            }
        })?;
    let value = out
        .parameter
        .and_then(|p| p.value)
        .ok_or_else(|| PortError::new(format!("the token secret {name} has no value")))?;
    let bytes = chat_core::token::decode_hex(&value)
        .ok_or_else(|| PortError::new(format!("the token secret {name} is not hexadecimal")))?;
    TokenKey::new(bytes).map_err(|e| PortError::new(format!("the token secret {name}: {e}")))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use aws_sdk_ssm::config::{BehaviorVersion, Credentials, Region, SharedCredentialsProvider};
    use aws_sdk_ssm::operation::get_parameter::{GetParameterError, GetParameterOutput};
    use aws_sdk_ssm::types::Parameter;
    use aws_smithy_mocks::{MockResponseInterceptor, RuleMode, create_mock_http_client, mock};

    use super::*;

    // moto never throttles; Parameter Store answers ThrottlingException above its 40 TPS.
    #[tokio::test]
    async fn a_throttled_read_at_start_is_retried_until_it_succeeds() {
        let throttled = || {
            GetParameterError::generic(
                aws_sdk_ssm::error::ErrorMetadata::builder()
                    .code("ThrottlingException")
                    .message("Rate exceeded")
                    .build(),
            )
        };
        let secret = "ab".repeat(32);
        let get = mock!(aws_sdk_ssm::Client::get_parameter)
            .match_requests(|req| req.with_decryption() == Some(true))
            .sequence()
            .error(throttled)
            .times(4)
            .output(move || {
                GetParameterOutput::builder()
                    .parameter(Parameter::builder().value(secret.clone()).build())
                    .build()
            })
            .build();
        let config = aws_config::SdkConfig::builder()
            .region(Region::new("eu-west-1"))
            .behavior_version(BehaviorVersion::latest())
            .credentials_provider(SharedCredentialsProvider::new(Credentials::new(
                "AKID", "secret", None, None, "test",
            )))
            .http_client(create_mock_http_client())
            .build();
        let client = Client::from_conf(
            reader(&config)
                .config()
                .to_builder()
                .interceptor(
                    MockResponseInterceptor::new()
                        .rule_mode(RuleMode::MatchAny)
                        .with_rule(&get),
                )
                .build(),
        );
        load(&client, "/chatctl/chat/prod/token-secret")
            .await
            .unwrap();
        assert_eq!(
            get.num_calls(),
            5,
            "four throttled attempts, then the answer"
        );
    }
}
