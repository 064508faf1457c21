//! The engine: taking requests in (`intake`) and, from the next milestone on, driving
//! deployments to their end.

pub mod intake;

pub use intake::{Actor, IntakeError, Precondition};
