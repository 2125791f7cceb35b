//! Test support: clients answered from recorded AWS responses (`aws-smithy-mocks`), for what
//! moto cannot show (throttles, waits, failures, AWS's own answers where moto's differ).

use aws_config::SdkConfig;
use aws_sdk_dynamodb::config::{BehaviorVersion, Credentials, Region, SharedCredentialsProvider};
use aws_smithy_mocks::{MockResponseInterceptor, Rule, RuleMode, create_mock_http_client};

use crate::observe::Clients;

/// Clients whose calls are answered from `rules` only: a call no rule matches fails the test.
/// Every service the tests mock gets the same rules; a rule matches its own operation.
pub(crate) fn mocked_clients(rules: &[&Rule]) -> Clients {
    let config = SdkConfig::builder()
        .region(Region::new("eu-west-1"))
        .behavior_version(BehaviorVersion::latest())
        .credentials_provider(SharedCredentialsProvider::new(Credentials::new(
            "AKID", "secret", None, None, "test",
        )))
        .http_client(create_mock_http_client())
        .build();
    let interceptor = || {
        rules.iter().fold(
            MockResponseInterceptor::new().rule_mode(RuleMode::MatchAny),
            |interceptor, rule| interceptor.with_rule(rule),
        )
    };
    macro_rules! mocked {
        ($sdk:ident) => {
            $sdk::Client::from_conf(
                $sdk::config::Builder::from(&config)
                    .interceptor(interceptor())
                    .build(),
            )
        };
    }
    let mut clients = Clients::new(&config);
    clients.dynamodb = mocked!(aws_sdk_dynamodb);
    clients.sqs = mocked!(aws_sdk_sqs);
    clients.lambda = mocked!(aws_sdk_lambda);
    clients.apigw = mocked!(aws_sdk_apigatewayv2);
    clients.cloudformation = mocked!(aws_sdk_cloudformation);
    clients
}
