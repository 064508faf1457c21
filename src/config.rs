//! Configuration, layered: built-in defaults → `slipway.toml` → `SLIPWAY_*` environment
//! variables (and `DATABASE_URL`) → command-line flags. Validated once at start-up; every
//! error names the key that is wrong.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use figment::Figment;
use figment::providers::{Format, Serialized, Toml};
use serde::{Deserialize, Serialize};
use slipway_api::auth::{AuthSettings, BootstrapAdmins, TokenVerifier};

mod keys;
mod sections;

use keys::{Sectioned, Variables};
pub use sections::{
    ApiConfig, AuthConfig, DatabaseConfig, DevConfig, EngineConfig, GithubConfig, KubeConfig,
    LogConfig, RateLimitConfig, SecretsConfig, ServerConfig, SimConfig,
};

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

/// Every setting, with its default, in sections: `[database] url` in the file,
/// `SLIPWAY_DATABASE_URL` in the environment (the module [`keys`] derives the names).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub server: ServerConfig,
    pub database: DatabaseConfig,
    pub api: ApiConfig,
    /// `[rate_limit]`: requests each principal (token subject) may send; above it the API
    /// answers 429 with `Retry-After`.
    pub rate_limit: RateLimitConfig,
    /// `[webhook_rate_limit]`: webhook deliveries each app may receive, counted before any
    /// signature is checked; above it the webhooks answer 429.
    pub webhook_rate_limit: RateLimitConfig,
    pub log: LogConfig,
    pub engine: EngineConfig,
    pub auth: AuthConfig,
    pub kube: KubeConfig,
    pub sim: SimConfig,
    pub dev: DevConfig,
    pub secrets: SecretsConfig,
    /// Reporting deployment statuses to GitHub.
    #[serde(default)]
    pub github: GithubConfig,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            server: ServerConfig::default(),
            database: DatabaseConfig::default(),
            api: ApiConfig::default(),
            rate_limit: RateLimitConfig {
                per_second: 100,
                burst: 200,
            },
            webhook_rate_limit: RateLimitConfig {
                per_second: 10,
                burst: 50,
            },
            log: LogConfig::default(),
            engine: EngineConfig::default(),
            auth: AuthConfig::default(),
            kube: KubeConfig::default(),
            sim: SimConfig::default(),
            dev: DevConfig::default(),
            secrets: SecretsConfig::default(),
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
#[derive(Debug, Default)]
pub struct Overrides {
    pub listen: Option<String>,
    pub dev_state_dir: Option<PathBuf>,
    pub log_format: Option<LogFormat>,
    pub workers: Option<usize>,
}

impl Overrides {
    /// `figment` with the flags that are set merged over it, at their keys.
    fn merged_over(&self, figment: Figment) -> Figment {
        fn set<T: Serialize>(figment: Figment, key: &str, value: Option<&T>) -> Figment {
            match value {
                Some(value) => figment.merge(Serialized::default(key, value)),
                None => figment,
            }
        }
        let figment = set(figment, "server.listen", self.listen.as_ref());
        let figment = set(figment, "dev.state_dir", self.dev_state_dir.as_ref());
        let figment = set(figment, "log.format", self.log_format.as_ref());
        set(figment, "engine.workers", self.workers.as_ref())
    }
}

impl Config {
    /// Loads the layers. `file` is read when it exists; naming a missing file is an error.
    pub fn load(
        file: Option<&Path>,
        defaults: Config,
        overrides: &Overrides,
    ) -> Result<Self, ConfigError> {
        Self::load_with_env(file, defaults, overrides, Variables::process())
    }

