-- Sign-in identities from outside providers (GitHub, Google, any OpenID
-- Connect issuer). One row per (provider, subject): the provider's stable id
-- for the person, never their e-mail address, which can change or be reused.
CREATE TABLE account_identities (
    provider      TEXT NOT NULL,
    subject       TEXT NOT NULL,
    user_id       TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    email         TEXT NOT NULL,
    created_at    BIGINT NOT NULL,
    last_login_at BIGINT NOT NULL,
    PRIMARY KEY (provider, subject)
);
CREATE INDEX account_identities_user ON account_identities (user_id);
