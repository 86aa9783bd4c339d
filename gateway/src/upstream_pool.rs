//! Kept-alive HTTP/1.1 connections to one plain-HTTP upstream target.
//!
//! The general upstream client (hyper-util's pooled client, for https, HTTP/2
//! and protocol upgrades) keys its pool by scheme and authority: every call
//! hashed that key on checkout and again on return, and went through a
//! connecting-or-pooled race of boxed futures, several thousand instructions
//! per call. Each balancer target owns one of these pools instead, so a call
//! takes a ready connection from a short list: no key, no hashing.
//!
//! A connection is handed back as soon as the response head has arrived; it
//! counts as ready again only when hyper has read the whole response off the
//! wire (`SendRequest::is_ready`), so a connection never carries two calls at
//! once.
//! Connections the upstream closed are dropped at the next checkout. A request
//! that a pooled connection could not send (closed just before) is tried on
//! another connection; one that was sent is never sent twice.

use std::sync::Mutex;
use std::time::Duration;

use http::uri::{Authority, PathAndQuery, Uri};
use http::{Request, Response};
use hyper::body::Incoming;
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::proxy::UpstreamBody;

/// Connections kept per target (busy and idle).
const MAX_KEPT: usize = 256;

/// Why a call could not be sent.
#[derive(Debug, thiserror::Error)]
pub enum PoolError {
    /// No TCP connection within the connect timeout.
    #[error("connect to {0} timed out")]
    ConnectTimeout(Authority),
    /// The TCP connection failed.
    #[error("connect to {0}: {1}")]
    Connect(Authority, std::io::Error),
    /// The HTTP exchange failed.
    #[error(transparent)]
    Http(#[from] hyper::Error),
}

/// Kept-alive connections to one target.
#[derive(Debug, Default)]
pub struct Http1Pool {
    kept: Mutex<Vec<SendRequest<UpstreamBody>>>,
}

impl Http1Pool {
    /// Sends `req` (an absolute URI to `authority`) on a ready connection, or
    /// a new one, and returns the response head.
    pub async fn send(
        &self,
        authority: &Authority,
        mut req: Request<UpstreamBody>,
        connect_timeout: Duration,
    ) -> Result<Response<Incoming>, PoolError> {
        // Origin form on the wire: the path and query only (Host is set).
        let origin = req
            .uri()
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| PathAndQuery::from_static("/"));
        *req.uri_mut() = Uri::from(origin);
        while let Some(mut conn) = self.checkout() {
            match conn.try_send_request(req).await {
                Ok(response) => {
                    self.checkin(conn);
                    return Ok(response);
                }
                Err(mut e) => match e.take_message() {
                    // Not sent (the connection had just closed): try another.
                    Some(unsent) => req = unsent,
                    None => return Err(e.into_error().into()),
                },
            }
        }
        let mut conn = connect(authority, connect_timeout).await?;
        let response = conn.send_request(req).await?;
        self.checkin(conn);
        Ok(response)
    }

    /// A ready connection, dropping closed ones on the way.
    fn checkout(&self) -> Option<SendRequest<UpstreamBody>> {
        let mut kept = self.kept.lock().unwrap_or_else(|e| e.into_inner());
        kept.retain(|c| !c.is_closed());
        let ready = kept.iter().rposition(SendRequest::is_ready)?;
        Some(kept.swap_remove(ready))
    }

    fn checkin(&self, conn: SendRequest<UpstreamBody>) {
        let mut kept = self.kept.lock().unwrap_or_else(|e| e.into_inner());
        if kept.len() < MAX_KEPT {
            kept.push(conn);
        }
    }

    /// Connections kept (busy or idle).
    pub fn len(&self) -> usize {
        self.kept.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// True when no connection is kept.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A new connection; its I/O runs in a task of its own until either side
/// closes it.
async fn connect(
    authority: &Authority,
    timeout: Duration,
) -> Result<SendRequest<UpstreamBody>, PoolError> {
    let host = authority.host();
    // An IPv6 literal comes in brackets.
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    let addr = (host, authority.port_u16().unwrap_or(80));
    let stream = match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
        Err(_) => return Err(PoolError::ConnectTimeout(authority.clone())),
        Ok(Err(e)) => return Err(PoolError::Connect(authority.clone(), e)),
        Ok(Ok(s)) => s,
    };
    let _ = stream.set_nodelay(true);
    let (sender, conn) = http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(error = %e, "upstream connection ended with an error");
        }
    });
    Ok(sender)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use bytes::Bytes;
    use http_body_util::{BodyExt, Either, Full};
    use hyper::service::service_fn;
    use tokio::net::TcpListener;

    use super::*;
    use crate::metering::CountingBody;

    /// An upstream that counts the connections it accepts and answers `ok`,
    /// or with `big`, 4 MiB (more than a connection buffers); with `close`,
    /// it answers with `Connection: close`.
    async fn upstream(close: bool, big: bool) -> (Authority, Arc<AtomicUsize>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let authority = listener.local_addr().unwrap().to_string().parse().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let counter = accepted.clone();
        tokio::spawn(async move {
            loop {
                let (stream, _) = listener.accept().await.unwrap();
                counter.fetch_add(1, Ordering::SeqCst);
                let service = service_fn(move |_req| async move {
                    let body = if big {
                        Bytes::from(vec![b'x'; 4 << 20])
                    } else {
                        Bytes::from_static(b"ok")
                    };
                    let mut resp = Response::new(Full::new(body));
                    if close {
                        resp.headers_mut()
                            .insert(http::header::CONNECTION, "close".parse().unwrap());
                    }
                    Ok::<_, std::convert::Infallible>(resp)
                });
                tokio::spawn(
                    hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service),
                );
            }
        });
        (authority, accepted)
    }

    fn request(authority: &Authority) -> Request<UpstreamBody> {
        let body = CountingBody::new(
            Either::Right(http_body_util::Full::default()),
            Arc::default(),
            None,
        );
        Request::builder()
            .uri(format!("http://{authority}/x?y=1"))
            .header(http::header::HOST, authority.as_str())
            .body(body)
            .unwrap()
    }

    async fn call(pool: &Http1Pool, authority: &Authority) -> Bytes {
        let resp = pool
            .send(authority, request(authority), Duration::from_secs(5))
            .await
            .unwrap();
        resp.into_body().collect().await.unwrap().to_bytes()
    }

    #[tokio::test]
    async fn sequential_calls_share_one_connection() {
        let (authority, accepted) = upstream(false, false).await;
        let pool = Http1Pool::default();
        for _ in 0..3 {
            assert_eq!(call(&pool, &authority).await, "ok");
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 1);
        assert_eq!(pool.len(), 1);
    }

    #[tokio::test]
    async fn a_connection_still_reading_a_body_is_not_shared() {
        let (authority, accepted) = upstream(false, true).await;
        let pool = Http1Pool::default();
        let first = pool
            .send(&authority, request(&authority), Duration::from_secs(5))
            .await
            .unwrap();
        // The first body is still unread (too big to be buffered): its
        // connection is busy, so the second call opens another.
        assert_eq!(call(&pool, &authority).await.len(), 4 << 20);
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
        let first = first.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(first.len(), 4 << 20);
        // Both are ready again.
        call(&pool, &authority).await;
        call(&pool, &authority).await;
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn connections_the_upstream_closes_are_replaced() {
        let (authority, accepted) = upstream(true, false).await;
        let pool = Http1Pool::default();
        for _ in 0..3 {
            assert_eq!(call(&pool, &authority).await, "ok");
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 3);
    }
}
