#!/usr/bin/env bash
# llama.cpp's batched decode on the generation bench model (bench/gen_model.rs, Q8_0 GGUF): the
# reference issue 24's scheduler is measured against. llama.cpp is built from the sources PyPI's
# llama-cpp-python source package ships (cmake and g++ from Debian), cached in .ci-cache/llamacpp;
# only this benchmark builds it, never .ci/run.
# Usage: bench/llamacpp.sh [STREAMS, comma-separated] [TOKENS]
set -euo pipefail
STREAMS=${1:-1,2,4,8,16}
TOKENS=${2:-128}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
CACHE=$ROOT/.ci-cache/llamacpp
VERSION=0.3.36
SRC=$CACHE/llama_cpp_python-$VERSION/vendor/llama.cpp
if [ ! -x "$SRC/build/bin/llama-batched-bench" ]; then
  mkdir -p "$CACHE"
  if [ ! -d "$SRC" ]; then
    # The index answers the sdist's URL relative to the JSON's own.
    META=https://pypi.org/pypi/llama-cpp-python/json
    URL=$(curl -sf "$META" | python3 -c 'import json,sys,urllib.parse
d = json.load(sys.stdin)
files = d.get("releases", {}).get(sys.argv[2]) or d["urls"]
print(urllib.parse.urljoin(sys.argv[1], [f["url"] for f in files if f["packagetype"] == "sdist"][0]))' "$META" "$VERSION")
    curl -sfL -o "$CACHE/src.tar.gz" "$URL"
    tar xzf "$CACHE/src.tar.gz" -C "$CACHE"
  fi
  command -v cmake >/dev/null || { echo "needs cmake (apt-get install cmake)"; exit 1; }
  cmake -S "$SRC" -B "$SRC/build" -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=ON -DLLAMA_CURL=OFF \
    -DLLAMA_BUILD_TESTS=OFF >/dev/null
  cmake --build "$SRC/build" -j"$(nproc)" --target llama-batched-bench llama-server >/dev/null
fi
VENV=$ROOT/.ci-cache/venv
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
"$VENV/bin/python" -c 'import numpy' 2>/dev/null || "$VENV/bin/pip" install -q numpy
cargo build --release --quiet --manifest-path "$ROOT/Cargo.toml" --example gen_model
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
"$ROOT/target/release/examples/gen_model" "$WORK/models"
"$VENV/bin/python" "$ROOT/bench/gguf_vocab.py" "$WORK/models/q8/model.gguf" "$WORK/q8.gguf" \
  "$WORK/models/q8/tokenizer.json" "$WORK/models/f32/config.json" "$SRC/gguf-py"
echo "CPU: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //') ($(nproc) cores), llama.cpp from llama-cpp-python $VERSION"
"$SRC/build/bin/llama-batched-bench" -m "$WORK/q8.gguf" -c 4096 -b 512 -ub 512 -npp 8 -ntg "$TOKENS" \
  -npl "$STREAMS" -t "$(nproc)" 2>&1 | grep -E '^\|'
