//! The proxy listener's connections.
//!
//! Plain HTTP/1.1 calls are read, answered and written here, in the
//! connection's own task: the request head is parsed with `httparse` into the
//! `http` types the pipeline takes (header values share the read buffer), a
//! body of known length up to [`MAX_BODY`] bytes is read whole, and the answer's
//! head and a small body go out in one write. hyper's server did the same work
//! through a more general dispatcher (per-call state machines, a body channel,
//! the response encoder), about a fifth of a proxied call's instructions.
//!
//! A connection that needs more of HTTP is handed, with the bytes already read
//! and for the rest of its life, to hyper's server (HTTP/1 and HTTP/2): HTTP/2
//! (prior knowledge), HTTP/1.0, protocol upgrades (WebSocket), `CONNECT`,
//! `Expect`, chunked or larger uploads (streamed upstream as they come), and
//! anything this reader does not take (malformed heads, heads over
//! [`MAX_HEAD`] or with more than [`MAX_HEADERS`] headers), which hyper
//! answers or refuses as it always has. Calls answered here before the
//! hand-off stay answered, in order.
//!
//! Answers are framed as hyper frames them: a body of known length with
//! `Content-Length`, any other with chunked encoding; no body for `HEAD`,
//! `1xx`, `204` and `304` (a `HEAD` answer keeps the upstream's
//! `Content-Length`); a `Date` header unless the answer has one. A connection
//! is kept alive unless the client or the answer says `Connection: close`, a
//! body failed half-way, the client takes longer than the client timeout to
//! send a whole call (counted from the start of the wait for it, so idle and
//! dribbling connections alike), or the gateway is shutting down (then idle
//! connections close at once and busy ones after their call).
//!
//! A connection that has waited [`IDLE_RELEASE`] for its next call gives its
//! buffers back and is parked in a small task of its own until the client
//! sends again: the serving task holds room for a whole call's pipeline.

use std::io;
use std::mem::MaybeUninit;
use std::ops::Range;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::{Buf, Bytes, BytesMut};
use futures_util::FutureExt;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode, Uri, Version};
use http_body::Body;
use http_body_util::{BodyExt, Either, Full};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::Sleep;

use crate::Gateway;
use crate::closing::Signal;
use crate::headers::{CarriesRawHeaders, decimal, lists};
use crate::pipeline::ResponseBody;
use crate::proxy::{Peer, RequestBody};
use crate::upstream_pool::Digits;

/// The longest request head read here; a longer one goes to hyper.
pub const MAX_HEAD: usize = 64 * 1024;

/// The most request headers read here; more go to hyper.
pub const MAX_HEADERS: usize = 100;

/// The largest request body read here (whole, before the call); a larger one
/// goes to hyper, which streams it upstream as it comes.
pub const MAX_BODY: usize = 64 * 1024;

/// How much room a read asks for.
const READ_ROOM: usize = 8 * 1024;

/// How long a connection waits for its next call before it gives its read
/// and write buffers back (they are made again when the call comes), so an
/// idle connection holds little more than its task.
const IDLE_RELEASE: Duration = Duration::from_secs(1);

/// Body data up to this size is copied behind the head and written with it;
/// larger data is written as it is.
const COPIED_DATA: usize = 16 * 1024;

/// Serves one accepted connection until it closes, the client asks to close
/// it, or `closing` is set (the gateway shuts down).
pub(crate) fn serve(
    gateway: Arc<Gateway>,
    io: TcpStream,
    peer: Arc<Peer>,
    closing: Signal,
) -> impl Future<Output = ()> + Send {
    let conn = Connection {
        io,
        rbuf: BytesMut::with_capacity(READ_ROOM),
        wbuf: Vec::with_capacity(1024),
        headers: Vec::new(),
        timeout: gateway.client_timeout,
        timer: None,
        waiting_since: None,
    };
    serve_connection(gateway, conn, peer, closing)
}

