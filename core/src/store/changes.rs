//! Following configuration changes made by other processes.
//!
//! On PostgreSQL a `LISTEN tollgate_config` connection hears each committed
//! change at once; on both databases the version is also polled on an interval,
//! the safety net for a lost listener connection or a SQLite file shared by
//! several processes.

use std::time::{Duration, Instant};

use sqlx::postgres::PgListener;

use super::{Backend, Store};

/// The PostgreSQL notification channel that carries configuration versions.
pub const CONFIG_CHANNEL: &str = "tollgate_config";

impl Store {
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
