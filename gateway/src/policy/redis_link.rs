//! The Redis connection the cluster-wide policies share the handling of: made
//! in the background (retrying every second) so a gateway starts while Redis is
//! down, and waited for — up to the Redis timeout — by calls that arrive in the
//! first seconds after start, so a freshly started gateway neither falls back
//! nor admits unchecked while Redis is fine. Later, with Redis still not
//! reached, callers get no connection at once and apply their failure rule.

use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use redis::aio::ConnectionManager;

/// How long after start callers wait for the first connection.
const STARTUP_WAIT: Duration = Duration::from_secs(3);

/// A background-made connection to Redis.
pub struct RedisLink {
    conn: ArcSwapOption<ConnectionManager>,
    /// Turns true once connected, for callers that arrive before.
    connected: tokio::sync::watch::Sender<bool>,
    started: Instant,
    timeout: Duration,
}

impl std::fmt::Debug for RedisLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisLink")
            .field("connected", &self.is_connected())
            .finish_non_exhaustive()
    }
}

impl RedisLink {
    /// Starts connecting to `url`. `purpose` names the user in log lines
    /// (`rate limits`, `quotas`); `meanwhile` says what happens until connected.
    pub fn start(
        url: &str,
        timeout: Duration,
        purpose: &'static str,
        meanwhile: &'static str,
    ) -> Result<Arc<Self>, redis::RedisError> {
        let client = redis::Client::open(url)?;
        let link = Arc::new(Self {
            conn: ArcSwapOption::empty(),
            connected: tokio::sync::watch::Sender::new(false),
            started: Instant::now(),
            timeout,
        });
        let weak = Arc::downgrade(&link);
        tokio::spawn(async move {
            let mut warned = false;
            loop {
                let config = redis::aio::ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(timeout.max(Duration::from_millis(500))))
                    .set_response_timeout(Some(timeout));
                match ConnectionManager::new_with_config(client.clone(), config).await {
                    Ok(conn) => {
                        let Some(link) = weak.upgrade() else { return };
                        link.conn.store(Some(Arc::new(conn)));
                        link.connected.send_replace(true);
                        tracing::info!("{purpose}: connected to Redis");
                        return;
                    }
                    Err(e) => {
                        if !warned {
                            tracing::warn!(error = %e, "{purpose}: cannot connect to Redis; retrying every second, {meanwhile}");
                            warned = true;
                        }
                    }
                }
                if weak.strong_count() == 0 {
                    return;
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        });
        Ok(link)
    }

    /// Whether the connection is made.
    pub fn is_connected(&self) -> bool {
        self.conn.load().is_some()
    }

    /// The connection, or `None` when Redis has not been reached (after waiting
    /// up to the timeout for it in the first seconds after start).
    pub async fn connection(&self) -> Option<ConnectionManager> {
        if let Some(conn) = self.conn.load_full() {
            return Some((*conn).clone());
        }
        if self.started.elapsed() >= STARTUP_WAIT {
            return None;
        }
        let mut connected = self.connected.subscribe();
        let _ = tokio::time::timeout(self.timeout, connected.wait_for(|c| *c)).await;
        self.conn.load_full().map(|c| (*c).clone())
    }
}
