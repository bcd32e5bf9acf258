#!/usr/bin/env bash
# The victim's latency while another tenant attacks (tests/e2e/blast_radius.rs), judged as a
# speed target: its two tests (dev, and two runners) run alone, one after the other (no other
# test shares the CPU), three times, and each must keep the victim's p99 under attack within
# FACTOR (default 3) of its unloaded p99.
# Run it on an otherwise idle machine; it prints the CPU and each run's figures.
set -euo pipefail
cd "$(dirname "$0")/.."
FACTOR=${1:-3}
echo "CPU: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //') ($(nproc) cores)"
cargo test --release --test e2e --no-run
for run in 1 2 3; do
  echo "--- run $run"
  MODELGATE_BENCH_VICTIM_P99_FACTOR=$FACTOR cargo test --release --test e2e -- blast_radius:: \
    --test-threads 1 --nocapture 2>&1 | grep -E "^blast radius:|^test blast|panicked|test result"
done
