//! Configuration, layered: built-in defaults → `slipway.toml` → `SLIPWAY_*` environment
//! variables (and `DATABASE_URL`) → command-line flags. Validated once at start-up; every
//! error names the key that is wrong.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Deserializer, Serialize};
use slipway_api::auth::{AuthSettings, BootstrapAdmins, TokenVerifier};
use slipway_core::DurationSpec;

/// A value that must never reach a log: `Debug` and `Display` print `***`.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// How logs are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    /// One JSON object per line, for production.
    Json,
    /// Human-readable, for a terminal.
    Pretty,
}

/// Every setting, with its default.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Address the API listens on.
    pub listen: String,
    /// PostgreSQL URL; `slipway dev` starts its own database when this is unset.
    pub database_url: Option<Secret>,
    pub database_max_connections: u32,
    /// Largest request body, in bytes.
    pub body_limit: usize,
    pub request_timeout: DurationSpec,
    /// Requests per second each principal (token subject) may send on average; 0 turns the
    /// limit off. Above it the API answers 429 with `Retry-After`.
    pub rate_limit_per_second: u32,
    /// Requests a principal may send at once after being idle.
    pub rate_limit_burst: u32,
    /// Webhook deliveries per second each app may receive on average, counted before any
    /// signature is checked; 0 turns the limit off. Above it the webhooks answer 429.
    pub webhook_rate_limit_per_second: u32,
    /// Webhook deliveries an app may receive at once after being idle.
    pub webhook_rate_limit_burst: u32,
    /// How long a stored idempotent response is replayed.
    pub idempotency_ttl: DurationSpec,
    /// Most deployment creates written by one statement (group commit; 1 writes each alone).
    pub create_batch_max: usize,
    /// Origins allowed by CORS (a list, or a comma-separated string); empty turns CORS off.
    #[serde(deserialize_with = "list_or_csv")]
    pub cors_allowed_origins: Vec<String>,
    pub log_format: LogFormat,
    /// A tracing filter, e.g. `info` or `slipway=debug,info` (`RUST_LOG` overrides it).
    pub log_level: String,
    /// Where `slipway dev` keeps its database (default depends on the user).
    pub dev_state_dir: Option<PathBuf>,
    /// Worker threads of the async runtime; 0 picks one less than the cores this process may
    /// use, at least one ([`Config::runtime_threads`]).
    pub runtime_threads: usize,
    /// Deployment steps this process runs at once.
    pub workers: usize,
    /// How long a worker's claim on a deployment lasts without a heartbeat.
    pub lease_ttl: DurationSpec,
    /// How often workers look for due work when no notification wakes them.
    pub poll_interval_ms: u64,
    /// Steps a worker runs for one claim while the deployment is due again at once (1 gives
    /// the lease back after every step).
    pub chain_steps: usize,
    /// How long a pod of the simulated cluster takes to become ready.
    pub sim_ready_after: DurationSpec,
    /// A directory holding the simulated cluster's state, shared by every process that names
    /// it (several engine processes on one machine); unset keeps it in this process's memory.
    pub sim_state_dir: Option<PathBuf>,
    /// Require a bearer JWT on the API (`slipway dev` turns it off by default).
    pub auth_enabled: bool,
    /// The `iss` tokens must carry (and `slipway token issue` writes).
    pub jwt_issuer: String,
    /// The `aud` tokens must carry (and `slipway token issue` writes).
    pub jwt_audience: String,
    /// HS256 shared secret (at least 32 bytes); verifies tokens without a `kid`.
    pub jwt_secret: Option<Secret>,
    /// PEM public keys (RSA → RS256, P-256 → ES256), each selected by a `kid` equal to its
    /// file name without extension (a list, or a comma-separated string).
    #[serde(deserialize_with = "list_or_csv")]
    pub jwt_public_keys: Vec<String>,
    /// A JWKS file (RFC 7517) of public keys, selected by their `kid`.
    pub jwks_path: Option<PathBuf>,
    /// Admins of everything: subjects, and groups written `group:NAME` (a list, or a
    /// comma-separated string). Only they create apps and register clusters.
    #[serde(deserialize_with = "list_or_csv")]
    pub bootstrap_admins: Vec<String>,
    /// Client-side rate limit of each Kubernetes cluster's client: requests per second on
    /// average, and how many may go at once (docs/kubernetes.md).
    pub kube_qps: u32,
    pub kube_burst: u32,
    /// Base64 of 32 random bytes: seals webhook secrets at rest. Triggers cannot be created
    /// without it, and changing it makes the stored secrets unusable.
    pub secrets_key: Option<Secret>,
    /// The URL clients reach this Slipway at, for links back (GitHub statuses' `log_url`).
    pub public_url: Option<String>,
    /// Reporting deployment statuses to GitHub.
    #[serde(default)]
    pub github: GithubConfig,
}

