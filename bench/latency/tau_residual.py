#!/usr/bin/env python3
"""What in the archs goes with the engines' disagreement, from a `mnas bench latency --csv` file.

Fits engine = a * baseline + b over the archs (an affine map keeps the order, so it costs no tau),
then correlates each arch's relative residual with the share of its layers of each kind (op, SE,
kernel 5, stride 2, pooling skip) and the layer count, and gives the R^2 of all of them together:
how much of the disagreement the decisions of the search space explain.

    .venv/bin/python bench/latency/tau_residual.py rank.csv
"""
import csv
import sys

import numpy as np


def layers_of(arch):
    """The layers of a one-line arch (stem32|blocks|head...|r224) as (op, kernel, stride, se, skip)."""
    out = []
    for block in arch.split("|")[1].split(","):
        f = block.split("_")
        op, repeats, kernel, stride = f[0], int(f[1][1:]), int(f[2][1:]), int(f[3][1:])
        expand = next((int(x[1:]) for x in f[4:] if x[0] == "e" and x[1:].isdigit()), 1)
        name = f"ir{expand}" if op == "ir" else op
        skip = f[-1] if f[-1] in ("pool", "noskip", "skip") else "default"
        for j in range(repeats):
            out.append((name, kernel, stride if j == 0 else 1, "se0" in block, skip))
    return out


def main(path):
    rows = list(csv.DictReader(open(path)))
    if len(rows) < 10:
        sys.exit(f"{path}: {len(rows)} archs; need at least 10")
    engine_col, base_col = list(rows[0].keys())[1:3]
    a = np.array([float(r[engine_col]) for r in rows])
    b = np.array([float(r[base_col]) for r in rows])
    fit = np.linalg.lstsq(np.vstack([b, np.ones_like(b)]).T, a, rcond=None)[0]
    resid = (a - (fit[0] * b + fit[1])) / b
    print(f"{len(rows)} archs: {engine_col} = {fit[0]:.3f} x {base_col} {fit[1]:+.3f} ms; relative residual sd {resid.std():.3f}")
    features = {}
    for r in rows:
        ls = layers_of(r["arch"])
        n = len(ls)
        share = lambda pred: sum(1 for l in ls if pred(l)) / n
        for op in ("cn", "ds", "ir3", "ir6"):
            features.setdefault(f"share {op}", []).append(share(lambda l: l[0] == op))
        features.setdefault("share SE", []).append(share(lambda l: l[3]))
        features.setdefault("share k5", []).append(share(lambda l: l[1] == 5))
        features.setdefault("share stride 2", []).append(share(lambda l: l[2] == 2))
        features.setdefault("share pooling skip", []).append(share(lambda l: l[4] == "pool"))
        features.setdefault("layers", []).append(n)
    for name, v in features.items():
        print(f"  {name:<20} correlation with the residual {np.corrcoef(np.array(v, float), resid)[0, 1]:+.2f}")
    x = np.column_stack([np.array(v, float) for v in features.values()] + [np.ones(len(rows))])
    coef = np.linalg.lstsq(x, resid, rcond=None)[0]
    r2 = 1 - ((resid - x @ coef) ** 2).sum() / ((resid - resid.mean()) ** 2).sum()
    print(f"all of them together: R^2 {r2:.2f}")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    main(sys.argv[1])
