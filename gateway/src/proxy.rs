//! The proxy phase: forward the call to an upstream target over a pooled
//! keep-alive client, streaming both bodies.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Request, Response, Uri};
use http_body_util::{BodyExt, Either, Full};
use hyper::body::Incoming;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use crate::error::GatewayError;
use crate::headers::{
    APIKEY, CarriesRawHeaders, Hop, RawHeaders, TRACEPARENT, X_API_KEY, X_FORWARDED_FOR,
    X_FORWARDED_HOST, X_FORWARDED_PROTO, X_REQUEST_ID, push_line,
};
use crate::metering::CountingBody;
use crate::snapshot::Target;
use crate::upstream_pool::{Http1Pool, PoolError, PooledStream, Reply, SMALL_BODY};

/// A call's body as the listener hands it over: streamed by hyper's server,
/// or read whole (see [`crate::server`]).
pub type RequestBody = Either<Incoming, Full<Bytes>>;

/// The body sent upstream: the client's, counted, or one the gateway made
/// (a mapped JSON body; empty on a retry of a call without a body).
pub type UpstreamBody = CountingBody<RequestBody>;

/// Pooled HTTP/1.1 and HTTP/2 client for http and https upstreams.
pub type UpstreamClient = Client<HttpsConnector<HttpConnector>, UpstreamBody>;

/// HTTP/2 without TLS (prior knowledge), for plain targets that ask for `h2c`:
/// one multiplexed connection per target.
pub type H2cClient = Client<HttpConnector, UpstreamBody>;

/// Builds the h2c client.
pub fn h2c_client(connect_timeout: Duration) -> H2cClient {
    let mut http = HttpConnector::new();
    http.set_connect_timeout(Some(connect_timeout));
    http.set_nodelay(true);
    Client::builder(TokioExecutor::new())
        .http2_only(true)
        .pool_idle_timeout(Duration::from_secs(90))
        .build(http)
}

/// Builds the shared upstream client. https upstreams are checked against the
/// public (webpki) roots and, when given, the CA certificates of `extra_roots`
/// (PEM); HTTP/2 is offered by ALPN.
pub fn client(
    connect_timeout: Duration,
    extra_roots: Option<&std::path::Path>,
) -> Result<UpstreamClient, String> {
    let mut http = HttpConnector::new();
    http.set_connect_timeout(Some(connect_timeout));
    http.set_nodelay(true);
    http.enforce_http(false);
    let mut roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    if let Some(path) = extra_roots {
        use rustls::pki_types::{CertificateDer, pem::PemObject};
        let pem =
            std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let mut added = 0;
        for cert in CertificateDer::pem_slice_iter(&pem) {
            let cert =
                cert.map_err(|e| format!("{}: not a PEM certificate file: {e}", path.display()))?;
            roots
                .add(cert)
                .map_err(|e| format!("{}: a certificate cannot be trusted: {e}", path.display()))?;
            added += 1;
        }
        if added == 0 {
            return Err(format!("{} holds no PEM certificate", path.display()));
        }
    }
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| format!("TLS set-up: {e}"))?
    .with_root_certificates(roots)
    .with_no_client_auth();
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .enable_http2()
        .wrap_connector(http);
    Ok(Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(90))
        .pool_max_idle_per_host(256)
        .build(https))
}

/// True for the hop-by-hop headers (RFC 9110 §7.6.1) that never cross a
/// proxy (besides those a `Connection` header names).
fn is_hop_by_hop(name: &HeaderName) -> bool {
    Hop::is_hop_by_hop(name.as_str().as_bytes())
}

/// Removes hop-by-hop headers, including those the `Connection` header names.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let mut doomed = Vec::new();
    find_hop_by_hop(headers, &mut doomed);
    remove_all(headers, doomed);
}