/// `[github]`: where to post deployment statuses (`SLIPWAY_GITHUB_TOKEN`,
/// `SLIPWAY_GITHUB_API_URL`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct GithubConfig {
    /// A token that may write deployment statuses; statuses are posted only when it is set.
    pub token: Option<Secret>,
    /// GitHub's REST API (GitHub Enterprise Server: `https://HOST/api/v3`).
    pub api_url: String,
}

impl Default for GithubConfig {
    fn default() -> Self {
        Self {
            token: None,
            api_url: "https://api.github.com".into(),
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8080".into(),
            database_url: None,
            database_max_connections: 20,
            body_limit: 1024 * 1024,
            request_timeout: DurationSpec::from_secs(30),
            rate_limit_per_second: 100,
            rate_limit_burst: 200,
            webhook_rate_limit_per_second: 10,
            webhook_rate_limit_burst: 50,
            idempotency_ttl: DurationSpec::from_secs(24 * 3600),
            create_batch_max: slipway_engine::create_batch::DEFAULT_MAX_BATCH,
            cors_allowed_origins: Vec::new(),
            log_format: LogFormat::Json,
            log_level: "info".into(),
            dev_state_dir: None,
            workers: 64,
            lease_ttl: DurationSpec::from_secs(30),
            poll_interval_ms: 1_000,
            chain_steps: 32,
            runtime_threads: 0,
            sim_ready_after: DurationSpec::from_secs(0),
            sim_state_dir: None,
            auth_enabled: true,
            jwt_issuer: "slipway".into(),
            jwt_audience: "slipway".into(),
            jwt_secret: None,
            jwt_public_keys: Vec::new(),
            jwks_path: None,
            bootstrap_admins: Vec::new(),
            kube_qps: slipway_cluster::KubeSettings::default().qps,
            kube_burst: slipway_cluster::KubeSettings::default().burst,
            secrets_key: None,
            public_url: None,
            github: GithubConfig::default(),
        }
    }
}

/// A rate limit's two keys (per second, burst) hold values the limiter takes.
fn check_rate_limit(
    (per_second_key, burst_key): (&'static str, &'static str),
    limit: slipway_api::rate_limit::RateLimit,
) -> Result<(), ConfigError> {
    if limit.per_second > 1_000_000 {
        return Err(ConfigError::Invalid {
            key: per_second_key,
            message: "must be at most 1000000 (0 turns the limit off)".into(),
        });
    }
    if limit.per_second > 0 && !(1..=1_000_000).contains(&limit.burst) {
        return Err(ConfigError::Invalid {
            key: burst_key,
            message: format!("must be between 1 and 1000000 while {per_second_key} is on"),
        });
    }
    Ok(())
}

/// Most runtime threads accepted.
const MAX_RUNTIME_THREADS: usize = 1024;

/// The runtime threads `runtime_threads = 0` picks on `cores` cores: all but one, at least one.
fn automatic_threads(cores: usize) -> usize {
    cores.saturating_sub(1).max(1)
}

