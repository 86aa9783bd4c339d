//! Names of the headers the gateway reads and writes, built once.
//!
//! `HeaderMap` accepts `&str` names too, but then parses and validates the name
//! on every call; with a dozen header operations per call that was several
//! percent of the gateway's instructions.

use std::sync::LazyLock;

use bytes::{Bytes, BytesMut};
use http::{HeaderMap, HeaderName, HeaderValue};

/// The call's request id, sent upstream and back.
pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
/// An API key.
pub const X_API_KEY: HeaderName = HeaderName::from_static("x-api-key");
/// An API key, Kong's spelling.
pub const APIKEY: HeaderName = HeaderName::from_static("apikey");
/// `Keep-Alive`, hop-by-hop.
pub const KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
/// The client addresses a call passed through.
pub const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
/// The scheme the client used.
pub const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
/// The host the client asked for.
pub const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
/// W3C trace context.
pub const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
/// The app a call was admitted for (trusted by the upstream).
pub const X_TOLLGATE_APP_ID: HeaderName = HeaderName::from_static("x-tollgate-app-id");
/// The app's developer.
pub const X_TOLLGATE_DEVELOPER_ID: HeaderName = HeaderName::from_static("x-tollgate-developer-id");
/// The plan.
pub const X_TOLLGATE_PLAN_ID: HeaderName = HeaderName::from_static("x-tollgate-plan-id");
/// The subscription.
pub const X_TOLLGATE_SUBSCRIPTION_ID: HeaderName =
    HeaderName::from_static("x-tollgate-subscription-id");
/// The tightest rate limit.
pub const RATELIMIT_LIMIT: HeaderName = HeaderName::from_static("ratelimit-limit");
/// Calls left in it.
pub const RATELIMIT_REMAINING: HeaderName = HeaderName::from_static("ratelimit-remaining");
/// Seconds until it is full again.
pub const RATELIMIT_RESET: HeaderName = HeaderName::from_static("ratelimit-reset");

/// A header name read off the wire. The custom names clients and upstreams
/// send most (the gateway's own) are taken from their constants, told apart
/// by length; `HeaderName::from_bytes` parses the rest, copying every name
/// that is not a standard one into its own allocation.
pub fn parse_name(bytes: &[u8]) -> Result<HeaderName, http::header::InvalidHeaderName> {
    let known = match bytes.len() {
        6 => Some(("apikey", APIKEY)),
        9 => Some(("x-api-key", X_API_KEY)),
        10 => Some(("keep-alive", KEEP_ALIVE)),
        11 => Some(("traceparent", TRACEPARENT)),
        12 => Some(("x-request-id", X_REQUEST_ID)),
        15 => Some(("x-forwarded-for", X_FORWARDED_FOR)),
        16 => Some(("x-forwarded-host", X_FORWARDED_HOST)),
        17 => Some(("x-forwarded-proto", X_FORWARDED_PROTO)),
        _ => None,
    };
    match known {
        Some((text, name)) if bytes.eq_ignore_ascii_case(text.as_bytes()) => Ok(name),
        _ => HeaderName::from_bytes(bytes),
    }
}

/// The headers a proxy does not pass on as they came: the hop-by-hop ones
/// (RFC 9110 §7.6.1; a `Connection` header may name more), and
/// `Content-Length`, which frames the body it came with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hop {
    /// `Connection`.
    Connection,
    /// `Transfer-Encoding`.
    TransferEncoding,
    /// `Content-Length` (not hop-by-hop, but framing).
    ContentLength,
    /// `Keep-Alive`, `Proxy-Authenticate`, `Proxy-Authorization`, `TE`,
    /// `Trailer`, `Upgrade`.
    Other,
}

impl Hop {
    /// What `name` (any case) is, or `None` for any other header.
    pub fn of(name: &[u8]) -> Option<Self> {
        let is = |known: &str| name.eq_ignore_ascii_case(known.as_bytes());
        match name.len() {
            2 if is("te") => Some(Self::Other),
            7 if is("trailer") || is("upgrade") => Some(Self::Other),
            10 if is("connection") => Some(Self::Connection),
            10 if is("keep-alive") => Some(Self::Other),
            14 if is("content-length") => Some(Self::ContentLength),
            17 if is("transfer-encoding") => Some(Self::TransferEncoding),
            18 if is("proxy-authenticate") => Some(Self::Other),
            19 if is("proxy-authorization") => Some(Self::Other),
            _ => None,
        }
    }