/// The connection's task while it reads and answers calls. When it has
/// waited [`IDLE_RELEASE`] for a call, it gives its buffers back and hands
/// the connection to a small task of its own ([`park`]), so an idle
/// connection does not keep this one, which holds room for a whole call's
/// pipeline.
async fn serve_connection(
    gateway: Arc<Gateway>,
    mut conn: Connection,
    peer: Arc<Peer>,
    closing: Signal,
) {
    // Woken at shutdown whatever it waits for; idle, it then closes.
    let enrolment = closing.enrol().await;
    loop {
        let call = match conn.read_request(&closing).await {
            Ok(Next::Call(call)) => call,
            Ok(Next::Closed) => return,
            Ok(Next::TimedOut) => return conn.timed_out().await,
            Ok(Next::Idle(since)) => {
                tracing::trace!("idle connection parked without its buffers");
                conn.rbuf = BytesMut::new();
                conn.wbuf = Vec::new();
                conn.headers = Vec::new();
                drop(enrolment);
                tokio::spawn(park(gateway, conn, peer, closing, since));
                return;
            }
            Ok(Next::HandOff(taken)) => {
                let read = if taken.is_empty() {
                    conn.rbuf.split().freeze()
                } else {
                    let mut read = BytesMut::from(taken);
                    read.extend_from_slice(&conn.rbuf);
                    read.freeze()
                };
                drop(enrolment);
                return hand_off(gateway, conn.io, read, peer, closing).await;
            }
            Err(e) => {
                tracing::debug!(error = %e, "connection ended with an error");
                return;
            }
        };
        let head_request = call.request.method() == Method::HEAD;
        let response = gateway.handle(call.request, &peer).await;
        match conn.write_response(response, head_request).await {
            Ok(true) if !call.close && !closing.is_set() => {}
            Ok(_) => {
                let _ = conn.io.shutdown().await;
                return;
            }
            Err(e) => {
                tracing::debug!(error = %e, "connection ended with an error");
                return;
            }
        }
    }
}

/// An idle connection, without buffers, in a task that holds little more
/// than the connection: it waits until the client sends something (then
/// the connection goes back to a [`serve_connection`] task), the wait for
/// the call started at `since` runs past the client timeout, or the gateway
/// shuts down. Boxed: the two tasks start each other.
fn park(
    gateway: Arc<Gateway>,
    mut conn: Connection,
    peer: Arc<Peer>,
    mut closing: Signal,
    since: Instant,
) -> Pin<Box<dyn Future<Output = ()> + Send>> {
    Box::pin(async move {
        let deadline = since + conn.timeout;
        let woken = std::future::poll_fn(|cx| {
            // Readable, closed or failed: the serving task reads and sees.
            if conn.io.poll_read_ready(cx).is_ready() {
                return Poll::Ready(true);
            }
            if reached(&mut conn.timer, deadline, cx) {
                return Poll::Ready(false);
            }
            Poll::Pending
        });
        let readable = tokio::select! {
            biased;
            readable = woken => readable,
            _ = closing.changed() => return,
        };
        if !readable {
            return conn.timed_out().await;
        }
        conn.waiting_since = Some(since);
        tokio::spawn(serve_connection(gateway, conn, peer, closing));
    })
}

/// Hands the connection to hyper's server (HTTP/1 and HTTP/2, upgrades),
/// `read` being what was read from it and not answered.
///
/// hyper bounds the wait for an HTTP/1 head (its header read timeout), but
/// keeps an HTTP/2 connection without streams open for as long as the
/// client likes; so the connection is also shut down gracefully (HTTP/2:
/// `GOAWAY`) once it has had no call in progress for the client timeout.
async fn hand_off(
    gateway: Arc<Gateway>,
    io: TcpStream,
    read: Bytes,
    peer: Arc<Peer>,
    mut closing: Signal,
) {
    let timeout = gateway.client_timeout;
    let activity = Arc::new(Activity::new());
    let calls = activity.clone();
    let service = service_fn(move |req: Request<hyper::body::Incoming>| {
        let gateway = gateway.clone();
        let peer = peer.clone();
        // In progress until the answer's body has been sent or dropped.
        let call = InProgress::start(&calls);
        async move {
            let mut response = gateway.handle(req.map(Either::Left), &peer).await;
            // hyper writes the header map only.
            crate::headers::merge_raw_headers(&mut response);
            Ok::<_, std::convert::Infallible>(response.map(|body| Tracked { body, _call: call }))
        }
    });
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // A call's head must arrive within the client timeout here too.
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(timeout);
    let conn = builder.serve_connection_with_upgrades(TokioIo::new(Rewind { read, io }), service);
    tokio::pin!(conn);
    let idle_check = tokio::time::sleep(timeout);
    tokio::pin!(idle_check);
    let mut shutting_down = false;
    let ended = loop {
        tokio::select! {
            biased;
            ended = conn.as_mut() => break ended,
            _ = closing.changed(), if !shutting_down => {
                conn.as_mut().graceful_shutdown();
                shutting_down = true;
            }
            () = idle_check.as_mut(), if !shutting_down => match activity.idle_for() {
                Some(idle) if idle >= timeout => {
                    tracing::debug!(
                        timeout_ms = timeout.as_millis() as u64,
                        "no call on the connection for the client timeout; closing it"
                    );
                    conn.as_mut().graceful_shutdown();
                    shutting_down = true;
                }
                // Looked at again when it would have been idle long enough.
                idle => {
                    let wait = timeout.saturating_sub(idle.unwrap_or_default());
                    idle_check.as_mut().reset(tokio::time::Instant::now() + wait);
                }
            },
        }
    };
    if let Err(e) = ended {
        tracing::debug!(error = %e, "connection ended with an error");
    }
}

