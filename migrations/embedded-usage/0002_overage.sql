-- Calls beyond a soft quota's included calls, billed as overage.
ALTER TABLE usage_events ADD COLUMN overage INTEGER NOT NULL DEFAULT 0;
