#!/usr/bin/env bash
# Measures what a newcomer sees with `modelgate dev` and all-MiniLM-L6-v2:
#   - upload speed of model.safetensors (87 MiB) through PUT .../files/...
#   - cold-start latency: the first /v1/embeddings call after `dev` starts (fetch + load + infer)
#   - warm latency of a one-sentence request (N sequential calls: p50 / p90 / p99)
#   - peak resident memory of the dev process after the uploads and at the end
#   - throughput: 1,024 sentences of 5-30 words sent by concurrent clients (sentences/s), and,
#     when TORCH_PYTHON names a Python with sentence-transformers, PyTorch's encode(batch_size=32)
#     on the same sentences in the same run
# Usage: bench/quickstart.sh MODEL_DIR [N]   (builds the release binary first)
set -euo pipefail
MODEL_DIR=$(cd "${1:?usage: bench/quickstart.sh MODEL_DIR [N]}" && pwd)
N=${2:-200}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cargo build --release --quiet --manifest-path "$ROOT/Cargo.toml"
BIN=$ROOT/target/release/modelgate
WORK=$(mktemp -d)
PORT=18080
MG=http://127.0.0.1:$PORT
cd "$WORK"
RUST_LOG=warn "$BIN" dev --listen 127.0.0.1:$PORT >dev.out 2>dev.err &
DEV=$!
trap 'kill $DEV 2>/dev/null; rm -rf "$WORK"' EXIT
for _ in $(seq 1 100); do curl -sf $MG/healthz >/dev/null && break; sleep 0.1; done
ADMIN=$(cat modelgate-data/admin.key)
J='Content-Type: application/json'
curl -sf -X POST $MG/api/v1/tenants -H "Authorization: Bearer $ADMIN" -H "$J" -d '{"name":"acme"}' >/dev/null
KEY=$(curl -sf -X POST $MG/api/v1/tenants/acme/keys -H "Authorization: Bearer $ADMIN" -H "$J" \
  -d '{"name":"bench","role":"developer"}' | sed -E 's/.*"key":"([^"]+)".*/\1/')
A="Authorization: Bearer $KEY"
curl -sf -X POST $MG/api/v1/tenants/acme/models -H "$A" -H "$J" -d '{"name":"minilm","task":"embedding"}' >/dev/null
curl -sf -X POST $MG/api/v1/tenants/acme/models/minilm/versions -H "$A" >/dev/null
BASE=$MG/api/v1/tenants/acme/models/minilm/versions/1/files
for f in config.json tokenizer.json modules.json 1_Pooling/config.json sentence_bert_config.json; do
  curl -sf -X PUT "$BASE/$f" -H "$A" --data-binary "@$MODEL_DIR/$f" >/dev/null
done
SIZE=$(stat -c %s "$MODEL_DIR/model.safetensors")
UP=$(curl -sf -o /dev/null -w '%{time_total}' -X PUT "$BASE/model.safetensors" -H "$A" --data-binary "@$MODEL_DIR/model.safetensors")
HWM_UPLOAD=$(awk '/VmHWM/ {print $2}' /proc/$DEV/status)
curl -sf -X POST $MG/api/v1/tenants/acme/models/minilm/versions/1/commit -H "$A" >/dev/null
BODY='{"model":"minilm@1","input":"A man is eating food."}'
COLD=$(curl -sf -o /dev/null -w '%{time_total}' $MG/v1/embeddings -H "$A" -H "$J" -d "$BODY")
for _ in $(seq 1 "$N"); do curl -sf -o /dev/null -w '%{time_total}\n' $MG/v1/embeddings -H "$A" -H "$J" -d "$BODY"; done >warm.txt
python3 - "$MG" "$KEY" "$MODEL_DIR" "${TORCH_PYTHON:-}" <<'PY'
import json, random, subprocess, sys, threading, time, urllib.request
mg, key, model_dir, torch_python = sys.argv[1:5]
words = ("a man woman child dog cat is are was eating playing riding guitar horse food bread the on in "
         "with of and quickly slowly big small red green house street park river music plays sings runs").split()
rng = random.Random(0)
sentences = [" ".join(rng.choice(words) for _ in range(rng.randint(5, 30))) + "." for _ in range(1024)]
def send(batch):
    body = json.dumps({"model": "minilm@1", "input": batch}).encode()
    req = urllib.request.Request(f"{mg}/v1/embeddings", body, {"Authorization": f"Bearer {key}", "Content-Type": "application/json"})
    with urllib.request.urlopen(req) as r:
        assert len(json.load(r)["data"]) == len(batch)
def run(clients, per_request):
    batches = [sentences[i:i + per_request] for i in range(0, len(sentences), per_request)]
    lock, started = threading.Lock(), time.perf_counter()
    def worker():
        while True:
            with lock:
                if not batches: return
                b = batches.pop()
            send(b)
    threads = [threading.Thread(target=worker) for _ in range(clients)]
    [t.start() for t in threads]; [t.join() for t in threads]
    return len(sentences) / (time.perf_counter() - started)
run(4, 32)  # warm up
for clients, per_request in [(1, 32), (4, 32), (8, 16), (16, 8)]:
    print(f"throughput, {clients} clients x {per_request} sentences per request: {run(clients, per_request):.0f} sentences/s")
if torch_python:
    code = ("import json,sys,time; from sentence_transformers import SentenceTransformer; s=json.load(sys.stdin); "
            "m=SentenceTransformer(sys.argv[1], device='cpu'); m.encode(s[:64], batch_size=32); t=time.perf_counter(); "
            "m.encode(s, batch_size=32); print(len(s)/(time.perf_counter()-t))")
    env = dict(__import__("os").environ, HF_HUB_OFFLINE="1")
    out = subprocess.run([torch_python, "-c", code, model_dir], input=json.dumps(sentences), capture_output=True, text=True, check=True, env=env)
    print(f"PyTorch sentence-transformers encode(batch_size=32), same sentences, same run: {float(out.stdout):.0f} sentences/s")
PY
HWM_END=$(awk '/VmHWM/ {print $2}' /proc/$DEV/status)
python3 - "$SIZE" "$UP" "$COLD" warm.txt "$HWM_UPLOAD" "$HWM_END" <<'PY'
import sys
size, up, cold, path = int(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
hwm_upload, hwm_end = int(sys.argv[5]) / 1024, int(sys.argv[6]) / 1024
warm = sorted(float(x) * 1000 for x in open(path))
q = lambda p: warm[min(len(warm) - 1, int(p * len(warm)))]
print(f"upload model.safetensors: {size / 2**20:.1f} MiB in {up:.2f} s = {size / 2**20 / up:.0f} MiB/s")
print(f"peak RSS of the dev process: {hwm_upload:.0f} MiB after all uploads, {hwm_end:.0f} MiB with the model loaded and served")
print(f"cold first embedding (fetch + verify + load + infer): {cold * 1000:.0f} ms")
print(f"warm one-sentence embedding over {len(warm)} sequential calls: p50 {q(0.5):.1f} ms, p90 {q(0.9):.1f} ms, p99 {q(0.99):.1f} ms")
PY
