//! The control-plane store: one set of repository functions over SQLite or
//! PostgreSQL through sqlx's `Any` driver.
//!
//! Columns are kept to types both databases decode the same way (text, BIGINT,
//! NULL): ids are prefixed text, timestamps milliseconds, documents JSON text.
//! Every write the gateway must see bumps `config_version` in the same
//! transaction; on PostgreSQL that transaction also sends `NOTIFY
//! tollgate_config`, and in this process the new version is published on a
//! watch channel, so a gateway in the same process or on the same database
//! reloads within a second.

mod accounts;
mod apis;
mod apps;
mod changes;
mod declarative;
mod gateway_config;
mod identities;
mod keys;
mod plans;
mod quotas;
mod sessions;
mod subscriptions;
mod users;

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::{AnyPool, Row};
use tokio::sync::watch;

pub use accounts::{Account, AccountToken, TokenPurpose};
pub use changes::{CONFIG_CHANNEL, Change, ChangeSet};
pub use declarative::{ApplyError, ApplyOptions};
pub use gateway_config::{
    AppRecord, AppSlice, GatewayConfig, KeyRecord, QuotaRule, SubscriptionRecord,
};
pub use identities::{ExternalIdentity, IdentityOutcome, LinkedIdentity};
pub use keys::IssuedKey;
pub use quotas::QuotaLease;
pub use sessions::SessionRow;

use crate::error::{StoreError, StoreResult};

static SQLITE_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("../migrations/sqlite");
static POSTGRES_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("../migrations/postgres");

/// Which database the store runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// An embedded SQLite file.
    Sqlite,
    /// A PostgreSQL server.
    Postgres,
}

/// Handle to the control-plane database; cheap to clone.
#[derive(Clone)]
pub struct Store {
    pool: AnyPool,
    backend: Backend,
    url: String,
    version: watch::Sender<i64>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("backend", &self.backend)
            .finish_non_exhaustive()
    }
}

impl Store {
    /// Connects to `url` (`sqlite://PATH` or `postgres://…`), creating a SQLite
    /// file and its directory when missing. Does not migrate.
    pub async fn connect(url: &str) -> StoreResult<Self> {
        sqlx::any::install_default_drivers();
        let backend = if url.starts_with("postgres") {
            Backend::Postgres
        } else {
            Backend::Sqlite
        };
        let connect_url = match backend {
            Backend::Sqlite => {
                let path = url
                    .trim_start_matches("sqlite://")
                    .trim_start_matches("sqlite:");
                let path = path.split('?').next().unwrap_or(path);
                if let Some(dir) = Path::new(path)
                    .parent()
                    .filter(|d| !d.as_os_str().is_empty())
                {
                    std::fs::create_dir_all(dir).map_err(|e| {
                        StoreError::Database(sqlx::Error::Configuration(
                            format!("cannot create directory {}: {e}", dir.display()).into(),
                        ))
                    })?;
                }
                if url.contains('?') {
                    url.to_owned()
                } else {
                    format!("{url}?mode=rwc")
                }
            }
            Backend::Postgres => url.to_owned(),
        };
        let options = AnyConnectOptions::from_str(&connect_url)?;
        let pool = AnyPoolOptions::new()
            .max_connections(match backend {
                Backend::Sqlite => 4,
                Backend::Postgres => 10,
            })
            .acquire_timeout(Duration::from_secs(5))
            .connect_with(options)
            .await?;
        if backend == Backend::Sqlite {
            // WAL lets the gateway read while the admin API writes.
            sqlx::query("PRAGMA journal_mode = WAL")
                .execute(&pool)
                .await?;
        }
        let (version, _) = watch::channel(0);
        Ok(Self {
            pool,
            backend,
            url: url.to_owned(),
            version,
        })
    }

    /// Connects and applies pending migrations.
    pub async fn open(url: &str) -> StoreResult<Self> {
        let store = Self::connect(url).await?;
        store.migrate().await?;
        let v = store.config_version().await?;
        store.version.send_replace(v);
        Ok(store)
    }

