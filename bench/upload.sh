#!/usr/bin/env bash
# Upload throughput through the API against writing the same file to the same store directly
# with object_store, and the gateway's peak RSS above idle while it streams.
# Usage: bench/upload.sh [SIZE_MIB]   (default 2048; set MOTO=http://127.0.0.1:9000 to add S3)
set -euo pipefail
SIZE_MIB=${1:-2048}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cargo build --release --quiet --manifest-path "$ROOT/Cargo.toml" --bin modelgate --example direct_write
BIN=$ROOT/target/release/modelgate
DIRECT=$ROOT/target/release/examples/direct_write
WORK=$(mktemp -d)
trap 'pkill -f "modelgate --config modelgate.toml dev --listen 127.0.0.1:18090" || true; rm -rf "$WORK"' EXIT
head -c $((SIZE_MIB * 1024 * 1024)) /dev/urandom > "$WORK/blob.bin"
SHA=$(sha256sum "$WORK/blob.bin" | cut -d' ' -f1)

run() { # name, storage URL, endpoint, options...
  local name=$1 url=$2 endpoint=$3; shift 3
  local dir="$WORK/$name" port=18090
  mkdir -p "$dir"
  local env=(MODELGATE__STORAGE__URL="$url")
  [ -n "$endpoint" ] && env+=(MODELGATE__STORAGE__ENDPOINT="$endpoint")
  local opts=""
  for kv in "$@"; do opts+="${kv%%=*} = \"${kv#*=}\", "; done
  printf 'data_dir = "%s"\n[storage]\nurl = "%s"\n%s\noptions = { %s }\n' "$dir/data" "$url" \
    "$([ -n "$endpoint" ] && echo "endpoint = \"$endpoint\"")" "${opts%, }" > "$dir/modelgate.toml"
  (cd "$dir" && RUST_LOG=warn "$BIN" --config modelgate.toml dev --listen 127.0.0.1:$port >dev.out 2>dev.err) &
  DEV=$!
  for _ in $(seq 1 100); do curl -sf http://127.0.0.1:$port/healthz >/dev/null && break; sleep 0.1; done
  local MG=http://127.0.0.1:$port ADMIN J='Content-Type: application/json'
  ADMIN=$(cat "$dir/data/admin.key")
  curl -sf -X POST $MG/api/v1/tenants -H "Authorization: Bearer $ADMIN" -H "$J" -d '{"name":"acme"}' >/dev/null
  curl -sf -X POST $MG/api/v1/tenants/acme/models -H "Authorization: Bearer $ADMIN" -H "$J" -d '{"name":"m","task":"embedding"}' >/dev/null
  curl -sf -X POST $MG/api/v1/tenants/acme/models/m/versions -H "Authorization: Bearer $ADMIN" >/dev/null
  local pid idle peak=0 rss
  pid=$(pgrep -f "modelgate --config modelgate.toml dev --listen 127.0.0.1:$port" | head -n1)
  idle=$(awk '/VmRSS/ {print $2}' /proc/$pid/status)
  ( while kill -0 $pid 2>/dev/null; do awk '/VmRSS/ {print $2}' /proc/$pid/status; sleep 0.05; done ) > "$dir/rss" &
  local sampler=$!
  local api
  api=$(curl -sf -o /dev/null -w '%{time_total}' -X PUT "$MG/api/v1/tenants/acme/models/m/versions/1/files/blob.bin" \
    -H "Authorization: Bearer $ADMIN" -H "x-checksum-sha256: $SHA" -T "$WORK/blob.bin")
  kill $sampler 2>/dev/null || true
  peak=$(sort -n "$dir/rss" | tail -n1)
  kill $pid; wait $DEV 2>/dev/null || true
  local direct
  direct=$("$DIRECT" "$url" "$WORK/blob.bin" "$endpoint" "$@")
  python3 - "$name" "$SIZE_MIB" "$api" "$direct" "$idle" "$peak" <<'PY'
import sys
name, mib, api, direct, idle, peak = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6])
print(f"{name}: {mib} MiB through the API {api:.2f} s ({mib/api:.0f} MiB/s); direct object_store {direct:.2f} s ({mib/direct:.0f} MiB/s); "
      f"ratio {direct/api:.2f}x; gateway RSS idle {idle/1024:.0f} MiB, peak {peak/1024:.0f} MiB (+{(peak-idle)/1024:.0f} MiB)")
PY
}

run local "file://$WORK/local-store/" ""
if [ -n "${MOTO:-}" ]; then
  bucket=bench-$(date +%s)
  curl -sf -X PUT "$MOTO/$bucket" >/dev/null
  run s3-moto "s3://$bucket/modelgate" "$MOTO" aws_access_key_id=test aws_secret_access_key=test aws_region=us-east-1
fi
