#!/usr/bin/env bash
# Runs every fuzz target for a short while (CI). Usage: fuzz/run-short.sh [SECONDS]
# cargo-fuzz passes -Z sanitizer flags; RUSTC_BOOTSTRAP lets the stable toolchain take them.
set -euo pipefail
cd "$(dirname "$0")"
secs=${1:-20}
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
for t in $(cargo fuzz list); do
  echo "== fuzz $t for ${secs}s"
  RUSTC_BOOTSTRAP=1 cargo fuzz run "$t" -- -max_total_time="$secs" 2>&1 | grep -E "^Done|ERROR|panicked|SUMMARY" || true
  # A crash leaves an artifact; fail the run if one appeared.
  if compgen -G "artifacts/$t/crash-*" >/dev/null; then echo "fuzz target $t crashed"; exit 1; fi
done
