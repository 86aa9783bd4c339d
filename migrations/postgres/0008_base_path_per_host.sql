-- Base paths are unique per host, not across all APIs: two APIs may share a base
-- path when they answer on different hosts (the store checks the overlap).
ALTER TABLE apis DROP CONSTRAINT IF EXISTS apis_base_path_key;
CREATE INDEX apis_base_path ON apis (base_path);
