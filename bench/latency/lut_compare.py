#!/usr/bin/env python3
"""Where two lookup tables' engines weigh layers differently: entry by entry, built on the same
machine at the same resolution (`mnas latency build-lut` and `build-lut --engine ort`).

Prints the ratio of the first table's medians to the second's, summed over the entries of each
group (op; op and input size; op and SE), and the entries of the highest and lowest ratio. An
engine that costs every layer in the same proportion as another ranks models as it does: the
groups far from the overall ratio are where the rank agreement between engines is lost.

    python3 bench/latency/lut_compare.py lut.json lut-ort.json
"""
import collections
import json
import re
import sys

KEY = re.compile(r"(\w+?)_k(\d)_s(\d)_i(\d+)_m(\d+)_o(\d+)_se(\d+)_(\w+?)_r(\d+)_(\w+)")


def main(first_path, second_path):
    first = json.load(open(first_path))["entries"]
    second = json.load(open(second_path))["entries"]
    rows = []
    for key, entry in first.items():
        if key not in second:
            continue
        m = KEY.match(key)
        fields = m.groups() if m else (key.split("_")[0], "", "", "", "", "", "0", "", "", "")
        rows.append((key, entry["median_ms"], second[key]["median_ms"], fields))
    if not rows:
        sys.exit("the tables share no entry: built at another resolution or class count?")
    total_a = sum(r[1] for r in rows)
    total_b = sum(r[2] for r in rows)
    print(f"{len(rows)} entries in both; overall ratio {total_a / total_b:.3f} ({total_a:.1f} / {total_b:.1f} ms)")
    groups = {
        "op": lambda f: f[0],
        "op, input size": lambda f: f"{f[0]} r{f[8]}" if f[8] else f[0],
        "op, SE": lambda f: f"{f[0]} {'se' if f[6] != '0' else 'no se'}",
    }
    for name, group in groups.items():
        sums = collections.defaultdict(lambda: [0, 0.0, 0.0])
        for _, a, b, fields in rows:
            g = sums[group(fields)]
            g[0] += 1
            g[1] += a
            g[2] += b
        print(f"-- by {name}: ratio of the summed medians")
        for label, (n, a, b) in sorted(sums.items()):
            print(f"  {label:24s} {n:5d} entries  {a / b:.3f}  ({a:.1f} / {b:.1f} ms)")
    ranked = sorted(rows, key=lambda r: r[1] / r[2])
    for title, part in (("highest", ranked[::-1][:10]), ("lowest", ranked[:10])):
        print(f"-- {title} ratios")
        for key, a, b, _ in part:
            print(f"  {key:55s} {a / b:.3f}  ({a:.3f} / {b:.3f} ms)")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2])
