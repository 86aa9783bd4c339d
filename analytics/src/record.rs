//! The spool's record encoding: a batch of usage events in a compact,
//! versioned binary form.
//!
//! A record starts with a version byte (today 1). Version 1 is a table of the
//! distinct texts of the batch, then the events, each text field an index into
//! the table: the node, API, route, app, plan… repeat from call to call, so a
//! typical event takes 40 to 80 bytes instead of the 300 or so of its JSON.
//! Integers are LEB128 varints.
//!
//! ```text
//! record  = version:u8 (=1) texts:varint (len:varint utf8)* events:varint event*
//! event   = id:16 bytes, timestamp_ms, status, latency_us, upstream_latency_us,
//!           bytes_in, bytes_out (varints), flags:u8 (bit 0: overage),
//!           12 text indexes (varints): node, api_id, api_slug, route, method,
//!           app_id, key_prefix, developer_id, plan_id, subscription_id,
//!           client_ip, error_code
//! ```
//!
//! A reader refuses a version it does not know; the spool counts such a record
//! as corrupt, so a downgrade never misreads events written by a newer version.

use std::collections::HashMap;
use std::sync::Arc;

use uuid::Uuid;

use crate::event::{Text, UsageEvent};

/// The encoding written today.
pub const VERSION: u8 = 1;
/// A record is closed at this many events...
const MAX_EVENTS: usize = 1024;
/// ...or once its encoded size passes this many bytes (well under the spool's
/// 1 MiB record limit: one more event adds at most 12 texts).
const SOFT_MAX_BYTES: usize = 128 << 10;
/// Text fields per event.
const TEXTS: usize = 12;

/// Why a record could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// Written by a newer Tollgate (or not a record at all).
    #[error("unknown usage record version {0}")]
    UnknownVersion(u8),
    /// The record ends in the middle of a value.
    #[error("usage record cut short")]
    Truncated,
    /// A text is not UTF-8, or an index points outside the table.
    #[error("usage record malformed: {0}")]
    Malformed(&'static str),
}

/// A record of the spool's encoding, known to decode (read back from the
/// spool and checked, or just encoded), with what the stores need to know of
/// its events without decoding them again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpooledRecord {
    /// The record's bytes (the payload of a spool record).
    pub bytes: Vec<u8>,
    /// Events in it.
    pub events: usize,
    /// The id of its first event.
    pub first_id: Uuid,
    /// The earliest and the latest of its events' times (ms since the epoch).
    pub first_ms: u64,
    /// See `first_ms`.
    pub last_ms: u64,
}

impl SpooledRecord {
    /// Reads `bytes` through, checking that every event decodes, without
    /// building the events. `None` for a record without events.
    pub fn read(bytes: Vec<u8>) -> Result<Option<Self>, DecodeError> {
        let mut seen: Option<Self> = None;
        for_each_event(&bytes, |_, e| match &mut seen {
            None => {
                seen = Some(SpooledRecord {
                    bytes: Vec::new(),
                    events: 1,
                    first_id: e.id,
                    first_ms: e.timestamp_ms,
                    last_ms: e.timestamp_ms,
                })
            }
            Some(r) => {
                r.events += 1;
                r.first_ms = r.first_ms.min(e.timestamp_ms);
                r.last_ms = r.last_ms.max(e.timestamp_ms);
            }
        })?;
        Ok(seen.map(|r| SpooledRecord { bytes, ..r }))
    }

    /// The record `bytes`, whose events (decoded already) are `events`.
    /// `None` for a record without events.
    pub fn of_events(bytes: Vec<u8>, events: &[UsageEvent]) -> Option<Self> {
        let first = events.first()?;
        let times = events.iter().map(|e| e.timestamp_ms);
        Some(SpooledRecord {
            bytes,
            events: events.len(),
            first_id: first.id,
            first_ms: times.clone().min().unwrap_or(0),
            last_ms: times.max().unwrap_or(0),
        })
    }
}

