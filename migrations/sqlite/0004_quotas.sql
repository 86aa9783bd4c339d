-- Quotas: whether calls beyond a plan's included calls are refused (overage = 0)
-- or pass and are billed as overage (1); whether periods follow the calendar or
-- the subscription's start; and the shared counters gateways lease calls from.
ALTER TABLE plans ADD COLUMN overage INTEGER NOT NULL DEFAULT 0;
ALTER TABLE plans ADD COLUMN quota_anchor TEXT NOT NULL DEFAULT 'calendar';

CREATE TABLE quota_counters (
    subscription_id TEXT NOT NULL,
    period_start    BIGINT NOT NULL,
    leased          BIGINT NOT NULL,
    PRIMARY KEY (subscription_id, period_start)
);
