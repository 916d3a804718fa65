"""Throughput, latency and peak memory: ours against timm's ``pvt_v2_*`` with the same weights.

Both models run in the same process, alternating, after warm-up; the reported speed-up is the
ratio of medians (our images/s over the peer's), which is what survives a noisy shared machine.
CUDA timings use events and synchronisation on the chosen device (made current while measuring, so
``cuda:1`` times and reads GPU 1); peak memory is what one step adds on top of what was allocated
before it (both models, their optimisers and the input excluded). In training mode with
``grad_checkpointing``, a copy of our model with :meth:`set_grad_checkpointing` runs as a third
contestant, so the result shows the activation memory checkpointing saves and what it costs in speed.
"""
from __future__ import annotations

import contextlib
import copy
import json
import os
import platform
import statistics
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

try:
    import resource
except ImportError:  # not on Windows
    resource = None

import torch
import torch.nn.functional as F
from torch import nn

from ..checkpoint import ours_to_timm
from ..errors import ConfigError
from ..engine.backends import backend_settings, using_backends
from ..factory import create_model

#: Precisions: the autocast dtype (None: none). "fp32" is full float32; "tf32" runs float32 matrix
#: products and convolutions on CUDA's TF32 tensor cores (as the training commands do by default).
DTYPES = {"fp32": None, "tf32": None, "bf16": torch.bfloat16, "fp16": torch.float16, "bf16-weights": None}
#: Precisions in which the model itself is cast (weights held in that dtype, inputs cast, no autocast):
#: inference only. On the CPU, bf16-weights also takes oneDNN's fused kernels (pvtv2.layers.onednn).
CAST = {"bf16-weights": torch.bfloat16}


@dataclass
class Setting:
    """One way to run a model: precision, memory format, compilation."""

    dtype: str = "fp32"
    channels_last: bool = False
    compile: bool = False

    def label(self) -> str:
        return "+".join([self.dtype] + (["channels_last"] if self.channels_last else []) + (["compile"] if self.compile else []))


@dataclass
class Case:
    model: str = "pvt_v2_b0"
    batch_size: int = 8
    img_size: int = 224
    mode: str = "infer"  # or "train"
    device: str = "cpu"
    ours: Setting = field(default_factory=Setting)
    peer: Setting = field(default_factory=Setting)
    repeats: int = 10
    warmup: int = 3
    grad_checkpointing: bool = False  # train: also run ours with blocks recomputed in backward
    peer_kind: str = "timm"  # or "onnxruntime": our own ONNX export run by ONNX Runtime (CPU inference)
    profile: bool = False  # also where our step's time goes (profile_step)


#: The peers ``run_case`` can compare with.
PEERS = ("timm", "onnxruntime")


def machine_info(device: str) -> dict[str, Any]:
    info = {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
            "torch": torch.__version__, "threads": torch.get_num_threads()}
    if device.startswith("cuda") and torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(torch.device(device))
    return info


def on_device(device: torch.device):
    """Make ``device`` the current CUDA device while measuring: CUDA events, ``synchronize`` and the
    allocator's statistics follow the current device, not the device a model was moved to."""
    return torch.cuda.device(device) if device.type == "cuda" else contextlib.nullcontext()


def timm_peer(ours: nn.Module, name: str) -> nn.Module:
    """timm's model of the same variant, holding exactly our weights."""
    import timm

    peer = timm.create_model(name, num_classes=ours.num_classes)
    peer.load_state_dict(ours_to_timm(ours.state_dict()))
    return peer


