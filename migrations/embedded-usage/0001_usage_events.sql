-- Embedded usage store (SQLite, usage.db in the data dir): the same events as
-- ClickHouse's usage_events, for single-node use. Inserts are idempotent by id.
CREATE TABLE usage_events (
    id                  TEXT PRIMARY KEY,
    timestamp_ms        INTEGER NOT NULL,
    node                TEXT NOT NULL,
    api_id              TEXT NOT NULL,
    api_slug            TEXT NOT NULL,
    route               TEXT NOT NULL,
    method              TEXT NOT NULL,
    status              INTEGER NOT NULL,
    latency_us          INTEGER NOT NULL,
    upstream_latency_us INTEGER NOT NULL,
    bytes_in            INTEGER NOT NULL,
    bytes_out           INTEGER NOT NULL,
    app_id              TEXT NOT NULL,
    key_prefix          TEXT NOT NULL,
    developer_id        TEXT NOT NULL,
    plan_id             TEXT NOT NULL,
    subscription_id     TEXT NOT NULL,
    client_ip           TEXT NOT NULL,
    error_code          TEXT NOT NULL
) WITHOUT ROWID;
CREATE INDEX usage_events_time ON usage_events (timestamp_ms);
CREATE INDEX usage_events_api_time ON usage_events (api_slug, timestamp_ms);
CREATE INDEX usage_events_app_time ON usage_events (app_id, timestamp_ms);