    /// True for a hop-by-hop header.
    pub fn is_hop_by_hop(name: &[u8]) -> bool {
        Self::of(name).is_some_and(|h| h != Self::ContentLength)
    }
}

/// The items of a comma-separated header value (`Connection`,
/// `Transfer-Encoding`, a repeated `Content-Length`), trimmed; empty items
/// included.
pub fn list_items(value: &[u8]) -> impl DoubleEndedIterator<Item = &[u8]> {
    value.split(|&b| b == b',').map(<[u8]>::trim_ascii)
}

/// True when a comma-separated header value lists `item` (in any case).
pub fn lists(value: &[u8], item: &[u8]) -> bool {
    list_items(value).any(|t| t.eq_ignore_ascii_case(item))
}

/// A number written in decimal digits only (no sign, no spaces); `None` for
/// anything else or one past `u64`.
pub fn decimal(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() {
        return None;
    }
    digits.iter().try_fold(0u64, |n, &d| {
        let d = d.checked_sub(b'0').filter(|d| *d < 10)?;
        n.checked_mul(10)?.checked_add(u64::from(d))
    })
}

/// Numbers below this come from [`number_value`]'s table.
const TABLED: u64 = 10_000;

/// `n` as a header value. The numbers rate limits mostly send (below 10,000)
/// are slices of one table written once, so that sending one costs no
/// allocation; larger ones are written out.
pub fn number_value(n: u64) -> HeaderValue {
    // 0 to 9,999 written one after another: 10 + 90 * 2 + 900 * 3 + 9,000 * 4 bytes.
    static TABLE: LazyLock<String> = LazyLock::new(|| (0..TABLED).map(|i| i.to_string()).collect());
    let (start, width) = match n {
        0..=9 => (n, 1),
        10..=99 => (10 + (n - 10) * 2, 2),
        100..=999 => (190 + (n - 100) * 3, 3),
        1_000..TABLED => (2_890 + (n - 1_000) * 4, 4),
        _ => return HeaderValue::from(n),
    };
    let table: &'static str = &TABLE;
    HeaderValue::from_static(&table[start as usize..(start + width) as usize])
}

/// An upstream answer's headers as they go on to the client: `name: value`
/// lines (CRLF-ended, names lowercased) in the upstream's order, hop-by-hop
/// ones already left out. A target's own connections read answers into
/// these instead of a `HeaderMap`, which hashes every name on insert and is
/// hashed and walked again to remove the hop-by-hop ones: the own HTTP/1.1
/// listener copies the lines to the client as they are. They travel with the
/// answer's body ([`CarriesRawHeaders`]; not in its extensions, a map made
/// per answer), beside the (at first empty) header map into which
/// the gateway inserts its own headers; a step that reads or edits the
/// answer's headers (transforms, the cache, CORS, hyper's server) first
/// merges them into the map ([`merge_raw_headers`]). The headers the gateway
/// sets on such an answer (the request id, the rate-limit headers) are kept
/// as lines too ([`set_answer_header`]). Either way a header the gateway set
/// replaces the upstream's lines of that name, as an insert into a map of
/// the upstream's headers would.
#[derive(Debug, Clone, Default)]
pub struct RawHeaders {
    lines: Bytes,
    /// The gateway's own headers, in the order they were set.
    own: Vec<(HeaderName, OwnValue)>,
}

/// The value of one of the gateway's own answer headers.
#[derive(Debug, Clone)]
pub enum OwnValue {
    /// A header value.
    Value(HeaderValue),
    /// A number, written in decimal when the header is.
    Number(u64),
}

