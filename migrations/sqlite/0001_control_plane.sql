-- Control plane, SQLite. Timestamps are milliseconds since the Unix epoch (UTC);
-- ids are prefixed UUID v7 text. Kept column-for-column equal to postgres/0001.
CREATE TABLE users (
    id            TEXT PRIMARY KEY,
    email         TEXT NOT NULL UNIQUE,
    name          TEXT NOT NULL,
    role          TEXT NOT NULL CHECK (role IN ('developer', 'admin', 'analyst')),
    password_hash TEXT,
    created_at    BIGINT NOT NULL,
    updated_at    BIGINT NOT NULL
);

CREATE TABLE apis (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    slug        TEXT NOT NULL UNIQUE,
    base_path   TEXT NOT NULL UNIQUE,
    upstreams   TEXT NOT NULL,
    visibility  TEXT NOT NULL CHECK (visibility IN ('public', 'private')),
    openapi     TEXT,
    created_at  BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL
);

CREATE TABLE plans (
    id               TEXT PRIMARY KEY,
    name             TEXT NOT NULL,
    price_minor      BIGINT NOT NULL CHECK (price_minor >= 0),
    currency         TEXT NOT NULL,
    billing_interval TEXT NOT NULL CHECK (billing_interval IN ('month', 'year')),
    included_calls   BIGINT CHECK (included_calls >= 0),
    status           TEXT NOT NULL CHECK (status IN ('draft', 'active', 'archived')),
    created_at       BIGINT NOT NULL,
    updated_at       BIGINT NOT NULL
);

CREATE TABLE plan_apis (
    plan_id TEXT NOT NULL REFERENCES plans (id) ON DELETE CASCADE,
    api_id  TEXT NOT NULL REFERENCES apis (id) ON DELETE CASCADE,
    PRIMARY KEY (plan_id, api_id)
);
CREATE INDEX plan_apis_api ON plan_apis (api_id);

CREATE TABLE apps (
    id           TEXT PRIMARY KEY,
    developer_id TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    name         TEXT NOT NULL,
    created_at   BIGINT NOT NULL,
    updated_at   BIGINT NOT NULL
);
CREATE INDEX apps_developer ON apps (developer_id);

CREATE TABLE api_keys (
    id           TEXT PRIMARY KEY,
    app_id       TEXT NOT NULL REFERENCES apps (id) ON DELETE CASCADE,
    key_hash     TEXT NOT NULL UNIQUE,
    prefix       TEXT NOT NULL,
    status       TEXT NOT NULL CHECK (status IN ('active', 'revoked')),
    created_at   BIGINT NOT NULL,
    last_used_at BIGINT,
    expires_at   BIGINT,
    revoked_at   BIGINT
);
CREATE INDEX api_keys_app ON api_keys (app_id);

CREATE TABLE subscriptions (
    id         TEXT PRIMARY KEY,
    app_id     TEXT NOT NULL REFERENCES apps (id) ON DELETE CASCADE,
    plan_id    TEXT NOT NULL REFERENCES plans (id),
    status     TEXT NOT NULL CHECK (status IN ('active', 'pending', 'suspended', 'cancelled')),
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE INDEX subscriptions_app ON subscriptions (app_id);
CREATE INDEX subscriptions_plan ON subscriptions (plan_id);

-- One row: bumped by every change the gateway must see.
CREATE TABLE config_version (
    id      INTEGER PRIMARY KEY CHECK (id = 1),
    version BIGINT NOT NULL
);
INSERT INTO config_version (id, version) VALUES (1, 0);
