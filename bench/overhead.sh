#!/usr/bin/env bash
# Gateway overhead, side by side in one run, on loopback with the same tiny embedding model:
#   (a) wrk -> bench/shim.rs (HTTP + JSON -> the runner's Embed over gRPC; nothing else)
#   (b) wrk -> nginx (Debian package, reverse proxy with keep-alive upstream) -> the shim
#   (c) wrk -> modelgate gateway (auth, limits, resolve, route, gRPC, metering) -> the runner
# nginx adds b - a; modelgate adds c - a. Each setup: a warm-up, then DURATION seconds of
# wrk with CONNECTIONS connections on one thread; p50 / p99 and requests/s.
# Needs wrk and nginx (apt-get install wrk nginx). Usage: bench/overhead.sh [DURATION] [CONNECTIONS]
set -euo pipefail
DURATION=${1:-15}
CONNECTIONS=${2:-8}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cargo build --release --quiet --manifest-path "$ROOT/Cargo.toml" --bin modelgate --example shim
BIN=$ROOT/target/release/modelgate
SHIM=$ROOT/target/release/examples/shim
WORK=$(mktemp -d)
PIDS=()
trap 'kill "${PIDS[@]}" 2>/dev/null; wait 2>/dev/null; rm -rf "$WORK"' EXIT
RUNNER=127.0.0.1:18150 GATEWAY=127.0.0.1:18180 SHIM_AT=127.0.0.1:18190 NGINX_AT=127.0.0.1:18191

"$SHIM" write-model "$WORK/model"
mkdir -p "$WORK/blobs"
cat >"$WORK/modelgate.toml" <<TOML
data_dir = "$WORK/data"
[storage]
url = "file://$WORK/blobs/"
[gateway]
listen = "$GATEWAY"
runners = ["http://$RUNNER"]
[runner]
listen = "$RUNNER"
[log]
filter = "warn"
TOML
MODELGATE_CONFIG=$WORK/modelgate.toml "$BIN" serve --role runner >"$WORK/runner.log" 2>&1 &
PIDS+=($!)
MODELGATE_CONFIG=$WORK/modelgate.toml "$BIN" serve --role gateway >"$WORK/gateway.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 1 100); do curl -sf "http://$GATEWAY/healthz" >/dev/null && break; sleep 0.1; done

MG=http://$GATEWAY J='Content-Type: application/json'
ADMIN=$(cat "$WORK/data/admin.key")
curl -sf -X POST $MG/api/v1/tenants -H "Authorization: Bearer $ADMIN" -H "$J" -d '{"name":"acme"}' >/dev/null
KEY=$(curl -sf -X POST $MG/api/v1/tenants/acme/keys -H "Authorization: Bearer $ADMIN" -H "$J" \
  -d '{"name":"bench","role":"developer"}' | sed -E 's/.*"key":"([^"]+)".*/\1/')
A="Authorization: Bearer $KEY"
curl -sf -X POST $MG/api/v1/tenants/acme/models -H "$A" -H "$J" -d '{"name":"tiny","task":"embedding"}' >/dev/null
curl -sf -X POST $MG/api/v1/tenants/acme/models/tiny/versions -H "$A" >/dev/null
(cd "$WORK/model" && find . -type f | sed 's|^\./||') | while read -r f; do
  curl -sf -X PUT "$MG/api/v1/tenants/acme/models/tiny/versions/1/files/$f" -H "$A" --data-binary "@$WORK/model/$f" >/dev/null
done
curl -sf -X POST $MG/api/v1/tenants/acme/models/tiny/versions/1/commit -H "$A" >/dev/null

"$SHIM" serve "$SHIM_AT" "http://$RUNNER" "$WORK/blobs" "$WORK/model" >"$WORK/shim.log" 2>&1 &
PIDS+=($!)
mkdir -p "$WORK/nginx"
cat >"$WORK/nginx/nginx.conf" <<NGINX
daemon off;
worker_processes 1;
pid $WORK/nginx/nginx.pid;
error_log $WORK/nginx/error.log warn;
events { worker_connections 1024; }
http {
  access_log off;
  client_body_temp_path $WORK/nginx/body;
  proxy_temp_path $WORK/nginx/proxy;
  fastcgi_temp_path $WORK/nginx/fastcgi;
  uwsgi_temp_path $WORK/nginx/uwsgi;
  scgi_temp_path $WORK/nginx/scgi;
  upstream shim { server $SHIM_AT; keepalive 64; }
  server {
    listen $NGINX_AT;
    location / { proxy_pass http://shim; proxy_http_version 1.1; proxy_set_header Connection ""; }
  }
}
NGINX
nginx -c "$WORK/nginx/nginx.conf" -p "$WORK/nginx" &
PIDS+=($!)
for at in $SHIM_AT $NGINX_AT; do
  for _ in $(seq 1 100); do curl -s -o /dev/null "http://$at/" && break; sleep 0.1; done
done

cat >"$WORK/post.lua" <<LUA
wrk.method = "POST"
wrk.body = '{"model":"tiny","input":"the man is playing the guitar"}'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer $KEY"
LUA
# Every setup answers the same embedding (checked once each).
for url in "http://$SHIM_AT" "http://$NGINX_AT" "$MG"; do
  curl -sf "$url/v1/embeddings" -H "$A" -H "$J" -d '{"model":"tiny","input":"the man is playing the guitar"}' \
    | python3 -c 'import json,sys; print(len(json.load(sys.stdin)["data"][0]["embedding"]), "floats from", sys.argv[1])' "$url"
done

run() { # name url
  wrk -t1 -c"$CONNECTIONS" -d3s -s "$WORK/post.lua" "$2/v1/embeddings" >/dev/null
  wrk -t1 -c"$CONNECTIONS" -d"${DURATION}s" --latency -s "$WORK/post.lua" "$2/v1/embeddings" >"$WORK/$1.txt"
  python3 - "$1" "$WORK/$1.txt" <<'PY'
import re, sys
name, text = sys.argv[1], open(sys.argv[2]).read()
def ms(v, unit): return float(v) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]
p = {m.group(1): ms(m.group(2), m.group(3)) for m in re.finditer(r"^\s+(50|99)%\s+([\d.]+)(us|ms|s)", text, re.M)}
rps = float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1))
errors = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
print(f"{name:10s} p50 {p['50']:.3f} ms  p99 {p['99']:.3f} ms  {rps:9.0f} req/s  non-2xx {errors.group(1) if errors else 0}")
open(sys.argv[2] + ".csv", "w").write(f"{p['50']},{p['99']},{rps}\n")
PY
}
echo "--- $CONNECTIONS connections, ${DURATION}s each, $(nproc) cores"
run shim "http://$SHIM_AT"
run nginx "http://$NGINX_AT"
run modelgate "$MG"
python3 - "$WORK" <<'PY'
import sys
w = sys.argv[1]
a, b, c = ([float(x) for x in open(f"{w}/{n}.txt.csv").read().split(",")] for n in ("shim", "nginx", "modelgate"))
nginx, mg = b[0] - a[0], c[0] - a[0]
print(f"added p50: nginx {nginx:.3f} ms, modelgate {mg:.3f} ms ({mg / nginx if nginx > 0 else float('inf'):.2f}x nginx)")
print(f"added p99: nginx {b[1] - a[1]:.3f} ms, modelgate {c[1] - a[1]:.3f} ms")
PY
