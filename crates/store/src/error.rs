//! What can go wrong in the store, in terms a caller can act on.

/// A store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The named entity does not exist.
    #[error("{0} not found")]
    NotFound(&'static str),
    /// A named unique or foreign-key constraint refused the write.
    #[error("constraint {constraint} refused the write")]
    Constraint { constraint: String },
    /// An `If-Match` revision did not match the stored one.
    #[error("revision mismatch: expected {expected}, found {found}")]
    RevisionMismatch { expected: i64, found: i64 },
    /// The write is not allowed in the entity's current state.
    #[error("{0}")]
    Conflict(String),
    /// The caller's lease on the deployment was taken over (its fencing epoch is stale):
    /// it must stop touching that deployment.
    #[error("lease lost: another worker holds the deployment now")]
    LeaseLost,
    /// A stored value could not be read back into its domain type.
    #[error("stored data is not readable: {0}")]
    Corrupt(String),
    #[error(transparent)]
    Database(sqlx::Error),
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        if let sqlx::Error::Database(db) = &e
            && let Some(constraint) = db.constraint()
            && (db.is_unique_violation() || db.is_foreign_key_violation())
        {
            return Self::Constraint {
                constraint: constraint.to_owned(),
            };
        }
        Self::Database(e)
    }
}

impl From<serde_json::Error> for StoreError {
    fn from(e: serde_json::Error) -> Self {
        Self::Corrupt(e.to_string())
    }
}
