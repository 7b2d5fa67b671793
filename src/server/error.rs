//! Why a service refused an operation; the HTTP layer maps each kind to a status or envelope.

use thiserror::Error;

use super::store::{JobError, ReportError, StoreError};

/// Why an operation was refused.
#[derive(Debug, Error)]
pub enum ServiceError {
    /// The request is malformed or invalid.
    #[error("{0}")]
    BadRequest(String),
    /// A named agent or task does not exist.
    #[error("{0}")]
    NotFound(String),
    /// A value is over its size limit.
    #[error("{0}")]
    TooLarge(String),
    /// The task is in a state that does not allow it (e.g. already finished).
    #[error("{0}")]
    Conflict(String),
    /// The caller may not do this: its role is too low, or the target is outside its scope.
    #[error("{0}")]
    Forbidden(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<ReportError> for ServiceError {
    fn from(e: ReportError) -> Self {
        match e {
            ReportError::Store(e) => ServiceError::Store(e),
            ReportError::UnknownTask(_) => ServiceError::NotFound(e.to_string()),
            ReportError::AlreadyFinished { .. }
            | ReportError::BadMove { .. }
            | ReportError::Superseded { .. } => ServiceError::Conflict(e.to_string()),
            other => ServiceError::BadRequest(other.to_string()),
        }
    }
}

impl From<JobError> for ServiceError {
    fn from(e: JobError) -> Self {
        match e {
            JobError::Store(e) => ServiceError::Store(e),
            JobError::UnknownJob(_) => ServiceError::NotFound(e.to_string()),
            JobError::BadState { .. } => ServiceError::Conflict(e.to_string()),
        }
    }
}
