use std::collections::BTreeMap;

use slipway_core::DurationSpec;

use super::*;

/// What `validate` says of `config` (empty when it accepts it).
fn validation_error(config: &Config) -> String {
    config
        .validate()
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default()
}

#[test]
fn secrets_do_not_print() {
    let config = Config {
        database: DatabaseConfig {
            url: Some(Secret::new("postgres://u:hunter2@db/x")),
            ..DatabaseConfig::default()
        },
        auth: AuthConfig {
            jwt_secret: Some(Secret::new("a-jwt-secret-that-is-long-enough-hunter3")),
            ..AuthConfig::default()
        },
        ..Config::default()
    };
    assert!(!format!("{config:?}").contains("hunter2"));
    assert!(!format!("{config:?}").contains("hunter3"));
}

#[test]
fn serving_without_a_key_names_the_key() {
    let message = Config::default()
        .auth_settings()
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(message.contains("`auth.jwt_secret`"), "{message}");
    let off = Config {
        auth: AuthConfig {
            enabled: false,
            ..AuthConfig::default()
        },
        ..Config::default()
    };
    assert!(off.auth_settings().is_ok_and(|a| !a.enabled()));
    let short = Config {
        auth: AuthConfig {
            jwt_secret: Some(Secret::new("short")),
            ..AuthConfig::default()
        },
        ..Config::default()
    };
    let message = validation_error(&short);
    assert!(message.contains("`auth.jwt_secret`"), "{message}");
    let missing = Config {
        auth: AuthConfig {
            jwks_path: Some("/nonexistent/jwks.json".into()),
            ..AuthConfig::default()
        },
        ..Config::default()
    };
    let message = missing
        .auth_settings()
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(message.contains("`auth.jwks_path`"), "{message}");
}

#[test]
fn webhook_secrets_do_not_print_and_bad_keys_are_named() {
    let config = Config {
        secrets: SecretsConfig {
            key: Some(Secret::new("c2VjcmV0LWtleS1zZWNyZXQta2V5LXNlY3JldC1rZXk=")),
        },
        github: GithubConfig {
            token: Some(Secret::new("ghp_hunter2")),
            ..GithubConfig::default()
        },
        ..Config::default()
    };
    let dump = format!("{config:?}");
    assert!(
        !dump.contains("hunter2") && !dump.contains("c2VjcmV0"),
        "{dump}"
    );
    assert!(config.validate().is_ok());
    let short_key = Config {
        secrets: SecretsConfig {
            key: Some(Secret::new("c2hvcnQ=")),
        },
        ..Config::default()
    };
    let message = validation_error(&short_key);
    assert!(message.contains("`secrets.key`"), "{message}");
    let bad = Config {
        github: GithubConfig {
            api_url: "ftp://x".into(),
            ..GithubConfig::default()
        },
        ..Config::default()
    };
    let message = validation_error(&bad);
    assert!(message.contains("`github.api_url`"), "{message}");
}

#[test]
fn rate_limits_are_validated_and_reach_the_api() {
    let limit = Config::default().rate_limit();
    assert_eq!(limit.per_second, 100);
    assert_eq!(limit.burst, 200);
    let no_burst = Config {
        rate_limit: RateLimitConfig {
            per_second: 100,
            burst: 0,
        },
        ..Config::default()
    };
    let message = validation_error(&no_burst);
    assert!(message.contains("`rate_limit.burst`"), "{message}");
    let off = Config {
        rate_limit: RateLimitConfig {
            per_second: 0,
            burst: 0,
        },
        ..Config::default()
    };
    assert!(off.validate().is_ok());
    let webhooks = Config::default().webhook_rate_limit();
    assert_eq!((webhooks.per_second, webhooks.burst), (10, 50));
    let no_burst = Config {
        webhook_rate_limit: RateLimitConfig {
            per_second: 10,
            burst: 0,
        },
        ..Config::default()
    };
    let message = validation_error(&no_burst);
    assert!(message.contains("`webhook_rate_limit.burst`"), "{message}");
}

