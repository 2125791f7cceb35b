//! The stage's SNS topic and its two subscriptions (the fan-out function, the presence queue).

use std::collections::BTreeSet;

use serde::Serialize;
use serde_json::{Value, json};

use crate::apply::{Applier, text, typed};
use crate::cloudformation::{cfn, tag_list};
use crate::errors::{describe, is_not_found};
use crate::kinds::Properties;
use crate::names::LIVE_ALIAS;
use crate::observe::{ObserveError, Reader, our_tags, read_error};
use crate::stack::{Kind, Resource};

use super::Tags;

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Topic {
    pub tags: Tags,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Subscription {
    /// `lambda` or `sqs`; a change replaces the subscription.
    pub protocol: Option<String>,
    /// The function's or queue's ARN; a change replaces the subscription.
    pub endpoint: Option<String>,
    /// The `FilterPolicy` document (on message attributes).
    pub filter_policy: Value,
    pub raw_message_delivery: bool,
}

// --- observe ------------------------------------------------------------------------------

pub(crate) async fn read_topic(r: &Reader<'_>, name: &str, arn: &str) -> Result<(), ObserveError> {
    match r
        .clients
        .sns
        .get_topic_attributes()
        .topic_arn(arn)
        .send()
        .await
    {
        Ok(_) => {}
        Err(e) if is_not_found(&e) => {
            return Ok(());
        }
        Err(e) => return Err(read_error(format!("topic {name}"), e)),
    }
    let tags = r
        .clients
        .sns
        .list_tags_for_resource()
        .resource_arn(arn)
        .send()
        .await
        .map_err(|e| read_error(format!("tags of topic {name}"), e))?
        .tags
        .unwrap_or_default();
    r.put(
        name,
        Topic {
            tags: our_tags(tags.iter().map(|t| (t.key(), t.value()))),
        },
    );
    Ok(())
}

pub(crate) async fn read_subscription(
    r: &Reader<'_>,
    topic: &str,
    topic_arn: &str,
    endpoint: &str,
) -> Result<(), ObserveError> {
    let subscriptions = match r
        .clients
        .sns
        .list_subscriptions_by_topic()
        .topic_arn(topic_arn)
        .send()
        .await
    {
        Ok(out) => out.subscriptions.unwrap_or_default(),
        Err(e) if is_not_found(&e) => {
            return Ok(());
        }
        Err(e) => return Err(read_error(format!("subscriptions of {topic}"), e)),
    };
    if let Some(s) = subscriptions
        .iter()
        .find(|s| s.endpoint() == Some(endpoint))
    {
        // The function's or the queue's name, from the endpoint's ARN: a function's ARN goes on
        // past its name to the alias invoked (`arn:aws:lambda:…:function:NAME:live`).
        let parts: Vec<&str> = endpoint.split(':').collect();
        let target = match parts.get(5) {
            Some(&"function") => parts.get(6),
            _ => parts.get(5),
        }
        .copied()
        .unwrap_or_default();
        let key = format!("{topic}/{target}");
        let mut attributes = std::collections::HashMap::new();
        // A subscription still pending confirmation has no ARN yet, and no attributes to read.
        if let Some(arn) = s.subscription_arn().filter(|a| a.starts_with("arn:")) {
            r.id(Kind::Subscription, &key, arn);
            attributes = r
                .clients
                .sns
                .get_subscription_attributes()
                .subscription_arn(arn)
                .send()
                .await
                .map_err(|e| read_error(format!("attributes of subscription {key}"), e))?
                .attributes
                .unwrap_or_default();
        }
        let filter_policy = attributes
            .get("FilterPolicy")
            .filter(|v| !v.is_empty())
            .map_or(Value::Null, |v| {
                serde_json::from_str(v).unwrap_or_else(|_| Value::String(v.clone()))
            });
        r.put(
            &key,
            Subscription {
                protocol: s.protocol().map(str::to_owned),
                endpoint: s.endpoint().map(str::to_owned),
                filter_policy,
                raw_message_delivery: attributes.get("RawMessageDelivery").map(String::as_str)
                    == Some("true"),
            },
        );
    }
    // A stage deployed before releases subscribed the function itself ($LATEST): observed as an
    // orphan, so the deploy that subscribes the alias unsubscribes it (else every chat event
    // would be delivered twice).
    if let Some(unqualified) = endpoint.strip_suffix(&format!(":{LIVE_ALIAS}")) {
        for s in subscriptions
            .iter()
            .filter(|s| s.endpoint() == Some(unqualified))
        {
            let Some(arn) = s.subscription_arn().filter(|a| a.starts_with("arn:")) else {
                continue;
            };
            let function = unqualified.rsplit(':').next().unwrap_or_default();
            let key = format!("{topic}/{function} ($LATEST)");
            r.id(Kind::Subscription, &key, arn);
            r.put(
                &key,
                Subscription {
                    protocol: s.protocol().map(str::to_owned),
                    endpoint: Some(unqualified.to_owned()),
                    filter_policy: Value::Null,
                    raw_message_delivery: false,
                },
            );
        }
    }
    Ok(())
}

// --- apply --------------------------------------------------------------------------------

impl Applier<'_> {
    pub(crate) async fn create_topic(&self, r: &Resource) -> Result<(), String> {
        // CreateTopic is idempotent for the same name and attributes.
        self.clients
            .sns
            .create_topic()
            .name(&r.name)
            .send()
            .await
            .map_err(describe)?;
        self.retag(r, None).await
    }

    /// SetSubscriptionAttributes for each changed attribute.
    pub(crate) async fn set_subscription_attributes(
        &self,
        r: &Resource,
        changed: &BTreeSet<&str>,
    ) -> Result<(), String> {
        let arn = self
            .id(Kind::Subscription, &r.name)
            .ok_or("the subscription's ARN is unknown")?;
        let [filter, raw] = subscription_attributes(typed(r, Properties::subscription)?);
        for (field, attribute, value) in [
            ("filterPolicy", "FilterPolicy", filter),
            ("rawMessageDelivery", "RawMessageDelivery", raw),
        ] {
            if !changed.contains(field) {
                continue;
            }
            self.clients
                .sns
                .set_subscription_attributes()
                .subscription_arn(&arn)
                .attribute_name(attribute)
                .attribute_value(value)
                .send()
                .await
                .map_err(describe)?;
        }
        Ok(())
    }

    pub(crate) async fn create_subscription(&self, r: &Resource) -> Result<(), String> {
        let topic = r.name.split('/').next().unwrap_or_default();
        let subscription = typed(r, Properties::subscription)?;
        let [filter, raw] = subscription_attributes(subscription);
        // Subscribe is idempotent for the same topic, protocol and endpoint.
        let out = self
            .clients
            .sns
            .subscribe()
            .topic_arn(self.arn("sns", topic))
            .protocol(text(&subscription.protocol))
            .endpoint(text(&subscription.endpoint))
            .attributes("FilterPolicy", filter)
            .attributes("RawMessageDelivery", raw)
            .return_subscription_arn(true)
            .send()
            .await
            .map_err(describe)?;
        if let Some(arn) = out.subscription_arn {
            self.known()
                .ids
                .insert((Kind::Subscription, r.name.clone()), arn);
        }
        Ok(())
    }
}

