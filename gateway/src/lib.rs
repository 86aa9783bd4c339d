//! The data plane: answers API calls from an in-memory snapshot of the
//! configuration, proxies them to upstreams and meters every answer.
//!
//! Start-up loads the snapshot from the store; afterwards the store's change
//! signal (same process, LISTEN/NOTIFY or polling) triggers a reload in the
//! background, and the request path never touches the database. If the database
//! goes away the gateway keeps serving its last snapshot.

pub mod access_log;
pub mod aggregate;
pub mod balancer;
mod closing;
pub mod error;
pub mod headers;
pub mod metering;
pub mod metrics;
pub mod oauth;
pub mod pipeline;
pub mod policy;
pub mod proxy;
mod reload;
pub mod routing;
pub mod server;
pub mod snapshot;
pub mod tunnel;
pub mod upstream_pool;

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::net::TcpListener;
use tollgate_analytics::UsageRecorder;
use tollgate_core::{Settings, Store, StoreError};

use crate::access_log::AccessLog;
use crate::metrics::GatewayMetrics;
use crate::oauth::TokenIssuer;
use crate::policy::jwt::JwtVerifier;
use crate::policy::quota::{QuotaCounter, QuotaKeeper};
use crate::policy::rate_limit::{RateLimiter, RedisLimiter};
use crate::proxy::UpstreamClient;
use crate::snapshot::Snapshot;

/// A map looked up on every call (keys, access, rate-limit budgets, quota
/// blocks): foldhash, seeded per process, in place of SipHash, which cost
/// about 1k instructions over a call's six look-ups.
pub(crate) type FastMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;

/// How long in-flight calls may take to finish at shutdown.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

/// The gateway: a snapshot, an upstream client and a usage recorder.
pub struct Gateway {
    snapshot: ArcSwap<Snapshot>,
    client: UpstreamClient,
    h2c_client: proxy::H2cClient,
    recorder: UsageRecorder,
    upstream_timeout: Duration,
    upstream_read_timeout: Duration,
    upstream_total_timeout: Option<Duration>,
    upstream_connect_timeout: Duration,
    client_timeout: Duration,
    node: tollgate_analytics::event::Text,
    rate_limiter: RateLimiter,
    quotas: QuotaKeeper,
    jwt: JwtVerifier,
    access_log: Option<AccessLog>,
    tokens: Option<TokenIssuer>,
    metrics: GatewayMetrics,
    reloads: reload::ReloadStats,
    tunnels: Arc<tunnel::Tunnels>,
    background: Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

impl std::fmt::Debug for Gateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gateway")
            .field("version", &self.snapshot.load().version)
            .finish_non_exhaustive()
    }
}

