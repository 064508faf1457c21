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
