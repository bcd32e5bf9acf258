#!/usr/bin/env bash
# What authentication and limits add to a request: a release `dev` process, a tenant key with
# limits (so the limits' path runs in full), then bench/auth_path.rs against it.
# Usage: bench/auth.sh [REQUESTS] [CONNECTIONS]
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cargo build --release --quiet --manifest-path "$ROOT/Cargo.toml" --bin modelgate --example auth_path
WORK=$(mktemp -d)
PORT=18091
trap 'kill $DEV 2>/dev/null || true; rm -rf "$WORK"' EXIT
(cd "$WORK" && RUST_LOG=warn "$ROOT/target/release/modelgate" dev --listen 127.0.0.1:$PORT >dev.out 2>dev.err) &
DEV=$!
MG=http://127.0.0.1:$PORT J='Content-Type: application/json'
for _ in $(seq 1 100); do curl -sf $MG/healthz >/dev/null && break; sleep 0.1; done
ADMIN=$(cat "$WORK/modelgate-data/admin.key")
curl -sf -X POST $MG/api/v1/tenants -H "Authorization: Bearer $ADMIN" -H "$J" -d '{"name":"acme"}' >/dev/null
curl -sf -X PUT $MG/api/v1/tenants/acme/quotas -H "Authorization: Bearer $ADMIN" -H "$J" \
  -d '{"requests_per_minute": 1000000000, "concurrent_requests": 100000}' >/dev/null
KEY=$(curl -sf -X POST $MG/api/v1/tenants/acme/keys -H "Authorization: Bearer $ADMIN" -H "$J" \
  -d '{"name":"bench","role":"invoker","limits":{"requests_per_minute":1000000000,"concurrent_requests":100000}}' \
  | python3 -c 'import json,sys; print(json.load(sys.stdin)["key"])')
"$ROOT/target/release/examples/auth_path" $MG "$KEY" "${1:-20000}" "${2:-32}"
