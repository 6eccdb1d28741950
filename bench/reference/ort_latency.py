#!/usr/bin/env python3
"""Latency of an ONNX model under ONNX Runtime on this CPU: an external engine for `mnas latency`.

Usage: ort_latency.py MODEL.onnx [--runs N] [--warmup W] [--threads T]

  mnas latency --arch mnasnet-a1 --engine "cmd:python3 bench/reference/ort_latency.py {model} --runs {runs}"

Runs the model (CPUExecutionProvider, T intra-op threads, default 1, no inter-op parallelism,
thread spinning off) on a random input of the graph's input shape (a symbolic batch counts as 1),
W untimed runs, then N timed runs. Prints `latency_ms: X`, the median of the timed runs in
milliseconds, as the last line (and p10/p90/min on the line before, for people).
Exit status: 0 on success, 3 when numpy or onnxruntime is missing, 2 on bad arguments.
"""

import argparse
import statistics
import sys
import time

MISSING_HINT = "run .ci/run, or: pip install onnxruntime numpy"


def main():
    parser = argparse.ArgumentParser(description="ONNX Runtime latency of a model (median of N runs)")
    parser.add_argument("model")
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    if args.runs < 1 or args.warmup < 0 or args.threads < 1:
        parser.error("--runs and --threads must be at least 1, --warmup at least 0")

    try:
        import numpy as np
        import onnxruntime as ort
    except ImportError as e:
        print(f"ort_latency: missing Python module ({e}); {MISSING_HINT}", file=sys.stderr)
        sys.exit(3)

    so = ort.SessionOptions()
    so.intra_op_num_threads = args.threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    # Spinning threads burn the core between runs and blur a shared machine's timings.
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    sess = ort.InferenceSession(args.model, sess_options=so, providers=["CPUExecutionProvider"])
    inp = sess.get_inputs()[0]
    shape = [d if isinstance(d, int) and d > 0 else 1 for d in inp.shape]
    x = np.random.default_rng(0).standard_normal(shape, dtype=np.float32)
    feed = {inp.name: x}

    for _ in range(args.warmup):
        sess.run(None, feed)
    times = []
    for _ in range(args.runs):
        start = time.perf_counter()
        sess.run(None, feed)
        times.append((time.perf_counter() - start) * 1e3)

    times.sort()
    pick = lambda q: times[min(len(times) - 1, int(q * len(times)))]
    print(
        f"onnxruntime {ort.__version__}, {args.threads} thread(s), input {inp.name} {shape}: "
        f"{args.runs} runs, min {times[0]:.3f} ms, p10 {pick(0.1):.3f} ms, p90 {pick(0.9):.3f} ms"
    )
    print(f"latency_ms: {statistics.median(times):.4f}")


if __name__ == "__main__":
    main()
