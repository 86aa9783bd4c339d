-- The raw events in a compact form. The texts that repeat from call to call
-- (node, API, route, method, app, key, developer, plan, subscription) are kept
-- once per distinct combination in usage_callers; an event row holds that
-- caller's number, its own numbers, its client address and error code, and
-- its id as the UUID's 16 bytes. Event rows are keyed by (timestamp_ms, id),
-- so the table is in time order (new events are appended at its end, and
-- time-range scans read it directly), with one index by caller and time,
-- which serves filters by API, app, key, plan… through usage_callers. A batch
-- writes two B-trees instead of four, with far smaller rows. A replayed event
-- has the same time and id, so INSERT OR IGNORE still stores each event once.
-- The view usage_events shows the events with every column, as before.
--
-- Callers are never deleted (retention deletes event rows only): a running
-- gateway keeps their numbers in memory.
CREATE TABLE usage_callers (
    caller_id       INTEGER PRIMARY KEY,
    node            TEXT NOT NULL,
    api_id          TEXT NOT NULL,
    api_slug        TEXT NOT NULL,
    route           TEXT NOT NULL,
    method          TEXT NOT NULL,
    app_id          TEXT NOT NULL,
    key_prefix      TEXT NOT NULL,
    developer_id    TEXT NOT NULL,
    plan_id         TEXT NOT NULL,
    subscription_id TEXT NOT NULL,
    UNIQUE (node, api_id, api_slug, route, method, app_id, key_prefix, developer_id, plan_id, subscription_id)
);
CREATE INDEX usage_callers_api ON usage_callers (api_slug);
CREATE INDEX usage_callers_app ON usage_callers (app_id);
CREATE TABLE usage_event_rows (
    timestamp_ms        INTEGER NOT NULL,
    id                  BLOB NOT NULL,
    caller_id           INTEGER NOT NULL,
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
CREATE INDEX usage_event_rows_caller_time ON usage_event_rows (caller_id, timestamp_ms);

INSERT OR IGNORE INTO usage_callers (node, api_id, api_slug, route, method, app_id, key_prefix,
                                     developer_id, plan_id, subscription_id)
SELECT DISTINCT node, api_id, api_slug, route, method, app_id, key_prefix, developer_id, plan_id,
       subscription_id
FROM usage_events;
INSERT INTO usage_event_rows
SELECT e.timestamp_ms, unhex(replace(e.id, '-', '')), c.caller_id, e.status, e.latency_us,
       e.upstream_latency_us, e.bytes_in, e.bytes_out, e.client_ip, e.error_code, e.overage
FROM usage_events e
JOIN usage_callers c
  ON c.node = e.node AND c.api_id = e.api_id AND c.api_slug = e.api_slug AND c.route = e.route
 AND c.method = e.method AND c.app_id = e.app_id AND c.key_prefix = e.key_prefix
 AND c.developer_id = e.developer_id AND c.plan_id = e.plan_id
 AND c.subscription_id = e.subscription_id;
DROP TABLE usage_events;

CREATE VIEW usage_events AS
SELECT r.timestamp_ms, r.id, c.node, c.api_id, c.api_slug, c.route, c.method, r.status,
       r.latency_us, r.upstream_latency_us, r.bytes_in, r.bytes_out, c.app_id, c.key_prefix,
       c.developer_id, c.plan_id, c.subscription_id, r.client_ip, r.error_code, r.overage
FROM usage_event_rows r JOIN usage_callers c ON c.caller_id = r.caller_id;
