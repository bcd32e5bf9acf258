#!/usr/bin/env bash
# Runs every fuzz target for SECONDS each (default 60) and fails if one finds a crash.
# Needs cargo-fuzz (`cargo install cargo-fuzz`). On a stable toolchain it builds without a
# sanitizer (--sanitizer none, RUSTC_BOOTSTRAP for cargo-fuzz's flags); coverage guidance,
# the targets' assertions and debug assertions (-a: integer overflow panics) still work.
# Each target starts from fuzz/seeds/TARGET. Crashes land in fuzz/artifacts/TARGET/.
set -euo pipefail
cd "$(dirname "$0")"
SECONDS_EACH=${1:-60}
export RUSTC_BOOTSTRAP=1
targets=(safetensors_header gguf_header file_path jwt kserve_infer config_family)
cargo fuzz build --sanitizer none -a
for target in "${targets[@]}"; do
  mkdir -p "corpus/$target"
  echo "--- fuzzing $target for ${SECONDS_EACH}s"
  cargo fuzz run --sanitizer none -a "$target" "corpus/$target" "seeds/$target" -- -max_total_time="$SECONDS_EACH" -print_final_stats=1 2>&1 \
    | grep -E "^(stat::number_of_executed_units|stat::new_units_added|==|SUMMARY|Done)|panicked|Failing input" || true
  if compgen -G "artifacts/$target/crash-*" >/dev/null; then
    echo "$target found a crash: $(ls artifacts/"$target")" >&2
    exit 1
  fi
done
