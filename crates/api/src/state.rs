//! What every handler shares.

use std::sync::Arc;
use std::time::Duration;

use metrics_exporter_prometheus::PrometheusHandle;
use slipway_engine::Drivers;
use slipway_store::PgPool;

use crate::auth::AuthSettings;
use crate::event_hub::EventHub;

/// Tunables of the HTTP surface.
#[derive(Debug, Clone)]
pub struct ApiSettings {
    /// Largest request body accepted (413 above).
    pub body_limit: usize,
    /// Longest a request may take (408 after).
    pub request_timeout: Duration,
    /// How long an idempotency key's stored response is replayed.
    pub idempotency_ttl: Duration,
    /// Origins allowed by CORS; empty turns CORS off.
    pub cors_allowed_origins: Vec<String>,
    /// How callers are authenticated (off by default here; `slipway serve` turns it on).
    pub auth: AuthSettings,
    /// Seals and opens webhook secrets; without it no trigger can be created.
    pub secrets_key: Option<slipway_engine::secrets::SecretsKey>,
    /// Requests per principal (off by default here; `slipway serve` turns it on).
    pub rate_limit: crate::rate_limit::RateLimit,
    /// Most deployment creates written by one statement (group commit; 1 writes each alone).
    pub create_batch_max: usize,
    /// Webhook deliveries per app, checked before any signature (off by default here;
    /// `slipway serve` turns it on).
    pub webhook_rate_limit: crate::rate_limit::RateLimit,
}

impl Default for ApiSettings {
    fn default() -> Self {
        Self {
            body_limit: 1024 * 1024,
            request_timeout: Duration::from_secs(30),
            idempotency_ttl: Duration::from_secs(24 * 3600),
            cors_allowed_origins: Vec::new(),
            auth: AuthSettings::disabled(),
            secrets_key: None,
            rate_limit: crate::rate_limit::RateLimit::OFF,
            create_batch_max: slipway_engine::create_batch::DEFAULT_MAX_BATCH,
            webhook_rate_limit: crate::rate_limit::RateLimit::OFF,
        }
    }
}

/// Shared by all handlers; cheap to clone (one reference count: every middleware layer and
/// handler clones it per request, and cloning each field's own `Arc` showed in the create
/// benchmark's profile: bench/README.md, "One `Arc` for the server's shared state").
#[derive(Debug, Clone)]
pub struct AppState(Arc<Shared>);

/// What [`AppState`] holds.
#[derive(Debug, Clone)]
pub struct Shared {
    pub pool: PgPool,
    pub settings: Arc<ApiSettings>,
    pub metrics: PrometheusHandle,
    pub events: EventHub,
    /// The cluster drivers (`GET /v1/clusters/{cluster}` asks them for reachability); share
    /// the engine's with [`AppState::with_drivers`] so a process has one client per cluster.
    pub drivers: Drivers,
    /// Environments as last read, for planning deployments without a query.
    pub environments: slipway_engine::intake::EnvironmentCache,
    /// Sends wake-up and event hints after the write they describe has committed.
    pub notifier: slipway_engine::Notifier,
    /// Per-principal token buckets (see [`crate::rate_limit`]).
    pub rate_limiter: Arc<crate::rate_limit::RateLimiter>,
    /// Writes concurrent deployment creates together (group commit).
    pub creates: slipway_engine::CreateBatcher,
    /// Per-app token buckets of webhook deliveries, taken before any signature is checked.
    pub webhook_rate_limiter: Arc<crate::rate_limit::RateLimiter>,
    /// Runs webhook signature checks off the async worker threads, a bounded number at once.
    pub verifier: crate::webhook::verify::Verifier,
}

impl std::ops::Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

impl AppState {
    /// State for one process; starts the event listener, so it must run inside Tokio.
    pub fn new(pool: PgPool, settings: ApiSettings) -> Self {
        Self(Arc::new(Shared {
            events: EventHub::start(pool.clone()),
            notifier: slipway_engine::Notifier::new(pool.clone()),
            creates: slipway_engine::CreateBatcher::new(pool.clone(), settings.create_batch_max),
            pool,
            rate_limiter: Arc::new(crate::rate_limit::RateLimiter::new(settings.rate_limit)),
            webhook_rate_limiter: Arc::new(crate::rate_limit::RateLimiter::new(
                settings.webhook_rate_limit,
            )),
            verifier: crate::webhook::verify::Verifier::per_core(),
            settings: Arc::new(settings),
            metrics: crate::metrics_handle(),
            drivers: Drivers::default(),
            environments: Default::default(),
        }))
    }

    /// The same state, using these cluster drivers.
    #[must_use]
    pub fn with_drivers(self, drivers: Drivers) -> Self {
        Self(Arc::new(Shared {
            drivers,
            ..Shared::clone(&self.0)
        }))
    }
}