/// Adds to `doomed` the hop-by-hop headers present, including those the
/// `Connection` header names. Names are compared, not hashed or parsed: only
/// headers that are there get removed, and a `Connection` token costs no
/// allocation.
fn find_hop_by_hop(headers: &HeaderMap, doomed: &mut Vec<HeaderName>) {
    let mut connection = false;
    for name in headers.keys() {
        if is_hop_by_hop(name) {
            connection |= *name == header::CONNECTION;
            doomed.push(name.clone());
        }
    }
    if !connection {
        return;
    }
    for value in headers.get_all(header::CONNECTION) {
        for token in crate::headers::list_items(value.as_bytes()) {
            if token.is_empty() {
                continue;
            }
            if let Some(name) = headers
                .keys()
                .find(|k| k.as_str().as_bytes().eq_ignore_ascii_case(token))
                && !doomed.contains(name)
            {
                doomed.push(name.clone());
            }
        }
    }
}

/// Removes every header named in `doomed` (each name once is enough: a
/// removal takes all of its values).
fn remove_all(headers: &mut HeaderMap, doomed: Vec<HeaderName>) {
    for name in doomed {
        headers.remove(name);
    }
}

/// The upstream URI for `rest` (the path after the API's base path) and the
/// original query.
pub fn upstream_uri(target: &Target, rest: &str, query: Option<&str>) -> Result<Uri, http::Error> {
    let path_and_query = upstream_path(target, rest, query);
    let mut parts = http::uri::Parts::default();
    parts.scheme = Some(target.scheme.clone());
    parts.authority = Some(target.authority.clone());
    parts.path_and_query = Some(http::uri::PathAndQuery::from_maybe_shared(
        bytes::Bytes::from(path_and_query),
    )?);
    Ok(Uri::from_parts(parts)?)
}

/// The upstream request's path and query, in a buffer exactly as long as
/// the text: `Bytes` takes such a buffer as it is, and allocates a second
/// time for one with spare room.
fn upstream_path(target: &Target, rest: &str, query: Option<&str>) -> String {
    let slash = target.path.is_empty() && rest.is_empty();
    let mut path_and_query = String::with_capacity(
        target.path.len() + rest.len() + usize::from(slash) + query.map_or(0, |q| q.len() + 1),
    );
    path_and_query.push_str(&target.path);
    path_and_query.push_str(rest);
    if slash {
        path_and_query.push('/');
    }
    if let Some(q) = query {
        path_and_query.push('?');
        path_and_query.push_str(q);
    }
    path_and_query
}

/// The body passed back to the client: streamed (under the read and total
/// timeouts), or read whole when small; with the upstream's header lines
/// when they came off a target's own connection and are not yet merged into
/// the answer's header map ([`RawHeaders`]).
#[derive(Debug)]
pub struct ProxiedBody {
    /// The streamed one is boxed: it is five times the size of a whole
    /// body, and every answer (most of them small) is moved several times on
    /// its way to the client.
    body: Either<Box<TimedBody<StreamedBody>>, Full<Bytes>>,
    raw: Option<RawHeaders>,
}

impl ProxiedBody {
    /// A body the gateway has whole.
    pub fn whole(bytes: Bytes) -> Self {
        Self::from(Full::new(bytes))
    }

    fn streamed(body: TimedBody<StreamedBody>) -> Self {
        Self {
            body: Either::Left(Box::new(body)),
            raw: None,
        }
    }

    /// The body, streamed or whole, without the header lines.
    pub fn into_inner(self) -> Either<Box<TimedBody<StreamedBody>>, Full<Bytes>> {
        self.body
    }
}

impl From<Full<Bytes>> for ProxiedBody {
    fn from(body: Full<Bytes>) -> Self {
        Self {
            body: Either::Right(body),
            raw: None,
        }
    }
}

impl CarriesRawHeaders for ProxiedBody {
    fn raw_headers(&mut self) -> &mut Option<RawHeaders> {
        &mut self.raw
    }
}

impl http_body::Body for ProxiedBody {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        std::pin::Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

/// An upstream's streamed body: from the general client (hyper's), or off a
/// target's own connection.
pub type StreamedBody = Either<Incoming, PooledStream>;

/// How long an exchange with an upstream may take.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    /// Until the response head (and a small body).
    pub head: Duration,
    /// Longest silence while a streamed body comes.
    pub read: Duration,
    /// The whole exchange, head and body, if limited.
    pub total: Option<Duration>,
}

