//! Readiness: the database answers and every embedded migration has been applied.

use sqlx::PgPool;

use crate::{MIGRATOR, StoreError};

/// How the schema compares to the migrations this binary carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SchemaState {
    Current,
    /// Migrations are missing: run `slipway migrate`.
    Behind {
        applied: Option<i64>,
        expected: i64,
    },
}

/// Checks that the database answers and reports the schema's state.
#[tracing::instrument(skip_all)]
pub async fn schema_state(pool: &PgPool) -> Result<SchemaState, StoreError> {
    let expected = MIGRATOR.iter().map(|m| m.version).max().unwrap_or(0);
    let table: Option<String> = sqlx::query_scalar("SELECT to_regclass('_sqlx_migrations')::text")
        .fetch_one(pool)
        .await?;
    let applied: Option<i64> = match table {
        Some(_) => {
            sqlx::query_scalar("SELECT max(version) FROM _sqlx_migrations WHERE success")
                .fetch_one(pool)
                .await?
        }
        None => None,
    };
    Ok(match applied {
        Some(v) if v >= expected => SchemaState::Current,
        applied => SchemaState::Behind { applied, expected },
    })
}
