//! Finishes the OpenAPI document the routes describe (`slipway openapi`, `GET /openapi.json`)
//! with what is the same for every operation, so that a new route is described like the
//! others without repeating it in its annotation:
//!
//! - the bearer scheme, required at the top level; routes that authenticate by their own
//!   signatures (webhooks) and the ops probes opt out with an empty requirement;
//! - the answers every authenticated route can give: 401 with `WWW-Authenticate`, 403, and
//!   429 with `Retry-After`; and 503 with `Retry-After` on every `/v1` route (they all need
//!   the database);
//! - internally tagged unions (`{"type": "canary", …}`) as a `oneOf` of named variant schemas
//!   with a `discriminator` and its `mapping`: utoipa writes each variant inline (an `allOf`
//!   of the variant's body and an object holding the tag), which client generators cannot
//!   turn into types;
//! - a component that is an `allOf` of objects (a `#[serde(flatten)]`ed struct, a named
//!   union variant) as one object: a part that denies unknown fields
//!   (`additionalProperties: false`) would otherwise refuse the other parts' properties, so
//!   no value could validate against the whole;
//! - `servers`.
//!
//! Decision record: docs/decisions/050-openapi-contract.md.

use std::collections::BTreeMap;

use utoipa::openapi::header::HeaderBuilder;
use utoipa::openapi::schema::{
    AdditionalProperties, ArrayItems, Discriminator, Object, ObjectBuilder, Schema, Type,
};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme};
use utoipa::openapi::server::ServerBuilder;
use utoipa::openapi::{Components, Content, OpenApi, Ref, RefOr, ResponseBuilder};

use crate::auth;
use crate::problem::PROBLEM_JSON;

/// Seconds a client is told to wait (`Retry-After`) when the database is unavailable.
pub const UNAVAILABLE_RETRY_AFTER_SECS: u32 = 2;

/// The document with everything this module adds.
pub fn finish(mut api: OpenApi) -> OpenApi {
    declare_security(&mut api);
    add_common_responses(&mut api);
    document_headers(&mut api);
    if let Some(components) = api.components.as_mut() {
        name_tagged_variants(components);
        flatten_all_of(components);
    }
    api.servers = Some(vec![
        ServerBuilder::new()
            .url("/")
            .description(Some("The server that serves this document"))
            .build(),
        ServerBuilder::new()
            .url("http://127.0.0.1:8080")
            .description(Some(
                "`slipway serve` and `slipway dev` on their default address",
            ))
            .build(),
    ]);
    api
}

fn operations(
    api: &mut OpenApi,
) -> impl Iterator<Item = (&String, &mut utoipa::openapi::path::Operation)> {
    api.paths.paths.iter_mut().flat_map(|(path, item)| {
        [
            &mut item.get,
            &mut item.put,
            &mut item.post,
            &mut item.delete,
            &mut item.patch,
        ]
        .into_iter()
        .flatten()
        .map(move |operation| (path, operation))
    })
}

/// The bearer scheme, required by default; operations that take no token say so.
fn declare_security(api: &mut OpenApi) {
    let components = api.components.get_or_insert_with(Default::default);
    components.add_security_scheme(
        "bearer",
        SecurityScheme::Http(
            HttpBuilder::new()
                .scheme(HttpAuthScheme::Bearer)
                .bearer_format("JWT")
                .description(Some(
                    "A JWT signed with one of the server's keys, with `exp`, `iss` and `aud`",
                ))
                .build(),
        ),
    );
    let bearer = || vec![SecurityRequirement::new("bearer", Vec::<String>::new())];
    api.security = Some(bearer());
    // Said on each operation as well, for tools that read only the operation's.
    for (path, operation) in operations(api) {
        operation.security = Some(if auth::needs_token(path) {
            bearer()
        } else {
            Vec::new()
        });
    }
}