/// Why a streamed upstream body was cut.
#[derive(Debug, thiserror::Error)]
pub enum BodyTimeout {
    /// The upstream sent nothing for the read timeout.
    #[error("the upstream sent no data for {0:?} (read timeout)")]
    Idle(Duration),
    /// The exchange passed its total timeout.
    #[error("the upstream exchange passed its total timeout of {0:?}")]
    Total(Duration),
}

/// A streamed upstream body that fails when the upstream goes silent for the
/// read timeout or the exchange passes its total deadline. The client then sees
/// the response cut short (the status is already sent); the cut is logged.
pub struct TimedBody<B> {
    inner: B,
    idle: Duration,
    idle_timer: std::pin::Pin<Box<tokio::time::Sleep>>,
    total: Option<(Duration, std::pin::Pin<Box<tokio::time::Sleep>>)>,
}

impl<B> std::fmt::Debug for TimedBody<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TimedBody")
            .field("idle", &self.idle)
            .finish_non_exhaustive()
    }
}

impl<B> TimedBody<B> {
    /// Wraps `inner`; the total deadline counts from `sent`.
    pub fn new(inner: B, timeouts: Timeouts, sent: Instant) -> Self {
        let now = tokio::time::Instant::now();
        Self {
            inner,
            idle: timeouts.read,
            idle_timer: Box::pin(tokio::time::sleep_until(now + timeouts.read)),
            total: timeouts.total.map(|t| {
                let deadline = tokio::time::Instant::from_std(sent + t);
                (t, Box::pin(tokio::time::sleep_until(deadline)))
            }),
        }
    }
}

impl<B> http_body::Body for TimedBody<B>
where
    B: http_body::Body + Unpin,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Data = B::Data;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        use std::task::Poll;
        let this = &mut *self;
        match std::pin::Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(frame) => {
                let next = tokio::time::Instant::now() + this.idle;
                this.idle_timer.as_mut().reset(next);
                return Poll::Ready(frame.map(|f| f.map_err(Into::into)));
            }
            Poll::Pending => {}
        }
        if let Some((t, timer)) = &mut this.total
            && timer.as_mut().poll(cx).is_ready()
        {
            return Poll::Ready(Some(Err(Box::new(BodyTimeout::Total(*t)))));
        }
        if this.idle_timer.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Some(Err(Box::new(BodyTimeout::Idle(this.idle)))));
        }
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// What the proxy phase returns: the upstream's response and how long its head took.
pub struct Proxied {
    /// The upstream's response, headers cleaned.
    pub response: Response<ProxiedBody>,
    /// Time to the response head.
    pub upstream_latency: Duration,
}

/// Why an exchange with the upstream failed, before the timeout.
enum Failed {
    Request(hyper_util::client::legacy::Error),
    Pooled(PoolError),
    Body(Box<dyn std::error::Error + Send + Sync>),
}

