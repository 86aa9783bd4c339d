-- Plans whose new subscriptions wait for an admin's approval (pending until approved).
ALTER TABLE plans ADD COLUMN approval_required BIGINT NOT NULL DEFAULT 0;
