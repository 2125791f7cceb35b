//! What the Lambda binaries share: their settings from environment variables (validated, with
//! errors that name the variable), the wiring of the AWS adapters into `chat-core`, and JSON logs.

use std::sync::Arc;

use chat_core::policy::PresencePolicy;
use chat_core::ports::{Clock, MonotonicUlids, SystemClock};
use chat_core::token::{TokenKey, decode_hex};
use chat_core::{AuthConfig, ChatConfig, ChatService, Ports};

use crate::{DynamoConnectionStore, DynamoMessageStore, ManagementSender, SnsTopic, TableNames};

pub const MESSAGES_TABLE: &str = "CHAT_MESSAGES_TABLE";
pub const CONNECTIONS_TABLE: &str = "CHAT_CONNECTIONS_TABLE";
pub const TOPIC_ARN: &str = "CHAT_TOPIC_ARN";
pub const MANAGEMENT_ENDPOINT: &str = "CHAT_MANAGEMENT_ENDPOINT";
pub const TOKEN_SECRET: &str = "CHAT_TOKEN_SECRET";
pub const TOKEN_SECRET_PARAMETER: &str = "CHAT_TOKEN_SECRET_PARAMETER";
pub const RECALL_WINDOW_MS: &str = "CHAT_RECALL_WINDOW_MS";
pub const ONLINE_MS: &str = "CHAT_ONLINE_MS";
pub const IDLE_MS: &str = "CHAT_IDLE_MS";
pub const MAX_TEXT_BYTES: &str = "CHAT_MAX_TEXT_BYTES";
/// Rooms with more members push counts instead of per-user presence changes.
pub const PRESENCE_DETAIL_LIMIT: &str = "CHAT_PRESENCE_DETAIL_LIMIT";

/// A missing or invalid setting, named.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error("environment variable {0} is not set; the deployment sets it on the function")]
    Missing(&'static str),
    #[error("environment variable {name} is invalid: {why}")]
    Invalid { name: &'static str, why: String },
    #[error("the token secret cannot be loaded: {0}")]
    Secret(chat_core::ports::PortError),
}

/// Where the token secret comes from.
#[derive(Debug, Clone)]
pub enum TokenSecret {
    /// `CHAT_TOKEN_SECRET`: the hex value itself (tests, local runs).
    Inline(TokenKey),
    /// `CHAT_TOKEN_SECRET_PARAMETER`: an SSM SecureString, read once at start.
    Parameter(String),
}

/// Everything a handler instance needs to know.
#[derive(Debug, Clone)]
pub struct Settings {
    pub tables: TableNames,
    pub topic_arn: String,
    /// `https://{api}.execute-api.{region}.amazonaws.com/{stage}`
    pub management_endpoint: String,
    /// `None` for handlers that never check tokens (the fan-out).
    pub token_secret: Option<TokenSecret>,
    pub chat: ChatConfig,
}

impl Settings {
    /// Read settings through `get` (the environment in production, a map in tests).
    pub fn from_vars(get: impl Fn(&str) -> Option<String>) -> Result<Self, SettingsError> {
        let required = |name: &'static str| {
            get(name)
                .filter(|v| !v.is_empty())
                .ok_or(SettingsError::Missing(name))
        };
        let number =
            |name: &'static str, default: i64| -> Result<i64, SettingsError> {
                match get(name) {
                    None => Ok(default),
                    Some(v) => v.parse::<i64>().ok().filter(|n| *n > 0).ok_or_else(|| {
                        SettingsError::Invalid {
                            name,
                            why: format!("{v:?} is not a positive whole number"),
                        }
                    }),
                }
            };
        let token_secret = match (
            get(TOKEN_SECRET).filter(|v| !v.is_empty()),
            get(TOKEN_SECRET_PARAMETER).filter(|v| !v.is_empty()),
        ) {
            (Some(hex), _) => {
                let secret = decode_hex(&hex).ok_or(SettingsError::Invalid {
                    name: TOKEN_SECRET,
                    why: "not hexadecimal".into(),
                })?;
                Some(TokenSecret::Inline(TokenKey::new(secret).map_err(|e| {
                    SettingsError::Invalid {
                        name: TOKEN_SECRET,
                        why: e.to_string(),
                    }
                })?))
            }
            (None, Some(parameter)) => Some(TokenSecret::Parameter(parameter)),
            (None, None) => None,
        };
        let defaults = ChatConfig::default();
        let mut chat = ChatConfig {
            recall_window_ms: number(RECALL_WINDOW_MS, defaults.recall_window_ms)?,
            presence: PresencePolicy {
                online_ms: number(ONLINE_MS, defaults.presence.online_ms)?,
                idle_ms: number(IDLE_MS, defaults.presence.idle_ms)?,
            },
            ..defaults
        };
        chat.frames.max_text_bytes = usize::try_from(number(MAX_TEXT_BYTES, 4096)?).unwrap_or(4096);
        // On AWS the coalescing window is the presence queue's batching window (one invocation
        // coalesces what one batch holds); only the detail limit is the function's setting.
        let detail_default = i64::try_from(chat.presence_push.detail_limit).unwrap_or(200);
        chat.presence_push.detail_limit =
            usize::try_from(number(PRESENCE_DETAIL_LIMIT, detail_default)?).unwrap_or(200);
        if chat.presence.online_ms >= chat.presence.idle_ms {
            return Err(SettingsError::Invalid {
                name: ONLINE_MS,
                why: format!("must be below {IDLE_MS}"),
            });
        }
        Ok(Self {
            tables: TableNames {
                messages: required(MESSAGES_TABLE)?,
                connections: required(CONNECTIONS_TABLE)?,
            },
            topic_arn: required(TOPIC_ARN)?,
            management_endpoint: required(MANAGEMENT_ENDPOINT)?,
            token_secret,
            chat,
        })
    }
}

