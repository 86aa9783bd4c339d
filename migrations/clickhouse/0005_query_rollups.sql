-- Rollups shaped for the dashboard queries (replacing usage_minute and
-- usage_hour, whose key held every dimension at once and so had nearly one row
-- per event):
--
-- - usage_api_minute / _hour / _day: by API, route and status class;
-- - usage_app_day: by app, developer, plan, subscription and status class (no
--   API, no route): customer rankings over days;
-- - usage_customer_hour / _day: by app, developer, plan, subscription, API and
--   status class (no route).
--
-- Each row: calls, errors (status >= 500), client errors (4xx), bytes in and
-- out, overage calls, and latencyMap, a histogram of latency in fixed log-scale
-- buckets (bucket of v µs: v below 32, else (floor(log2 v) - 4) * 32 + the 5
-- bits after v's leading one; analytics/src/latency.rs computes the same in
-- Rust). SummingMergeTree adds the counts and the latencyMap buckets when parts
-- merge; queries still sum() and sumMap() over rows, so they are exact before
-- any merge. Works on ClickHouse 18.16 and current releases.
--
-- The rollups are filled once from the events already in usage_events, then the
-- views start: upgrade an existing store with the gateways stopped so no insert
-- falls between the two. The old rollups are dropped; history they held beyond
-- the raw events' retention is not carried over.

CREATE TABLE IF NOT EXISTS usage_api_minute (
    t               DateTime('UTC'),
    api_slug        String,
    route           String,
    status_class    UInt8,
    calls           UInt64,
    errors          UInt64,
    client_errors   UInt64,
    bytes_in        UInt64,
    bytes_out       UInt64,
    overage_calls   UInt64,
    latencyMap      Nested(bucket UInt16, calls UInt64)
) ENGINE = SummingMergeTree
PARTITION BY toYYYYMM(t)
ORDER BY (api_slug, t, route, status_class);

CREATE TABLE IF NOT EXISTS usage_api_hour (
    t               DateTime('UTC'),
    api_slug        String,
    route           String,
    status_class    UInt8,
    calls           UInt64,
    errors          UInt64,
    client_errors   UInt64,
    bytes_in        UInt64,
    bytes_out       UInt64,
    overage_calls   UInt64,
    latencyMap      Nested(bucket UInt16, calls UInt64)
) ENGINE = SummingMergeTree
PARTITION BY toYYYYMM(t)
ORDER BY (api_slug, t, route, status_class);

CREATE TABLE IF NOT EXISTS usage_api_day (
    t               DateTime('UTC'),
    api_slug        String,
    route           String,
    status_class    UInt8,
    calls           UInt64,
    errors          UInt64,
    client_errors   UInt64,
    bytes_in        UInt64,
    bytes_out       UInt64,
    overage_calls   UInt64,
    latencyMap      Nested(bucket UInt16, calls UInt64)
) ENGINE = SummingMergeTree
PARTITION BY toYYYYMM(t)
ORDER BY (api_slug, t, route, status_class);

CREATE TABLE IF NOT EXISTS usage_app_day (
    t               DateTime('UTC'),
    app_id          String,
    developer_id    String,
    plan_id         String,
    subscription_id String,
    status_class    UInt8,
    calls           UInt64,
    errors          UInt64,
    client_errors   UInt64,
    bytes_in        UInt64,
    bytes_out       UInt64,
    overage_calls   UInt64,
    latencyMap      Nested(bucket UInt16, calls UInt64)
) ENGINE = SummingMergeTree
PARTITION BY toYYYYMM(t)
ORDER BY (app_id, t, developer_id, plan_id, subscription_id, status_class);

CREATE TABLE IF NOT EXISTS usage_customer_hour (
    t               DateTime('UTC'),
    app_id          String,
    developer_id    String,
    plan_id         String,
    subscription_id String,
    api_slug        String,
    status_class    UInt8,
    calls           UInt64,
    errors          UInt64,
    client_errors   UInt64,
    bytes_in        UInt64,
    bytes_out       UInt64,
    overage_calls   UInt64,
    latencyMap      Nested(bucket UInt16, calls UInt64)
) ENGINE = SummingMergeTree
PARTITION BY toYYYYMM(t)
ORDER BY (app_id, t, developer_id, plan_id, subscription_id, api_slug, status_class);