const KEYS: [&str; 33] = [
    "auth_enabled",
    "jwt_issuer",
    "jwt_audience",
    "jwt_secret",
    "jwt_public_keys",
    "jwks_path",
    "bootstrap_admins",
    "kube_qps",
    "kube_burst",
    "secrets_key",
    "public_url",
    "workers",
    "lease_ttl",
    "poll_interval_ms",
    "chain_steps",
    "runtime_threads",
    "sim_ready_after",
    "sim_state_dir",
    "listen",
    "database_url",
    "database_max_connections",
    "body_limit",
    "request_timeout",
    "rate_limit_per_second",
    "rate_limit_burst",
    "webhook_rate_limit_per_second",
    "webhook_rate_limit_burst",
    "idempotency_ttl",
    "create_batch_max",
    "cors_allowed_origins",
    "log_format",
    "log_level",
    "dev_state_dir",
];

fn list_or_csv<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        List(Vec<String>),
        Csv(String),
    }
    Ok(match Raw::deserialize(d)? {
        Raw::List(list) => list,
        Raw::Csv(csv) => csv
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect(),
    })
}

/// A configuration that cannot be used; the message names the key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The message already holds figment's whole explanation, so it is not a `source` too.
    #[error("configuration: {0}")]
    Load(Box<figment::Error>),
    #[error("configuration key `{key}`: {message}")]
    Invalid { key: &'static str, message: String },
}

/// Flag values that override everything else (unset flags are `None`).
#[derive(Debug, Default, Serialize)]
pub struct Overrides {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listen: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dev_state_dir: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log_format: Option<LogFormat>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub workers: Option<usize>,
}

impl Config {
    /// Loads the layers. `file` is read when it exists; naming a missing file is an error.
    pub fn load(
        file: Option<&Path>,
        defaults: Config,
        overrides: &Overrides,
    ) -> Result<Self, ConfigError> {
        let mut figment = Figment::from(Serialized::defaults(defaults));
        match file {
            Some(path) if !path.exists() => {
                return Err(ConfigError::Invalid {
                    key: "--config",
                    message: format!("file {} does not exist", path.display()),
                });
            }
            Some(path) => figment = figment.merge(Toml::file_exact(path)),
            None => figment = figment.merge(Toml::file("slipway.toml")),
        }
        let config: Config = figment
            .merge(
                Env::raw()
                    .only(&["DATABASE_URL"])
                    .map(|_| "database_url".into()),
            )
            .merge(Env::prefixed("SLIPWAY_").only(&KEYS))
            .merge(
                Env::prefixed("SLIPWAY_GITHUB_")
                    .only(&["token", "api_url"])
                    .map(|key| format!("github.{key}").into()),
            )
            .merge(Serialized::defaults(overrides))
            .extract()
            .map_err(|e| ConfigError::Load(Box::new(e)))?;
        config.validate()?;
        Ok(config)
    }

