#!/usr/bin/env python3
"""Checks ONNX models written by mnas against mnas's own logits (used by the mnas-export tests).

Usage: ort_check.py MANIFEST.json
       ort_check.py --versions     (only checks that the modules import; prints their versions)

The manifest lists models: {"models": [{"name", "onnx", "input", "input_shape", "logits",
"logits_shape", "dynamic_batch"}]}; "input"/"logits" are raw little-endian float32 files and
relative paths are relative to the manifest. For each model this runs
onnx.checker.check_model(full_check=True), checks the graph's input/output names and shapes, runs
ONNX Runtime (CPUExecutionProvider) on the input and compares with the reference logits.

Prints one JSON line: {"onnx": ver, "onnxruntime": ver, "results": [{"name", "ok", "error",
"max_abs", "max_ref", "max_rel"}]} where max_rel = max|ort - ref| / max|ref|.
Exit status: 0 when every model was checked (pass or fail is in the JSON), 3 when a needed
Python module is missing, 2 on a bad manifest.
"""

import json
import os
import sys

MISSING_HINT = "run .ci/run, or: pip install onnx onnxruntime numpy"


def load_modules():
    missing = []
    mods = {}
    for name in ("numpy", "onnx", "onnxruntime"):
        try:
            mods[name] = __import__(name)
        except ImportError as e:
            missing.append(f"{name} ({e})")
    if missing:
        print(f"ort_check: missing Python module(s): {', '.join(missing)}; {MISSING_HINT}", file=sys.stderr)
        print(json.dumps({"missing": missing}))
        sys.exit(3)
    return mods["numpy"], mods["onnx"], mods["onnxruntime"]


def dims(value_info):
    out = []
    for d in value_info.type.tensor_type.shape.dim:
        out.append(d.dim_param if d.HasField("dim_param") else d.dim_value)
    return out


def check_one(np, onnx, ort, base, m):
    path = os.path.join(base, m["onnx"])
    model = onnx.load(path)
    onnx.checker.check_model(model, full_check=True)

    inputs = [i for i in model.graph.input]
    outputs = [o for o in model.graph.output]
    if [i.name for i in inputs] != ["input"] or [o.name for o in outputs] != ["logits"]:
        raise ValueError(f"graph inputs {[i.name for i in inputs]} / outputs {[o.name for o in outputs]}, "
                         "expected ['input'] / ['logits']")
    x_shape = list(m["input_shape"])
    want_batch = "batch" if m.get("dynamic_batch") else x_shape[0]
    if dims(inputs[0]) != [want_batch] + x_shape[1:]:
        raise ValueError(f"input shape {dims(inputs[0])}, expected {[want_batch] + x_shape[1:]}")
    if dims(outputs[0]) != [want_batch, m["logits_shape"][1]]:
        raise ValueError(f"output shape {dims(outputs[0])}, expected {[want_batch, m['logits_shape'][1]]}")

    x = np.fromfile(os.path.join(base, m["input"]), dtype="<f4").reshape(x_shape)
    ref = np.fromfile(os.path.join(base, m["logits"]), dtype="<f4").reshape(m["logits_shape"])

    so = ort.SessionOptions()
    so.intra_op_num_threads = 2
    sess = ort.InferenceSession(path, sess_options=so, providers=["CPUExecutionProvider"])
    (got,) = sess.run(["logits"], {"input": x})
    if got.shape != ref.shape:
        raise ValueError(f"ONNX Runtime logits shape {got.shape}, mnas {ref.shape}")
    max_abs = float(np.max(np.abs(got.astype(np.float64) - ref.astype(np.float64))))
    max_ref = float(np.max(np.abs(ref)))
    return max_abs, max_ref


def main():
    if len(sys.argv) != 2:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    np, onnx, ort = load_modules()
    if sys.argv[1] == "--versions":
        print(json.dumps({"numpy": np.__version__, "onnx": onnx.__version__, "onnxruntime": ort.__version__}))
        return
    manifest_path = sys.argv[1]
    try:
        with open(manifest_path) as f:
            manifest = json.load(f)
    except (OSError, ValueError) as e:
        print(f"ort_check: cannot read manifest {manifest_path}: {e}", file=sys.stderr)
        sys.exit(2)
    base = os.path.dirname(os.path.abspath(manifest_path))
    results = []
    for m in manifest["models"]:
        r = {"name": m["name"], "ok": False, "error": None, "max_abs": None, "max_ref": None, "max_rel": None}
        try:
            max_abs, max_ref = check_one(np, onnx, ort, base, m)
            r.update(ok=True, max_abs=max_abs, max_ref=max_ref, max_rel=max_abs / max(max_ref, 1e-30))
        except Exception as e:  # report every model, not just the first failure
            r["error"] = f"{type(e).__name__}: {e}"
        results.append(r)
    print(json.dumps({"onnx": onnx.__version__, "onnxruntime": ort.__version__, "results": results}))


if __name__ == "__main__":
    main()
