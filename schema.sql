-- merchant-authd database schema (SQLite).
--
-- This file is the single source of the schema.  The daemon applies it to a new
-- database and records the version below in schema_version; a later version adds a
-- migration step from each earlier one instead of editing what is here.
--
-- Secrets are never stored in clear: passwords as bcrypt hashes, access tokens and
-- TANs as SHA-256 digests.
--
-- schema-version: 1


CREATE TABLE IF NOT EXISTS schema_version (
  version INTEGER NOT NULL,
  applied_at INTEGER NOT NULL
);

-- One row per instance (shop).  "settings" holds the instance configuration that the
-- auth daemon keeps for clients (name, address, delays, logo, ...) as a JSON object.
CREATE TABLE IF NOT EXISTS instances (
  serial INTEGER PRIMARY KEY,
  id TEXT NOT NULL UNIQUE,
  id_folded TEXT NOT NULL UNIQUE,   -- lower-case id: ids differing by case collide
  merchant_pub BLOB NOT NULL CHECK (length(merchant_pub) = 32),
  auth_method TEXT NOT NULL CHECK (auth_method IN ('token', 'external')),
  password_hash TEXT,               -- bcrypt; NULL when auth_method = 'external'
  email TEXT,
  email_validated INTEGER NOT NULL DEFAULT 0,
  phone_number TEXT,
  phone_validated INTEGER NOT NULL DEFAULT 0,
  settings TEXT NOT NULL,
  deleted INTEGER NOT NULL DEFAULT 0,
  created_at INTEGER NOT NULL
);

-- Private keys live apart so that deleting an instance without purging it can
-- destroy the key and keep the rest.
CREATE TABLE IF NOT EXISTS merchant_keys (
  instance_serial INTEGER PRIMARY KEY
    REFERENCES instances (serial) ON DELETE CASCADE,
  merchant_priv BLOB NOT NULL CHECK (length(merchant_priv) = 32)
);

CREATE TABLE IF NOT EXISTS access_tokens (
  serial INTEGER PRIMARY KEY AUTOINCREMENT,
  instance_serial INTEGER NOT NULL
    REFERENCES instances (serial) ON DELETE CASCADE,
  token_digest BLOB NOT NULL UNIQUE CHECK (length(token_digest) = 32),
  creation_time INTEGER NOT NULL,
  expiration INTEGER,               -- seconds since the epoch; NULL = never
  scope TEXT NOT NULL,
  refreshable INTEGER NOT NULL,
  description TEXT
);
CREATE INDEX IF NOT EXISTS access_tokens_by_instance
  ON access_tokens (instance_serial, serial);

-- Multi-factor challenges.  A challenge names the instance by id, not by serial:
-- a self-provisioning sign-up is challenged before its instance exists.
CREATE TABLE IF NOT EXISTS challenges (
  serial INTEGER PRIMARY KEY AUTOINCREMENT,
  id_digest BLOB NOT NULL UNIQUE,   -- digest of the public challenge id
  instance_id TEXT NOT NULL,
  operation TEXT NOT NULL,          -- method and route of the protected request
  body_digest BLOB NOT NULL,        -- SHA-512 of body and effective query
  channel TEXT NOT NULL CHECK (channel IN ('sms', 'email')),
  address TEXT NOT NULL,
  tan_salt BLOB,
  tan_digest BLOB,                  -- NULL until a TAN was transmitted
  retry_counter INTEGER NOT NULL DEFAULT 0,
  created_at INTEGER NOT NULL,
  expires_at INTEGER NOT NULL,      -- the challenge as a whole
  solve_expiration INTEGER,         -- the current TAN
  last_sent INTEGER,
  solved INTEGER NOT NULL DEFAULT 0,
  consumed INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS challenges_by_instance
  ON challenges (instance_id, solved, expires_at);

-- Back-off state of password guessing and sign-ups, per instance and per address.
CREATE TABLE IF NOT EXISTS throttle (
  key TEXT PRIMARY KEY,
  failures INTEGER NOT NULL,
  blocked_until REAL NOT NULL,
  updated_at REAL NOT NULL
);
