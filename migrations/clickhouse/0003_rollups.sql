-- Rollups of usage_events by minute and by hour, kept by materialized views:
-- per API, route, status class, app, developer and plan, the calls, errors
-- (status >= 500 counts as an error of the API; 4xx are the caller's),
-- request and response bytes, overage calls, and latency quantile states.
-- AggregatingMergeTree with -State columns works on ClickHouse 18.16 and current
-- releases; read them with sumMerge / quantilesMerge(0.5, 0.95, 0.99).
--
-- Events already in usage_events are rolled up once here, before the views
-- start: upgrade an existing store with the gateways stopped so no insert falls
-- between the two.
CREATE TABLE IF NOT EXISTS usage_minute (
    minute        DateTime('UTC'),
    api_id        String,
    api_slug      String,
    route         String,
    status_class  UInt8,
    app_id        String,
    developer_id  String,
    plan_id       String,
    calls         AggregateFunction(sum, UInt64),
    errors        AggregateFunction(sum, UInt64),
    client_errors AggregateFunction(sum, UInt64),
    bytes_in      AggregateFunction(sum, UInt64),
    bytes_out     AggregateFunction(sum, UInt64),
    overage_calls AggregateFunction(sum, UInt64),
    latency       AggregateFunction(quantiles(0.5, 0.95, 0.99), Float64)
) ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMM(minute)
ORDER BY (api_id, minute, route, status_class, app_id, developer_id, plan_id, api_slug);

CREATE TABLE IF NOT EXISTS usage_hour (
    hour          DateTime('UTC'),
    api_id        String,
    api_slug      String,
    route         String,
    status_class  UInt8,
    app_id        String,
    developer_id  String,
    plan_id       String,
    calls         AggregateFunction(sum, UInt64),
    errors        AggregateFunction(sum, UInt64),
    client_errors AggregateFunction(sum, UInt64),
    bytes_in      AggregateFunction(sum, UInt64),
    bytes_out     AggregateFunction(sum, UInt64),
    overage_calls AggregateFunction(sum, UInt64),
    latency       AggregateFunction(quantiles(0.5, 0.95, 0.99), Float64)
) ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMM(hour)
ORDER BY (api_id, hour, route, status_class, app_id, developer_id, plan_id, api_slug);

INSERT INTO usage_minute
SELECT toStartOfMinute(event_time) AS minute, api_id, api_slug, route,
       toUInt8(intDiv(status, 100)) AS status_class, app_id, developer_id, plan_id,
       sumState(toUInt64(1)), sumState(toUInt64(status >= 500)), sumState(toUInt64(status >= 400 AND status < 500)),
       sumState(bytes_in), sumState(bytes_out), sumState(toUInt64(overage)),
       quantilesState(0.5, 0.95, 0.99)(toFloat64(latency_us))
FROM usage_events
GROUP BY minute, api_id, api_slug, route, status_class, app_id, developer_id, plan_id;

INSERT INTO usage_hour
SELECT toStartOfHour(event_time) AS hour, api_id, api_slug, route,
       toUInt8(intDiv(status, 100)) AS status_class, app_id, developer_id, plan_id,
       sumState(toUInt64(1)), sumState(toUInt64(status >= 500)), sumState(toUInt64(status >= 400 AND status < 500)),
       sumState(bytes_in), sumState(bytes_out), sumState(toUInt64(overage)),
       quantilesState(0.5, 0.95, 0.99)(toFloat64(latency_us))
FROM usage_events
GROUP BY hour, api_id, api_slug, route, status_class, app_id, developer_id, plan_id;

CREATE MATERIALIZED VIEW IF NOT EXISTS usage_minute_mv TO usage_minute AS
SELECT toStartOfMinute(event_time) AS minute, api_id, api_slug, route,
       toUInt8(intDiv(status, 100)) AS status_class, app_id, developer_id, plan_id,
       sumState(toUInt64(1)) AS calls,
       sumState(toUInt64(status >= 500)) AS errors,
       sumState(toUInt64(status >= 400 AND status < 500)) AS client_errors,
       sumState(bytes_in) AS bytes_in,
       sumState(bytes_out) AS bytes_out,
       sumState(toUInt64(overage)) AS overage_calls,
       quantilesState(0.5, 0.95, 0.99)(toFloat64(latency_us)) AS latency
FROM usage_events
GROUP BY minute, api_id, api_slug, route, status_class, app_id, developer_id, plan_id;

CREATE MATERIALIZED VIEW IF NOT EXISTS usage_hour_mv TO usage_hour AS
SELECT toStartOfHour(event_time) AS hour, api_id, api_slug, route,
       toUInt8(intDiv(status, 100)) AS status_class, app_id, developer_id, plan_id,
       sumState(toUInt64(1)) AS calls,
       sumState(toUInt64(status >= 500)) AS errors,
       sumState(toUInt64(status >= 400 AND status < 500)) AS client_errors,
       sumState(bytes_in) AS bytes_in,
       sumState(bytes_out) AS bytes_out,
       sumState(toUInt64(overage)) AS overage_calls,
       quantilesState(0.5, 0.95, 0.99)(toFloat64(latency_us)) AS latency
FROM usage_events
GROUP BY hour, api_id, api_slug, route, status_class, app_id, developer_id, plan_id
