//! Names of apps, environments, clusters, namespaces and workloads.

use crate::validation::Violations;

/// Longest name accepted: a Kubernetes DNS-1123 label.
pub const MAX_NAME_LEN: usize = 63;

/// Checks that `value` is a DNS-1123 label: 1–63 characters of `a-z`, `0-9` and `-`,
/// starting and ending with an alphanumeric character. Apps, environments, clusters,
/// namespaces, workloads and containers are all named this way, so every name can be used
/// in a Kubernetes object name or label without escaping.
pub fn check_name(v: &mut Violations, pointer: &str, value: &str) {
    if let Err(detail) = dns_label(value) {
        v.add(pointer, detail);
    }
}

/// [`dns_label`] as a regular expression, for the API's description of names.
pub const NAME_PATTERN: &str = "^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$";

/// The schema of a name in the API's description (`schema(schema_with = name_schema)`):
/// what [`dns_label`] accepts, so a client (and a fuzzer) knows it before it sends one.
#[cfg(feature = "openapi")]
pub fn name_schema() -> utoipa::openapi::Object {
    use utoipa::openapi::schema::{ObjectBuilder, Type};
    ObjectBuilder::new()
        .schema_type(Type::String)
        .min_length(Some(1))
        .max_length(Some(MAX_NAME_LEN))
        .pattern(Some(NAME_PATTERN))
        .description(Some(
            "A DNS-1123 label: 1-63 lowercase letters, digits and '-', starting and ending with a letter or digit",
        ))
        .build()
}

/// The reason `value` is not a DNS-1123 label, if it is not one.
pub fn dns_label(value: &str) -> Result<(), String> {
    if value.is_empty() {
        return Err("must not be empty".into());
    }
    if value.len() > MAX_NAME_LEN {
        return Err(format!("must be at most {MAX_NAME_LEN} characters"));
    }
    let ok_char = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-';
    if !value.chars().all(ok_char) {
        return Err("must contain only lowercase letters, digits and '-'".into());
    }
    if value.starts_with('-') || value.ends_with('-') {
        return Err("must start and end with a letter or digit".into());
    }
    Ok(())
}

/// The reason `value` is not a DNS-1123 subdomain (dot-separated labels, at most 253
/// characters), the form of Kubernetes object names such as Ingresses and HTTPRoutes.
pub fn dns_subdomain(value: &str) -> Result<(), String> {
    if value.len() > 253 {
        return Err("must be at most 253 characters".into());
    }
    value
        .split('.')
        .try_for_each(dns_label)
        .map_err(|e| format!("must be a DNS subdomain name: each dot-separated part {e}"))
}

/// Checks a Kubernetes label: the key is an optional DNS subdomain prefix and `/`, then a
/// name of 1–63 characters (alphanumerics, `-`, `_`, `.`, starting and ending with an
/// alphanumeric); the value is empty or such a name.
pub fn check_label(v: &mut Violations, pointer: &str, key: &str, value: &str) {
    let (prefix, name) = match key.rsplit_once('/') {
        Some((prefix, name)) => (Some(prefix), name),
        None => (None, key),
    };
    if let Some(Err(e)) = prefix.map(dns_subdomain) {
        v.add(pointer, format!("the key's prefix {e}"));
    }
    if let Err(e) = label_name(name) {
        v.add(pointer, format!("the key's name {e}"));
    }
    if !value.is_empty()
        && let Err(e) = label_name(value)
    {
        v.add(pointer, format!("the value {e}"));
    }
}

/// The reason `value` is not a label name (or non-empty label value).
fn label_name(value: &str) -> Result<(), String> {
    if value.is_empty() || value.len() > MAX_NAME_LEN {
        return Err(format!("must be 1 to {MAX_NAME_LEN} characters"));
    }
    let inner = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.');
    if !value.chars().all(inner) {
        return Err("must contain only letters, digits, '-', '_' and '.'".into());
    }
    let edge = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric());
    if !(edge(value.chars().next()) && edge(value.chars().last())) {
        return Err("must start and end with a letter or digit".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::{Violations, check_label, dns_label};

    fn label_errors(key: &str, value: &str) -> usize {
        let mut v = Violations::new();
        check_label(&mut v, "/l", key, value);
        v.errors().len()
    }

    #[test]
    fn labels_follow_kubernetes_syntax() {
        assert_eq!(label_errors("team", "payments"), 0);
        assert_eq!(label_errors("slipway.dev/test-never-ready", "true"), 0);
        assert_eq!(label_errors("example.com/Tier_1.a", ""), 0);
        assert_eq!(label_errors("", "x"), 1);
        assert_eq!(label_errors("Bad Prefix/name", "x"), 1);
        assert_eq!(label_errors("team", "-x"), 1);
        assert_eq!(label_errors("team", &"v".repeat(64)), 1);
        assert_eq!(label_errors(&"k".repeat(64), "v w"), 2);
    }

    #[test]
    fn accepts_labels_and_rejects_the_rest() {
        assert!(dns_label("web").is_ok());
        assert!(dns_label("prod-eu-1").is_ok());
        assert!(dns_label(&"a".repeat(63)).is_ok());
        assert!(dns_label("").is_err());
        assert!(dns_label(&"a".repeat(64)).is_err());
        assert!(dns_label("Web").is_err());
        assert!(dns_label("-web").is_err());
        assert!(dns_label("web-").is_err());
        assert!(dns_label("web_1").is_err());
        assert!(dns_label("we.b").is_err());
    }
}
