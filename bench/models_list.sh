#!/usr/bin/env bash
# GET /v1/models with many models: one tenant with COUNT models (default 10,000), of which
# every 20th has only a draft (not listed) and every 10th has an alias `production` (listed
# twice: `name` and `name:production`). One model is made through the API with a version that
# really commits (a tiny LSTM classifier); the rest are copied from it straight into the dev
# SQLite file while the server is stopped, which takes seconds instead of an hour of uploads.
# Then N sequential calls (default 20, after one warm-up): median, p99, and entries listed.
# Usage: bench/models_list.sh [COUNT] [N]
#        MODELGATE_BIN=target/debug/modelgate bench/models_list.sh   uses that binary, no build
set -euo pipefail
COUNT=${1:-10000}
N=${2:-20}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=${MODELGATE_BIN:-}
if [ -z "$BIN" ]; then
  cargo build --release --quiet --manifest-path "$ROOT/Cargo.toml" --bin modelgate
  BIN=$ROOT/target/release/modelgate
fi
BIN=$(cd "$(dirname "$BIN")" && pwd)/$(basename "$BIN")
WORK=$(mktemp -d)
PORT=18094
MG=http://127.0.0.1:$PORT
J='Content-Type: application/json'
DEV=
start_dev() {
  (cd "$WORK" && MODELGATE__METRICS__ENABLED=false RUST_LOG=warn exec "$BIN" dev --listen 127.0.0.1:$PORT \
    >>dev.out 2>>dev.err) &
  DEV=$!
  for _ in $(seq 1 300); do curl -sf $MG/readyz >/dev/null && return; sleep 0.1; done
  echo "modelgate dev did not start; see $WORK/dev.err" >&2; exit 1
}
trap 'if [ -n "$DEV" ]; then kill $DEV 2>/dev/null || true; fi; rm -rf "$WORK"' EXIT
echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //'), $(nproc) cores"
echo "binary: $BIN"

start_dev
ADMIN=$(cat "$WORK/modelgate-data/admin.key")
curl -sf -X POST $MG/api/v1/tenants -H "Authorization: Bearer $ADMIN" -H "$J" -d '{"name":"acme"}' >/dev/null
KEY=$(curl -sf -X POST $MG/api/v1/tenants/acme/keys -H "Authorization: Bearer $ADMIN" -H "$J" \
  -d '{"name":"bench","role":"developer"}' | python3 -c 'import json,sys; print(json.load(sys.stdin)["key"])')
A="Authorization: Bearer $KEY"
python3 - "$WORK/files" <<'PY'
import json, os, struct, sys
d = sys.argv[1]; os.makedirs(d)
shapes = {"embedding.weight": [4, 2], "lstm.weight_ih_l0": [4, 2], "lstm.weight_hh_l0": [4, 1], "dense.weight": [1, 1]}
header, offset = {}, 0
for name, shape in shapes.items():
    size = 4 * shape[0] * shape[1]
    header[name] = {"dtype": "F32", "shape": shape, "data_offsets": [offset, offset + size]}
    offset += size
raw = json.dumps(header).encode(); raw += b" " * (-len(raw) % 8)
open(f"{d}/model.safetensors", "wb").write(struct.pack("<Q", len(raw)) + raw + bytes(offset))
json.dump({"model_type": "lstm_classifier", "vocab_size": 4, "embedding_dim": 2, "hidden_dim": 1, "max_length": 16},
          open(f"{d}/config.json", "w"))
json.dump({"word": 1}, open(f"{d}/vocab.json", "w"))
PY
M=$MG/api/v1/tenants/acme/models
curl -sf -X POST "$M" -H "$A" -H "$J" -d '{"name":"m000000","task":"classification"}' >/dev/null
curl -sf -X POST "$M/m000000/versions" -H "$A" >/dev/null
for f in config.json vocab.json model.safetensors; do
  curl -sf -X PUT "$M/m000000/versions/1/files/$f" -H "$A" --data-binary "@$WORK/files/$f" >/dev/null
done
curl -sf -X POST "$M/m000000/versions/1/commit" -H "$A" >/dev/null
curl -sf -X PUT "$M/m000000/aliases/production" -H "$A" -H "$J" -d '{"version":1}' >/dev/null
kill $DEV; wait $DEV 2>/dev/null || true; DEV=

python3 - "$WORK/modelgate-data/modelgate.db" "$COUNT" <<'PY'
import sqlite3, sys, uuid
db, count = sqlite3.connect(sys.argv[1]), int(sys.argv[2])
cols = lambda t: [r[1] for r in db.execute(f"PRAGMA table_info({t})")]
mcols, vcols = cols("models"), cols("model_versions")
model = dict(zip(mcols, db.execute("SELECT * FROM models WHERE name = 'm000000'").fetchone()))
version = dict(zip(vcols, db.execute("SELECT * FROM model_versions WHERE model_id = ?", (model["id"],)).fetchone()))
alias = db.execute("SELECT updated_by, updated_at FROM aliases WHERE model_id = ?", (model["id"],)).fetchone()
insert = lambda t, c: f"INSERT INTO {t} ({', '.join(c)}) VALUES ({', '.join('?' * len(c))})"
models, versions, aliases = [], [], []
for i in range(1, count):
    m = dict(model, id=str(uuid.uuid4()), name=f"m{i:06d}")
    v = dict(version, id=str(uuid.uuid4()), model_id=m["id"])
    if i % 20 == 0:
        v.update(status="draft", committed_at=None, architecture=None)
    elif i % 10 == 0:
        aliases.append((m["id"], "production", v["id"], 100) + tuple(alias))
    models.append(tuple(m[c] for c in mcols)); versions.append(tuple(v[c] for c in vcols))
with db:
    db.executemany(insert("models", mcols), models)
    db.executemany(insert("model_versions", vcols), versions)
    db.executemany("INSERT INTO aliases (model_id, name, version_id, weight, updated_by, updated_at) "
                   "VALUES (?, ?, ?, ?, ?, ?)", aliases)
one = lambda sql: db.execute(sql).fetchone()[0]
ready = one("SELECT COUNT(DISTINCT model_id) FROM model_versions WHERE status = 'ready'")
print(f"models: {one('SELECT COUNT(*) FROM models')}, with a ready version: {ready}, "
      f"aliases: {one('SELECT COUNT(*) FROM aliases')}")
PY

start_dev
curl -sf $MG/v1/models -H "$A" -o "$WORK/list.json"
for _ in $(seq 1 "$N"); do curl -sf -o /dev/null -w '%{time_total}\n' $MG/v1/models -H "$A"; done >"$WORK/times.txt"
python3 - "$WORK/list.json" "$WORK/times.txt" "$(stat -c %s "$WORK/list.json")" <<'PY'
import json, statistics, sys
listed = json.load(open(sys.argv[1]))["data"]
times = sorted(float(t) * 1000 for t in open(sys.argv[2]))
p99 = times[min(len(times) - 1, int(0.99 * len(times)))]
print(f"GET /v1/models: {len(listed)} entries ({int(sys.argv[3]) / 1024:.0f} KiB); over {len(times)} sequential calls "
      f"median {statistics.median(times):.1f} ms, p99 {p99:.1f} ms, max {times[-1]:.1f} ms")
PY