/// The calls in progress on a connection handed to hyper, and when the
/// last one ended.
struct Activity {
    in_progress: std::sync::atomic::AtomicUsize,
    last_end: std::sync::Mutex<Instant>,
}

impl Activity {
    fn new() -> Self {
        Self {
            in_progress: std::sync::atomic::AtomicUsize::new(0),
            last_end: std::sync::Mutex::new(Instant::now()),
        }
    }

    /// How long the connection has had no call in progress; `None` while
    /// one is.
    fn idle_for(&self) -> Option<Duration> {
        if self.in_progress.load(std::sync::atomic::Ordering::Acquire) > 0 {
            return None;
        }
        Some(
            self.last_end
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .elapsed(),
        )
    }
}

/// One call in progress on a connection handed to hyper; it ends when
/// dropped (with the answer's body, or with the call if the client gave up).
struct InProgress(Arc<Activity>);

impl InProgress {
    fn start(activity: &Arc<Activity>) -> Self {
        activity
            .in_progress
            .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        Self(activity.clone())
    }
}

impl Drop for InProgress {
    fn drop(&mut self) {
        *self.0.last_end.lock().unwrap_or_else(|e| e.into_inner()) = Instant::now();
        self.0
            .in_progress
            .fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
    }
}

/// An answer's body that holds its call [`InProgress`].
struct Tracked {
    body: ResponseBody,
    _call: InProgress,
}

impl Body for Tracked {
    type Data = <ResponseBody as Body>::Data;
    type Error = <ResponseBody as Body>::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

/// What comes next on a connection.
// Made and taken apart once per call: boxing the call would cost more.
#[allow(clippy::large_enum_variant)]
enum Next {
    /// A call to answer.
    Call(Call),
    /// Something for hyper's server: what was taken off the buffer for it,
    /// then the buffer.
    HandOff(Bytes),
    /// The client closed the connection between calls (or the gateway is
    /// shutting down and it was idle).
    Closed,
    /// The client took longer than the client timeout to send its call.
    TimedOut,
    /// No call for [`IDLE_RELEASE`] since the wait for it started (then).
    Idle(Instant),
}

/// A request read whole.
struct Call {
    request: Request<RequestBody>,
    /// The client sent `Connection: close`.
    close: bool,
}

/// What a parsed head says.
struct Head {
    /// The head's length.
    len: usize,
    method: Method,
    target: Range<usize>,
    body_len: usize,
    close: bool,
}

/// One client connection served here.
struct Connection {
    io: TcpStream,
    rbuf: BytesMut,
    wbuf: Vec<u8>,
    /// The last head's header names and where their values are, reused.
    headers: Vec<(HeaderName, Range<usize>)>,
    /// How long a call may take to arrive, from the start of the wait for it.
    timeout: Duration,
    /// The connection's one timer, made at its first wait and set again
    /// only when it fires early or would fire too late (see [`reached`]), not
    /// per call: setting it costs a timer-wheel update.
    timer: Option<Pin<Box<Sleep>>>,
    /// When the wait for the next call started, for a connection coming
    /// back from [`park`].
    waiting_since: Option<Instant>,
}

impl Connection {
    /// Closes a connection that sent no whole call within the client timeout.
    async fn timed_out(mut self) {
        tracing::debug!(
            timeout_ms = self.timeout.as_millis() as u64,
            "client sent no whole call in time; closing the connection"
        );
        let _ = self.io.shutdown().await;
    }

