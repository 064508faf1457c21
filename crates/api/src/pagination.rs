//! `limit` and opaque `cursor` query parameters, and the list envelope.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};
use slipway_store::Page;
use utoipa::{IntoParams, ToSchema};

use crate::problem::ApiError;

pub(crate) const DEFAULT_LIMIT: i64 = 50;
pub(crate) const MAX_LIMIT: i64 = slipway_store::page::MAX_LIMIT;

/// Paging parameters every list takes.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PageParams {
    /// Items per page, 1–500 (default 50).
    #[param(value_type = Option<i64>, minimum = 1, maximum = 500)]
    pub limit: Option<String>,
    /// `next_cursor` of the previous page (a cursor of another list is refused).
    #[param(pattern = "^[A-Za-z0-9_-]+$", min_length = 1, max_length = 2048)]
    pub cursor: Option<String>,
}

impl PageParams {
    pub fn limit(&self) -> Result<i64, ApiError> {
        let Some(raw) = &self.limit else {
            return Ok(DEFAULT_LIMIT);
        };
        match raw.parse::<i64>() {
            Ok(n) if (1..=MAX_LIMIT).contains(&n) => Ok(n),
            _ => Err(ApiError::invalid_parameter(
                "limit",
                format!("must be an integer between 1 and {MAX_LIMIT}"),
            )),
        }
    }

    /// The position encoded in the cursor, which must be one of `kind`.
    pub fn after(&self, kind: CursorKind) -> Result<Option<String>, ApiError> {
        let Some(raw) = &self.cursor else {
            return Ok(None);
        };
        let invalid = || ApiError::invalid_parameter("cursor", "not a cursor this list issued");
        let bytes = URL_SAFE_NO_PAD.decode(raw).map_err(|_| invalid())?;
        let text = String::from_utf8(bytes).map_err(|_| invalid())?;
        let (prefix, value) = text.split_once(':').ok_or_else(invalid)?;
        // No stored key holds a NUL character (Postgres text cannot), so no cursor does.
        if prefix != kind.prefix() || value.contains('\0') {
            return Err(invalid());
        }
        Ok(Some(value.to_owned()))
    }

    /// [`Self::after`], parsed as the list's key type (a uuid, a sequence number).
    pub fn after_parsed<T: std::str::FromStr>(
        &self,
        kind: CursorKind,
    ) -> Result<Option<T>, ApiError> {
        self.after(kind)?
            .map(|raw| raw.parse::<T>())
            .transpose()
            .map_err(|_| ApiError::invalid_parameter("cursor", "not a cursor this list issued"))
    }
}

/// What a cursor points into; a cursor of one list is refused by another.
#[derive(Debug, Clone, Copy)]
pub enum CursorKind {
    Name,
    Deployment,
    Event,
    RoleBinding,
    Audit,
    Trigger,
}

impl CursorKind {
    fn prefix(self) -> &'static str {
        match self {
            Self::Name => "n1",
            Self::Deployment => "d1",
            Self::Event => "e1",
            Self::RoleBinding => "r1",
            Self::Audit => "a1",
            Self::Trigger => "t1",
        }
    }

    pub fn encode(self, value: &str) -> String {
        URL_SAFE_NO_PAD.encode(format!("{}:{value}", self.prefix()))
    }
}

/// A page of a list.
#[derive(Debug, Serialize, ToSchema)]
pub struct List<T> {
    pub items: Vec<T>,
    /// Pass as `cursor` to get the next page; null on the last page.
    pub next_cursor: Option<String>,
}

impl<T> List<T> {
    pub fn from_page<K: ToString>(page: Page<T, K>, kind: CursorKind) -> Self {
        Self {
            items: page.items,
            next_cursor: page.next.map(|k| kind.encode(&k.to_string())),
        }
    }
}
