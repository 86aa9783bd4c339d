//! The log phase: one usage event per answered call, emitted exactly once when
//! the response body has been sent (or dropped, if the client went away).

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Buf;
use http_body::{Body, Frame, SizeHint};
use tollgate_analytics::{UsageEvent, UsageRecorder};

use crate::access_log::AccessLog;
use crate::metrics::RouteMetrics;

/// A request body that counts the bytes it passes on and, with a limit, fails
/// once more than `limit` bytes have come (the gateway then answers 413).
#[derive(Debug)]
pub struct CountingBody<B> {
    inner: B,
    count: Arc<AtomicU64>,
    limit: Option<u64>,
}

impl<B> CountingBody<B> {
    /// Wraps `inner`, adding every data frame's length to `count`.
    pub fn new(inner: B, count: Arc<AtomicU64>, limit: Option<u64>) -> Self {
        Self {
            inner,
            count,
            limit,
        }
    }
}

/// The error a [`CountingBody`] ends with when its limit is passed.
#[derive(Debug, thiserror::Error)]
#[error("request body larger than {0} bytes")]
pub struct BodyLimitExceeded(pub u64);

impl<B: Body + Unpin> Body for CountingBody<B>
where
    B::Data: Buf,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Data = B::Data;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        match Pin::new(&mut self.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    let total = self
                        .count
                        .fetch_add(data.remaining() as u64, Ordering::Relaxed)
                        + data.remaining() as u64;
                    if let Some(limit) = self.limit
                        && total > limit
                    {
                        return Poll::Ready(Some(Err(Box::new(BodyLimitExceeded(limit)))));
                    }
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e.into()))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// What the log phase needs to finish an event.
#[derive(Debug)]
pub struct Meter {
    /// The event, filled by the earlier phases.
    pub event: UsageEvent,
    /// When the call arrived.
    pub started: Instant,
    /// Request bytes, counted by the [`CountingBody`] on the way up.
    pub bytes_in: Arc<AtomicU64>,
    /// Where the event goes.
    pub recorder: UsageRecorder,
    /// The routed API's metrics (or the unrouted ones).
    pub metrics: Arc<RouteMetrics>,
    /// The structured access log, when enabled.
    pub access_log: Option<AccessLog>,
}

impl Meter {
    fn finish(self: Box<Self>, bytes_out: u64) {
        let latency = self.started.elapsed();
        self.record(0, bytes_out, latency);
    }

    /// Finishes the event of an upgraded call when its tunnel closes: the bytes
    /// it carried each way are added to the handshake's, and the latency is the
    /// handshake's (the time to the `101`).
    pub fn finish_upgraded(
        self: Box<Self>,
        tunnelled_in: u64,
        tunnelled_out: u64,
        latency: std::time::Duration,
    ) {
        self.record(tunnelled_in, tunnelled_out, latency);
    }

    fn record(mut self: Box<Self>, extra_in: u64, bytes_out: u64, latency: std::time::Duration) {
        self.event.bytes_out = bytes_out;
        self.event.bytes_in = self.bytes_in.load(Ordering::Relaxed) + extra_in;
        self.event.latency_us = u32::try_from(latency.as_micros()).unwrap_or(u32::MAX);
        let upstream = (self.event.upstream_latency_us > 0)
            .then(|| std::time::Duration::from_micros(u64::from(self.event.upstream_latency_us)));
        self.metrics.observe(self.event.status, latency, upstream);
        if let Some(log) = &self.access_log {
            log.record(&self.event);
        }
        self.recorder.record(self.event);
    }
}

/// A response body that counts bytes out and hands the usage event to the
/// recorder when it ends or is dropped, whichever comes first.
#[derive(Debug)]
pub struct MeteredBody<B> {
    inner: B,
    bytes_out: u64,
    /// Boxed: the answer is moved several times on its way to the client,
    /// and the event is most of its size.
    meter: Option<Box<Meter>>,
}

impl<B> MeteredBody<B> {
    /// Wraps a response body.
    pub fn new(inner: B, meter: Box<Meter>) -> Self {
        Self {
            inner,
            bytes_out: 0,
            meter: Some(meter),
        }
    }

    /// A body whose call is metered elsewhere (an upgraded connection's tunnel).
    pub fn unmetered(inner: B) -> Self {
        Self {
            inner,
            bytes_out: 0,
            meter: None,
        }
    }

    fn finish(&mut self) {
        if let Some(m) = self.meter.take() {
            m.finish(self.bytes_out);
        }
    }
}

impl<B: Body + Unpin> Body for MeteredBody<B>
where
    B::Data: Buf,
{
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    self.bytes_out += data.remaining() as u64;
                }
                if self.inner.is_end_stream() {
                    self.finish();
                }
            }
            Poll::Ready(None) | Poll::Ready(Some(Err(_))) => self.finish(),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl<B: crate::headers::CarriesRawHeaders> crate::headers::CarriesRawHeaders for MeteredBody<B> {
    fn raw_headers(&mut self) -> &mut Option<crate::headers::RawHeaders> {
        self.inner.raw_headers()
    }
}

impl<B> Drop for MeteredBody<B> {
    fn drop(&mut self) {
        self.finish();
    }
}