impl OwnValue {
    /// Writes `name: value` and CRLF.
    pub fn write_line(&self, name: &HeaderName, out: &mut Vec<u8>) {
        let name = name.as_str().as_bytes();
        match self {
            Self::Value(v) => push_line(out, name, v.as_bytes()),
            Self::Number(n) => {
                push_line(out, name, crate::upstream_pool::Digits::of(*n).as_bytes());
            }
        }
    }

    fn into_value(self) -> HeaderValue {
        match self {
            Self::Value(v) => v,
            Self::Number(n) => number_value(n),
        }
    }
}

/// The `name: value` lines of `bytes`, each ended by CRLF.
fn parse_lines(mut rest: &[u8]) -> impl Iterator<Item = RawLine<'_>> {
    std::iter::from_fn(move || {
        // Every line was written here: `name: value\r\n`.
        let end = memchr::memchr(b'\n', rest)? + 1;
        let (line, after) = rest.split_at(end);
        rest = after;
        let colon = memchr::memchr(b':', line)?;
        Some(RawLine {
            name: &line[..colon],
            value: &line[colon + 2..end - 2],
            line,
        })
    })
}

/// Writes `name: value` and CRLF.
pub(crate) fn push_line(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.reserve(name.len() + value.len() + 4);
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// One of [`RawHeaders`]' lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RawLine<'a> {
    /// The name, lowercase.
    pub name: &'a [u8],
    /// The value.
    pub value: &'a [u8],
    /// The whole line, with its CRLF.
    pub line: &'a [u8],
}

impl RawHeaders {
    /// Room for `len` bytes of lines.
    pub fn builder(len: usize) -> RawHeadersBuilder {
        RawHeadersBuilder {
            lines: BytesMut::with_capacity(len),
        }
    }

    /// The upstream's lines, in order.
    pub fn lines(&self) -> impl Iterator<Item = RawLine<'_>> {
        parse_lines(&self.lines)
    }

    /// The gateway's own headers, in the order they were set.
    pub fn own(&self) -> &[(HeaderName, OwnValue)] {
        &self.own
    }

    /// Sets one of the gateway's own headers (replacing one set before).
    fn set_own(&mut self, name: HeaderName, value: OwnValue) {
        match self.own.iter_mut().find(|(n, _)| *n == name) {
            Some((_, v)) => *v = value,
            None => {
                if self.own.capacity() == 0 {
                    // Room for the rate-limit headers and the request id.
                    self.own.reserve_exact(4);
                }
                self.own.push((name, value));
            }
        }
    }

    /// Merges the lines into `map`: the gateway's own are inserted; the
    /// upstream's are appended, less those of a name `map` then holds (its
    /// entries replace them). The upstream's values share the lines' bytes.
    pub fn merge_into(mut self, map: &mut HeaderMap) {
        for (name, value) in std::mem::take(&mut self.own) {
            map.insert(name, value.into_value());
        }
        let held: Vec<HeaderName> = map.keys().cloned().collect();
        let base = self.lines.as_ptr() as usize;
        for line in self.lines() {
            if held.iter().any(|h| h.as_str().as_bytes() == line.name) {
                continue;
            }
            let start = line.value.as_ptr() as usize - base;
            let value = self.lines.slice(start..start + line.value.len());
            // The builder took only valid names and values.
            if let (Ok(name), Ok(value)) =
                (parse_name(line.name), HeaderValue::from_maybe_shared(value))
            {
                map.append(name, value);
            }
        }
    }
}

/// Writes [`RawHeaders`]' lines.
#[derive(Debug)]
pub struct RawHeadersBuilder {
    lines: BytesMut,
}

impl RawHeadersBuilder {
    /// Adds a header `httparse` parsed. It took only names that are HTTP
    /// tokens and values of tab, visible ASCII, space and obs-text bytes (the
    /// same rules as `HeaderName` and `HeaderValue`), so nothing is checked
    /// again here.
    pub fn push(&mut self, header: &httparse::Header<'_>) {
        let (name, value) = (header.name.as_bytes(), header.value);
        debug_assert!(HeaderName::from_bytes(name).is_ok());
        debug_assert!(HeaderValue::from_bytes(value).is_ok());
        let start = self.lines.len();
        self.lines.extend_from_slice(name);
        self.lines[start..].make_ascii_lowercase();
        self.lines.extend_from_slice(b": ");
        self.lines.extend_from_slice(value);
        self.lines.extend_from_slice(b"\r\n");
    }

