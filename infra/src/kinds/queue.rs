//! An SQS queue: the fan-out's dead-letter queue and the presence queue.

use std::time::Instant;

use serde::Serialize;
use serde_json::Value;
use serde_json::json;

use crate::apply::Progress;
use crate::apply::{Applier, tag_map, typed};
use crate::cloudformation::{cfn, tag_list};
use crate::errors::{describe, is_queue_deleted_recently, is_queue_name_taken};
use crate::kinds::Properties;
use crate::observe::{ObserveError, Reader, our_tags, read_error};
use crate::stack::{Kind, Resource};

use super::Tags;

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Queue {
    pub message_retention_seconds: Option<u64>,
    pub visibility_timeout_s: Option<u64>,
    /// `{deadLetterTargetArn, maxReceiveCount}`, or null for none.
    pub redrive_policy: Value,
    /// The queue's resource policy document, or null for none.
    pub policy: Value,
    pub tags: Tags,
}

// --- observe ------------------------------------------------------------------------------

/// The queue's URL, or `None` when there is no queue of that name.
pub async fn queue_url(
    sqs: &aws_sdk_sqs::Client,
    name: &str,
) -> Result<Option<String>, ObserveError> {
    match sqs.get_queue_url().queue_name(name).send().await {
        Ok(out) => Ok(out.queue_url),
        Err(e) if crate::errors::is_queue_missing(&e) => Ok(None),
        Err(e) => Err(read_error(format!("queue {name}"), e)),
    }
}

pub(crate) async fn read_queue(r: &Reader<'_>, name: &str) -> Result<(), ObserveError> {
    use aws_sdk_sqs::types::QueueAttributeName as A;
    let Some(url) = queue_url(&r.clients.sqs, name).await? else {
        return Ok(());
    };
    let attributes = match r
        .clients
        .sqs
        .get_queue_attributes()
        .queue_url(&url)
        .attribute_names(A::MessageRetentionPeriod)
        .attribute_names(A::VisibilityTimeout)
        .attribute_names(A::RedrivePolicy)
        .attribute_names(A::Policy)
        .send()
        .await
    {
        Ok(out) => out.attributes.unwrap_or_default(),
        // Deleted between the two calls.
        Err(e) if crate::errors::is_queue_missing(&e) => return Ok(()),
        Err(e) => return Err(read_error(format!("attributes of queue {name}"), e)),
    };
    let number = |a: A| attributes.get(&a).and_then(|v| v.parse::<u64>().ok());
    let document = |a: A| {
        attributes
            .get(&a)
            .filter(|v| !v.is_empty())
            .map_or(Value::Null, |v| {
                serde_json::from_str(v).unwrap_or_else(|_| Value::String(v.clone()))
            })
    };
    let mut redrive = document(A::RedrivePolicy);
    // SQS has answered maxReceiveCount both as a number and as a string: compare numbers.
    if let Some(n) = redrive
        .get("maxReceiveCount")
        .and_then(Value::as_str)
        .and_then(|count| count.parse::<u64>().ok())
    {
        redrive["maxReceiveCount"] = json!(n);
    }
    let tags = r
        .clients
        .sqs
        .list_queue_tags()
        .queue_url(&url)
        .send()
        .await
        .map_err(|e| read_error(format!("tags of queue {name}"), e))?
        .tags
        .unwrap_or_default();
    r.id(Kind::Queue, name, &url);
    r.put(
        name,
        Queue {
            message_retention_seconds: number(A::MessageRetentionPeriod),
            visibility_timeout_s: number(A::VisibilityTimeout),
            redrive_policy: redrive,
            policy: document(A::Policy),
            tags: our_tags(tags.iter().map(|(k, v)| (k.as_str(), v.as_str()))),
        },
    );
    Ok(())
}

// --- apply --------------------------------------------------------------------------------

