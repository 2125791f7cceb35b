//! An IAM role with its one inline policy (the functions' and the schedule's).

use std::collections::BTreeSet;

use serde::Serialize;
use serde_json::{Value, json};

use crate::apply::{Applier, typed};
use crate::cloudformation::{cfn, tag_list};
use crate::errors::{describe, is_already_there, is_not_found};
use crate::kinds::Properties;
use crate::observe::{ObserveError, Reader, decode_policy, our_tags, read_error};
use crate::stack::{INLINE_POLICY, Resource};

use super::Tags;

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Role {
    /// The trust policy document.
    pub assume_role_policy: Value,
    /// The inline policy document (`chatctl`), or null when the role has none.
    pub inline_policy: Value,
    pub tags: Tags,
}

// --- observe ------------------------------------------------------------------------------

pub(crate) async fn read_role(r: &Reader<'_>, name: &str) -> Result<(), ObserveError> {
    let role = match r.clients.iam.get_role().role_name(name).send().await {
        Ok(out) => out.role,
        Err(e) if is_not_found(&e) => {
            return Ok(());
        }
        Err(e) => return Err(read_error(format!("role {name}"), e)),
    };
    let Some(role) = role else { return Ok(()) };
    let policy = match r
        .clients
        .iam
        .get_role_policy()
        .role_name(name)
        .policy_name(crate::stack::INLINE_POLICY)
        .send()
        .await
    {
        Ok(out) => decode_policy(out.policy_document()),
        Err(e) if is_not_found(&e) => Value::Null,
        Err(e) => return Err(read_error(format!("policy of role {name}"), e)),
    };
    r.put(
        name,
        Role {
            assume_role_policy: role
                .assume_role_policy_document()
                .map_or(Value::Null, decode_policy),
            inline_policy: policy,
            tags: our_tags(role.tags().iter().map(|t| (t.key(), t.value()))),
        },
    );
    Ok(())
}

// --- apply --------------------------------------------------------------------------------

impl Applier<'_> {
    pub(crate) async fn create_role(&self, r: &Resource) -> Result<(), String> {
        let iam = &self.clients.iam;
        match iam
            .create_role()
            .role_name(&r.name)
            .assume_role_policy_document(typed(r, Properties::role)?.assume_role_policy.to_string())
            .description(crate::stack::role_description(&self.name))
            .send()
            .await
        {
            Ok(_) => {}
            Err(e) if is_already_there(&e) => {}
            Err(e) => return Err(describe(e)),
        }
        self.put_role_policy(r).await?;
        self.retag(r, None).await
    }

    pub(crate) async fn put_role_policy(&self, r: &Resource) -> Result<(), String> {
        self.clients
            .iam
            .put_role_policy()
            .role_name(&r.name)
            .policy_name(INLINE_POLICY)
            .policy_document(typed(r, Properties::role)?.inline_policy.to_string())
            .send()
            .await
            .map_err(describe)?;
        Ok(())
    }

    pub(crate) async fn update_role(
        &self,
        r: &Resource,
        changed: &BTreeSet<&str>,
    ) -> Result<(), String> {
        if changed.contains("assumeRolePolicy") {
            self.clients
                .iam
                .update_assume_role_policy()
                .role_name(&r.name)
                .policy_document(typed(r, Properties::role)?.assume_role_policy.to_string())
                .send()
                .await
                .map_err(describe)?;
        }
        if changed.contains("inlinePolicy") {
            self.put_role_policy(r).await?;
        }
        Ok(())
    }
}

// --- CloudFormation ---------------------------------------------------------------------------

impl Role {
    pub(crate) fn cloudformation(&self, name: &str, description: &str) -> Value {
        let Role {
            assume_role_policy,
            inline_policy,
            tags,
        } = self;
        cfn(
            "AWS::IAM::Role",
            json!({
                "RoleName": name,
                "Description": description,
                "AssumeRolePolicyDocument": assume_role_policy,
                "Policies": [{ "PolicyName": INLINE_POLICY, "PolicyDocument": inline_policy }],
                "Tags": tag_list(tags),
            }),
        )
    }
}
