//! Kept-alive HTTP/1.1 connections to one plain-HTTP upstream target, driven
//! by the call that uses them.
//!
//! The general upstream client (hyper-util's pooled client, for https, HTTP/2,
//! protocol upgrades and streamed uploads) runs every connection in a task of
//! its own: a call hands its request to that task and is woken again with the
//! response, two task switches and a channel per call, and its pool is keyed by
//! scheme and authority, hashed on every checkout and return. Each balancer
//! target owns one of these pools instead: the calling task takes an idle
//! connection from a short list, writes the request (head and body in one
//! write), and reads and parses the answer itself (`httparse`), so the request,
//! the upstream's answer and the reply to the client go through one task.
//!
//! What this path takes: requests whose body is known and at most
//! [`MAX_BUFFERED_BODY`] bytes (the caller checks, see [`fits`]); the rest go
//! over the general client, which can answer before a long upload has ended.
//!
//! Answers: a body announced by `Content-Length` of up to [`SMALL_BODY`] bytes
//! is read whole before the call returns and the connection goes back to the
//! pool at once; a longer one, a chunked one and one that ends when the
//! upstream closes are streamed ([`PooledStream`]), and the connection goes
//! back when the body has been read to its end. A connection is only reused
//! when both sides keep it alive (HTTP/1.1 without `Connection: close`, or
//! HTTP/1.0 with `Connection: keep-alive`) and the answer was framed by its
//! length or chunks with nothing after it, so a connection never carries two
//! calls at once and never starts a call with another's bytes.
//!
//! A connection the upstream closed while idle is dropped when it is next
//! taken (the socket reads as closed), and idle ones are dropped after
//! [`IDLE_TIMEOUT`]. If a kept-alive connection still fails before the first
//! byte of the answer (the upstream closed it as the request went out), an
//! idempotent call (GET, HEAD, OPTIONS, PUT, DELETE, TRACE) is sent once more on
//! a new connection; any other is not sent twice, and fails.

use std::mem::MaybeUninit;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::uri::Authority;
use http::{Method, Request, Response, StatusCode, Version};
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use tokio::io::AsyncWrite;
use tokio::net::TcpStream;
use tokio::time::Sleep;

use crate::headers::{Hop, RawHeaders, decimal, list_items};
use crate::proxy::{Forwarded, UpstreamBody};

/// Idle connections kept per target.
const MAX_KEPT: usize = 256;

/// An idle connection older than this is closed instead of reused.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(90);

/// Request bodies up to this size (and of a known size) take this path.
pub const MAX_BUFFERED_BODY: u64 = 64 * 1024;

/// Answers with a `Content-Length` up to this size are read whole.
pub const SMALL_BODY: u64 = 16 * 1024;

/// The longest response head taken (status line and headers).
const MAX_HEAD: usize = 64 * 1024;

/// The most response headers taken.
const MAX_HEADERS: usize = 100;

/// The longest chunk-size line or trailer section of a chunked body.
const MAX_CHUNK_LINE: usize = 4096;
const MAX_TRAILERS: usize = 16 * 1024;

/// How much room a read asks for.
const READ_ROOM: usize = 16 * 1024;

