#!/usr/bin/env bash
# Reproduces the gateway tables of BENCHMARKS.md: the canned upstream measured directly and
# through `llmops serve` (default pipeline, then the full production pipeline with every request
# a cache miss), at constant rates, streaming and not, plus memory with concurrent slow streams
# (on a gateway of its own, so that the rate cells' peaks do not count).
#
# Usage: bash tools/bench-gateway.sh [RATES] [SECONDS] [REPEAT]   (default: 500,1000,2000,5000 10 3)
# Each cell is measured REPEAT times (direct and gateway alternating); medians are reported.
# Writes ${CARGO_TARGET_DIR:-target}/bench/gateway.md.
set -euo pipefail
cd "$(dirname "$0")/.."
rates="${1:-500,1000,2000,5000}"
secs="${2:-10}"
repeat="${3:-3}"
target="${CARGO_TARGET_DIR:-target}"
bin="$target/release"
out="$target/bench"
mkdir -p "$out"
cargo build --release -p llmops-cli -p llmops-loadgen >&2
LOADGEN_API_KEY="sk-bench-$(date +%s)"
LLMOPS_AUDIT_KEY="$(printf '5a%.0s' $(seq 32))"
export LOADGEN_API_KEY LLMOPS_AUDIT_KEY
{
  echo "machine: $(nproc) cores, $(lscpu | sed -n 's/^Model name: *//p'), $(date -u +%F), commit $(git rev-parse --short HEAD)"
  echo
  echo "### Default pipeline (telemetry, routing)"
  echo
  "$bin/llmops-loadgen" matrix --llmops "$bin/llmops" --rates "$rates" \
      --duration "$secs" --repeat "$repeat" --streams 0
  echo
  echo "### Memory (a fresh gateway, default pipeline: idle, then concurrent slow streams)"
  echo
  "$bin/llmops-loadgen" matrix --llmops "$bin/llmops" --rates 100 --duration 2 --modes json \
      --streams 1000,5000
  echo
  echo "### Full pipeline (auth, ceiling, budget, exact cache on the miss path, PII redaction, audit batched, telemetry)"
  echo
  "$bin/llmops-loadgen" matrix --llmops "$bin/llmops" --rates "$rates" \
      --duration "$secs" --repeat "$repeat" --streams 0 --unique --extra-config tools/loadgen/full-pipeline.toml
} | tee "$out/gateway.md"