#[test]
fn create_batch_max_is_bounded_and_reaches_the_api() {
    for wrong in [0, slipway_engine::create_batch::MAX_BATCH_LIMIT + 1] {
        let bad = Config {
            api: ApiConfig {
                create_batch_max: wrong,
                ..ApiConfig::default()
            },
            ..Config::default()
        };
        let message = validation_error(&bad);
        assert!(
            message.contains("`api.create_batch_max`"),
            "{wrong}: {message}"
        );
    }
    let one = Config {
        api: ApiConfig {
            create_batch_max: 1,
            ..ApiConfig::default()
        },
        auth: AuthConfig {
            enabled: false,
            ..AuthConfig::default()
        },
        ..Config::default()
    };
    assert!(one.validate().is_ok());
    assert_eq!(one.api_settings().map(|s| s.create_batch_max).ok(), Some(1));
}

#[test]
fn runtime_threads_leave_a_core_unless_set() {
    let picked: Vec<usize> = [0, 1, 2, 4, 64].map(automatic_threads).to_vec();
    assert_eq!(picked, [1, 1, 1, 3, 63]);
    assert!(Config::default().runtime_threads() >= 1);
    let three = Config {
        server: ServerConfig {
            runtime_threads: 3,
            ..ServerConfig::default()
        },
        ..Config::default()
    };
    assert_eq!(three.runtime_threads(), 3);
    let too_many = Config {
        server: ServerConfig {
            runtime_threads: MAX_RUNTIME_THREADS + 1,
            ..ServerConfig::default()
        },
        ..Config::default()
    };
    let message = validation_error(&too_many);
    assert!(message.contains("`server.runtime_threads`"), "{message}");
}

#[test]
fn chain_steps_is_bounded_and_reaches_the_engine() {
    for wrong in [0, 1_001] {
        let bad = Config {
            engine: EngineConfig {
                chain_steps: wrong,
                ..EngineConfig::default()
            },
            ..Config::default()
        };
        let message = validation_error(&bad);
        assert!(
            message.contains("`engine.chain_steps`"),
            "{wrong}: {message}"
        );
    }
    let one = Config {
        engine: EngineConfig {
            chain_steps: 1,
            ..EngineConfig::default()
        },
        ..Config::default()
    };
    assert_eq!(one.engine_settings("w".into()).chain_steps, 1);
    assert_eq!(
        Config::default().engine_settings("w".into()).chain_steps,
        32
    );
}

#[test]
fn validation_names_the_key() {
    let bad = Config {
        server: ServerConfig {
            listen: "nowhere".into(),
            ..ServerConfig::default()
        },
        ..Config::default()
    };
    let message = validation_error(&bad);
    assert!(message.contains("`server.listen`"), "{message}");
    let bad = Config {
        database: DatabaseConfig {
            url: Some(Secret::new("mysql://x")),
            ..DatabaseConfig::default()
        },
        ..Config::default()
    };
    let message = validation_error(&bad);
    assert!(message.contains("`database.url`"), "{message}");
    let bad = Config {
        kube: KubeConfig {
            qps: 0,
            ..KubeConfig::default()
        },
        ..Config::default()
    };
    let message = validation_error(&bad);
    assert!(message.contains("`kube.qps`"), "{message}");
}

/// A configuration with every key away from its default, and valid.
fn sample() -> Config {
    Config {
        server: ServerConfig {
            listen: "127.0.0.1:9090".into(),
            runtime_threads: 3,
            public_url: Some("https://slipway.example.com".into()),
        },
        database: DatabaseConfig {
            url: Some(Secret::new("postgres://u:p@db/x")),
            max_connections: 7,
        },
        api: ApiConfig {
            body_limit: 4096,
            request_timeout: DurationSpec::from_secs(5),
            idempotency_ttl: DurationSpec::from_secs(3600),
            create_batch_max: 8,
            cors_allowed_origins: vec!["https://a.example".into(), "https://b.example".into()],
        },
        rate_limit: RateLimitConfig {
            per_second: 5,
            burst: 6,
        },
        webhook_rate_limit: RateLimitConfig {
            per_second: 7,
            burst: 8,
        },
        log: LogConfig {
            format: LogFormat::Pretty,
            level: "debug".into(),
        },
        engine: EngineConfig {
            workers: 9,
            lease_ttl: DurationSpec::from_secs(12),
            poll_interval_ms: 250,
            chain_steps: 4,
        },
        auth: AuthConfig {
            enabled: false,
            jwt_issuer: "issuer".into(),
            jwt_audience: "audience".into(),
            jwt_secret: Some(Secret::new("a-jwt-secret-that-is-long-enough-for-hs256")),
            jwt_public_keys: vec!["/keys/a.pem".into(), "/keys/b.pem".into()],
            jwks_path: Some("/keys/jwks.json".into()),
            bootstrap_admins: vec!["root".into(), "group:platform".into()],
        },
        kube: KubeConfig { qps: 11, burst: 22 },
        sim: SimConfig {
            ready_after: DurationSpec::from_secs(2),
            state_dir: Some("/var/sim".into()),
        },
        dev: DevConfig {
            state_dir: Some("/var/dev".into()),
        },
        secrets: SecretsConfig {
            key: Some(Secret::new("c2VjcmV0LWtleS1zZWNyZXQta2V5LXNlY3JldC1rZXk=")),
        },
        github: GithubConfig {
            token: Some(Secret::new("ghp_token")),
            api_url: "https://github.example/api/v3".into(),
        },
    }
}

