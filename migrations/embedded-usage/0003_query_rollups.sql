-- Rollups shaped for the dashboard queries, the same as ClickHouse's
-- (analytics/src/rollup.rs): by API, route and status class per minute, hour
-- and day; by app, developer, plan, subscription and status class per day; by
-- app, developer, plan, subscription, API and status class per hour and day. t is the bucket's start in milliseconds; latency is a JSON object of
-- calls per latency bucket (analytics/src/latency.rs). The store's insert keeps
-- them in the transaction that writes the events.
CREATE TABLE usage_api_minute (
    t INTEGER NOT NULL, api_slug TEXT NOT NULL, route TEXT NOT NULL, status_class INTEGER NOT NULL,
    calls INTEGER NOT NULL, errors INTEGER NOT NULL, client_errors INTEGER NOT NULL,
    bytes_in INTEGER NOT NULL, bytes_out INTEGER NOT NULL, overage_calls INTEGER NOT NULL,
    latency TEXT NOT NULL,
    PRIMARY KEY (t, api_slug, route, status_class)
) WITHOUT ROWID;
CREATE TABLE usage_api_hour (
    t INTEGER NOT NULL, api_slug TEXT NOT NULL, route TEXT NOT NULL, status_class INTEGER NOT NULL,
    calls INTEGER NOT NULL, errors INTEGER NOT NULL, client_errors INTEGER NOT NULL,
    bytes_in INTEGER NOT NULL, bytes_out INTEGER NOT NULL, overage_calls INTEGER NOT NULL,
    latency TEXT NOT NULL,
    PRIMARY KEY (t, api_slug, route, status_class)
) WITHOUT ROWID;
CREATE TABLE usage_api_day (
    t INTEGER NOT NULL, api_slug TEXT NOT NULL, route TEXT NOT NULL, status_class INTEGER NOT NULL,
    calls INTEGER NOT NULL, errors INTEGER NOT NULL, client_errors INTEGER NOT NULL,
    bytes_in INTEGER NOT NULL, bytes_out INTEGER NOT NULL, overage_calls INTEGER NOT NULL,
    latency TEXT NOT NULL,
    PRIMARY KEY (t, api_slug, route, status_class)
) WITHOUT ROWID;
CREATE TABLE usage_app_day (
    t INTEGER NOT NULL, app_id TEXT NOT NULL, developer_id TEXT NOT NULL, plan_id TEXT NOT NULL,
    subscription_id TEXT NOT NULL, status_class INTEGER NOT NULL,
    calls INTEGER NOT NULL, errors INTEGER NOT NULL, client_errors INTEGER NOT NULL,
    bytes_in INTEGER NOT NULL, bytes_out INTEGER NOT NULL, overage_calls INTEGER NOT NULL,
    latency TEXT NOT NULL,
    PRIMARY KEY (t, app_id, developer_id, plan_id, subscription_id, status_class)
) WITHOUT ROWID;
CREATE TABLE usage_customer_hour (
    t INTEGER NOT NULL, app_id TEXT NOT NULL, developer_id TEXT NOT NULL, plan_id TEXT NOT NULL,
    subscription_id TEXT NOT NULL, api_slug TEXT NOT NULL, status_class INTEGER NOT NULL,
    calls INTEGER NOT NULL, errors INTEGER NOT NULL, client_errors INTEGER NOT NULL,
    bytes_in INTEGER NOT NULL, bytes_out INTEGER NOT NULL, overage_calls INTEGER NOT NULL,
    latency TEXT NOT NULL,
    PRIMARY KEY (t, app_id, developer_id, plan_id, subscription_id, api_slug, status_class)
) WITHOUT ROWID;
CREATE TABLE usage_customer_day (
    t INTEGER NOT NULL, app_id TEXT NOT NULL, developer_id TEXT NOT NULL, plan_id TEXT NOT NULL,
    subscription_id TEXT NOT NULL, api_slug TEXT NOT NULL, status_class INTEGER NOT NULL,
    calls INTEGER NOT NULL, errors INTEGER NOT NULL, client_errors INTEGER NOT NULL,
    bytes_in INTEGER NOT NULL, bytes_out INTEGER NOT NULL, overage_calls INTEGER NOT NULL,
    latency TEXT NOT NULL,
    PRIMARY KEY (t, app_id, developer_id, plan_id, subscription_id, api_slug, status_class)
) WITHOUT ROWID;
-- The events already stored are rolled up once by the store's migrate step,
-- which then empties this table.
CREATE TABLE usage_rollup_backfill (pending INTEGER NOT NULL);
INSERT INTO usage_rollup_backfill (pending) VALUES (1);