class OnnxRuntimeModel(nn.Module):
    """Our model exported to ONNX (:func:`pvtv2.export.export_onnx`: dynamic batch and size, checked
    against PyTorch there) and run by ONNX Runtime's CPU provider with as many threads as torch
    uses (ORT's graph optimisations all on, its threads not spinning between runs), behind a module's
    interface: float32 tensors in and out."""

    def __init__(self, ours: nn.Module, img_size: int):
        super().__init__()
        import tempfile

        from ..export import export_onnx, onnx_session

        with tempfile.TemporaryDirectory() as tmp:
            path = export_onnx(copy.deepcopy(ours).eval(), f"{tmp}/model.onnx", check_sizes=[(img_size, img_size)])
            # ORT's pool threads spin for a while after each run: on a small machine they would take the
            # cores from the contestant that runs next (ours measured 2x slower beside a spinning ORT).
            self.session = onnx_session(path, threads=torch.get_num_threads(), spinning=False)
        self.input_name = self.session.get_inputs()[0].name

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(self.session.run(None, {self.input_name: x.float().numpy()})[0])


def check_case(case: Case, compare: bool = True) -> None:
    """Refuse a case that cannot run, or a peer (``compare``) that cannot run it (a
    :class:`~pvtv2.errors.ConfigError`), before anything is measured."""
    if case.mode != "infer" and (case.ours.dtype in CAST or case.peer.dtype in CAST):
        raise ConfigError(f"--dtype {case.ours.dtype}: inference only (training keeps float32 master weights: "
                          f"use --dtype bf16, autocast)")
    if case.grad_checkpointing and case.mode != "train":
        raise ConfigError(f"grad_checkpointing: only in train mode (gradients are what it saves memory on), "
                          f"not {case.mode!r}")
    if not compare:
        return
    if case.peer_kind not in PEERS:
        raise ConfigError(f"peer must be one of {', '.join(PEERS)}, got {case.peer_kind!r}")
    if case.peer_kind == "onnxruntime":
        if case.mode != "infer" or torch.device(case.device).type != "cpu":
            raise ConfigError(f"--compare onnxruntime: CPU inference only (ONNX Runtime's CPU provider runs the "
                              f"export), not {case.mode} on {case.device}")
        if case.peer.label() != "fp32":
            raise ConfigError(f"--compare onnxruntime: the exported model runs in float32 as exported; "
                              f"use --peer-eager-fp32 with --dtype {case.peer.dtype} or other settings for ours")


def _cast(t: nn.Module | torch.Tensor, setting: Setting):
    """A model (cast in place) or an input in the setting's cast dtype (:data:`CAST`), else as it is."""
    dtype = CAST.get(setting.dtype)
    return t if dtype is None else t.to(dtype)


def _prepare(model: nn.Module, setting: Setting, device: torch.device) -> Callable:
    model = _cast(model, setting).to(device)
    if setting.channels_last:
        model = model.to(memory_format=torch.channels_last)
    if setting.compile:
        model = torch.compile(model)
    return model


def _autocast(device: torch.device, dtype: str):
    if DTYPES[dtype] is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=DTYPES[dtype])


def float32_mode(device: torch.device, dtype: str):
    """On CUDA, float32 matrix products and convolutions in full float32 for ``fp32``, on TF32 tensor
    cores for every other precision (what autocast leaves in float32 included), as the training
    commands set them (:mod:`pvtv2.engine.backends`); restored after the block. CPUs are left alone."""
    return using_backends(backend_settings(device, tf32=dtype != "fp32"))


def _step_fn(model: nn.Module, x: torch.Tensor, setting: Setting, mode: str, device: torch.device) -> Callable[[], Any]:
    if setting.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    x = _cast(x, setting)
    if mode == "infer":
        model.eval()

        def step():
            with float32_mode(device, setting.dtype), torch.inference_mode(), _autocast(device, setting.dtype):
                return model(x)
        return step
    model.train()
    target = torch.arange(x.shape[0], device=device) % 1000
    opt = torch.optim.AdamW(model.parameters(), lr=1e-6)
    scaler = torch.amp.GradScaler(device.type) if setting.dtype == "fp16" else None

    def step():
        with float32_mode(device, setting.dtype):
            with _autocast(device, setting.dtype):
                loss = F.cross_entropy(model(x), target)
            opt.zero_grad(set_to_none=True)
            if scaler is not None:
                scaler.scale(loss).backward()
                scaler.step(opt)
                scaler.update()
            else:
                loss.backward()
                opt.step()
        return loss
    return step


