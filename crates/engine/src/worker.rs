//! The worker pool: claims due deployments and runs their steps, at most `concurrency` at
//! once, woken by NOTIFY and by polling. Any number of processes may share one database.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use slipway_store::leases::{self, Claim};
use slipway_store::rollouts::{self, Claimed};
use slipway_store::{PgPool, wake};
use tokio::sync::{Notify, Semaphore};
use tokio::task::JoinSet;

use crate::drivers::Drivers;
use crate::step::{self, StepContext, StepOutcome};

/// Tunables of one engine.
#[derive(Debug, Clone)]
pub struct EngineSettings {
    /// Names this worker in leases and the journal.
    pub worker: String,
    /// Steps run at once.
    pub concurrency: usize,
    /// How long a claim lasts without a heartbeat.
    pub lease_ttl: Duration,
    /// Look for due work at least this often, notifications or not.
    pub poll_interval: Duration,
    /// Retry delay after a retryable cluster error.
    pub retry_after: Duration,
    /// Fallback re-check of a queued deployment waiting for its environment.
    pub queue_recheck: Duration,
    /// Steps a worker may run for one claim, one after the other, while the deployment is
    /// due again at once (1: give the lease back after every step). See `step::run_claimed`.
    pub chain_steps: usize,
}

impl EngineSettings {
    pub fn new(worker: impl Into<String>) -> Self {
        Self {
            worker: worker.into(),
            concurrency: 64,
            lease_ttl: Duration::from_secs(30),
            poll_interval: Duration::from_secs(1),
            retry_after: Duration::from_secs(5),
            queue_recheck: Duration::from_secs(30),
            chain_steps: 32,
        }
    }
}

/// The engine of one process.
#[derive(Debug, Clone)]
pub struct Engine {
    ctx: StepContext,
    settings: EngineSettings,
    wake: Arc<Notify>,
}

fn chrono(d: Duration) -> chrono::Duration {
    chrono::Duration::from_std(d).unwrap_or(chrono::Duration::seconds(5))
}

impl StepContext {
    /// The context of the steps of a worker with `settings` (an [`Engine`]'s, or a test's
    /// that steps deployments by hand, without the engine's heartbeat).
    pub fn new(pool: PgPool, drivers: Drivers, settings: &EngineSettings) -> Self {
        Self {
            notifier: crate::notify::Notifier::new(pool.clone()),
            writer: crate::group_commit::StepWriter::new(pool.clone()),
            pool,
            drivers,
            worker: settings.worker.clone(),
            retry_after: chrono(settings.retry_after),
            queue_recheck: chrono(settings.queue_recheck),
            lease_ttl: settings.lease_ttl,
            // Well inside the lease, so that a chain never outlives the claim's wake-up
            // (`next_wake_at`, the claim's lease expiry), which tells a wake-up apart.
            chain_time: settings.lease_ttl / 3,
            stopping: Arc::new(AtomicBool::new(false)),
        }
    }
}

impl Engine {
    pub fn new(pool: PgPool, drivers: Drivers, settings: EngineSettings) -> Self {
        let ctx = StepContext::new(pool, drivers, &settings);
        Self {
            ctx,
            settings,
            wake: Arc::new(Notify::new()),
        }
    }

    /// Claims what is due (up to `limit`) and runs one step of each to its end, one after
    /// the other (no chaining). For deterministic tests; `run` is the production loop.
    pub async fn run_once(&self, limit: i64) -> Result<Vec<(Claim, StepOutcome)>, step::StepError> {
        let claims = self.claim(limit).await?;
        let mut done = Vec::with_capacity(claims.len());
        for claimed in claims {
            let claim = claimed.claim;
            done.push((claim, self.step_claimed(claimed, 1).await?));
        }
        Ok(done)
    }

    /// Leases due deployments and loads them with their pending commands: one statement.
    async fn claim(&self, limit: i64) -> Result<Vec<Claimed>, step::StepError> {
        let mut conn = self.ctx.pool.acquire().await?;
        Ok(rollouts::claim_due(
            &mut conn,
            &self.settings.worker,
            self.settings.lease_ttl,
            limit,
        )
        .await?)
    }

    /// Runs the steps of a claimed deployment (loading it first; as many as
    /// `chain_steps` allows, see `step::run_claimed`) while a heartbeat keeps the lease; if
    /// the lease is lost the step is dropped at its next await point.
    pub async fn step(&self, claim: Claim) -> Result<StepOutcome, step::StepError> {
        let heartbeat = heartbeat(self.ctx.pool.clone(), claim, self.settings.lease_ttl);
        tokio::select! {
            outcome = step::run(&self.ctx, claim, self.settings.chain_steps) => outcome,
            () = heartbeat => Ok(StepOutcome::LeaseLost),
        }
    }

    /// [`Engine::step`] for a deployment loaded by its claim, at most `max_steps` steps.
    async fn step_claimed(
        &self,
        claimed: Claimed,
        max_steps: usize,
    ) -> Result<StepOutcome, step::StepError> {
        let heartbeat = heartbeat(
            self.ctx.pool.clone(),
            claimed.claim,
            self.settings.lease_ttl,
        );
        tokio::select! {
            outcome = step::run_claimed(&self.ctx, claimed, max_steps) => outcome,
            () = heartbeat => Ok(StepOutcome::LeaseLost),
        }
    }

