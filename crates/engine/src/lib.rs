//! The engine: taking requests in (`intake`) and driving deployments to their end (`worker`
//! claims due deployments under fenced leases, `step` runs one observe → decide → act →
//! persist cycle of a deployment's state machine).

pub mod create_batch;
pub mod drivers;
pub mod github_status;
pub mod group_commit;
pub mod held_connection;
pub mod intake;
pub mod notify;
pub mod secrets;
pub mod step;
pub mod webhooks;
pub mod worker;

pub use create_batch::CreateBatcher;
pub use drivers::Drivers;
pub use intake::{IntakeError, Precondition};
pub use notify::Notifier;
pub use step::StepOutcome;
pub use worker::{Engine, EngineSettings};

/// Registers the HELP line of every metric the engine records, with the recorder installed
/// (call it once the recorder is in place: descriptions go to the recorder of the moment).
pub fn describe_metrics() {
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    describe_counter!(
        "slipway_engine_steps_total",
        "Engine steps that ran to their write (observe, decide, act, persist)"
    );
    describe_histogram!(
        "slipway_engine_step_duration_seconds",
        Unit::Seconds,
        "Time of one engine step from its decision to its committed write, by strategy"
    );
    describe_counter!(
        "slipway_engine_chained_steps_total",
        "Steps run on a lease kept from the step before (chained steps)"
    );
    describe_histogram!(
        "slipway_engine_step_write_batch",
        Unit::Count,
        "Step writes per group-commit statement"
    );
    describe_counter!(
        "slipway_engine_step_write_batch_fallbacks_total",
        "Group-commit batches of step writes that failed and were written step by step"
    );
    describe_counter!(
        "slipway_lease_losses_total",
        "Steps that found their lease taken over by another worker and stopped"
    );
    describe_counter!(
        "slipway_cluster_errors_total",
        "Failed cluster calls of engine steps, by cluster"
    );
    describe_counter!(
        "slipway_cluster_calls_cut_off_total",
        "Cluster writes cut off because they would have outlasted the worker's lease"
    );
    describe_histogram!(
        "slipway_deployment_duration_seconds",
        Unit::Seconds,
        "Time from a deployment's creation to its end, by strategy"
    );
    describe_counter!(
        "slipway_deployments_finished_total",
        "Deployments that reached an end, by strategy and outcome"
    );
    describe_gauge!(
        "slipway_deployments_queued",
        "Deployments waiting for their environment"
    );
    describe_gauge!(
        "slipway_deployments_oldest_queued_age_seconds",
        Unit::Seconds,
        "Age of the oldest queued deployment"
    );
    describe_gauge!(
        "slipway_deployments_active",
        "Deployments running, paused or rolling back"
    );
    describe_histogram!(
        "slipway_create_batch_rows",
        Unit::Count,
        "Deployment creates per group-commit statement"
    );
    describe_counter!(
        "slipway_create_batch_fallbacks_total",
        "Group-commit batches of creates that failed and were written row by row"
    );
    describe_counter!(
        "slipway_github_statuses_total",
        "GitHub deployment statuses sent, by outcome (delivered, retried, abandoned)"
    );
}
