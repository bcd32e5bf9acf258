-- A suspended tenant's keys and tokens stop working; its data stays. NULL: active.
ALTER TABLE tenants ADD COLUMN suspended_at BIGINT;
