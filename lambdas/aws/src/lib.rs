//! `chat-aws`: the ports of `chat-core` on AWS. DynamoDB holds messages (with every version) and
//! connections, SNS carries room events to the fan-out, and the API Gateway Management API posts
//! to connections. Clients are built by the caller and injected, so tests point them at moto.

pub mod connections;
pub mod errors;
pub mod items;
pub mod lambda;
pub mod management;
pub mod messages;
pub mod secret;
pub mod sns;
pub mod tables;

pub use connections::DynamoConnectionStore;
pub use management::ManagementSender;
pub use messages::DynamoMessageStore;
pub use sns::SnsTopic;
pub use tables::TableNames;

/// Load the AWS configuration the usual way (environment, profile, SSO …), optionally against an
/// emulator's endpoint.
pub async fn load_config(
    region: Option<String>,
    endpoint_url: Option<String>,
) -> aws_config::SdkConfig {
    let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest());
    if let Some(region) = region {
        loader = loader.region(aws_config::Region::new(region));
    }
    if let Some(url) = endpoint_url {
        loader = loader.endpoint_url(url);
    }
    loader.load().await
}
