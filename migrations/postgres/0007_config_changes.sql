-- What each configuration version changed (an API, a plan, or an app with its
-- keys and subscriptions), so gateways patch their snapshot instead of reloading
-- everything. Rows older than an hour are removed; a gateway that finds a gap
-- reloads in full.
CREATE TABLE config_changes (
    version    BIGINT NOT NULL,
    entity     TEXT NOT NULL,
    entity_id  TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE INDEX config_changes_version ON config_changes (version);