    /// The production loop: until `shutdown` resolves, claim due work whenever woken or at
    /// least every poll interval. On shutdown, running steps finish and leases are released.
    pub async fn run(&self, shutdown: impl std::future::Future<Output = ()>) {
        let listener = tokio::spawn(listen(self.ctx.pool.clone(), self.wake.clone()));
        let gauges = tokio::spawn(report_queue(self.ctx.pool.clone()));
        let permits = Arc::new(Semaphore::new(self.settings.concurrency.max(1)));
        let mut running = JoinSet::new();
        tokio::pin!(shutdown);
        tracing::info!(worker = %self.settings.worker, concurrency = self.settings.concurrency, "engine started");
        // While every worker is busy and more work is due, claim in batches: one claim
        // statement per `batch` finished steps rather than one per step.
        let batch = (self.settings.concurrency / 8).max(1);
        let mut saturated = false;
        loop {
            while running.try_join_next().is_some() {}
            let free = permits.available_permits();
            if free == 0 || (saturated && free < batch) {
                tokio::select! {
                    () = &mut shutdown => break,
                    // A step finished (or a NOTIFY came): look at the free workers again.
                    () = self.wake.notified() => {}
                    () = tokio::time::sleep(self.settings.poll_interval) => saturated = false,
                }
                continue;
            }
            let wanted = rollouts::claim_batch(i64::try_from(free).unwrap_or(1));
            let claims = match self.claim(wanted).await {
                Ok(claims) => claims,
                Err(e) => {
                    tracing::warn!(error = %e, "claiming work failed");
                    Vec::new()
                }
            };
            saturated = !claims.is_empty() && i64::try_from(claims.len()) == Ok(wanted);
            for claimed in claims {
                let Ok(permit) = permits.clone().acquire_owned().await else {
                    break;
                };
                let engine = self.clone();
                running.spawn(async move {
                    let claim = claimed.claim;
                    let chain = engine.settings.chain_steps;
                    if let Err(e) = engine.step_claimed(claimed, chain).await {
                        tracing::warn!(deployment = %claim.id, error = %e, "step failed; it will be retried");
                    }
                    drop(permit);
                    engine.wake.notify_one();
                });
            }
            if saturated {
                // More may be due: look again as soon as steps finish.
                continue;
            }
            tokio::select! {
                () = &mut shutdown => break,
                () = self.wake.notified() => {}
                () = tokio::time::sleep(self.settings.poll_interval) => {}
            }
        }
        self.ctx.stopping.store(true, Ordering::Relaxed);
        tracing::info!(
            in_flight = running.len(),
            "engine stopping: letting running steps finish"
        );
        while running.join_next().await.is_some() {}
        listener.abort();
        gauges.abort();
        match self.ctx.pool.acquire().await {
            Ok(mut conn) => match leases::release_all(&mut conn, &self.settings.worker).await {
                Ok(n) => tracing::info!(released = n, "engine stopped; leases released"),
                Err(e) => {
                    tracing::warn!(error = %e, "releasing leases failed; they expire on their own")
                }
            },
            Err(e) => {
                tracing::warn!(error = %e, "releasing leases failed; they expire on their own")
            }
        }
    }
}

/// Extends the lease every third of its life; resolves only when the lease is lost.
async fn heartbeat(pool: PgPool, claim: Claim, ttl: Duration) {
    let mut tick = tokio::time::interval(ttl / 3);
    tick.tick().await;
    loop {
        tick.tick().await;
        let beat = match pool.acquire().await {
            Ok(mut conn) => leases::heartbeat(&mut conn, claim, ttl).await,
            Err(e) => Err(e.into()),
        };
        match beat {
            Ok(()) => {}
            Err(slipway_store::StoreError::LeaseLost) => return,
            Err(e) => tracing::warn!(deployment = %claim.id, error = %e, "heartbeat failed"),
        }
    }
}

/// Publishes queue depth and age, and the number of active deployments, every 10 s.
async fn report_queue(pool: PgPool) {
    let mut tick = tokio::time::interval(Duration::from_secs(10));
    loop {
        tick.tick().await;
        let stats = match pool.acquire().await {
            Ok(mut conn) => slipway_store::rollouts::queue_stats(&mut conn).await,
            Err(e) => Err(e.into()),
        };
        match stats {
            Ok(s) => {
                metrics::gauge!("slipway_deployments_queued").set(s.queued as f64);
                metrics::gauge!("slipway_deployments_oldest_queued_age_seconds")
                    .set(s.oldest_queued_age_seconds);
                metrics::gauge!("slipway_deployments_active").set(s.active as f64);
            }
            Err(e) => tracing::debug!(error = %e, "queue statistics unavailable"),
        }
    }
}

/// Forwards NOTIFY wake-ups; reconnects after errors. Polling covers any gap.
async fn listen(pool: PgPool, wake: Arc<Notify>) {
    loop {
        let mut listener = match sqlx::postgres::PgListener::connect_with(&pool).await {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(error = %e, "LISTEN connection failed; polling only for now");
                tokio::time::sleep(Duration::from_secs(5)).await;
                continue;
            }
        };
        if let Err(e) = listener.listen(wake::CHANNEL).await {
            tracing::warn!(error = %e, "LISTEN failed; polling only for now");
            tokio::time::sleep(Duration::from_secs(5)).await;
            continue;
        }
        loop {
            match listener.recv().await {
                Ok(_) => wake.notify_one(),
                Err(e) => {
                    tracing::warn!(error = %e, "LISTEN connection lost; reconnecting");
                    break;
                }
            }
        }
    }
}
