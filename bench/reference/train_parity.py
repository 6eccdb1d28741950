#!/usr/bin/env python
"""PyTorch twin of `mnas train --arch mnasnet-a1 --classes 10 --mode proxy` on the embedded
CIFAR-10 subset, for accuracy parity (CPU).

Same data (crates/mnas-data/assets/cifar10-subset.tar.gz: 10,000 train images, 10% held out ->
9,000 / 1,000; the held-out images are not the same ones mnas picks, the sizes are), resolution 32,
normalisation by the train split's channel mean/std, augmentation (zero pad 4 + random 32 crop +
horizontal flip), batch 64 (last partial batch dropped), model timm `semnasnet_100` (= MnasNet-A1)
with 10 classes and dropout 0.2, BN momentum 0.1 / eps 1e-5, and mnas's proxy recipe: SGD Nesterov
momentum 0.9 (no dampening), peak lr 0.1, linear warm-up over 0.5 epochs then cosine to 0, both
per step, L2 weight decay 4e-5 on conv/linear weights only, no label smoothing.

Prints one line per epoch and `FINAL held_out_top1=<..>`.
Usage: python bench/reference/train_parity.py --epochs 3 --seed 0 --threads 2
"""
import argparse
import io
import math
import os
import tarfile
import time

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

HERE = os.path.dirname(os.path.abspath(__file__))
ARCHIVE = os.path.join(HERE, "../../crates/mnas-data/assets/cifar10-subset.tar.gz")


def load(archive):
    """{split: (uint8 N x 32 x 32 x 3, labels)} from an ImageFolder tar.gz."""
    images = {"train": [], "test": []}
    with tarfile.open(archive) as tar:
        members = sorted((m for m in tar.getmembers() if m.isfile()), key=lambda m: m.name)
        classes = sorted({m.name.split("/")[2] for m in members})
        for m in members:
            parts = m.name.split("/")
            img = Image.open(io.BytesIO(tar.extractfile(m).read())).convert("RGB")
            images[parts[1]].append((np.asarray(img, dtype=np.uint8), classes.index(parts[2])))
    out = {}
    for split, items in images.items():
        out[split] = (np.stack([i for i, _ in items]), np.array([l for _, l in items], dtype=np.int64))
    return out, classes


def augment(batch, rng, pad=4):
    n, h, w, _ = batch.shape
    padded = np.zeros((n, h + 2 * pad, w + 2 * pad, 3), dtype=np.uint8)
    padded[:, pad:pad + h, pad:pad + w] = batch
    out = np.empty_like(batch)
    for i in range(n):
        dx, dy = rng.integers(0, 2 * pad + 1, size=2)
        crop = padded[i, dy:dy + h, dx:dx + w]
        out[i] = crop[:, ::-1] if rng.random() < 0.5 else crop
    return out


def to_tensor(batch, mean, std):
    x = torch.from_numpy(batch.astype(np.float32) / 255.0).permute(0, 3, 1, 2)
    return (x - mean[None, :, None, None]) / std[None, :, None, None]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--lr", type=float, default=0.1)
    ap.add_argument("--warmup-epochs", type=float, default=0.5)
    ap.add_argument("--weight-decay", type=float, default=4e-5)
    ap.add_argument("--dropout", type=float, default=0.2)
    ap.add_argument("--val-fraction", type=float, default=0.1)
    a = ap.parse_args()
    import timm

    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    rng = np.random.default_rng(a.seed)
    data, classes = load(ARCHIVE)
    x_all, y_all = data["train"]
    perm = np.random.default_rng(0).permutation(len(x_all))
    n_val = int(round(len(x_all) * a.val_fraction))
    val_idx, train_idx = perm[:n_val], perm[n_val:]
    x_tr, y_tr, x_va, y_va = x_all[train_idx], y_all[train_idx], x_all[val_idx], y_all[val_idx]
    mean = torch.tensor(x_tr.reshape(-1, 3).mean(0) / 255.0, dtype=torch.float32)
    std = torch.tensor(x_tr.reshape(-1, 3).std(0) / 255.0, dtype=torch.float32)
    print(f"# torch {torch.__version__} timm {timm.__version__} threads {a.threads}; "
          f"{len(x_tr)} train, {len(x_va)} held-out, {len(classes)} classes", flush=True)

    model = timm.create_model("semnasnet_100", pretrained=False, num_classes=len(classes), drop_rate=a.dropout)
    decay = [p for p in model.parameters() if p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.ndim < 2]
    opt = torch.optim.SGD([{"params": decay, "weight_decay": a.weight_decay},
                           {"params": no_decay, "weight_decay": 0.0}],
                          lr=a.lr, momentum=0.9, nesterov=True, dampening=0.0)
    steps = max(1, len(x_tr) // a.batch_size)

    def lr_at(e):
        if e < a.warmup_epochs:
            return a.lr * (e + 1e-3) / a.warmup_epochs
        t = min(max((e - a.warmup_epochs) / max(a.epochs - a.warmup_epochs, 1e-9), 0.0), 1.0)
        return 0.5 * a.lr * (1 + math.cos(math.pi * t))

    def evaluate():
        model.eval()
        correct = 0
        with torch.no_grad():
            for i in range(0, len(x_va), 256):
                logits = model(to_tensor(x_va[i:i + 256], mean, std))
                correct += (logits.argmax(1).numpy() == y_va[i:i + 256]).sum()
        return correct / len(x_va)

    top1 = 0.0
    for epoch in range(a.epochs):
        model.train()
        t0 = time.time()
        order = rng.permutation(len(x_tr))
        loss_sum = 0.0
        for step in range(steps):
            idx = order[step * a.batch_size:(step + 1) * a.batch_size]
            for g in opt.param_groups:
                g["lr"] = lr_at(epoch + step / steps)
            x = to_tensor(augment(x_tr[idx], rng), mean, std)
            y = torch.from_numpy(y_tr[idx])
            loss = F.cross_entropy(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            loss_sum += loss.item()
        top1 = evaluate()
        print(f"epoch {epoch + 1}: loss {loss_sum / steps:.4f} held-out top-1 {top1 * 100:.2f}% "
              f"{steps * a.batch_size / (time.time() - t0):.0f} img/s", flush=True)
    print(f"FINAL held_out_top1={top1 * 100:.2f}", flush=True)


if __name__ == "__main__":
    main()
