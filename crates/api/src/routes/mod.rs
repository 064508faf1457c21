//! The v1 resources, one module each. Handlers parse, authorize and call the engine's intake
//! or the store; they hold no SQL and no business rules.

pub mod apps;
pub mod audit;
pub mod clusters;
pub mod commands;
pub mod deployments;
pub mod environments;
pub mod ops;
pub mod role_bindings;
pub mod streams;
pub mod triggers;
pub mod webhooks;