def _time_once(step: Callable, device: torch.device) -> float:
    if device.type == "cuda":
        stream = torch.cuda.current_stream(device)
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record(stream)
        step()
        end.record(stream)
        torch.cuda.synchronize(device)
        return start.elapsed_time(end) / 1000.0
    t = time.perf_counter()
    step()
    return time.perf_counter() - t


def measure_step(step: Callable, device: torch.device) -> tuple[float, float | None]:
    """Seconds one call of ``step`` takes and, on CUDA, the memory (MiB) it adds at its peak over
    what was allocated before it (``None`` elsewhere: see :func:`cpu_step_memory`). Call it with
    ``device`` current (:func:`on_device`)."""
    if device.type != "cuda":
        return _time_once(step, device), None
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    before = torch.cuda.memory_allocated(device)
    seconds = _time_once(step, device)
    return seconds, (torch.cuda.max_memory_allocated(device) - before) / 2**20


def _page_faults() -> int:
    """Minor page faults of this process so far (each costs a trip through the kernel)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt if resource is not None else 0


def _summary(times: list[float], batch: int) -> dict[str, float]:
    med = statistics.median(times)
    return {"median_s": med, "images_per_second": batch / med, "latency_ms": 1000 * med,
            "min_s": min(times), "max_s": max(times)}


def cpu_step_memory(case: Case, which: str, seed: int = 0) -> float | None:
    """Peak resident memory (MiB) one step adds on the CPU after a warm-up step (so AdamW's state
    and first-call allocations are not counted), measured in a fresh process: both models share
    the timing process, and glibc reuses what one freed for the other. ``None`` for compiled models."""
    import subprocess
    import sys

    setting = case.peer if which == "timm" else case.ours
    if setting.compile:
        return None
    spec = json.dumps({"model": case.model, "batch_size": case.batch_size, "img_size": case.img_size,
                       "mode": case.mode, "setting": asdict(setting), "which": which, "seed": seed})
    res = subprocess.run([sys.executable, "-m", "pvtv2.bench.speed", spec], capture_output=True, text=True)
    if res.returncode != 0:
        return None
    return float(res.stdout.strip().splitlines()[-1])


def _measure_memory(spec: dict[str, Any]) -> float:
    from . import memory

    torch.manual_seed(spec["seed"])
    model = create_model(spec["model"])
    if spec["which"] == "timm":
        model = timm_peer(model, spec["model"])
    if spec["which"] == CHECKPOINTED:
        model.set_grad_checkpointing(True)
    setting = Setting(**spec["setting"])
    device = torch.device("cpu")
    x = torch.randn(spec["batch_size"], 3, spec["img_size"], spec["img_size"])
    step = _step_fn(_prepare(model, setting, device), x, setting, spec["mode"], device)
    step()  # warm-up: the optimiser's state and lazy initialisations belong to no step
    base = memory.start()
    step()
    return memory.peak_since(base)


#: The result key of our model with gradient checkpointing (``Case.grad_checkpointing``).
CHECKPOINTED = "ours_checkpointed"


def run_case(case: Case, *, compare: bool = True, seed: int = 0) -> dict[str, Any]:
    """Measure one case; returns our numbers, the peer's, their ratio and an output check; with
    ``case.grad_checkpointing`` (training only) also our checkpointed model's numbers and the peak
    memory it saves (``memory_saved_mb``, ``memory_saved_pct`` of our plain step's)."""
    check_case(case, compare)
    device = torch.device(case.device)
    with on_device(device):
        return _run_case(case, device, compare, seed)


def _run_case(case: Case, device: torch.device, compare: bool, seed: int) -> dict[str, Any]:
    torch.manual_seed(seed)
    ours_model = create_model(case.model)
    contestants = {"ours": (ours_model, case.ours)}
    peer = case.peer_kind
    if compare:
        contestants[peer] = ((timm_peer(ours_model, case.model) if peer == "timm" else
                              OnnxRuntimeModel(ours_model, case.img_size)), case.peer)
    x = torch.randn(case.batch_size, 3, case.img_size, case.img_size, generator=torch.Generator().manual_seed(seed)).to(device)

    # Outputs first: the comparison only means something if both compute the same thing.
    outputs = {}
    for name, (model, setting) in contestants.items():
        model = _cast(model.to(device).eval(), setting)
        with float32_mode(device, setting.dtype), torch.inference_mode(), _autocast(device, setting.dtype):
            outputs[name] = model(_cast(x, setting)).float()
    if case.grad_checkpointing:  # a copy: the plain model keeps running beside it
        checkpointed = copy.deepcopy(ours_model)
        checkpointed.set_grad_checkpointing(True)
        contestants[CHECKPOINTED] = (checkpointed, case.ours)
    steps = {name: _step_fn(_prepare(m, s, device), x, s, case.mode, device) for name, (m, s) in contestants.items()}
    for _ in range(case.warmup):
        for step in steps.values():
            step()
    times: dict[str, list[float]] = {name: [] for name in steps}
    faults: dict[str, list[int]] = {name: [] for name in steps}
    peak: dict[str, float] = {}
    for _ in range(case.repeats):
        for name, step in steps.items():  # alternate, so drifts in machine load hit both
            before = _page_faults()
            seconds, added = measure_step(step, device)
            times[name].append(seconds)
            faults[name].append(_page_faults() - before)
            if added is not None:
                peak[name] = max(peak.get(name, 0.0), added)
    result: dict[str, Any] = {"case": {**asdict(case), "ours": case.ours.label(), "peer": case.peer.label()}}
    if case.profile:
        result["profile"] = profile_step(steps["ours"])
    for name in steps:
        result[name] = _summary(times[name], case.batch_size)
        # Minor page faults: the allocator handing memory back to the OS and getting it again.
        result[name]["page_faults_per_step"] = int(statistics.median(faults[name]))
        if name in peak:
            result[name]["peak_memory_mb"] = peak[name]
        elif device.type == "cpu" and name != "onnxruntime":
            result[name]["peak_memory_mb"] = cpu_step_memory(case, name, seed)
    if compare:
        result["peer_name"] = peer
        result[f"speedup_vs_{peer}"] = result["ours"]["images_per_second"] / result[peer]["images_per_second"]
        result["max_abs_diff"] = (outputs["ours"] - outputs[peer]).abs().max().item()
    if case.grad_checkpointing:
        plain, saved = result["ours"]["peak_memory_mb"], result[CHECKPOINTED]["peak_memory_mb"]
        if plain is not None and saved is not None:
            result["memory_saved_mb"] = plain - saved
            result["memory_saved_pct"] = 100 * (plain - saved) / plain if plain > 0 else 0.0
    return result


def matmul_ceiling(dtype: str = "fp32", *, size: int = 2048, repeats: int = 5) -> dict[str, float]:
    """The CPU's matrix-product ceiling in GFLOP/s at the current thread count: the median of
    ``repeats`` ``size``-square products through ``torch.mm`` and through oneDNN
    (``mkldnn::_linear_pointwise``), and the faster of the two as ``ceiling``. In float32 PyTorch's
    ``torch.mm`` goes through MKL, which on AMD CPUs runs at half of what the machine does
    (:mod:`pvtv2.layers.onednn`), so the ceiling is not ``torch.mm``'s alone. bf16: bfloat16 inputs."""
    from ..layers import onednn

    torch_dtype = torch.bfloat16 if dtype == "bf16" else torch.float32
    g = torch.Generator().manual_seed(0)
    a, b = (torch.randn(size, size, generator=g).to(torch_dtype) for _ in range(2))
    flop = 2 * size**3 / 1e9
    kernels = {"torch_mm": lambda: torch.mm(a, b)}
    if onednn.AVAILABLE:
        kernels["onednn"] = lambda: torch.ops.mkldnn._linear_pointwise(a, b, None, "none", [], "")
    out = {}
    with torch.inference_mode():
        for name, fn in kernels.items():
            fn()
            times = []
            for _ in range(repeats):
                t = time.perf_counter()
                fn()
                times.append(time.perf_counter() - t)
            out[name] = flop / statistics.median(times)
    out["ceiling"] = max(out.values())
    return out


def add_ceiling(result: dict[str, Any], ceiling: dict[str, float], gmacs_per_image: float) -> None:
    """Our (and the peer's) achieved GFLOP/s (2 x multiply-adds per image x images/s) and their
    fraction of ``ceiling["ceiling"]`` (:func:`matmul_ceiling`), into ``result``."""
    result["ceiling_gflops"] = ceiling
    result["gmacs_per_image"] = gmacs_per_image
    for name in ("ours", result.get("peer_name")):
        if name in result:
            achieved = 2 * gmacs_per_image * result[name]["images_per_second"]
            result[name]["gflops_per_second"] = achieved
            result[name]["fraction_of_ceiling"] = achieved / ceiling["ceiling"]


def real_images(size: int, count: int = 16) -> torch.Tensor:
    """A batch of real photographs (scikit-image's samples) with crops and flips, ImageNet-normalised."""
    from skimage import data as skdata
    from timm.data.constants import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD

    photos = [skdata.astronaut(), skdata.coffee(), skdata.chelsea(), skdata.rocket()]
    batch = []
    for i in range(count):
        img = torch.from_numpy(photos[i % len(photos)]).permute(2, 0, 1).float() / 255
        _, h, w = img.shape
        s = min(h, w) * (1.0 - 0.1 * (i // len(photos)))  # centre crops of shrinking size
        top, left = int((h - s) / 2), int((w - s) / 2)
        img = img[:, top:top + int(s), left:left + int(s)]
        if (i // len(photos)) % 2:
            img = img.flip(-1)
        batch.append(F.interpolate(img[None], size=(size, size), mode="bilinear", antialias=True, align_corners=False)[0])
    x = torch.stack(batch)
    mean, std = torch.tensor(IMAGENET_DEFAULT_MEAN)[:, None, None], torch.tensor(IMAGENET_DEFAULT_STD)[:, None, None]
    return (x - mean) / std


def top1_agreement(model_name: str, setting: Setting, *, img_size: int = 224, device: str = "cpu", seed: int = 0) -> float:
    """Fraction of real images whose top-1 class under ``setting`` equals the fp32 eager one."""
    torch.manual_seed(seed)
    dev = torch.device(device)
    model = create_model(model_name).to(dev).eval()
    x = real_images(img_size).to(dev)
    with torch.inference_mode():
        with float32_mode(dev, "fp32"):
            reference = model(x).argmax(1)
        fast = _prepare(model, setting, dev)
        xs = x.contiguous(memory_format=torch.channels_last) if setting.channels_last else x
        xs = _cast(xs, setting)
        with float32_mode(dev, setting.dtype), _autocast(dev, setting.dtype):
            got = fast(xs).float().argmax(1)
    return (got == reference).float().mean().item()


#: Operator groups of :func:`profile_step`, first match wins (a substring of the profiler's op name).
OP_GROUPS = (
    ("matrix products", ("addmm", "::mm", "bmm", "_linear", "aten::linear", "matmul")),
    ("convolutions", ("conv",)),
    ("attention kernel and softmax", ("scaled_dot_product", "softmax")),
    ("normalisation", ("norm",)),
    ("activations", ("gelu", "relu", "sigmoid", "silu")),
    ("upsampling", ("upsample", "grid_sampler")),
    ("detection post-processing", ("topk", "nms", "sort", "nonzero", "index", "roi_align", "where", "eq", "gt")),
    ("copies, casts, layout", ("copy", "cat", "clone", "contiguous", "fill", "to_copy", "pad")),
)


def profile_step(step: Callable[[], Any], steps: int = 2) -> dict[str, Any]:
    """Where one call of ``step`` spends its time, from ``torch.profiler`` over ``steps`` calls (after the
    timing, so warm): ``total_ms`` per call, ``groups`` (:data:`OP_GROUPS` and "other": share of the time),
    ``ops`` (the 12 operators with the most self time: name, ms per call, share, calls per call). CPU time
    of the operators themselves (their own work, not their children's)."""
    from torch.profiler import ProfilerActivity, profile

    os.environ.setdefault("KINETO_LOG_LEVEL", "5")  # no "gpuGetDeviceCount failed" line on a machine without a GPU
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            step()
    events = [e for e in prof.key_averages() if e.self_cpu_time_total > 0]
    total = sum(e.self_cpu_time_total for e in events) or 1.0
    groups: dict[str, float] = {name: 0.0 for name, _ in OP_GROUPS}
    groups["other"] = 0.0
    for e in events:
        name = next((g for g, keys in OP_GROUPS if any(k in e.key for k in keys)), "other")
        groups[name] += e.self_cpu_time_total / total
    top = sorted(events, key=lambda e: -e.self_cpu_time_total)[:12]
    return {"total_ms": total / 1000 / steps, "groups": groups,
            "ops": [{"op": e.key, "ms": e.self_cpu_time_total / 1000 / steps, "share": e.self_cpu_time_total / total,
                     "calls": e.count / steps} for e in top]}


def format_profile(profile: dict[str, Any]) -> str:
    """One line: the groups by share, largest first."""
    parts = sorted(profile["groups"].items(), key=lambda kv: -kv[1])
    return (f"profile ({profile['total_ms']:.0f} ms of operator time per call): "
            + ", ".join(f"{name} {share:.0%}" for name, share in parts if share >= 0.005))


def _mem(r: dict[str, Any]) -> str:
    m = r.get("peak_memory_mb")
    text = f" {m:7.0f} MiB" if m is not None else ""
    if r.get("page_faults_per_step") is not None:
        text += f" {r['page_faults_per_step'] / 1000:6.1f}k faults"
    return text


def format_result(r: dict[str, Any]) -> str:
    c = r["case"]
    line = (f"{c['model']:13s} {c['mode']:5s} b{c['batch_size']:<4d} {c['img_size']}px  ours[{c['ours']}] "
            f"{r['ours']['images_per_second']:8.1f} img/s {r['ours']['latency_ms']:8.1f} ms{_mem(r['ours'])}")
    peer = r.get("peer_name", "timm")
    if peer in r:
        line += (f" | {peer}[{c['peer']}] {r[peer]['images_per_second']:8.1f} img/s{_mem(r[peer])} | ours/{peer} "
                 f"{r[f'speedup_vs_{peer}']:.2f}x | max|diff| {r['max_abs_diff']:.1e}")
    if "fraction_of_ceiling" in r["ours"]:
        line += (f" | {r['ours']['gflops_per_second']:.0f} GFLOP/s = {r['ours']['fraction_of_ceiling']:.0%} of the "
                 f"{r['ceiling_gflops']['ceiling']:.0f} GFLOP/s ceiling")
    if CHECKPOINTED in r:
        line += f" | checkpointed {r[CHECKPOINTED]['images_per_second']:8.1f} img/s{_mem(r[CHECKPOINTED])}"
        if "memory_saved_mb" in r:
            line += f", saves {r['memory_saved_mb']:.0f} MiB ({r['memory_saved_pct']:.0f}%)"
    return line


def dumps(results: list[dict[str, Any]]) -> str:
    return json.dumps(results, indent=2, default=str)


if __name__ == "__main__":  # one memory measurement, run in its own process by cpu_step_memory
    import sys

    print(_measure_memory(json.loads(sys.argv[1])))
