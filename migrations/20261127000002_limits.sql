-- Request limits of a tenant and of a key (NULL: none). The tightest that applies wins.
ALTER TABLE tenants ADD COLUMN requests_per_minute BIGINT;
ALTER TABLE tenants ADD COLUMN concurrent_requests BIGINT;
ALTER TABLE tenants ADD COLUMN tokens_per_minute BIGINT;
ALTER TABLE api_keys ADD COLUMN requests_per_minute BIGINT;
ALTER TABLE api_keys ADD COLUMN concurrent_requests BIGINT;
ALTER TABLE api_keys ADD COLUMN tokens_per_minute BIGINT;

-- What each limit has used in one calendar minute, shared by every gateway: a gateway takes
-- a share (a lease) of what is left, never more than the limit, and answers from it.
CREATE TABLE rate_windows (
    scope        TEXT NOT NULL,
    window_start BIGINT NOT NULL,
    used         BIGINT NOT NULL,
    PRIMARY KEY (scope, window_start)
);

-- Gateways alive (seen within a few seconds) split concurrency limits between them.
CREATE TABLE gateway_instances (
    id      TEXT PRIMARY KEY,
    seen_at BIGINT NOT NULL
);