/// `FilterPolicy` and `RawMessageDelivery` as SNS takes them: the filter policy as JSON text
/// (empty for none), raw delivery as `true`/`false`.
pub(crate) fn subscription_attributes(s: &Subscription) -> [String; 2] {
    let filter = match &s.filter_policy {
        Value::Null => String::new(),
        v => v.to_string(),
    };
    [filter, s.raw_message_delivery.to_string()]
}

// --- CloudFormation ---------------------------------------------------------------------------

impl Topic {
    pub(crate) fn cloudformation(&self, name: &str) -> Value {
        let Topic { tags } = self;
        cfn(
            "AWS::SNS::Topic",
            json!({ "TopicName": name, "Tags": tag_list(tags) }),
        )
    }
}

impl Subscription {
    /// `topic_id`: the topic's logical id.
    pub(crate) fn cloudformation(&self, topic_id: &str) -> Value {
        let Subscription {
            protocol,
            endpoint,
            filter_policy,
            raw_message_delivery,
        } = self;
        cfn(
            "AWS::SNS::Subscription",
            json!({
                "TopicArn": { "Ref": topic_id },
                "Protocol": protocol,
                "Endpoint": endpoint,
                "FilterPolicy": filter_policy,
                "RawMessageDelivery": raw_message_delivery,
            }),
        )
    }
}
