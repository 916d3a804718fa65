"""Complexity study: time and peak memory of ``forward_features`` against input size for
SRA, linear SRA and full attention at the same widths (PVTv2-B2's), with fitted exponents.

Each point runs in a fresh subprocess so its peak resident memory (CPU) is its own.
Points whose estimated cost exceeds a budget are skipped and reported as such.
"""
from __future__ import annotations

import functools
import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import torch

from ..factory import create_model
from ..model import PVTv2Config
from . import memory
from .flops import count_flops

KINDS = {"sra": "pvt_v2_b2 (SRA, R = 8, 4, 2, 1)", "linear": "pvt_v2_b2_li (linear SRA, 7x7)", "full": "full attention"}
SIZES = (224, 448, 896, 1344, 2048)
STRIDES = (4, 8, 16, 32)


def build(kind: str) -> torch.nn.Module:
    return create_model("pvt_v2_b2", num_classes=0, attention=kind)


@functools.lru_cache(maxsize=None)
def _per_pixel_macs_at_224(kind: str) -> tuple[int, PVTv2Config]:
    """Everything but attention, counted once per kind (a b2 forward pass)."""
    model = build(kind)
    base = count_flops(model, 224)
    return base["flops"] - base["by_kind"].get("attention", 0), model.config


def estimate_gmacs(kind: str, size: int) -> float:
    """Multiply-adds at ``size``: the per-pixel part scaled from 224, attention computed exactly."""
    base, cfg = _per_pixel_macs_at_224(kind)
    per_pixel = base * (size / 224) ** 2
    attention = 0
    for i, s in enumerate(STRIDES):
        side = math.ceil(size / s)
        n = side * side
        kv = 49 if kind == "linear" else n if kind == "full" or cfg.sr_ratios[i] == 1 else (side // cfg.sr_ratios[i]) ** 2
        attention += 2 * n * kv * cfg.embed_dims[i] * cfg.depths[i]
    return (per_pixel + attention) / 1e9


def attention_matrix_mb(kind: str, size: int) -> float:
    """Largest attention score matrix (one block, batch 1, all heads, float32) in MiB: what the
    unfused reference path materialises."""
    cfg = _per_pixel_macs_at_224(kind)[1]
    largest = 0
    for i, s in enumerate(STRIDES):
        side = math.ceil(size / s)
        n = side * side
        kv = 49 if kind == "linear" else n if kind == "full" or cfg.sr_ratios[i] == 1 else (side // cfg.sr_ratios[i]) ** 2
        largest = max(largest, cfg.num_heads[i] * n * kv * 4)
    return largest / 2**20


#: Seconds to start a point's fresh process and build its model.
POINT_OVERHEAD_S = 4.0


def estimate_seconds(gmacs: list[float], repeats: int, device: str = "cpu") -> float:
    """Rough wall time of measuring points of these costs: the machine's multiply-add rate is
    timed once on a 224 px forward of the SRA model, then each point costs ``repeats + 1``
    forwards at that rate plus its process start."""
    import time

    if not gmacs:
        return 0.0
    model = build("sra").eval().to(device)
    x = torch.randn(1, 3, 224, 224, device=device)
    with torch.inference_mode():
        model.forward_features(x)
        start = time.perf_counter()
        model.forward_features(x)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        rate = estimate_gmacs("sra", 224) / max(time.perf_counter() - start, 1e-6)
    return sum(g * (repeats + 1) / rate + POINT_OVERHEAD_S for g in gmacs)


def measure_point(kind: str, size: int, repeats: int = 3, device: str = "cpu", impl: str = "fused") -> dict[str, Any]:
    """Median seconds and peak memory (MiB above the model's own) of one forward_features.
    ``impl="reference"`` runs the explicit softmax(QK^T)V path instead of the fused kernel."""
    import time

    from ..layers import SpatialReductionAttention

    torch.manual_seed(0)
    dev = torch.device(device)
    model = build(kind).to(dev).eval()
    for m in model.modules():
        if isinstance(m, SpatialReductionAttention):
            m.fused = impl == "fused"
    x = torch.randn(1, 3, size, size, device=dev)
    with torch.inference_mode():
        model.forward_features(torch.randn(1, 3, 64, 64, device=dev))
        if dev.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            base = torch.cuda.memory_allocated()
        else:
            base = memory.start()
        times = []
        for _ in range(repeats):
            t = time.perf_counter()
            model.forward_features(x)
            if dev.type == "cuda":
                torch.cuda.synchronize()
            times.append(time.perf_counter() - t)
    if dev.type == "cuda":
        peak = (torch.cuda.max_memory_allocated() - base) / 2**20
    else:
        peak = memory.peak_since(base)
    times.sort()
    return {"kind": kind, "impl": impl, "size": size, "pixels": size * size, "seconds": times[len(times) // 2],
            "peak_memory_mb": peak}


def fit_exponent(points: list[dict[str, Any]], key: str, min_size: int = 448) -> float | None:
    """Slope of log(key) against log(pixels) over the points at or above ``min_size``."""
    chosen = [p for p in points if p["size"] >= min_size]
    if len(chosen) < 2:  # too few large points: fit what there is
        chosen = points
    pts = [(math.log(p["pixels"]), math.log(max(p[key], 1e-9))) for p in chosen]
    if len(pts) < 2:
        return None
    mx = sum(x for x, _ in pts) / len(pts)
    my = sum(y for _, y in pts) / len(pts)
    return sum((x - mx) * (y - my) for x, y in pts) / sum((x - mx) ** 2 for x, _ in pts)


def run_study(out: str | Path, *, sizes=SIZES, kinds=tuple(KINDS), budget_gmacs: float = 400.0, repeats: int = 3,
              device: str = "cpu", reference: bool = False, budget_matrix_mb: float = 3000.0, log=print) -> dict[str, Any]:
    """Measure every (kind, size) within budget, write ``scaling.json`` and ``scaling.png`` to ``out``.

    ``reference=True`` also measures the unfused attention path (which materialises the score
    matrix, so its memory shows the attention's true growth); points whose largest score matrix
    exceeds ``budget_matrix_mb`` are skipped."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    points, skipped, planned = [], [], []
    impls = ("fused", "reference") if reference else ("fused",)
    for impl in impls:
        for kind in kinds:
            for size in sizes:
                gmacs = estimate_gmacs(kind, size)
                matrix = attention_matrix_mb(kind, size)
                label = f"{kind:6s} {impl:9s} {size:5d}px"
                if gmacs > budget_gmacs:
                    skipped.append({"kind": kind, "impl": impl, "size": size, "estimated_gmacs": round(gmacs, 1)})
                    log(f"  {label}  skipped: ~{gmacs:,.0f} GMACs is over the {budget_gmacs:,.0f} budget")
                elif impl == "reference" and matrix > budget_matrix_mb:
                    skipped.append({"kind": kind, "impl": impl, "size": size, "attention_matrix_mb": round(matrix)})
                    log(f"  {label}  skipped: a {matrix:,.0f} MiB score matrix is over the {budget_matrix_mb:,.0f} MiB budget")
                else:
                    planned.append((kind, impl, size, gmacs, matrix, label))
    seconds = estimate_seconds([p[3] for p in planned], repeats, device)
    log(f"planned {len(planned)} point(s) up to {max((p[2] for p in planned), default=0)} px: about "
        f"{seconds / 60:.0f} min on {device} (--budget-gmacs lowers it; each point runs {repeats} + 1 times)")
    for kind, impl, size, gmacs, matrix, label in planned:
        cmd = [sys.executable, "-m", "pvtv2.bench.scaling", kind, str(size), str(repeats), device, impl]
        res = subprocess.run(cmd, capture_output=True, text=True)
        if res.returncode != 0:
            skipped.append({"kind": kind, "impl": impl, "size": size, "error": res.stderr.strip().splitlines()[-1:]})
            log(f"  {label}  failed: {res.stderr.strip().splitlines()[-1:]}")
            continue
        p = json.loads(res.stdout.strip().splitlines()[-1])
        p["gmacs"] = round(gmacs, 2)
        p["attention_matrix_mb"] = round(matrix, 1)
        p["ns_per_pixel"] = 1e9 * p["seconds"] / p["pixels"]
        points.append(p)
        log(f"  {label}  {p['seconds']:8.3f} s  {p['ns_per_pixel']:8.1f} ns/pixel  "
            f"peak {p['peak_memory_mb']:8.1f} MiB  ({gmacs:,.1f} GMACs)")
    exponents = {}
    for impl in impls:
        for k in kinds:
            pts = [p for p in points if p["kind"] == k and p["impl"] == impl]
            key = k if impl == "fused" else f"{k}/{impl}"
            exponents[key] = {"time": fit_exponent(pts, "seconds"), "memory": fit_exponent(pts, "peak_memory_mb")}
    summary = {"device": device, "points": points, "skipped": skipped, "exponents": exponents}
    (out / "scaling.json").write_text(json.dumps(summary, indent=2))
    plot(points, out / "scaling.png")
    return summary


def plot(points: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4.2))
    colours = {"sra": "tab:blue", "linear": "tab:orange", "full": "tab:green"}
    for impl, style in (("fused", "-"), ("reference", "--")):
        for kind in KINDS:
            pts = sorted((p for p in points if p["kind"] == kind and p.get("impl", "fused") == impl),
                         key=lambda p: p["pixels"])
            if not pts:
                continue
            xs = [p["pixels"] for p in pts]
            label = KINDS[kind] + ("" if impl == "fused" else ", unfused")
            a.loglog(xs, [p["seconds"] for p in pts], style, marker="o", color=colours[kind], label=label)
            b.loglog(xs, [max(p["peak_memory_mb"], 1e-3) for p in pts], style, marker="o", color=colours[kind], label=label)
    if points:
        x0 = min(p["pixels"] for p in points)
        t0 = min(p["seconds"] for p in points)
        a.loglog([x0, 2048 ** 2], [t0, t0 * 2048 ** 2 / x0], "k:", label="slope 1 (linear)")
    a.set(xlabel="pixels", ylabel="seconds per forward_features", title="time")
    b.set(xlabel="pixels", ylabel="peak memory (MiB)", title="memory")
    a.legend(fontsize=8)
    b.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


if __name__ == "__main__":  # one measurement point, run in its own process by run_study
    kind, size, repeats, device = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
    impl = sys.argv[5] if len(sys.argv) > 5 else "fused"
    print(json.dumps(measure_point(kind, size, repeats, device, impl)))
