//! Every name and ARN of a stage, derived in one place. The stack model, observe, apply and the
//! outputs all ask here, so a renamed resource cannot be found by one and missed by another; ARNs
//! carry the partition of the caller's account (`aws`, `aws-cn`, `aws-us-gov`, …) and hosts its
//! DNS suffix, never a hard-coded `arn:aws:` or `amazonaws.com`.

use chat_aws::tables::TableNames;
use serde::Serialize;

use crate::stack::StackName;

/// An AWS partition: the `arn:{id}:` of every ARN in it and the DNS suffix of its endpoints.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Partition {
    pub id: String,
    pub dns_suffix: String,
}

impl Partition {
    /// The commercial partition (`aws`, `amazonaws.com`).
    pub fn aws() -> Self {
        Self::from_id("aws")
    }

    /// The partition named `id`, with its DNS suffix (AWS's published partition table).
    pub fn from_id(id: &str) -> Self {
        let dns_suffix = match id {
            "aws-cn" => "amazonaws.com.cn",
            "aws-iso" => "c2s.ic.gov",
            "aws-iso-b" => "sc2s.sgov.gov",
            "aws-iso-e" => "cloud.adc-e.uk",
            "aws-iso-f" => "csp.hci.ic.gov",
            "aws-eusc" => "amazonaws.eu",
            // `aws`, `aws-us-gov`, and any partition newer than this table.
            _ => "amazonaws.com",
        };
        Self {
            id: id.to_owned(),
            dns_suffix: dns_suffix.to_owned(),
        }
    }

    /// The partition of an ARN (the caller identity's, say): `arn:aws-cn:iam::…` → `aws-cn`.
    pub fn of_arn(arn: &str) -> Option<Self> {
        let mut parts = arn.splitn(3, ':');
        match (parts.next(), parts.next()) {
            (Some("arn"), Some(id)) if !id.is_empty() => Some(Self::from_id(id)),
            _ => None,
        }
    }
}

/// The roles of the stage's two functions.
pub const FUNCTION_ROLES: [&str; 2] = ["ws", "fanout"];

/// The alias every trigger invokes: the function's current release. A deploy that changes a
/// function publishes a version and moves this alias to it; a rollback moves it back.
pub const LIVE_ALIAS: &str = "live";

/// `function` qualified by its `live` alias (`{function}:live`, Lambda's shorthand for it).
pub fn live(function: &str) -> String {
    format!("{function}:{LIVE_ALIAS}")
}

/// The names of a stage's resources: `{app}-{stage}-…`, as AWS knows them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Names {
    prefix: String,
    stage: String,
    tables: TableNames,
    secret: String,
    releases: String,
}

impl Names {
    pub fn new(name: &StackName) -> Self {
        Self {
            prefix: name.prefix(),
            stage: name.stage.clone(),
            tables: name.tables(),
            secret: chat_aws::secret::parameter_name(&name.app, &name.stage),
            releases: format!("/chatctl/{}/{}/releases", name.app, name.stage),
        }
    }

    /// `{app}-{stage}`, the prefix of every resource name.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    pub fn stage(&self) -> &str {
        &self.stage
    }

    pub fn tables(&self) -> &TableNames {
        &self.tables
    }

    pub fn topic(&self) -> String {
        format!("{}-events", self.prefix)
    }

    /// The fan-out's dead-letter queue.
    pub fn dead_letter_queue(&self) -> String {
        format!("{}-fanout-dlq", self.prefix)
    }

    /// The queue presence events wait in for the fan-out.
    pub fn presence_queue(&self) -> String {
        format!("{}-presence", self.prefix)
    }

    /// The every-minute presence sweep's schedule.
    pub fn sweep_schedule(&self) -> String {
        format!("{}-presence-sweep", self.prefix)
    }

    /// The SSM parameter holding the token secret.
    pub fn secret_parameter(&self) -> &str {
        &self.secret
    }

    /// The SSM parameter whose history is the stage's release log (one version per release).
    pub fn releases_parameter(&self) -> &str {
        &self.releases
    }

    pub fn api(&self) -> String {
        format!("{}-api", self.prefix)
    }

    /// A function by role (`ws`, `fanout`).
    pub fn function(&self, role: &str) -> String {
        format!("{}-{role}", self.prefix)
    }

    /// The `live` alias of the function `role`, as the stack model names it (`{function}:live`,
    /// Lambda's own shorthand for a qualified name).
    pub fn alias(&self, role: &str) -> String {
        live(&self.function(role))
    }

    /// The execution role of the function `role`.
    pub fn function_role(&self, role: &str) -> String {
        format!("{}-{role}-role", self.prefix)
    }

    /// The role the sweep's schedule invokes the fan-out with.
    pub fn scheduler_role(&self) -> String {
        format!("{}-scheduler", self.prefix)
    }

    /// The log group Lambda writes the function `role`'s logs to.
    pub fn log_group(&self, role: &str) -> String {
        format!("/aws/lambda/{}", self.function(role))
    }
}

