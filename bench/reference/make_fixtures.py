#!/usr/bin/env python
"""Writes timm parity fixtures in the format of ../shared/fixtures (DESIGN §4).

Each fixture is <name>.safetensors with `model.<timm state_dict name>` tensors (random weights,
randomised BN statistics), `input`, `logits_eval`; train fixtures add `labels`, `logits_train`,
`loss_train` and `grad.<param>`, and (beyond the shared format) `grad64.<param>`, timm's gradients
computed in float64, the ground truth when timm's own float32 gradients sit on a ReLU tie; plus a
<name>.json sidecar.

    pip install torch timm safetensors
    python bench/reference/make_fixtures.py OUT_DIR [STEM ...]
    MNAS_FIXTURES=OUT_DIR cargo test --release --workspace timm_parity -- --nocapture

STEM (e.g. mobilenetv2_100_48) writes only that fixture; each variant's seeds depend on its place
in VARIANTS, so a fixture is the same whether written alone or with the others. The repository
keeps one, crates/mnas-model/tests/fixtures/mobilenetv2_100_48 (MobileNetV2 is not in
../shared/fixtures), written by `make_fixtures.py crates/mnas-model/tests/fixtures mobilenetv2_100_48`
with torch 2.15.0 and timm 1.0.31.
"""
import json
import sys
from pathlib import Path

import timm
import torch
from safetensors.torch import save_file

# (timm model, classes, input size, batch, with gradients). Train-mode fixtures need enough values
# per BN channel at the last stages: at 32x32 with batch 4 or 40x40 with batch 2, timm's own fp32
# gradients differ from its fp64 ones by 1e-2..3e-1, so no implementation can match them to 1e-3.
VARIANTS = [
    ("mnasnet_100", 1000, 224, 1, False),
    ("semnasnet_075", 10, 64, 4, True),
    ("mnasnet_140", 100, 96, 3, False),
    ("mobilenetv2_100", 10, 64, 8, True),
    ("semnasnet_050", 1000, 128, 2, False),
    ("mnasnet_small", 1000, 224, 2, False),
    ("mnasnet_050", 10, 48, 6, True),
    ("semnasnet_140", 10, 96, 4, True),
    # Eval only and small, to be committed: 9 MB.
    ("mobilenetv2_100", 10, 48, 2, False),
]


def randomise(model, gen):
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.normal_(0.0, 0.2, generator=gen)
                m.running_var.uniform_(0.5, 2.0, generator=gen)
                m.weight.uniform_(0.5, 1.5, generator=gen)
                m.bias.normal_(0.0, 0.1, generator=gen)


def f32_vs_f64(model, tensors, x, labels):
    """Worst max|g32 - g64| / max|g64| over parameters (BN biases judged against their weights)."""
    import copy
    m64 = copy.deepcopy(model).double()
    m64.load_state_dict({k[6:]: v.double() for k, v in tensors.items() if k.startswith("model.")}, strict=False)
    m64.train()
    torch.nn.functional.cross_entropy(m64(x.double()), labels).backward()
    g64 = {k: p.grad for k, p in m64.named_parameters()}
    for k, g in g64.items():
        tensors[f"grad64.{k}"] = g.float().contiguous()
    worst = 0.0
    for k, g in g64.items():
        scale = g.abs().max().item()
        if k.endswith(".bias") and f"{k[:-5]}.weight" in g64 and ".bn" in f".{k}":
            scale = max(scale, g64[f"{k[:-5]}.weight"].abs().max().item())
        diff = (tensors[f"grad.{k}"].double() - g).abs().max().item()
        worst = max(worst, diff / max(scale, 1e-30))
    return worst


def stem_of(name, size, train):
    return f"{name}_{size}{'_train' if train else ''}"


def main(out: Path, only):
    known = [stem_of(n, s, t) for n, _, s, _, t in VARIANTS]
    unknown = [o for o in only if o not in known]
    if unknown:
        sys.exit(f"unknown fixture {', '.join(unknown)}; known: {', '.join(known)}")
    out.mkdir(parents=True, exist_ok=True)
    for i, (name, classes, size, batch, train) in enumerate(VARIANTS):
        if only and stem_of(name, size, train) not in only:
            continue
        torch.manual_seed(100 + i)
        gen = torch.Generator().manual_seed(200 + i)
        model = timm.create_model(name, num_classes=classes)
        randomise(model, gen)
        x = torch.randn(batch, 3, size, size, generator=gen)
        tensors = {f"model.{k}": v.detach().clone().contiguous() for k, v in model.state_dict().items()
                   if not k.endswith("num_batches_tracked")}
        model.eval()
        with torch.no_grad():
            tensors["logits_eval"] = model(x)
        tensors["input"] = x
        if train:
            model.train()
            labels = torch.randint(0, classes, (batch,), generator=gen)
            logits = model(x)
            loss = torch.nn.functional.cross_entropy(logits, labels)
            loss.backward()
            tensors["labels"] = labels
            tensors["logits_train"] = logits.detach()
            tensors["loss_train"] = loss.detach().reshape(1)
            for k, p in model.named_parameters():
                tensors[f"grad.{k}"] = p.grad.detach().clone()
            self_check = f32_vs_f64(model, tensors, x, labels)
        stem = stem_of(name, size, train)
        save_file({k: v.contiguous() for k, v in tensors.items()}, str(out / f"{stem}.safetensors"))
        meta = {"timm_model": name, "timm_version": timm.__version__, "torch_version": torch.__version__,
                "input_size": size, "batch": batch, "num_classes": classes,
                "params": sum(p.numel() for p in model.parameters())}
        if train:
            # How far timm's own fp32 gradients are from fp64 ones: above ~1e-4 the fixture sits on
            # a ReLU tie or a near-singular BN and no fp32 implementation can match it to 1e-3.
            meta["grad_f32_vs_f64"] = self_check
        (out / f"{stem}.json").write_text(json.dumps(meta, indent=1))
        print(f"wrote {stem}" + (f" (timm fp32 vs fp64 gradients: {meta['grad_f32_vs_f64']:.1e})" if train else ""))


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "target/fixtures-extra"), sys.argv[2:])
