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