/// ARNs and hosts in one account, region and partition.
#[derive(Debug, Clone, Copy)]
pub struct Arns<'a> {
    pub partition: &'a Partition,
    pub region: &'a str,
    pub account: &'a str,
}

impl Arns<'_> {
    /// `arn:{partition}:{service}:{region}:{account}:{resource}`.
    pub fn arn(&self, service: &str, resource: &str) -> String {
        format!(
            "arn:{}:{service}:{}:{}:{resource}",
            self.partition.id, self.region, self.account
        )
    }

    pub fn table(&self, name: &str) -> String {
        self.arn("dynamodb", &format!("table/{name}"))
    }

    pub fn topic(&self, name: &str) -> String {
        self.arn("sns", name)
    }

    pub fn queue(&self, name: &str) -> String {
        self.arn("sqs", name)
    }

    pub fn function(&self, name: &str) -> String {
        self.arn("lambda", &format!("function:{name}"))
    }

    pub fn log_group(&self, name: &str) -> String {
        self.arn("logs", &format!("log-group:{name}"))
    }

    /// An SSM parameter whose name starts with `/`.
    pub fn parameter(&self, name: &str) -> String {
        self.arn("ssm", &format!("parameter{name}"))
    }

    /// IAM is global: no region in its ARNs.
    pub fn role(&self, name: &str) -> String {
        format!(
            "arn:{}:iam::{}:role/{name}",
            self.partition.id, self.account
        )
    }

    /// `execute-api` ARNs: what an invoke permission or a Management API grant names.
    pub fn execute_api(&self, api_id: &str, path: &str) -> String {
        self.arn("execute-api", &format!("{api_id}/{path}"))
    }

    /// API Gateway's own resources (`/apis/{id}`, for tagging): no account in these.
    pub fn apigateway(&self, path: &str) -> String {
        format!(
            "arn:{}:apigateway:{}::{path}",
            self.partition.id, self.region
        )
    }

    /// What API Gateway invokes a function through.
    pub fn lambda_invocation_uri(&self, function_arn: &str) -> String {
        format!(
            "arn:{}:apigateway:{}:lambda:path/2015-03-31/functions/{function_arn}/invocations",
            self.partition.id, self.region
        )
    }

    /// The host of a WebSocket API when AWS has not told us its endpoint.
    pub fn api_host(&self, api_id: &str) -> String {
        format!(
            "{api_id}.execute-api.{}.{}",
            self.region, self.partition.dns_suffix
        )
    }

    /// The virtual-hosted URL of an object in a bucket of this region (CloudFormation's
    /// `TemplateURL` takes one in the stack's region).
    pub fn s3_object_url(&self, bucket: &str, key: &str) -> String {
        format!(
            "https://{bucket}.s3.{}.{}/{key}",
            self.region, self.partition.dns_suffix
        )
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn partitions_come_from_arns() {
        let cn = Partition::of_arn("arn:aws-cn:iam::123456789012:user/ops").unwrap();
        assert_eq!(
            (cn.id.as_str(), cn.dns_suffix.as_str()),
            ("aws-cn", "amazonaws.com.cn")
        );
        let gov = Partition::of_arn("arn:aws-us-gov:sts::123456789012:assumed-role/r/s").unwrap();
        assert_eq!(
            (gov.id.as_str(), gov.dns_suffix.as_str()),
            ("aws-us-gov", "amazonaws.com")
        );
        assert_eq!(
            Partition::of_arn("arn:aws:iam::1:root"),
            Some(Partition::aws())
        );
        assert_eq!(Partition::of_arn("not an arn"), None);
        assert_eq!(Partition::of_arn("arn::iam::1:root"), None);
    }

    #[test]
    fn arns_carry_the_partition() {
        let cn = Partition::from_id("aws-cn");
        let arns = Arns {
            partition: &cn,
            region: "cn-north-1",
            account: "123456789012",
        };
        assert_eq!(
            arns.table("chat-prod-messages"),
            "arn:aws-cn:dynamodb:cn-north-1:123456789012:table/chat-prod-messages"
        );
        assert_eq!(
            arns.role("chat-prod-ws-role"),
            "arn:aws-cn:iam::123456789012:role/chat-prod-ws-role"
        );
        assert_eq!(
            arns.apigateway("/apis/abc"),
            "arn:aws-cn:apigateway:cn-north-1::/apis/abc"
        );
        assert_eq!(
            arns.api_host("abc"),
            "abc.execute-api.cn-north-1.amazonaws.com.cn"
        );
        assert_eq!(
            arns.s3_object_url("b", "k.json"),
            "https://b.s3.cn-north-1.amazonaws.com.cn/k.json"
        );
    }
}