CREATE TABLE IF NOT EXISTS usage_customer_day (
    t               DateTime('UTC'),
    app_id          String,
    developer_id    String,
    plan_id         String,
    subscription_id String,
    api_slug        String,
    status_class    UInt8,
    calls           UInt64,
    errors          UInt64,
    client_errors   UInt64,
    bytes_in        UInt64,
    bytes_out       UInt64,
    overage_calls   UInt64,
    latencyMap      Nested(bucket UInt16, calls UInt64)
) ENGINE = SummingMergeTree
PARTITION BY toYYYYMM(t)
ORDER BY (app_id, t, developer_id, plan_id, subscription_id, api_slug, status_class);

INSERT INTO usage_api_minute (t, api_slug, route, status_class, calls, errors, client_errors, bytes_in, bytes_out, overage_calls, `latencyMap.bucket`, `latencyMap.calls`)
SELECT toStartOfMinute(event_time) AS t, api_slug, route, toUInt8(intDiv(status, 100)) AS status_class,
       count() AS calls,
       countIf(status >= 500) AS errors,
       countIf(status >= 400 AND status < 500) AS client_errors,
       sum(bytes_in) AS bytes_in,
       sum(bytes_out) AS bytes_out,
       sum(toUInt64(overage)) AS overage_calls,
       tupleElement(sumMap([toUInt16(if(latency_us < 32, latency_us, (toUInt32(log2(latency_us)) - 4) * 32 + bitAnd(bitShiftRight(latency_us, toUInt32(log2(latency_us)) - 5), 31)))], [toUInt64(1)]), 1) AS `latencyMap.bucket`,
       tupleElement(sumMap([toUInt16(if(latency_us < 32, latency_us, (toUInt32(log2(latency_us)) - 4) * 32 + bitAnd(bitShiftRight(latency_us, toUInt32(log2(latency_us)) - 5), 31)))], [toUInt64(1)]), 2) AS `latencyMap.calls`
FROM usage_events
GROUP BY t, api_slug, route, status_class;

INSERT INTO usage_api_hour (t, api_slug, route, status_class, calls, errors, client_errors, bytes_in, bytes_out, overage_calls, `latencyMap.bucket`, `latencyMap.calls`)
SELECT toStartOfHour(event_time) AS t, api_slug, route, toUInt8(intDiv(status, 100)) AS status_class,
       count() AS calls,
       countIf(status >= 500) AS errors,
       countIf(status >= 400 AND status < 500) AS client_errors,
       sum(bytes_in) AS bytes_in,
       sum(bytes_out) AS bytes_out,
       sum(toUInt64(overage)) AS overage_calls,
       tupleElement(sumMap([toUInt16(if(latency_us < 32, latency_us, (toUInt32(log2(latency_us)) - 4) * 32 + bitAnd(bitShiftRight(latency_us, toUInt32(log2(latency_us)) - 5), 31)))], [toUInt64(1)]), 1) AS `latencyMap.bucket`,
       tupleElement(sumMap([toUInt16(if(latency_us < 32, latency_us, (toUInt32(log2(latency_us)) - 4) * 32 + bitAnd(bitShiftRight(latency_us, toUInt32(log2(latency_us)) - 5), 31)))], [toUInt64(1)]), 2) AS `latencyMap.calls`
FROM usage_events
GROUP BY t, api_slug, route, status_class;

INSERT INTO usage_api_day (t, api_slug, route, status_class, calls, errors, client_errors, bytes_in, bytes_out, overage_calls, `latencyMap.bucket`, `latencyMap.calls`)
SELECT toStartOfDay(event_time) AS t, api_slug, route, toUInt8(intDiv(status, 100)) AS status_class,
       count() AS calls,
       countIf(status >= 500) AS errors,
       countIf(status >= 400 AND status < 500) AS client_errors,
       sum(bytes_in) AS bytes_in,
       sum(bytes_out) AS bytes_out,
       sum(toUInt64(overage)) AS overage_calls,
       tupleElement(sumMap([toUInt16(if(latency_us < 32, latency_us, (toUInt32(log2(latency_us)) - 4) * 32 + bitAnd(bitShiftRight(latency_us, toUInt32(log2(latency_us)) - 5), 31)))], [toUInt64(1)]), 1) AS `latencyMap.bucket`,
       tupleElement(sumMap([toUInt16(if(latency_us < 32, latency_us, (toUInt32(log2(latency_us)) - 4) * 32 + bitAnd(bitShiftRight(latency_us, toUInt32(log2(latency_us)) - 5), 31)))], [toUInt64(1)]), 2) AS `latencyMap.calls`
