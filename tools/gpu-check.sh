#!/usr/bin/env bash
# The prepared device check (README, section GPUs).
#
#   tools/gpu-check.sh build   where the Rust toolchain is: builds wfpipe and the gpu_check
#                              example with `--features cuda` (release), stripped and
#                              compressed, into gpu-check/ (git-ignored)
#   tools/gpu-check.sh run     on a machine with an NVIDIA GPU, its driver and NVRTC
#                              (libnvrtc), from the repository root with gpu-check/ in it:
#                              no Rust toolchain, no network; writes $OUT/summary.md
#                              (OUT defaults to gpu-check/) and stops within 8 minutes
#
# The run holds (a) parity of the relational transformer on CUDA against the CPU backend
# and (b) the time of a training and an Euler step, both from the gpu_check example
# (stages/examples/gpu_check.rs), and (c) the smoke pipeline end to end with
# `--backend cuda`, its flow and sample stages requesting a GPU each.
set -uo pipefail
cd "$(dirname "$0")/.."
BUNDLE=gpu-check

case "${1:-}" in
build)
  set -e
  export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/wfpipe-cuda-release}"
  cargo build --release --features cuda --locked --bin wfpipe
  cargo build --release --features cuda --locked -p wfpipe-stages --example gpu_check
  mkdir -p "$BUNDLE"
  for bin in wfpipe examples/gpu_check; do
    name=$(basename "$bin")
    strip -o "$BUNDLE/$name" "$CARGO_TARGET_DIR/release/$bin"
    gzip -9 -f "$BUNDLE/$name"
  done
  du -ch "$BUNDLE"/*.gz "$0" | tail -1
  ;;
run)
  OUT="${OUT:-$BUNDLE}"
  mkdir -p "$OUT"
  SUMMARY="$OUT/summary.md"
  WORK=$(mktemp -d)
  trap 'rm -rf "$WORK"' EXIT
  for name in wfpipe gpu_check; do
    gzip -dc "$BUNDLE/$name.gz" > "$WORK/$name" && chmod +x "$WORK/$name" || { echo "missing $BUNDLE/$name.gz: run \`$0 build\` first" >&2; exit 2; }
  done
  {
    echo "# wfpipe GPU check"
    echo
    echo "$(date -u +%FT%TZ), $(git rev-parse --short HEAD 2>/dev/null || echo 'no git')"
    echo
    echo '```'
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv 2>&1 || echo "nvidia-smi not found"
    echo '```'
    echo
  } > "$SUMMARY"

  # (a) and (b): 5 minutes at most.
  start=$(date +%s)
  timeout 300 "$WORK/gpu_check" --out "$WORK/check.md" 2> "$OUT/gpu_check.log"
  rc=$?
  if [ -f "$WORK/check.md" ]; then sed 's/^# /## /; s/^## /### /' "$WORK/check.md" >> "$SUMMARY"; fi
  echo -e "\ngpu_check: exit $rc in $(( $(date +%s) - start )) s (log: gpu_check.log)\n" >> "$SUMMARY"

  # (c): the smoke pipeline on CUDA, 2.5 minutes at most.
  start=$(date +%s)
  gpu=()
  for stage in toy-flow uci-flow toy-samples uci-samples; do gpu+=(--set "$stage.resources.gpus=1"); done
  timeout 150 "$WORK/wfpipe" --log-format json run pipelines/smoke.toml --backend cuda "${gpu[@]}" \
    --cache "$WORK/cache" > "$OUT/smoke.jsonl" 2> "$OUT/smoke.log"
  rc=$?
  {
    echo "## Smoke pipeline with --backend cuda"
    echo
    echo "exit $rc in $(( $(date +%s) - start )) s; instances that ran on CUDA (from their manifests):"
    echo
    echo '```'
    grep -l '"backend": "cuda"' "$WORK"/cache/entries/*/*/manifest.json 2>/dev/null | wc -l
    tail -n 5 "$OUT/smoke.log"
    echo '```'
  } >> "$SUMMARY"
  cat "$SUMMARY"
  ;;
*)
  echo "usage: $0 build|run" >&2
  exit 2
  ;;
esac