    /// The lines written.
    pub fn finish(self) -> RawHeaders {
        RawHeaders {
            lines: self.lines.freeze(),
            own: Vec::new(),
        }
    }
}

/// An answer's body that carries the upstream's [`RawHeaders`] lines, when
/// it has them, from the target's connection to the listener.
pub trait CarriesRawHeaders {
    /// The lines not yet merged into the answer's header map.
    fn raw_headers(&mut self) -> &mut Option<RawHeaders>;
}

impl CarriesRawHeaders for Option<RawHeaders> {
    fn raw_headers(&mut self) -> &mut Option<RawHeaders> {
        self
    }
}

/// Sets a header of the gateway's own on an answer, replacing any of that
/// name: among the answer's [`RawHeaders`] lines when it has them, else in
/// its header map.
pub fn set_answer_header<B: CarriesRawHeaders>(
    response: &mut http::Response<B>,
    name: HeaderName,
    value: &HeaderValue,
) {
    set_answer(response, name, OwnValue::Value(value.clone()));
}

/// [`set_answer_header`] with a number, written without a header value for
/// an answer that has [`RawHeaders`].
pub fn set_answer_number<B: CarriesRawHeaders>(
    response: &mut http::Response<B>,
    name: HeaderName,
    n: u64,
) {
    set_answer(response, name, OwnValue::Number(n));
}

fn set_answer<B: CarriesRawHeaders>(
    response: &mut http::Response<B>,
    name: HeaderName,
    value: OwnValue,
) {
    match response.body_mut().raw_headers() {
        Some(raw) => raw.set_own(name, value),
        None => {
            response.headers_mut().insert(name, value.into_value());
        }
    }
}