impl Gateway {
    /// Loads the configuration and starts following changes. Fails if the
    /// store cannot be read at start.
    pub async fn start(
        store: Store,
        recorder: UsageRecorder,
        settings: &Settings,
    ) -> Result<Arc<Self>, StoreError> {
        let config = store.load_gateway_config().await?;
        let metrics = GatewayMetrics::new();
        let snapshot = Snapshot::build(&config, None, &metrics);
        tracing::info!(
            version = snapshot.version,
            apis = snapshot.route_count(),
            keys = snapshot.key_count(),
            "gateway configuration loaded"
        );
        let redis = match &settings.redis_url {
            Some(url) => Some(
                RedisLimiter::start(url, settings.redis_timeout)
                    .map_err(|e| StoreError::Corrupt(format!("invalid TOLLGATE_REDIS_URL: {e}")))?,
            ),
            None => None,
        };
        let rate_limiter = RateLimiter::new(redis, settings.rate_limit_fail_closed);
        let quota_counter =
            QuotaCounter::from_settings(&store, settings).map_err(StoreError::Corrupt)?;
        let gateway = Arc::new(Self {
            snapshot: ArcSwap::from_pointee(snapshot),
            h2c_client: proxy::h2c_client(settings.upstream_connect_timeout),
            client: proxy::client(
                settings.upstream_connect_timeout,
                settings.upstream_ca_file.as_deref(),
            )
            .map_err(|e| StoreError::Corrupt(format!("invalid TOLLGATE_UPSTREAM_CA_FILE: {e}")))?,
            recorder,
            upstream_timeout: settings.upstream_timeout,
            upstream_read_timeout: settings.upstream_read_timeout,
            upstream_total_timeout: settings.upstream_total_timeout,
            upstream_connect_timeout: settings.upstream_connect_timeout,
            client_timeout: settings.client_timeout,
            node: settings.node_name.as_str().into(),
            rate_limiter,
            quotas: QuotaKeeper::new(quota_counter, settings.quota_lease_size),
            jwt: JwtVerifier::new(),
            access_log: settings.access_log.then(AccessLog::start),
            tokens: settings
                .token_secret
                .as_deref()
                .map(|s| TokenIssuer::new(s, settings.token_ttl)),
            metrics,
            reloads: reload::ReloadStats::default(),
            tunnels: Arc::default(),
            background: Mutex::new(Vec::new()),
        });
        // Spawned once the gateway exists: the tasks hold only a weak reference
        // and end when the gateway is dropped.
        let weak = Arc::downgrade(&gateway);
        gateway
            .background
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend([
                tokio::spawn(reload::follow(store.clone(), weak.clone())),
                tokio::spawn(reload::record_key_use(store, weak.clone())),
                tokio::spawn(reload::sweep_rate_limits(weak)),
            ]);
        Ok(gateway)
    }

    /// Registers the gateway's metrics (served on the admin listener's `/metrics`).
    pub fn register_metrics(
        self: &Arc<Self>,
        registry: &mut prometheus_client::registry::Registry,
    ) {
        self.metrics.register(registry, Arc::downgrade(self));
    }

    /// Closes upgraded connections (WebSockets) and waits until each has
    /// recorded its usage event; call at shutdown, before the usage writer drains.
    pub async fn close_tunnels(&self) {
        self.tunnels.close_all().await;
    }

    /// Upgraded connections (WebSockets) open now.
    pub fn open_tunnels(&self) -> usize {
        self.tunnels.open()
    }

    /// Gives back unused quota leases; call at shutdown, after the last call.
    pub async fn release_quotas(&self) {
        self.quotas.release_all().await;
    }

    /// The quota keeper, for its counters.
    pub fn quotas(&self) -> &QuotaKeeper {
        &self.quotas
    }

    /// The rate limiter, for its counters.
    pub fn rate_limiter(&self) -> &RateLimiter {
        &self.rate_limiter
    }

    /// The configuration version being served.
    pub fn version(&self) -> i64 {
        self.snapshot.load().version
    }

    /// Serves calls on `listener` until `shutdown` resolves, then stops
    /// accepting and waits (up to 30 s) for calls in flight; idle connections
    /// close at once.
    pub async fn serve(self: Arc<Self>, listener: TcpListener, shutdown: impl Future<Output = ()>) {
        // Every connection holds a signal: `drained` is the end of the last one.
        let closing = closing::Closing::new();
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                accepted = listener.accept() => {
                    let (stream, peer) = match accepted {
                        Ok(a) => a,
                        Err(e) => {
                            // Out of file descriptors and the like: back off briefly.
                            tracing::warn!(error = %e, "accept failed");
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            continue;
                        }
                    };
                    let _ = stream.set_nodelay(true);
                    let peer = Arc::new(proxy::Peer::new(peer));
                    tokio::spawn(server::serve(self.clone(), stream, peer, closing.signal()));
                }
                () = &mut shutdown => break,
            }
        }
        drop(listener);
        closing.close();
        if tokio::time::timeout(DRAIN_TIMEOUT, closing.drained())
            .await
            .is_err()
        {
            tracing::warn!("calls still in flight after 30 s; closing them");
        }
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let tasks = self.background.get_mut().unwrap_or_else(|e| e.into_inner());
        for task in tasks.drain(..) {
            task.abort();
        }
    }
}
