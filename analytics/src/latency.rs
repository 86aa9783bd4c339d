//! Latency as a log-scale histogram with fixed buckets, so that percentiles
//! merge exactly across rollup rows and both stores give the same answer.
//!
//! Bucket of a latency `v` in microseconds: `v` itself below 32 (exact); above,
//! each power of two `[2^e, 2^(e+1))` is cut into 32 equal sub-buckets, indexed
//! `(e - 4) * 32 + (the 5 bits after v's leading one)`. So 896 buckets cover all
//! of `u32`, and a bucket is at most 1/32 of its lower bound wide. A percentile
//! is the nearest-rank bucket's midpoint: within 1/64 (1.6%) of the exact
//! nearest-rank value, because the bucket counts themselves are exact.
//!
//! ClickHouse computes the same bucket in SQL ([`BUCKET_SQL`], also written out
//! in the materialized views of `migrations/clickhouse/0005_query_rollups.sql`).

use std::collections::BTreeMap;

/// Sub-buckets per power of two, as a number of bits.
const SUB_BITS: u32 = 5;
/// Sub-buckets per power of two.
const SUB: u32 = 1 << SUB_BITS;

/// The bucket of `latency_us` in ClickHouse SQL, over a `UInt32` column named
/// `latency_us` (fixed text; `log2` is exact enough for the integer part of the
/// logarithm of any `u32`, which a test checks at every power of two).
pub(crate) const BUCKET_SQL: &str = "toUInt16(if(latency_us < 32, latency_us, \
     (toUInt32(log2(latency_us)) - 4) * 32 + bitAnd(bitShiftRight(latency_us, toUInt32(log2(latency_us)) - 5), 31)))";

/// The histogram bucket of a latency in microseconds.
pub fn bucket(latency_us: u32) -> u16 {
    if latency_us < SUB {
        return latency_us as u16;
    }
    let e = 31 - latency_us.leading_zeros();
    ((e - (SUB_BITS - 1)) * SUB + ((latency_us >> (e - SUB_BITS)) & (SUB - 1))) as u16
}

/// The lowest latency (µs) of a bucket and the bucket's width.
fn bounds(bucket: u16) -> (u64, u64) {
    let b = u32::from(bucket);
    if b < 2 * SUB {
        return (u64::from(b), 1);
    }
    let e = b / SUB + (SUB_BITS - 1);
    let width = 1u64 << (e - SUB_BITS);
    (u64::from(SUB + b % SUB) * width, width)
}

/// The latency (µs) a bucket stands for: the midpoint of the values it holds.
pub fn representative_us(bucket: u16) -> f64 {
    let (low, width) = bounds(bucket);
    low as f64 + (width - 1) as f64 / 2.0
}

/// Calls per latency bucket.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LatencyHistogram(BTreeMap<u16, u64>);

impl LatencyHistogram {
    /// Counts one call.
    pub fn record(&mut self, latency_us: u32) {
        self.add(bucket(latency_us), 1);
    }

    /// Adds `calls` to a bucket.
    pub fn add(&mut self, bucket: u16, calls: u64) {
        if calls > 0 {
            *self.0.entry(bucket).or_default() += calls;
        }
    }

    /// Adds every bucket of `other`.
    pub fn merge(&mut self, other: &Self) {
        for (&b, &n) in &other.0 {
            self.add(b, n);
        }
    }

    /// Calls counted.
    pub fn calls(&self) -> u64 {
        self.0.values().sum()
    }

    /// Nearest-rank percentiles (`p` in percent) in milliseconds: the bucket
    /// holding the smallest rank `r` with `r * 100 >= n * p`; 0 when empty.
    pub fn percentiles_ms<const N: usize>(&self, ps: [u64; N]) -> [f64; N] {
        let n = self.calls();
        ps.map(|p| {
            if n == 0 {
                return 0.0;
            }
            let rank = (n * p).div_ceil(100).max(1);
            let mut seen = 0;
            for (&b, &calls) in &self.0 {
                seen += calls;
                if seen >= rank {
                    return representative_us(b) / 1000.0;
                }
            }
            0.0
        })
    }

    /// The form the embedded store keeps: a JSON object of calls by bucket,
    /// `{"5":3,"64":1}`, which SQLite's JSON functions merge in an upsert.
    pub(crate) fn to_json(&self) -> String {
        let mut out = String::with_capacity(2 + self.0.len() * 10);
        out.push('{');
        for (i, (b, n)) in self.0.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push('"');
            out.push_str(&b.to_string());
            out.push_str("\":");
            out.push_str(&n.to_string());
        }
        out.push('}');
        out
    }

    /// Adds the buckets of a [`LatencyHistogram::to_json`] form.
    pub(crate) fn merge_json(&mut self, json: &str) -> Result<(), serde_json::Error> {
        let buckets: std::collections::HashMap<&str, u64> = serde_json::from_str(json)?;
        for (b, n) in buckets {
            let b = b.parse::<u16>().map_err(serde::de::Error::custom)?;
            self.add(b, n);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_ordered_and_tight() {
        let mut edges: Vec<u32> = (0..70).collect();
        for e in 5..32 {
            let p = 1u32 << e;
            edges.extend([p - 1, p, p + 1, p + p / 2]);
        }
        edges.push(u32::MAX);
        edges.sort_unstable();
        let mut last = 0;
        for v in edges {
            let b = bucket(v);
            assert!(b >= last, "{v}: bucket {b} below {last}");
            last = b;
            let (low, width) = bounds(b);
            assert!(
                low <= u64::from(v) && u64::from(v) < low + width,
                "{v} not in bucket {b} = [{low}, {})",
                low + width
            );
            let error = (representative_us(b) - f64::from(v)).abs();
            assert!(error <= f64::from(v) / 64.0, "{v}: off by {error}");
        }
        assert_eq!(bucket(u32::MAX), 895);
        assert_eq!(bucket(31), 31);
        assert_eq!(bucket(64), 64);
        assert_eq!(bucket(65), 64);
        assert_eq!(bucket(1024), 192);
    }

    #[test]
    fn percentiles_are_nearest_rank_buckets() {
        let mut h = LatencyHistogram::default();
        for v in 1..=100 {
            h.record(v * 1000);
        }
        let [p50, p95, p99] = h.percentiles_ms([50, 95, 99]);
        for (got, exact) in [(p50, 50.0), (p95, 95.0), (p99, 99.0)] {
            assert!((got - exact).abs() <= exact / 64.0, "{got} vs {exact}");
        }
        assert_eq!(LatencyHistogram::default().percentiles_ms([50]), [0.0]);

        let mut merged = LatencyHistogram::default();
        merged.merge_json(&h.to_json()).unwrap();
        merged.merge_json(&h.to_json()).unwrap();
        assert!(merged.merge_json("{\"x\":1}").is_err());
        assert_eq!(merged.calls(), 200);
        assert_eq!(merged.percentiles_ms([50, 95, 99]), [p50, p95, p99]);
    }
}