    /// Reads until the buffer holds a whole call (head and body), the
    /// connection must go to hyper, or the client closes it.
    async fn read_request(&mut self, closing: &Signal) -> io::Result<Next> {
        let mut waiting_since = self.waiting_since.take();
        loop {
            if !self.rbuf.is_empty() {
                match self.parse_head() {
                    Parsed::HandOff => return Ok(Next::HandOff(Bytes::new())),
                    Parsed::Partial if self.rbuf.len() > MAX_HEAD => {
                        return Ok(Next::HandOff(Bytes::new()));
                    }
                    Parsed::Partial => {}
                    Parsed::Head(head) if self.rbuf.len() >= head.len + head.body_len => {
                        return Ok(match self.take_call(head) {
                            Ok(call) => Next::Call(call),
                            Err(taken) => Next::HandOff(taken),
                        });
                    }
                    // The body is still coming.
                    Parsed::Head(_) => {}
                }
            }
            let idle = self.rbuf.is_empty();
            let Self {
                io,
                rbuf,
                timer,
                timeout,
                ..
            } = self;
            // Reads, or waits for the socket bounded by the client timeout:
            // the wait for this call starts at its first empty read. An idle
            // connection is parked after IDLE_RELEASE, and closed when the
            // gateway shuts down (the task is enrolled to be woken then).
            let waited = std::future::poll_fn(|cx| {
                // The read first: a call already waiting is answered.
                if let Poll::Ready(read) = poll_fill(io, rbuf, cx) {
                    return Poll::Ready(Waited::Read(read));
                }
                if idle && closing.is_set() {
                    return Poll::Ready(Waited::Closing);
                }
                let since = *waiting_since.get_or_insert_with(Instant::now);
                let deadline = since + *timeout;
                let release = since + IDLE_RELEASE;
                if idle && release < deadline {
                    if reached(timer, release, cx) {
                        return Poll::Ready(Waited::Idle(since));
                    }
                } else if reached(timer, deadline, cx) {
                    return Poll::Ready(Waited::TimedOut);
                }
                Poll::Pending
            })
            .await;
            let read = match waited {
                Waited::Read(read) => read?,
                Waited::Idle(since) => return Ok(Next::Idle(since)),
                Waited::TimedOut => return Ok(Next::TimedOut),
                Waited::Closing => return Ok(Next::Closed),
            };
            if read == 0 {
                // Closed between calls, or half-way through a head or body
                // (nothing to answer: the client is gone).
                return Ok(Next::Closed);
            }
        }
    }

    /// Parses the head at the front of the buffer, noting its headers in
    /// `self.headers`.
    fn parse_head(&mut self) -> Parsed {
        // Slots left uninitialised: the parser fills what it uses.
        let mut slots = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
        let mut req = httparse::Request::new(&mut []);
        let buf: &[u8] = &self.rbuf;
        let len = match httparse::ParserConfig::default()
            .parse_request_with_uninit_headers(&mut req, buf, &mut slots)
        {
            Ok(httparse::Status::Complete(len)) => len,
            Ok(httparse::Status::Partial) => return Parsed::Partial,
            // Malformed, too many headers, HTTP/2's preface: hyper's to answer.
            Err(_) => return Parsed::HandOff,
        };
        if req.version != Some(1) {
            return Parsed::HandOff;
        }
        let Some(method) = req
            .method
            .and_then(|m| Method::from_bytes(m.as_bytes()).ok())
        else {
            return Parsed::HandOff;
        };
        if method == Method::CONNECT {
            return Parsed::HandOff;
        }
        let offset = |s: &[u8]| s.as_ptr() as usize - buf.as_ptr() as usize;
        let Some(path) = req.path else {
            return Parsed::HandOff;
        };
        let target = offset(path.as_bytes())..offset(path.as_bytes()) + path.len();
        let mut body_len: Option<usize> = None;
        let mut close = false;
        self.headers.clear();
        for h in req.headers.iter() {
            let Ok(name) = crate::headers::parse_name(h.name.as_bytes()) else {
                return Parsed::HandOff;
            };
            match name {
                header::CONTENT_LENGTH => {
                    let Some(n) = content_length(h.value).and_then(|n| usize::try_from(n).ok())
                    else {
                        return Parsed::HandOff;
                    };
                    if body_len.is_some_and(|b| b != n) || n > MAX_BODY {
                        return Parsed::HandOff;
                    }
                    body_len = Some(n);
                }
                header::TRANSFER_ENCODING | header::EXPECT | header::UPGRADE => {
                    return Parsed::HandOff;
                }
                header::CONNECTION => {
                    if lists(h.value, b"upgrade") {
                        return Parsed::HandOff;
                    }
                    close |= lists_close(h.value);
                }
                _ => {}
            }
            let at = offset(h.value);
            self.headers.push((name, at..at + h.value.len()));
        }
        Parsed::Head(Head {
            len,
            method,
            target,
            body_len: body_len.unwrap_or(0),
            close,
        })
    }

