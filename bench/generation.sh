#!/usr/bin/env bash
# Generation speed on the CPU through the gateway: a small Llama-shaped model (8 layers, width
# 512, 32,000 words; bench/gen_model.rs) as f32 safetensors and as Q8_0 GGUF; three greedy
# generations of 128 tokens each after a warm-up; tokens/s = completion tokens / wall time.
# Usage: bench/generation.sh
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cargo build --release --quiet --manifest-path "$ROOT/Cargo.toml" --bin modelgate --example gen_model
WORK=$(mktemp -d)
PORT=18092
MG=http://127.0.0.1:$PORT J='Content-Type: application/json'
trap 'kill $DEV 2>/dev/null || true; rm -rf "$WORK"' EXIT
"$ROOT/target/release/examples/gen_model" "$WORK/models"
(cd "$WORK" && RUST_LOG=warn "$ROOT/target/release/modelgate" dev --listen 127.0.0.1:$PORT >dev.out 2>dev.err) &
DEV=$!
for _ in $(seq 1 100); do curl -sf $MG/healthz >/dev/null && break; sleep 0.1; done
ADMIN=$(cat "$WORK/modelgate-data/admin.key")
curl -sf -X POST $MG/api/v1/tenants -H "Authorization: Bearer $ADMIN" -H "$J" -d '{"name":"acme"}' >/dev/null
KEY=$(curl -sf -X POST $MG/api/v1/tenants/acme/keys -H "Authorization: Bearer $ADMIN" -H "$J" \
  -d '{"name":"bench","role":"developer"}' | python3 -c 'import json,sys; print(json.load(sys.stdin)["key"])')
A="Authorization: Bearer $KEY"
for m in f32 q8; do
  curl -sf -X POST $MG/api/v1/tenants/acme/models -H "$A" -H "$J" -d "{\"name\":\"$m\",\"task\":\"generation\"}" >/dev/null
  curl -sf -X POST $MG/api/v1/tenants/acme/models/$m/versions -H "$A" >/dev/null
  for f in "$WORK/models/$m"/*; do
    curl -sf -X PUT "$MG/api/v1/tenants/acme/models/$m/versions/1/files/$(basename "$f")" -H "$A" -T "$f" >/dev/null
  done
  curl -sf -X POST $MG/api/v1/tenants/acme/models/$m/versions/1/commit -H "$A" >/dev/null
done
python3 - "$MG" "$KEY" <<'PY'
import json, sys, time, urllib.request
mg, key = sys.argv[1:3]
def complete(model, tokens):
    body = json.dumps({"model": model, "prompt": "w11 w22 w33 w44 w55 w66 w77 w88", "max_tokens": tokens, "temperature": 0}).encode()
    req = urllib.request.Request(f"{mg}/v1/completions", body, {"Authorization": f"Bearer {key}", "Content-Type": "application/json"})
    started = time.perf_counter()
    with urllib.request.urlopen(req) as r:
        usage = json.load(r)["usage"]
    return usage["completion_tokens"], time.perf_counter() - started
for model in ["f32", "q8"]:
    complete(model, 8)  # load and warm up
    runs = [complete(model, 128) for _ in range(3)]
    tokens, seconds = sum(r[0] for r in runs), sum(r[1] for r in runs)
    print(f"{model}: {tokens} tokens in {seconds:.2f} s = {tokens / seconds:.1f} tokens/s (3 greedy generations of 128 tokens)")
PY
