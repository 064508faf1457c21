//! The OpenAPI document is a contract clients are generated from: what generators need of it
//! (unique operation ids, references that resolve, discriminated unions, examples) and what
//! it must say about the server's answers (headers, security, servers, accepted formats).
//! CI also validates it with openapi-spec-validator and generates and runs a Python and a
//! TypeScript client from it (scripts/test, tests/clients).

#![expect(
    clippy::expect_used,
    reason = "a failed expectation is the test failing"
)]

use std::collections::BTreeMap;

use serde_json::Value;

const METHODS: [&str; 5] = ["get", "put", "post", "delete", "patch"];

fn document() -> Value {
    serde_json::to_value(slipway_api::openapi()).expect("the document serializes")
}

/// Every operation: (method, path, operation).
fn operations(doc: &Value) -> Vec<(String, String, Value)> {
    let mut out = Vec::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for method in METHODS {
            if let Some(operation) = item.get(method) {
                out.push((method.to_owned(), path.clone(), operation.clone()));
            }
        }
    }
    out
}

fn schema<'a>(doc: &'a Value, name: &str) -> &'a Value {
    &doc["components"]["schemas"][name]
}

#[test]
fn operation_ids_are_unique_and_descriptive() {
    let doc = document();
    let mut seen: BTreeMap<String, String> = BTreeMap::new();
    for (method, path, operation) in operations(&doc) {
        let id = operation["operationId"]
            .as_str()
            .unwrap_or_else(|| panic!("{method} {path} has no operationId"))
            .to_owned();
        let camel = id.chars().next().is_some_and(|c| c.is_ascii_lowercase())
            && id.chars().all(|c| c.is_ascii_alphanumeric())
            && id.chars().any(|c| c.is_ascii_uppercase());
        assert!(camel, "{method} {path}: `{id}` is not verbObject camelCase");
        if let Some(other) = seen.insert(id.clone(), format!("{method} {path}")) {
            panic!("operationId `{id}` of {method} {path} is also {other}'s");
        }
    }
    for (id, at) in [
        (
            "createDeployment",
            "post /v1/apps/{app}/environments/{env}/deployments",
        ),
        ("putEnvironment", "put /v1/apps/{app}/environments/{env}"),
        ("listRoleBindings", "get /v1/apps/{app}/role-bindings"),
        ("listAuditEntries", "get /v1/audit"),
        (
            "sendDeploymentCommand",
            "post /v1/deployments/{id}/{command}",
        ),
    ] {
        assert_eq!(seen.get(id).map(String::as_str), Some(at), "{id}");
    }
}

fn refs(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            for (key, member) in map {
                match (key.as_str(), member) {
                    ("$ref", Value::String(target)) => out.push(target.clone()),
                    _ => refs(member, out),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|item| refs(item, out)),
        _ => {}
    }
}

#[test]
fn every_reference_resolves() {
    let doc = document();
    let mut targets = Vec::new();
    refs(&doc, &mut targets);
    assert!(!targets.is_empty());
    for target in targets {
        let pointer = target
            .strip_prefix('#')
            .unwrap_or_else(|| panic!("{target} is not local"));
        assert!(
            doc.pointer(pointer).is_some(),
            "{target} is referenced but missing"
        );
    }
    let kinds = schema(&doc, "CommandKind")["enum"].clone();
    assert!(
        kinds
            .as_array()
            .is_some_and(|k| k.contains(&Value::from("promote"))),
        "{kinds}"
    );
}