/// Where a call goes: a target's own connection pool (plain HTTP/1.1 with a
/// small body of known size, see [`crate::upstream_pool::fits`]), or the
/// general client (https, HTTP/2, protocol upgrades, streamed uploads).
#[derive(Clone, Copy)]
pub enum Route<'a> {
    /// The target's pool, with the connect timeout for a new connection.
    Pool(&'a Http1Pool, Duration),
    /// The general client.
    Client,
    /// HTTP/2 without TLS.
    H2c(&'a H2cClient),
}

/// Sends the prepared request upstream and waits at most the head timeout (or
/// what is left of the total) for the head and, when small, the body; a
/// streamed body then runs under the read and total timeouts.
///
/// With `raw_headers`, an answer from a target's pool keeps its headers as
/// [`RawHeaders`] lines with its body (for a caller that only inserts
/// headers into the answer); without, they are in its
/// header map, as every other route's answers are.
pub async fn forward(
    client: &UpstreamClient,
    route: Route<'_>,
    mut req: Request<UpstreamBody>,
    mut forwarded: Forwarded,
    timeouts: Timeouts,
    request_id: &str,
    raw_headers: bool,
) -> Result<Proxied, GatewayError> {
    let sent = Instant::now();
    let timeout = timeouts
        .total
        .map_or(timeouts.head, |t| t.min(timeouts.head));
    // For log lines only; a shared-bytes clone, not a copy.
    let target = req.uri().authority().cloned();
    let target = DisplayTarget(target.as_ref());
    // One deadline for the head and a small body, from `sent` (no second
    // clock reading).
    let deadline = tokio::time::Instant::from_std(sent) + timeout;
    let authority = match route {
        Route::Pool(..) => req.uri().authority().cloned(),
        _ => None,
    };
    // A target's pool keeps the deadline on the connection's own timer.
    let pooled = authority.is_some();
    let exchange = async {
        let hyper_reply = |r: Response<Incoming>| r.map(|b| Reply::Stream(Either::Left(b)));
        // Only the pool writes the changes itself.
        if authority.is_none() {
            forwarded.apply(req.headers_mut());
        }
        let (mut response, raw) = match route {
            Route::Pool(pool, connect_timeout) => match authority {
                Some(authority) => {
                    let (response, raw) = pool
                        .send(&authority, req, &forwarded, connect_timeout, deadline)
                        .await
                        .map_err(Failed::Pooled)?;
                    let response = response.map(|reply| match reply {
                        Reply::Stream(s) => Reply::Stream(Either::Right(s)),
                        Reply::Whole(b) => Reply::Whole(b),
                    });
                    (response, Some(raw))
                }
                None => (
                    hyper_reply(client.request(req).await.map_err(Failed::Request)?),
                    None,
                ),
            },
            Route::Client => (
                hyper_reply(client.request(req).await.map_err(Failed::Request)?),
                None,
            ),
            Route::H2c(h2c) => (
                hyper_reply(h2c.request(req).await.map_err(Failed::Request)?),
                None,
            ),
        };
        let upstream_latency = sent.elapsed();
        // The pool's lines come without hop-by-hop headers.
        let raw = match raw {
            Some(raw) if !raw_headers => {
                raw.merge_into(response.headers_mut());
                None
            }
            raw => raw,
        };
        strip_hop_by_hop(response.headers_mut());
        // A small body announced by Content-Length is read whole, so the
        // response goes out in one write instead of a head and a body.
        let small = response
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok())
            .is_some_and(|n| n <= SMALL_BODY);
        let (parts, reply) = response.into_parts();
        let mut body = match reply {
            Reply::Whole(bytes) => ProxiedBody::whole(bytes),
            // (Not a pool's: it reads a small body whole itself, by the deadline.)
            Reply::Stream(stream) if small && !pooled => {
                let collected = stream.collect().await.map_err(Failed::Body)?;
                ProxiedBody::whole(collected.to_bytes())
            }
            Reply::Stream(stream) => ProxiedBody::streamed(TimedBody::new(stream, timeouts, sent)),
        };
        body.raw = raw;
        let response = Response::from_parts(parts, body);
        Ok(Proxied {
            response,
            upstream_latency,
        })
    };
    // Pinned where it was made: the timeout holds a reference, not the
    // exchange's 2 KB state, which it would otherwise copy at every move
    // (five per call).
    let exchange = std::pin::pin!(exchange);
    let exchanged = if pooled {
        Ok(exchange.await)
    } else {
        tokio::time::timeout_at(deadline, exchange).await
    };
    match exchanged {
        Ok(Ok(proxied)) => Ok(proxied),
        Err(_) | Ok(Err(Failed::Pooled(PoolError::TimedOut))) => {
            tracing::warn!(request_id, upstream = %target, timeout_ms = timeout.as_millis() as u64, "upstream timed out");
            Err(GatewayError::UpstreamTimeout)
        }
        Ok(Err(Failed::Request(e))) => {
            tracing::warn!(request_id, upstream = %target, error = %e, source = ?std::error::Error::source(&e), "upstream unreachable");
            Err(GatewayError::UpstreamUnreachable)
        }
        Ok(Err(Failed::Pooled(e))) => {
            tracing::warn!(request_id, upstream = %target, error = %e, source = ?std::error::Error::source(&e), "upstream unreachable");
            Err(GatewayError::UpstreamUnreachable)
        }
        Ok(Err(Failed::Body(e))) => {
            tracing::warn!(request_id, upstream = %target, error = %e, "upstream body failed");
            Err(GatewayError::UpstreamUnreachable)
        }
    }
}

