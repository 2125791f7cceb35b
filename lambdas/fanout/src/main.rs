//! The fan-out Lambda, invoked three ways:
//! - chat events (message, recalled) from the SNS subscription (`chat_handlers::fanout::handle`).
//!   A store failure fails the invocation, so Lambda retries it as the function's event-invoke
//!   configuration allows (asynchronous invocation: once, within 60 s, then the dead-letter
//!   queue; SNS does not retry a Lambda that accepted the event);
//! - presence events in batches from the SQS queue (`chat_handlers::queue::handle`), answering
//!   which records to redeliver (`batchItemFailures`);
//! - every minute the schedule's presence sweep (`chat_handlers::sweep`).

use std::sync::Arc;

use aws_lambda_events::sqs::SqsEvent;
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
            // SQS first: its records would otherwise be taken for a malformed SNS event.
            if chat_handlers::queue::is_sqs(&event.payload) {
                let batch: SqsEvent = serde_json::from_value(event.payload)?;
                let outcome = chat_handlers::queue::handle(&chat, &batch).await;
                let delivered: usize = outcome.reports.iter().map(|r| r.delivered).sum();
                tracing::info!(
                    records = batch.records.len(),
                    rooms = outcome.reports.len(),
                    delivered,
                    skipped = outcome.skipped,
                    redelivered = outcome.response.batch_item_failures.len(),
                    "presence fan-out done"
                );
                return Ok::<_, Error>(serde_json::to_value(outcome.response)?);
            }
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
            Ok::<_, Error>(serde_json::Value::Null)
        }
    }))
    .await
}