/// Why a call could not be sent, or its answer not read.
#[derive(Debug, thiserror::Error)]
pub enum PoolError {
    /// No TCP connection within the connect timeout.
    #[error("connect to {0} timed out")]
    ConnectTimeout(Authority),
    /// The TCP connection failed.
    #[error("connect to {0}: {1}")]
    Connect(Authority, std::io::Error),
    /// Writing the request or reading the answer failed.
    #[error("upstream connection: {0}")]
    Io(#[from] std::io::Error),
    /// The upstream closed the connection before its answer (head or body)
    /// was complete.
    #[error("the upstream closed the connection before the end of its answer")]
    Closed,
    /// The answer (its head, or a chunked body) is not valid HTTP/1.1.
    #[error("the upstream's answer is not valid HTTP/1.1: {0}")]
    Protocol(&'static str),
    /// The client's request body failed (for example, past the size limit).
    #[error("request body: {0}")]
    RequestBody(Box<dyn std::error::Error + Send + Sync>),
    /// The answer's head (and a small body) did not come by the deadline.
    #[error("no answer by the deadline")]
    TimedOut,
}

/// True when `req` can go over a target's pool: its body is known and small
/// enough to be sent with the head.
pub fn fits(req: &Request<UpstreamBody>) -> bool {
    req.body()
        .size_hint()
        .exact()
        .is_some_and(|n| n <= MAX_BUFFERED_BODY)
}

/// An upstream's answer: read whole, or streamed (through a pool: a
/// [`PooledStream`]).
#[derive(Debug)]
pub enum Reply<S = PooledStream> {
    /// The whole body (small, or none).
    Whole(Bytes),
    /// A body read from the connection as the client takes it.
    Stream(S),
}

/// Idle kept-alive connections to one target.
#[derive(Debug, Default)]
pub struct Http1Pool {
    idle: Arc<Mutex<Vec<Conn>>>,
}

impl Http1Pool {
    /// Sends `req` (an absolute URI to `authority`, a body that [`fits`]) on
    /// an idle connection, or a new one, and returns the answer: its head
    /// (its headers as lines, beside an empty header map), and a small body
    /// whole, by `deadline` ([`PoolError::TimedOut`] after it; a streamed body
    /// is not bound by it).
    pub async fn send(
        &self,
        authority: &Authority,
        req: Request<UpstreamBody>,
        forwarded: &Forwarded,
        connect_timeout: Duration,
        deadline: tokio::time::Instant,
    ) -> Result<(Response<Reply>, RawHeaders), PoolError> {
        let (parts, body) = req.into_parts();
        let body = if body.is_end_stream() {
            Bytes::new()
        } else {
            Box::pin(body.collect())
                .await
                .map_err(PoolError::RequestBody)?
                .to_bytes()
        };
        // Room for a typical head with the gateway's headers (identity,
        // forwarding, tracing: about 600 bytes), so it is not grown twice.
        let mut wire = Vec::with_capacity(1024 + body.len());
        write_head(
            &mut wire,
            &parts.method,
            &parts.uri,
            &parts.headers,
            forwarded,
            &body,
        );
        wire.extend_from_slice(&body);
        let head_only = parts.method == Method::HEAD;
        let idempotent = matches!(
            parts.method,
            Method::GET
                | Method::HEAD
                | Method::OPTIONS
                | Method::PUT
                | Method::DELETE
                | Method::TRACE
        );
        let mut conn = match self.checkout() {
            Some(conn) => conn,
            // Boxed: a new connection is rare, and its future is large.
            None => Box::pin(Conn::connect_by(authority, connect_timeout, deadline)).await?,
        };
        let head = match conn.exchange(&wire, head_only, deadline).await {
            Ok(head) => head,
            Err(Failure::BeforeAnswer(e)) if conn.reused && idempotent => {
                tracing::debug!(upstream = %authority, error = %e, "a kept-alive connection failed before the answer; sending again on a new one");
                conn = Box::pin(Conn::connect_by(authority, connect_timeout, deadline)).await?;
                conn.exchange(&wire, head_only, deadline)
                    .await
                    .map_err(Failure::into_error)?
            }
            Err(e) => return Err(e.into_error()),
        };
        let Head {
            response,
            raw,
            framing,
            keep_alive,
        } = head;
        let reply = match framing {
            Framing::Length(n) if n <= SMALL_BODY => {
                let n = n as usize; // at most SMALL_BODY
                while conn.rbuf.len() < n {
                    if conn.fill().await? == 0 {
                        return Err(PoolError::Closed);
                    }
                }
                conn.deadline = None;
                let body = conn.rbuf.split_to(n).freeze();
                // Bytes after the answer: not a connection to reuse.
                if keep_alive && conn.rbuf.is_empty() {
                    checkin(&self.idle, conn);
                }
                Reply::Whole(body)
            }
            framing => {
                conn.deadline = None;
                Reply::Stream(PooledStream {
                    conn: Some(conn),
                    framing,
                    keep_alive,
                    trailers: 0,
                    pool: self.idle.clone(),
                })
            }
        };
        Ok((response.map(|()| reply), raw))
    }

    /// An idle connection still open, dropping closed and old ones on the
    /// way (the most recently used first).
    fn checkout(&self) -> Option<Conn> {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        while let Some(conn) = idle.pop() {
            if conn.idle_since.elapsed() > IDLE_TIMEOUT {
                // The rest are older still.
                idle.clear();
                return None;
            }
            if conn.is_open() {
                return Some(conn);
            }
        }
        None
    }

    /// Idle connections kept.
    pub fn len(&self) -> usize {
        self.idle.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// True when no idle connection is kept.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Returns a connection whose answer was read to its end to the idle list.
fn checkin(idle: &Mutex<Vec<Conn>>, mut conn: Conn) {
    let now = Instant::now();
    conn.idle_since = now;
    conn.reused = true;
    let mut idle = idle.lock().unwrap_or_else(|e| e.into_inner());
    let fresh = |c: &Conn| now.saturating_duration_since(c.idle_since) <= IDLE_TIMEOUT;
    if idle.first().is_some_and(|oldest| !fresh(oldest)) {
        idle.retain(fresh);
    }
    if idle.len() < MAX_KEPT {
        idle.push(conn);
    }
}

/// One TCP connection and what has been read off it.
#[derive(Debug)]
struct Conn {
    io: TcpStream,
    rbuf: BytesMut,
    /// Has carried a call before (so the upstream may have closed it meanwhile).
    reused: bool,
    idle_since: Instant,
    /// When the answer's head (and a small body) must have come; none while
    /// a streamed body is read or the connection is idle.
    deadline: Option<tokio::time::Instant>,
    /// The connection's one timer for the deadline, made at its first wait
    /// and moved to each call's deadline, which only marks it in place when
    /// the new deadline is later (no timer-wheel update, no lock per call).
    timer: Option<Pin<Box<Sleep>>>,
}

/// How an exchange failed.
enum Failure {
    /// Nothing of an answer came: the request may be sent again if idempotent.
    BeforeAnswer(PoolError),
    /// Part of the answer came, or it was malformed, or the deadline passed.
    Answered(PoolError),
}

impl Failure {
    fn into_error(self) -> PoolError {
        match self {
            Self::BeforeAnswer(e) | Self::Answered(e) => e,
        }
    }

    /// How a failure before or during the answer ends the exchange: a
    /// passed deadline is never sent again.
    fn of(e: PoolError, answered: bool) -> Self {
        if answered || matches!(e, PoolError::TimedOut) {
            Self::Answered(e)
        } else {
            Self::BeforeAnswer(e)
        }
    }
}

/// A parsed response head and how its body is framed.
struct Head {
    response: Response<()>,
    /// Its headers, less the hop-by-hop ones.
    raw: RawHeaders,
    framing: Framing,
    keep_alive: bool,
}

/// How an answer's body ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    /// After this many more bytes.
    Length(u64),
    /// Chunked transfer coding, at this step.
    Chunked(Chunk),
    /// When the upstream closes the connection.
    Close,
}

/// Where a chunked body's reader is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chunk {
    /// Before a chunk-size line.
    Size,
    /// Inside a chunk, this many bytes left.
    Data(u64),
    /// After a chunk's data, before its CRLF.
    DataEnd,
    /// After the last chunk, in the trailer section.
    Trailers,
    /// After the trailer section: the body has ended.
    Done,
}

impl Conn {
    /// A new connection to `authority`, made by `deadline`.
    async fn connect_by(
        authority: &Authority,
        timeout: Duration,
        deadline: tokio::time::Instant,
    ) -> Result<Self, PoolError> {
        tokio::time::timeout_at(deadline, Self::connect(authority, timeout))
            .await
            .unwrap_or(Err(PoolError::TimedOut))
    }

    /// A new connection to `authority`.
    async fn connect(authority: &Authority, timeout: Duration) -> Result<Self, PoolError> {
        let host = authority.host();
        // An IPv6 literal comes in brackets.
        let host = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host);
        let addr = (host, authority.port_u16().unwrap_or(80));
        let io = match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
            Err(_) => return Err(PoolError::ConnectTimeout(authority.clone())),
            Ok(Err(e)) => return Err(PoolError::Connect(authority.clone(), e)),
            Ok(Ok(s)) => s,
        };
        let _ = io.set_nodelay(true);
        Ok(Self {
            io,
            rbuf: BytesMut::with_capacity(READ_ROOM),
            reused: false,
            idle_since: Instant::now(),
            deadline: None,
            timer: None,
        })
    }

    /// False when the upstream closed the idle connection (or sent something
    /// unasked). Asks the socket only when the runtime saw it readable.
    fn is_open(&self) -> bool {
        let mut cx = Context::from_waker(std::task::Waker::noop());
        match self.io.poll_read_ready(&mut cx) {
            Poll::Pending => true,
            Poll::Ready(Err(_)) => false,
            Poll::Ready(Ok(())) => {
                let mut probe = [0u8; 1];
                matches!(self.io.try_read(&mut probe), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
            }
        }
    }

    /// Reads what the socket has into the buffer, by the deadline; 0 at the
    /// end of the stream.
    async fn fill(&mut self) -> Result<usize, PoolError> {
        std::future::poll_fn(|cx| match self.poll_fill(cx) {
            Poll::Ready(read) => Poll::Ready(read.map_err(PoolError::from)),
            Poll::Pending => self.poll_deadline(cx),
        })
        .await
    }

    /// Writes all of `wire`, by the deadline.
    async fn write_all(&mut self, mut wire: &[u8]) -> Result<(), PoolError> {
        std::future::poll_fn(|cx| {
            while !wire.is_empty() {
                match Pin::new(&mut self.io).poll_write(cx, wire) {
                    Poll::Ready(Ok(0)) => {
                        return Poll::Ready(Err(std::io::Error::from(
                            std::io::ErrorKind::WriteZero,
                        )
                        .into()));
                    }
                    Poll::Ready(Ok(n)) => wire = &wire[n..],
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(e.into())),
                    Poll::Pending => return self.poll_deadline(cx),
                }
            }
            Poll::Ready(Ok(()))
        })
        .await
    }

