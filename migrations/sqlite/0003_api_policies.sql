-- Access policies of an API: keyless, IP allow/deny lists, CORS, body size limit (JSON).
ALTER TABLE apis ADD COLUMN policies TEXT NOT NULL DEFAULT '{}';