/// Asserts `union` is a `oneOf` of references with a discriminator on `tag` mapping each of
/// `values` to a named schema that requires `tag` with that one value.
fn assert_discriminated(doc: &Value, union: &str, tag: &str, values: &[&str]) {
    let schema = schema(doc, union);
    let items = schema["oneOf"]
        .as_array()
        .unwrap_or_else(|| panic!("{union} is not a oneOf: {schema}"));
    assert_eq!(schema["discriminator"]["propertyName"], tag, "{union}");
    let mapping = schema["discriminator"]["mapping"]
        .as_object()
        .unwrap_or_else(|| panic!("{union} has no discriminator mapping: {schema}"));
    let mapped: Vec<&str> = mapping.keys().map(String::as_str).collect();
    let mut expected = values.to_vec();
    expected.sort_unstable();
    assert_eq!(mapped, expected, "{union}");
    for (value, target) in mapping {
        let target = target.as_str().expect("a mapping target");
        assert!(
            items.iter().any(|item| item["$ref"] == target),
            "{union}: {target} is mapped but not one of the oneOf"
        );
        let name = target
            .strip_prefix("#/components/schemas/")
            .expect("a schema reference");
        let variant = serde_json::to_string(self::schema(doc, name)).expect("json");
        // The variant requires the tag with its one value (directly or in an allOf part).
        let tag_schema = format!(r#""{tag}":{{"enum":["{value}"],"type":"string"}}"#);
        let tag_schema_alt = format!(r#""{tag}":{{"type":"string","enum":["{value}"]}}"#);
        assert!(
            variant.contains(&tag_schema) || variant.contains(&tag_schema_alt),
            "{name} does not fix {tag} to {value}: {variant}"
        );
        assert!(
            variant.contains(&format!(r#""required":["{tag}"]"#))
                || variant.contains(&format!(r#""{tag}""#)),
            "{name} does not require {tag}"
        );
    }
    for item in items {
        assert!(
            item["$ref"].is_string(),
            "{union}: an inline variant generators cannot name: {item}"
        );
    }
}

#[test]
fn tagged_unions_are_discriminated_by_named_variants() {
    let doc = document();
    assert_discriminated(
        &doc,
        "StrategySpec",
        "type",
        &["rolling", "blue_green", "canary"],
    );
    assert_discriminated(
        &doc,
        "TrafficRouting",
        "router",
        &["replicas", "gateway_api", "nginx"],
    );
    // No union anywhere is left as inline allOf variants.
    let text = serde_json::to_string(&doc).expect("json");
    assert!(
        !text.contains(r#""oneOf":[{"allOf""#),
        "a oneOf of inline allOf variants remains"
    );
}

#[test]
fn answers_document_their_headers() {
    let doc = document();
    for (method, path, operation) in operations(&doc) {
        let responses = operation["responses"].as_object().expect("responses");
        let bearer = path.starts_with("/v1/") && !path.starts_with("/v1/webhooks/");
        for (status, header) in [
            ("401", "WWW-Authenticate"),
            ("429", "Retry-After"),
            ("503", "Retry-After"),
        ] {
            if status == "401" && !bearer {
                continue;
            }
            if let Some(response) = responses.get(status) {
                assert!(
                    response["headers"][header].is_object(),
                    "{method} {path}: {status} does not document {header}"
                );
            }
        }
        if path.starts_with("/v1/") {
            assert!(
                responses.contains_key("503"),
                "{method} {path}: no 503 (every /v1 route needs the database)"
            );
        }
        if path.starts_with("/v1/webhooks/") || !path.starts_with("/v1/") {
            assert_eq!(
                operation["security"],
                Value::Array(Vec::new()),
                "{method} {path} takes no bearer token"
            );
        } else {
            assert!(responses.contains_key("401"), "{method} {path}: no 401");
            assert!(responses.contains_key("429"), "{method} {path}: no 429");
        }
    }
    assert_eq!(doc["security"][0]["bearer"], Value::Array(Vec::new()));
    assert_eq!(
        doc["components"]["securitySchemes"]["bearer"]["scheme"],
        "bearer"
    );
    assert!(
        doc["servers"].as_array().is_some_and(|s| !s.is_empty()),
        "no servers"
    );
}

#[test]
fn every_request_body_has_an_example() {
    let doc = document();
    for (method, path, operation) in operations(&doc) {
        let Some(content) = operation["requestBody"]["content"].as_object() else {
            continue;
        };
        for (media, body) in content {
            let has_example = body["example"].is_object()
                || body["examples"]
                    .as_object()
                    .is_some_and(|examples| !examples.is_empty());
            assert!(has_example, "{method} {path} ({media}) has no example");
        }
    }
}

/// The examples are requests the server takes: each parses as its operation's body type.
#[test]
fn request_body_examples_parse_as_their_types() {
    use slipway_api::extract::parse;
    let doc = document();
    let example = |id: &str| -> Vec<u8> {
        let (_, _, operation) = operations(&doc)
            .into_iter()
            .find(|(_, _, o)| o["operationId"] == id)
            .unwrap_or_else(|| panic!("no operation {id}"));
        let example = &operation["requestBody"]["content"]["application/json"]["example"];
        serde_json::to_vec(example).expect("json")
    };
    let parsed = [
        (
            "createCluster",
            parse::<slipway_core::ClusterSpec>(&example("createCluster"))
                .err()
                .map(|e| format!("{e:?}")),
        ),
        (
            "createApp",
            parse::<slipway_core::NewApp>(&example("createApp"))
                .err()
                .map(|e| format!("{e:?}")),
        ),
        (
            "updateApp",
            parse::<slipway_core::AppPatch>(&example("updateApp"))
                .err()
                .map(|e| format!("{e:?}")),
        ),
        (
            "putEnvironment",
            parse::<slipway_core::EnvironmentSpec>(&example("putEnvironment"))
                .err()
                .map(|e| format!("{e:?}")),
        ),
        (
            "createDeployment",
            parse::<slipway_core::DeploymentRequest>(&example("createDeployment"))
                .err()
                .map(|e| format!("{e:?}")),
        ),
        (
            "sendDeploymentCommand",
            parse::<slipway_api::routes::commands::CommandRequest>(&example(
                "sendDeploymentCommand",
            ))
            .err()
            .map(|e| format!("{e:?}")),
        ),
        (
            "createRoleBinding",
            parse::<slipway_core::NewRoleBinding>(&example("createRoleBinding"))
                .err()
                .map(|e| format!("{e:?}")),
        ),
        (
            "createTrigger",
            parse::<slipway_core::NewTrigger>(&example("createTrigger"))
                .err()
                .map(|e| format!("{e:?}")),
        ),
    ];
    for (id, error) in parsed {
        assert_eq!(error, None, "the example of {id} does not parse");
    }
}

/// What the server accepts is what the document says: the formats of the parameters a
/// schema-valid request could otherwise get wrong.
#[test]
fn parameters_state_the_formats_the_server_accepts() {
    let doc = document();
    let mut checked = BTreeMap::new();
    for (method, path, operation) in operations(&doc) {
        for parameter in operation["parameters"].as_array().into_iter().flatten() {
            let name = parameter["name"].as_str().unwrap_or_default().to_owned();
            let schema = &parameter["schema"];
            let states = match name.as_str() {
                "cursor" | "If-Match" | "Idempotency-Key" | "Last-Event-ID" | "traceparent" => {
                    schema["pattern"].is_string()
                }
                "limit" => schema["minimum"] == 1 && schema["maximum"] == 500,
                _ => continue,
            };
            assert!(
                states,
                "{method} {path}: {name} does not state its format: {schema}"
            );
            *checked.entry(name).or_insert(0) += 1;
        }
    }
    for name in [
        "cursor",
        "If-Match",
        "Idempotency-Key",
        "Last-Event-ID",
        "limit",
    ] {
        assert!(checked.contains_key(name), "no operation takes {name}?");
    }
}

/// A struct with a `#[serde(flatten)]`ed part, and each named union variant, is one object
/// listing every property: as an `allOf` whose part denies unknown fields, no value would
/// validate (the part refuses the other parts' properties).
#[test]
fn composed_schemas_are_single_objects() {
    let doc = document();
    for (name, schema) in doc["components"]["schemas"].as_object().expect("schemas") {
        assert!(
            schema.get("allOf").is_none(),
            "{name} is an allOf: {schema}"
        );
    }
    for (name, properties) in [
        (
            "Environment",
            &["app", "name", "cluster", "workload", "strategy"][..],
        ),
        ("CanaryStrategySpec", &["type", "steps", "traffic"][..]),
        ("GatewayApiTrafficRouting", &["router", "http_route"][..]),
    ] {
        for property in properties {
            assert!(
                schema(&doc, name)["properties"][property].is_object(),
                "{name} lacks {property}"
            );
        }
    }
}
