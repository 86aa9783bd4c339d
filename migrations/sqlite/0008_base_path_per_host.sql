-- no-transaction
-- Base paths are unique per host, not across all APIs: two APIs may share a base
-- path when they answer on different hosts (the store checks the overlap).
-- SQLite cannot drop a UNIQUE constraint, so the table is rebuilt; foreign keys
-- are off meanwhile so dropping the old table does not cascade to plan_apis.
PRAGMA foreign_keys = OFF;
BEGIN;
CREATE TABLE apis_rebuilt (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    slug        TEXT NOT NULL UNIQUE,
    base_path   TEXT NOT NULL,
    upstreams   TEXT NOT NULL,
    visibility  TEXT NOT NULL CHECK (visibility IN ('public', 'private')),
    openapi     TEXT,
    created_at  BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL,
    policies    TEXT NOT NULL DEFAULT '{}',
    hosts       TEXT NOT NULL DEFAULT '[]'
);
INSERT INTO apis_rebuilt (id, name, slug, base_path, upstreams, visibility, openapi, created_at, updated_at, policies, hosts)
    SELECT id, name, slug, base_path, upstreams, visibility, openapi, created_at, updated_at, policies, hosts FROM apis;
DROP TABLE apis;
ALTER TABLE apis_rebuilt RENAME TO apis;
CREATE INDEX apis_base_path ON apis (base_path);
COMMIT;
PRAGMA foreign_keys = ON;
