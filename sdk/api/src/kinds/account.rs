//! ServiceAccount: an identity pods run as, and tokens can be made for.
//! Its one grant is a role in its own namespace; without one, a token of
//! the account authenticates and may do nothing.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::Object;
use crate::validate::Validator;

pub type ServiceAccount = Object<ServiceAccountSpec, ServiceAccountStatus>;

/// The account every namespace has, and pods run as unless they name
/// another.
pub const DEFAULT_SERVICE_ACCOUNT: &str = "default";

/// Roles an account may hold in its namespace, weakest first.
pub const ROLES: [&str; 3] = ["view", "edit", "admin"];

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServiceAccountSpec {
    /// `view`, `edit` or `admin` in the account's namespace; none when
    /// absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("enum" = ROLES))]
    pub role: Option<String>,
}

/// A ServiceAccount has no status: nothing is observed of it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ServiceAccountStatus {}

impl ServiceAccountSpec {
    pub fn validate(&self, v: &mut Validator) {
        if let Some(role) = &self.role
            && !ROLES.contains(&role.as_str())
        {
            v.error(
                "spec.role",
                format!("must be view, edit or admin, not `{role}`"),
            );
        }
    }
}
