//! Slipway's Postgres store: one small function per query, each taking a connection or a
//! transaction so the caller decides what commits together.

pub mod access;
pub mod apps;
pub mod audit;
pub mod clusters;
mod codec;
pub mod commands;
pub mod deliveries;
pub mod deployments;
pub mod environments;
pub mod error;
pub mod events;
pub mod health;
pub mod idempotency;
pub mod journal;
pub mod leases;
pub mod outbox;
pub mod page;
pub mod role_bindings;
pub mod rollouts;
pub mod triggers;
pub mod wake;

pub use error::StoreError;
pub use page::Page;
pub use sqlx::{PgConnection, PgPool, Postgres, Transaction};

/// The schema migrations, embedded from `migrations/` at the workspace root.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../../migrations");

/// Where an entity with a revision is: its value and the revision an `ETag` is made from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Revisioned<T> {
    pub value: T,
    pub revision: i64,
}

// Queries that are assembled with `format!` join only the `const` column lists and clauses of
// their module with each other; every value travels as a bind parameter. They are wrapped in
// `sqlx::AssertSqlSafe` for that reason.