/// The token key of `settings`, reading SSM when the secret is a parameter.
pub async fn token_key(
    settings: &Settings,
    config: &aws_config::SdkConfig,
) -> Result<Option<TokenKey>, SettingsError> {
    match &settings.token_secret {
        None => Ok(None),
        Some(TokenSecret::Inline(key)) => Ok(Some(key.clone())),
        Some(TokenSecret::Parameter(name)) => {
            crate::secret::load(&crate::secret::reader(config), name)
                .await
                .map(Some)
                .map_err(SettingsError::Secret)
        }
    }
}

/// The chat service on AWS adapters built from `config`.
pub async fn service(
    settings: &Settings,
    config: &aws_config::SdkConfig,
) -> Result<ChatService, SettingsError> {
    service_with_clock(settings, config, Arc::new(SystemClock)).await
}

/// As [`service`], with a given clock (tests move a manual one past thresholds).
pub async fn service_with_clock(
    settings: &Settings,
    config: &aws_config::SdkConfig,
    clock: Arc<dyn Clock>,
) -> Result<ChatService, SettingsError> {
    let key = token_key(settings, config).await?;
    let dynamo = aws_sdk_dynamodb::Client::new(config);
    let ports = Ports {
        messages: Arc::new(DynamoMessageStore::new(
            dynamo.clone(),
            &settings.tables.messages,
        )),
        connections: Arc::new(DynamoConnectionStore::new(
            dynamo,
            &settings.tables.connections,
        )),
        topic: Arc::new(SnsTopic::new(
            aws_sdk_sns::Client::new(config),
            &settings.topic_arn,
        )),
        sender: Arc::new(ManagementSender::new(config, &settings.management_endpoint)),
        clock,
        ids: Arc::new(MonotonicUlids::default()),
    };
    let auth = AuthConfig {
        key,
        allow_anonymous: false,
    };
    Ok(ChatService::new(ports, settings.chat.clone(), auth))
}

/// Settings from the process environment and the default AWS configuration chain. With
/// `needs_tokens`, a missing token secret stops the function at start rather than refusing every
/// connection later.
pub async fn service_from_env(needs_tokens: bool) -> Result<ChatService, SettingsError> {
    let mut settings = Settings::from_vars(|name| std::env::var(name).ok())?;
    if needs_tokens && settings.token_secret.is_none() {
        return Err(SettingsError::Missing(TOKEN_SECRET_PARAMETER));
    }
    if !needs_tokens {
        // The fan-out never checks tokens: it must not need (or be allowed) to read the secret.
        settings.token_secret = None;
    }
    // The SDK's HTTPS client for the handlers: rustls with ring as its crypto. The SDK's
    // default (rustls with aws-lc) adds megabytes to every zip, and a cold start reads it all.
    use aws_smithy_http_client::tls::{Provider, rustls_provider::CryptoMode};
    let https = aws_smithy_http_client::Builder::new()
        .tls_provider(Provider::Rustls(CryptoMode::Ring))
        .build_https();
    let config = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .http_client(https)
        .load()
        .await;
    service(&settings, &config).await
}

