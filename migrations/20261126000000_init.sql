-- Times are milliseconds since the Unix epoch (BIGINT), ids are UUIDv7 text:
-- both travel through sqlx's Any driver unchanged on Postgres and SQLite.

CREATE TABLE tenants (
    id          TEXT PRIMARY KEY,
    slug        TEXT NOT NULL UNIQUE,
    created_at  BIGINT NOT NULL,
    -- Bytes of distinct blobs the tenant may store; NULL: no limit.
    storage_quota_bytes BIGINT
);

-- tenant_id NULL and role 'platform_admin' mark a platform administrator's key.
CREATE TABLE api_keys (
    id            TEXT PRIMARY KEY,
    tenant_id     TEXT REFERENCES tenants (id),
    name          TEXT NOT NULL,
    role          TEXT NOT NULL,
    secret_sha256 TEXT NOT NULL,
    created_by    TEXT NOT NULL,
    created_at    BIGINT NOT NULL,
    expires_at    BIGINT,
    revoked_at    BIGINT,
    last_used_at  BIGINT
);
CREATE INDEX api_keys_tenant ON api_keys (tenant_id);

CREATE TABLE models (
    id           TEXT PRIMARY KEY,
    tenant_id    TEXT NOT NULL REFERENCES tenants (id),
    name         TEXT NOT NULL,
    task         TEXT NOT NULL,
    description  TEXT NOT NULL DEFAULT '',
    next_version BIGINT NOT NULL DEFAULT 1,
    created_by   TEXT NOT NULL,
    created_at   BIGINT NOT NULL,
    -- A deleted model keeps its rows for audit under a name no live model can take.
    deleted_at   BIGINT,
    UNIQUE (tenant_id, name)
);

CREATE TABLE model_tags (
    model_id TEXT NOT NULL REFERENCES models (id),
    tag      TEXT NOT NULL,
    PRIMARY KEY (model_id, tag)
);
CREATE INDEX model_tags_tag ON model_tags (tag);

-- status: draft -> ready (immutable from then on) -> archived (kept for audit, not callable).
CREATE TABLE model_versions (
    id           TEXT PRIMARY KEY,
    model_id     TEXT NOT NULL REFERENCES models (id),
    number       BIGINT NOT NULL,
    status       TEXT NOT NULL,
    architecture TEXT,
    created_by   TEXT NOT NULL,
    created_at   BIGINT NOT NULL,
    committed_at BIGINT,
    archived_at  BIGINT,
    description  TEXT NOT NULL DEFAULT '',
    tags_json    TEXT NOT NULL DEFAULT '[]',
    -- Lineage: the version this one was made from (a quantized or fine-tuned copy), as
    -- `model@N` of the same tenant when it was recorded.
    derived_from TEXT,
    UNIQUE (model_id, number)
);

-- Content-addressed per tenant: the same bytes in one tenant are stored once.
CREATE TABLE blobs (
    tenant_id  TEXT NOT NULL REFERENCES tenants (id),
    sha256     TEXT NOT NULL,
    size       BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    -- Both change with every upload that references the blob: garbage collection spares recent
    -- blobs, and deletes a blob only if no upload touched it since it was found unreferenced.
    last_used_at BIGINT NOT NULL,
    uses         BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (tenant_id, sha256)
);

CREATE TABLE version_files (
    version_id TEXT NOT NULL REFERENCES model_versions (id),
    path       TEXT NOT NULL,
    sha256     TEXT NOT NULL,
    size       BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (version_id, path)
);

-- Resumable uploads: one file of a draft, sent in fixed-size chunks in any order, possibly
-- across connections and gateway restarts. Chunks are objects under the session's key.
CREATE TABLE upload_sessions (
    id          TEXT PRIMARY KEY,
    tenant_id   TEXT NOT NULL REFERENCES tenants (id),
    version_id  TEXT NOT NULL REFERENCES model_versions (id),
    path        TEXT NOT NULL,
    size        BIGINT NOT NULL,
    sha256      TEXT NOT NULL,
    chunk_size  BIGINT NOT NULL,
    -- 1: the client PUTs the whole file to a presigned URL (the one chunk) straight into the bucket.
    presigned   BIGINT NOT NULL DEFAULT 0,
    created_by  TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    expires_at  BIGINT NOT NULL
);
CREATE INDEX upload_sessions_expires ON upload_sessions (expires_at);

CREATE TABLE upload_chunks (
    session_id TEXT NOT NULL REFERENCES upload_sessions (id),
    idx        BIGINT NOT NULL,
    size       BIGINT NOT NULL,
    PRIMARY KEY (session_id, idx)
);

-- An alias points at one version (weight 100) or splits traffic over several (weights sum to 100).
CREATE TABLE aliases (
    model_id   TEXT NOT NULL REFERENCES models (id),
    name       TEXT NOT NULL,
    version_id TEXT NOT NULL REFERENCES model_versions (id),
    weight     BIGINT NOT NULL,
    updated_by TEXT NOT NULL,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (model_id, name, version_id)
);

-- Every move of an alias: who, when, from which targets to which.
CREATE TABLE alias_history (
    id          TEXT PRIMARY KEY,
    model_id    TEXT NOT NULL REFERENCES models (id),
    name        TEXT NOT NULL,
    from_json   TEXT,
    to_json     TEXT,
    moved_by    TEXT NOT NULL,
    moved_at    BIGINT NOT NULL
);
CREATE INDEX alias_history_model_name ON alias_history (model_id, name, id);

CREATE TABLE audit_log (
    id          TEXT PRIMARY KEY,
    at          BIGINT NOT NULL,
    actor       TEXT NOT NULL,
    tenant_id   TEXT,
    action      TEXT NOT NULL,
    target      TEXT NOT NULL,
    source_ip   TEXT,
    before_json TEXT,
    after_json  TEXT
);
CREATE INDEX audit_log_tenant_at ON audit_log (tenant_id, at);
