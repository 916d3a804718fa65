import os

import pytest
import torch

# Two cores here: keep torch from oversubscribing them and keep runs repeatable. Under
# pytest-xdist (`make test` runs `-n 2`) the workers share the cores: one thread each, since
# OpenMP threads spinning on a busy core slow a run down many times over.
_WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1) // _WORKERS))

from pvtv2.registry import REGISTRY  # noqa: E402  (after the thread setting)

#: Every registered variant: the registry is the one list of them, tests included.
ALL_MODELS = list(REGISTRY)
#: The PVTv2 and PVTv1 families' variants (PVTv1 has no timm peer and classifies from a class token).
V2_MODELS = [name for name, v in REGISTRY.items() if v.family == "pvt_v2"]
V1_MODELS = [name for name, v in REGISTRY.items() if v.family == "pvt_v1"]


def randomize_(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Give every parameter random values (not the default init), so a parameter that
    a forward ignores, or a norm left at weight 1 / bias 0, changes the outputs."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() > 1:
                fan_in = p[0].numel()
                p.copy_(torch.randn(p.shape, generator=g) / fan_in ** 0.5)
            elif "norm" in name and name.endswith("weight") or "layer_norm" in name and name.endswith("weight"):
                p.copy_(1 + 0.3 * torch.randn(p.shape, generator=g))
            else:
                p.copy_(0.2 * torch.randn(p.shape, generator=g))
    return model


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU (run by benchmarks/run_gpu.sh on one)")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def rand():
    return randomize_


# -- helpers for the end-to-end tests that run the `pvtv2` command -----------------------
import hashlib  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

VENV_BIN = Path(sys.executable).parent
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def cli_args(cfg: dict) -> list[str]:
    """A config dict as command-line flags (``--no-x`` for false booleans, lists spread out)."""
    args = []
    for k, v in cfg.items():
        flag = "--" + k.replace("_", "-")
        if isinstance(v, bool):
            args.append(flag if v else "--no-" + k.replace("_", "-"))
        elif isinstance(v, (tuple, list)):
            args += [flag, *map(str, v)]
        else:
            args += [flag, str(v)]
    return args


def pvtv2_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "pvtv2", *args]


@pytest.fixture
def cli(capsys):
    """``cli(*argv, check=False)``: the ``pvtv2`` command run in this process through
    ``pvtv2.cli.main`` (parsing, delegation, one-line errors and exit codes are the same as in a
    fresh process, without its seconds of start-up), returning ``returncode``, ``stdout`` and
    ``stderr`` as ``subprocess.run`` does. Tests of process-level behaviour (signals, torchrun,
    the console script) keep real subprocesses."""
    import subprocess

    from pvtv2.cli import main

    def run(*argv, check: bool = False) -> subprocess.CompletedProcess:
        capsys.readouterr()  # drop what earlier steps printed
        argv = [str(a) for a in argv]
        try:
            code = main(argv)
        except SystemExit as e:  # argparse's usage errors
            code = e.code if isinstance(e.code, int) else 1
        out, err = capsys.readouterr()
        result = subprocess.CompletedProcess(["pvtv2", *argv], code or 0, out, err)
        if check:
            assert result.returncode == 0, result.stderr
        return result

    return run


