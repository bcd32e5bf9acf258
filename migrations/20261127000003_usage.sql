-- Inference usage per tenant, key, model and version, counted in one-minute, one-hour and
-- one-day buckets (each flush adds to all three); minutes are kept two days, hours 90 days.
CREATE TABLE usage_minute (
    bucket        BIGINT NOT NULL,
    tenant_id     TEXT NOT NULL,
    key_id        TEXT NOT NULL,
    model         TEXT NOT NULL,
    version       BIGINT NOT NULL,
    requests      BIGINT NOT NULL,
    errors        BIGINT NOT NULL,
    input_tokens  BIGINT NOT NULL,
    output_tokens BIGINT NOT NULL,
    latency_ms_sum BIGINT NOT NULL,
    -- Requests by latency: at most 10, 50, 100, 250, 500, 1000, 5000 ms, and slower.
    le_10 BIGINT NOT NULL, le_50 BIGINT NOT NULL, le_100 BIGINT NOT NULL, le_250 BIGINT NOT NULL,
    le_500 BIGINT NOT NULL, le_1000 BIGINT NOT NULL, le_5000 BIGINT NOT NULL, le_inf BIGINT NOT NULL,
    PRIMARY KEY (bucket, tenant_id, key_id, model, version)
);
CREATE INDEX usage_minute_tenant ON usage_minute (tenant_id, bucket);

CREATE TABLE usage_hour (
    bucket        BIGINT NOT NULL,
    tenant_id     TEXT NOT NULL,
    key_id        TEXT NOT NULL,
    model         TEXT NOT NULL,
    version       BIGINT NOT NULL,
    requests      BIGINT NOT NULL,
    errors        BIGINT NOT NULL,
    input_tokens  BIGINT NOT NULL,
    output_tokens BIGINT NOT NULL,
    latency_ms_sum BIGINT NOT NULL,
    -- Requests by latency: at most 10, 50, 100, 250, 500, 1000, 5000 ms, and slower.
    le_10 BIGINT NOT NULL, le_50 BIGINT NOT NULL, le_100 BIGINT NOT NULL, le_250 BIGINT NOT NULL,
    le_500 BIGINT NOT NULL, le_1000 BIGINT NOT NULL, le_5000 BIGINT NOT NULL, le_inf BIGINT NOT NULL,
    PRIMARY KEY (bucket, tenant_id, key_id, model, version)
);
CREATE INDEX usage_hour_tenant ON usage_hour (tenant_id, bucket);

CREATE TABLE usage_day (
    bucket        BIGINT NOT NULL,
    tenant_id     TEXT NOT NULL,
    key_id        TEXT NOT NULL,
    model         TEXT NOT NULL,
    version       BIGINT NOT NULL,
    requests      BIGINT NOT NULL,
    errors        BIGINT NOT NULL,
    input_tokens  BIGINT NOT NULL,
    output_tokens BIGINT NOT NULL,
    latency_ms_sum BIGINT NOT NULL,
    -- Requests by latency: at most 10, 50, 100, 250, 500, 1000, 5000 ms, and slower.
    le_10 BIGINT NOT NULL, le_50 BIGINT NOT NULL, le_100 BIGINT NOT NULL, le_250 BIGINT NOT NULL,
    le_500 BIGINT NOT NULL, le_1000 BIGINT NOT NULL, le_5000 BIGINT NOT NULL, le_inf BIGINT NOT NULL,
    PRIMARY KEY (bucket, tenant_id, key_id, model, version)
);
CREATE INDEX usage_day_tenant ON usage_day (tenant_id, bucket);