/// Merges the answer's [`RawHeaders`], if it has any, into its header map:
/// for a step that reads or edits the answer's headers.
pub fn merge_raw_headers<B: CarriesRawHeaders>(response: &mut http::Response<B>) {
    if let Some(raw) = response.body_mut().raw_headers().take() {
        raw.merge_into(response.headers_mut());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_off_the_wire_are_parsed_or_known() {
        assert_eq!(parse_name(b"X-Api-Key").unwrap(), X_API_KEY);
        assert_eq!(parse_name(b"keep-alive").unwrap(), KEEP_ALIVE);
        assert_eq!(
            parse_name(b"Content-Type").unwrap(),
            http::header::CONTENT_TYPE
        );
        assert_eq!(parse_name(b"X-Custom").unwrap().as_str(), "x-custom");
        for name in [
            APIKEY,
            X_API_KEY,
            KEEP_ALIVE,
            TRACEPARENT,
            X_REQUEST_ID,
            X_FORWARDED_FOR,
            X_FORWARDED_HOST,
            X_FORWARDED_PROTO,
        ] {
            let upper = name.as_str().to_ascii_uppercase();
            assert_eq!(parse_name(upper.as_bytes()).unwrap(), name);
        }
        assert_eq!(
            parse_name(b"content-type").unwrap(),
            http::header::CONTENT_TYPE
        );
        assert!(parse_name(b"bad name").is_err());
        assert!(parse_name(b"").is_err());
    }

    #[test]
    fn lists_and_decimals_are_read_as_http_writes_them() {
        let items: Vec<&[u8]> = list_items(b" close ,, Keep-Alive").collect();
        assert_eq!(items, [&b"close"[..], b"", b"Keep-Alive"]);
        assert!(lists(b"Upgrade, Close", b"close"));
        assert!(!lists(b"closed", b"close"));
        assert_eq!(decimal(b"0"), Some(0));
        assert_eq!(decimal(b"18446744073709551615"), Some(u64::MAX));
        for bad in [
            &b""[..],
            b"18446744073709551616",
            b"+5",
            b"5 ",
            b"-1",
            b"1a",
        ] {
            assert_eq!(decimal(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn raw_lines_are_read_back_and_give_way_to_the_map() {
        let mut slots = [httparse::EMPTY_HEADER; 8];
        let mut parsed = httparse::Response::new(&mut slots);
        let head = b"HTTP/1.1 200 OK\r\nX-One: a\r\nSet-Cookie: x=1\r\nX-Request-Id: up\r\n\
                     Set-Cookie: y=2\r\nX-Empty:\r\n\r\n";
        parsed.parse(head).unwrap();
        let mut builder = RawHeaders::builder(64);
        for h in parsed.headers.iter() {
            builder.push(h);
        }
        let raw = builder.finish();
        let lines: Vec<(&[u8], &[u8])> = raw.lines().map(|l| (l.name, l.value)).collect();
        assert_eq!(
            lines,
            [
                (&b"x-one"[..], &b"a"[..]),
                (b"set-cookie", b"x=1"),
                (b"x-request-id", b"up"),
                (b"set-cookie", b"y=2"),
                (b"x-empty", b""),
            ]
        );
        assert_eq!(raw.lines().next().unwrap().line, b"x-one: a\r\n");

        // The map's own entries stay; every other line is appended, repeats too.
        let mut map = HeaderMap::new();
        map.insert(X_REQUEST_ID, HeaderValue::from_static("gw"));
        raw.merge_into(&mut map);
        assert_eq!(map.get_all(X_REQUEST_ID).iter().collect::<Vec<_>>(), ["gw"]);
        assert_eq!(
            map.get_all("set-cookie").iter().collect::<Vec<_>>(),
            ["x=1", "y=2"]
        );
        assert_eq!(map["x-one"], "a");
        assert_eq!(map["x-empty"], "");
        assert!(RawHeaders::default().own().is_empty());
        assert_eq!(RawHeaders::default().lines().count(), 0);
    }

    #[test]
    fn the_gateways_own_answer_headers_go_beside_the_lines_or_into_the_map() {
        let mut slots = [httparse::EMPTY_HEADER; 4];
        let mut parsed = httparse::Response::new(&mut slots);
        parsed
            .parse(b"HTTP/1.1 200 OK\r\nRateLimit-Limit: 5\r\nX-Up: 1\r\n\r\n")
            .unwrap();
        let mut builder = RawHeaders::builder(64);
        for h in parsed.headers.iter() {
            builder.push(h);
        }
        let mut raw = http::Response::new(Some(builder.finish()));
        let mut mapped = http::Response::new(None);
        for response in [&mut raw, &mut mapped] {
            set_answer_number(response, RATELIMIT_LIMIT, 100);
            set_answer_number(response, RATELIMIT_REMAINING, 123_456);
            set_answer_header(response, X_REQUEST_ID, &HeaderValue::from_static("a"));
            // Set again: replaced, not repeated.
            set_answer_header(response, X_REQUEST_ID, &HeaderValue::from_static("b"));
        }
        assert!(raw.headers().is_empty());
        let lines = raw.body().as_ref().unwrap();
        let mut written = Vec::new();
        for (name, value) in lines.own() {
            value.write_line(name, &mut written);
        }
        assert_eq!(
            written,
            b"ratelimit-limit: 100\r\nratelimit-remaining: 123456\r\nx-request-id: b\r\n"
        );
        assert_eq!(mapped.headers()["ratelimit-remaining"], "123456");
        assert_eq!(mapped.headers()["x-request-id"], "b");
        // Merged, the gateway's replace the upstream's of the same name.
        merge_raw_headers(&mut raw);
        assert_eq!(
            raw.headers()
                .get_all(RATELIMIT_LIMIT)
                .iter()
                .collect::<Vec<_>>(),
            ["100"]
        );
        assert_eq!(raw.headers()["x-up"], "1");
        assert_eq!(raw.headers()["x-request-id"], "b");
        assert!(raw.body().is_none());
    }

    #[test]
    fn numbers_are_written_as_decimals() {
        for n in (0..20_000).chain([u64::from(u32::MAX), u64::MAX]) {
            assert_eq!(number_value(n).as_bytes(), n.to_string().as_bytes(), "{n}");
        }
    }
}