/// The events encoded as records of the spool's size (see
/// [`RecordEncoder::is_full`]), in order, each as the shipper reads one back.
pub fn encode_records(events: &[UsageEvent]) -> Vec<SpooledRecord> {
    let mut encoder = RecordEncoder::new();
    let mut records = Vec::new();
    let mut rest = events;
    while !rest.is_empty() {
        let mut n = 0;
        while n < rest.len() && !encoder.is_full() {
            encoder.push(&rest[n]);
            n += 1;
        }
        let mut bytes = Vec::new();
        encoder.finish(&mut bytes);
        records.extend(SpooledRecord::of_events(bytes, &rest[..n]));
        rest = &rest[n..];
    }
    records
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// The most one encoded event takes: 16 id bytes, six varints of up to 10
/// bytes, the flags, twelve text indexes of up to 5.
const MAX_EVENT_BYTES: usize = 16 + 6 * 10 + 1 + TEXTS * 5;

/// One event's encoding, built on the stack.
struct EventBytes {
    buf: [u8; MAX_EVENT_BYTES],
    len: usize,
}

impl Default for EventBytes {
    fn default() -> Self {
        Self {
            buf: [0; MAX_EVENT_BYTES],
            len: 0,
        }
    }
}

impl EventBytes {
    fn put(&mut self, bytes: &[u8]) {
        self.buf[self.len..self.len + bytes.len()].copy_from_slice(bytes);
        self.len += bytes.len();
    }

    fn varint(&mut self, mut v: u64) {
        while v >= 0x80 {
            self.buf[self.len] = (v as u8) | 0x80;
            self.len += 1;
            v >>= 7;
        }
        self.buf[self.len] = v as u8;
        self.len += 1;
    }

    fn bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

/// Encodes events into records. Reused across records to keep its buffers.
#[derive(Debug, Default)]
pub struct RecordEncoder {
    texts: Vec<u8>,
    text_count: u64,
    index: HashMap<Text, u32>,
    /// Per field, the last text seen and its index: consecutive events share
    /// most texts (the same `Arc`), which skips the hash lookup.
    last: [Option<(Text, u32)>; TEXTS],
    events: Vec<u8>,
    event_count: usize,
}

impl RecordEncoder {
    /// An empty encoder.
    pub fn new() -> Self {
        Self::default()
    }

    /// Events in the record being built.
    pub fn len(&self) -> usize {
        self.event_count
    }

    /// No event in the record being built.
    pub fn is_empty(&self) -> bool {
        self.event_count == 0
    }

    /// The record should be closed before another event is added.
    pub fn is_full(&self) -> bool {
        self.event_count >= MAX_EVENTS || self.texts.len() + self.events.len() >= SOFT_MAX_BYTES
    }

    fn text(&mut self, field: usize, value: &Text) -> u32 {
        if let Some((t, i)) = &self.last[field]
            && Arc::ptr_eq(t, value)
        {
            return *i;
        }
        let i = match self.index.get(value) {
            Some(i) => *i,
            None => {
                let i = self.text_count as u32;
                self.text_count += 1;
                put_varint(&mut self.texts, value.len() as u64);
                self.texts.extend_from_slice(value.as_bytes());
                self.index.insert(value.clone(), i);
                i
            }
        };
        self.last[field] = Some((value.clone(), i));
        i
    }

    /// Adds one event to the record being built.
    pub fn push(&mut self, e: &UsageEvent) {
        let fields = [
            &e.node,
            &e.api_id,
            &e.api_slug,
            &e.route,
            &e.method,
            &e.app_id,
            &e.key_prefix,
            &e.developer_id,
            &e.plan_id,
            &e.subscription_id,
            &e.client_ip,
            &e.error_code,
        ];
        let mut idx = [0u32; TEXTS];
        for (f, value) in fields.into_iter().enumerate() {
            idx[f] = self.text(f, value);
        }
        // Built on the stack and appended at once: one capacity check per
        // event instead of one per byte.
        let mut out = EventBytes::default();
        out.put(e.id.as_bytes());
        out.varint(e.timestamp_ms);
        out.varint(u64::from(e.status));
        out.varint(u64::from(e.latency_us));
        out.varint(u64::from(e.upstream_latency_us));
        out.varint(e.bytes_in);
        out.varint(e.bytes_out);
        out.put(&[u8::from(e.overage)]);
        for i in idx {
            out.varint(u64::from(i));
        }
        self.events.extend_from_slice(out.bytes());
        self.event_count += 1;
    }

    /// Writes the record built so far into `out` (cleared first) and starts a
    /// new one.
    pub fn finish(&mut self, out: &mut Vec<u8>) {
        out.clear();
        out.reserve(self.texts.len() + self.events.len() + 12);
        out.push(VERSION);
        put_varint(out, self.text_count);
        out.extend_from_slice(&self.texts);
        put_varint(out, self.event_count as u64);
        out.extend_from_slice(&self.events);
        self.texts.clear();
        self.text_count = 0;
        self.index.clear();
        self.last = Default::default();
        self.events.clear();
        self.event_count = 0;
    }
}

struct Reader<'a> {
    data: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn bytes(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        let end = self.at.checked_add(n).ok_or(DecodeError::Truncated)?;
        let b = self.data.get(self.at..end).ok_or(DecodeError::Truncated)?;
        self.at = end;
        Ok(b)
    }

    /// Most values of an event (its text indexes, small numbers) take one
    /// byte: read those without the loop.
    #[inline]
    fn varint(&mut self) -> Result<u64, DecodeError> {
        match self.data.get(self.at) {
            Some(&b) if b < 0x80 => {
                self.at += 1;
                Ok(u64::from(b))
            }
            _ => self.long_varint(),
        }
    }

    fn long_varint(&mut self) -> Result<u64, DecodeError> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = *self.data.get(self.at).ok_or(DecodeError::Truncated)?;
            self.at += 1;
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(DecodeError::Malformed("varint longer than 64 bits"))
    }

    #[inline]
    fn small<T: TryFrom<u64>>(&mut self, what: &'static str) -> Result<T, DecodeError> {
        T::try_from(self.varint()?).map_err(|_| DecodeError::Malformed(what))
    }
}

