-- Rate limits of a plan: a JSON array of {"limit","window","burst","per"}.
ALTER TABLE plans ADD COLUMN rate_limits TEXT NOT NULL DEFAULT '[]';
