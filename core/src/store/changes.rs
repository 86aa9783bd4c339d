//! Following configuration changes made by other processes.
//!
//! On PostgreSQL a `LISTEN tollgate_config` connection hears each committed
//! change at once; on both databases the version is also polled on an interval,
//! the safety net for a lost listener connection or a SQLite file shared by
//! several processes.

use std::collections::{BTreeSet, HashSet};
use std::time::{Duration, Instant};

use sqlx::Row;
use sqlx::postgres::PgListener;

use super::{Backend, Store};
use crate::error::StoreResult;
use crate::time::Timestamp;

/// How long the change log keeps its rows; a gateway further behind reloads in full.
const CHANGE_LOG_KEEP_MS: i64 = 60 * 60 * 1000;

/// What one write changed, as far as the gateway is concerned.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Change {
    /// An API (created, changed or deleted).
    Api(String),
    /// A plan's terms or coverage.
    Plan(String),
    /// An app, or any of its keys or subscriptions.
    App(String),
    /// Too much to name: reload everything.
    All,
}

impl Change {
    fn parts(&self) -> (&'static str, &str) {
        match self {
            Self::Api(id) => ("api", id),
            Self::Plan(id) => ("plan", id),
            Self::App(id) => ("app", id),
            Self::All => ("all", ""),
        }
    }
}

/// What changed between two configuration versions.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChangeSet {
    /// The version the changes lead to.
    pub version: i64,
    /// Changed APIs.
    pub apis: BTreeSet<String>,
    /// Changed plans.
    pub plans: BTreeSet<String>,
    /// Changed apps.
    pub apps: BTreeSet<String>,
}

/// The PostgreSQL notification channel that carries configuration versions.
pub const CONFIG_CHANNEL: &str = "tollgate_config";

impl Store {
    /// Records what a write changed, in its transaction.
    pub(super) async fn log_changes(
        &self,
        tx: &mut sqlx::Transaction<'_, sqlx::Any>,
        version: i64,
        changes: &[Change],
    ) -> StoreResult<()> {
        let now = Timestamp::now().0;
        let unique: BTreeSet<&Change> = changes.iter().collect();
        // A version that changed nothing the gateway serves still gets a row, so
        // gaps in the log always mean lost history.
        let nothing = [("none", "")];
        let parts: Vec<(&str, &str)> = if unique.is_empty() {
            nothing.to_vec()
        } else {
            unique.iter().map(|c| c.parts()).collect()
        };
        for (entity, id) in parts {
            sqlx::query(
                "INSERT INTO config_changes (version, entity, entity_id, created_at) VALUES ($1, $2, $3, $4)",
            )
            .bind(version)
            .bind(entity)
            .bind(id)
            .bind(now)
            .execute(&mut **tx)
            .await?;
        }
        if version % 64 == 0 {
            sqlx::query("DELETE FROM config_changes WHERE created_at < $1")
                .bind(now - CHANGE_LOG_KEEP_MS)
                .execute(&mut **tx)
                .await?;
        }
        Ok(())
    }

    /// What changed after version `from`, up to the current version; `None` when
    /// the log cannot tell (a gap, or a change too broad to name) and the caller
    /// must reload everything.
    pub async fn changes_since(&self, from: i64) -> StoreResult<Option<ChangeSet>> {
        let to = self.config_version().await?;
        let mut set = ChangeSet {
            version: to.max(from),
            ..ChangeSet::default()
        };
        if to <= from {
            return Ok(Some(set));
        }
        let rows = sqlx::query(
            "SELECT version, entity, entity_id FROM config_changes WHERE version > $1 AND version <= $2",
        )
        .bind(from)
        .bind(to)
        .fetch_all(&self.pool)
        .await?;
        let mut versions = HashSet::new();
        for row in &rows {
            versions.insert(row.try_get::<i64, _>(0)?);
            let id: String = row.try_get(2)?;
            match row.try_get::<String, _>(1)?.as_str() {
                "api" => set.apis.insert(id),
                "plan" => set.plans.insert(id),
                "app" => set.apps.insert(id),
                "none" => false,
                _ => return Ok(None),
            };
        }
        // Every version writes at least one row; a missing one was pruned or
        // predates the log.
        if versions.len() as i64 != to - from {
            return Ok(None);
        }
        Ok(Some(set))
    }

    /// Publishes `version` to this process's watchers if it is newer.
    pub(super) fn publish_version(&self, version: i64) {
        self.version.send_if_modified(|v| {
            if version > *v {
                *v = version;
                true
            } else {
                false
            }
        });
    }

    /// Starts following changes made elsewhere; runs until the task is aborted or
    /// the runtime stops. A database that goes away is retried quietly (one warning
    /// a minute) while the last known version stays in force.
    pub fn watch_remote_changes(&self, poll: Duration) -> tokio::task::JoinHandle<()> {
        let store = self.clone();
        tokio::spawn(async move { store.follow_changes(poll).await })
    }

    async fn follow_changes(self, poll: Duration) {
        let mut listener: Option<PgListener> = None;
        let mut ticker = tokio::time::interval(poll);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_warning: Option<Instant> = None;
        let mut warn = |what: &str, err: &dyn std::fmt::Display| {
            if last_warning.is_none_or(|t| t.elapsed() > Duration::from_secs(60)) {
                tracing::warn!(error = %err, "{what}; serving the last known configuration");
                last_warning = Some(Instant::now());
            }
        };
        loop {
            if self.backend == Backend::Postgres && listener.is_none() {
                match PgListener::connect(&self.url).await {
                    Ok(mut l) => match l.listen(CONFIG_CHANNEL).await {
                        Ok(()) => listener = Some(l),
                        Err(e) => warn("cannot LISTEN for configuration changes", &e),
                    },
                    Err(e) => warn("cannot connect to listen for configuration changes", &e),
                }
            }
            let notified = async {
                match listener.as_mut() {
                    Some(l) => l.recv().await.map(|n| n.payload().parse::<i64>().ok()),
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = ticker.tick() => {}
                n = notified => match n {
                    Ok(Some(version)) => {
                        self.publish_version(version);
                        continue;
                    }
                    Ok(None) => {}
                    Err(e) => {
                        warn("configuration listener lost", &e);
                        listener = None;
                    }
                },
            }
            match self.config_version().await {
                Ok(v) => self.publish_version(v),
                Err(e) => warn("cannot read the configuration version", &e),
            }
        }
    }
}
