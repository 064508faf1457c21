//! Apps: requests to create and change them.

use serde::{Deserialize, Serialize};

use crate::names::check_name;
use crate::validation::{ValidationError, Violations};

/// Longest app description.
pub(crate) const MAX_DESCRIPTION_LEN: usize = 1_000;

/// The body of `POST /v1/apps`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct NewApp {
    #[cfg_attr(feature = "openapi", schema(schema_with = crate::names::name_schema))]
    pub name: String,
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(max_length = 1000))]
    pub description: String,
}

impl NewApp {
    pub fn validate(&self) -> Result<(), ValidationError> {
        let mut v = Violations::new();
        check_name(&mut v, "/name", &self.name);
        check_description(&mut v, &self.description);
        v.into_result()
    }
}

/// The body of `PATCH /v1/apps/{app}`: the fields to change.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct AppPatch {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(max_length = 1000))]
    pub description: Option<String>,
}

impl AppPatch {
    pub fn validate(&self) -> Result<(), ValidationError> {
        let mut v = Violations::new();
        if let Some(d) = &self.description {
            check_description(&mut v, d);
        }
        v.into_result()
    }
}

fn check_description(v: &mut Violations, description: &str) {
    if description.len() > MAX_DESCRIPTION_LEN {
        v.add(
            "/description",
            format!("must be at most {MAX_DESCRIPTION_LEN} bytes"),
        );
    }
}