/// Answers any operation can give, by where it is: 401/403/429 where a token is needed,
/// 503 wherever the database is asked.
fn add_common_responses(api: &mut OpenApi) {
    for (path, operation) in operations(api) {
        let mut common = Vec::new();
        if auth::needs_token(path) {
            common.extend([
                ("401", "No valid bearer token (see `WWW-Authenticate`)"),
                ("403", "The caller's role does not allow this"),
                (
                    "429",
                    "The caller sent more requests than its rate limit allows (see `Retry-After`)",
                ),
            ]);
        }
        if path.starts_with("/v1/") {
            common.push((
                "503",
                "The database is unavailable; retry after `Retry-After` seconds",
            ));
        }
        for (status, description) in common {
            let problem = ResponseBuilder::new()
                .description(description)
                .content(
                    PROBLEM_JSON,
                    Content::new(Some(Ref::from_schema_name("Problem"))),
                )
                .build();
            operation
                .responses
                .responses
                .entry(status.to_owned())
                .or_insert_with(|| problem.into());
        }
    }
}

/// The headers an answer carries by its status: the bearer challenge of a 401 (webhooks
/// answer theirs without one: they take no bearer token), the wait of a 429 or 503.
fn document_headers(api: &mut OpenApi) {
    for (path, operation) in operations(api) {
        let bearer = auth::needs_token(path);
        for (status, response) in &mut operation.responses.responses {
            let RefOr::T(response) = response else {
                continue;
            };
            let (name, header) = match status.as_str() {
                "401" if bearer => (
                    "WWW-Authenticate",
                    HeaderBuilder::new()
                        .schema(Some(ObjectBuilder::new().schema_type(Type::String)))
                        .description(Some(
                            "The RFC 6750 challenge: `Bearer realm=\"slipway\"`, with `error=\"invalid_token\"` when a token was sent",
                        ))
                        .build(),
                ),
                "429" | "503" => (
                    "Retry-After",
                    HeaderBuilder::new()
                        .schema(Some(
                            ObjectBuilder::new()
                                .schema_type(Type::Integer)
                                .minimum(Some(1)),
                        ))
                        .description(Some("Whole seconds to wait before trying again"))
                        .build(),
                ),
                _ => continue,
            };
            response
                .headers
                .entry(name.to_owned())
                .or_insert_with(|| header.into());
        }
    }
}

/// Rewrites each component that is a `oneOf` of internally tagged variants (each an object,
/// or an `allOf` holding an object, with one required string property of a single value,
/// the same property in all of them) as a `oneOf` of references to named variant schemas
/// (`<Value><Union>`: `CanaryStrategySpec`), with a discriminator mapping each tag value to
/// its schema.
fn name_tagged_variants(components: &mut Components) {
    let existing: Vec<String> = components.schemas.keys().cloned().collect();
    let mut added = Vec::new();
    for (union, schema) in &mut components.schemas {
        let RefOr::T(Schema::OneOf(one_of)) = schema else {
            continue;
        };
        if one_of.discriminator.is_some() {
            continue;
        }
        let Some((tag, values)) = common_tag(&one_of.items) else {
            continue;
        };
        let names: Vec<String> = values
            .iter()
            .map(|value| format!("{}{union}", pascal_case(value)))
            .collect();
        if names.iter().any(|n| existing.contains(n)) {
            continue;
        }
        let mut mapping = BTreeMap::new();
        for ((item, value), name) in one_of.items.iter_mut().zip(&values).zip(names) {
            let location = format!("#/components/schemas/{name}");
            let variant = std::mem::replace(item, RefOr::Ref(Ref::new(location.clone())));
            added.push((name, variant));
            mapping.insert(value.clone(), location);
        }
        one_of.discriminator = Some(Discriminator::with_mapping(tag, mapping));
    }
    components.schemas.extend(added);
}

/// Replaces each `allOf` of objects (inline, or references to object components), in a
/// component or anywhere inside one (a list's inlined items), by the one object they make
/// together: all their properties, all their required fields, closed
/// (`additionalProperties: false`) when a part is.
fn flatten_all_of(components: &mut Components) {
    let snapshot = components.schemas.clone();
    for schema in components.schemas.values_mut() {
        flatten_in(schema, &snapshot);
    }
}