    /// The async runtime's worker threads: `runtime_threads`, or when that is 0, one less than
    /// the cores this process may use (its CPU quota counts), at least one. Slipway's threads
    /// mostly wait on the database and the clusters, and PostgreSQL, the kernel's network
    /// stack or neighbouring containers usually share the cores: a thread on every core then
    /// competes with the database for each of them, and a wake-up that crosses threads costs
    /// more than the second thread gives (measured in bench/README.md, *One connection per
    /// writer task, one runtime thread per spare core*; decision 063).
    pub fn runtime_threads(&self) -> usize {
        if self.runtime_threads > 0 {
            return self.runtime_threads;
        }
        automatic_threads(
            std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get),
        )
    }

    /// Checks what types alone cannot.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |key, message: String| Err(ConfigError::Invalid { key, message });
        if let Err(e) = self.listen.parse::<SocketAddr>() {
            return invalid(
                "listen",
                format!(
                    "{:?} is not an address like 127.0.0.1:8080: {e}",
                    self.listen
                ),
            );
        }
        if let Some(url) = &self.database_url {
            let url = url.expose();
            if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
                return invalid(
                    "database_url",
                    "must be a postgres:// or postgresql:// URL".into(),
                );
            }
        }
        if !(1..=1_000).contains(&self.database_max_connections) {
            return invalid(
                "database_max_connections",
                "must be between 1 and 1000".into(),
            );
        }
        if !(1_024..=64 * 1024 * 1024).contains(&self.body_limit) {
            return invalid(
                "body_limit",
                "must be between 1024 and 67108864 bytes".into(),
            );
        }
        if !(1..=600).contains(&self.request_timeout.as_secs()) {
            return invalid("request_timeout", "must be between 1s and 10m".into());
        }
        check_rate_limit(
            ("rate_limit_per_second", "rate_limit_burst"),
            self.rate_limit(),
        )?;
        check_rate_limit(
            ("webhook_rate_limit_per_second", "webhook_rate_limit_burst"),
            self.webhook_rate_limit(),
        )?;
        if !(60..=30 * 86_400).contains(&self.idempotency_ttl.as_secs()) {
            return invalid("idempotency_ttl", "must be between 1m and 30d".into());
        }
        if !(1..=slipway_engine::create_batch::MAX_BATCH_LIMIT).contains(&self.create_batch_max) {
            return invalid(
                "create_batch_max",
                format!(
                    "must be between 1 and {}",
                    slipway_engine::create_batch::MAX_BATCH_LIMIT
                ),
            );
        }
        if !(1..=1_024).contains(&self.workers) {
            return invalid("workers", "must be between 1 and 1024".into());
        }
        if !(3..=3_600).contains(&self.lease_ttl.as_secs()) {
            return invalid("lease_ttl", "must be between 3s and 1h".into());
        }
        if !(10..=60_000).contains(&self.poll_interval_ms) {
            return invalid("poll_interval_ms", "must be between 10 and 60000".into());
        }
        if self.runtime_threads > MAX_RUNTIME_THREADS {
            return invalid(
                "runtime_threads",
                format!("must be between 0 (automatic) and {MAX_RUNTIME_THREADS}"),
            );
        }
        if !(1..=1_000).contains(&self.chain_steps) {
            return invalid("chain_steps", "must be between 1 and 1000".into());
        }
        if self
            .jwt_secret
            .as_ref()
            .is_some_and(|s| s.expose().len() < slipway_api::auth::jwt::MIN_SECRET_LEN)
        {
            return invalid(
                "jwt_secret",
                format!(
                    "must be at least {} bytes",
                    slipway_api::auth::jwt::MIN_SECRET_LEN
                ),
            );
        }
        for (key, value) in [
            ("jwt_issuer", &self.jwt_issuer),
            ("jwt_audience", &self.jwt_audience),
        ] {
            if value.trim().is_empty() {
                return invalid(key, "must not be empty".into());
            }
        }
        if !(1..=10_000).contains(&self.kube_qps) {
            return invalid("kube_qps", "must be between 1 and 10000".into());
        }
        if !(1..=10_000).contains(&self.kube_burst) {
            return invalid("kube_burst", "must be between 1 and 10000".into());
        }
        if let Some(key) = &self.secrets_key
            && let Err(e) = slipway_engine::secrets::SecretsKey::from_base64(key.expose())
        {
            return invalid("secrets_key", e.to_string());
        }
        for (key, url) in [
            ("public_url", self.public_url.as_deref()),
            ("github.api_url", Some(self.github.api_url.as_str())),
        ] {
            if let Some(url) = url
                && !(url.starts_with("https://") || url.starts_with("http://"))
            {
                return invalid(key, format!("{url:?} is not an http(s) URL"));
            }
        }
        if let Some(token) = &self.github.token
            && (token.expose().is_empty() || token.expose().chars().any(char::is_whitespace))
        {
            return invalid("github.token", "must be a token without whitespace".into());
        }
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(&self.log_level) {
            return invalid("log_level", e.to_string());
        }
        Ok(())
    }

    pub fn listen_addr(&self) -> Result<SocketAddr, ConfigError> {
        self.listen.parse().map_err(|e| ConfigError::Invalid {
            key: "listen",
            message: format!("{e}"),
        })
    }

    pub fn engine_settings(&self, worker: String) -> slipway_engine::EngineSettings {
        slipway_engine::EngineSettings {
            concurrency: self.workers,
            lease_ttl: self.lease_ttl.as_std(),
            poll_interval: std::time::Duration::from_millis(self.poll_interval_ms),
            chain_steps: self.chain_steps,
            ..slipway_engine::EngineSettings::new(worker)
        }
    }

    /// Webhook deliveries each app may receive (`webhook_rate_limit_per_second` 0: off).
    pub fn webhook_rate_limit(&self) -> slipway_api::rate_limit::RateLimit {
        slipway_api::rate_limit::RateLimit {
            per_second: self.webhook_rate_limit_per_second,
            burst: self.webhook_rate_limit_burst,
        }
    }

    /// Requests each principal may send (`rate_limit_per_second` 0: off).
    pub fn rate_limit(&self) -> slipway_api::rate_limit::RateLimit {
        slipway_api::rate_limit::RateLimit {
            per_second: self.rate_limit_per_second,
            burst: self.rate_limit_burst,
        }
    }

    /// The API's settings; reads the configured key files, so it fails (naming the key) on
    /// a key that cannot be used, or when authentication is on without any key.
    pub fn api_settings(&self) -> Result<slipway_api::ApiSettings, ConfigError> {
        Ok(slipway_api::ApiSettings {
            body_limit: self.body_limit,
            request_timeout: self.request_timeout.as_std(),
            idempotency_ttl: self.idempotency_ttl.as_std(),
            create_batch_max: self.create_batch_max,
            cors_allowed_origins: self.cors_allowed_origins.clone(),
            rate_limit: self.rate_limit(),
            webhook_rate_limit: self.webhook_rate_limit(),
            secrets_key: self
                .secrets_key
                .as_ref()
                .and_then(|k| slipway_engine::secrets::SecretsKey::from_base64(k.expose()).ok()),
            auth: self.auth_settings()?,
        })
    }

    /// How the API authenticates callers.
    pub fn auth_settings(&self) -> Result<AuthSettings, ConfigError> {
        if !self.auth_enabled {
            return Ok(AuthSettings::disabled());
        }
        let mut verifier = TokenVerifier::new(&self.jwt_issuer, &self.jwt_audience);
        if let Some(secret) = &self.jwt_secret {
            verifier = verifier
                .with_secret(secret.expose().as_bytes())
                .map_err(|e| ConfigError::Invalid {
                    key: "jwt_secret",
                    message: e.to_string(),
                })?;
        }
        for path in &self.jwt_public_keys {
            let invalid = |message: String| ConfigError::Invalid {
                key: "jwt_public_keys",
                message: format!("{path}: {message}"),
            };
            let path = Path::new(path);
            let kid = path
                .file_stem()
                .and_then(|s| s.to_str())
                .ok_or_else(|| invalid("the file name (the key's kid) is not text".into()))?;
            let pem = std::fs::read(path).map_err(|e| invalid(e.to_string()))?;
            verifier = verifier
                .with_pem(kid, &pem)
                .map_err(|e| invalid(e.to_string()))?;
        }
        if let Some(path) = &self.jwks_path {
            let invalid = |message: String| ConfigError::Invalid {
                key: "jwks_path",
                message: format!("{}: {message}", path.display()),
            };
            let document = std::fs::read_to_string(path).map_err(|e| invalid(e.to_string()))?;
            verifier = verifier
                .with_jwks(&document)
                .map_err(|e| invalid(e.to_string()))?;
        }
        if verifier.is_empty() {
            return Err(ConfigError::Invalid {
                key: "jwt_secret",
                message: "authentication is on (auth_enabled) but no key is configured: set \
                          jwt_secret (SLIPWAY_JWT_SECRET), jwt_public_keys or jwks_path, or set \
                          auth_enabled = false (SLIPWAY_AUTH_ENABLED=false) to run without it"
                    .into(),
            });
        }
        let admins = BootstrapAdmins::parse(&self.bootstrap_admins);
        if admins == BootstrapAdmins::default() {
            tracing::warn!(
                "no bootstrap_admins are configured: nobody can create apps, register clusters or bind roles"
            );
        }
        Ok(AuthSettings::jwt(verifier, admins))
    }

    /// Where GitHub deployment statuses go, when a token is configured.
    pub fn github_status_settings(
        &self,
    ) -> Option<slipway_engine::github_status::GithubStatusSettings> {
        let token = self.github.token.as_ref()?;
        let mut settings = slipway_engine::github_status::GithubStatusSettings::new(
            self.github.api_url.clone(),
            token.expose(),
        );
        settings.public_url = self.public_url.clone();
        settings.poll_interval = std::time::Duration::from_millis(self.poll_interval_ms);
        Some(settings)
    }
}

