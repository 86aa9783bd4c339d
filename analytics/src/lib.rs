//! Usage metering: the event the gateway emits for every call it answers, the
//! bounded queue, durable spool and shipper that carry events off the request
//! path,
//! the two usage stores (embedded SQLite and ClickHouse) and the usage queries.

pub mod clickhouse;
pub mod embedded;
pub mod error;
pub mod event;
pub mod latency;
pub mod priority;
pub mod query;
pub mod record;
pub mod retention;
pub(crate) mod rollup;
pub mod spool;
pub mod store;
pub mod writer;

pub use error::UsageError;
pub use event::UsageEvent;
pub use query::Dimension;
pub use query::{
    ApiUsage, Bucket, LatencyMs, SeriesPoint, SummaryQuery, TimeSeries, TimeSeriesParams,
    TimeSeriesQuery, TopEntry, TopList, TopQuery, UsageFilter, UsageSummary,
};
pub use store::UsageStore;
pub use writer::{UsageRecorder, UsageStats, UsageWriter};
