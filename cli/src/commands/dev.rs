//! `chatctl dev`: run the local backend until Ctrl-C (or SIGTERM).

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;

use chat_aws::{DynamoConnectionStore, DynamoMessageStore, TableNames};
use chat_core::ChatConfig;
use chat_core::policy::{PresencePolicy, RateLimit};
use chat_core::ports::SystemClock;
use chat_core::presence::CoalescePolicy;
use chat_local::{GatewayLimits, LocalConfig, LocalServer, Stores};
use serde::Serialize;
use tracing::info;

use crate::args::{DevArgs, OutputFormat, StoreKind};
use crate::error::{CliError, UsageError};
use crate::output;

/// Printed once the backend listens.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DevReady {
    pub event: &'static str,
    pub page_url: String,
    pub websocket_url: String,
    pub management_url: String,
    pub data_dir: PathBuf,
    pub allow_anonymous: bool,
    /// `sqlite` or `dynamodb`.
    pub store: &'static str,
}

impl fmt::Display for DevReady {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let dir = self.data_dir.display();
        writeln!(
            f,
            "chatctl dev: the chat backend is running (Ctrl-C to stop)"
        )?;
        writeln!(f, "  page        {}", self.page_url)?;
        if self.allow_anonymous {
            writeln!(
                f,
                "  websocket   {}?room=lobby&user=NAME",
                self.websocket_url
            )?;
        } else {
            writeln!(
                f,
                "  websocket   {}?room=lobby&token=TOKEN",
                self.websocket_url
            )?;
        }
        writeln!(
            f,
            "  management  {}/@connections/{{connectionId}}",
            self.management_url
        )?;
        writeln!(f, "  data        {dir} (store: {})", self.store)?;
        write!(
            f,
            "  token       chatctl token --user NAME --data-dir {dir}{}",
            if self.allow_anonymous {
                ""
            } else {
                "   (anonymous access is off: --allow-anonymous)"
            }
        )
    }
}

/// Printed when the backend stopped.
#[derive(Debug, Clone, Serialize)]
pub struct DevStopped {
    pub event: &'static str,
}

impl fmt::Display for DevStopped {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("chatctl dev: stopped")
    }
}

/// The local backend's configuration from the flags.
pub fn config(args: &DevArgs) -> Result<LocalConfig, CliError> {
    let ms = |d: std::time::Duration| i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
    if args.online_within >= args.idle_within {
        return Err(UsageError::PresenceThresholds {
            online: args.online_within,
            idle: args.idle_within,
        }
        .into());
    }
    if args.max_frame > args.max_message {
        return Err(UsageError::FrameAboveMessage {
            frame: args.max_frame,
            message: args.max_message,
        }
        .into());
    }
    if args.max_text == 0 || args.max_text > args.max_frame {
        return Err(UsageError::MaxText {
            max_text: args.max_text,
            max_frame: args.max_frame,
        }
        .into());
    }
    let max_window = std::time::Duration::from_secs(10);
    if args.presence_window > max_window {
        return Err(UsageError::PresenceWindow {
            window: args.presence_window,
            max: max_window,
        }
        .into());
    }
    if !(args.rate_per_second > 0.0 && args.rate_burst >= 1.0) {
        return Err(UsageError::RateLimit {
            per_second: args.rate_per_second,
            burst: args.rate_burst,
        }
        .into());
    }
    let mut config = LocalConfig::new(&args.data.data_dir);
    config.bind = SocketAddr::new(args.bind, args.port.unwrap_or(8080));
    // Only the default port falls back: an explicit --port that is taken is an error to see.
    config.port_fallbacks = if args.port.is_none() { 19 } else { 0 };
    config.allow_anonymous = args.allow_anonymous;
    config.chat = ChatConfig {
        recall_window_ms: ms(args.recall_window),
        presence: PresencePolicy {
            online_ms: ms(args.online_within),
            idle_ms: ms(args.idle_within),
        },
        rate_limit: RateLimit {
            per_second: args.rate_per_second,
            burst: args.rate_burst,
        },
        presence_push: CoalescePolicy {
            window_ms: ms(args.presence_window),
            detail_limit: args.presence_detail_limit,
        },
        ..ChatConfig::default()
    };
    config.chat.frames.max_text_bytes = args.max_text;
    config.limits = GatewayLimits {
        idle_timeout: args.idle_timeout,
        max_lifetime: args.max_lifetime,
        max_frame_bytes: args.max_frame,
        max_message_bytes: args.max_message,
        ..GatewayLimits::default()
    };
    config.presence_sweep = args.presence_sweep;
    Ok(config)
}