    /// `TimedOut` once the deadline has passed; pending until then (the
    /// timer wakes the task), and always without a deadline.
    fn poll_deadline<T>(&mut self, cx: &mut Context<'_>) -> Poll<Result<T, PoolError>> {
        let Some(deadline) = self.deadline else {
            return Poll::Pending;
        };
        let timer = self
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        if timer.deadline() != deadline {
            timer.as_mut().reset(deadline);
        }
        match timer.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(PoolError::TimedOut)),
            Poll::Pending => Poll::Pending,
        }
    }

    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<usize>> {
        // Room for a good read; a buffer whose bytes went out (split off and
        // dropped) is reused whole.
        if self.rbuf.capacity() - self.rbuf.len() < READ_ROOM / 4 {
            self.rbuf.reserve(READ_ROOM);
        }
        // Through `AsyncRead`: a read that does not fill the room tells the
        // runtime the socket is drained, so neither the next call's wait for
        // its answer nor the idle check at checkout asks the socket in vain.
        tokio_util::io::poll_read_buf(Pin::new(&mut self.io), cx, &mut self.rbuf)
    }

    /// Writes the request and reads the answer's head, skipping interim
    /// (1xx) answers, by `deadline` (which stays set for a small body; the
    /// caller clears it).
    async fn exchange(
        &mut self,
        wire: &[u8],
        head_only: bool,
        deadline: tokio::time::Instant,
    ) -> Result<Head, Failure> {
        self.deadline = Some(deadline);
        self.rbuf.clear();
        self.write_all(wire)
            .await
            .map_err(|e| Failure::of(e, false))?;
        let mut answered = false;
        loop {
            if !self.rbuf.is_empty() {
                answered = true;
                match self.parse_head(head_only).map_err(Failure::Answered)? {
                    Some(head) => return Ok(head),
                    None if self.rbuf.len() > MAX_HEAD => {
                        return Err(Failure::Answered(PoolError::Protocol(
                            "response head larger than 64 KiB",
                        )));
                    }
                    None => {}
                }
            }
            match self.fill().await {
                Ok(0) => return Err(Failure::of(PoolError::Closed, answered)),
                Ok(_) => {}
                Err(e) => return Err(Failure::of(e, answered)),
            }
        }
    }

    /// The answer's head when the buffer holds all of it (taken off the
    /// buffer), `None` when more is needed.
    fn parse_head(&mut self, head_only: bool) -> Result<Option<Head>, PoolError> {
        loop {
            // Slots left uninitialised (the parser fills what it uses): no
            // 3 KiB of zeroes per answer.
            let mut slots = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
            let mut parsed = httparse::Response::new(&mut []);
            let parsing = httparse::ParserConfig::default().parse_response_with_uninit_headers(
                &mut parsed,
                &self.rbuf,
                &mut slots,
            );
            let len = match parsing {
                Ok(httparse::Status::Complete(len)) => len,
                Ok(httparse::Status::Partial) => return Ok(None),
                Err(httparse::Error::TooManyHeaders) => {
                    return Err(PoolError::Protocol("more than 100 response headers"));
                }
                Err(_) => return Err(PoolError::Protocol("malformed response head")),
            };
            let code = parsed.code.unwrap_or_default();
            if (100..200).contains(&code) {
                if code == 101 {
                    return Err(PoolError::Protocol(
                        "101 Switching Protocols was not asked for",
                    ));
                }
                // Interim answer (100 Continue, 103 Early Hints): the real one follows.
                self.rbuf.advance(len);
                continue;
            }
            let status = StatusCode::from_u16(code)
                .map_err(|_| PoolError::Protocol("invalid status code"))?;
            let version = if parsed.version == Some(0) {
                Version::HTTP_10
            } else {
                Version::HTTP_11
            };
            // One pass reads the framing headers and writes the others'
            // lines, less the hop-by-hop ones.
            let mut said = FramingHeaders::default();
            let size = parsed
                .headers
                .iter()
                .map(|h| h.name.len() + h.value.len() + 4)
                .sum();
            let mut raw = RawHeaders::builder(size);
            for h in parsed.headers.iter() {
                match Hop::of(h.name.as_bytes()) {
                    None => raw.push(h),
                    Some(Hop::ContentLength) => {
                        said.content_length(h.value);
                        raw.push(h);
                    }
                    Some(Hop::Connection) => said.connection(h.value),
                    Some(Hop::TransferEncoding) => said.transfer_encoding(h.value),
                    Some(Hop::Other) => {}
                }
            }
            let (framing, keep_alive) = framing(status, version, &said, head_only)?;
            // Seldom: `Connection` names other headers (hop-by-hop for this
            // connection only), or a length came beside chunks (not passed
            // on). The lines are written again without them.
            let drop_length = said.chunked.is_some() && said.content_length_seen;
            if said.names_others || drop_length {
                let named = |name: &[u8]| {
                    parsed.headers.iter().any(|h| {
                        Hop::of(h.name.as_bytes()) == Some(Hop::Connection)
                            && crate::headers::lists(h.value, name)
                    })
                };
                raw = RawHeaders::builder(size);
                for h in parsed.headers.iter() {
                    let name = h.name.as_bytes();
                    match Hop::of(name) {
                        Some(Hop::ContentLength) if !drop_length && !named(name) => {}
                        Some(_) => continue,
                        None if named(name) => continue,
                        None => {}
                    }
                    raw.push(h);
                }
            }
            self.rbuf.advance(len);
            let mut response = Response::new(());
            *response.status_mut() = status;
            *response.version_mut() = version;
            return Ok(Some(Head {
                response,
                raw: raw.finish(),
                framing,
                keep_alive,
            }));
        }
    }
}

/// What an answer's `Connection`, `Transfer-Encoding` and `Content-Length`
/// headers say, gathered while its head is read. Values that are not
/// visible ASCII are taken as `HeaderValue::to_str` takes them: not at all
/// (`Connection`, `Transfer-Encoding`) or as an invalid length.
struct FramingHeaders {
    close: bool,
    keep_alive: bool,
    /// Whether the last `Transfer-Encoding` ends in `chunked`; `None` without one.
    chunked: Option<bool>,
    content_length_seen: bool,
    /// The one length stated, or what was wrong with the lengths.
    content_length: Result<Option<u64>, &'static str>,
    /// `Connection` lists names besides `close` and `keep-alive`.
    names_others: bool,
}

impl Default for FramingHeaders {
    fn default() -> Self {
        Self {
            close: false,
            keep_alive: false,
            chunked: None,
            content_length_seen: false,
            content_length: Ok(None),
            names_others: false,
        }
    }
}

/// True for what `HeaderValue::to_str` accepts.
fn visible(value: &[u8]) -> bool {
    value.iter().all(|&b| b == b'\t' || (32..127).contains(&b))
}

