//! The stage's token secret in SSM Parameter Store (on moto): created once and never replaced,
//! read by the WebSocket handler at start, so tokens minted with it open connections.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use chat_aws::lambda::{Settings, TokenSecret};
use chat_core::ConnectParams;
use chat_core::domain::{ConnectionId, UserName};
use chat_core::token::Claims;
use chatctl_e2e::moto::{Moto, unique};

#[tokio::test]
async fn the_secret_is_created_once_and_read_back() {
    let config = Moto::shared().sdk_config();
    let ssm = aws_sdk_ssm::Client::new(&config);
    let name = chat_aws::secret::parameter_name("chat", &unique("s"));
    let missing = chat_aws::secret::load(&ssm, &name).await.unwrap_err();
    assert!(missing.0.contains("deploy the stage first"), "{missing}");

    assert!(chat_aws::secret::ensure(&ssm, &name).await.unwrap());
    let key = chat_aws::secret::load(&ssm, &name).await.unwrap();
    assert!(
        !chat_aws::secret::ensure(&ssm, &name).await.unwrap(),
        "an existing secret is kept"
    );
    let again = chat_aws::secret::load(&ssm, &name).await.unwrap();
    let claims = Claims {
        sub: UserName::parse("ann").unwrap(),
        exp: 4_000_000_000,
        iat: 0,
        rooms: None,
        op: false,
    };
    assert_eq!(
        again.verify(&key.mint(&claims), 1).unwrap(),
        claims,
        "the same secret both times"
    );

    let stored = ssm
        .get_parameter()
        .name(&name)
        .send()
        .await
        .unwrap()
        .parameter
        .unwrap();
    assert_eq!(
        stored.r#type,
        Some(aws_sdk_ssm::types::ParameterType::SecureString)
    );

    // The handler's settings name the parameter; the service reads it and accepts its tokens.
    let (tables, topic) = chatctl_e2e::moto::fresh_stage(&config, "chat").await;
    let settings = Settings::from_vars(|var| {
        Some(match var {
            "CHAT_MESSAGES_TABLE" => tables.messages.clone(),
            "CHAT_CONNECTIONS_TABLE" => tables.connections.clone(),
            "CHAT_TOPIC_ARN" => topic.clone(),
            "CHAT_MANAGEMENT_ENDPOINT" => "http://127.0.0.1:9/x".to_owned(),
            "CHAT_TOKEN_SECRET_PARAMETER" => name.clone(),
            _ => return None,
        })
    })
    .unwrap();
    assert!(matches!(
        settings.token_secret,
        Some(TokenSecret::Parameter(_))
    ));
    let chat = chat_aws::lambda::service(&settings, &config).await.unwrap();
    let params = ConnectParams {
        room: Some("lobby".into()),
        token: Some(key.mint(&claims)),
        user: None,
    };
    let connection = chat
        .connect(ConnectionId::new("c1"), &params)
        .await
        .unwrap();
    assert_eq!(connection.user.as_str(), "ann");
}
