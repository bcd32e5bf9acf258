-- Dashboard sessions signed out before their token expired: the gate refuses their `sid`.
-- A row is kept until every token of its session has expired (expires_at, ms).
CREATE TABLE revoked_sessions (
    sid        TEXT PRIMARY KEY,
    expires_at BIGINT NOT NULL
);
CREATE INDEX revoked_sessions_expires ON revoked_sessions (expires_at);
