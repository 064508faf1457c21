//! The keys of [`Config`] and the names they are read under.
//!
//! A key is a field's dotted path (`database.url`), derived from the struct itself (its
//! defaults, serialized), so a new field has its names without a list to keep in step:
//! `[database] url` in the file, `SLIPWAY_DATABASE_URL` in the environment. The keys of the
//! flat configuration before sections (`jwt_secret`) stay readable under those names, at the
//! top of the file and as `SLIPWAY_JWT_SECRET` ([`FLAT`]); a new key never gets one
//! (docs/decisions/100-config-sections.md).

use std::collections::BTreeMap;
use std::sync::Arc;

use figment::providers::Serialized;
use figment::value::{Dict, Map, Value};
use figment::{Error, Metadata, Profile, Provider};

use super::Config;

/// The flat name of every key before the keys were grouped into sections, and its key now.
/// Frozen: these names are read for compatibility, and new keys have only their sectioned one.
pub(super) const FLAT: [(&str, &str); 33] = [
    ("listen", "server.listen"),
    ("runtime_threads", "server.runtime_threads"),
    ("public_url", "server.public_url"),
    ("database_url", "database.url"),
    ("database_max_connections", "database.max_connections"),
    ("body_limit", "api.body_limit"),
    ("request_timeout", "api.request_timeout"),
    ("idempotency_ttl", "api.idempotency_ttl"),
    ("create_batch_max", "api.create_batch_max"),
    ("cors_allowed_origins", "api.cors_allowed_origins"),
    ("rate_limit_per_second", "rate_limit.per_second"),
    ("rate_limit_burst", "rate_limit.burst"),
    (
        "webhook_rate_limit_per_second",
        "webhook_rate_limit.per_second",
    ),
    ("webhook_rate_limit_burst", "webhook_rate_limit.burst"),
    ("log_format", "log.format"),
    ("log_level", "log.level"),
    ("workers", "engine.workers"),
    ("lease_ttl", "engine.lease_ttl"),
    ("poll_interval_ms", "engine.poll_interval_ms"),
    ("chain_steps", "engine.chain_steps"),
    ("auth_enabled", "auth.enabled"),
    ("jwt_issuer", "auth.jwt_issuer"),
    ("jwt_audience", "auth.jwt_audience"),
    ("jwt_secret", "auth.jwt_secret"),
    ("jwt_public_keys", "auth.jwt_public_keys"),
    ("jwks_path", "auth.jwks_path"),
    ("bootstrap_admins", "auth.bootstrap_admins"),
    ("kube_qps", "kube.qps"),
    ("kube_burst", "kube.burst"),
    ("sim_ready_after", "sim.ready_after"),
    ("sim_state_dir", "sim.state_dir"),
    ("dev_state_dir", "dev.state_dir"),
    ("secrets_key", "secrets.key"),
];

/// Variables without the `SLIPWAY_` prefix that set a key, read below the prefixed ones.
const BARE: [(&str, &str); 1] = [("DATABASE_URL", "database.url")];

/// Every key of `config`, dotted: the leaves of its serialized form (an unset `Option` is a
/// leaf too).
pub(super) fn keys(config: &Config) -> Result<Vec<String>, Box<Error>> {
    let data = Serialized::defaults(config).data().map_err(Box::new)?;
    let mut keys = Vec::new();
    if let Some(dict) = data.get(&Profile::Default) {
        leaves(dict, "", &mut keys);
    }
    Ok(keys)
}

fn leaves(dict: &Dict, prefix: &str, keys: &mut Vec<String>) {
    for (name, value) in dict {
        let key = if prefix.is_empty() {
            name.clone()
        } else {
            format!("{prefix}.{name}")
        };
        match value {
            Value::Dict(_, fields) => leaves(fields, &key, keys),
            _ => keys.push(key),
        }
    }
}

/// The environment variable of `key`: `SLIPWAY_` and its path joined by `_`, in capitals.
pub(super) fn variable(key: &str) -> String {
    format!("SLIPWAY_{}", key.replace('.', "_").to_ascii_uppercase())
}

/// The names a key is read under in the environment, the first set one winning: its own
/// variable, then its flat name's, then a bare one (`DATABASE_URL`).
fn variables_of(key: &str) -> Vec<String> {
    let mut names = vec![variable(key)];
    for (flat, to) in FLAT {
        let old = format!("SLIPWAY_{}", flat.to_ascii_uppercase());
        if to == key && !names.contains(&old) {
            names.push(old);
        }
    }
    for (bare, to) in BARE {
        if to == key {
            names.push(bare.to_owned());
        }
    }
    names
}

