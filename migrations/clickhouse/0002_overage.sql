-- Calls beyond a soft quota's included calls, billed as overage.
ALTER TABLE usage_events ADD COLUMN overage UInt8 DEFAULT 0
