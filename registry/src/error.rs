use std::fmt;

/// Everything the registry can fail with. Messages are written for the caller.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The thing does not exist, or the caller may not know it exists.
    #[error("{kind} {name:?} not found")]
    NotFound { kind: &'static str, name: String },
    #[error("{0}")]
    Conflict(String),
    /// Input that breaks a rule (a name, a path, a field).
    #[error("{0}")]
    Invalid(String),
    /// The uploaded bytes do not hash to the digest the client declared.
    #[error("sha256 mismatch: the client declared {declared} but the uploaded bytes hash to {actual}")]
    DigestMismatch { declared: String, actual: String },
    /// The tenant's storage quota would be exceeded; nothing was stored.
    #[error("storage quota exceeded: {0}")]
    QuotaExceeded(String),
    /// A commit found the version unusable; every reason is listed.
    #[error("the version cannot be committed: {}", join_problems(.0))]
    Validation(Vec<Problem>),
    #[error("the metadata database is unavailable")]
    DatabaseUnavailable(#[source] sqlx::Error),
    #[error("metadata database error")]
    Database(#[source] sqlx::Error),
    #[error("the object store is unavailable")]
    Storage(#[source] object_store::Error),
    #[error("invalid storage configuration: {0}")]
    StorageConfig(String),
    /// The client's upload stream broke off or could not be read.
    #[error("reading the uploaded body failed")]
    Upload(#[source] Box<dyn std::error::Error + Send + Sync>),
    #[error("I/O error while {0}")]
    Io(&'static str, #[source] std::io::Error),
    /// The version took its runner down (see quarantine.rs); it answers no inference until a
    /// platform admin clears it.
    #[error("the version is quarantined: {}", .0.reason)]
    Quarantined(Box<crate::quarantine::Quarantine>),
}

/// One reason a version failed validation, tied to the file it concerns when there is one.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Problem {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    pub message: String,
}

impl Problem {
    pub fn file(file: &str, message: impl Into<String>) -> Self {
        Self { file: Some(file.to_owned()), message: message.into() }
    }

    pub fn version(message: impl Into<String>) -> Self {
        Self { file: None, message: message.into() }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.file {
            Some(file) => write!(f, "{file}: {}", self.message),
            None => f.write_str(&self.message),
        }
    }
}

impl Error {
    pub fn not_found(kind: &'static str, name: impl fmt::Display) -> Self {
        Error::NotFound { kind, name: name.to_string() }
    }
}

impl From<sqlx::Error> for Error {
    fn from(e: sqlx::Error) -> Self {
        match e {
            sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_) | sqlx::Error::Tls(_) => {
                Error::DatabaseUnavailable(e)
            }
            // Postgres going away: shutting down or starting up (class 57P: 57P01 "terminating
            // connection due to administrator command", 57P03 "the database system is starting
            // up"), or a broken connection (class 08).
            sqlx::Error::Database(ref db)
                if db.code().is_some_and(|code| code.starts_with("57P") || code.starts_with("08")) =>
            {
                Error::DatabaseUnavailable(e)
            }
            e => Error::Database(e),
        }
    }
}

impl From<object_store::Error> for Error {
    fn from(e: object_store::Error) -> Self {
        Error::Storage(e)
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

fn join_problems(problems: &[Problem]) -> String {
    problems.iter().map(Problem::to_string).collect::<Vec<_>>().join("; ")
}