/// Puts `value` at the dotted `key` of `dict`; `false` when something is there already.
fn insert(dict: &mut Dict, key: &str, value: Value) -> bool {
    match key.split_once('.') {
        None if dict.contains_key(key) => false,
        None => {
            dict.insert(key.to_owned(), value);
            true
        }
        Some((section, rest)) => match dict
            .entry(section.to_owned())
            .or_insert_with(|| Dict::new().into())
        {
            Value::Dict(_, fields) => insert(fields, rest, value),
            _ => false,
        },
    }
}

/// The environment's layer: the variable that set each key (names compared without case, as
/// figment's `Env` does), with its value parsed as figment parses a variable's.
#[derive(Debug)]
pub(super) struct Variables {
    /// key → (the variable it was read from, its value)
    found: Arc<BTreeMap<String, (String, String)>>,
}

impl Variables {
    pub(super) fn new(keys: &[String], vars: impl IntoIterator<Item = (String, String)>) -> Self {
        let vars: BTreeMap<String, String> = vars
            .into_iter()
            .map(|(name, value)| (name.trim().to_ascii_uppercase(), value))
            .collect();
        let found = keys
            .iter()
            .filter_map(|key| {
                variables_of(key).into_iter().find_map(|name| {
                    let value = vars.get(&name)?.clone();
                    Some((key.clone(), (name, value)))
                })
            })
            .collect();
        Self {
            found: Arc::new(found),
        }
    }

    /// The process's environment (variables whose name or value is not text are skipped).
    pub(super) fn process() -> impl Iterator<Item = (String, String)> {
        std::env::vars_os()
            .filter_map(|(name, value)| Some((name.into_string().ok()?, value.into_string().ok()?)))
    }
}

impl Provider for Variables {
    fn metadata(&self) -> Metadata {
        let found = self.found.clone();
        // An error names the variable that was set, not figment's rendering of the key.
        Metadata::named("environment variable").interpolater(move |_, path| {
            let key = path.join(".");
            found
                .get(&key)
                .map_or_else(|| variable(&key), |(name, _)| name.clone())
        })
    }

    fn data(&self) -> Result<Map<Profile, Dict>, Error> {
        let mut dict = Dict::new();
        for (key, (_, value)) in self.found.iter() {
            let value = match value.parse::<Value>() {
                Ok(value) => value,
                Err(never) => match never {},
            };
            insert(&mut dict, key, value);
        }
        Ok(Map::from([(Profile::Default, dict)]))
    }
}

/// A layer (a TOML file) whose flat names at the top ([`FLAT`]) are moved to their sections.
#[derive(Debug)]
pub(super) struct Sectioned<P>(pub P);

impl<P: Provider> Provider for Sectioned<P> {
    fn metadata(&self) -> Metadata {
        self.0.metadata()
    }

    fn data(&self) -> Result<Map<Profile, Dict>, Error> {
        let mut data = self.0.data()?;
        for dict in data.values_mut() {
            for (flat, key) in FLAT {
                if let Some(value) = dict.remove(flat)
                    && !insert(dict, key, value)
                {
                    return Err(Error::from(format!(
                        "`{flat}` is the old name of `{key}`, and both are set: keep `{key}`"
                    )));
                }
            }
        }
        Ok(data)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_field_is_a_key_with_one_variable() {
        let keys = keys(&Config::default()).unwrap_or_default();
        // The struct's leaves: every section's fields, the unset ones included.
        for key in [
            "server.listen",
            "database.url",
            "auth.jwt_secret",
            "github.token",
        ] {
            assert!(keys.iter().any(|k| k == key), "{key} in {keys:?}");
        }
        assert!(keys.len() >= FLAT.len() + 2, "{keys:?}");
        let mut owners: BTreeMap<String, &String> = BTreeMap::new();
        for key in &keys {
            for name in variables_of(key) {
                if let Some(other) = owners.insert(name.clone(), key) {
                    panic!("{name} names both {other} and {key}");
                }
            }
        }
    }

    #[test]
    fn flat_names_are_old_names_of_keys() {
        let keys = keys(&Config::default()).unwrap_or_default();
        for (flat, key) in FLAT {
            assert!(keys.iter().any(|k| k == key), "{flat} → {key}");
            assert!(!keys.iter().any(|k| k == flat), "{flat} is a key itself");
            assert_eq!(FLAT.iter().filter(|(f, _)| *f == flat).count(), 1, "{flat}");
            assert_eq!(FLAT.iter().filter(|(_, k)| *k == key).count(), 1, "{key}");
        }
    }
}
