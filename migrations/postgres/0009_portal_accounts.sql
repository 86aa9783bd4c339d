-- Developer portal accounts: verified e-mail, single-use e-mailed tokens and
-- browser sessions. Kept column-for-column equal on SQLite and PostgreSQL.

-- When the user proved they read mail at `email`; NULL until then.
ALTER TABLE users ADD COLUMN email_verified_at BIGINT;

-- Links e-mailed to a user (verify an address, reset a password, confirm a new
-- address). Only the SHA-256 of the token is kept; a token is used at most once
-- (`used_at`) and never after `expires_at`.
CREATE TABLE account_tokens (
    token_hash TEXT PRIMARY KEY,
    user_id    TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    purpose    TEXT NOT NULL CHECK (purpose IN ('verify_email', 'reset_password', 'change_email')),
    email      TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    used_at    BIGINT
);
CREATE INDEX account_tokens_user ON account_tokens (user_id, purpose);
CREATE INDEX account_tokens_expires ON account_tokens (expires_at);

-- Portal sessions (tower-sessions records). `data` is the session's JSON map;
-- `user_id` mirrors its signed-in user so a password change can end the user's
-- other sessions.
CREATE TABLE sessions (
    id         TEXT PRIMARY KEY,
    data       TEXT NOT NULL,
    user_id    TEXT,
    expires_at BIGINT NOT NULL
);
CREATE INDEX sessions_expires ON sessions (expires_at);
CREATE INDEX sessions_user ON sessions (user_id);
