//! Upgraded connections (WebSocket and any other protocol a `101 Switching
//! Protocols` starts): bytes are copied both ways, counted, and the call's usage
//! event is recorded once, when the tunnel closes — with the handshake's latency
//! and status, and the tunnelled bytes added to the handshake's.
//!
//! At shutdown the gateway closes every tunnel before the usage writer drains,
//! so a tunnel cut by a stop is still metered, with the bytes it carried.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use http::HeaderValue;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{Notify, watch};

use crate::metering::Meter;

/// The gateway's open tunnels.
#[derive(Debug)]
pub struct Tunnels {
    shutdown: watch::Sender<bool>,
    live: AtomicUsize,
    idle: Notify,
}

impl Default for Tunnels {
    fn default() -> Self {
        Self {
            shutdown: watch::channel(false).0,
            live: AtomicUsize::new(0),
            idle: Notify::new(),
        }
    }
}

/// Counts a tunnel as live until dropped.
struct Live<'a>(&'a Tunnels);

impl Drop for Live<'_> {
    fn drop(&mut self) {
        if self.0.live.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

/// Records the call's event with the bytes the tunnel carried, however the
/// tunnel ends (closed, failed, or cut at shutdown).
struct Metered {
    meter: Option<Box<Meter>>,
    handshake_latency: Duration,
    up: Arc<AtomicU64>,
    down: Arc<AtomicU64>,
}

impl Drop for Metered {
    fn drop(&mut self) {
        if let Some(m) = self.meter.take() {
            m.finish_upgraded(
                self.up.load(Ordering::Relaxed),
                self.down.load(Ordering::Relaxed),
                self.handshake_latency,
            );
        }
    }
}

impl Tunnels {
    /// Joins the client's and the upstream's upgraded connections once both
    /// are ready, copies bytes until either side closes, then records `meter`.
    pub fn spawn(
        self: &Arc<Self>,
        client: OnUpgrade,
        upstream: OnUpgrade,
        meter: Box<Meter>,
        request_id: HeaderValue,
    ) {
        let tunnels = Arc::clone(self);
        tunnels.live.fetch_add(1, Ordering::AcqRel);
        let handshake_latency = meter.started.elapsed();
        let mut shutdown = tunnels.shutdown.subscribe();
        tokio::spawn(async move {
            let _live = Live(&tunnels);
            let metered = Metered {
                meter: Some(meter),
                handshake_latency,
                up: Arc::default(),
                down: Arc::default(),
            };
            let copy = async {
                let (client, upstream) = match tokio::try_join!(client, upstream) {
                    Ok(both) => both,
                    Err(e) => {
                        tracing::debug!(error = %e, request_id = ?request_id, "protocol upgrade failed");
                        return;
                    }
                };
                let mut client = Counted::new(TokioIo::new(client), metered.up.clone());
                let mut upstream = Counted::new(TokioIo::new(upstream), metered.down.clone());
                if let Err(e) = tokio::io::copy_bidirectional(&mut client, &mut upstream).await {
                    tracing::debug!(error = %e, request_id = ?request_id, "upgraded connection ended");
                }
            };
            tokio::select! {
                () = copy => {}
                _ = shutdown.wait_for(|stop| *stop) => {
                    tracing::debug!(request_id = ?request_id, "upgraded connection closed at shutdown");
                }
            }
            drop(metered);
        });
    }

    /// Closes every tunnel and waits until each has recorded its event.
    pub async fn close_all(&self) {
        self.shutdown.send_replace(true);
        loop {
            let idle = self.idle.notified();
            if self.live.load(Ordering::Acquire) == 0 {
                return;
            }
            idle.await;
        }
    }

    /// Tunnels open now.
    pub fn open(&self) -> usize {
        self.live.load(Ordering::Relaxed)
    }
}

/// An upgraded connection that counts the bytes read from it.
struct Counted<T> {
    inner: T,
    read: Arc<AtomicU64>,
}

impl<T> Counted<T> {
    fn new(inner: T, read: Arc<AtomicU64>) -> Self {
        Self { inner, read }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Counted<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        let n = buf.filled().len() - before;
        self.read.fetch_add(n as u64, Ordering::Relaxed);
        polled
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Counted<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
