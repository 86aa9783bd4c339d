-- Raw usage events, one row per call the gateway answered.
-- Works on ClickHouse 18.16 and current releases: milliseconds in a UInt64
-- (no DateTime64 on 18.16), a second-precision DateTime for partitioning,
-- monthly partitions (retention drops whole partitions), sorted for per-API
-- time-range scans.
CREATE TABLE IF NOT EXISTS usage_events (
    event_id            UUID,
    event_time          DateTime('UTC'),
    timestamp_ms        UInt64,
    node                String,
    api_id              String,
    api_slug            String,
    route               String,
    method              String,
    status              UInt16,
    latency_us          UInt32,
    upstream_latency_us UInt32,
    bytes_in            UInt64,
    bytes_out           UInt64,
    app_id              String,
    key_prefix          String,
    developer_id        String,
    plan_id             String,
    subscription_id     String,
    client_ip           String,
    error_code          String
) ENGINE = MergeTree
PARTITION BY toYYYYMM(event_time)
ORDER BY (api_slug, event_time, event_id)