/// An upstream's authority in log lines (empty when unknown).
struct DisplayTarget<'a>(Option<&'a http::uri::Authority>);

impl std::fmt::Display for DisplayTarget<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Some(a) => f.write_str(a.as_str()),
            None => Ok(()),
        }
    }
}

/// The client end of a connection, resolved once per connection: its address
/// and the texts every call from it needs (the usage event's client IP, the
/// `X-Forwarded-For` value), so calls on a kept-alive connection format nothing.
#[derive(Debug)]
pub struct Peer {
    /// The client's address.
    pub ip: IpAddr,
    /// The address as text.
    pub text: tollgate_analytics::event::Text,
    /// The address as a header value.
    pub header: HeaderValue,
}

impl Peer {
    /// Resolves the texts of `addr`.
    pub fn new(addr: SocketAddr) -> Self {
        let ip = addr.ip();
        let text = ip.to_string();
        Self {
            ip,
            header: HeaderValue::from_str(&text).expect("an IP address is a valid header value"),
            text: text.into(),
        }
    }
}

/// Who the gateway admitted a call for, told to the upstream in trusted
/// `x-tollgate-*` headers.
#[derive(Debug, Clone, Copy)]
pub struct Identity<'a> {
    /// The app.
    pub app_id: &'a str,
    /// The app and developer ids, then the plan and subscription ids, as
    /// header lines built with the snapshot (an id that cannot be a header
    /// value is left out).
    pub lines: [&'a [u8]; 2],
}

/// What the gateway changes in a call's headers on the way up, kept beside
/// the client's header map rather than applied to it. The target's pool
/// writes the map's headers less [`Self::skips`], then [`Self::lines`], so a
/// call inserts nothing into the map (each insert hashes its name, and the
/// first grows the map, rehashing every entry) and the added headers are
/// written once, as lines, not made into header values first; the other
/// routes, and every step that edits the map itself (transforms, upgrades),
/// [`Self::apply`] it first.
#[derive(Debug, Clone, Default)]
pub struct Forwarded {
    /// Names of the client's headers that do not go up: hop-by-hop and
    /// credential headers, any `x-tollgate-*`, and those the lines replace.
    skip: Vec<HeaderName>,
    /// The headers the gateway sets (identity, `Host`, forwarding and
    /// tracing) as `name: value` lines, each ended by CRLF: the `Host` line
    /// first, up to `host_end`.
    lines: Vec<u8>,
    host_end: usize,
}

impl Forwarded {
    /// Applies the changes to `headers` (removals, then inserts); nothing is
    /// left to apply afterwards.
    pub fn apply(&mut self, headers: &mut HeaderMap) {
        for name in self.skip.drain(..) {
            headers.remove(name);
        }
        let lines = std::mem::take(&mut self.lines);
        self.host_end = 0;
        for line in lines.split_inclusive(|&b| b == b'\n') {
            let line = &line[..line.len() - 2];
            let Some(colon) = memchr::memchr(b':', line) else {
                continue;
            };
            // Every line was written from a header name and value.
            if let (Ok(name), Ok(value)) = (
                HeaderName::from_bytes(&line[..colon]),
                HeaderValue::from_bytes(&line[colon + 2..]),
            ) {
                headers.insert(name, value);
            }
        }
    }

