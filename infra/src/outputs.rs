//! A deployed stage's outputs: what clients and operators connect to. Derived from the stack's
//! names and the API id, so `deploy`, `status` and `outputs` print the same thing.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::stack::{Environment, StackName};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Outputs {
    pub app: String,
    pub stage: String,
    pub region: String,
    /// Where clients connect: `wss://{api}.execute-api.{region}.{dns suffix}/{stage}`, the host
    /// being the API's `ApiEndpoint`.
    pub websocket_url: String,
    /// Where the backend posts to connections (API Gateway's Management API).
    pub management_endpoint: String,
    pub messages_table: String,
    pub connections_table: String,
    pub topic_arn: String,
    /// The SSM parameter holding the token secret (`chatctl token --stage` reads it).
    pub token_secret_parameter: String,
}

/// The outputs of a stage whose API exists; `None` before it does.
pub fn outputs(name: &StackName, env: &Environment) -> Option<Outputs> {
    env.api_id.as_deref()?;
    let host = env.api_host()?;
    let names = name.names();
    let tables = names.tables().clone();
    Some(Outputs {
        app: name.app.clone(),
        stage: name.stage.clone(),
        region: env.region.clone(),
        websocket_url: format!("wss://{host}/{}", name.stage),
        management_endpoint: format!("https://{host}/{}", name.stage),
        messages_table: tables.messages,
        connections_table: tables.connections,
        topic_arn: env.arns().topic(&names.topic()),
        token_secret_parameter: names.secret_parameter().to_owned(),
    })
}

impl fmt::Display for Outputs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "websocket url        {}", self.websocket_url)?;
        writeln!(f, "management endpoint  {}", self.management_endpoint)?;
        writeln!(f, "messages table       {}", self.messages_table)?;
        writeln!(f, "connections table    {}", self.connections_table)?;
        writeln!(f, "topic                {}", self.topic_arn)?;
        write!(f, "token secret         {}", self.token_secret_parameter)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outputs_need_the_api_and_name_everything() {
        let name = StackName::new("chat", "prod").unwrap();
        let mut env = Environment::new("123456789012", "eu-west-1");
        assert!(outputs(&name, &env).is_none());
        env.api_id = Some("a1b2c3d4e5".into());
        let out = outputs(&name, &env).unwrap();
        assert_eq!(
            out.websocket_url,
            "wss://a1b2c3d4e5.execute-api.eu-west-1.amazonaws.com/prod"
        );
        insta::assert_snapshot!(out.to_string());
    }

    #[test]
    fn outputs_follow_the_partition_and_the_endpoint_aws_reports() {
        let name = StackName::new("chat", "prod").unwrap();
        let mut env = Environment::new("123456789012", "cn-north-1");
        env.partition = crate::names::Partition::from_id("aws-cn");
        env.api_id = Some("abc".into());
        let out = outputs(&name, &env).unwrap();
        assert_eq!(
            out.websocket_url,
            "wss://abc.execute-api.cn-north-1.amazonaws.com.cn/prod"
        );
        assert_eq!(
            out.topic_arn,
            "arn:aws-cn:sns:cn-north-1:123456789012:chat-prod-events"
        );
        // What AWS reports wins over what the partition table says.
        env.api_endpoint = Some("wss://abc.execute-api.cn-north-1.example.cn".into());
        let out = outputs(&name, &env).unwrap();
        assert_eq!(
            out.management_endpoint,
            "https://abc.execute-api.cn-north-1.example.cn/prod"
        );
    }
}
