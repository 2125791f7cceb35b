//! The SSM parameter holding the stage's token secret (its value is never compared).

use serde::Serialize;

use crate::apply::Applier;
use crate::errors::is_not_found;
use crate::observe::{ObserveError, Reader, our_tags, read_error};
use crate::stack::Resource;

use super::Tags;

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Parameter {
    /// `SecureString`; a change replaces the parameter.
    pub r#type: Option<String>,
    pub tags: Tags,
}

// --- observe ------------------------------------------------------------------------------

pub(crate) async fn read_parameter(r: &Reader<'_>, name: &str) -> Result<(), ObserveError> {
    let parameter = match r.clients.ssm.get_parameter().name(name).send().await {
        Ok(out) => out.parameter,
        Err(e) if is_not_found(&e) => {
            return Ok(());
        }
        Err(e) => return Err(read_error(format!("parameter {name}"), e)),
    };
    let kind = parameter
        .and_then(|p| p.r#type)
        .map(|t| t.as_str().to_owned());
    let tags = r
        .clients
        .ssm
        .list_tags_for_resource()
        .resource_type(aws_sdk_ssm::types::ResourceTypeForTagging::Parameter)
        .resource_id(name)
        .send()
        .await
        .map_err(|e| read_error(format!("tags of parameter {name}"), e))?
        .tag_list
        .unwrap_or_default();
    r.put(
        name,
        Parameter {
            r#type: kind,
            tags: our_tags(tags.iter().map(|t| (t.key(), t.value()))),
        },
    );
    Ok(())
}

// --- apply --------------------------------------------------------------------------------

impl Applier<'_> {
    pub(crate) async fn create_parameter(&self, r: &Resource) -> Result<(), String> {
        chat_aws::secret::ensure(&self.clients.ssm, &r.name)
            .await
            .map_err(|e| e.to_string())?;
        self.retag(r, None).await
    }
}