fn flatten_in(schema: &mut RefOr<Schema>, components: &BTreeMap<String, RefOr<Schema>>) {
    let RefOr::T(inner) = schema else {
        return;
    };
    match inner {
        Schema::AllOf(all_of) => {
            if let Some(mut merged) = merged_object(&all_of.items, components) {
                if all_of.description.is_some() {
                    merged.description.clone_from(&all_of.description);
                }
                *schema = RefOr::T(Schema::Object(merged));
            }
        }
        Schema::Object(object) => {
            for property in object.properties.values_mut() {
                flatten_in(property, components);
            }
        }
        Schema::Array(array) => {
            if let ArrayItems::RefOrSchema(items) = &mut array.items {
                flatten_in(items, components);
            }
        }
        Schema::OneOf(one_of) => {
            for item in &mut one_of.items {
                flatten_in(item, components);
            }
        }
        Schema::AnyOf(any_of) => {
            for item in &mut any_of.items {
                flatten_in(item, components);
            }
        }
        _ => {}
    }
}

fn merged_object(
    items: &[RefOr<Schema>],
    components: &BTreeMap<String, RefOr<Schema>>,
) -> Option<Object> {
    let mut merged = ObjectBuilder::new().schema_type(Type::Object).build();
    let mut closed = false;
    for item in items {
        let part = match item {
            RefOr::T(Schema::Object(object)) => object,
            RefOr::Ref(reference) => match reference
                .ref_location
                .strip_prefix("#/components/schemas/")
                .and_then(|name| components.get(name))
            {
                Some(RefOr::T(Schema::Object(object))) => object,
                _ => return None,
            },
            _ => return None,
        };
        closed |= matches!(
            part.additional_properties.as_deref(),
            Some(AdditionalProperties::FreeForm(false))
        );
        for (name, property) in &part.properties {
            merged.properties.insert(name.clone(), property.clone());
        }
        for name in &part.required {
            if !merged.required.contains(name) {
                merged.required.push(name.clone());
            }
        }
        if merged.description.is_none() {
            merged.description.clone_from(&part.description);
        }
    }
    if closed {
        merged.additional_properties = Some(Box::new(AdditionalProperties::FreeForm(false)));
    }
    Some(merged)
}

/// The tag property all `items` share and each item's value of it.
fn common_tag(items: &[RefOr<Schema>]) -> Option<(String, Vec<String>)> {
    let tagged: Vec<Vec<(String, String)>> = items
        .iter()
        .map(|item| match item {
            RefOr::T(schema) => tag_candidates(schema),
            RefOr::Ref(_) => Vec::new(),
        })
        .collect();
    let first = tagged.first()?;
    let mut shared = first
        .iter()
        .map(|(property, _)| property)
        .filter(|property| tagged.iter().all(|c| c.iter().any(|(p, _)| p == *property)));
    let tag = shared.next()?.clone();
    if shared.next().is_some() {
        return None;
    }
    let values = tagged
        .iter()
        .map(|c| {
            c.iter()
                .find(|(p, _)| *p == tag)
                .map(|(_, v)| v.clone())
                .unwrap_or_default()
        })
        .collect();
    Some((tag, values))
}

/// The `(property, value)` pairs of `schema` that could be its tag: required string
/// properties allowing exactly one value.
fn tag_candidates(schema: &Schema) -> Vec<(String, String)> {
    match schema {
        Schema::Object(object) => object
            .properties
            .iter()
            .filter(|(name, _)| object.required.contains(name))
            .filter_map(|(name, property)| match property {
                RefOr::T(Schema::Object(p)) => match p.enum_values.as_deref() {
                    Some([serde_json::Value::String(value)]) => Some((name.clone(), value.clone())),
                    _ => None,
                },
                _ => None,
            })
            .collect(),
        Schema::AllOf(all_of) => all_of
            .items
            .iter()
            .filter_map(|item| match item {
                RefOr::T(schema) => Some(tag_candidates(schema)),
                RefOr::Ref(_) => None,
            })
            .flatten()
            .collect(),
        _ => Vec::new(),
    }
}

/// `blue_green` → `BlueGreen`.
fn pascal_case(snake: &str) -> String {
    snake
        .split(['_', '-'])
        .map(|word| {
            let mut chars = word.chars();
            chars.next().map_or_else(String::new, |first| {
                first.to_uppercase().chain(chars).collect()
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::pascal_case;

    #[test]
    fn variant_names_are_pascal_case() {
        assert_eq!(pascal_case("blue_green"), "BlueGreen");
        assert_eq!(pascal_case("replicas"), "Replicas");
        assert_eq!(pascal_case("gateway_api"), "GatewayApi");
    }
}
