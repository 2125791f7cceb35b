//! The fan-out Lambda: SNS notifications of room events in, posts to the room's connections out
//! (`chat_handlers::fanout::handle`). A store failure fails the invocation so SNS retries it.

use std::sync::Arc;

use aws_lambda_events::sns::SnsEvent;
use lambda_runtime::{Error, LambdaEvent, service_fn};

#[tokio::main]
async fn main() -> Result<(), Error> {
    chat_aws::lambda::init_logging();
    let chat = Arc::new(chat_aws::lambda::service_from_env(false).await?);
    lambda_runtime::run(service_fn(move |event: LambdaEvent<SnsEvent>| {
        let chat = Arc::clone(&chat);
        async move {
            let reports = chat_handlers::fanout::handle(&chat, &event.payload).await?;
            let delivered: usize = reports.iter().map(|r| r.delivered).sum();
            let removed: usize = reports.iter().map(|r| r.removed.len()).sum();
            tracing::info!(records = reports.len(), delivered, removed, "fan-out done");
            Ok::<_, Error>(())
        }
    }))
    .await
}
