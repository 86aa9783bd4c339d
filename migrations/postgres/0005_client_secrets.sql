-- OAuth2 client credentials: an app's client secret, stored as its SHA-256 only.
ALTER TABLE apps ADD COLUMN client_secret_hash TEXT;
