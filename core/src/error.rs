//! Errors of the control plane.
//!
//! Policy: every failure a caller can act on is its own variant with a message
//! written for the person who made the request (which field, which id, what to
//! do). Database failures are kept whole in [`StoreError::Database`] so the one
//! place that maps errors to HTTP can log the detail and answer an opaque 500.

/// A field of an input that was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct ValidationError {
    /// Name of the field, as it appears in the JSON input.
    pub field: String,
    /// What is wrong and what is expected.
    pub message: String,
}

impl ValidationError {
    /// Builds a validation error for a field.
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// What a store operation can fail with.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Input was refused before it reached the database.
    #[error(transparent)]
    Invalid(#[from] ValidationError),
    /// The object does not exist.
    #[error("{entity} {id} does not exist")]
    NotFound {
        /// Kind of object (`api`, `plan`, …).
        entity: &'static str,
        /// The id or slug that was asked for.
        id: String,
    },
    /// The change clashes with existing data (a taken slug, an object in use).
    #[error("{0}")]
    Conflict(String),
    /// The database failed or could not be reached.
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    /// Schema migration failed.
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// Stored data could not be read back (a corrupt row).
    #[error("corrupt stored data: {0}")]
    Corrupt(String),
}

impl StoreError {
    pub(crate) fn not_found(entity: &'static str, id: &str) -> Self {
        Self::NotFound {
            entity,
            id: id.to_owned(),
        }
    }

    /// Turns a unique-constraint violation into a conflict with a readable message.
    pub(crate) fn unique(e: sqlx::Error, message: impl FnOnce() -> String) -> Self {
        match &e {
            sqlx::Error::Database(db) if db.is_unique_violation() => Self::Conflict(message()),
            _ => Self::Database(e),
        }
    }
}

/// Result of store operations.
pub type StoreResult<T> = Result<T, StoreError>;
