#!/usr/bin/env bash
# User-space instructions per MiB of payload, counted by callgrind (repeatable where timings
# are not), for one upload scenario; for the 64-byte scenarios, instructions per call (per
# message on stream_64b, where a "call" is one message of the stream).
#
#   bash benches/callgrind.sh                      # upload_1m: zcrpc_tcp, tonic, tarpc, raw_tcp_simple
#   SYSTEMS="zcrpc_uring tonic" bash benches/callgrind.sh
#   SCENARIO=call_64m N1=2 N2=6 bash benches/callgrind.sh
#   SCENARIO=qps_64b N1=2000 N2=10000 bash benches/callgrind.sh     # per call
#   SCENARIO=stream_64b N1=20000 N2=100000 SYSTEMS="zcrpc_tcp tonic" bash benches/callgrind.sh  # per message
#
# Each system runs `compare --child SYSTEM SCENARIO 0 calls:N` under callgrind twice, with N1
# and N2 counted calls; (Ir(N2) - Ir(N1)) / ((N2 - N1) * MiB per call) cancels start-up,
# connection set-up and the buffers allocated once. Client and server are in the one process,
# so the figure is both ends together. Kernel work (the socket copies) is not counted.
set -euo pipefail

cd "$(dirname "$0")/.."
SCENARIO=${SCENARIO:-upload_1m}
SYSTEMS=${SYSTEMS:-"zcrpc_tcp tonic tarpc raw_tcp_simple"}
N1=${N1:-16}
N2=${N2:-80}

UNIT="instructions/MiB"
case "$SCENARIO" in
  upload_1m | download_1m | segments_4k | stream_1m) MIB=1 ;;
  call_64m) MIB=64 ;;
  qps_64b | latency_64b | latency_64b_pinned) MIB=1; UNIT="instructions/call" ;;
  stream_64b) MIB=1; UNIT="instructions/message" ;;
  *) echo "callgrind.sh: unknown scenario $SCENARIO" >&2; exit 2 ;;
esac

command -v valgrind >/dev/null || { echo "callgrind.sh: valgrind is not installed (apt-get install valgrind)" >&2; exit 2; }
cargo build --release -p rpc-bench --bin compare >&2
BIN=target/release/compare
OUT=$(mktemp -d)
trap 'rm -rf "$OUT"' EXIT

instructions() { # SYSTEM CALLS -> total Ir
  local file="$OUT/$1.$2.out"
  valgrind --tool=callgrind --callgrind-out-file="$file" \
    "$BIN" --child "$1" "$SCENARIO" 0 "calls:$2" >"$OUT/$1.$2.json" 2>"$OUT/$1.$2.log" || {
      echo "callgrind.sh: $1 failed, see below" >&2; tail -5 "$OUT/$1.$2.log" >&2; return 1; }
  if ! grep -q '"metrics"' "$OUT/$1.$2.json"; then
    echo "callgrind.sh: $1: $(cat "$OUT/$1.$2.json")" >&2
    return 1
  fi
  awk '/^(summary|totals):/ { print $2; exit }' "$file"
}

echo "scenario $SCENARIO, $N1 vs $N2 calls, user-space instructions (client + server)"
printf '%-16s %20s\n' system "$UNIT"
for sys in $SYSTEMS; do
  if i1=$(instructions "$sys" "$N1") && i2=$(instructions "$sys" "$N2"); then
    awk -v a="$i1" -v b="$i2" -v n=$((N2 - N1)) -v m="$MIB" -v s="$sys" \
      'BEGIN { printf "%-16s %20.0f\n", s, (b - a) / (n * m) }'
  else
    printf '%-16s %20s\n' "$sys" unavailable
  fi
done