FROM usage_events
GROUP BY t, api_slug, route, status_class;

INSERT INTO usage_app_day (t, app_id, developer_id, plan_id, subscription_id, status_class, calls, errors, client_errors, bytes_in, bytes_out, overage_calls, `latencyMap.bucket`, `latencyMap.calls`)
SELECT toStartOfDay(event_time) AS t, app_id, developer_id, plan_id, subscription_id, toUInt8(intDiv(status, 100)) AS status_class,
       count() AS calls,
       countIf(status >= 500) AS errors,
       countIf(status >= 400 AND status < 500) AS client_errors,
       sum(bytes_in) AS bytes_in,
       sum(bytes_out) AS bytes_out,
       sum(toUInt64(overage)) AS overage_calls,
       tupleElement(sumMap([toUInt16(if(latency_us < 32, latency_us, (toUInt32(log2(latency_us)) - 4) * 32 + bitAnd(bitShiftRight(latency_us, toUInt32(log2(latency_us)) - 5), 31)))], [toUInt64(1)]), 1) AS `latencyMap.bucket`,
       tupleElement(sumMap([toUInt16(if(latency_us < 32, latency_us, (toUInt32(log2(latency_us)) - 4) * 32 + bitAnd(bitShiftRight(latency_us, toUInt32(log2(latency_us)) - 5), 31)))], [toUInt64(1)]), 2) AS `latencyMap.calls`
FROM usage_events
GROUP BY t, app_id, developer_id, plan_id, subscription_id, status_class;

INSERT INTO usage_customer_hour (t, app_id, developer_id, plan_id, subscription_id, api_slug, status_class, calls, errors, client_errors, bytes_in, bytes_out, overage_calls, `latencyMap.bucket`, `latencyMap.calls`)
SELECT toStartOfHour(event_time) AS t, app_id, developer_id, plan_id, subscription_id, api_slug, toUInt8(intDiv(status, 100)) AS status_class,
       count() AS calls,
       countIf(status >= 500) AS errors,
       countIf(status >= 400 AND status < 500) AS client_errors,
       sum(bytes_in) AS bytes_in,
       sum(bytes_out) AS bytes_out,
       sum(toUInt64(overage)) AS overage_calls,
       tupleElement(sumMap([toUInt16(if(latency_us < 32, latency_us, (toUInt32(log2(latency_us)) - 4) * 32 + bitAnd(bitShiftRight(latency_us, toUInt32(log2(latency_us)) - 5), 31)))], [toUInt64(1)]), 1) AS `latencyMap.bucket`,
       tupleElement(sumMap([toUInt16(if(latency_us < 32, latency_us, (toUInt32(log2(latency_us)) - 4) * 32 + bitAnd(bitShiftRight(latency_us, toUInt32(log2(latency_us)) - 5), 31)))], [toUInt64(1)]), 2) AS `latencyMap.calls`
FROM usage_events
GROUP BY t, app_id, developer_id, plan_id, subscription_id, api_slug, status_class;

INSERT INTO usage_customer_day (t, app_id, developer_id, plan_id, subscription_id, api_slug, status_class, calls, errors, client_errors, bytes_in, bytes_out, overage_calls, `latencyMap.bucket`, `latencyMap.calls`)
SELECT toStartOfDay(event_time) AS t, app_id, developer_id, plan_id, subscription_id, api_slug, toUInt8(intDiv(status, 100)) AS status_class,
       count() AS calls,
       countIf(status >= 500) AS errors,
       countIf(status >= 400 AND status < 500) AS client_errors,
       sum(bytes_in) AS bytes_in,
       sum(bytes_out) AS bytes_out,
       sum(toUInt64(overage)) AS overage_calls,
       tupleElement(sumMap([toUInt16(if(latency_us < 32, latency_us, (toUInt32(log2(latency_us)) - 4) * 32 + bitAnd(bitShiftRight(latency_us, toUInt32(log2(latency_us)) - 5), 31)))], [toUInt64(1)]), 1) AS `latencyMap.bucket`,
       tupleElement(sumMap([toUInt16(if(latency_us < 32, latency_us, (toUInt32(log2(latency_us)) - 4) * 32 + bitAnd(bitShiftRight(latency_us, toUInt32(log2(latency_us)) - 5), 31)))], [toUInt64(1)]), 2) AS `latencyMap.calls`
