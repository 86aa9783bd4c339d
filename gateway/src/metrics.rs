//! Prometheus metrics of the gateway.
//!
//! Per-API request counters and latency histograms are resolved once per API
//! when a snapshot is built, so the request path only bumps atomics (and takes a
//! histogram's uncontended lock); counters kept elsewhere (rate limits, the
//! usage pipeline, the snapshot) are read at scrape time by a collector.

use std::sync::{Arc, Weak};
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::Gateway;

/// Label of calls that matched no API.
const UNROUTED: &str = "_unrouted";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    api: String,
    class: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ApiLabels {
    api: String,
}

fn latency_histogram() -> Histogram {
    // 0.25 ms to about 8 s.
    Histogram::new(exponential_buckets(0.000_25, 2.0, 16))
}

/// The gateway's metric families.
#[derive(Debug)]
pub struct GatewayMetrics {
    requests: Family<RequestLabels, Counter>,
    duration: Family<ApiLabels, Histogram, fn() -> Histogram>,
    upstream_duration: Family<ApiLabels, Histogram, fn() -> Histogram>,
    unrouted: Arc<RouteMetrics>,
}

/// One API's metric handles, shared by every call routed to it.
#[derive(Debug)]
pub struct RouteMetrics {
    by_class: [Counter; 5],
    duration: Histogram,
    upstream_duration: Histogram,
}

impl RouteMetrics {
    /// Records one answered call.
    pub fn observe(&self, status: u16, latency: Duration, upstream: Option<Duration>) {
        let class = usize::from(status / 100).clamp(1, 5) - 1;
        self.by_class[class].inc();
        self.duration.observe(latency.as_secs_f64());
        if let Some(u) = upstream {
            self.upstream_duration.observe(u.as_secs_f64());
        }
    }
}

impl Default for GatewayMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl GatewayMetrics {
    /// Empty families.
    pub fn new() -> Self {
        let mut m = Self {
            requests: Family::default(),
            duration: Family::new_with_constructor(latency_histogram),
            upstream_duration: Family::new_with_constructor(latency_histogram),
            unrouted: Arc::new(RouteMetrics {
                by_class: Default::default(),
                duration: latency_histogram(),
                upstream_duration: latency_histogram(),
            }),
        };
        m.unrouted = m.route(UNROUTED);
        m
    }

    /// The handles of one API (created on first use, then shared).
    pub fn route(&self, api: &str) -> Arc<RouteMetrics> {
        let class = |c: &str| {
            self.requests
                .get_or_create(&RequestLabels {
                    api: api.to_owned(),
                    class: c.to_owned(),
                })
                .clone()
        };
        let labels = ApiLabels {
            api: api.to_owned(),
        };
        Arc::new(RouteMetrics {
            by_class: [
                class("1xx"),
                class("2xx"),
                class("3xx"),
                class("4xx"),
                class("5xx"),
            ],
            duration: self.duration.get_or_create(&labels).clone(),
            upstream_duration: self.upstream_duration.get_or_create(&labels).clone(),
        })
    }

    /// The handles for calls that matched no API.
    pub fn unrouted(&self) -> &Arc<RouteMetrics> {
        &self.unrouted
    }

    /// Registers the families and the live counters of `gateway`.
    pub fn register(&self, registry: &mut Registry, gateway: Weak<Gateway>) {
        registry.register(
            "tollgate_requests",
            "Calls answered by the gateway, by API and status class",
            self.requests.clone(),
        );
        registry.register(
            "tollgate_request_duration_seconds",
            "Time from a call's arrival to the end of its response, by API",
            self.duration.clone(),
        );
        registry.register(
            "tollgate_upstream_duration_seconds",
            "Time until the upstream's response headers, by API",
            self.upstream_duration.clone(),
        );
        registry.register_collector(Box::new(LiveCounters { gateway }));
    }
}

/// Renders a registry in the Prometheus text format.
pub fn render(registry: &Registry) -> String {
    let mut out = String::new();
    if let Err(e) = prometheus_client::encoding::text::encode(&mut out, registry) {
        tracing::error!(error = %e, "cannot encode metrics");
    }
    out
}

/// Counters kept by other parts of the gateway, read at scrape time.
#[derive(Debug)]
struct LiveCounters {
    gateway: Weak<Gateway>,
}

fn counter(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: u64,
) -> Result<(), std::fmt::Error> {
    let c = ConstCounter::new(value);
    let e = encoder.encode_descriptor(name, help, None, c.metric_type())?;
    c.encode(e)
}

fn gauge(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: i64,
) -> Result<(), std::fmt::Error> {
    let g = ConstGauge::new(value);
    let e = encoder.encode_descriptor(name, help, None, g.metric_type())?;
    g.encode(e)
}

/// One counter per value of a single label, e.g. `decision="allowed"`.
fn labelled(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    label: &'static str,
    values: &[(&str, u64)],
) -> Result<(), std::fmt::Error> {
    let mut e =
        encoder.encode_descriptor(name, help, None, ConstCounter::new(0u64).metric_type())?;
    for (value, n) in values {
        ConstCounter::new(*n).encode(e.encode_family(&[(label, *value)])?)?;
    }
    Ok(())
}

/// One gauge per API.
fn per_api(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    values: impl Iterator<Item = (String, i64)>,
) -> Result<(), std::fmt::Error> {
    let mut e = encoder.encode_descriptor(name, help, None, ConstGauge::new(0i64).metric_type())?;
    for (api, v) in values {
        ConstGauge::new(v).encode(e.encode_family(&[("api", api.as_str())])?)?;
    }
    Ok(())
}

