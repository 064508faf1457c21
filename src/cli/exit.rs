//! Exit codes, so that a CI job can gate on a deployment.

use std::process::ExitCode;

use crate::client::ClientError;

/// How a client command ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// The command did what was asked; a deployment waited for succeeded.
    Succeeded,
    /// The deployment ended failed, rolled back, cancelled or superseded.
    Failed,
    /// Wrong arguments, or the server refused the request as invalid (a 4xx problem).
    Usage,
    /// `--wait` / `--watch` / `--follow` ran out of time before the deployment ended.
    TimedOut,
    /// The server did not accept the credentials (401) or the caller may not do this (403).
    Auth,
    /// No usable answer from the server (unreachable, 5xx, overloaded) after retries: the
    /// outcome is unknown.
    Unavailable,
}

impl Exit {
    pub fn code(self) -> u8 {
        match self {
            Self::Succeeded => 0,
            Self::Failed => 1,
            Self::Usage => 2,
            Self::TimedOut => 3,
            Self::Auth => 4,
            Self::Unavailable => 5,
        }
    }

    /// The exit of a deployment in `status`: failed for a bad end, success otherwise.
    pub fn of_status(status: &str) -> Self {
        match status {
            "failed" | "rolled_back" | "cancelled" | "superseded" => Self::Failed,
            _ => Self::Succeeded,
        }
    }

    pub fn of_error(e: &ClientError) -> Self {
        match e {
            ClientError::InvalidUrl { .. } => Self::Usage,
            ClientError::Problem { status, .. } if matches!(*status, 401 | 403) => Self::Auth,
            e if e.is_retryable() => Self::Unavailable,
            ClientError::Problem { status, .. } if (400..500).contains(status) => Self::Usage,
            _ => Self::Unavailable,
        }
    }
}

impl From<Exit> for ExitCode {
    fn from(exit: Exit) -> Self {
        ExitCode::from(exit.code())
    }
}
