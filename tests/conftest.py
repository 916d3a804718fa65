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


def ap_after_fitting_one_batch(model, data, *, steps: int, lr: float, clip: float, iou_types=("bbox",)) -> dict:
    """Train ``model`` (a detector built under a fixed seed) for ``steps`` AdamW steps on the first
    four images of ``data`` (a ``CocoDetection``), then its COCO report on those same images: what
    the set-prediction and cascade tests use to show that a detector learns within a CPU budget."""
    from pvtv2.detection import coco_evaluate
    from pvtv2.detection.data import collate_detection
    from pvtv2.detection.evaluate import to_coco_results

    images, targets, _ = collate_detection([data[i] for i in range(4)])
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    model.train()
    for _ in range(steps):
        loss = sum(model(images, targets).values())
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
        optimizer.step()
    model.eval()
    with torch.no_grad():
        outputs = model(images)
    results = [r for out, t in zip(outputs, targets) for r in to_coco_results(out, t["image_id"], data.cat_ids)]
    return coco_evaluate(data.coco, results, iou_types, image_ids=[t["image_id"] for t in targets])
