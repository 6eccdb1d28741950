#!/usr/bin/env python3
"""Seed-to-seed agreement over every architecture a `mnas bench proxy` cache holds (not only those with a
reference row): Kendall tau-b between seeds 0 and 1 per score, the accuracy noise (SD of the per-model
difference / sqrt 2), and each seed's own tau of held-out accuracy vs the reference (what one search trial
ranks like; `mnas bench proxy` judges the mean of the seeds).
    python3 bench/proxy/seed_agreement.py runs/bench-proxy/*.csv"""
import csv, sys, math, json
from itertools import combinations
def taub(x, y):
    c = d = tx = ty = 0
    for i, j in combinations(range(len(x)), 2):
        a, b = x[i] - x[j], y[i] - y[j]
        if a == 0 and b == 0: continue
        if a == 0: tx += 1; continue
        if b == 0: ty += 1; continue
        if a * b > 0: c += 1
        else: d += 1
    return (c - d) / math.sqrt((c + d + tx) * (c + d + ty))
ref_lines = [l for l in open('bench/proxy/reference-cifar10.csv') if not l.startswith('#')]
reference = {int(r['index']): float(r['val_top1']) for r in csv.DictReader(ref_lines) if r['status'] == 'ok'}
for path in sys.argv[1:]:
    lines = open(path).read().splitlines()
    hdr = json.loads(lines[0].split(' ', 3)[3])['settings']
    rows = list(csv.DictReader(lines[1:]))
    by = {}
    for r in rows:
        if r['status'] == 'ok': by.setdefault(int(r['index']), {})[int(r['seed'])] = r
    idx = sorted(i for i in by if 0 in by[i] and 1 in by[i])
    out = []
    for key in ['val_top1', 'val_loss', 'train_loss']:
        a = [float(by[i][0][key]) for i in idx]; b = [float(by[i][1][key]) for i in idx]
        out.append(f"{key} seed tau {taub(a, b):.3f}")
    a = [float(by[i][0]['val_top1']) for i in idx]; b = [float(by[i][1]['val_top1']) for i in idx]
    diffs = [x - y for x, y in zip(a, b)]
    sd = math.sqrt(sum(d * d for d in diffs) / len(diffs) / 2)
    mean = sum(a + b) / (2 * len(a))
    secs = sum(float(r['seconds']) for r in rows) / len(rows)
    judged = [i for i in idx if i in reference]
    per_seed = [taub([float(by[i][sd]['val_top1']) for i in judged], [reference[i] for i in judged]) for sd in (0, 1)]
    out.append(f"per-seed tau vs reference ({len(judged)} archs) {per_seed[0]:.3f} / {per_seed[1]:.3f}")
    print(f"{path}: images {hdr['images']} val {hdr['val_images']} epochs {hdr['epochs']} width {hdr['width']} stem {hdr['stem_stride']}: "
          f"{len(idx)} archs x 2 seeds: {', '.join(out)}; accuracy noise SD {100*sd:.2f} points; mean acc {100*mean:.1f} %; {secs:.1f} s/trial")