/// One JSON object per log line (CloudWatch Logs Insights parses them), filtered by `RUST_LOG`
/// as `LEVEL` or `target=LEVEL,…` directives (`Targets`: no span filters, no regex engine in the
/// binary); unset or unreadable, `info`.
pub fn init_logging() {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let filter = log_filter(std::env::var("RUST_LOG").ok().as_deref());
    let _ = tracing_subscriber::registry()
        .with(
            tracing_subscriber::fmt::layer()
                .json()
                .with_current_span(false)
                .with_target(false)
                .without_time(), // Lambda stamps every line itself
        )
        .with(filter)
        .try_init();
}

fn log_filter(directives: Option<&str>) -> tracing_subscriber::filter::Targets {
    use tracing_subscriber::filter::{LevelFilter, Targets};
    directives
        .and_then(|d| d.parse::<Targets>().ok())
        .unwrap_or_else(|| Targets::new().with_default(LevelFilter::INFO))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn log_directives_are_read_and_a_bad_one_means_info() {
        use tracing::Level;
        let debug_core = log_filter(Some("warn,chat_core=debug"));
        assert!(debug_core.would_enable("chat_core::handler", &Level::DEBUG));
        assert!(!debug_core.would_enable("aws_smithy_runtime", &Level::INFO));
        let default = log_filter(None);
        assert!(default.would_enable("chat_aws", &Level::INFO));
        assert!(!default.would_enable("chat_aws", &Level::DEBUG));
        let bad = log_filter(Some("chat_core=loud"));
        assert!(bad.would_enable("chat_aws", &Level::INFO));
    }

    fn vars(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        move |k| map.get(k).cloned()
    }

    const FULL: [(&str, &str); 5] = [
        (MESSAGES_TABLE, "chat-prod-messages"),
        (CONNECTIONS_TABLE, "chat-prod-connections"),
        (
            TOPIC_ARN,
            "arn:aws:sns:eu-west-1:123456789012:chat-prod-events",
        ),
        (
            MANAGEMENT_ENDPOINT,
            "https://abc.execute-api.eu-west-1.amazonaws.com/prod",
        ),
        (TOKEN_SECRET, "00112233445566778899aabbccddeeff"),
    ];

    #[test]
    fn settings_come_from_the_environment_with_defaults() {
        let s = Settings::from_vars(vars(&FULL)).unwrap();
        assert_eq!(s.tables.messages, "chat-prod-messages");
        assert_eq!(s.chat.recall_window_ms, 120_000);
        let mut with = FULL.to_vec();
        with.push((RECALL_WINDOW_MS, "60000"));
        assert_eq!(
            Settings::from_vars(vars(&with))
                .unwrap()
                .chat
                .recall_window_ms,
            60_000
        );
    }

    #[test]
    fn the_token_secret_is_inline_a_parameter_or_absent() {
        let mut with = FULL[..4].to_vec();
        assert!(
            Settings::from_vars(vars(&with))
                .unwrap()
                .token_secret
                .is_none()
        );
        with.push((TOKEN_SECRET_PARAMETER, "/chatctl/chat/prod/token-secret"));
        assert!(matches!(
            Settings::from_vars(vars(&with)).unwrap().token_secret,
            Some(TokenSecret::Parameter(p)) if p == "/chatctl/chat/prod/token-secret"
        ));
        assert!(matches!(
            Settings::from_vars(vars(&FULL)).unwrap().token_secret,
            Some(TokenSecret::Inline(_))
        ));
    }

    #[test]
    fn bad_settings_name_the_variable() {
        let missing = Settings::from_vars(vars(&FULL[1..])).unwrap_err();
        assert!(missing.to_string().contains(MESSAGES_TABLE), "{missing}");
        let mut bad = FULL.to_vec();
        bad[4] = (TOKEN_SECRET, "not hex");
        assert!(
            Settings::from_vars(vars(&bad))
                .unwrap_err()
                .to_string()
                .contains(TOKEN_SECRET)
        );
        let mut bad = FULL.to_vec();
        bad.push((IDLE_MS, "-5"));
        assert!(
            Settings::from_vars(vars(&bad))
                .unwrap_err()
                .to_string()
                .contains(IDLE_MS)
        );
    }
}
