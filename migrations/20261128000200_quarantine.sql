-- Containment (gateway runners/blame.rs decides, registry quarantine.rs keeps): strikes against
-- versions that were in flight on a runner when it died, and the versions quarantined for them.
-- Times are ms since the epoch. Rows go with their version.
CREATE TABLE version_strikes (
    id         TEXT PRIMARY KEY,
    version_id TEXT NOT NULL REFERENCES model_versions (id) ON DELETE CASCADE,
    at         BIGINT NOT NULL,
    -- 2 when the version alone was in flight (it alone can have caused the death), else 1.
    weight     BIGINT NOT NULL,
    reason     TEXT NOT NULL
);
CREATE INDEX version_strikes_by_version ON version_strikes (version_id, at);

-- A quarantined version answers 503 version_quarantined until a platform admin clears it.
CREATE TABLE version_quarantines (
    version_id TEXT PRIMARY KEY REFERENCES model_versions (id) ON DELETE CASCADE,
    since      BIGINT NOT NULL,
    -- The strikes within the window when it was quarantined.
    strikes    BIGINT NOT NULL,
    reason     TEXT NOT NULL
);