    /// [`Config::load`] with the environment's variables given.
    fn load_with_env(
        file: Option<&Path>,
        defaults: Config,
        overrides: &Overrides,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        let keys = keys::keys(&defaults).map_err(ConfigError::Load)?;
        let mut figment = Figment::from(Serialized::defaults(defaults));
        match file {
            Some(path) if !path.exists() => {
                return Err(ConfigError::Invalid {
                    key: "--config",
                    message: format!("file {} does not exist", path.display()),
                });
            }
            Some(path) => figment = figment.merge(Sectioned(Toml::file_exact(path))),
            None => figment = figment.merge(Sectioned(Toml::file("slipway.toml"))),
        }
        let figment = figment.merge(Variables::new(&keys, env));
        let config: Config = overrides
            .merged_over(figment)
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
        if self.server.runtime_threads > 0 {
            return self.server.runtime_threads;
        }
        automatic_threads(
            std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get),
        )
    }

    /// Checks what types alone cannot.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |key, message: String| Err(ConfigError::Invalid { key, message });
        if let Err(e) = self.server.listen.parse::<SocketAddr>() {
            return invalid(
                "server.listen",
                format!(
                    "{:?} is not an address like 127.0.0.1:8080: {e}",
                    self.server.listen
                ),
            );
        }
        if let Some(url) = &self.database.url {
            let url = url.expose();
            if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
                return invalid(
                    "database.url",
                    "must be a postgres:// or postgresql:// URL".into(),
                );
            }
        }
        if !(1..=1_000).contains(&self.database.max_connections) {
            return invalid(
                "database.max_connections",
                "must be between 1 and 1000".into(),
            );
        }
        if !(1_024..=64 * 1024 * 1024).contains(&self.api.body_limit) {
            return invalid(
                "api.body_limit",
                "must be between 1024 and 67108864 bytes".into(),
            );
        }
        if !(1..=600).contains(&self.api.request_timeout.as_secs()) {
            return invalid("api.request_timeout", "must be between 1s and 10m".into());
        }
        check_rate_limit(
            ("rate_limit.per_second", "rate_limit.burst"),
            self.rate_limit(),
        )?;
        check_rate_limit(
            ("webhook_rate_limit.per_second", "webhook_rate_limit.burst"),
            self.webhook_rate_limit(),
        )?;
        if !(60..=30 * 86_400).contains(&self.api.idempotency_ttl.as_secs()) {
            return invalid("api.idempotency_ttl", "must be between 1m and 30d".into());
        }
        if !(1..=slipway_engine::create_batch::MAX_BATCH_LIMIT).contains(&self.api.create_batch_max)
        {
            return invalid(
                "api.create_batch_max",
                format!(
                    "must be between 1 and {}",
                    slipway_engine::create_batch::MAX_BATCH_LIMIT
                ),
            );
        }
        if !(1..=1_024).contains(&self.engine.workers) {
            return invalid("engine.workers", "must be between 1 and 1024".into());
        }
        if !(3..=3_600).contains(&self.engine.lease_ttl.as_secs()) {
            return invalid("engine.lease_ttl", "must be between 3s and 1h".into());
        }
        if !(10..=60_000).contains(&self.engine.poll_interval_ms) {
            return invalid(
                "engine.poll_interval_ms",
                "must be between 10 and 60000".into(),
            );
        }
        if self.server.runtime_threads > MAX_RUNTIME_THREADS {
            return invalid(
                "server.runtime_threads",
                format!("must be between 0 (automatic) and {MAX_RUNTIME_THREADS}"),
            );
        }
        if !(1..=1_000).contains(&self.engine.chain_steps) {
            return invalid("engine.chain_steps", "must be between 1 and 1000".into());
        }
        if self
            .auth
            .jwt_secret
            .as_ref()
            .is_some_and(|s| s.expose().len() < slipway_api::auth::jwt::MIN_SECRET_LEN)
        {
            return invalid(
                "auth.jwt_secret",
                format!(
                    "must be at least {} bytes",
                    slipway_api::auth::jwt::MIN_SECRET_LEN
                ),
            );
        }
        for (key, value) in [
            ("auth.jwt_issuer", &self.auth.jwt_issuer),
            ("auth.jwt_audience", &self.auth.jwt_audience),
        ] {
            if value.trim().is_empty() {
                return invalid(key, "must not be empty".into());
            }
        }
        if !(1..=10_000).contains(&self.kube.qps) {
            return invalid("kube.qps", "must be between 1 and 10000".into());
        }
        if !(1..=10_000).contains(&self.kube.burst) {
            return invalid("kube.burst", "must be between 1 and 10000".into());
        }
        if let Some(key) = &self.secrets.key
            && let Err(e) = slipway_engine::secrets::SecretsKey::from_base64(key.expose())
        {
            return invalid("secrets.key", e.to_string());
        }
        for (key, url) in [
            ("server.public_url", self.server.public_url.as_deref()),
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
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(&self.log.level) {
            return invalid("log.level", e.to_string());
        }
        Ok(())
    }

    pub fn listen_addr(&self) -> Result<SocketAddr, ConfigError> {
        self.server
            .listen
            .parse()
            .map_err(|e| ConfigError::Invalid {
                key: "server.listen",
                message: format!("{e}"),
            })
    }

    pub fn engine_settings(&self, worker: String) -> slipway_engine::EngineSettings {
        slipway_engine::EngineSettings {
            concurrency: self.engine.workers,
            lease_ttl: self.engine.lease_ttl.as_std(),
            poll_interval: std::time::Duration::from_millis(self.engine.poll_interval_ms),
            chain_steps: self.engine.chain_steps,
            ..slipway_engine::EngineSettings::new(worker)
        }
    }

    /// Webhook deliveries each app may receive (`webhook_rate_limit.per_second` 0: off).
    pub fn webhook_rate_limit(&self) -> slipway_api::rate_limit::RateLimit {
        self.webhook_rate_limit.into()
    }

    /// Requests each principal may send (`rate_limit.per_second` 0: off).
    pub fn rate_limit(&self) -> slipway_api::rate_limit::RateLimit {
        self.rate_limit.into()
    }

    /// The API's settings; reads the configured key files, so it fails (naming the key) on
    /// a key that cannot be used, or when authentication is on without any key.
    pub fn api_settings(&self) -> Result<slipway_api::ApiSettings, ConfigError> {
        Ok(slipway_api::ApiSettings {
            body_limit: self.api.body_limit,
            request_timeout: self.api.request_timeout.as_std(),
            idempotency_ttl: self.api.idempotency_ttl.as_std(),
            create_batch_max: self.api.create_batch_max,
            cors_allowed_origins: self.api.cors_allowed_origins.clone(),
            rate_limit: self.rate_limit(),
            webhook_rate_limit: self.webhook_rate_limit(),
            secrets_key: self
                .secrets
                .key
                .as_ref()
                .and_then(|k| slipway_engine::secrets::SecretsKey::from_base64(k.expose()).ok()),
            auth: self.auth_settings()?,
        })
    }

    /// How the API authenticates callers.
    pub fn auth_settings(&self) -> Result<AuthSettings, ConfigError> {
        if !self.auth.enabled {
            return Ok(AuthSettings::disabled());
        }
        let mut verifier = TokenVerifier::new(&self.auth.jwt_issuer, &self.auth.jwt_audience);
        if let Some(secret) = &self.auth.jwt_secret {
            verifier = verifier
                .with_secret(secret.expose().as_bytes())
                .map_err(|e| ConfigError::Invalid {
                    key: "auth.jwt_secret",
                    message: e.to_string(),
                })?;
        }
        for path in &self.auth.jwt_public_keys {
            let invalid = |message: String| ConfigError::Invalid {
                key: "auth.jwt_public_keys",
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
        if let Some(path) = &self.auth.jwks_path {
            let invalid = |message: String| ConfigError::Invalid {
                key: "auth.jwks_path",
                message: format!("{}: {message}", path.display()),
            };
            let document = std::fs::read_to_string(path).map_err(|e| invalid(e.to_string()))?;
            verifier = verifier
                .with_jwks(&document)
                .map_err(|e| invalid(e.to_string()))?;
        }
        if verifier.is_empty() {
            return Err(ConfigError::Invalid {
                key: "auth.jwt_secret",
                message: "authentication is on (auth.enabled) but no key is configured: set \
                          auth.jwt_secret (SLIPWAY_AUTH_JWT_SECRET, or SLIPWAY_JWT_SECRET), \
                          auth.jwt_public_keys or auth.jwks_path, or set auth.enabled = false \
                          (SLIPWAY_AUTH_ENABLED=false) to run without it"
                    .into(),
            });
        }
        let admins = BootstrapAdmins::parse(&self.auth.bootstrap_admins);
        if admins == BootstrapAdmins::default() {
            tracing::warn!(
                "no auth.bootstrap_admins are configured: nobody can create apps, register clusters or bind roles"
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
        settings.public_url = self.server.public_url.clone();
        settings.poll_interval = std::time::Duration::from_millis(self.engine.poll_interval_ms);
        Some(settings)
    }
}

#[cfg(test)]
mod tests;