/// Decodes one record into `out`, appending its events; on an error `out` is
/// left as it was.
pub fn decode(record: &[u8], out: &mut Vec<UsageEvent>) -> Result<(), DecodeError> {
    let start = out.len();
    let result = decode_into(record, out);
    if result.is_err() {
        out.truncate(start);
    }
    result
}

fn decode_into(record: &[u8], out: &mut Vec<UsageEvent>) -> Result<(), DecodeError> {
    for_each_event(record, |texts, f| out.push(f.event(texts))).map(drop)
}

/// Index of each text field in [`EventFields::texts`].
pub mod field {
    /// Node.
    pub const NODE: usize = 0;
    /// API id.
    pub const API_ID: usize = 1;
    /// API slug.
    pub const API_SLUG: usize = 2;
    /// Route.
    pub const ROUTE: usize = 3;
    /// Method.
    pub const METHOD: usize = 4;
    /// App id.
    pub const APP_ID: usize = 5;
    /// Key prefix.
    pub const KEY_PREFIX: usize = 6;
    /// Developer id.
    pub const DEVELOPER_ID: usize = 7;
    /// Plan id.
    pub const PLAN_ID: usize = 8;
    /// Subscription id.
    pub const SUBSCRIPTION_ID: usize = 9;
    /// Client IP.
    pub const CLIENT_IP: usize = 10;
    /// Error code.
    pub const ERROR_CODE: usize = 11;
}

/// One event of a record as encoded: its numbers, and its texts as indexes
/// into the record's table of texts (checked to be in it), in the order of
/// [`field`].
#[derive(Debug, Clone, Copy)]
pub struct EventFields {
    /// Event id.
    pub id: Uuid,
    /// When the call arrived, ms since the epoch.
    pub timestamp_ms: u64,
    /// Status sent.
    pub status: u16,
    /// Latency, µs.
    pub latency_us: u32,
    /// Upstream latency, µs.
    pub upstream_latency_us: u32,
    /// Request body bytes.
    pub bytes_in: u64,
    /// Response body bytes.
    pub bytes_out: u64,
    /// Beyond a soft quota.
    pub overage: bool,
    /// Indexes into the record's texts.
    pub texts: [u32; TEXTS],
}

