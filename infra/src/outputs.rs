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
    /// Where clients connect: `wss://{api}.execute-api.{region}.amazonaws.com/{stage}`.
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
    let api_id = env.api_id.as_deref()?;
    let host = format!("{api_id}.execute-api.{}.amazonaws.com", env.region);
    let tables = name.tables();
    Some(Outputs {
        app: name.app.clone(),
        stage: name.stage.clone(),
        region: env.region.clone(),
        websocket_url: format!("wss://{host}/{}", name.stage),
        management_endpoint: format!("https://{host}/{}", name.stage),
        messages_table: tables.messages,
        connections_table: tables.connections,
        topic_arn: format!(
            "arn:aws:sns:{}:{}:{}-events",
            env.region,
            env.account_id,
            name.prefix()
        ),
        token_secret_parameter: chat_aws::secret::parameter_name(&name.app, &name.stage),
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
        let mut env = Environment {
            account_id: "123456789012".into(),
            region: "eu-west-1".into(),
            api_id: None,
        };
        assert!(outputs(&name, &env).is_none());
        env.api_id = Some("a1b2c3d4e5".into());
        let out = outputs(&name, &env).unwrap();
        assert_eq!(
            out.websocket_url,
            "wss://a1b2c3d4e5.execute-api.eu-west-1.amazonaws.com/prod"
        );
        insta::assert_snapshot!(out.to_string());
    }
}