pub fn run(args: DevArgs, format: OutputFormat) -> Result<(), CliError> {
    init_logging();
    let config = config(&args)?;
    let runtime = crate::runtime()?;
    runtime.block_on(async move {
        let stores = stores(&args).await?;
        let server =
            LocalServer::start_with(config, std::sync::Arc::new(SystemClock), stores).await?;
        output::emit(
            format,
            &DevReady {
                event: "ready",
                page_url: server.page_url(),
                websocket_url: server.websocket_url(),
                management_url: server.management_url(),
                data_dir: args.data.data_dir.clone(),
                allow_anonymous: args.allow_anonymous,
                store: match args.store {
                    StoreKind::Sqlite => "sqlite",
                    StoreKind::Dynamodb => "dynamodb",
                },
            },
        );
        wait_for_stop().await?;
        info!("stopping: closing connections");
        server.shutdown().await;
        output::emit(format, &DevStopped { event: "stopped" });
        Ok(())
    })
}

/// The stores `--store` asks for; DynamoDB tables are created when missing.
async fn stores(args: &DevArgs) -> Result<Stores, CliError> {
    if args.store == StoreKind::Sqlite {
        return Ok(Stores::Sqlite);
    }
    let config = chat_aws::load_config(args.aws_region.clone(), args.aws_endpoint.clone()).await;
    if config.region().is_none() {
        return Err(UsageError::NoRegion.into());
    }
    let client = aws_sdk_dynamodb::Client::new(&config);
    let names = TableNames {
        messages: format!("{}-messages", args.table_prefix),
        connections: format!("{}-connections", args.table_prefix),
    };
    chat_aws::tables::ensure(&client, &names)
        .await
        .map_err(|source| CliError::DevTables {
            messages: names.messages.clone(),
            connections: names.connections.clone(),
            emulator: args.aws_endpoint.is_some(),
            source,
        })?;
    info!(messages = %names.messages, connections = %names.connections, "using DynamoDB");
    Ok(Stores::Provided {
        messages: std::sync::Arc::new(DynamoMessageStore::new(client.clone(), &names.messages)),
        connections: std::sync::Arc::new(DynamoConnectionStore::new(client, &names.connections)),
    })
}

async fn wait_for_stop() -> Result<(), CliError> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate())
            .map_err(|e| CliError::system("cannot watch for SIGTERM", e))?;
        tokio::select! {
            r = tokio::signal::ctrl_c() => r.map_err(|e| CliError::system("cannot watch for Ctrl-C", e)),
            _ = term.recv() => Ok(()),
        }
    }
    #[cfg(not(unix))]
    {
        tokio::signal::ctrl_c()
            .await
            .map_err(|e| CliError::system("cannot watch for Ctrl-C", e))
    }
}

/// Logs go to stderr, filtered by `RUST_LOG` (default: this project's info lines and others' warnings).
fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new(
            "warn,chatctl=info,chat_local=info,chat_core=info,chat_handlers=info",
        )
    });
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ready(allow_anonymous: bool) -> DevReady {
        DevReady {
            event: "ready",
            page_url: "http://127.0.0.1:8080/".into(),
            websocket_url: "ws://127.0.0.1:8080/".into(),
            management_url: "http://127.0.0.1:8080".into(),
            data_dir: PathBuf::from(".chatctl/dev"),
            allow_anonymous,
            store: "sqlite",
        }
    }

    #[test]
    fn the_ready_banner_tells_a_newcomer_what_to_open() {
        insta::assert_snapshot!(ready(true).to_string());
        insta::assert_snapshot!(ready(false).to_string());
        insta::assert_json_snapshot!(ready(true));
    }
}