impl FramingHeaders {
    fn connection(&mut self, value: &[u8]) {
        for token in list_items(value) {
            let close = token.eq_ignore_ascii_case(b"close");
            let keep_alive = token.eq_ignore_ascii_case(b"keep-alive");
            self.names_others |= !(close || keep_alive || token.is_empty());
            if visible(value) {
                self.close |= close;
                self.keep_alive |= keep_alive;
            }
        }
    }

    fn transfer_encoding(&mut self, value: &[u8]) {
        let last = list_items(value).next_back();
        self.chunked =
            Some(visible(value) && last.is_some_and(|c| c.eq_ignore_ascii_case(b"chunked")));
    }

    fn content_length(&mut self, value: &[u8]) {
        self.content_length_seen = true;
        let Ok(mut length) = self.content_length else {
            return;
        };
        if !visible(value) {
            self.content_length = Err("invalid Content-Length");
            return;
        }
        for part in list_items(value) {
            let Some(n) = decimal(part) else {
                self.content_length = Err("invalid Content-Length");
                return;
            };
            if length.is_some_and(|l| l != n) {
                self.content_length = Err("conflicting Content-Length values");
                return;
            }
            length = Some(n);
        }
        self.content_length = Ok(length);
    }
}

/// How the answer's body is framed (RFC 9112 §6.3) and whether the
/// connection can carry another call after it.
fn framing(
    status: StatusCode,
    version: Version,
    said: &FramingHeaders,
    head_only: bool,
) -> Result<(Framing, bool), PoolError> {
    let mut keep_alive = !said.close && (version == Version::HTTP_11 || said.keep_alive);
    if head_only || status == StatusCode::NO_CONTENT || status == StatusCode::NOT_MODIFIED {
        return Ok((Framing::Length(0), keep_alive));
    }
    if let Some(chunked) = said.chunked {
        if said.content_length_seen {
            // Both: the length is ignored (and not passed on), and the
            // connection not trusted after.
            keep_alive = false;
        }
        return Ok(if chunked {
            (Framing::Chunked(Chunk::Size), keep_alive)
        } else {
            (Framing::Close, false)
        });
    }
    Ok(match said.content_length.map_err(PoolError::Protocol)? {
        Some(n) => (Framing::Length(n), keep_alive),
        None => (Framing::Close, false),
    })
}

