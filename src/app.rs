//! Starting and stopping the components of one process.
//!
//! Order at start: data dir, control-plane store (migrated), usage store
//! (migrated), then the gateway (with its usage writer and change follower) and
//! the portal and admin listeners. Order at stop: listeners stop accepting and
//! finish calls in flight, then the usage writer drains its queue into the
//! spool and ships what the store accepts, then the store closes. Nothing is
//! lost between the last call and the spool; what the store did not take is
//! shipped by the next start.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tollgate_analytics::writer::WriterSettings;
use tollgate_analytics::{UsageStore, UsageWriter};
use tollgate_core::config::display_addr;
use tollgate_core::{Settings, Store};
use tollgate_gateway::Gateway;
use tollgate_portal::AppState;

/// Which components this process runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Gateway, portal and admin API.
    All,
    /// The gateway only.
    Gateway,
    /// The portal and admin API only.
    Portal,
}

impl Mode {
    fn gateway(self) -> bool {
        matches!(self, Self::All | Self::Gateway)
    }

    fn portal(self) -> bool {
        matches!(self, Self::All | Self::Portal)
    }
}

/// A running process's components.
#[derive(Debug)]
pub struct Running {
    /// Where the gateway listens.
    pub gateway_addr: Option<SocketAddr>,
    /// Where the portal listens.
    pub portal_addr: Option<SocketAddr>,
    /// Where the admin API listens.
    pub admin_addr: Option<SocketAddr>,
    /// The control-plane store.
    pub store: Store,
    /// The usage store.
    pub usage: UsageStore,
    /// The gateway, when this process runs one.
    pub gateway: Option<Arc<Gateway>>,
    shutdown: watch::Sender<bool>,
    servers: JoinSet<()>,
    writer: Option<UsageWriter>,
    follower: Option<tokio::task::JoinHandle<()>>,
    retention: tokio::task::JoinHandle<()>,
    portal_cleanup: Option<tokio::task::JoinHandle<()>>,
}

/// Opens both stores, applying migrations.
pub async fn open_stores(settings: &Settings) -> anyhow::Result<(Store, UsageStore)> {
    std::fs::create_dir_all(&settings.data_dir)
        .with_context(|| format!("cannot create the data dir {}", settings.data_dir.display()))?;
    let store = Store::open(&settings.database_url)
        .await
        .context("cannot open the control-plane database (DATABASE_URL)")?;
    let usage = UsageStore::open(settings).await.context(
        "cannot open the usage store (CLICKHOUSE_URL, or the embedded store in the data dir)",
    )?;
    Ok((store, usage))
}

async fn bind(addr: SocketAddr, setting: &str) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr} ({setting})"))
}