/// `config`'s set keys and their values.
fn values(config: &Config) -> BTreeMap<String, serde_json::Value> {
    fn walk(key: &str, value: serde_json::Value, out: &mut BTreeMap<String, serde_json::Value>) {
        match value {
            serde_json::Value::Object(fields) => {
                for (name, value) in fields {
                    let key = if key.is_empty() {
                        name
                    } else {
                        format!("{key}.{name}")
                    };
                    walk(&key, value, out);
                }
            }
            serde_json::Value::Null => {}
            value => {
                out.insert(key.to_owned(), value);
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(
        "",
        serde_json::to_value(config).unwrap_or_default(),
        &mut out,
    );
    out
}

/// A value as a variable holds it: text as it is, a list comma-separated.
fn in_variable(value: &serde_json::Value) -> String {
    match value {
        serde_json::Value::String(text) => text.clone(),
        serde_json::Value::Array(items) => {
            items.iter().map(in_variable).collect::<Vec<_>>().join(",")
        }
        value => value.to_string(),
    }
}

/// The flat name of `key` before sections, if it had one.
fn flat_name(key: &str) -> Option<&'static str> {
    keys::FLAT
        .iter()
        .find(|(_, k)| *k == key)
        .map(|(flat, _)| *flat)
}

/// Loads with only `file` (TOML text), `env` and `overrides`.
fn load(
    file: &str,
    env: &[(String, String)],
    overrides: &Overrides,
) -> Result<Config, ConfigError> {
    let dir = tempfile::tempdir().map_err(|e| ConfigError::Invalid {
        key: "--config",
        message: e.to_string(),
    })?;
    let path = dir.path().join("slipway.toml");
    std::fs::write(&path, file).map_err(|e| ConfigError::Invalid {
        key: "--config",
        message: e.to_string(),
    })?;
    Config::load_with_env(Some(&path), Config::default(), overrides, env.to_vec())
}

fn loaded_values(file: &str, env: &[(String, String)]) -> BTreeMap<String, serde_json::Value> {
    match load(file, env, &Overrides::default()) {
        Ok(config) => values(&config),
        Err(e) => panic!("{e}"),
    }
}

#[test]
fn every_key_is_read_from_its_variable() {
    let sample = values(&sample());
    let defaults = values(&Config::default());
    let keys = keys::keys(&Config::default()).unwrap_or_default();
    assert_eq!(
        sample.keys().collect::<Vec<_>>(),
        keys.iter().collect::<Vec<_>>()
    );
    for (key, value) in &sample {
        assert_ne!(
            defaults.get(key),
            Some(value),
            "the sample leaves {key} at its default"
        );
    }
    let env: Vec<_> = sample
        .iter()
        .map(|(key, value)| (keys::variable(key), in_variable(value)))
        .collect();
    assert!(
        env.iter()
            .any(|(name, _)| name == "SLIPWAY_AUTH_JWT_SECRET")
    );
    assert_eq!(loaded_values("", &env), sample);
}

#[test]
fn every_key_is_read_from_its_section_in_the_file() {
    let sample = values(&sample());
    let mut file = String::new();
    let mut section = "";
    for (key, value) in &sample {
        let Some((name, field)) = key.split_once('.') else {
            panic!("{key} is in no section");
        };
        if name != section {
            file.push_str(&format!("[{name}]\n"));
            section = name;
        }
        file.push_str(&format!("{field} = {value}\n"));
    }
    assert!(file.contains("[database]\nmax_connections = 7\n"), "{file}");
    assert_eq!(loaded_values(&file, &[]), sample);
}

#[test]
fn flat_names_from_before_sections_still_work() {
    let sample = values(&sample());
    // Every key had a flat name but `github.*`, which had its section already.
    for key in sample.keys() {
        assert!(
            flat_name(key).is_some() || key.starts_with("github."),
            "{key} has no flat name"
        );
    }
    let mut file = String::new();
    let mut github = String::from("[github]\n");
    let mut env = Vec::new();
    for (key, value) in &sample {
        match flat_name(key) {
            Some(flat) => {
                file.push_str(&format!("{flat} = {value}\n"));
                env.push((
                    format!("SLIPWAY_{}", flat.to_ascii_uppercase()),
                    in_variable(value),
                ));
            }
            None => {
                let field = key.trim_start_matches("github.");
                github.push_str(&format!("{field} = {value}\n"));
                env.push((keys::variable(key), in_variable(value)));
            }
        }
    }
    file.push_str(&github);
    assert!(file.contains("jwt_secret = "), "{file}");
    assert!(env.iter().any(|(name, _)| name == "SLIPWAY_JWT_SECRET"));
    assert_eq!(loaded_values(&file, &[]), sample, "{file}");
    assert_eq!(loaded_values("", &env), sample);
    // Names are compared without case, as before.
    let lower = [("slipway_workers".to_owned(), "5".to_owned())];
    assert_eq!(
        loaded_values("", &lower).get("engine.workers"),
        Some(&serde_json::json!(5))
    );
}

#[test]
fn the_sectioned_name_wins_and_other_variables_are_ignored() {
    let var = |name: &str, value: &str| (name.to_owned(), value.to_owned());
    let env = [
        var("DATABASE_URL", "postgres://bare/x"),
        var("SLIPWAY_WORKERS", "5"),
        var("SLIPWAY_ENGINE_WORKERS", "6"),
        // The CLI's and the scripts' variables are not configuration keys.
        var("SLIPWAY_URL", "http://127.0.0.1:1"),
        var("SLIPWAY_TOKEN", "t"),
        var("SLIPWAY_ENGINE_BENCH_BIN", "/bin/true"),
    ];
    let values = loaded_values("", &env);
    assert_eq!(values.get("engine.workers"), Some(&serde_json::json!(6)));
    assert_eq!(
        values.get("database.url"),
        Some(&serde_json::json!("postgres://bare/x"))
    );
    let env = [
        var("DATABASE_URL", "postgres://bare/x"),
        var("SLIPWAY_DATABASE_URL", "postgres://prefixed/x"),
    ];
    assert_eq!(
        loaded_values("", &env).get("database.url"),
        Some(&serde_json::json!("postgres://prefixed/x"))
    );
}

/// What loading `file` and `env` says (empty when it loads).
fn load_error(file: &str, env: &[(String, String)]) -> String {
    load(file, env, &Overrides::default())
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default()
}

#[test]
fn a_key_set_under_both_names_in_one_file_is_refused() {
    let message = load_error("workers = 5\n[engine]\nworkers = 6\n", &[]);
    assert!(
        message.contains("`workers`") && message.contains("`engine.workers`"),
        "{message}"
    );
    let message = load_error("request_timout = \"5s\"\n", &[]);
    assert!(message.contains("request_timout"), "{message}");
    let message = load_error("[engine]\nworkerz = 5\n", &[]);
    assert!(message.contains("workerz"), "{message}");
}

#[test]
fn a_wrong_variable_is_named_as_it_was_set() {
    for name in ["SLIPWAY_DATABASE_MAX_CONNECTIONS", "SLIPWAY_WORKERS"] {
        let message = load_error("", &[(name.to_owned(), "many".to_owned())]);
        assert!(message.contains(name), "{message}");
    }
}

#[test]
fn flags_override_their_keys() {
    let flags = Overrides {
        listen: Some("127.0.0.1:7070".into()),
        dev_state_dir: Some("/var/flag".into()),
        log_format: Some(LogFormat::Pretty),
        workers: Some(3),
    };
    let env = [
        ("SLIPWAY_LISTEN".to_owned(), "127.0.0.1:6060".to_owned()),
        ("SLIPWAY_WORKERS".to_owned(), "5".to_owned()),
    ];
    let config = load("[engine]\nworkers = 4\n", &env, &flags);
    let Ok(config) = config else {
        panic!("{config:?}");
    };
    assert_eq!(config.server.listen, "127.0.0.1:7070");
    assert_eq!(config.dev.state_dir, Some("/var/flag".into()));
    assert_eq!(config.log.format, LogFormat::Pretty);
    assert_eq!(config.engine.workers, 3);
}
