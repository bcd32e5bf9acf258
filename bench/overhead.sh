#!/usr/bin/env bash
# Gateway overhead, side by side in one run, on loopback with the same tiny embedding model:
#   (a) wrk -> bench/shim.rs (HTTP + JSON -> the runner's Embed over gRPC; nothing else)
#   (b) wrk -> nginx (Debian package, reverse proxy with keep-alive upstream) -> the shim
#   (c) wrk -> modelgate gateway (auth, limits, resolve, route, gRPC, metering) -> the runner
# nginx adds b - a; modelgate adds c - a. ROUNDS rounds, each running the three setups in
# turn (a warm-up, then DURATION seconds of wrk with CONNECTIONS connections on one thread);
# the medians of p50, p99 and requests/s over the rounds are reported, since a shared 2-core
# machine drifts from minute to minute.
# Needs wrk and nginx (apt-get install wrk nginx).
# Usage: bench/overhead.sh [DURATION] [CONNECTIONS] [ROUNDS]
set -euo pipefail
DURATION=${1:-15}
CONNECTIONS=${2:-8}
ROUNDS=${3:-3}
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
# Two processes on one host: only one could hold the default metrics listener.
[metrics]
enabled = false
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

"$SHIM" serve "$SHIM_AT" "http://$RUNNER" "$WORK/blobs" "$WORK/model" "$WORK/data/tls" >"$WORK/shim.log" 2>&1 &
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

run() { # name url round
  wrk -t1 -c"$CONNECTIONS" -d3s -s "$WORK/post.lua" "$2/v1/embeddings" >/dev/null
  wrk -t1 -c"$CONNECTIONS" -d"${DURATION}s" --latency -s "$WORK/post.lua" "$2/v1/embeddings" >"$WORK/$1.$3.txt"
}
echo "--- $CONNECTIONS connections, ${DURATION}s each, $ROUNDS rounds, CPU: $(grep -m1 "model name" /proc/cpuinfo | cut -d: -f2- | sed "s/^ //") ($(nproc) cores)"
for round in $(seq 1 "$ROUNDS"); do
  run shim "http://$SHIM_AT" "$round"
  run nginx "http://$NGINX_AT" "$round"
  run modelgate "$MG" "$round"
done
python3 - "$WORK" "$ROUNDS" <<'PY'
import re, statistics, sys
work, rounds = sys.argv[1], int(sys.argv[2])
def ms(v, unit): return float(v) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]
def read(name, r):
    text = open(f"{work}/{name}.{r}.txt").read()
    p = {m.group(1): ms(m.group(2), m.group(3)) for m in re.finditer(r"^\s+(50|99)%\s+([\d.]+)(us|ms|s)", text, re.M)}
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1))
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    assert not errors, f"{name} round {r}: {errors.group(0)}"
    return p["50"], p["99"], rps
res = {}
for name in ("shim", "nginx", "modelgate"):
    runs = [read(name, r) for r in range(1, rounds + 1)]
    res[name] = [statistics.median(x) for x in zip(*runs)]
    print(f"{name:10s} p50 {res[name][0]:.3f} ms  p99 {res[name][1]:.3f} ms  {res[name][2]:8.0f} req/s   rounds' p50: "
          + " ".join(f"{r[0]:.3f}" for r in runs))
a, b, c = res["shim"], res["nginx"], res["modelgate"]
nginx, mg = b[0] - a[0], c[0] - a[0]
ratio = f"{mg / nginx:.2f}x nginx" if nginx > 0 else "nginx added nothing measurable"
print(f"added p50: nginx {nginx:.3f} ms, modelgate {mg:.3f} ms ({ratio})")
print(f"added p99: nginx {b[1] - a[1]:.3f} ms, modelgate {c[1] - a[1]:.3f} ms")
PY