    /// Sets the `Host` sent up (a retry goes to another target), replacing
    /// the client's.
    pub fn set_host(&mut self, host: &HeaderValue) {
        let host = host.as_bytes();
        // `host: ` before the value, CRLF after.
        let current = (self.host_end > 0).then(|| &self.lines[6..self.host_end - 2]);
        if current != Some(host) {
            let rest = &self.lines[self.host_end..];
            // Room for the lines of a typical call (about 500 bytes) when
            // this is the first.
            let mut lines = Vec::with_capacity(host.len() + 8 + rest.len().max(504));
            push_line(&mut lines, b"host", host);
            let end = lines.len();
            lines.extend_from_slice(rest);
            self.lines = lines;
            self.host_end = end;
        }
        if !self.skip.contains(&header::HOST) {
            self.skip.push(header::HOST);
        }
    }

    /// True when the client's headers of this name do not go up.
    pub fn skips(&self, name: &HeaderName) -> bool {
        self.skip.contains(name)
    }

    /// The headers the gateway adds, as CRLF-ended lines, in order (`Host`
    /// first).
    pub fn lines(&self) -> &[u8] {
        &self.lines
    }

    /// Adds `name` (replacing the client's).
    fn set(&mut self, name: HeaderName, value: &[u8], sent: bool) {
        push_line(&mut self.lines, name.as_str().as_bytes(), value);
        if sent && !self.skip.contains(&name) {
            self.skip.push(name);
        }
    }
}

/// The request-header changes for the upstream: hop-by-hop and credential
/// headers removed, `Host` set to the target, forwarding, tracing and identity
/// headers added. Any `x-tollgate-*` header the client sent is removed, so the
/// upstream can trust the ones it gets. One pass over the client's headers,
/// comparing names, finds all of it: nothing is hashed.
pub fn prepare_headers(
    headers: &HeaderMap,
    target: &Target,
    client: &Peer,
    request_id: &HeaderValue,
    strip_authorization: bool,
    identity: Option<Identity<'_>>,
) -> Forwarded {
    let mut skip = Vec::with_capacity(4);
    find_hop_by_hop(headers, &mut skip);
    let (mut host, mut forwarded_for, mut trace) = (None, None, None);
    let (mut proto_sent, mut host_sent, mut rid_sent) = (false, false, false);
    for (name, value) in headers {
        // A header the client's `Connection` names is hop-by-hop: its value
        // is not carried on, as if removed before it was read.
        let hop = |skip: &Vec<HeaderName>| skip.contains(name);
        if *name == header::HOST {
            host = host.or((!hop(&skip)).then_some(value));
        } else if *name == X_FORWARDED_FOR {
            forwarded_for = forwarded_for.or((!hop(&skip)).then_some(value));
        } else if *name == TRACEPARENT {
            trace = trace.or((!hop(&skip)).then_some(value));
        } else if *name == X_FORWARDED_PROTO {
            proto_sent = true;
        } else if *name == X_FORWARDED_HOST {
            host_sent = true;
        } else if *name == X_REQUEST_ID {
            rid_sent = true;
        } else if (*name == X_API_KEY
            || *name == APIKEY
            || (strip_authorization && *name == header::AUTHORIZATION)
            || name.as_str().starts_with("x-tollgate-"))
            && !skip.contains(name)
        {
            skip.push(name.clone());
        }
    }
    let mut out = Forwarded {
        skip,
        // Made by `set_host` below, with room for the rest.
        lines: Vec::new(),
        host_end: 0,
    };
    out.set_host(&target.host);
    if let Some(id) = identity {
        // Any the client sent are skipped above (`x-tollgate-*`).
        for lines in id.lines {
            out.lines.extend_from_slice(lines);
        }
    }
    let forwarded_for_sent = forwarded_for.is_some();
    match forwarded_for.and_then(|v| v.to_str().ok()) {
        Some(prev) => {
            let mut chain = Vec::with_capacity(prev.len() + 2 + client.text.len());
            chain.extend_from_slice(prev.as_bytes());
            chain.extend_from_slice(b", ");
            chain.extend_from_slice(client.text.as_bytes());
            out.set(X_FORWARDED_FOR, &chain, forwarded_for_sent);
        }
        None => out.set(
            X_FORWARDED_FOR,
            client.header.as_bytes(),
            forwarded_for_sent,
        ),
    }
    out.set(X_FORWARDED_PROTO, b"http", proto_sent);
    if let Some(h) = host {
        out.set(X_FORWARDED_HOST, h.as_bytes(), host_sent);
    }
    out.set(
        TRACEPARENT,
        &traceparent(trace, request_id),
        trace.is_some(),
    );
    out.set(X_REQUEST_ID, request_id.as_bytes(), rid_sent);
    out
}