/// Writes the request head in origin form: method, path and query, the
/// headers as prepared (with `Host`), and the body's length.
fn write_head(
    out: &mut Vec<u8>,
    method: &Method,
    uri: &http::Uri,
    headers: &HeaderMap,
    forwarded: &Forwarded,
    body: &[u8],
) {
    out.extend_from_slice(method.as_str().as_bytes());
    out.push(b' ');
    let target = uri.path_and_query().map_or("/", |pq| pq.as_str());
    out.extend_from_slice(if target.is_empty() {
        b"/"
    } else {
        target.as_bytes()
    });
    out.extend_from_slice(b" HTTP/1.1\r\n");
    // The gateway's headers first (Host leads), then the client's it keeps.
    out.extend_from_slice(forwarded.lines());
    let mut line = |name: &HeaderName, value: &HeaderValue| {
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    };
    for (name, value) in headers {
        if name == header::CONTENT_LENGTH
            || name == header::TRANSFER_ENCODING
            || forwarded.skips(name)
        {
            continue;
        }
        line(name, value);
    }
    // A length whenever there is a body, or the client sent one, or the
    // method usually carries a body (so the upstream does not wait for one).
    let sends_length = !body.is_empty()
        || headers.contains_key(header::CONTENT_LENGTH)
        || matches!(*method, Method::POST | Method::PUT | Method::PATCH);
    if sends_length {
        out.extend_from_slice(b"content-length: ");
        out.extend_from_slice(Digits::of(body.len() as u64).as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

/// A number's decimal digits, written without the formatter.
pub(crate) struct Digits {
    buf: [u8; 20],
    start: usize,
}

impl Digits {
    pub(crate) fn of(mut n: u64) -> Self {
        let mut buf = [0u8; 20];
        let mut start = buf.len();
        loop {
            start -= 1;
            buf[start] = b'0' + (n % 10) as u8;
            n /= 10;
            if n == 0 {
                return Self { buf, start };
            }
        }
    }

    pub(crate) fn as_bytes(&self) -> &[u8] {
        &self.buf[self.start..]
    }
}

/// An answer's body read off its connection as the client takes it; the
/// connection goes back to its pool when the body has been read to its end.
#[derive(Debug)]
pub struct PooledStream {
    /// `None` once the body has ended (or failed).
    conn: Option<Conn>,
    framing: Framing,
    keep_alive: bool,
    /// Trailer bytes seen (a chunked body's, which are dropped).
    trailers: usize,
    pool: Arc<Mutex<Vec<Conn>>>,
}

impl PooledStream {
    /// The body has ended: the connection goes back when it can carry another call.
    fn finish(&mut self) {
        if let Some(conn) = self.conn.take()
            && self.keep_alive
            && conn.rbuf.is_empty()
        {
            checkin(&self.pool, conn);
        }
    }

    fn fail(&mut self, e: PoolError) -> Poll<Option<Result<Frame<Bytes>, PoolError>>> {
        self.conn = None;
        Poll::Ready(Some(Err(e)))
    }
}

impl Body for PooledStream {
    type Data = Bytes;
    type Error = PoolError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, PoolError>>> {
        let this = self.get_mut();
        loop {
            let Some(conn) = this.conn.as_mut() else {
                return Poll::Ready(None);
            };
            // What the buffer gave: `None` when more must be read first;
            // `Some(None)` a step without data (a chunk's size line or end).
            let step: Result<Option<Option<Bytes>>, PoolError> = match this.framing {
                Framing::Length(0) | Framing::Chunked(Chunk::Done) => {
                    this.finish();
                    return Poll::Ready(None);
                }
                Framing::Length(_) | Framing::Close if conn.rbuf.is_empty() => Ok(None),
                Framing::Length(left) => {
                    let n = left.min(conn.rbuf.len() as u64);
                    this.framing = Framing::Length(left - n);
                    Ok(Some(Some(conn.rbuf.split_to(n as usize).freeze())))
                }
                Framing::Close => Ok(Some(Some(conn.rbuf.split().freeze()))),
                Framing::Chunked(chunk) => match step_chunked(conn, chunk, &mut this.trailers) {
                    Ok(Some((next, data))) => {
                        this.framing = Framing::Chunked(next);
                        Ok(Some(data))
                    }
                    Ok(None) => Ok(None),
                    Err(e) => Err(e),
                },
            };
            match step {
                Err(e) => return this.fail(e),
                Ok(Some(Some(data))) => {
                    // The last bytes: the connection can go back before the
                    // client has taken them.
                    if this.framing == Framing::Length(0) {
                        this.finish();
                    }
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Ok(Some(None)) => {}
                Ok(None) => match ready!(conn.poll_fill(cx)) {
                    Ok(0) if this.framing == Framing::Close => {
                        this.conn = None;
                        return Poll::Ready(None);
                    }
                    Ok(0) => return this.fail(PoolError::Closed),
                    Ok(_) => {}
                    Err(e) => return this.fail(e.into()),
                },
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.conn.is_none()
            || matches!(
                self.framing,
                Framing::Length(0) | Framing::Chunked(Chunk::Done)
            )
    }

    fn size_hint(&self) -> SizeHint {
        match self.framing {
            Framing::Length(n) => SizeHint::with_exact(n),
            _ => SizeHint::default(),
        }
    }
}

/// One step through a chunked body with what the buffer holds: the next
/// step and any data, or `None` when more must be read first.
fn step_chunked(
    conn: &mut Conn,
    chunk: Chunk,
    trailers: &mut usize,
) -> Result<Option<(Chunk, Option<Bytes>)>, PoolError> {
    let buf = &mut conn.rbuf;
    match chunk {
        Chunk::Size => match httparse::parse_chunk_size(buf) {
            Ok(httparse::Status::Complete((used, size))) => {
                buf.advance(used);
                let next = if size == 0 {
                    Chunk::Trailers
                } else {
                    Chunk::Data(size)
                };
                Ok(Some((next, None)))
            }
            Ok(httparse::Status::Partial) if buf.len() > MAX_CHUNK_LINE => {
                Err(PoolError::Protocol("chunk-size line too long"))
            }
            Ok(httparse::Status::Partial) => Ok(None),
            Err(_) => Err(PoolError::Protocol("invalid chunk size")),
        },
        Chunk::Data(_) if buf.is_empty() => Ok(None),
        Chunk::Data(left) => {
            let n = left.min(buf.len() as u64);
            let data = buf.split_to(n as usize).freeze();
            let next = if n == left {
                Chunk::DataEnd
            } else {
                Chunk::Data(left - n)
            };
            Ok(Some((next, Some(data))))
        }
        Chunk::DataEnd if buf.len() < 2 => Ok(None),
        Chunk::DataEnd if buf.starts_with(b"\r\n") => {
            buf.advance(2);
            Ok(Some((Chunk::Size, None)))
        }
        Chunk::DataEnd => Err(PoolError::Protocol("no CRLF after a chunk's data")),
        Chunk::Trailers => match buf.windows(2).position(|w| w == b"\r\n") {
            Some(0) => {
                buf.advance(2);
                Ok(Some((Chunk::Done, None)))
            }
            Some(line) => {
                // A trailer field: dropped (trailers are not passed on).
                *trailers += line + 2;
                if *trailers > MAX_TRAILERS {
                    return Err(PoolError::Protocol("trailer section too large"));
                }
                buf.advance(line + 2);
                Ok(Some((Chunk::Trailers, None)))
            }
            None if *trailers + buf.len() > MAX_TRAILERS => {
                Err(PoolError::Protocol("trailer section too large"))
            }
            None => Ok(None),
        },
        Chunk::Done => Ok(Some((Chunk::Done, None))),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use http_body_util::{BodyExt, Either, Full};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    use super::*;
    use crate::metering::CountingBody;

    /// What a scripted upstream does with a request.
    enum Act {
        /// Writes these bytes and waits for the next request.
        Answer(&'static [u8]),
        /// Writes these bytes and closes.
        AnswerThenClose(&'static [u8]),
        /// Closes without answering.
        Close,
        /// Writes these bytes after this long.
        AnswerAfter(Duration, &'static [u8]),
    }

    /// A scripted upstream: `act(connection, request on it)` for every
    /// request; it records each request's bytes.
    struct Scripted {
        authority: Authority,
        accepted: Arc<AtomicUsize>,
        requests: Arc<Mutex<Vec<Vec<u8>>>>,
    }

    async fn scripted(act: fn(usize, usize) -> Act) -> Scripted {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let authority = listener.local_addr().unwrap().to_string().parse().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let requests = Arc::new(Mutex::new(Vec::new()));
        let (count, log) = (accepted.clone(), requests.clone());
        tokio::spawn(async move {
            loop {
                let (mut stream, _) = listener.accept().await.unwrap();
                let conn = count.fetch_add(1, Ordering::SeqCst);
                let log = log.clone();
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    for n in 0.. {
                        let Some(request) = read_request(&mut stream, &mut buf).await else {
                            return;
                        };
                        log.lock().unwrap().push(request);
                        match act(conn, n) {
                            Act::Answer(bytes) => stream.write_all(bytes).await.unwrap(),
                            Act::AnswerThenClose(bytes) => {
                                stream.write_all(bytes).await.unwrap();
                                return;
                            }
                            Act::Close => return,
                            Act::AnswerAfter(wait, bytes) => {
                                tokio::time::sleep(wait).await;
                                // The gateway may have given up and closed.
                                if stream.write_all(bytes).await.is_err() {
                                    return;
                                }
                            }
                        }
                    }
                });
            }
        });
        Scripted {
            authority,
            accepted,
            requests,
        }
    }

    /// One request (head and Content-Length body) off `stream`.
    async fn read_request(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Option<Vec<u8>> {
        loop {
            if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&buf[..end]).to_lowercase();
                let body = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length: "))
                    .map_or(0, |n| n.trim().parse::<usize>().unwrap());
                if buf.len() >= end + 4 + body {
                    return Some(buf.drain(..end + 4 + body).collect());
                }
            }
            let mut chunk = [0u8; 4096];
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return None,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
    }

    fn request(
        authority: &Authority,
        method: Method,
        body: &'static [u8],
    ) -> Request<UpstreamBody> {
        let body = CountingBody::new(
            Either::Right(Full::new(Bytes::from_static(body))),
            Arc::default(),
            None,
        );
        Request::builder()
            .method(method)
            .uri(format!("http://{authority}/x?y=1"))
            .header(header::HOST, authority.as_str())
            .header("x-request-id", "rid-1")
            .body(body)
            .unwrap()
    }

    async fn send(
        pool: &Http1Pool,
        authority: &Authority,
        method: Method,
    ) -> Result<(StatusCode, HeaderMap, Bytes), PoolError> {
        let (mut response, raw) =
            send_by(pool, authority, request(authority, method, b""), soon()).await?;
        raw.merge_into(response.headers_mut());
        let (parts, reply) = response.into_parts();
        let body = match reply {
            Reply::Whole(b) => b,
            Reply::Stream(s) => s.collect().await?.to_bytes(),
        };
        Ok((parts.status, parts.headers, body))
    }

    /// Sends `req` over `pool` as the gateway does (nothing forwarded),
    /// answered by `deadline`.
    async fn send_by(
        pool: &Http1Pool,
        authority: &Authority,
        req: Request<UpstreamBody>,
        deadline: tokio::time::Instant,
    ) -> Result<(Response<Reply>, RawHeaders), PoolError> {
        let forwarded = Forwarded::default();
        pool.send(authority, req, &forwarded, Duration::from_secs(5), deadline)
            .await
    }

    /// A deadline no test call reaches.
    fn soon() -> tokio::time::Instant {
        tokio::time::Instant::now() + Duration::from_secs(30)
    }

    async fn get(pool: &Http1Pool, authority: &Authority) -> Bytes {
        send(pool, authority, Method::GET).await.unwrap().2
    }

    /// The head's header lines, sorted (order aside, what went up).
    fn head_lines(headers: &HeaderMap, forwarded: &crate::proxy::Forwarded) -> Vec<String> {
        let mut out = Vec::new();
        let uri: http::Uri = "http://up:9000/x".parse().unwrap();
        write_head(&mut out, &Method::GET, &uri, headers, forwarded, b"");
        let text = String::from_utf8(out).unwrap();
        let mut lines: Vec<String> = text
            .split("\r\n")
            .skip(1)
            .filter(|l| !l.is_empty())
            .map(str::to_owned)
            .collect();
        lines.sort();
        lines
    }

    #[test]
    fn written_changes_send_what_applied_changes_send() {
        let mut h = HeaderMap::new();
        for (name, value) in [
            ("host", "gw.example"),
            ("x-api-key", "secret"),
            ("x-forwarded-for", "192.0.2.7"),
            ("x-forwarded-proto", "https"),
            (
                "traceparent",
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            ),
            ("x-request-id", "from-client"),
            ("x-tollgate-plan-id", "spoofed"),
            ("connection", "x-private, traceparent"),
            ("x-private", "1"),
            ("x-keep", "yes"),
        ] {
            h.append(
                HeaderName::from_static(name),
                HeaderValue::from_static(value),
            );
        }
        h.append("x-keep", HeaderValue::from_static("again"));
        let mut forwarded = crate::proxy::prepare_headers(
            &h,
            &crate::snapshot::Target::parse("http://up:9000").unwrap(),
            &crate::proxy::Peer::new("10.0.0.1:1234".parse().unwrap()),
            &HeaderValue::from_static("rid"),
            false,
            None,
        );
        forwarded.set_host(&HeaderValue::from_static("other:9001"));
        let written = head_lines(&h, &forwarded);
        forwarded.apply(&mut h);
        let applied = head_lines(&h, &crate::proxy::Forwarded::default());
        assert_eq!(written, applied);
        for line in [
            "host: other:9001",
            "x-forwarded-for: 192.0.2.7, 10.0.0.1",
            "x-forwarded-proto: http",
            "x-forwarded-host: gw.example",
            "x-request-id: rid",
            "x-keep: yes",
            "x-keep: again",
        ] {
            assert!(written.iter().any(|l| l == line), "{line} in {written:?}");
        }
        for gone in ["x-api-key", "x-tollgate-plan-id", "connection", "x-private"] {
            assert!(
                !written.iter().any(|l| l.starts_with(&format!("{gone}:"))),
                "{gone} in {written:?}"
            );
        }
        let trace = written
            .iter()
            .find(|l| l.starts_with("traceparent:"))
            .unwrap();
        assert!(
            !trace.contains("4bf92f3577b34da6a3ce929d0e0e4736"),
            "a traceparent the client's Connection names is not continued: {trace}"
        );
        assert_eq!(written.len(), 8, "{written:?}");
    }

    const OK: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\ncontent-type: text/plain\r\n\r\nok";

    #[tokio::test]
    async fn sequential_calls_share_one_connection_and_send_the_request_as_prepared() {
        let up = scripted(|_, _| Act::Answer(OK)).await;
        let pool = Http1Pool::default();
        for _ in 0..3 {
            assert_eq!(get(&pool, &up.authority).await, "ok");
        }
        assert_eq!(up.accepted.load(Ordering::SeqCst), 1);
        assert_eq!(pool.len(), 1);
        let (_, raw) = send_by(
            &pool,
            &up.authority,
            request(&up.authority, Method::POST, b"{\"a\":1}"),
            soon(),
        )
        .await
        .unwrap();
        assert!(
            raw.lines()
                .any(|l| l.line == b"content-type: text/plain\r\n")
        );
        let requests = up.requests.lock().unwrap();
        let get = String::from_utf8(requests[0].clone()).unwrap();
        assert!(get.starts_with("GET /x?y=1 HTTP/1.1\r\n"), "{get}");
        assert!(
            get.contains(&format!("host: {}\r\n", up.authority)),
            "{get}"
        );
        assert!(get.contains("x-request-id: rid-1\r\n"), "{get}");
        assert!(
            !get.contains("content-length"),
            "a GET without a body says no length: {get}"
        );
        let post = String::from_utf8(requests[3].clone()).unwrap();
        assert!(post.starts_with("POST /x?y=1 HTTP/1.1\r\n"), "{post}");
        assert!(
            post.ends_with("content-length: 7\r\n\r\n{\"a\":1}"),
            "{post}"
        );
    }

    #[tokio::test]
    async fn a_streamed_body_holds_its_connection_until_it_is_read() {
        const BIG: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 20000\r\n\r\n";
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let authority: Authority = listener.local_addr().unwrap().to_string().parse().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = accepted.clone();
        tokio::spawn(async move {
            loop {
                let (mut stream, _) = listener.accept().await.unwrap();
                count.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    while read_request(&mut stream, &mut buf).await.is_some() {
                        stream.write_all(BIG).await.unwrap();
                        stream.write_all(&[b'x'; 20000]).await.unwrap();
                    }
                });
            }
        });
        let pool = Http1Pool::default();
        let first = send_by(
            &pool,
            &authority,
            request(&authority, Method::GET, b""),
            soon(),
        )
        .await
        .unwrap();
        let Reply::Stream(first) = first.0.into_body() else {
            panic!("20,000 bytes are streamed");
        };
        assert_eq!(first.size_hint().exact(), Some(20000));
        // The first body is unread: its connection is busy, so the second
        // call opens another.
        assert_eq!(get(&pool, &authority).await.len(), 20000);
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
        assert_eq!(pool.len(), 1);
        assert_eq!(first.collect().await.unwrap().to_bytes().len(), 20000);
        assert_eq!(pool.len(), 2, "read to its end, the connection is back");
        get(&pool, &authority).await;
        get(&pool, &authority).await;
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn connections_the_upstream_closes_are_replaced() {
        let up = scripted(|_, _| {
            Act::Answer(b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok")
        })
        .await;
        let pool = Http1Pool::default();
        for _ in 0..3 {
            assert_eq!(get(&pool, &up.authority).await, "ok");
        }
        assert_eq!(up.accepted.load(Ordering::SeqCst), 3);
        assert!(pool.is_empty());
    }

    #[tokio::test]
    async fn chunked_bodies_are_decoded_and_their_connection_kept() {
        let up = scripted(|_, _| {
            Act::Answer(
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n\
                  5;ext=1\r\nhello\r\n7\r\n, world\r\n0\r\nx-checksum: 1\r\n\r\n",
            )
        })
        .await;
        let pool = Http1Pool::default();
        for _ in 0..2 {
            let (status, headers, body) = send(&pool, &up.authority, Method::GET).await.unwrap();
            assert_eq!(status, 200);
            assert_eq!(body, "hello, world");
            // Hop-by-hop: not passed on.
            assert!(!headers.contains_key(header::TRANSFER_ENCODING));
        }
        assert_eq!(up.accepted.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn answer_headers_come_as_lines_less_hop_by_hop_ones() {
        // Both a length and chunks: the first connection is not kept.
        let up = scripted(|conn, _| match conn {
            0 => Act::Answer(
                b"HTTP/1.1 200 OK\r\nX-Upper: A b\r\nConnection: keep-alive, X-Secret\r\n\
                  X-Secret: s\r\nKeep-Alive: timeout=5\r\nProxy-Authenticate: Basic\r\n\
                  TE: trailers\r\nTrailer: x-sum\r\nUpgrade: h2c\r\nSet-Cookie: a=1\r\n\
                  Transfer-Encoding: chunked\r\nContent-Length: 5\r\nSet-Cookie: b=2\r\n\r\n\
                  5\r\nhello\r\n0\r\n\r\n",
            ),
            _ => Act::Answer(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nDate: x\r\n\r\nok"),
        })
        .await;
        let pool = Http1Pool::default();
        let lines = |(response, raw): &(Response<Reply>, RawHeaders)| -> Vec<String> {
            assert!(response.headers().is_empty());
            raw.lines()
                .map(|l| String::from_utf8(l.line.to_vec()).unwrap())
                .collect()
        };
        let call = |method| {
            send_by(
                &pool,
                &up.authority,
                request(&up.authority, method, b""),
                soon(),
            )
        };
        // Names lowercased, order and repeats kept; hop-by-hop ones, those
        // `Connection` names, and a length beside chunks left out.
        let response = call(Method::GET).await.unwrap();
        assert_eq!(
            lines(&response),
            [
                "x-upper: A b\r\n",
                "set-cookie: a=1\r\n",
                "set-cookie: b=2\r\n"
            ]
        );
        let Reply::Stream(body) = response.0.into_body() else {
            panic!("a chunked body is streamed");
        };
        assert_eq!(body.collect().await.unwrap().to_bytes(), "hello");
        // A length alone stays (a HEAD answer passes it on).
        let response = call(Method::GET).await.unwrap();
        assert_eq!(lines(&response), ["content-length: 2\r\n", "date: x\r\n"]);
    }

    #[tokio::test]
    async fn a_body_without_a_length_ends_when_the_upstream_closes() {
        let up =
            scripted(|_, _| Act::AnswerThenClose(b"HTTP/1.1 200 OK\r\n\r\nuntil the end")).await;
        let pool = Http1Pool::default();
        assert_eq!(get(&pool, &up.authority).await, "until the end");
        assert!(pool.is_empty());
        // HTTP/1.0 without keep-alive: not reused either.
        let up =
            scripted(|_, _| Act::Answer(b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok")).await;
        assert_eq!(get(&pool, &up.authority).await, "ok");
        assert!(pool.is_empty());
        let up = scripted(|_, _| {
            Act::Answer(b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 2\r\n\r\nok")
        })
        .await;
        assert_eq!(get(&pool, &up.authority).await, "ok");
        assert_eq!(pool.len(), 1);
    }

    #[tokio::test]
    async fn interim_answers_are_skipped_and_bodiless_answers_read_no_body() {
        let up = scripted(|_, n| match n {
            0 => Act::Answer(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 3\r\n\r\nnew"),
            1 => Act::Answer(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n"),
            _ => Act::Answer(b"HTTP/1.1 204 No Content\r\n\r\n"),
        })
        .await;
        let pool = Http1Pool::default();
        let (status, _, body) = send(&pool, &up.authority, Method::GET).await.unwrap();
        assert_eq!((status, &body[..]), (StatusCode::CREATED, &b"new"[..]));
        let (status, headers, body) = send(&pool, &up.authority, Method::HEAD).await.unwrap();
        assert_eq!(status, 200);
        assert_eq!(headers[header::CONTENT_LENGTH], "1000");
        assert!(body.is_empty());
        let (status, _, body) = send(&pool, &up.authority, Method::GET).await.unwrap();
        assert_eq!(status, StatusCode::NO_CONTENT);
        assert!(body.is_empty());
        assert_eq!(
            up.accepted.load(Ordering::SeqCst),
            1,
            "one connection for all three"
        );
    }

    #[test]
    fn framing_follows_rfc_9112() {
        fn frame(
            version: Version,
            status: u16,
            fields: &[(&str, &str)],
            head_only: bool,
        ) -> Result<(Framing, bool), String> {
            let mut said = FramingHeaders::default();
            for (name, value) in fields {
                match Hop::of(name.as_bytes()) {
                    Some(Hop::Connection) => said.connection(value.as_bytes()),
                    Some(Hop::TransferEncoding) => said.transfer_encoding(value.as_bytes()),
                    Some(Hop::ContentLength) => said.content_length(value.as_bytes()),
                    _ => {}
                }
            }
            let status = StatusCode::from_u16(status).unwrap();
            framing(status, version, &said, head_only).map_err(|e| e.to_string())
        }
        let v11 = Version::HTTP_11;
        let length = |n| Ok((Framing::Length(n), true));
        assert_eq!(
            frame(v11, 200, &[("content-length", "5, 5")], false),
            length(5)
        );
        assert_eq!(
            frame(v11, 200, &[("content-length", " 7 ")], false),
            length(7)
        );
        for bad in ["5, 6", "99999999999999999999", "5x", "", "+5"] {
            let framed = frame(v11, 200, &[("content-length", bad)], false);
            assert!(framed.unwrap_err().contains("Content-Length"), "{bad}");
        }
        let framed = frame(
            v11,
            200,
            &[("content-length", "2"), ("content-length", "3")],
            false,
        );
        assert!(framed.unwrap_err().contains("conflicting"));
        // A bodiless answer's lengths are not read.
        assert_eq!(frame(v11, 200, &[("content-length", "x")], true), length(0));
        assert_eq!(
            frame(v11, 304, &[("content-length", "x")], false),
            length(0)
        );
        // Chunked when the last coding is; the length is then ignored, and
        // the connection with it.
        let framed = frame(
            v11,
            200,
            &[
                ("transfer-encoding", "gzip, Chunked"),
                ("content-length", "5"),
            ],
            false,
        );
        assert_eq!(framed, Ok((Framing::Chunked(Chunk::Size), false)));
        let framed = frame(
            v11,
            200,
            &[
                ("transfer-encoding", "chunked"),
                ("transfer-encoding", "gzip"),
            ],
            false,
        );
        assert_eq!(framed, Ok((Framing::Close, false)));
        // No length: until the upstream closes.
        assert_eq!(frame(v11, 200, &[], false), Ok((Framing::Close, false)));
        // Keep-alive: HTTP/1.1 unless `close`; HTTP/1.0 only with `keep-alive`.
        let framed = frame(
            v11,
            200,
            &[("connection", "Upgrade, Close"), ("content-length", "1")],
            false,
        );
        assert_eq!(framed, Ok((Framing::Length(1), false)));
        let v10 = Version::HTTP_10;
        assert_eq!(
            frame(v10, 200, &[("content-length", "1")], false),
            Ok((Framing::Length(1), false))
        );
        assert_eq!(
            frame(
                v10,
                200,
                &[("connection", "Keep-Alive"), ("content-length", "1")],
                false
            ),
            length(1)
        );
    }

    #[tokio::test]
    async fn malformed_answers_fail_with_what_was_wrong() {
        async fn error_of(act: fn(usize, usize) -> Act) -> String {
            let up = scripted(act).await;
            let pool = Http1Pool::default();
            let e = send(&pool, &up.authority, Method::GET)
                .await
                .unwrap_err()
                .to_string();
            assert!(pool.is_empty(), "{e}: the connection is not kept");
            e
        }
        let e = error_of(|_, _| {
            Act::Answer(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nok")
        })
        .await;
        assert!(e.contains("conflicting Content-Length"), "{e}");
        let e =
            error_of(|_, _| Act::Answer(b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n")).await;
        assert!(e.contains("invalid Content-Length"), "{e}");
        let e = error_of(|_, _| Act::Answer(b"SMTP ready\r\n\r\n")).await;
        assert!(e.contains("malformed response head"), "{e}");
        let e = error_of(|_, _| Act::Close).await;
        assert!(e.contains("closed the connection before the end"), "{e}");
        let e = error_of(|_, _| {
            Act::AnswerThenClose(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort")
        })
        .await;
        assert!(e.contains("closed the connection before the end"), "{e}");
        let e = error_of(|_, _| {
            Act::Answer(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n")
        })
        .await;
        assert!(e.contains("invalid chunk size"), "{e}");
        let e = error_of(|_, _| {
            let head: &'static str = Box::leak(
                format!("HTTP/1.1 200 OK\r\nx-big: {}\r\n", "a".repeat(70_000)).into_boxed_str(),
            );
            Act::Answer(head.as_bytes())
        })
        .await;
        assert!(e.contains("larger than 64 KiB"), "{e}");
    }

    #[tokio::test]
    async fn a_kept_connection_that_fails_before_the_answer_is_retried_only_for_idempotent_calls() {
        // The first connection answers once, then closes on the next request
        // without answering (as if its keep-alive timeout struck just then).
        let up = scripted(|conn, n| match (conn, n) {
            (0, 0) | (1, 0) => Act::Answer(OK),
            (0 | 1, _) => Act::Close,
            _ => Act::Answer(OK),
        })
        .await;
        let pool = Http1Pool::default();
        assert_eq!(get(&pool, &up.authority).await, "ok");
        // Sent again on a new connection (the second), and answered.
        assert_eq!(get(&pool, &up.authority).await, "ok");
        assert_eq!(up.accepted.load(Ordering::SeqCst), 2);
        assert_eq!(up.requests.lock().unwrap().len(), 3);
        // A POST on the second connection, kept: it fails and is not sent twice.
        let e = send(&pool, &up.authority, Method::POST).await.unwrap_err();
        assert!(matches!(e, PoolError::Closed), "{e}");
        assert_eq!(
            up.requests.lock().unwrap().len(),
            4,
            "the POST went out once"
        );
        assert_eq!(up.accepted.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn an_idle_connection_the_upstream_closed_is_not_used() {
        let up = scripted(|_, _| {
            Act::AnswerThenClose(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        })
        .await;
        let pool = Http1Pool::default();
        assert_eq!(get(&pool, &up.authority).await, "ok");
        assert_eq!(pool.len(), 1, "the answer did not say close");
        // Let the runtime see the close.
        tokio::time::sleep(Duration::from_millis(50)).await;
        // A POST is not retried, so it must not be sent on the closed one.
        let (status, _, _) = send(&pool, &up.authority, Method::POST).await.unwrap();
        assert_eq!(status, 200);
        assert_eq!(up.accepted.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_request_body_past_the_limit_is_not_sent() {
        let up = scripted(|_, _| Act::Answer(OK)).await;
        let pool = Http1Pool::default();
        let body = CountingBody::new(
            Either::Right(Full::new(Bytes::from_static(b"0123456789"))),
            Arc::default(),
            Some(4),
        );
        let req = Request::post(format!("http://{}/x", up.authority))
            .header(header::HOST, up.authority.as_str())
            .body(body)
            .unwrap();
        let e = send_by(&pool, &up.authority, req, soon())
            .await
            .unwrap_err();
        assert!(matches!(e, PoolError::RequestBody(_)), "{e}");
        assert_eq!(up.accepted.load(Ordering::SeqCst), 0);
    }

    #[tokio::test]
    async fn an_answer_later_than_its_deadline_times_out_and_its_connection_is_dropped() {
        // Answers the second call on the first connection late.
        let up = scripted(|conn, n| match (conn, n) {
            (0, 1) => Act::AnswerAfter(Duration::from_millis(400), OK),
            _ => Act::Answer(OK),
        })
        .await;
        let pool = Http1Pool::default();
        let call = |after: Duration| {
            send_by(
                &pool,
                &up.authority,
                request(&up.authority, Method::GET, b""),
                tokio::time::Instant::now() + after,
            )
        };
        // The first call's deadline is far off and the second's near: the
        // connection's timer is moved back for it.
        assert!(call(Duration::from_secs(30)).await.is_ok());
        let started = std::time::Instant::now();
        let e = call(Duration::from_millis(100)).await.unwrap_err();
        assert!(matches!(e, PoolError::TimedOut), "{e}");
        let waited = started.elapsed();
        assert!(waited < Duration::from_millis(350), "waited {waited:?}");
        // Not sent again on a new connection, and the late one is not kept.
        assert_eq!(up.accepted.load(Ordering::SeqCst), 1);
        assert_eq!(pool.len(), 0);
        // A later deadline on a new connection: answered.
        assert!(call(Duration::from_secs(5)).await.is_ok());
        assert_eq!(up.accepted.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_kept_connection_waits_for_each_calls_own_deadline() {
        // Every answer takes 150 ms; each call's deadline is 1 s after it starts.
        let up = scripted(|_, _| Act::AnswerAfter(Duration::from_millis(150), OK)).await;
        let pool = Http1Pool::default();
        let first_deadline = tokio::time::Instant::now() + Duration::from_secs(1);
        for i in 0..8 {
            // Past the first call's deadline by the last calls: the timer
            // must have moved on with each call.
            let deadline = tokio::time::Instant::now() + Duration::from_secs(1);
            let answer = send_by(
                &pool,
                &up.authority,
                request(&up.authority, Method::GET, b""),
                deadline,
            )
            .await;
            assert!(answer.is_ok(), "call {i}: {:?}", answer.err());
        }
        assert!(tokio::time::Instant::now() > first_deadline);
        assert_eq!(up.accepted.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn digits_are_written_without_the_formatter() {
        for n in [0u64, 7, 10, 65536, u64::MAX] {
            assert_eq!(Digits::of(n).as_bytes(), n.to_string().as_bytes());
        }
    }
}