FROM usage_events
GROUP BY t, app_id, developer_id, plan_id, subscription_id, api_slug, status_class;

CREATE MATERIALIZED VIEW IF NOT EXISTS usage_api_minute_mv TO usage_api_minute AS
SELECT toStartOfMinute(event_time) AS t, api_slug, route, toUInt8(intDiv(status, 100)) AS status_class,
       count() AS calls,
       countIf(status >= 500) AS errors,
       countIf(status >= 400 AND status < 500) AS client_errors,
       sum(bytes_in) AS bytes_in,
       sum(bytes_out) AS bytes_out,
       sum(toUInt64(overage)) AS overage_calls,
       tupleElement(sumMap([toUInt16(if(latency_us < 32, latency_us, (toUInt32(log2(latency_us)) - 4) * 32 + bitAnd(bitShiftRight(latency_us, toUInt32(log2(latency_us)) - 5), 31)))], [toUInt64(1)]), 1) AS `latencyMap.bucket`,
       tupleElement(sumMap([toUInt16(if(latency_us < 32, latency_us, (toUInt32(log2(latency_us)) - 4) * 32 + bitAnd(bitShiftRight(latency_us, toUInt32(log2(latency_us)) - 5), 31)))], [toUInt64(1)]), 2) AS `latencyMap.calls`
FROM usage_events
GROUP BY t, api_slug, route, status_class;

CREATE MATERIALIZED VIEW IF NOT EXISTS usage_api_hour_mv TO usage_api_hour AS
SELECT toStartOfHour(event_time) AS t, api_slug, route, toUInt8(intDiv(status, 100)) AS status_class,
       count() AS calls,
       countIf(status >= 500) AS errors,
       countIf(status >= 400 AND status < 500) AS client_errors,
       sum(bytes_in) AS bytes_in,
       sum(bytes_out) AS bytes_out,
       sum(toUInt64(overage)) AS overage_calls,
       tupleElement(sumMap([toUInt16(if(latency_us < 32, latency_us, (toUInt32(log2(latency_us)) - 4) * 32 + bitAnd(bitShiftRight(latency_us, toUInt32(log2(latency_us)) - 5), 31)))], [toUInt64(1)]), 1) AS `latencyMap.bucket`,
       tupleElement(sumMap([toUInt16(if(latency_us < 32, latency_us, (toUInt32(log2(latency_us)) - 4) * 32 + bitAnd(bitShiftRight(latency_us, toUInt32(log2(latency_us)) - 5), 31)))], [toUInt64(1)]), 2) AS `latencyMap.calls`
FROM usage_events
GROUP BY t, api_slug, route, status_class;

CREATE MATERIALIZED VIEW IF NOT EXISTS usage_api_day_mv TO usage_api_day AS
SELECT toStartOfDay(event_time) AS t, api_slug, route, toUInt8(intDiv(status, 100)) AS status_class,
       count() AS calls,
       countIf(status >= 500) AS errors,
       countIf(status >= 400 AND status < 500) AS client_errors,
       sum(bytes_in) AS bytes_in,
       sum(bytes_out) AS bytes_out,
       sum(toUInt64(overage)) AS overage_calls,
       tupleElement(sumMap([toUInt16(if(latency_us < 32, latency_us, (toUInt32(log2(latency_us)) - 4) * 32 + bitAnd(bitShiftRight(latency_us, toUInt32(log2(latency_us)) - 5), 31)))], [toUInt64(1)]), 1) AS `latencyMap.bucket`,
       tupleElement(sumMap([toUInt16(if(latency_us < 32, latency_us, (toUInt32(log2(latency_us)) - 4) * 32 + bitAnd(bitShiftRight(latency_us, toUInt32(log2(latency_us)) - 5), 31)))], [toUInt64(1)]), 2) AS `latencyMap.calls`
