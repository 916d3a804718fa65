"""Fault injection: classification training killed at many points, inside saves included, and
resumed each time, ends with exactly the uninterrupted run's files and no temporaries.

A driver process imports the package once, then forks one child per attempt (cheaper than a
new interpreter each time). Each child arms one kill point and runs the ``pvtv2 train`` entry
point (``--resume`` when ``last.pt`` exists, else ``--overwrite``); the kill points are found by
wrapping ``os.fsync`` / ``os.replace`` (what :func:`pvtv2.fileio.atomic_write` calls on every
save), safetensors' writer, and a global optimiser-step hook. The last attempt is a fresh
``python -m pvtv2 train --resume`` that runs to the end.
"""
import json
import subprocess
import sys

import pytest
from conftest import ENV, cli_args, pvtv2_cmd
import torch
from safetensors import safe_open

from pvtv2.data import make_classification_dataset
from pvtv2.engine.run import RUN_FILES

DRIVER = r'''
import json, os, re, resource, signal, sys
from collections import Counter
from pathlib import Path

import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot  # noqa: F401  (imported once here, not in every child)
import safetensors.torch
import torch
from torch.optim.optimizer import register_optimizer_step_post_hook

import pvtv2.classification.train  # noqa: F401
from pvtv2.cli import main

TEMPORARY = re.compile(r"\.(.+)\.[a-z0-9_]{8}\.tmp")  # atomic_write's ".<target>.XXXXXXXX.tmp"


def arm(kill, out, note):
    """Install the kill point ``kill`` = [when, target file or "step", k]: die at its k-th occurrence."""
    when, target, k = kill
    seen = Counter()
    out = out.resolve()

    def die():
        note.write_text(json.dumps({"kill": kill, "left": sorted(os.listdir(out))}))
        os.kill(os.getpid(), signal.SIGKILL)

    def reached(stage, name):
        if (stage, name) != (when, target):
            return False
        seen[stage, name] += 1
        return seen[stage, name] == k

    real_fsync, real_replace, real_st_save = os.fsync, os.replace, safetensors.torch.save_file

    def fsync(fd):  # atomic_write: the temporary is written whole, next it is fsynced
        path = Path(os.readlink(f"/proc/self/fd/{fd}"))
        m = TEMPORARY.fullmatch(path.name)
        if path.parent == out and m and reached("mid-write", m.group(1)):
            os.ftruncate(fd, os.fstat(fd).st_size // 2)  # the half that reached the disk
            die()
        return real_fsync(fd)

    def replace(src, dst, *args, **kwargs):
        dst = Path(dst)
        inside = dst.parent.resolve() == out
        if inside and reached("before-rename", dst.name):
            die()
        real_replace(src, dst, *args, **kwargs)
        if inside and reached("after-rename", dst.name):
            die()

    def st_save(tensors, filename, metadata=None):
        if Path(filename).parent.resolve() == out and reached("inside-safetensors", target):
            # The kernel stops this process 64 KB into safetensors' own write (SIGXFSZ, default action).
            note.write_text(json.dumps({"kill": kill}))
            signal.signal(signal.SIGXFSZ, signal.SIG_DFL)
            resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
            resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 16, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))
        return real_st_save(tensors, filename, metadata=metadata)

    def step(optimizer, args, kwargs):
        if reached("after-step", "step"):
            die()

    os.fsync, os.replace, safetensors.torch.save_file = fsync, replace, st_save
    register_optimizer_step_post_hook(step)


plan = json.loads(Path(sys.argv[1]).read_text())
results = []
for attempt in plan["attempts"]:
    out, log = Path(attempt["output"]), Path(attempt["log"])
    flag = ["--resume"] if (out / "last.pt").exists() else ["--overwrite"]
    pid = os.fork()
    if pid == 0:
        fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        if attempt["kill"]:
            arm(attempt["kill"], out, Path(attempt["note"]))
        code = main(["train", *plan["args"], "--output", str(out), *flag])
        sys.stdout.flush()
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    last = torch.load(out / "last.pt", weights_only=True)["epoch"] if (out / "last.pt").exists() else None
    results.append({"signal": os.WTERMSIG(status) if os.WIFSIGNALED(status) else None,
                    "code": os.WEXITSTATUS(status) if os.WIFEXITED(status) else None,
                    "files": sorted(os.listdir(out)) if out.exists() else [], "last_epoch": last})
Path(plan["results"]).write_text(json.dumps(results))
'''

RECIPE = dict(model="pvt_v2_b0", img_size=32, batch_size=4, epochs=3, lr=5e-3, warmup_epochs=1, workers=0, device="cpu",
              progress=False, repeated_aug=False, drop_path=0.1)

