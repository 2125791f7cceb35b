//! The WebSocket API and its parts: the Lambda integration, the routes, the stage.

use serde::Serialize;
use serde_json::{Value, json};

use crate::apply::{Applier, tag_map, text, typed};
use crate::cloudformation::cfn;
use crate::errors::{describe, is_conflict, is_not_found};
use crate::kinds::Properties;
use crate::observe::Clients;
use crate::observe::{ObserveError, Reader, our_tags, read_error};
use crate::stack::{Kind, Resource};

use super::Tags;

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Api {
    /// `WEBSOCKET`; a change replaces the API.
    pub protocol: Option<String>,
    pub route_selection_expression: Option<String>,
    pub tags: Tags,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Integration {
    /// `AWS_PROXY`.
    pub r#type: Option<String>,
    /// The Lambda invocation URI of the ws function.
    pub uri: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Route {
    /// `integrations/{integration name}`: the model names the integration, not its id.
    pub target: String,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Stage {
    pub auto_deploy: bool,
    pub throttle_rate: Option<f64>,
    pub throttle_burst: Option<i64>,
    pub tags: Tags,
}

// --- observe ------------------------------------------------------------------------------

/// The name under which an extra copy of a resource is observed: a create whose response was lost
/// and that was retried can leave two APIs (or integrations) behind. They plan as deletions.
pub fn duplicate_name(name: &str, id: &str) -> String {
    format!("{name} (duplicate {id})")
}

pub(crate) async fn list_apis(
    r: &Reader<'_>,
    name: &str,
) -> Result<Vec<aws_sdk_apigatewayv2::types::Api>, ObserveError> {
    websocket_apis_named(r.clients, name)
        .await
        .map_err(|e| read_error("WebSocket APIs", e))
}

/// Every WebSocket API named `name`, over all pages. Name and protocol: an HTTP API that happens
/// to share the name is not ours to adopt or, worse, to destroy.
async fn websocket_apis_named(
    clients: &Clients,
    name: &str,
) -> Result<
    Vec<aws_sdk_apigatewayv2::types::Api>,
    aws_sdk_apigatewayv2::error::SdkError<aws_sdk_apigatewayv2::operation::get_apis::GetApisError>,
> {
    let mut apis = Vec::new();
    let mut token = None;
    loop {
        let page = clients
            .apigw()
            .await
            .get_apis()
            .set_next_token(token)
            .send()
            .await?;
        apis.extend(page.items.unwrap_or_default().into_iter().filter(|a| {
            a.name() == Some(name)
                && a.protocol_type() == Some(&aws_sdk_apigatewayv2::types::ProtocolType::Websocket)
        }));
        token = page.next_token.filter(|t| !t.is_empty());
        if token.is_none() {
            return Ok(apis);
        }
    }
}

pub(crate) async fn has_stage(
    r: &Reader<'_>,
    api_id: &str,
    stage: &str,
) -> Result<bool, ObserveError> {
    match r
        .clients
        .apigw()
        .await
        .get_stage()
        .api_id(api_id)
        .stage_name(stage)
        .send()
        .await
    {
        Ok(_) => Ok(true),
        Err(e) if is_not_found(&e) => Ok(false),
        Err(e) => Err(read_error(format!("stage {stage} of API {api_id}"), e)),
    }
}

/// The API named `name`, and any duplicates of it. With duplicates, the one that serves the stage
/// is kept, else the oldest.
pub(crate) async fn primary_api(
    r: &Reader<'_>,
    name: &str,
    stage: &str,
) -> Result<
    (
        Option<aws_sdk_apigatewayv2::types::Api>,
        Vec<aws_sdk_apigatewayv2::types::Api>,
    ),
    ObserveError,
> {
    let mut apis = list_apis(r, name).await?;
    if apis.is_empty() {
        return Ok((None, apis));
    }
    apis.sort_by(|a, b| (a.created_date(), a.api_id()).cmp(&(b.created_date(), b.api_id())));
    let mut primary = 0;
    if apis.len() > 1 {
        for (i, api) in apis.iter().enumerate() {
            if has_stage(r, api.api_id().unwrap_or_default(), stage).await? {
                primary = i;
                break;
            }
        }
    }
    let api = apis.swap_remove(primary);
    Ok((Some(api), apis))
}

/// The API, its integration, routes and stage; returns the API id when it exists.
/// The primary API's id and `ApiEndpoint`, and everything under it.
pub(crate) async fn read_api(
    r: &Reader<'_>,
    name: &str,
    stage: &str,
) -> Result<Option<(String, Option<String>)>, ObserveError> {
    let (api, extras) = primary_api(r, name, stage).await?;
    let Some(api) = api else {
        return Ok(None);
    };
    for extra in &extras {
        if let Some(id) = extra.api_id() {
            let key = duplicate_name(name, id);
            // Planned as a deletion: only that it exists matters.
            r.put(
                &key,
                Api {
                    protocol: extra.protocol_type().map(|p| p.as_str().to_owned()),
                    route_selection_expression: extra
                        .route_selection_expression()
                        .map(str::to_owned),
                    tags: our_tags(
                        extra
                            .tags()
                            .into_iter()
                            .flatten()
                            .map(|(k, v)| (k.as_str(), v.as_str())),
                    ),
                },
            );
            r.id(Kind::Api, &key, id);
        }
    }
    let Some(api_id) = api.api_id().map(str::to_owned) else {
        return Ok(None);
    };
    r.id(Kind::Api, name, &api_id);
    let tags = api.tags().cloned().unwrap_or_default();
    r.put(
        name,
        Api {
            protocol: api.protocol_type().map(|p| p.as_str().to_owned()),
            route_selection_expression: api.route_selection_expression().map(str::to_owned),
            tags: our_tags(tags.iter().map(|(k, v)| (k.as_str(), v.as_str()))),
        },
    );
    let integrations = r
        .clients
        .apigw()
        .await
        .get_integrations()
        .api_id(&api_id)
        .send()
        .await
        .map_err(|e| read_error(format!("integrations of {name}"), e))?
        .items
        .unwrap_or_default();
    let routes = list_routes(r, name, &api_id).await?;
    // The model has one integration. With more (a retried create), keep the one most routes use.
    let uses = |id: Option<&str>| {
        routes
            .iter()
            .filter(|route| {
                id.is_some_and(|id| route.target() == Some(&format!("integrations/{id}")))
            })
            .count()
    };
    let integration_id = integrations
        .iter()
        .max_by_key(|i| {
            (
                uses(i.integration_id()),
                std::cmp::Reverse(i.integration_id()),
            )
        })
        .and_then(|i| i.integration_id().map(str::to_owned));
    let integration_name = format!("{name}/ws");
    for i in &integrations {
        let Some(id) = i.integration_id() else {
            continue;
        };
        let integration = Integration {
            r#type: i.integration_type().map(|t| t.as_str().to_owned()),
            uri: i.integration_uri().map(str::to_owned),
        };
        if Some(id) == integration_id.as_deref() {
            r.id(Kind::Integration, &integration_name, id);
            r.put(&integration_name, integration);
        } else {
            let key = duplicate_name(&integration_name, id);
            r.id(Kind::Integration, &key, id);
            r.put(&key, integration);
        }
    }
    // Every route of the API is observed: ones the model no longer has plan as deletions.
    for route in routes {
        let (Some(key), Some(route_id)) = (route.route_key(), route.route_id()) else {
            continue;
        };
        // The model names the integration symbolically; map our integration's id back to it.
        let target = match (route.target(), &integration_id) {
            (Some(t), Some(id)) if t == format!("integrations/{id}") => {
                format!("integrations/{integration_name}")
            }
            (Some(t), _) => t.to_owned(),
            (None, _) => String::new(),
        };
        let route_name = format!("{name}/{key}");
        r.id(Kind::Route, &route_name, route_id);
        r.put(&route_name, Route { target });
    }
    match r
        .clients
        .apigw()
        .await
        .get_stage()
        .api_id(&api_id)
        .stage_name(stage)
        .send()
        .await
    {
        Ok(s) => {
            let settings = s.default_route_settings();
            let tags = s.tags().cloned().unwrap_or_default();
            let stage_name = format!("{name}/{stage}");
            r.id(Kind::Stage, &stage_name, stage);
            r.put(
                &stage_name,
                Stage {
                    auto_deploy: s.auto_deploy().unwrap_or(false),
                    throttle_rate: settings.and_then(|s| s.throttling_rate_limit()),
                    throttle_burst: settings
                        .and_then(|s| s.throttling_burst_limit())
                        .map(i64::from),
                    tags: our_tags(tags.iter().map(|(k, v)| (k.as_str(), v.as_str()))),
                },
            );
        }
        Err(e) if is_not_found(&e) => {}
        Err(e) => return Err(read_error(format!("stage {stage} of {name}"), e)),
    }
    Ok(Some((api_id, api.api_endpoint().map(str::to_owned))))
}

pub(crate) async fn list_routes(
    r: &Reader<'_>,
    name: &str,
    api_id: &str,
) -> Result<Vec<aws_sdk_apigatewayv2::types::Route>, ObserveError> {
    all_routes(r.clients, api_id)
        .await
        .map_err(|e| read_error(format!("routes of {name}"), e))
}

/// Every route of the API, through every page of GetRoutes (observe reads them; apply looks
/// one up by key after a conflict).
pub(crate) async fn all_routes(
    clients: &Clients,
    api_id: &str,
) -> Result<
    Vec<aws_sdk_apigatewayv2::types::Route>,
    aws_sdk_apigatewayv2::error::SdkError<
        aws_sdk_apigatewayv2::operation::get_routes::GetRoutesError,
    >,
> {
    let mut routes = Vec::new();
    let mut token = None;
    loop {
        let page = clients
            .apigw()
            .await
            .get_routes()
            .api_id(api_id)
            .set_next_token(token)
            .send()
            .await?;
        routes.extend(page.items.unwrap_or_default());
        token = page.next_token.filter(|t| !t.is_empty());
        if token.is_none() {
            return Ok(routes);
        }
    }
}

// --- apply --------------------------------------------------------------------------------

impl Applier<'_> {
    pub(crate) async fn create_api(&self, r: &Resource) -> Result<(), String> {
        let out = self
            .clients
            .apigw()
            .await
            .create_api()
            .name(&r.name)
            .protocol_type(aws_sdk_apigatewayv2::types::ProtocolType::Websocket)
            .route_selection_expression(text(
                &typed(r, Properties::api)?.route_selection_expression,
            ))
            .set_tags(Some(tag_map(r)))
            .send()
            .await
            .map_err(describe)?;
        let id = out.api_id.ok_or("CreateApi returned no id")?;
        self.remove_lost_apis(&r.name, &id).await?;
        let mut known = self.known();
        known.ids.insert((Kind::Api, r.name.clone()), id.clone());
        known.env.api_id = Some(id);
        // The host clients and the fan-out use, as AWS states it for this partition.
        known.env.api_endpoint = out.api_endpoint;
        Ok(())
    }

    /// CreateApi is not idempotent: when the SDK retried a create whose first answer was lost,
    /// a second API of this name exists that nothing knows of. Such an API is empty (no route,
    /// no integration, no stage); each empty namesake tagged for this stage goes now, so a
    /// converged deploy leaves one API. One that has anything in it is left to the plan, which
    /// shows it as `(duplicate …)`.
    async fn remove_lost_apis(&self, name: &str, kept: &str) -> Result<(), String> {
        let stage = self.name.stage.as_str();
        let apis = websocket_apis_named(self.clients, name)
            .await
            .map_err(describe)?;
        for api in apis {
            let Some(id) = api.api_id().filter(|id| *id != kept) else {
                continue;
            };
            let ours = api
                .tags()
                .is_some_and(|t| t.get("chatctl:stage").map(String::as_str) == Some(stage));
            if !ours || !self.api_is_empty(id).await? {
                continue;
            }
            match self
                .clients
                .apigw()
                .await
                .delete_api()
                .api_id(id)
                .send()
                .await
            {
                Ok(_) => {}
                Err(e) if is_not_found(&e) => {}
                Err(e) => return Err(describe(e)),
            }
        }
        Ok(())
    }

    async fn api_is_empty(&self, api_id: &str) -> Result<bool, String> {
        let apigw = || self.clients.apigw();
        let routes = apigw().await.get_routes().api_id(api_id).send().await;
        let integrations = apigw().await.get_integrations().api_id(api_id).send().await;
        let stages = apigw().await.get_stages().api_id(api_id).send().await;
        Ok(routes.map_err(describe)?.items().is_empty()
            && integrations.map_err(describe)?.items().is_empty()
            && stages.map_err(describe)?.items().is_empty())
    }

    pub(crate) fn integration_name(&self) -> String {
        format!("{}/ws", self.name.names().api())
    }

    pub(crate) fn route_target(&self) -> Result<String, String> {
        let id = self
            .id(Kind::Integration, &self.integration_name())
            .ok_or("the integration does not exist yet")?;
        Ok(format!("integrations/{id}"))
    }

    pub(crate) async fn create_integration(&self, r: &Resource) -> Result<(), String> {
        let out = self
            .clients
            .apigw()
            .await
            .create_integration()
            .api_id(self.api_id()?)
            .integration_type(aws_sdk_apigatewayv2::types::IntegrationType::AwsProxy)
            .integration_method("POST")
            .integration_uri(text(&typed(r, Properties::integration)?.uri))
            .send()
            .await
            .map_err(describe)?;
        let id = out
            .integration_id
            .ok_or("CreateIntegration returned no id")?;
        self.remove_lost_integrations(&id, out.integration_uri.as_deref())
            .await?;
        self.known()
            .ids
            .insert((Kind::Integration, r.name.clone()), id);
        Ok(())
    }

    /// CreateIntegration is not idempotent and integrations have no unique key: when the SDK
    /// retried a create whose first answer was lost, the API has a second integration to the
    /// same function that nothing knows of. Each one that no route uses goes now, so a
    /// converged deploy leaves exactly one (the next plan would otherwise delete it).
    async fn remove_lost_integrations(&self, kept: &str, uri: Option<&str>) -> Result<(), String> {
        let api_id = self.api_id()?;
        let integrations = self
            .clients
            .apigw()
            .await
            .get_integrations()
            .api_id(&api_id)
            .send()
            .await
            .map_err(describe)?
            .items
            .unwrap_or_default();
        let lost: Vec<String> = integrations
            .iter()
            .filter(|i| i.integration_id() != Some(kept) && i.integration_uri() == uri)
            .filter_map(|i| i.integration_id().map(str::to_owned))
            .collect();
        if lost.is_empty() {
            return Ok(());
        }
        let routes = self
            .clients
            .apigw()
            .await
            .get_routes()
            .api_id(&api_id)
            .send()
            .await
            .map_err(describe)?
            .items
            .unwrap_or_default();
        for id in lost {
            let target = format!("integrations/{id}");
            if routes.iter().any(|r| r.target() == Some(target.as_str())) {
                continue;
            }
            match self
                .clients
                .apigw()
                .await
                .delete_integration()
                .api_id(&api_id)
                .integration_id(&id)
                .send()
                .await
            {
                Ok(_) => {}
                Err(e) if is_not_found(&e) => {}
                Err(e) => return Err(describe(e)),
            }
        }
        Ok(())
    }

    pub(crate) async fn create_route(&self, r: &Resource) -> Result<(), String> {
        let key = r
            .name
            .strip_prefix(&format!("{}/", self.name.names().api()))
            .ok_or("route name without its API")?;
        let api_id = self.api_id()?;
        let target = self.route_target()?;
        let created = self
            .clients
            .apigw()
            .await
            .create_route()
            .api_id(&api_id)
            .route_key(key)
            .target(&target)
            .send()
            .await;
        let id = match created {
            Ok(out) => out.route_id.ok_or("CreateRoute returned no id")?,
            // CreateRoute is not idempotent: when the SDK retries a call whose first attempt
            // created the route (a timeout, a 5xx on the way back), or an interrupted run left
            // it, AWS answers ConflictException. The route with this key is then ours to adopt.
            Err(e) if is_conflict(&e) => {
                self.route_id_by_key(&api_id, key).await?.ok_or_else(|| {
                    format!(
                        "CreateRoute {key}: {}; and no route with that key exists",
                        describe(e)
                    )
                })?
            }
            Err(e) => return Err(describe(e)),
        };
        self.known().ids.insert((Kind::Route, r.name.clone()), id);
        Ok(())
    }

    /// The id of the API's route with `key`.
    pub(crate) async fn route_id_by_key(
        &self,
        api_id: &str,
        key: &str,
    ) -> Result<Option<String>, String> {
        let routes = all_routes(self.clients, api_id).await.map_err(describe)?;
        Ok(routes
            .into_iter()
            .find(|r| r.route_key() == Some(key))
            .and_then(|r| r.route_id))
    }

    pub(crate) fn route_settings(&self) -> aws_sdk_apigatewayv2::types::RouteSettings {
        aws_sdk_apigatewayv2::types::RouteSettings::builder()
            .throttling_rate_limit(self.settings.throttle_rate)
            .throttling_burst_limit(i32::try_from(self.settings.throttle_burst).unwrap_or(i32::MAX))
            .build()
    }

    pub(crate) async fn create_stage(&self, r: &Resource) -> Result<(), String> {
        // Auto-deploy: every later route or integration change goes live without a deployment.
        match self
            .clients
            .apigw()
            .await
            .create_stage()
            .api_id(self.api_id()?)
            .stage_name(&self.name.stage)
            .auto_deploy(true)
            .default_route_settings(self.route_settings())
            .set_tags(Some(tag_map(r)))
            .send()
            .await
        {
            Ok(_) => {}
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_conflict_exception()) => {}
            Err(e) => return Err(describe(e)),
        }
        self.known()
            .ids
            .insert((Kind::Stage, r.name.clone()), self.name.stage.clone());
        Ok(())
    }
}

// --- CloudFormation ---------------------------------------------------------------------------

impl Api {
    pub(crate) fn cloudformation(&self, name: &str) -> Value {
        let Api {
            protocol,
            route_selection_expression,
            tags,
        } = self;
        cfn(
            "AWS::ApiGatewayV2::Api",
            json!({
                "Name": name,
                "ProtocolType": protocol,
                "RouteSelectionExpression": route_selection_expression,
                // API Gateway v2 takes tags as a plain map.
                "Tags": tags,
            }),
        )
    }
}

impl Integration {
    /// `api_id`: the API's logical id.
    pub(crate) fn cloudformation(&self, api_id: &str) -> Value {
        let Integration { r#type, uri } = self;
        cfn(
            "AWS::ApiGatewayV2::Integration",
            json!({
                "ApiId": { "Ref": api_id },
                "IntegrationType": r#type,
                // Lambda proxy integrations are always invoked with POST.
                "IntegrationMethod": "POST",
                "IntegrationUri": uri,
            }),
        )
    }
}

impl Route {
    /// `integration_id`: the logical id of the integration the target names.
    pub(crate) fn cloudformation(
        &self,
        api_id: &str,
        route_key: &str,
        integration_id: &str,
    ) -> Value {
        let Route { target: _ } = self;
        cfn(
            "AWS::ApiGatewayV2::Route",
            json!({
                "ApiId": { "Ref": api_id },
                "RouteKey": route_key,
                "Target": format!("integrations/${{{integration_id}}}"),
            }),
        )
    }

    /// The integration's model name in `target` (`integrations/{name}`).
    pub(crate) fn integration(&self) -> Option<&str> {
        self.target.strip_prefix("integrations/")
    }
}

impl Stage {
    pub(crate) fn cloudformation(&self, api_id: &str, stage: &str) -> Value {
        let Stage {
            auto_deploy,
            throttle_rate,
            throttle_burst,
            tags,
        } = self;
        cfn(
            "AWS::ApiGatewayV2::Stage",
            json!({
                "ApiId": { "Ref": api_id },
                "StageName": stage,
                "AutoDeploy": auto_deploy,
                "DefaultRouteSettings": {
                    "ThrottlingRateLimit": throttle_rate,
                    "ThrottlingBurstLimit": throttle_burst,
                },
                "Tags": tags,
            }),
        )
    }
}
