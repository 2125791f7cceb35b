//! Counting the AWS calls a command makes: an SDK interceptor on every client, so `deploy` can
//! report how many requests it sent and how many of them could change something. Counts HTTP
//! attempts, retries included — what AWS bills and throttles.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::interceptors::Intercept;
use aws_smithy_runtime_api::client::interceptors::context::BeforeTransmitInterceptorContextRef;
use aws_smithy_runtime_api::client::orchestrator::Metadata;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::config_bag::ConfigBag;
use serde::Serialize;

/// Whether an operation only reads (by AWS's naming convention).
pub fn is_read_only(operation: &str) -> bool {
    ["Get", "List", "Describe"]
        .iter()
        .any(|p| operation.starts_with(p))
}

/// Shared counts, one entry per `service:operation`.
#[derive(Debug, Clone, Default)]
pub struct CallCounter {
    counts: Arc<Mutex<BTreeMap<String, u32>>>,
}

/// A summary of the calls made.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CallCount {
    pub total: u32,
    /// Calls that are not Get/List/Describe: they may change something.
    pub changing: u32,
    pub by_operation: BTreeMap<String, u32>,
}

impl CallCounter {
    pub fn snapshot(&self) -> CallCount {
        let by_operation = self.counts.lock().map(|c| c.clone()).unwrap_or_default();
        let total = by_operation.values().sum();
        let changing = by_operation
            .iter()
            .filter(|(op, _)| !is_read_only(op.rsplit(':').next().unwrap_or_default()))
            .map(|(_, n)| n)
            .sum();
        CallCount {
            total,
            changing,
            by_operation,
        }
    }
}

impl Intercept for CallCounter {
    fn name(&self) -> &'static str {
        "chatctl::CallCounter"
    }

    fn read_before_transmit(
        &self,
        _context: &BeforeTransmitInterceptorContextRef<'_>,
        _runtime_components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let key = cfg.load::<Metadata>().map_or_else(
            || "unknown:unknown".to_owned(),
            |m| format!("{}:{}", m.service(), m.name()),
        );
        if let Ok(mut counts) = self.counts.lock() {
            *counts.entry(key).or_default() += 1;
        }
        Ok(())
    }
}
