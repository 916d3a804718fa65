"""Shared training machinery: atomic writes, training-state checks, metrics log, seeding."""
import json
import os
import random

import numpy as np
import pytest
import torch

from pvtv2.checkpoint import atomic_write
from pvtv2.engine import MetricsLog, TrainingStateError, load_training_state, save_training_state, seed_everything
from pvtv2.engine.seeding import epoch_seed


def test_atomic_write_keeps_previous_file_on_crash(tmp_path):
    target = tmp_path / "last.pt"
    save_training_state(target, {"epoch": 1, "meta": {}})
    before = target.read_bytes()

    def crashing_writer(tmp):
        with open(tmp, "wb") as fh:
            fh.write(b"half a checkpoint")
        raise KeyboardInterrupt("killed mid-save")

    with pytest.raises(KeyboardInterrupt):
        atomic_write(target, crashing_writer)
    assert target.read_bytes() == before
    assert os.listdir(tmp_path) == ["last.pt"]  # no temp file left behind
    assert torch.load(target, weights_only=True)["epoch"] == 1


def test_training_state_checks(tmp_path):
    save_training_state(tmp_path / "last.pt", {"epoch": 0, "meta": {"model": "pvt_v2_b0", "classes": ["a", "b"]}})
    state = load_training_state(tmp_path / "last.pt", expect={"model": "pvt_v2_b0", "classes": ["a", "b"]})
    assert state["epoch"] == 0
    with pytest.raises(TrainingStateError, match="incompatible.*model is 'pvt_v2_b0' in the checkpoint but 'pvt_v2_b1'"):
        load_training_state(tmp_path / "last.pt", expect={"model": "pvt_v2_b1"})
    with pytest.raises(TrainingStateError, match="no such file"):
        load_training_state(tmp_path / "nope.pt", expect={})
    torch.save({"a": torch.zeros(1)}, tmp_path / "weights.pt")
    with pytest.raises(TrainingStateError, match="not a pvtv2 training checkpoint"):
        load_training_state(tmp_path / "weights.pt", expect={})
    (tmp_path / "cut.pt").write_bytes((tmp_path / "last.pt").read_bytes()[:100])
    with pytest.raises(TrainingStateError, match="cannot read"):
        load_training_state(tmp_path / "cut.pt", expect={})


def test_metrics_log_rewrites_from_history(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"epoch": 0}\n{"epoch": 1}\n{"epoch": 2}\n')  # line 2 was written after the checkpoint
    log = MetricsLog(path, [{"epoch": 0}, {"epoch": 1}])
    log.flush()
    log.append({"epoch": 2, "val_top1": 50.0})
    assert [json.loads(l) for l in path.read_text().splitlines()] == [{"epoch": 0}, {"epoch": 1}, {"epoch": 2, "val_top1": 50.0}]


def test_epoch_seeds_are_reproducible_and_distinct():
    assert epoch_seed(0, 3) == epoch_seed(0, 3)
    assert len({epoch_seed(0, e, r) for e in range(5) for r in range(2)}) == 10
    seed_everything(5)
    a = (random.random(), np.random.rand(), torch.rand(1).item())
    seed_everything(5)
    assert a == (random.random(), np.random.rand(), torch.rand(1).item())