impl Collector for LiveCounters {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        use std::sync::atomic::Ordering::Relaxed;
        let Some(gw) = self.gateway.upgrade() else {
            return Ok(());
        };
        let snapshot = gw.snapshot.load();
        gauge(
            &mut encoder,
            "tollgate_config_version",
            "Configuration version the gateway serves",
            snapshot.version,
        )?;
        gauge(
            &mut encoder,
            "tollgate_config_apis",
            "APIs the gateway routes",
            snapshot.route_count() as i64,
        )?;
        gauge(
            &mut encoder,
            "tollgate_config_keys",
            "API keys the gateway accepts",
            snapshot.key_count() as i64,
        )?;

        labelled(
            &mut encoder,
            "tollgate_config_reloads",
            "Configuration reloads: incremental (only what the change log names) or full",
            "kind",
            &[
                ("incremental", gw.reloads.incremental.load(Relaxed)),
                ("full", gw.reloads.full.load(Relaxed)),
            ],
        )?;
        per_api(
            &mut encoder,
            "tollgate_upstream_targets_healthy",
            "Upstream targets in rotation (passive and active health), by API",
            snapshot
                .routes()
                .iter()
                .map(|r| (r.slug.to_string(), r.balancer.healthy() as i64)),
        )?;
        per_api(
            &mut encoder,
            "tollgate_upstream_targets",
            "Upstream targets configured, by API",
            snapshot
                .routes()
                .iter()
                .map(|r| (r.slug.to_string(), r.balancer.targets.len() as i64)),
        )?;

        let rl = &gw.rate_limiter.stats;
        labelled(
            &mut encoder,
            "tollgate_rate_limit_decisions",
            "Rate-limit decisions: allowed, refused (429), unavailable (503, Redis failed in closed mode)",
            "decision",
            &[
                ("allowed", rl.allowed.load(Relaxed)),
                ("refused", rl.refused.load(Relaxed)),
                ("unavailable", rl.unavailable.load(Relaxed)),
            ],
        )?;
        counter(
            &mut encoder,
            "tollgate_rate_limit_redis_failures",
            "Rate-limit decisions Redis could not make (error or timeout)",
            rl.redis_failures.load(Relaxed),
        )?;
        gauge(
            &mut encoder,
            "tollgate_rate_limit_local_budgets",
            "Rate-limit budgets tracked in this gateway's memory",
            gw.rate_limiter.local().len() as i64,
        )?;

        let q = &gw.quotas.stats;
        labelled(
            &mut encoder,
            "tollgate_quota_decisions",
            "Quota decisions: within, overage (soft quota), exceeded (429), unknown (counter unreachable, admitted)",
            "decision",
            &[
                ("within", q.within.load(Relaxed)),
                ("overage", q.overage.load(Relaxed)),
                ("exceeded", q.exceeded.load(Relaxed)),
                ("unknown", q.unknown.load(Relaxed)),
            ],
        )?;
        counter(
            &mut encoder,
            "tollgate_quota_leases",
            "Blocks of calls leased from quota counters",
            q.leases.load(Relaxed),
        )?;

        let usage = gw.recorder.stats();
        gauge(
            &mut encoder,
            "tollgate_usage_queue_depth",
            "Usage events waiting in memory for the spool",
            gw.recorder.queue_depth() as i64,
        )?;
        counter(
            &mut encoder,
            "tollgate_usage_events_written",
            "Usage events shipped: confirmed by the usage store",
            usage.written.load(Relaxed),
        )?;
        counter(
            &mut encoder,
            "tollgate_usage_events_spooled",
            "Usage events appended to the durable spool",
            usage.spooled.load(Relaxed),
        )?;
        labelled(
            &mut encoder,
            "tollgate_usage_events_dropped",
            "Usage events lost, by reason",
            "reason",
            &[
                ("queue_full", usage.dropped_queue_full.load(Relaxed)),
                ("stopped", usage.dropped_stopped.load(Relaxed)),
                ("spool_full", usage.dropped_spool_full.load(Relaxed)),
                ("spool_error", usage.dropped_spool_error.load(Relaxed)),
                ("corrupt", usage.dropped_corrupt.load(Relaxed)),
            ],
        )?;
        counter(
            &mut encoder,
            "tollgate_usage_write_failures",
            "Failed inserts into the usage store (each retried; the events stay in the spool)",
            usage.write_failures.load(Relaxed),
        )?;
        let spool = &usage.spool;
        gauge(
            &mut encoder,
            "tollgate_usage_spool_bytes",
            "Bytes of unshipped usage in the spool on disk",
            spool.bytes.load(Relaxed) as i64,
        )?;
        gauge(
            &mut encoder,
            "tollgate_usage_spool_segments",
            "Spool segment files on disk (the one being written included)",
            spool.segments.load(Relaxed) as i64,
        )?;
        counter(
            &mut encoder,
            "tollgate_usage_spool_corrupt_tails",
            "Spool segments read back with a torn or corrupt tail (skipped)",
            spool.corrupt_tails.load(Relaxed),
        )?;
        counter(
            &mut encoder,
            "tollgate_usage_spool_skipped_bytes",
            "Bytes skipped in torn or corrupt spool tails",
            spool.skipped_bytes.load(Relaxed),
        )?;
        counter(
            &mut encoder,
            "tollgate_usage_spool_replayed_segments",
            "Spool segments found at start and replayed",
            usage.replayed_segments.load(Relaxed),
        )?;
        let e = encoder.encode_descriptor(
            "tollgate_usage_insert_duration_seconds",
            "Time the usage store took to confirm an insert",
            None,
            usage.insert_seconds.metric_type(),
        )?;
        usage.insert_seconds.encode(e)?;
        Ok(())
    }
}
