#!/usr/bin/env bash
# PPO vs random search on the real pipeline (the default proxy training + measured latency),
# several seeds each, then one comparison: `mnas report` prints every run's last-quarter mean
# reward, each strategy's mean +- standard error over its seeds, and whether their difference
# exceeds its standard error.
#
# Usage: bench/search_compare.sh OUT_DIR [extra `mnas search` options...]
# Each run is the default `mnas search` with $TRIALS models (40, ~10 min on 2 cores), so 3 seeds x 2
# strategies take about an hour. An interrupted comparison resumes: finished runs are kept,
# unfinished ones continue (`mnas search --resume`).
set -euo pipefail
out=${1:?usage: bench/search_compare.sh OUT_DIR [mnas search options]}
shift
mnas=${MNAS:-target/release/mnas}
seeds=${SEEDS:-"0 1 2"}
strategies=${STRATEGIES:-"ppo random"}
mkdir -p "$out"
runs=()
for seed in $seeds; do
  for strategy in $strategies; do
    run="$out/$strategy-$seed"
    echo "$(date -u +%H:%M:%S) $run (load $(cut -d' ' -f1-3 /proc/loadavg))"
    if [ -f "$run/search.sqlite" ]; then
      "$mnas" search --resume "$run" >"$run.log" 2>&1
    else
      "$mnas" search --out "$run" --strategy "$strategy" --seed "$seed" --trials "${TRIALS:-40}" "$@" >"$run.log" 2>&1
    fi
    runs+=("$run")
  done
done
"$mnas" report "${runs[@]}" --out "$out/compare.html"
