//! [`Error`]: what can go wrong in the store, and the reply each error causes.

use samotop_core::{Refusal, reply};

use crate::query::QueryError;

/// What went wrong in the inbox store or its HTTP face.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The store cannot be opened or set up (a wrong path, a database that refuses us).
    #[error("cannot open the store {what}: {reason}")]
    Open {
        /// The path or URL (without a password).
        what: String,
        /// The cause.
        reason: String,
    },
    /// A database operation failed.
    #[error("database: {0}")]
    Database(String),
    /// The database or its disk is full (`SQLITE_FULL`, `ENOSPC`, PostgreSQL's 53100).
    #[error("the database is full: {0}")]
    Full(String),
    /// The database cannot be written (`SQLITE_READONLY`, a read-only PostgreSQL transaction).
    #[error("the database is read-only: {0}")]
    ReadOnly(String),
    /// The message could not be staged before the commit (a temporary file).
    #[error("cannot stage the message: {0}")]
    Stage(String),
    /// A search that cannot be taken.
    #[error("search: {0}")]
    Query(#[from] QueryError),
    /// The store was shut down.
    #[error("the store is closed")]
    Closed,
    /// Too many waits at once ([`Options::max_waiters`](crate::Options::max_waiters)).
    #[error("too many waiting requests")]
    Busy,
}

impl Error {
    /// The reply a client gets when a delivery fails with this error: `452 4.3.1` when the
    /// storage is full, else `451 4.3.0`. Never a 5xx: the sender retries.
    ///
    /// ```
    /// use samotop_inbox::Error;
    /// assert_eq!(Error::Full("disk".into()).reply().code(), 452);
    /// assert_eq!(Error::ReadOnly("ro".into()).reply().code(), 451);
    /// ```
    pub fn reply(&self) -> Refusal {
        match self {
            Error::Full(_) => reply::INSUFFICIENT_STORAGE,
            _ => reply::DELIVERY_FAILED,
        }
    }
}

impl From<rusqlite::Error> for Error {
    fn from(e: rusqlite::Error) -> Self {
        use rusqlite::ErrorCode;
        match e.sqlite_error_code() {
            Some(ErrorCode::DiskFull) => Error::Full(e.to_string()),
            Some(ErrorCode::ReadOnly) => Error::ReadOnly(e.to_string()),
            _ => Error::Database(e.to_string()),
        }
    }
}

impl From<tokio_postgres::Error> for Error {
    fn from(e: tokio_postgres::Error) -> Self {
        use tokio_postgres::error::SqlState;
        let text = match (e.as_db_error(), std::error::Error::source(&e)) {
            (Some(db), _) => format!("{}: {}", db.code().code(), db.message()),
            (None, Some(cause)) => format!("{e}: {cause}"),
            (None, None) => e.to_string(),
        };
        match e.code() {
            Some(c) if *c == SqlState::DISK_FULL || *c == SqlState::INSUFFICIENT_RESOURCES => {
                Error::Full(text)
            }
            Some(c) if *c == SqlState::READ_ONLY_SQL_TRANSACTION => Error::ReadOnly(text),
            _ => Error::Database(text),
        }
    }
}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Self {
        match e.kind() {
            std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded => {
                Error::Full(e.to_string())
            }
            _ => Error::Stage(e.to_string()),
        }
    }
}
