//! What can go wrong in the store, in terms a caller can act on.

/// A store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The named entity does not exist.
    #[error("{0} not found")]
    NotFound(&'static str),
    /// A unique constraint refused the write: a `what` of that name already exists.
    #[error("{0} already exists")]
    AlreadyExists(&'static str),
    /// The environment's workload (cluster, namespace, name) belongs to another environment.
    #[error("the workload belongs to another environment")]
    WorkloadTaken,
    /// Another deployment of the environment is active (at most one is).
    #[error("another deployment of the environment is active")]
    EnvironmentBusy,
    /// Another named unique or foreign-key constraint refused the write.
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
    /// Nothing was written, and trying again later may work: the writer that would have sent
    /// the statement is gone (the process is shutting down), or the database could not be
    /// asked.
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// The write may or may not have happened: the connection was lost while its statement
    /// was in flight, or the writer stopped before answering. Writing it again could write it
    /// twice; read before retrying.
    #[error("outcome unknown: {0}")]
    OutcomeUnknown(String),
    #[error(transparent)]
    Database(sqlx::Error),
}

impl StoreError {
    /// The write certainly did not happen: the database refused it (and rolled it back), or
    /// it was never sent. After any other error its outcome is unknown, and writing it again
    /// could write it twice.
    pub fn wrote_nothing(&self) -> bool {
        match self {
            Self::Database(e) if connection_lost(e) => false,
            Self::Database(e) => matches!(
                e,
                sqlx::Error::Database(_)
                    | sqlx::Error::Encode(_)
                    | sqlx::Error::PoolTimedOut
                    | sqlx::Error::PoolClosed
            ),
            Self::AlreadyExists(_)
            | Self::WorkloadTaken
            | Self::EnvironmentBusy
            | Self::Constraint { .. }
            | Self::Conflict(_)
            | Self::Corrupt(_)
            | Self::Unavailable(_) => true,
            Self::NotFound(_)
            | Self::RevisionMismatch { .. }
            | Self::LeaseLost
            | Self::OutcomeUnknown(_) => false,
        }
    }

    /// The database cannot be used now (no connection to be had, the connection lost, the
    /// writer gone) and a later try may work: callers answer "unavailable", not a fault.
    pub fn is_unavailable(&self) -> bool {
        match self {
            Self::Unavailable(_) | Self::OutcomeUnknown(_) => true,
            Self::Database(e) => {
                matches!(e, sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed)
                    || connection_lost(e)
            }
            _ => false,
        }
    }

    /// This failure again, for one member of a batch that failed as a whole (`batch` names
    /// the batch in the message): a failure whose outcome is unknown stays unknown, one that
    /// certainly wrote nothing says so; the member did nothing wrong itself.
    pub fn for_batch_member(&self, batch: &str) -> Self {
        let message = format!("a batch of {batch} failed: {self}");
        if self.wrote_nothing() {
            Self::Unavailable(message)
        } else {
            Self::OutcomeUnknown(message)
        }
    }
}

/// The connection to the database is gone (or the database is going away): the socket
/// failed, or the server said so (SQLSTATE class 08, connection exception, or 57P,
/// shutdown or termination, e.g. `pg_terminate_backend` or a restart). What the statement
/// in flight did is unknown, the connection cannot be used again, and a new one may work.
pub fn connection_lost(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Io(_) | sqlx::Error::Tls(_) => true,
        sqlx::Error::Database(db) => db
            .code()
            .is_some_and(|code| code.starts_with("08") || code.starts_with("57P")),
        _ => false,
    }
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        if let sqlx::Error::Database(db) = &e
            && let Some(constraint) = db.constraint()
            && (db.is_unique_violation() || db.is_foreign_key_violation())
        {
            return refused_by(constraint);
        }
        Self::Database(e)
    }
}

/// What the constraint named `constraint` refusing a write means. Constraint names are
/// matched here and nowhere else.
fn refused_by(constraint: &str) -> StoreError {
    match constraint {
        "clusters_name_key" => StoreError::AlreadyExists("cluster"),
        "apps_name_key" => StoreError::AlreadyExists("app"),
        "environments_app_name_key" => StoreError::AlreadyExists("environment"),
        "role_bindings_unique" => StoreError::AlreadyExists("role binding"),
        "environments_workload_key" => StoreError::WorkloadTaken,
        "deployments_one_active_per_environment" => StoreError::EnvironmentBusy,
        other => StoreError::Constraint {
            constraint: other.to_owned(),
        },
    }
}

impl From<serde_json::Error> for StoreError {
    fn from(e: serde_json::Error) -> Self {
        Self::Corrupt(e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A batch member's error says what is known of its own write: a batch whose connection
    /// was lost mid-statement leaves every member's outcome unknown (not to be written again
    /// blindly); a batch the server refused wrote nothing for any member.
    #[test]
    fn a_batch_members_error_keeps_what_is_known_of_its_write() {
        let lost = StoreError::Database(sqlx::Error::Io(std::io::Error::new(
            std::io::ErrorKind::ConnectionReset,
            "reset",
        )));
        let member = lost.for_batch_member("step writes");
        assert!(
            matches!(member, StoreError::OutcomeUnknown(_)),
            "{member:?}"
        );
        assert!(!member.wrote_nothing());
        assert!(member.to_string().contains("a batch of step writes failed"));
        assert!(member.is_unavailable(), "a lost connection answers 503");

        let refused = StoreError::Constraint {
            constraint: "deployments_pkey".into(),
        };
        let member = refused.for_batch_member("creates");
        assert!(matches!(member, StoreError::Unavailable(_)), "{member:?}");
        assert!(member.wrote_nothing());
        assert!(!refused.is_unavailable(), "a refusal is not an outage");
    }
}
