//! The usage store: embedded SQLite or ClickHouse, chosen by configuration.

use tollgate_core::Settings;

use crate::clickhouse::ClickHouseStore;
use crate::embedded::EmbeddedStore;
use crate::error::UsageError;
use crate::event::UsageEvent;
use crate::query::{SummaryQuery, TimeSeries, TimeSeriesQuery, TopList, TopQuery, UsageSummary};
use crate::record::SpooledRecord;

/// Where usage events are kept and queried.
#[derive(Clone, Debug)]
pub enum UsageStore {
    /// SQLite file `usage.db` in the data dir (single node).
    Embedded(EmbeddedStore),
    /// A ClickHouse server.
    ClickHouse(Box<ClickHouseStore>),
}

impl UsageStore {
    /// Opens the store the settings choose, without migrating.
    pub async fn connect(settings: &Settings) -> Result<Self, UsageError> {
        Ok(match &settings.clickhouse_url {
            Some(url) => Self::ClickHouse(Box::new(ClickHouseStore::new(
                url,
                &settings.clickhouse_database,
                settings.clickhouse_user.as_deref(),
                settings.clickhouse_password.as_deref(),
                settings.clickhouse_validation,
            ))),
            None => Self::Embedded(EmbeddedStore::open(&settings.data_dir.join("usage.db")).await?),
        })
    }

    /// Opens the store and applies its schema.
    pub async fn open(settings: &Settings) -> Result<Self, UsageError> {
        let store = Self::connect(settings).await?;
        store.migrate().await?;
        Ok(store)
    }

    /// Creates or updates the schema.
    pub async fn migrate(&self) -> Result<(), UsageError> {
        match self {
            Self::Embedded(s) => s.migrate().await,
            Self::ClickHouse(s) => s.migrate().await,
        }
    }

    /// Writes a batch known to be new.
    pub async fn insert(&self, events: &[UsageEvent]) -> Result<(), UsageError> {
        self.insert_batch("", events).await
    }

    /// Writes a batch known to be new, tagged with its batch (spool segment)
    /// id. The embedded store still leaves out events it has (it reads the
    /// ids stored in the batch's time span); only the shipper's first attempt
    /// at a segment skips that ([`Self::insert_spooled`]).
    pub async fn insert_batch(
        &self,
        batch_id: &str,
        events: &[UsageEvent],
    ) -> Result<(), UsageError> {
        match self {
            Self::Embedded(s) => s.insert(events).await.map(drop),
            Self::ClickHouse(s) => s.insert(batch_id, events).await,
        }
    }

    /// Writes a batch that may have been written before, without counting any
    /// event twice: the embedded store leaves out ids it has; ClickHouse looks
    /// the batch up first. Returns how many events were new.
    pub async fn insert_once(
        &self,
        batch_id: &str,
        events: &[UsageEvent],
    ) -> Result<usize, UsageError> {
        match self {
            Self::Embedded(s) => s.insert(events).await,
            Self::ClickHouse(s) => s.insert_once(batch_id, events).await,
        }
    }

    /// Whether [`Self::insert_spooled`] needs the spool records' events
    /// decoded: ClickHouse inserts rows; the embedded store keeps the records.
    pub fn takes_events(&self) -> bool {
        matches!(self, Self::ClickHouse(_))
    }

    /// Writes whole spool records read back by the shipper, with their
    /// events decoded (all of them, in order) when [`Self::takes_events`] —
    /// else `events` may be empty. With `may_be_stored` the batch is written
    /// as by [`Self::insert_once`]; without it, it is new for certain (the
    /// shipper's first attempt at a segment) and written as it is. Returns
    /// how many events were new.
    pub async fn insert_spooled(
        &self,
        batch_id: &str,
        records: &[SpooledRecord],
        events: &[UsageEvent],
        may_be_stored: bool,
    ) -> Result<usize, UsageError> {
        match self {
            Self::Embedded(s) => s.insert_records(records, may_be_stored).await,
            Self::ClickHouse(s) => {
                debug_assert_eq!(
                    records.iter().map(|r| r.events).sum::<usize>(),
                    events.len()
                );
                if may_be_stored {
                    s.insert_once(batch_id, events).await
                } else {
                    s.insert(batch_id, events).await.map(|()| events.len())
                }
            }
        }
    }

    /// Totals, per-API latency and status classes over a range.
    pub async fn summary(&self, q: &SummaryQuery) -> Result<UsageSummary, UsageError> {
        match self {
            Self::Embedded(s) => s.summary(q).await,
            Self::ClickHouse(s) => s.summary(q).await,
        }
    }

    /// Calls, errors, bytes and latency over time, every bucket present.
    pub async fn time_series(&self, q: &TimeSeriesQuery) -> Result<TimeSeries, UsageError> {
        match self {
            Self::Embedded(s) => s.time_series(q).await,
            Self::ClickHouse(s) => s.time_series(q).await,
        }
    }

    /// The busiest APIs, routes, apps, developers, plans or status classes.
    pub async fn top(&self, q: &TopQuery) -> Result<TopList, UsageError> {
        match self {
            Self::Embedded(s) => s.top(q).await,
            Self::ClickHouse(s) => s.top(q).await,
        }
    }

    /// A short name for logs and the start-up banner.
    pub fn describe(&self) -> String {
        match self {
            Self::Embedded(s) => format!("embedded ({})", s.path().display()),
            Self::ClickHouse(s) => format!("clickhouse ({})", s.describe()),
        }
    }
}
