//! Who may do what: roles, role bindings, and the rule that turns a caller's bindings into
//! the role they hold somewhere.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::names::check_name;
use crate::validation::{ValidationError, Violations};

/// A role, from least to most: each includes everything the ones below it may do.
///
/// - `viewer`: read the app, its environments, deployments and events;
/// - `deployer`: request deployments and send promote, pause, resume, abort, rollback, retry;
/// - `approver`: also approve;
/// - `admin`: also change the app and its environments and manage its role bindings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Viewer,
    Deployer,
    Approver,
    Admin,
}

impl Role {
    pub const ALL: [Role; 4] = [Role::Viewer, Role::Deployer, Role::Approver, Role::Admin];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Viewer => "viewer",
            Self::Deployer => "deployer",
            Self::Approver => "approver",
            Self::Admin => "admin",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| format!("{s:?} is not a role (viewer, deployer, approver, admin)"))
    }
}

/// Longest subject or group name a binding takes.
pub const MAX_PRINCIPAL_LEN: usize = 256;

/// The schema of a binding's subject or group in the API's description: what
/// [`NewRoleBinding::validate`] accepts (1-256 bytes, not blank, no control characters).
#[cfg(feature = "openapi")]
pub fn principal_schema() -> utoipa::openapi::Object {
    use utoipa::openapi::schema::{ObjectBuilder, Type};
    const CONTROL: &str = "\\u0000-\\u001f\\u007f-\\u009f";
    ObjectBuilder::new()
        .schema_type(Type::String)
        .min_length(Some(1))
        .max_length(Some(MAX_PRINCIPAL_LEN))
        .pattern(Some(format!("^[^{CONTROL}]*[^\\s{CONTROL}][^{CONTROL}]*$")))
        .build()
}

/// The body of `POST /v1/apps/{app}/role-bindings`: exactly one of `subject` and `group`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct NewRoleBinding {
    /// A token's `sub`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(schema_with = principal_schema))]
    pub subject: Option<String>,
    /// One of a token's `groups`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(schema_with = principal_schema))]
    pub group: Option<String>,
    pub role: Role,
    /// Only this environment of the app; every environment when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(schema_with = crate::names::name_schema))]
    pub environment: Option<String>,
}

impl NewRoleBinding {
    pub fn validate(&self) -> Result<(), ValidationError> {
        let mut v = Violations::new();
        match (&self.subject, &self.group) {
            (Some(_), Some(_)) => v.add("/group", "give either subject or group, not both"),
            (None, None) => v.add("/subject", "give a subject or a group"),
            _ => {}
        }
        for (pointer, value) in [("/subject", &self.subject), ("/group", &self.group)] {
            if let Some(value) = value {
                if value.trim().is_empty() {
                    v.add(pointer, "must not be empty");
                } else if value.len() > MAX_PRINCIPAL_LEN {
                    v.add(
                        pointer,
                        format!("must be at most {MAX_PRINCIPAL_LEN} bytes"),
                    );
                } else if value.chars().any(char::is_control) {
                    v.add(pointer, "must not contain control characters");
                }
            }
        }
        if let Some(env) = &self.environment {
            check_name(&mut v, "/environment", env);
        }
        v.into_result()
    }
}

/// A stored role binding.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RoleBinding {
    pub id: Uuid,
    pub app: String,
    /// Null: every environment of the app.
    pub environment: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    pub role: Role,
    pub created_by: String,
    pub created_at: DateTime<Utc>,
}

/// What a caller may do in one place, from the bindings that name them in an app.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// No binding in the app at all: it does not exist for them (404, not 403).
    Hidden,
    /// Some binding in the app, but not `role` here (403).
    Below,
    /// The role is held.
    Granted,
}

/// Decides `role` in `environment` (or app-wide when `None`) from the caller's bindings in
/// the app, each `(role, environment it is limited to)`.
///
/// A binding without an environment counts everywhere in the app; one limited to an
/// environment counts only there. Any binding makes the app visible, so `viewer` app-wide is
/// granted by a binding in any of its environments (its holder may read the app and its
/// environment list).
pub fn decide(
    bindings: &[(Role, Option<String>)],
    environment: Option<&str>,
    role: Role,
) -> Access {
    if bindings.is_empty() {
        return Access::Hidden;
    }
    if role == Role::Viewer && environment.is_none() {
        return Access::Granted;
    }
    let held = bindings
        .iter()
        .filter(|(_, only)| match (only, environment) {
            (None, _) => true,
            (Some(only), Some(env)) => only == env,
            (Some(_), None) => false,
        })
        .map(|(role, _)| *role)
        .max();
    match held {
        Some(held) if held >= role => Access::Granted,
        _ => Access::Below,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(role: Role, env: Option<&str>) -> (Role, Option<String>) {
        (role, env.map(str::to_owned))
    }

    #[test]
    fn roles_are_ordered() {
        assert!(Role::Viewer < Role::Deployer);
        assert!(Role::Deployer < Role::Approver);
        assert!(Role::Approver < Role::Admin);
        assert_eq!("approver".parse::<Role>(), Ok(Role::Approver));
        assert!("root".parse::<Role>().is_err());
    }

    #[test]
    fn no_binding_hides_the_app() {
        assert_eq!(decide(&[], Some("prod"), Role::Viewer), Access::Hidden);
        assert_eq!(decide(&[], None, Role::Viewer), Access::Hidden);
    }

    #[test]
    fn environment_bindings_count_only_there() {
        let bindings = [b(Role::Deployer, Some("staging")), b(Role::Viewer, None)];
        assert_eq!(
            decide(&bindings, Some("staging"), Role::Deployer),
            Access::Granted
        );
        assert_eq!(
            decide(&bindings, Some("prod"), Role::Deployer),
            Access::Below
        );
        assert_eq!(
            decide(&bindings, Some("prod"), Role::Viewer),
            Access::Granted
        );
        assert_eq!(decide(&bindings, None, Role::Deployer), Access::Below);
    }

    #[test]
    fn any_binding_shows_the_app() {
        let bindings = [b(Role::Deployer, Some("staging"))];
        assert_eq!(decide(&bindings, None, Role::Viewer), Access::Granted);
        assert_eq!(decide(&bindings, None, Role::Admin), Access::Below);
        assert_eq!(decide(&bindings, Some("prod"), Role::Viewer), Access::Below);
    }

    #[test]
    fn the_highest_role_wins() {
        let bindings = [b(Role::Viewer, None), b(Role::Admin, None)];
        assert_eq!(
            decide(&bindings, Some("prod"), Role::Approver),
            Access::Granted
        );
    }

    #[test]
    fn a_binding_names_one_principal() {
        let both = NewRoleBinding {
            subject: Some("a".into()),
            group: Some("g".into()),
            role: Role::Viewer,
            environment: None,
        };
        assert!(both.validate().is_err());
        let neither = NewRoleBinding {
            subject: None,
            group: None,
            ..both.clone()
        };
        assert!(neither.validate().is_err());
        let bad_env = NewRoleBinding {
            group: None,
            environment: Some("Prod!".into()),
            ..both
        };
        let err = bad_env
            .validate()
            .err()
            .map(|e| e.errors[0].pointer.clone());
        assert_eq!(err.as_deref(), Some("/environment"));
    }
}
