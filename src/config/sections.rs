//! The sections of [`Config`](super::Config), each with its defaults.

use std::path::PathBuf;

use serde::{Deserialize, Deserializer, Serialize};
use slipway_core::DurationSpec;

use super::{LogFormat, Secret};

/// `[server]`: this process.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// Address the API listens on.
    pub listen: String,
    /// Worker threads of the async runtime; 0 picks one less than the cores this process may
    /// use, at least one ([`Config::runtime_threads`](super::Config::runtime_threads)).
    pub runtime_threads: usize,
    /// The URL clients reach this Slipway at, for links back (GitHub statuses' `log_url`).
    pub public_url: Option<String>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8080".into(),
            runtime_threads: 0,
            public_url: None,
        }
    }
}

/// `[database]`: the PostgreSQL everything is recorded in.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseConfig {
    /// PostgreSQL URL; `slipway dev` starts its own database when this is unset.
    pub url: Option<Secret>,
    pub max_connections: u32,
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        Self {
            url: None,
            max_connections: 20,
        }
    }
}

/// `[api]`: the HTTP API's limits.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiConfig {
    /// Largest request body, in bytes.
    pub body_limit: usize,
    pub request_timeout: DurationSpec,
    /// How long a stored idempotent response is replayed.
    pub idempotency_ttl: DurationSpec,
    /// Most deployment creates written by one statement (group commit; 1 writes each alone).
    pub create_batch_max: usize,
    /// Origins allowed by CORS (a list, or a comma-separated string); empty turns CORS off.
    #[serde(deserialize_with = "list_or_csv")]
    pub cors_allowed_origins: Vec<String>,
}

impl Default for ApiConfig {
    fn default() -> Self {
        Self {
            body_limit: 1024 * 1024,
            request_timeout: DurationSpec::from_secs(30),
            idempotency_ttl: DurationSpec::from_secs(24 * 3600),
            create_batch_max: slipway_engine::create_batch::DEFAULT_MAX_BATCH,
            cors_allowed_origins: Vec::new(),
        }
    }
}

/// A token bucket: `burst` at once after being idle, then `per_second` on average.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitConfig {
    /// 0 turns the limit off.
    pub per_second: u32,
    pub burst: u32,
}

impl From<RateLimitConfig> for slipway_api::rate_limit::RateLimit {
    fn from(limit: RateLimitConfig) -> Self {
        Self {
            per_second: limit.per_second,
            burst: limit.burst,
        }
    }
}

/// `[log]`: how this process logs.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    pub format: LogFormat,
    /// A tracing filter, e.g. `info` or `slipway=debug,info` (`RUST_LOG` overrides it).
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            format: LogFormat::Json,
            level: "info".into(),
        }
    }
}

/// `[engine]`: the deployment workers.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EngineConfig {
    /// Deployment steps this process runs at once.
    pub workers: usize,
    /// How long a worker's claim on a deployment lasts without a heartbeat.
    pub lease_ttl: DurationSpec,
    /// How often workers look for due work when no notification wakes them.
    pub poll_interval_ms: u64,
    /// Steps a worker runs for one claim while the deployment is due again at once (1 gives
    /// the lease back after every step).
    pub chain_steps: usize,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            workers: 64,
            lease_ttl: DurationSpec::from_secs(30),
            poll_interval_ms: 1_000,
            chain_steps: 32,
        }
    }
}

/// `[auth]`: who may call the API.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    /// Require a bearer JWT on the API (`slipway dev` turns it off by default).
    pub enabled: bool,
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
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            jwt_issuer: "slipway".into(),
            jwt_audience: "slipway".into(),
            jwt_secret: None,
            jwt_public_keys: Vec::new(),
            jwks_path: None,
            bootstrap_admins: Vec::new(),
        }
    }
}

/// `[kube]`: client-side rate limit of each Kubernetes cluster's client: requests per second
/// on average, and how many may go at once (docs/kubernetes.md).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KubeConfig {
    pub qps: u32,
    pub burst: u32,
}

impl Default for KubeConfig {
    fn default() -> Self {
        let settings = slipway_cluster::KubeSettings::default();
        Self {
            qps: settings.qps,
            burst: settings.burst,
        }
    }
}

/// `[sim]`: the simulated cluster.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SimConfig {
    /// How long a pod of the simulated cluster takes to become ready.
    pub ready_after: DurationSpec,
    /// A directory holding the simulated cluster's state, shared by every process that names
    /// it (several engine processes on one machine); unset keeps it in this process's memory.
    pub state_dir: Option<PathBuf>,
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            ready_after: DurationSpec::from_secs(0),
            state_dir: None,
        }
    }
}

/// `[dev]`: `slipway dev`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DevConfig {
    /// Where `slipway dev` keeps its database (default depends on the user).
    pub state_dir: Option<PathBuf>,
}

/// `[secrets]`: sealing secrets at rest.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecretsConfig {
    /// Base64 of 32 random bytes: seals webhook secrets at rest. Triggers cannot be created
    /// without it, and changing it makes the stored secrets unusable.
    pub key: Option<Secret>,
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
