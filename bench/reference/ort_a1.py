#!/usr/bin/env python3
"""Where ONNX Runtime spends MnasNet's inference time, by op type, for comparison with mnas.

Usage: ort_a1.py MODEL.onnx [--runs 30] [--warmup 5] [--threads 1]

  mnas export onnx --arch mnasnet-a1 --out /tmp/a1.onnx      # the graph mnas measures (BN folded)
  taskset -c 1 python bench/reference/ort_a1.py /tmp/a1.onnx
  cargo run --release -p mnas-latency --example op_breakdown -- mnasnet-a1 224 30   # mnas's split

Prints `latency_ms: X` (median of --runs timed runs, as ort_latency.py), then a profiled run set:
the median per-node kernel time of ORT's profiler, summed by category. Categories follow the node
names mnas's exporter writes (blocks.i.j.conv_pw / conv_dw / se.* / conv_pwl / add, conv_stem,
conv_head, global_pool, classifier); ORT fuses Conv+Relu, so an activation counts with its conv,
as in the mnas example. Lines: `CAT <category> <ms> <share>`, `TOP <node> <category> <ms>`.
Exit status: 0 on success, 3 when numpy or onnxruntime is missing, 2 on bad arguments.
"""

import argparse
import collections
import json
import os
import statistics
import sys
import tempfile
import time


def category(node):
    if ".se." in node:
        return "SE"
    if "conv_dw" in node:
        return "depthwise"
    if "conv_stem" in node:
        return "stem (full conv)"
    if any(k in node for k in ("conv_pwl", "conv_pw", "conv_head", ".skip.conv")):
        return "pointwise"
    if node.endswith(".conv") or ".conv_" in node:
        return "full conv"
    if node.endswith(".add") or ".skip" in node:
        return "residual add"
    if any(k in node for k in ("global_pool", "flatten", "classifier")):
        return "pool + classifier"
    return "other"


def main():
    parser = argparse.ArgumentParser(description="ONNX Runtime latency and per-op-type profile of a model")
    parser.add_argument("model")
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    if args.runs < 1 or args.warmup < 0 or args.threads < 1:
        parser.error("--runs and --threads must be at least 1, --warmup at least 0")
    try:
        import numpy as np
        import onnxruntime as ort
    except ImportError as e:
        print(f"ort_a1: missing Python module ({e}); pip install onnxruntime numpy", file=sys.stderr)
        sys.exit(3)

    def session(profile_dir=None):
        so = ort.SessionOptions()
        so.intra_op_num_threads = args.threads
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
        if profile_dir:
            so.enable_profiling = True
            so.profile_file_prefix = os.path.join(profile_dir, "ort")
        return ort.InferenceSession(args.model, sess_options=so, providers=["CPUExecutionProvider"])

    sess = session()
    inp = sess.get_inputs()[0]
    shape = [d if isinstance(d, int) and d > 0 else 1 for d in inp.shape]
    feed = {inp.name: np.random.default_rng(0).standard_normal(shape, dtype=np.float32)}
    for _ in range(args.warmup):
        sess.run(None, feed)
    times = []
    for _ in range(args.runs):
        start = time.perf_counter()
        sess.run(None, feed)
        times.append((time.perf_counter() - start) * 1e3)
    times.sort()
    print(f"onnxruntime {ort.__version__}, {args.threads} thread(s), {args.runs} runs, min {times[0]:.3f} ms")
    print(f"latency_ms: {statistics.median(times):.4f}")

    with tempfile.TemporaryDirectory() as tmp:
        prof = session(tmp)
        for _ in range(args.warmup):
            prof.run(None, feed)
        for _ in range(args.runs):
            prof.run(None, feed)
        with open(prof.end_profiling()) as f:
            events = json.load(f)
    per_node = collections.defaultdict(list)
    for e in events:
        name = e.get("name", "")
        if e.get("cat") == "Node" and name.endswith("_kernel_time"):
            per_node[name[: -len("_kernel_time")]].append(e["dur"] / 1e3)
    keep = args.runs  # the last --runs occurrences of each node: the warm-up runs are profiled too
    medians = {n: statistics.median(v[-keep:]) for n, v in per_node.items()}
    total = sum(medians.values())
    by_cat = collections.defaultdict(float)
    for n, ms in medians.items():
        by_cat[category(n)] += ms
    for cat in sorted(by_cat):
        print(f"CAT {cat} {by_cat[cat]:.3f} ms {100 * by_cat[cat] / total:.1f}%")
    print(f"TOTAL {total:.3f} ms (sum of node medians)")
    for n, ms in sorted(medians.items(), key=lambda kv: -kv[1])[:15]:
        print(f"TOP {n} {category(n)} {ms:.3f} ms")


if __name__ == "__main__":
    main()
