//! The fan-out Lambda: SNS notifications of room events in, posts to the room's connections out
//! (`chat_handlers::fanout::handle`); and every minute the schedule's presence sweep
//! (`chat_handlers::sweep`). A store failure fails the invocation, so Lambda retries it as the
//! function's event-invoke configuration allows (asynchronous invocation; SNS does not retry a
//! Lambda that accepted the event).

use std::sync::Arc;

use chat_core::ports::{Clock, SystemClock};
use chat_handlers::fanout::Invocation;
use lambda_runtime::{Error, LambdaEvent, service_fn};

#[tokio::main]
async fn main() -> Result<(), Error> {
    chat_aws::lambda::init_logging();
    let chat = Arc::new(chat_aws::lambda::service_from_env(false).await?);
    lambda_runtime::run(service_fn(move |event: LambdaEvent<serde_json::Value>| {
        let chat = Arc::clone(&chat);
        async move {
            match Invocation::parse(event.payload)? {
                Invocation::Sns(sns) => {
                    let reports = chat_handlers::fanout::handle(&chat, &sns).await?;
                    let delivered: usize = reports.iter().map(|r| r.delivered).sum();
                    let removed: usize = reports.iter().map(|r| r.removed.len()).sum();
                    tracing::info!(rooms = reports.len(), delivered, removed, "fan-out done");
                }
                Invocation::Sweep => {
                    let report = chat_handlers::sweep::handle(&chat, SystemClock.now_ms()).await?;
                    tracing::info!(
                        announced = report.announced,
                        checked = report.checked,
                        probed = report.probed,
                        removed = report.removed,
                        errors = report.errors,
                        "presence sweep done"
                    );
                }
            }
            Ok::<_, Error>(())
        }
    }))
    .await
}