/// Starts the components of `mode` on already opened stores.
pub async fn start(
    settings: &Settings,
    mode: Mode,
    store: Store,
    usage: UsageStore,
) -> anyhow::Result<Running> {
    let (shutdown, _) = watch::channel(false);
    let stopped = |rx: watch::Receiver<bool>| async move {
        let mut rx = rx;
        let _ = rx.wait_for(|s| *s).await;
    };
    let mut servers = JoinSet::new();
    let mut registry = prometheus_client::registry::Registry::default();
    let mut running = Running {
        gateway_addr: None,
        portal_addr: None,
        admin_addr: None,
        store: store.clone(),
        usage: usage.clone(),
        gateway: None,
        shutdown: shutdown.clone(),
        servers: JoinSet::new(),
        writer: None,
        follower: None,
        portal_cleanup: None,
        // Every process runs retention: dropping old data is idempotent, and a
        // gateway with the embedded store has no one else to do it.
        retention: tokio::spawn(tollgate_analytics::retention::run(
            usage.clone(),
            tollgate_analytics::retention::RetentionPolicy {
                raw_days: settings.usage_retention_days,
                rollup_days: settings.usage_rollup_retention_days,
            },
        )),
    };

    if mode.gateway() {
        let listener = bind(settings.gateway_addr, "TOLLGATE_GATEWAY_ADDR").await?;
        running.gateway_addr = Some(listener.local_addr()?);
        let spool_dir = settings.data_dir.join("spool");
        let (recorder, writer) = UsageWriter::start(
            usage.clone(),
            WriterSettings {
                flush_interval: settings.usage_flush_interval,
                batch_size: settings.usage_batch_size,
                queue_capacity: settings.usage_queue_capacity,
                spool_dir: spool_dir.clone(),
                sync_interval: settings.usage_spool_sync_interval,
                spool_max_bytes: settings.usage_spool_max_bytes,
            },
        )
        .with_context(|| format!("cannot open the usage spool in {}", spool_dir.display()))?;
        running.writer = Some(writer);
        let gateway = Gateway::start(store.clone(), recorder, settings)
            .await
            .context("cannot load the gateway configuration")?;
        running.follower = Some(store.watch_remote_changes(settings.config_poll_interval));
        gateway.register_metrics(&mut registry);
        running.gateway = Some(gateway.clone());
        servers.spawn(gateway.serve(listener, stopped(shutdown.subscribe())));
    }

    // The admin listener: the admin API where the portal runs, and /metrics always.
    let admin = bind(settings.admin_addr, "TOLLGATE_ADMIN_ADDR").await?;
    running.admin_addr = Some(admin.local_addr()?);
    let registry = Arc::new(registry);
    let metrics = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let registry = registry.clone();
            async move {
                (
                    [(
                        axum::http::header::CONTENT_TYPE,
                        "text/plain; version=0.0.4; charset=utf-8",
                    )],
                    tollgate_gateway::metrics::render(&registry),
                )
            }
        }),
    );

    let mut admin_router = metrics;
    if mode.portal() {
        let portal = bind(settings.portal_addr, "TOLLGATE_PORTAL_ADDR").await?;
        running.portal_addr = Some(portal.local_addr()?);
        let gateway_url =
            settings.gateway_url(running.gateway_addr.unwrap_or(settings.gateway_addr));
        let state = AppState {
            store: store.clone(),
            usage: usage.clone(),
            admin_token: settings.admin_token.clone(),
            gateway_url,
        };
        let portal_url = settings.portal_url(portal.local_addr()?);
        let site = tollgate_portal::site::router(state.clone(), settings, &portal_url)
            .context("cannot start the portal")?;
        running.portal_cleanup = Some(tokio::spawn(tollgate_portal::site::clean_up_expired(
            store.clone(),
        )));
        let decision_mail = tollgate_portal::subscriptions::DecisionMail::new(
            tollgate_portal::accounts::Mailer::new(
                settings.smtp.as_ref(),
                &settings.smtp_from,
                settings.data_dir.join("outbox"),
            )
            .context("cannot start the admin API's mail")?,
            &portal_url,
            &settings.portal_name,
        );
        admin_router = tollgate_portal::admin::router(state, decision_mail).merge(admin_router);
        let rx = shutdown.subscribe();
        servers.spawn(async move {
            // Peer addresses feed the per-address log-in throttle.
            let site = site.into_make_service_with_connect_info::<SocketAddr>();
            if let Err(e) = axum::serve(portal, site)
                .with_graceful_shutdown(stopped(rx))
                .await
            {
                tracing::error!(error = %e, "portal server failed");
            }
        });
    }
    let rx = shutdown.subscribe();
    servers.spawn(async move {
        if let Err(e) = axum::serve(admin, admin_router)
            .with_graceful_shutdown(stopped(rx))
            .await
        {
            tracing::error!(error = %e, "admin server failed");
        }
    });
    running.servers = servers;
    Ok(running)
}

impl Running {
    /// Stops accepting, finishes calls in flight, drains usage, closes stores.
    pub async fn stop(mut self) {
        let _ = self.shutdown.send(true);
        while self.servers.join_next().await.is_some() {}
        if let Some(f) = self.follower.take() {
            f.abort();
        }
        self.retention.abort();
        if let Some(c) = self.portal_cleanup.take() {
            c.abort();
        }
        // The gateway's body wrappers hold recorders; they are done once the
        // servers have finished their connections.
        if let Some(gw) = self.gateway.take() {
            gw.close_tunnels().await;
            gw.release_quotas().await;
        }
        if let Some(w) = self.writer.take() {
            w.shutdown().await;
        }
        self.store.close().await;
    }

    /// The lines that tell a person where everything is.
    pub fn banner(&self, settings: &Settings) -> Vec<String> {
        let mut lines = Vec::new();
        if let Some(a) = self.gateway_addr {
            lines.push(format!("Gateway:   {}", settings.gateway_url(a)));
        }
        if let Some(a) = self.portal_addr {
            lines.push(format!("Portal:    {}", settings.portal_url(a)));
            if settings.smtp.is_none() {
                lines.push(format!(
                    "Mail:      no SMTP server set; messages go to {}",
                    settings.data_dir.join("outbox").display()
                ));
            }
        }
        if let Some(a) = self.admin_addr {
            if self.portal_addr.is_some() {
                lines.push(format!("Admin API: http://{}/admin", display_addr(a)));
            }
            lines.push(format!("Metrics:   http://{}/metrics", display_addr(a)));
        }
        lines.push(format!("Usage:     {}", self.usage.describe()));
        lines
    }
}
