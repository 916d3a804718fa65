"""What ``pvtv2 bench`` runs: the speed comparisons against timm, the detectors and Semantic FPN
against torchvision's ResNet-50 models, and the scaling study, each printed as it goes (``pvtv2
flops`` is :func:`pvtv2.bench.flops.flops_rows`). The CLI only parses flags into these calls."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from ..engine.distributed import resolve_device
from ..fileio import atomic_write


def _write_results(json_path: str | Path, device: str, results: list[dict[str, Any]], log: Callable[[str], Any]) -> None:
    """The machine's description, then every result, as one JSON list."""
    from .speed import dumps, machine_info

    text = dumps([{"machine": machine_info(device)}] + results)
    atomic_write(json_path, lambda tmp: Path(tmp).write_text(text))
    log(f"wrote {json_path}")


def compare_speed(models: Sequence[str], modes: Sequence[str] = ("infer",), *, batch_size: int = 8, img_size: int = 224,
                  device: str = "cpu", dtype: str = "fp32", channels_last: bool = False, compile: bool = False,
                  compare: str = "timm", peer_eager_fp32: bool = False, agreement: bool = False,
                  grad_checkpointing: bool = False, ceiling: bool = False, profile: bool = False, repeats: int = 10,
                  warmup: int = 3, threads: int = 0, json_path: str | Path | None = None,
                  log: Callable[[str], Any] = print) -> list[dict[str, Any]]:
    """Throughput, latency and memory of every (model, mode), ours against timm's with the same
    weights (``compare="timm"``), against our own ONNX export run by ONNX Runtime (``"onnxruntime"``:
    CPU inference) or alone (``"none"``); the peer runs plain eager fp32 with ``peer_eager_fp32``, else in our
    setting. ``agreement`` adds the top-1 agreement with fp32 on real photographs (inference);
    ``grad_checkpointing`` (training only) our checkpointed model's speed and the memory it saves;
    ``ceiling`` (CPU) the achieved GFLOP/s as a fraction of the machine's matrix-product ceiling in
    our precision (:func:`~pvtv2.bench.speed.matmul_ceiling`, measured once, before the cases);
    ``profile`` where our step's time goes (:func:`~pvtv2.bench.speed.profile_step`). Each result is logged as it comes; ``json_path`` also gets them all, after the machine's
    description. An unknown or absent device (``cuda:1`` on a one-GPU machine) is a
    :class:`~pvtv2.errors.ConfigError`."""
    from ..errors import ConfigError
    from .speed import (Case, Setting, add_ceiling, check_case, format_profile, format_result, matmul_ceiling, run_case,
                        top1_agreement)

    device = str(resolve_device(device))
    if threads:
        torch.set_num_threads(threads)
    ours = Setting(dtype, channels_last, compile)
    peer = Setting() if peer_eager_fp32 else Setting(dtype, channels_last, compile)
    cases = [Case(model=name, batch_size=batch_size, img_size=img_size, mode=mode, device=device, ours=ours, peer=peer,
                  repeats=repeats, warmup=warmup, grad_checkpointing=grad_checkpointing,
                  peer_kind=compare, profile=profile)
             for name in models for mode in modes]
    for case in cases:  # every case checked before the first one runs
        check_case(case, compare != "none")
    roof, gmacs = None, {}
    if ceiling:
        if torch.device(device).type != "cpu":
            raise ConfigError(f"--ceiling: the CPU's matrix-product ceiling, not {device}'s")
        from .flops import build_on_meta, count_flops
        from ..factory import create_model

        precision = "bf16" if dtype.startswith("bf16") else "fp32"
        roof = matmul_ceiling(precision)
        log(f"matrix-product ceiling ({precision}, {torch.get_num_threads()} threads): "
            + ", ".join(f"{k} {v:.0f} GFLOP/s" for k, v in roof.items()))
        for name in models:
            gmacs[name] = count_flops(build_on_meta(lambda n=name: create_model(n)), img_size)["flops"] / 1e9
    results = []
    for case in cases:
        r = run_case(case, compare=compare != "none")
        if roof is not None and case.mode == "infer":
            add_ceiling(r, roof, gmacs[case.model])
        line = format_result(r)
        if agreement and case.mode == "infer":
            r["top1_agreement_vs_fp32"] = top1_agreement(case.model, ours, img_size=img_size, device=device)
            line += f" | top-1 agreement {r['top1_agreement_vs_fp32']:.1%}"
        if "profile" in r:
            line += "\n  " + format_profile(r["profile"])
        results.append(r)
        log(line)
    if json_path:
        _write_results(json_path, device, results, log)
    return results


def compare_dense(task: str, kinds: Sequence[str], backbones: Sequence[str], *, img_size: tuple[int, int] | None = None,
                  batch_size: int = 1, device: str = "cpu", dtype: str = "fp32", repeats: int = 5, warmup: int = 2,
                  profile: bool = False, threads: int = 0, json_path: str | Path | None = None,
                  log: Callable[[str], Any] = print) -> list[dict[str, Any]]:
    """Inference latency of our detectors (``task="detect"``, ``kinds``: retinanet, fasterrcnn,
    maskrcnn, fcos) or Semantic FPN (``"segment"``, ``kinds``: the peers fcn_resnet50,
    deeplabv3_resnet50) on every backbone, against torchvision's ResNet-50 model, at the test
    scale unless ``img_size`` (H, W) is given. Logged as they come; ``json_path`` as in
    :func:`compare_speed`."""
    from .dense import DenseCase, check_case, format_dense, run_dense_case
    from .speed import format_profile

    device = str(resolve_device(device))
    if threads:
        torch.set_num_threads(threads)
    cases = [DenseCase(task=task, kind=kind, backbone=backbone, img_size=img_size and tuple(img_size),
                       batch_size=batch_size, device=device, dtype=dtype, repeats=repeats, warmup=warmup,
                       profile=profile)
             for kind in kinds for backbone in backbones]
    for case in cases:  # every kind checked before the first one runs
        check_case(case)
    results = []
    for case in cases:
        r = run_dense_case(case)
        results.append(r)
        log(format_dense(r) + ("\n  " + format_profile(r["profile"]) if "profile" in r else ""))
    if json_path:
        _write_results(json_path, device, results, log)
    return results


def scaling_study(out: str | Path, *, budget_gmacs: float = 400.0, device: str = "cpu", repeats: int = 3,
                  reference: bool = False, threads: int = 0, log: Callable[[str], Any] = print) -> dict[str, Any]:
    """The complexity study of :mod:`pvtv2.bench.scaling`, with its fitted exponents logged."""
    from .scaling import run_study

    if threads:
        torch.set_num_threads(threads)
    log(f"scaling study on {device} -> {out}")
    summary = run_study(out, budget_gmacs=budget_gmacs, device=device, repeats=repeats, reference=reference, log=log)
    for kind, e in summary["exponents"].items():
        t, m = e["time"], e["memory"]
        if t is None:
            log(f"  {kind:16s}: too few points")
        else:
            log(f"  {kind:16s} fitted exponent: time ~ pixels^{t:.2f}" + (f"  memory ~ pixels^{m:.2f}" if m is not None else ""))
    return summary