    /// Takes a parsed call (head and body) off the buffer. When its target or
    /// a header value is not one the `http` types take, gives back what it
    /// took, for hyper to answer.
    fn take_call(&mut self, head: Head) -> Result<Call, Bytes> {
        let head_bytes = self.rbuf.split_to(head.len).freeze();
        let body = self.rbuf.split_to(head.body_len).freeze();
        let mut headers = HeaderMap::with_capacity(self.headers.len());
        let mut valid = true;
        for (name, value) in self.headers.drain(..) {
            match HeaderValue::from_maybe_shared(head_bytes.slice(value)) {
                Ok(value) => {
                    headers.append(name, value);
                }
                Err(_) => valid = false,
            }
        }
        let target = Uri::from_maybe_shared(head_bytes.slice(head.target));
        let (true, Ok(target)) = (valid, target) else {
            let mut taken = BytesMut::with_capacity(head_bytes.len() + body.len());
            taken.extend_from_slice(&head_bytes);
            taken.extend_from_slice(&body);
            return Err(taken.freeze());
        };
        let mut request = Request::new(Either::Right(Full::new(body)));
        *request.method_mut() = head.method;
        *request.uri_mut() = target;
        *request.version_mut() = Version::HTTP_11;
        *request.headers_mut() = headers;
        Ok(Call {
            request,
            close: head.close,
        })
    }