# [when, file saved (or "step"), k: its k-th occurrence in that attempt], in order; each attempt
# resumes from what the ones before left. 3 classes x 4 images in batches of 4: 3 steps per epoch.
KILLS = [
    # from scratch (no last.pt yet): every kind of save in epoch 0
    ["mid-write", "config.json", 1],
    ["before-rename", "metrics.jsonl", 1],
    ["after-step", "step", 1],
    ["mid-write", "best.safetensors", 1],
    ["inside-safetensors", "best.safetensors", 1],
    ["before-rename", "best.safetensors", 1],
    ["after-rename", "best.safetensors", 1],
    ["mid-write", "curves.png", 1],
    ["mid-write", "last.pt", 1],
    ["before-rename", "last.pt", 1],
    ["after-rename", "last.pt", 1],                # last.pt: epoch 0
    # resumed at epoch 1
    ["after-step", "step", 2],
    ["after-rename", "metrics.jsonl", 2],           # epoch 1's line written, its last.pt not yet
    ["mid-write", "last.pt", 1],
    ["after-rename", "last.pt", 1],                # last.pt: epoch 1
    # resumed at epoch 2
    ["after-step", "step", 3],
    ["before-rename", "curves.png", 1],
    ["before-rename", "last.pt", 1],
]
# Where last.pt stands after each kill (None: not written yet).
LAST_EPOCH = [None] * 10 + [0, 0, 0, 0, 1, 1, 1, 1]
TIMINGS = ("epoch_seconds", "images_per_second")


def _assert_same(a, b, where):
    """Equal structures, tensors bit for bit."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b), where
    elif isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys(), where
        for k in a:
            _assert_same(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, (list, tuple)):
        assert isinstance(b, (list, tuple)) and len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            _assert_same(x, y, f"{where}[{i}]")
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"


def _history(records):
    return [{k: v for k, v in r.items() if k not in TIMINGS} for r in records]


def _safetensors(path):
    with safe_open(path, "pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}, f.metadata()


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="forks, and finds open files through /proc")
def test_killed_at_many_points_and_resumed_ends_as_the_uninterrupted_run(tmp_path):
    assert len(KILLS) == len(LAST_EPOCH)
    data = make_classification_dataset(tmp_path / "d", classes=3, train_per_class=4, val_per_class=1,
                                       size=32, seed=5, progress=False)
    args = cli_args({**RECIPE, "data": str(data)})
    straight, out = tmp_path / "straight", tmp_path / "killed"
    attempts = [{"output": str(straight), "kill": None, "log": str(tmp_path / "straight.log"), "note": ""}]
    attempts += [{"output": str(out), "kill": kill, "log": str(tmp_path / f"{i}.log"), "note": str(tmp_path / f"{i}.json")}
                 for i, kill in enumerate(KILLS)]
    plan = tmp_path / "plan.json"
    plan.write_text(json.dumps({"args": args, "attempts": attempts, "results": str(tmp_path / "results.json")}))
    (tmp_path / "driver.py").write_text(DRIVER)
    subprocess.run([sys.executable, str(tmp_path / "driver.py"), str(plan)], env=ENV, check=True, timeout=300)
    results = json.loads((tmp_path / "results.json").read_text())
    logs = [(tmp_path / f"{i}.log").read_text() for i in range(len(KILLS))]

    assert results[0]["code"] == 0, (tmp_path / "straight.log").read_text()
    left_temporaries = 0
    for i, (kill, result) in enumerate(zip(KILLS, results[1:])):
        # Every kill point was reached: the child died there, not at the end of training.
        expected_signal = 25 if kill[0] == "inside-safetensors" else 9  # SIGXFSZ, SIGKILL
        assert result["signal"] == expected_signal, (kill, result, logs[i])
        assert json.loads((tmp_path / f"{i}.json").read_text())["kill"] == kill
        assert result["last_epoch"] == LAST_EPOCH[i], (kill, result)
        temporaries = [f for f in result["files"] if f.endswith(".tmp") or f.startswith(".tmp")]
        left_temporaries += len(temporaries)
        if i + 1 < len(KILLS):
            after = logs[i + 1]  # the next attempt cleans up and continues from the last intact checkpoint
            if temporaries:
                assert f"removed {len(temporaries)} temporary file(s) left by an interrupted save" in after, after
            if LAST_EPOCH[i] is not None:
                assert f"at epoch {LAST_EPOCH[i] + 1}" in after, after
    assert left_temporaries >= 10  # the kills inside saves did leave temporaries behind

    final = subprocess.run(pvtv2_cmd("train", *args, "--output", str(out), "--resume"), env=ENV, capture_output=True,
                           text=True, timeout=120)
    assert final.returncode == 0, final.stdout + final.stderr
    assert f"at epoch {LAST_EPOCH[-1] + 1}" in final.stdout and "removed 1 temporary file(s)" in final.stdout
    assert sorted(p.name for p in out.iterdir()) == sorted(RUN_FILES)  # no temporaries, no lock file

    a = torch.load(out / "last.pt", weights_only=True)
    b = torch.load(straight / "last.pt", weights_only=True)
    for key in ("model", "optimizer", "scaler", "ema", "epoch", "best_top1", "meta", "class_names"):
        _assert_same(a[key], b[key], key)
    assert a["epoch"] == 2 and a["optimizer"]["state"] and a["model"]
    _assert_same(_history(a["history"]), _history(b["history"]), "history")
    _assert_same(_safetensors(out / "best.safetensors"), _safetensors(straight / "best.safetensors"), "best")
    metrics = [_history(json.loads(l) for l in (d / "metrics.jsonl").read_text().splitlines()) for d in (out, straight)]
    assert metrics[0] == metrics[1] and [r["epoch"] for r in metrics[0]] == [0, 1, 2]
