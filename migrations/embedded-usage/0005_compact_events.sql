-- The raw events in a compact form. The texts that repeat from call to call
-- are kept once: node, API, route and method per route in usage_routes; app,
-- key, developer, plan and subscription per customer in usage_customers. An
-- event row holds the numbers of its route and customer, its own numbers, its
-- client address and error code, and its id as the UUID's 16 bytes. Event rows
-- are keyed by (timestamp_ms, id), so the table is in time order (new events
-- are appended at its end, and time-range scans read it directly), with one
-- index by customer and time, which serves filters by app, key, plan… through
-- usage_customers. A batch writes two B-trees instead of four, with small
-- rows. A replayed event has the same time and id, so INSERT OR IGNORE still
-- stores each event once. The view usage_events shows the events with every
-- column, as before.
--
-- Routes and customers are never deleted (retention deletes event rows only):
-- a running gateway keeps their numbers in memory.
CREATE TABLE usage_routes (
    route_ref INTEGER PRIMARY KEY,
    node      TEXT NOT NULL,
    api_id    TEXT NOT NULL,
    api_slug  TEXT NOT NULL,
    route     TEXT NOT NULL,
    method    TEXT NOT NULL,
    UNIQUE (node, api_id, api_slug, route, method)
);
CREATE INDEX usage_routes_api ON usage_routes (api_slug);
CREATE TABLE usage_customers (
    customer_ref    INTEGER PRIMARY KEY,
    app_id          TEXT NOT NULL,
    key_prefix      TEXT NOT NULL,
    developer_id    TEXT NOT NULL,
    plan_id         TEXT NOT NULL,
    subscription_id TEXT NOT NULL,
    UNIQUE (app_id, key_prefix, developer_id, plan_id, subscription_id)
);
CREATE TABLE usage_event_rows (
    timestamp_ms        INTEGER NOT NULL,
    id                  BLOB NOT NULL,
    route_ref           INTEGER NOT NULL,
    customer_ref        INTEGER NOT NULL,
    status              INTEGER NOT NULL,
    latency_us          INTEGER NOT NULL,
    upstream_latency_us INTEGER NOT NULL,
    bytes_in            INTEGER NOT NULL,
    bytes_out           INTEGER NOT NULL,
    client_ip           TEXT NOT NULL,
    error_code          TEXT NOT NULL,
    overage             INTEGER NOT NULL,
    PRIMARY KEY (timestamp_ms, id)
) WITHOUT ROWID;
CREATE INDEX usage_event_rows_customer_time ON usage_event_rows (customer_ref, timestamp_ms);

INSERT OR IGNORE INTO usage_routes (node, api_id, api_slug, route, method)
SELECT DISTINCT node, api_id, api_slug, route, method FROM usage_events;
INSERT OR IGNORE INTO usage_customers (app_id, key_prefix, developer_id, plan_id, subscription_id)
SELECT DISTINCT app_id, key_prefix, developer_id, plan_id, subscription_id FROM usage_events;
INSERT INTO usage_event_rows
SELECT e.timestamp_ms, unhex(replace(e.id, '-', '')), r.route_ref, c.customer_ref, e.status,
       e.latency_us, e.upstream_latency_us, e.bytes_in, e.bytes_out, e.client_ip, e.error_code,
       e.overage
FROM usage_events e
JOIN usage_routes r
  ON r.node = e.node AND r.api_id = e.api_id AND r.api_slug = e.api_slug AND r.route = e.route
 AND r.method = e.method
JOIN usage_customers c
  ON c.app_id = e.app_id AND c.key_prefix = e.key_prefix AND c.developer_id = e.developer_id
 AND c.plan_id = e.plan_id AND c.subscription_id = e.subscription_id;
DROP TABLE usage_events;

CREATE VIEW usage_events AS
SELECT e.timestamp_ms, e.id, r.node, r.api_id, r.api_slug, r.route, r.method, e.status,
       e.latency_us, e.upstream_latency_us, e.bytes_in, e.bytes_out, c.app_id, c.key_prefix,
       c.developer_id, c.plan_id, c.subscription_id, e.client_ip, e.error_code, e.overage
FROM usage_event_rows e
JOIN usage_routes r ON r.route_ref = e.route_ref
JOIN usage_customers c ON c.customer_ref = e.customer_ref;