    /// Writes an answer; `Ok(false)` when the connection must close after it.
    async fn write_response(
        &mut self,
        response: Response<ResponseBody>,
        head_request: bool,
    ) -> io::Result<bool> {
        let (parts, mut body) = response.into_parts();
        let raw = body.raw_headers().take();
        let status = parts.status;
        let may_have_length = !(status.is_informational()
            || status == StatusCode::NO_CONTENT
            || status == StatusCode::NOT_MODIFIED);
        let bodiless = head_request || !may_have_length;
        let known = body.size_hint().exact();

        let wbuf = &mut self.wbuf;
        wbuf.clear();
        // Given back while the connection was idle: made again at once.
        wbuf.reserve(1024);
        status_line(wbuf, status);
        let mut keep_alive = true;
        let mut dated = false;
        let mut stated_length = None;
        // An upstream's header lines as they came (hop-by-hop ones already
        // left out), less those the gateway's own headers replace; then the
        // gateway's own.
        if let Some(raw) = &raw {
            for line in raw.lines() {
                if raw
                    .own()
                    .iter()
                    .any(|(n, _)| n.as_str().as_bytes() == line.name)
                    || parts
                        .headers
                        .keys()
                        .any(|k| k.as_str().as_bytes() == line.name)
                {
                    continue;
                }
                match line.name {
                    b"content-length" => {
                        stated_length = stated_length.or(content_length(line.value));
                        continue;
                    }
                    b"date" => dated = true,
                    _ => {}
                }
                wbuf.extend_from_slice(line.line);
            }
            for (name, value) in raw.own() {
                value.write_line(name, wbuf);
            }
        }
        for (name, value) in &parts.headers {
            match *name {
                // Framing is written below, from the body.
                header::CONTENT_LENGTH => {
                    stated_length = stated_length.or(content_length(value.as_bytes()));
                    continue;
                }
                header::TRANSFER_ENCODING | header::TRAILER => continue,
                header::CONNECTION if lists_close(value.as_bytes()) => keep_alive = false,
                header::DATE => dated = true,
                _ => {}
            }
            wbuf.extend_from_slice(name.as_str().as_bytes());
            wbuf.extend_from_slice(b": ");
            wbuf.extend_from_slice(value.as_bytes());
            wbuf.extend_from_slice(b"\r\n");
        }
        if !dated {
            wbuf.extend_from_slice(b"date: ");
            date(wbuf);
            wbuf.extend_from_slice(b"\r\n");
        }
        // A body of known length (the body's own, or the one its head states)
        // or chunks.
        let length = known.or(stated_length);
        if head_request && may_have_length {
            // What a GET would have carried, as the upstream stated it.
            if let Some(n) = stated_length.or(known.filter(|&n| n > 0)) {
                content_length_line(wbuf, n);
            }
        } else if !bodiless {
            match length {
                Some(n) => content_length_line(wbuf, n),
                None => wbuf.extend_from_slice(b"transfer-encoding: chunked\r\n"),
            }
        }
        wbuf.extend_from_slice(b"\r\n");

        if bodiless {
            // Dropping the body ends its metering.
            drop(body);
            self.io.write_all(&self.wbuf).await?;
            return Ok(keep_alive);
        }
        let chunked = length.is_none();
        let mut sent: u64 = 0;
        loop {
            let frame = match body.frame().now_or_never() {
                Some(frame) => frame,
                None => {
                    // Send what is ready before waiting for more.
                    if !self.wbuf.is_empty() {
                        self.io.write_all(&self.wbuf).await?;
                        self.wbuf.clear();
                    }
                    body.frame().await
                }
            };
            let data = match frame {
                None => break,
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) => data,
                    // Trailers are not sent on.
                    Err(_) => continue,
                },
                Some(Err(e)) => {
                    // The status is out: the client sees the answer cut short.
                    tracing::debug!(error = %e, "response body failed; closing the connection");
                    if !self.wbuf.is_empty() {
                        self.io.write_all(&self.wbuf).await?;
                    }
                    return Ok(false);
                }
            };
            if data.is_empty() {
                continue;
            }
            sent += data.len() as u64;
            if length.is_some_and(|n| sent > n) {
                tracing::warn!(
                    "response body longer than its stated length; closing the connection"
                );
                return Ok(false);
            }
            if chunked {
                chunk_size_line(&mut self.wbuf, data.len());
            }
            if data.len() <= COPIED_DATA {
                self.wbuf.extend_from_slice(&data);
            } else {
                self.io.write_all(&self.wbuf).await?;
                self.wbuf.clear();
                self.io.write_all(&data).await?;
            }
            if chunked {
                self.wbuf.extend_from_slice(b"\r\n");
            }
        }
        if chunked {
            self.wbuf.extend_from_slice(b"0\r\n\r\n");
        }
        if !self.wbuf.is_empty() {
            self.io.write_all(&self.wbuf).await?;
        }
        if length.is_some_and(|n| sent < n) {
            tracing::warn!("response body shorter than its stated length; closing the connection");
            return Ok(false);
        }
        Ok(keep_alive)
    }
}

/// Reads what the socket has into `rbuf`; 0 at the end of the stream.
fn poll_fill(
    io: &mut TcpStream,
    rbuf: &mut BytesMut,
    cx: &mut Context<'_>,
) -> Poll<io::Result<usize>> {
    // Room is made only once there is something to read: an idle
    // connection's released buffer stays released.
    ready!(io.poll_read_ready(cx))?;
    if rbuf.capacity() - rbuf.len() < READ_ROOM / 4 {
        rbuf.reserve(READ_ROOM);
    }
    // Through `AsyncRead`: a short read tells the runtime the socket is
    // drained, so the next wait does not ask it in vain.
    tokio_util::io::poll_read_buf(Pin::new(io), cx, rbuf)
}

