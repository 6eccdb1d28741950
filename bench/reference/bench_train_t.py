#!/usr/bin/env python
"""PyTorch twin of `mnas bench train`: training-step benchmark "T".

One SGD step (zero_grad + forward + cross-entropy + backward + step) of net T on a batch of
64x3x32x32, median over --steps after --warmup, with --threads intra-op threads. Prints:
  FIG train_T/threads=<n> median_ms=<..> min_ms=<..> p25_ms=<..> p75_ms=<..> n=<..> params=<..>

Net T, the timing loop and the optimizer settings are copied from the project's shared reference
script (shared/reference/pyref_bench.py, `NetT` and `bench_train`), which is not part of this
repository; keep the two in step.
"""
import argparse
import statistics
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


class SE(nn.Module):
    def __init__(self, ch, rd):
        super().__init__()
        self.reduce = nn.Conv2d(ch, rd, 1, bias=True)
        self.expand = nn.Conv2d(rd, ch, 1, bias=True)

    def forward(self, x):
        s = x.mean((2, 3), keepdim=True)
        s = torch.sigmoid(self.expand(F.relu(self.reduce(s))))
        return x * s


class MBConv(nn.Module):
    def __init__(self, cin, cout, expand, k, stride, se_ratio=0.0):
        super().__init__()
        mid = cin * expand
        self.pw = nn.Conv2d(cin, mid, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(mid)
        self.dw = nn.Conv2d(mid, mid, k, stride, k // 2, groups=mid, bias=False)
        self.bn2 = nn.BatchNorm2d(mid)
        # SE reduction based on the block INPUT channels (timm MnasNet convention)
        self.se = SE(mid, max(1, int(cin * se_ratio))) if se_ratio > 0 else None
        self.pwl = nn.Conv2d(mid, cout, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(cout)
        self.skip = stride == 1 and cin == cout

    def forward(self, x):
        y = F.relu(self.bn1(self.pw(x)))
        y = F.relu(self.bn2(self.dw(y)))
        if self.se is not None:
            y = self.se(y)
        y = self.bn3(self.pwl(y))
        return y + x if self.skip else y


class NetT(nn.Module):
    def __init__(self, num_classes=10):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, 1, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU())
        self.b1 = MBConv(16, 24, 6, 3, 2)
        self.b2 = MBConv(24, 40, 6, 5, 2, se_ratio=0.25)
        self.b3 = MBConv(40, 80, 6, 3, 2)
        self.head = nn.Sequential(nn.Conv2d(80, 320, 1, bias=False), nn.BatchNorm2d(320), nn.ReLU())
        self.fc = nn.Linear(320, num_classes)

    def forward(self, x):
        x = self.head(self.b3(self.b2(self.b1(self.stem(x)))))
        return self.fc(x.mean((2, 3)))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    net = NetT().train()
    opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
    x = torch.randn(64, 3, 32, 32)
    y = torch.randint(0, 10, (64,))
    nparams = sum(p.numel() for p in net.parameters())

    def step():
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(net(x), y)
        loss.backward()
        opt.step()
        return loss.item()

    for _ in range(a.warmup):
        step()
    ts = []
    for _ in range(a.steps):
        t0 = time.perf_counter()
        step()
        ts.append(time.perf_counter() - t0)
    ms = sorted(t * 1e3 for t in ts)
    q = statistics.quantiles(ms, n=4) if len(ms) > 1 else [ms[0], ms[0], ms[0]]
    print(f"# torch {torch.__version__} threads={torch.get_num_threads()}", flush=True)
    print(f"FIG train_T/threads={a.threads} median_ms={statistics.median(ms):.3f} min_ms={ms[0]:.3f} "
          f"p25_ms={q[0]:.3f} p75_ms={q[2]:.3f} n={len(ms)} params={nparams}", flush=True)


if __name__ == "__main__":
    main()
