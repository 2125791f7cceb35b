//! The WebSocket Lambda: every route of the API (`$connect`, `$disconnect`, the actions,
//! `$default`). Configuration comes from the environment (see `chat_aws::lambda`); clients are
//! built once per instance; the work is `chat_handlers::ws::handle`.

use std::sync::Arc;

use aws_lambda_events::apigw::ApiGatewayWebsocketProxyRequest;
use lambda_runtime::{Error, LambdaEvent, service_fn};

#[tokio::main]
async fn main() -> Result<(), Error> {
    chat_aws::lambda::init_logging();
    let chat = Arc::new(chat_aws::lambda::service_from_env(true).await?);
    lambda_runtime::run(service_fn(
        move |event: LambdaEvent<ApiGatewayWebsocketProxyRequest>| {
            let chat = Arc::clone(&chat);
            async move { Ok::<_, Error>(chat_handlers::ws::handle(&chat, event.payload).await) }
        },
    ))
    .await
}
