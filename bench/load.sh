#!/usr/bin/env bash
# Reliability under load (issue 7/7, items 5 and 6), against `modelgate serve --role all` with
# all-MiniLM-L6-v2:
#   load:     200 clients for 60 s, mixed embeddings and management reads; every answer must be
#             a 200 (the runner's queue is sized for the clients: queue_depth 256)
#   overload: 400 clients for 60 s, embeddings only, against the default queue (64): the excess
#             must be shed with 429/503 and Retry-After, and nothing else may fail
# Both report p50/p99 per kind of request and the server's RSS over the run (bench/load.rs).
# Usage: bench/load.sh MODEL_DIR [CLIENTS] [SECONDS]
#        DATABASE_URL=postgres://… runs against a fresh database there instead of SQLite.
set -euo pipefail
MODEL_DIR=$(cd "${1:?usage: bench/load.sh MODEL_DIR [CLIENTS] [SECONDS]}" && pwd)
CLIENTS=${2:-200}
SECONDS_=${3:-60}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cargo build --release --quiet --manifest-path "$ROOT/Cargo.toml" --bin modelgate --example load
BIN=$ROOT/target/release/modelgate
PORT=18093
MG=http://127.0.0.1:$PORT
J='Content-Type: application/json'

run_phase() { # name queue_depth clients mix expect
  local work db=""; work=$(mktemp -d)
  if [ -n "${DATABASE_URL:-}" ]; then
    db="mg_load_$(date +%s%N)"
    psql "$DATABASE_URL" -qc "CREATE DATABASE $db" >/dev/null
    export MODELGATE__DATABASE__URL="${DATABASE_URL%/*}/$db"
  fi
  MODELGATE__GATEWAY__LISTEN=127.0.0.1:$PORT MODELGATE__RUNNER__LISTEN=127.0.0.1:0 \
    MODELGATE__METRICS__ENABLED=false MODELGATE__RUNNER__QUEUE_DEPTH=$2 RUST_LOG=warn \
    "$BIN" serve --role all --data-dir "$work/data" >"$work/out" 2>"$work/err" &
  local server=$!
  trap "kill $server 2>/dev/null || true" EXIT
  for _ in $(seq 1 200); do curl -sf $MG/readyz >/dev/null && break; sleep 0.1; done
  local admin; admin=$(cat "$work/data/admin.key")
  curl -sf -X POST $MG/api/v1/tenants -H "Authorization: Bearer $admin" -H "$J" -d '{"name":"acme"}' >/dev/null
  local key; key=$(curl -sf -X POST $MG/api/v1/tenants/acme/keys -H "Authorization: Bearer $admin" -H "$J" \
    -d '{"name":"load","role":"developer"}' | python3 -c 'import json,sys; print(json.load(sys.stdin)["key"])')
  "$BIN" push --url $MG --key "$key" --task embedding "$MODEL_DIR" acme/minilm >/dev/null
  # Warm: the first call loads the model.
  curl -sf $MG/v1/embeddings -H "Authorization: Bearer $key" -H "$J" -d '{"model":"minilm","input":"warm up"}' >/dev/null
  echo "### $1: $3 clients, $SECONDS_ s, queue_depth $2"
  local status=0
  "$ROOT/target/release/examples/load" $MG "$key" acme minilm $server "$3" "$SECONDS_" "$4" "$5" || status=$?
  kill $server; wait $server 2>/dev/null || true
  rm -rf "$work"
  if [ -n "$db" ]; then psql "$DATABASE_URL" -qc "DROP DATABASE $db" >/dev/null; fi
  return $status
}

run_phase load 256 "$CLIENTS" mixed ok
run_phase overload 64 $((CLIENTS * 2)) embed shed