impl Applier<'_> {
    /// The queue's URL: as observed, else looked up (a queue created in this run).
    pub(crate) async fn queue_url(&self, name: &str) -> Result<Option<String>, String> {
        if let Some(url) = self.id(Kind::Queue, name) {
            return Ok(Some(url));
        }
        queue_url(&self.clients.sqs, name)
            .await
            .map_err(|e| e.to_string())
    }

    /// The queue's attributes as SQS takes them. A document the model does not want is absent at
    /// creation and the empty string (which removes it) on update.
    pub(crate) fn queue_attributes(
        r: &Resource,
        creating: bool,
    ) -> Result<std::collections::HashMap<aws_sdk_sqs::types::QueueAttributeName, String>, String>
    {
        use aws_sdk_sqs::types::QueueAttributeName as A;
        let q = typed(r, Properties::queue)?;
        let number = |n: Option<u64>| n.unwrap_or_default().to_string();
        let mut attributes: std::collections::HashMap<A, String> = [
            (
                A::MessageRetentionPeriod,
                number(q.message_retention_seconds),
            ),
            (A::VisibilityTimeout, number(q.visibility_timeout_s)),
        ]
        .into_iter()
        .collect();
        for (name, document) in [
            (A::RedrivePolicy, &q.redrive_policy),
            (A::Policy, &q.policy),
        ] {
            if !document.is_null() {
                attributes.insert(name, document.to_string());
            } else if !creating {
                attributes.insert(name, String::new());
            }
        }
        Ok(attributes)
    }

    /// CreateQueue with the attributes and tags. SQS refuses a name deleted less than 60 s ago
    /// (a destroy just before): wait, saying so, and try again.
    pub(crate) async fn create_queue(&self, r: &Resource) -> Result<(), String> {
        let started = Instant::now();
        let url = loop {
            match self
                .clients
                .sqs
                .create_queue()
                .queue_name(&r.name)
                .set_attributes(Some(Self::queue_attributes(r, true)?))
                .set_tags(Some(tag_map(r)))
                .send()
                .await
            {
                Ok(out) => break out.queue_url,
                Err(e) if is_queue_deleted_recently(&e) && started.elapsed() < self.patience => {
                    if let Some(Progress(progress)) = self.progress {
                        progress(&format!(
                            "queue {} was deleted less than a minute ago; SQS frees the name after 60 s, retrying in {}s",
                            r.name,
                            self.queue_retry.as_secs()
                        ));
                    }
                    tokio::time::sleep(self.queue_retry).await;
                }
                // It exists with other attributes (an earlier run, or a hand edit): adopt it.
                Err(e) if is_queue_name_taken(&e) => {
                    self.set_queue_attributes(r).await?;
                    self.retag(r, None).await?;
                    break None;
                }
                Err(e) if is_queue_deleted_recently(&e) => {
                    return Err(format!(
                        "{}; SQS still holds the name of the deleted queue: run deploy again in a minute",
                        describe(e)
                    ));
                }
                Err(e) => return Err(describe(e)),
            }
        };
        if let Some(url) = url {
            self.known().ids.insert((Kind::Queue, r.name.clone()), url);
        }
        Ok(())
    }

    pub(crate) async fn set_queue_attributes(&self, r: &Resource) -> Result<(), String> {
        let url = self
            .queue_url(&r.name)
            .await?
            .ok_or_else(|| format!("queue {} does not exist", r.name))?;
        self.clients
            .sqs
            .set_queue_attributes()
            .queue_url(url)
            .set_attributes(Some(Self::queue_attributes(r, false)?))
            .send()
            .await
            .map_err(describe)?;
        Ok(())
    }
}

// --- CloudFormation ---------------------------------------------------------------------------

impl Queue {
    /// `AWS::SQS::Queue`, and its `AWS::SQS::QueuePolicy` when it has a policy (`queue_id`: the
    /// queue's logical id, whose Ref is its URL).
    pub(crate) fn cloudformation(&self, name: &str, queue_id: &str) -> Vec<(&'static str, Value)> {
        let Queue {
            message_retention_seconds,
            visibility_timeout_s,
            redrive_policy,
            policy,
            tags,
        } = self;
        let mut props = json!({
            "QueueName": name,
            "MessageRetentionPeriod": message_retention_seconds,
            "VisibilityTimeout": visibility_timeout_s,
            "Tags": tag_list(tags),
        });
        if !redrive_policy.is_null() {
            props["RedrivePolicy"] = redrive_policy.clone();
        }
        let queue = cfn("AWS::SQS::Queue", props);
        if policy.is_null() {
            return vec![("", queue)];
        }
        let queue_policy = cfn(
            "AWS::SQS::QueuePolicy",
            json!({
                "Queues": [{ "Ref": queue_id }],
                "PolicyDocument": policy,
            }),
        );
        vec![("", queue), ("Policy", queue_policy)]
    }
}