#[cfg(test)]
mod tests {
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
            database_url: Some(Secret::new("postgres://u:hunter2@db/x")),
            jwt_secret: Some(Secret::new("a-jwt-secret-that-is-long-enough-hunter3")),
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
        assert!(message.contains("`jwt_secret`"), "{message}");
        let off = Config {
            auth_enabled: false,
            ..Config::default()
        };
        assert!(off.auth_settings().is_ok_and(|a| !a.enabled()));
        let short = Config {
            jwt_secret: Some(Secret::new("short")),
            ..Config::default()
        };
        let message = validation_error(&short);
        assert!(message.contains("`jwt_secret`"), "{message}");
        let missing = Config {
            jwks_path: Some("/nonexistent/jwks.json".into()),
            ..Config::default()
        };
        let message = missing
            .auth_settings()
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(message.contains("`jwks_path`"), "{message}");
    }

    #[test]
    fn webhook_secrets_do_not_print_and_bad_keys_are_named() {
        let config = Config {
            secrets_key: Some(Secret::new("c2VjcmV0LWtleS1zZWNyZXQta2V5LXNlY3JldC1rZXk=")),
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
            secrets_key: Some(Secret::new("c2hvcnQ=")),
            ..Config::default()
        };
        let message = validation_error(&short_key);
        assert!(message.contains("`secrets_key`"), "{message}");
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
            rate_limit_burst: 0,
            ..Config::default()
        };
        let message = validation_error(&no_burst);
        assert!(message.contains("`rate_limit_burst`"), "{message}");
        let off = Config {
            rate_limit_per_second: 0,
            rate_limit_burst: 0,
            ..Config::default()
        };
        assert!(off.validate().is_ok());
        let webhooks = Config::default().webhook_rate_limit();
        assert_eq!((webhooks.per_second, webhooks.burst), (10, 50));
        let no_burst = Config {
            webhook_rate_limit_burst: 0,
            ..Config::default()
        };
        let message = validation_error(&no_burst);
        assert!(message.contains("`webhook_rate_limit_burst`"), "{message}");
    }

    #[test]
    fn create_batch_max_is_bounded_and_reaches_the_api() {
        for wrong in [0, slipway_engine::create_batch::MAX_BATCH_LIMIT + 1] {
            let bad = Config {
                create_batch_max: wrong,
                ..Config::default()
            };
            let message = validation_error(&bad);
            assert!(message.contains("`create_batch_max`"), "{wrong}: {message}");
        }
        let one = Config {
            create_batch_max: 1,
            auth_enabled: false,
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
            runtime_threads: 3,
            ..Config::default()
        };
        assert_eq!(three.runtime_threads(), 3);
        let too_many = Config {
            runtime_threads: MAX_RUNTIME_THREADS + 1,
            ..Config::default()
        };
        let message = validation_error(&too_many);
        assert!(message.contains("`runtime_threads`"), "{message}");
    }

    #[test]
    fn chain_steps_is_bounded_and_reaches_the_engine() {
        for wrong in [0, 1_001] {
            let bad = Config {
                chain_steps: wrong,
                ..Config::default()
            };
            let message = validation_error(&bad);
            assert!(message.contains("`chain_steps`"), "{wrong}: {message}");
        }
        let one = Config {
            chain_steps: 1,
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
            listen: "nowhere".into(),
            ..Config::default()
        };
        let message = validation_error(&bad);
        assert!(message.contains("`listen`"), "{message}");
        let bad = Config {
            database_url: Some(Secret::new("mysql://x")),
            ..Config::default()
        };
        let message = validation_error(&bad);
        assert!(message.contains("`database_url`"), "{message}");
        let bad = Config {
            kube_qps: 0,
            ..Config::default()
        };
        let message = validation_error(&bad);
        assert!(message.contains("`kube_qps`"), "{message}");
    }
}
