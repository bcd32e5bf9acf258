-- Resumable sessions keep their parts in the object store's own multipart upload where it has
-- one (S3, Azure, GCS): its id, and each part's id as the store answered it.
ALTER TABLE upload_sessions ADD COLUMN multipart_id TEXT;
ALTER TABLE upload_chunks ADD COLUMN part_id TEXT;
CREATE INDEX upload_sessions_digest ON upload_sessions (tenant_id, sha256);

-- An upload that declared its digest writes straight to the blob's content address. While it
-- runs, this row keeps garbage collection away from that blob (see registry/src/gc.rs).
CREATE TABLE blob_uploads (
    id         TEXT PRIMARY KEY,
    tenant_id  TEXT NOT NULL REFERENCES tenants (id),
    sha256     TEXT NOT NULL,
    started_at BIGINT NOT NULL
);
CREATE INDEX blob_uploads_digest ON blob_uploads (tenant_id, sha256);
