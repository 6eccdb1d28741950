#!/usr/bin/env bash
# Broker figures (issue: trials on Redis Streams workers), measured on this machine:
#  1. overhead per trial: a search of minimal trials (32 images), one per step, through a local
#     redis-server and one idle worker; the search prints, per trial, the median time from dispatch
#     to result and the worker's own time: their difference is dispatch, pick-up, result and ack;
#  2. wall time of the same real search (default proxy recipe) with 1 vs 2 workers, one training
#     thread each.
#   bench/broker.sh [TRIALS]          (MNAS=path/to/mnas, default target/release/mnas; TRIALS default 8)
# Starts its own redis-server in a temp directory and stops it by its pid. Run on a quiet machine.
set -euo pipefail
cd "$(dirname "$0")/.."
MNAS=${MNAS:-target/release/mnas}
TRIALS=${1:-8}
D=$(mktemp -d)
command -v redis-server >/dev/null || { echo "redis-server not found: apt-get install -y --no-install-recommends redis-server" >&2; exit 2; }
redis-server --port 0 --unixsocket "$D/r.sock" --save '' --appendonly no --daemonize yes --dir "$D" --pidfile "$D/r.pid" >/dev/null
trap 'kill "$(cat "$D/r.pid")" 2>/dev/null; rm -rf "$D"' EXIT
for _ in $(seq 50); do [[ -S "$D/r.sock" ]] && break; sleep 0.1; done
URL="unix://$D/r.sock"
echo "load average: $(cut -d' ' -f1-3 /proc/loadavg)"
COMMON=(--resolution 32 --latency-runs 2 --target 1.5 --latency-store "$D/lat.sqlite")
MIN=(--proxy-images 32 --proxy-epochs 1 --proxy-val-images 50 --trials 16)

secs() { local t0 t1; t0=$(date +%s.%N); "$@" >/dev/null 2>"$D/err" || { cat "$D/err" >&2; exit 1; }; t1=$(date +%s.%N); echo "$t1 - $t0" | bc -l; }

"$MNAS" worker --broker "$URL" --name w --threads 2 --idle-exit 30 >/dev/null 2>&1 & WP=$!
"$MNAS" search --out "$D/min-broker" --broker "$URL" "${COMMON[@]}" "${MIN[@]}" --models-per-step 1 2>/dev/null \
  | grep '^workers:' | sed 's/^workers:/overhead, minimal trials, one at a time:/'
kill "$WP"; wait "$WP" 2>/dev/null || true

REAL=(--trials "$TRIALS" --models-per-step 4)
"$MNAS" worker --broker "$URL" --name w1 --threads 1 --idle-exit 60 >/dev/null 2>&1 & W1=$!
one=$(secs "$MNAS" search --out "$D/real-1" --broker "$URL" "${COMMON[@]}" "${REAL[@]}")
"$MNAS" worker --broker "$URL" --name w2 --threads 1 --idle-exit 60 >/dev/null 2>&1 & W2=$!
two=$(secs "$MNAS" search --out "$D/real-2" --broker "$URL" "${COMMON[@]}" "${REAL[@]}")
kill "$W1" "$W2"; wait "$W1" "$W2" 2>/dev/null || true
printf 'real search (%s trials, default proxy, 1 thread per worker): 1 worker %.1f s, 2 workers %.1f s: %.2fx\n' \
  "$TRIALS" "$one" "$two" "$(echo "$one / $two" | bc -l)"
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