fn is_lower_hex(s: &str, len: usize) -> bool {
    s.len() == len
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// The W3C `traceparent` sent upstream: the caller's trace continues with the
/// gateway as the parent span; a call without (or with a malformed) one starts a
/// trace whose id is the request id when that is 32 hex characters.
pub fn traceparent(incoming: Option<&HeaderValue>, request_id: &HeaderValue) -> [u8; 55] {
    // "00-" trace (32) "-" span (16) "-" flags (2), written in place.
    let mut out = *b"00-00000000000000000000000000000000-0000000000000000-01";
    let span = uuid::Uuid::new_v4().as_u64_pair().0 | 1;
    hex_into(&mut out[36..52], &span.to_be_bytes());
    let continued = incoming.and_then(|v| v.to_str().ok()).and_then(|v| {
        let parts: Vec<&str> = v.trim().split('-').collect();
        let valid = parts.len() >= 4
            && is_lower_hex(parts[0], 2)
            && parts[0] != "ff"
            && (parts[0] != "00" || parts.len() == 4)
            && is_lower_hex(parts[1], 32)
            && parts[1].bytes().any(|b| b != b'0')
            && is_lower_hex(parts[2], 16)
            && parts[2].bytes().any(|b| b != b'0')
            && is_lower_hex(parts[3], 2);
        valid.then(|| (parts[1].as_bytes(), parts[3].as_bytes()))
    });
    match continued {
        Some((trace, flags)) => {
            out[3..35].copy_from_slice(trace);
            out[53..55].copy_from_slice(flags);
        }
        None => match request_id
            .to_str()
            .ok()
            .filter(|r| is_lower_hex(r, 32) && r.bytes().any(|b| b != b'0'))
        {
            Some(rid) => out[3..35].copy_from_slice(rid.as_bytes()),
            None => hex_into(&mut out[3..35], uuid::Uuid::new_v4().as_bytes()),
        },
    }
    out
}

/// Writes `bytes` as lowercase hex into `out` (twice as long).
fn hex_into(out: &mut [u8], bytes: &[u8]) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for (pair, b) in out.chunks_exact_mut(2).zip(bytes) {
        pair[0] = HEX[usize::from(b >> 4)];
        pair[1] = HEX[usize::from(b & 0xf)];
    }
}

