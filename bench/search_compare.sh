#!/usr/bin/env bash
# PPO vs random search with the real pipeline (proxy training + measured latency), several seeds,
# one comparison report. Usage: bench/search_compare.sh OUT_DIR [extra `mnas search` options...]
# Defaults are sized for a 2-core machine (~25 min); scale with --trials / --proxy-images.
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
    if [ -f "$run/search.sqlite" ]; then
      "$mnas" search --resume "$run" >/dev/null
    else
      "$mnas" search --out "$run" --strategy "$strategy" --seed "$seed" --trials 16 --models-per-step 4 \
        --proxy-images 1000 --proxy-batch-size 32 "$@" >/dev/null
    fi
    runs+=("$run")
  done
done
"$mnas" report "${runs[@]}" --out "$out/compare.html"
