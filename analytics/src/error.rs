//! Errors of the usage stores.
//!
//! Policy: query parameters a caller got wrong are [`UsageError::Invalid`] with a
//! message naming the parameter; store failures keep their source for the log and
//! become an opaque 500 at the HTTP edge.

/// What a usage operation can fail with.
#[derive(Debug, thiserror::Error)]
pub enum UsageError {
    /// A query parameter was refused.
    #[error("{param}: {message}")]
    Invalid {
        /// The parameter name, as in the URL.
        param: &'static str,
        /// What is wrong.
        message: String,
    },
    /// The embedded store failed.
    #[error("embedded usage store: {0}")]
    Sqlite(#[from] sqlx::Error),
    /// The embedded store's schema could not be applied.
    #[error("embedded usage store migration: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// ClickHouse failed or could not be reached.
    #[error("clickhouse: {0}")]
    ClickHouse(#[from] ::clickhouse::error::Error),
    /// A ClickHouse schema file could not be applied.
    #[error("clickhouse migration {file}: {source}")]
    ClickHouseMigration {
        /// The migration file.
        file: &'static str,
        /// Why it failed.
        source: ::clickhouse::error::Error,
    },
    /// The data directory could not be prepared.
    #[error("usage store directory: {0}")]
    Io(#[from] std::io::Error),
}