FROM usage_events
GROUP BY t, api_slug, route, status_class;

CREATE MATERIALIZED VIEW IF NOT EXISTS usage_app_day_mv TO usage_app_day AS
SELECT toStartOfDay(event_time) AS t, app_id, developer_id, plan_id, subscription_id, toUInt8(intDiv(status, 100)) AS status_class,
       count() AS calls,
       countIf(status >= 500) AS errors,
       countIf(status >= 400 AND status < 500) AS client_errors,
       sum(bytes_in) AS bytes_in,
       sum(bytes_out) AS bytes_out,
       sum(toUInt64(overage)) AS overage_calls,
       tupleElement(sumMap([toUInt16(if(latency_us < 32, latency_us, (toUInt32(log2(latency_us)) - 4) * 32 + bitAnd(bitShiftRight(latency_us, toUInt32(log2(latency_us)) - 5), 31)))], [toUInt64(1)]), 1) AS `latencyMap.bucket`,
       tupleElement(sumMap([toUInt16(if(latency_us < 32, latency_us, (toUInt32(log2(latency_us)) - 4) * 32 + bitAnd(bitShiftRight(latency_us, toUInt32(log2(latency_us)) - 5), 31)))], [toUInt64(1)]), 2) AS `latencyMap.calls`
FROM usage_events
GROUP BY t, app_id, developer_id, plan_id, subscription_id, status_class;

CREATE MATERIALIZED VIEW IF NOT EXISTS usage_customer_hour_mv TO usage_customer_hour AS
SELECT toStartOfHour(event_time) AS t, app_id, developer_id, plan_id, subscription_id, api_slug, toUInt8(intDiv(status, 100)) AS status_class,
       count() AS calls,
       countIf(status >= 500) AS errors,
       countIf(status >= 400 AND status < 500) AS client_errors,
       sum(bytes_in) AS bytes_in,
       sum(bytes_out) AS bytes_out,
       sum(toUInt64(overage)) AS overage_calls,
       tupleElement(sumMap([toUInt16(if(latency_us < 32, latency_us, (toUInt32(log2(latency_us)) - 4) * 32 + bitAnd(bitShiftRight(latency_us, toUInt32(log2(latency_us)) - 5), 31)))], [toUInt64(1)]), 1) AS `latencyMap.bucket`,
       tupleElement(sumMap([toUInt16(if(latency_us < 32, latency_us, (toUInt32(log2(latency_us)) - 4) * 32 + bitAnd(bitShiftRight(latency_us, toUInt32(log2(latency_us)) - 5), 31)))], [toUInt64(1)]), 2) AS `latencyMap.calls`
FROM usage_events
GROUP BY t, app_id, developer_id, plan_id, subscription_id, api_slug, status_class;

CREATE MATERIALIZED VIEW IF NOT EXISTS usage_customer_day_mv TO usage_customer_day AS
SELECT toStartOfDay(event_time) AS t, app_id, developer_id, plan_id, subscription_id, api_slug, toUInt8(intDiv(status, 100)) AS status_class,
       count() AS calls,
       countIf(status >= 500) AS errors,
       countIf(status >= 400 AND status < 500) AS client_errors,
       sum(bytes_in) AS bytes_in,
       sum(bytes_out) AS bytes_out,
       sum(toUInt64(overage)) AS overage_calls,
       tupleElement(sumMap([toUInt16(if(latency_us < 32, latency_us, (toUInt32(log2(latency_us)) - 4) * 32 + bitAnd(bitShiftRight(latency_us, toUInt32(log2(latency_us)) - 5), 31)))], [toUInt64(1)]), 1) AS `latencyMap.bucket`,
       tupleElement(sumMap([toUInt16(if(latency_us < 32, latency_us, (toUInt32(log2(latency_us)) - 4) * 32 + bitAnd(bitShiftRight(latency_us, toUInt32(log2(latency_us)) - 5), 31)))], [toUInt64(1)]), 2) AS `latencyMap.calls`
FROM usage_events
GROUP BY t, app_id, developer_id, plan_id, subscription_id, api_slug, status_class;

DROP TABLE IF EXISTS usage_minute_mv;
DROP TABLE IF EXISTS usage_hour_mv;
DROP TABLE IF EXISTS usage_minute;
DROP TABLE IF EXISTS usage_hour