def hash_training_state(path: Path) -> str:
    """A digest of a last.pt's weights and AdamW first moments: equal only if training was identical."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    h = hashlib.sha256()
    for k in sorted(state["model"]):
        h.update(k.encode() + state["model"][k].numpy().tobytes())
    for k, v in sorted(state["optimizer"]["state"].items()):
        h.update(v["exp_avg"].numpy().tobytes())
    return h.hexdigest()


def ap_after_fitting(model, data, batches, *, lr: float, clip: float, lr_drop_at: int | None = None,
                     eval_data=None, iou_types=("bbox",)) -> dict:
    """Train ``model`` (a detector built under a fixed seed) with AdamW, one step per list of image
    indices of ``data`` (a ``CocoDetection``) in ``batches``, at ``lr`` then ``lr / 10`` from step
    ``lr_drop_at``; only the parameters that require gradients learn (AdamW as
    ``engine.adamw_options`` picks it for training). Then its COCO report on every
    image of ``eval_data`` or, without one, on the images it trained on. Python's ``random`` (the
    flips) is seeded: the same call gives the same numbers."""
    import random

    from pvtv2.detection.data import collate_detection
    from pvtv2.engine import adamw_options

    random.seed(0)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=1e-4, **adamw_options(params[0].device))
    model.train()
    for step, indices in enumerate(batches):
        if step == lr_drop_at:
            for group in optimizer.param_groups:
                group["lr"] = lr / 10
        images, targets, _ = collate_detection([data[i] for i in indices])
        loss = sum(model(images, targets).values())
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, clip)
        optimizer.step()
    if eval_data is None:
        return coco_report(model, data, sorted({i for b in batches for i in b}), iou_types)
    return coco_report(model, eval_data, range(len(eval_data)), iou_types)


def shuffled_batches(n: int, batch_size: int, steps: int, seed: int = 0) -> list[list[int]]:
    """``steps`` batches of ``batch_size`` indices out of ``range(n)``, each epoch a new permutation."""
    g = torch.Generator().manual_seed(seed)
    order: list[int] = []
    while len(order) < steps * batch_size:
        order += torch.randperm(n, generator=g).tolist()
    return [order[i * batch_size:(i + 1) * batch_size] for i in range(steps)]


def coco_report(model, data, indices, iou_types=("bbox",)) -> dict:
    """``model``'s pycocotools report on images ``indices`` of ``data``, run 10 at a time."""
    from pvtv2.detection import coco_evaluate
    from pvtv2.detection.data import collate_detection
    from pvtv2.detection.evaluate import to_coco_results

    indices = list(indices)
    model.eval()
    results, image_ids = [], []
    with torch.no_grad():
        for start in range(0, len(indices), 10):
            images, targets, _ = collate_detection([data[i] for i in indices[start:start + 10]])
            for out, t in zip(model(images), targets):
                results += to_coco_results(out, t["image_id"], data.cat_ids)
                image_ids.append(t["image_id"])
    return coco_evaluate(data.coco, results, iou_types, image_ids=image_ids)


#: ``pvtv2 detect train`` settings of the detection tests: RetinaNet b0 on 128-pixel generated images,
#: the official recipe with a shorter schedule.
FAST_RETINANET = dict(kind="retinanet", model="pvt_v2_b0", batch_size=4, lr=2e-4, clip_grad=10.0, warmup_iters=60,
                      min_size=128, max_size=128, drop_path=0.0, workers=1, device="cpu", progress=False)


def sigkill_inside_epoch_1(proc, out: Path, timeout: float = 300) -> None:
    """Wait until the training process ``proc`` writing to ``out`` has finished and saved epoch 0, then
    SIGKILL it 40% into epoch 1 (by epoch 0's duration); asserts that ``last.pt`` still holds epoch 0."""
    import json
    import signal
    import time

    metrics, deadline = out / "metrics.jsonl", time.time() + timeout
    while not (metrics.exists() and metrics.read_text().count("\n") >= 1 and (out / "last.pt").exists()):
        assert proc.poll() is None and time.time() < deadline, "training ended before its first epoch was saved"
        time.sleep(0.02)
    time.sleep(json.loads(metrics.read_text().splitlines()[0])["epoch_seconds"] * 0.4)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert torch.load(out / "last.pt", weights_only=True)["epoch"] == 0, "the kill was meant to land in epoch 1"


def epoch_metrics(path: Path) -> list[dict]:
    """``metrics.jsonl`` without the timings, which differ between two runs of the same training."""
    import json

    return [{k: v for k, v in json.loads(line).items() if k not in ("epoch_seconds", "images_per_second")}
            for line in path.read_text().splitlines()]