    /// Applies pending migrations for this backend.
    pub async fn migrate(&self) -> StoreResult<()> {
        match self.backend {
            Backend::Sqlite => SQLITE_MIGRATIONS.run(&self.pool).await?,
            Backend::Postgres => POSTGRES_MIGRATIONS.run(&self.pool).await?,
        }
        Ok(())
    }

    /// The URL the store was opened with.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The database this store runs on.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Checks that the database answers.
    pub async fn ping(&self) -> StoreResult<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    /// Closes the pool, waiting for connections to be returned.
    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// The configuration version now in the database.
    pub async fn config_version(&self) -> StoreResult<i64> {
        let row = sqlx::query("SELECT version FROM config_version WHERE id = 1")
            .fetch_one(&self.pool)
            .await?;
        Ok(row.try_get::<i64, _>(0)?)
    }

    /// Watches the configuration version: changed by writes through this store at
    /// once, and by other processes once [`Store::watch_remote_changes`] runs.
    pub fn subscribe_changes(&self) -> watch::Receiver<i64> {
        self.version.subscribe()
    }

    /// Bumps the configuration version inside a write transaction; on PostgreSQL
    /// the notification is delivered when the transaction commits.
    /// `changes` name what the write touched, for gateways that patch their
    /// snapshot.
    async fn bump_version(
        &self,
        tx: &mut sqlx::Transaction<'_, sqlx::Any>,
        changes: &[Change],
    ) -> StoreResult<i64> {
        let row = sqlx::query(
            "UPDATE config_version SET version = version + 1 WHERE id = 1 RETURNING version",
        )
        .fetch_one(&mut **tx)
        .await?;
        let v: i64 = row.try_get(0)?;
        self.log_changes(tx, v, changes).await?;
        if self.backend == Backend::Postgres {
            sqlx::query("SELECT pg_notify('tollgate_config', $1)")
                .bind(v.to_string())
                .execute(&mut **tx)
                .await?;
        }
        Ok(v)
    }

    /// Starts a write transaction. On SQLite it takes the write lock at once
    /// (`BEGIN IMMEDIATE`): a deferred transaction that reads before it writes
    /// fails outright when another connection wrote in between
    /// (`SQLITE_BUSY_SNAPSHOT`, which the busy timeout does not retry), whereas
    /// waiting for the lock is retried up to the busy timeout.
    pub(crate) async fn begin_write(&self) -> StoreResult<sqlx::Transaction<'static, sqlx::Any>> {
        Ok(match self.backend {
            Backend::Sqlite => self.pool.begin_with("BEGIN IMMEDIATE").await?,
            Backend::Postgres => self.pool.begin().await?,
        })
    }

    /// Commits a write transaction and publishes its version in this process.
    async fn commit_change(
        &self,
        tx: sqlx::Transaction<'_, sqlx::Any>,
        version: i64,
    ) -> StoreResult<()> {
        tx.commit().await?;
        self.publish_version(version);
        Ok(())
    }
}

/// Reads an optional millisecond column as a timestamp.
fn opt_ts(row: &sqlx::any::AnyRow, col: &str) -> StoreResult<Option<crate::time::Timestamp>> {
    Ok(row
        .try_get::<Option<i64>, _>(col)?
        .map(crate::time::Timestamp))
}

/// Reads a required millisecond column as a timestamp.
fn ts(row: &sqlx::any::AnyRow, col: &str) -> StoreResult<crate::time::Timestamp> {
    Ok(crate::time::Timestamp(row.try_get::<i64, _>(col)?))
}

/// Reads a text column holding one of a text enum's values.
fn text_enum<T>(
    row: &sqlx::any::AnyRow,
    col: &str,
    parse: impl Fn(&str) -> Option<T>,
) -> StoreResult<T> {
    let s: String = row.try_get(col)?;
    parse(&s).ok_or_else(|| StoreError::Corrupt(format!("unexpected {col} {s:?}")))
}
