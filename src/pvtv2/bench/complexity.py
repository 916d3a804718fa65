"""The PVTv2 paper's complexity figure: GFLOPs against input scale for PVTv1-Small, PVTv2-B2,
PVTv2-B2-Li, torchvision's ResNet-50 and timm's ViT-Small/16, all counted with the same counter
(:func:`pvtv2.bench.flops.count_flops`, on the meta device: shapes only).

``pvtv2 flops --scaling --out DIR`` writes ``DIR/complexity.json`` and ``DIR/complexity.png``
(log-log). Each model is counted as a 1000-class classifier on square inputs; the fitted
exponent of GFLOPs against the number of pixels is about 1 for a convolutional network or linear
SRA and grows towards 2 where attention over all tokens dominates.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from .flops import RULES, build_on_meta, count_flops
from .scaling import fit_exponent

#: Square input sides counted: multiples of 224, divisible by 32 (PVT's total stride) and 16 (ViT's patch).
SIZES = (224, 448, 672, 896, 1120, 1344)


def _vit_attention(m: nn.Module, inputs: tuple, out: torch.Tensor) -> int:
    """``QK^T`` and ``AV`` of timm's fused attention over all ``N`` tokens: ``2 N^2 C``
    (the convention PVT's get_flops.py uses for SRA, with ``N' = N``)."""
    B, N, _ = inputs[0].shape
    return B * 2 * N * N * m.num_heads * m.head_dim


def _rules() -> dict:
    from timm.layers import Attention

    return {**RULES, Attention: ("attention", _vit_attention)}


def _pvt(name: str) -> Callable[[int], nn.Module]:
    def build(size: int) -> nn.Module:
        from ..factory import create_model

        return create_model(name)

    return build


def _resnet50(size: int) -> nn.Module:
    from torchvision.models import resnet50

    return resnet50()


def _vit_small(size: int) -> nn.Module:
    import timm

    # Position embeddings for this size's grid: the token count is what matters.
    return timm.create_model("vit_small_patch16_224", img_size=size)


#: Label -> builder of the model counted at a given input side.
MODELS: dict[str, Callable[[int], nn.Module]] = {
    "PVTv1-Small": _pvt("pvt_small"),
    "PVTv2-B2": _pvt("pvt_v2_b2"),
    "PVTv2-B2-Li": _pvt("pvt_v2_b2_li"),
    "ResNet-50": _resnet50,
    "ViT-Small/16": _vit_small,
}


def complexity_study(sizes: tuple[int, ...] = SIZES, models: dict[str, Callable[[int], nn.Module]] | None = None,
                     ) -> dict[str, Any]:
    """GFLOPs (multiply-adds / 1e9) of every model at every square input side. Returns
    ``{"sizes", "models": {label: {"params", "gflops": [...], "exponent"}}, "convention"}``;
    ``exponent`` is the slope of log GFLOPs against log pixels over the sizes from 448 up."""
    rules = _rules()
    out: dict[str, Any] = {"sizes": list(sizes), "models": {}, "convention": (
        "multiply-adds as whai362/PVT's get_flops.py counts them: mmcv's module counter plus the attention "
        "matmuls (2 N N' C per attention); 1000-class classifiers, batch 1, square inputs")}
    for label, build in (models or MODELS).items():
        gflops, params = [], None
        for size in sizes:
            model = build_on_meta(lambda: build(size))
            r = count_flops(model, size, rules=rules)
            params = r["params"] if size == 224 or params is None else params
            gflops.append(r["flops"] / 1e9)
        points = [{"size": s, "pixels": s * s, "gflops": g} for s, g in zip(sizes, gflops)]
        out["models"][label] = {"params": params, "gflops": gflops, "exponent": fit_exponent(points, "gflops")}
    return out


def write_study(out_dir: str | Path, **kwargs: Any) -> dict[str, Any]:
    """:func:`complexity_study`, written to ``out_dir/complexity.json`` and plotted (log-log) to
    ``out_dir/complexity.png``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    study = complexity_study(**kwargs)
    (out_dir / "complexity.json").write_text(json.dumps(study, indent=2))
    plot(study, out_dir / "complexity.png")
    return study


def plot(study: dict[str, Any], path: str | Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.6))
    sizes = study["sizes"]
    for label, m in study["models"].items():
        exponent = m["exponent"]
        ax.loglog(sizes, m["gflops"], marker="o",
                  label=f"{label} (~pixels^{exponent:.2f})" if exponent is not None else label)
    ax.set_xticks(sizes)
    ax.set_xticklabels([str(s) for s in sizes])
    ax.minorticks_off()
    ax.set(xlabel="input scale (square side, pixels)", ylabel="GFLOPs (multiply-adds)",
           title="GFLOPs against input scale")
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def format_table(study: dict[str, Any]) -> str:
    """The study as a text table: one row per model, one column per size."""
    sizes = study["sizes"]
    head = f"{'model':14s}" + "".join(f"{s:>9d}" for s in sizes) + "   exponent"
    rows = [head]
    for label, m in study["models"].items():
        e = m["exponent"]
        rows.append(f"{label:14s}" + "".join(f"{g:9.1f}" for g in m["gflops"])
                    + (f"   {e:8.2f}" if e is not None and not math.isnan(e) else ""))
    return "\n".join(rows)