/// True once `at` has passed; otherwise the connection's timer wakes the
/// task by then. The timer is made once. The times waited for move later
/// call by call, so a timer set for an earlier wait fires early, is found
/// early and is set again: once per period, not once per call (setting it
/// costs a timer-wheel update). It is set earlier only when it would fire
/// too late (the first wait after a release of the buffers).
fn reached(timer: &mut Option<Pin<Box<Sleep>>>, at: Instant, cx: &mut Context<'_>) -> bool {
    let at = tokio::time::Instant::from_std(at);
    let timer = timer.get_or_insert_with(|| Box::pin(tokio::time::sleep_until(at)));
    if timer.deadline() > at {
        timer.as_mut().reset(at);
    }
    while timer.as_mut().poll(cx).is_ready() {
        if tokio::time::Instant::now() >= at {
            return true;
        }
        timer.as_mut().reset(at);
    }
    false
}

/// How a wait for the socket ended.
enum Waited {
    Read(io::Result<usize>),
    /// Idle since then for [`IDLE_RELEASE`].
    Idle(Instant),
    TimedOut,
    /// The gateway is shutting down (checked when idle only).
    Closing,
}

/// What [`Connection::parse_head`] found.
enum Parsed {
    Head(Head),
    Partial,
    HandOff,
}

fn lists_close(value: &[u8]) -> bool {
    lists(value, b"close")
}

/// A `Content-Length` value: digits only, at most 18 of them (longer ones go
/// to hyper, which refuses them).
fn content_length(value: &[u8]) -> Option<u64> {
    if value.len() > 18 {
        return None;
    }
    decimal(value)
}

fn status_line(buf: &mut Vec<u8>, status: StatusCode) {
    if status == StatusCode::OK {
        buf.extend_from_slice(b"HTTP/1.1 200 OK\r\n");
        return;
    }
    buf.extend_from_slice(b"HTTP/1.1 ");
    buf.extend_from_slice(status.as_str().as_bytes());
    buf.push(b' ');
    buf.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
    buf.extend_from_slice(b"\r\n");
}

fn content_length_line(buf: &mut Vec<u8>, n: u64) {
    buf.extend_from_slice(b"content-length: ");
    buf.extend_from_slice(Digits::of(n).as_bytes());
    buf.extend_from_slice(b"\r\n");
}

fn chunk_size_line(buf: &mut Vec<u8>, n: usize) {
    use std::io::Write;
    write!(buf, "{n:x}\r\n").expect("writing to a Vec cannot fail");
}

/// The current time as an HTTP date, formatted once a second per thread.
fn date(buf: &mut Vec<u8>) {
    use std::cell::RefCell;
    thread_local! {
        static DATE: RefCell<(u64, String)> = const { RefCell::new((u64::MAX, String::new())) };
    }
    let now = SystemTime::now();
    let secs = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    DATE.with_borrow_mut(|(at, text)| {
        if *at != secs {
            *at = secs;
            *text = httpdate::fmt_http_date(now);
        }
        buf.extend_from_slice(text.as_bytes());
    });
}

/// The connection handed to hyper: the bytes read here first, then the socket.
struct Rewind {
    read: Bytes,
    io: TcpStream,
}

impl AsyncRead for Rewind {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if !self.read.is_empty() {
            let n = self.read.len().min(buf.remaining());
            buf.put_slice(&self.read[..n]);
            self.read.advance(n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl AsyncWrite for Rewind {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_lengths_are_digits_only() {
        assert_eq!(content_length(b"0"), Some(0));
        assert_eq!(content_length(b"65536"), Some(65536));
        assert_eq!(content_length(b""), None);
        assert_eq!(content_length(b"+5"), None);
        assert_eq!(content_length(b"5 "), None);
        assert_eq!(content_length(b"1234567890123456789"), None);
    }

    #[test]
    fn numbers_and_status_lines_are_written_as_http_wants() {
        let mut buf = Vec::new();
        status_line(&mut buf, StatusCode::OK);
        status_line(&mut buf, StatusCode::TOO_MANY_REQUESTS);
        status_line(&mut buf, StatusCode::from_u16(599).unwrap());
        assert_eq!(
            buf,
            b"HTTP/1.1 200 OK\r\nHTTP/1.1 429 Too Many Requests\r\nHTTP/1.1 599 \r\n"
        );
        let mut buf = Vec::new();
        chunk_size_line(&mut buf, 255);
        content_length_line(&mut buf, 65_536);
        assert_eq!(buf, b"ff\r\ncontent-length: 65536\r\n");
    }
}