/// Shared byte counter for the request body.
pub fn counter() -> Arc<AtomicU64> {
    Arc::new(AtomicU64::new(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(url: &str) -> Target {
        Target::parse(url).unwrap()
    }

    #[test]
    fn builds_upstream_uris() {
        let t = target("http://up:9000");
        assert_eq!(
            upstream_uri(&t, "/a/b", Some("x=1")).unwrap(),
            "http://up:9000/a/b?x=1"
        );
        assert_eq!(upstream_uri(&t, "", None).unwrap(), "http://up:9000/");
        let t = target("https://up/v2/");
        assert_eq!(upstream_uri(&t, "/a", None).unwrap(), "https://up/v2/a");
        assert_eq!(upstream_uri(&t, "", None).unwrap(), "https://up/v2");
    }

    #[test]
    fn upstream_paths_have_no_spare_room() {
        for (url, rest, query) in [
            ("http://up:9000", "/a/b", Some("x=1")),
            ("http://up:9000", "", None),
            ("http://up:9000", "", Some("")),
            ("https://up/v2/", "/a", None),
            ("https://up/v2/", "", Some("q=1&r=2")),
        ] {
            let path = upstream_path(&target(url), rest, query);
            assert_eq!(
                path.len(),
                path.capacity(),
                "{url} {rest} {query:?}: {path}"
            );
        }
    }

    #[test]
    fn traceparent_continues_or_starts_a_trace() {
        let rid = HeaderValue::from_static("0192f0c4aabbccddeeff001122334455");
        let started = traceparent(None, &rid);
        let s = std::str::from_utf8(&started).unwrap();
        assert!(s.starts_with("00-0192f0c4aabbccddeeff001122334455-"), "{s}");
        assert!(s.ends_with("-01") && s.len() == 55, "{s}");

        let incoming =
            HeaderValue::from_static("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00");
        let continued = traceparent(Some(&incoming), &rid);
        let c = std::str::from_utf8(&continued).unwrap();
        assert!(
            c.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-") && c.ends_with("-00"),
            "{c}"
        );
        assert_ne!(
            &c[36..52],
            "00f067aa0ba902b7",
            "the gateway is the new parent"
        );

        for bad in [
            "garbage",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ] {
            let t = traceparent(Some(&HeaderValue::from_static(bad)), &rid);
            assert!(t.starts_with(b"00-0192f0c4"), "{bad}");
        }
        let odd_rid = HeaderValue::from_static("my-request-1");
        let t = traceparent(None, &odd_rid);
        assert!(HeaderValue::from_bytes(&t).is_ok());
        assert_eq!(std::str::from_utf8(&t).unwrap().len(), 55);
    }

    #[test]
    fn answers_lose_hop_by_hop_headers_and_those_connection_names() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("Keep-Alive, X-Private,, close"),
        );
        h.append(header::CONNECTION, HeaderValue::from_static("x-other"));
        h.insert(
            crate::headers::KEEP_ALIVE,
            HeaderValue::from_static("timeout=5"),
        );
        h.insert("x-private", HeaderValue::from_static("1"));
        h.insert("x-other", HeaderValue::from_static("2"));
        h.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        h.insert("x-public", HeaderValue::from_static("3"));
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        strip_hop_by_hop(&mut h);
        let mut left: Vec<_> = h.keys().map(|k| k.as_str()).collect();
        left.sort_unstable();
        assert_eq!(left, ["content-type", "x-public"]);
    }

    #[test]
    fn credentials_and_hop_by_hop_headers_are_removed() {
        let mut h = HeaderMap::new();
        h.insert("x-api-key", HeaderValue::from_static("secret"));
        h.insert("apikey", HeaderValue::from_static("secret"));
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer secret"),
        );
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("x-private, keep-alive"),
        );
        h.insert("x-private", HeaderValue::from_static("1"));
        h.insert(header::HOST, HeaderValue::from_static("gw.example"));
        h.insert("x-keep", HeaderValue::from_static("yes"));
        h.insert("x-tollgate-app-id", HeaderValue::from_static("app_spoofed"));
        h.insert("x-tollgate-admin", HeaderValue::from_static("yes"));
        let id = Identity {
            app_id: "app_1",
            lines: [
                b"x-tollgate-app-id: app_1\r\nx-tollgate-developer-id: usr_1\r\n",
                b"x-tollgate-plan-id: plan_1\r\nx-tollgate-subscription-id: sub_1\r\n",
            ],
        };
        let mut forwarded = prepare_headers(
            &h,
            &target("http://up:9000"),
            &Peer::new("10.0.0.1:1234".parse().unwrap()),
            &HeaderValue::from_static("rid"),
            true,
            Some(id),
        );
        forwarded.apply(&mut h);
        assert_eq!(h["x-tollgate-app-id"], "app_1");
        assert_eq!(h["x-tollgate-plan-id"], "plan_1");
        assert!(!h.contains_key("x-tollgate-admin"));
        for gone in [
            "x-api-key",
            "apikey",
            "authorization",
            "connection",
            "x-private",
        ] {
            assert!(!h.contains_key(gone), "{gone}");
        }
        assert_eq!(h["host"], "up:9000");
        assert_eq!(h["x-forwarded-host"], "gw.example");
        assert_eq!(h["x-forwarded-for"], "10.0.0.1");
        assert_eq!(h["x-request-id"], "rid");
        assert_eq!(h["x-keep"], "yes");
    }
}