impl EventFields {
    /// The event, its texts taken from `texts` (its record's table).
    pub fn event(&self, texts: &[Text]) -> UsageEvent {
        let [
            node,
            api_id,
            api_slug,
            route,
            method,
            app_id,
            key_prefix,
            developer_id,
            plan_id,
            subscription_id,
            client_ip,
            error_code,
        ] = self.texts.map(|i| texts[i as usize].clone());
        UsageEvent {
            id: self.id,
            timestamp_ms: self.timestamp_ms,
            node,
            api_id,
            api_slug,
            route,
            method,
            status: self.status,
            latency_us: self.latency_us,
            upstream_latency_us: self.upstream_latency_us,
            bytes_in: self.bytes_in,
            bytes_out: self.bytes_out,
            app_id,
            key_prefix,
            developer_id,
            plan_id,
            subscription_id,
            client_ip,
            error_code,
            overage: self.overage,
        }
    }
}

/// Reads a record event by event without building [`UsageEvent`]s: `each`
/// gets the record's texts and each event's fields, for readers that need a
/// few fields of many events (the embedded store's rollup fold). Returns the
/// record's texts. On an error `each` may have seen the events before it.
pub fn for_each_event(
    record: &[u8],
    mut each: impl FnMut(&[Text], &EventFields),
) -> Result<Vec<Text>, DecodeError> {
    let mut r = Reader {
        data: record,
        at: 0,
    };
    match r.bytes(1)?[0] {
        VERSION => {}
        v => return Err(DecodeError::UnknownVersion(v)),
    }
    let n_texts: usize = r.small("text count")?;
    // Each text takes at least one byte: a larger count is corruption.
    if n_texts > record.len() {
        return Err(DecodeError::Malformed("text count"));
    }
    let mut texts: Vec<Text> = Vec::with_capacity(n_texts);
    for _ in 0..n_texts {
        let len: usize = r.small("text length")?;
        let s = std::str::from_utf8(r.bytes(len)?)
            .map_err(|_| DecodeError::Malformed("text is not UTF-8"))?;
        texts.push(Arc::from(s));
    }
    let n_events: usize = r.small("event count")?;
    if n_events > record.len() / 16 {
        return Err(DecodeError::Malformed("event count"));
    }
    for _ in 0..n_events {
        let id = Uuid::from_bytes(r.bytes(16)?.try_into().expect("16 bytes"));
        let timestamp_ms = r.varint()?;
        let status = r.small("status")?;
        let latency_us = r.small("latency")?;
        let upstream_latency_us = r.small("upstream latency")?;
        let bytes_in = r.varint()?;
        let bytes_out = r.varint()?;
        let flags = r.bytes(1)?[0];
        let mut idx = [0u32; TEXTS];
        for slot in &mut idx {
            let i: u32 = r.small("text index")?;
            if i as usize >= texts.len() {
                return Err(DecodeError::Malformed("text index"));
            }
            *slot = i;
        }
        each(
            &texts,
            &EventFields {
                id,
                timestamp_ms,
                status,
                latency_us,
                upstream_latency_us,
                bytes_in,
                bytes_out,
                overage: flags & 1 == 1,
                texts: idx,
            },
        );
    }
    if r.at != record.len() {
        return Err(DecodeError::Malformed("bytes after the last event"));
    }
    Ok(texts)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(i: u64) -> UsageEvent {
        let mut e = UsageEvent::new(1_767_225_600_000 + i);
        e.node = "node-1".into();
        e.api_id = "api_1".into();
        e.api_slug = if i.is_multiple_of(2) {
            "weather"
        } else {
            "maps"
        }
        .into();
        e.route = "/weather".into();
        e.method = "GET".into();
        e.status = if i.is_multiple_of(7) { 503 } else { 200 };
        e.latency_us = 1234 + i as u32;
        e.upstream_latency_us = u32::MAX;
        e.bytes_in = i;
        e.bytes_out = u64::MAX;
        e.app_id = format!("app_{}", i % 3).into();
        e.key_prefix = "tg_live_abc".into();
        e.client_ip = "2001:db8::1".into();
        e.error_code = if i.is_multiple_of(7) {
            "upstream_down"
        } else {
            ""
        }
        .into();
        e.overage = i.is_multiple_of(5);
        e
    }

    #[test]
    fn events_round_trip_exactly() {
        let events: Vec<_> = (0..100).map(sample).collect();
        let mut enc = RecordEncoder::new();
        for e in &events {
            enc.push(e);
        }
        assert_eq!(enc.len(), 100);
        let mut record = Vec::new();
        enc.finish(&mut record);
        assert!(enc.is_empty());
        let mut back = Vec::new();
        decode(&record, &mut back).unwrap();
        assert_eq!(back, events);
        // Compact: the repeated texts are stored once.
        assert!(record.len() < 100 * 60, "{} bytes", record.len());
        // The encoder starts afresh after finish.
        enc.push(&events[0]);
        enc.finish(&mut record);
        back.clear();
        decode(&record, &mut back).unwrap();
        assert_eq!(back, events[..1]);
    }

    #[test]
    fn a_record_read_through_says_what_its_decoded_events_say() {
        // Out of time order, as the spool takes events (by completion).
        let events: Vec<_> = [5, 2, 9, 7].map(sample).to_vec();
        let mut enc = RecordEncoder::new();
        for e in &events {
            enc.push(e);
        }
        let mut record = Vec::new();
        enc.finish(&mut record);
        let read = SpooledRecord::read(record.clone()).unwrap().unwrap();
        let mut back = Vec::new();
        decode(&record, &mut back).unwrap();
        assert_eq!(
            Some(&read),
            SpooledRecord::of_events(record.clone(), &back).as_ref()
        );
        assert_eq!(
            (read.events, read.first_id, read.first_ms, read.last_ms),
            (
                4,
                events[0].id,
                events[1].timestamp_ms,
                events[2].timestamp_ms
            )
        );
        for cut in 0..record.len() {
            assert!(
                SpooledRecord::read(record[..cut].to_vec()).is_err(),
                "cut at {cut}"
            );
        }
        RecordEncoder::new().finish(&mut record);
        assert_eq!(SpooledRecord::read(record.clone()), Ok(None));
        assert_eq!(SpooledRecord::of_events(record, &[]), None);
    }

    #[test]
    fn an_empty_record_decodes_to_nothing() {
        let mut record = Vec::new();
        RecordEncoder::new().finish(&mut record);
        let mut back = Vec::new();
        decode(&record, &mut back).unwrap();
        assert!(back.is_empty());
    }

    #[test]
    fn damaged_records_are_refused_not_misread() {
        let mut enc = RecordEncoder::new();
        for i in 0..10 {
            enc.push(&sample(i));
        }
        let mut record = Vec::new();
        enc.finish(&mut record);
        let mut out = Vec::new();
        // Every truncation is an error, never a panic or a shorter list.
        for cut in 0..record.len() {
            assert!(decode(&record[..cut], &mut out).is_err(), "cut at {cut}");
        }
        let mut newer = record.clone();
        newer[0] = 2;
        assert_eq!(
            decode(&newer, &mut out),
            Err(DecodeError::UnknownVersion(2))
        );
        let mut longer = record.clone();
        longer.push(0);
        assert!(decode(&longer, &mut out).is_err());
        assert!(out.is_empty(), "nothing half-decoded is kept");
    }

    #[test]
    fn a_record_closes_before_it_grows_too_large() {
        let mut enc = RecordEncoder::new();
        let mut n = 0;
        while !enc.is_full() {
            let mut e = sample(n);
            // Every text distinct and long: the worst case for the table.
            e.route = format!("/{}", "r".repeat(200) + &n.to_string()).into();
            enc.push(&e);
            n += 1;
        }
        let mut record = Vec::new();
        enc.finish(&mut record);
        assert!(record.len() < 1 << 20);
    }
}
