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


# -- the run folder: another run's files, the lock, stale temporaries, failed saves -------
import resource  # noqa: E402
import signal  # noqa: E402
import time  # noqa: E402

from pvtv2.engine import RunFolder, check_range  # noqa: E402
from pvtv2.errors import ConfigError, DataError, TrainingError  # noqa: E402


def test_a_folder_holding_a_run_is_refused_unless_resumed_or_overwritten(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "metrics.jsonl").write_text('{"epoch": 0}\n')
    (out / "best.safetensors").write_bytes(b"the best model")
    (out / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match=r"already holds a run \(metrics.jsonl, best.safetensors\); continue it with "
                                          r"--resume, start it over with --overwrite .* or choose another --output"):
        RunFolder(out).open()
    assert (out / "best.safetensors").read_bytes() == b"the best model"
    with RunFolder(out, resume="auto"):  # continuing the run keeps its files
        assert (out / "metrics.jsonl").exists()
    with RunFolder(out, overwrite=True):  # starting over deletes the run's files, not the user's
        assert sorted(p.name for p in out.iterdir()) == [".pvtv2.lock", "notes.txt"]
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]  # the lock file goes with the run
    with RunFolder(tmp_path / "new"):
        pass
    assert not (tmp_path / "new").exists()  # a run that wrote nothing leaves no folder behind


def test_second_writer_is_refused_and_the_lock_is_released(tmp_path):
    with RunFolder(tmp_path / "run"):
        assert (tmp_path / "run" / ".pvtv2.lock").read_text().strip() == str(os.getpid())
        with pytest.raises(ConfigError, match=rf"in use by another training run \(pid {os.getpid()}\)"):
            RunFolder(tmp_path / "run").open()
    with RunFolder(tmp_path / "run"):  # released on close
        pass


def test_lock_of_a_killed_run_is_free_even_while_its_workers_live(tmp_path):
    # A trainer (forked here, to skip a fresh interpreter's start-up) with a forked child of its
    # own, as DataLoader workers are, that outlives it.
    read, write = os.pipe()
    trainer = os.fork()
    if trainer == 0:
        try:
            RunFolder(tmp_path / "run").open()
            worker = os.fork()
            if worker == 0:
                time.sleep(60)
                os._exit(0)
            os.write(write, f"{worker}\n".encode())
            time.sleep(60)
        finally:
            os._exit(1)
    worker = int(os.read(read, 64).decode())
    try:
        with pytest.raises(ConfigError, match=rf"pid {trainer}"):
            RunFolder(tmp_path / "run").open()
        os.kill(trainer, signal.SIGKILL)
        os.waitpid(trainer, 0)
        assert (tmp_path / "run" / ".pvtv2.lock").read_text().strip() == str(trainer)  # a stale lock file
        with RunFolder(tmp_path / "run"):
            pass
    finally:
        os.kill(worker, signal.SIGKILL)


def test_stale_temporaries_of_a_killed_save_are_removed(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    # atomic_write's, and the one safetensors' writer makes inside a best.safetensors save
    stale = [out / ".last.pt.k3j_9x2a.tmp", out / ".best.safetensors.0a1b2c3d.tmp", out / ".tmpAb3xZ9"]
    for p in stale:
        p.write_bytes(b"\0" * 1000)
    kept = [out / ".notes.tmp", out / "last.pt.backup.tmp", out / "data.tmp", out / ".tmp_notes"]  # not those patterns
    for p in kept:
        p.write_text("mine")
    with RunFolder(out):
        assert not any(p.exists() for p in stale) and all(p.exists() for p in kept)


def test_safetensors_files_follow_the_umask(tmp_path):
    """safetensors writes its own temporary (0600) and renames it onto atomic_write's."""
    from pvtv2.checkpoint.io import write_safetensors

    umask = os.umask(0o027)
    try:
        write_safetensors({"w": torch.zeros(2)}, tmp_path / "best.safetensors")
    finally:
        os.umask(umask)
    assert (tmp_path / "best.safetensors").stat().st_mode & 0o777 == 0o640
    assert os.listdir(tmp_path) == ["best.safetensors"]


def _limit_file_size(nbytes: int):
    """Writes past ``nbytes`` fail in this process (EFBIG) as they would on a full disk."""
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (nbytes, hard))
    return lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))


def test_a_failed_save_names_the_intact_checkpoint(tmp_path):
    from safetensors.torch import save_file

    big = {"model": {"w": torch.zeros(2**19)}}  # 2 MiB
    with RunFolder(tmp_path / "run") as run:
        run.save_last({"meta": {}, **big}, at="epoch 3")
        before = run.last.read_bytes()
        restore = _limit_file_size(2**20)
        try:
            with pytest.raises(TrainingError, match=r"could not write .*last.pt .*training stopped. The last good "
                                                    r"checkpoint is .*last.pt \(epoch 3\); continue from it with --resume"):
                run.save_last({"meta": {}, **big}, at="epoch 4")
            with pytest.raises(TrainingError, match=r"could not write .*best.safetensors \(.*File too large.*\).*"
                                                    r"last.pt \(epoch 3\)"):
                run.save_best(lambda path: save_file(big["model"], path))
        finally:
            restore()
        assert run.last.read_bytes() == before
        assert sorted(p.name for p in run.path.iterdir()) == [".pvtv2.lock", "last.pt"]  # no temporaries left


def test_run_config_ranges():
    assert check_range("--epochs", 3, min=1) == 3
    with pytest.raises(ConfigError, match=r"^--drop-path 1.0: must be in \[0, 1\)$"):
        check_range("--drop-path", 1.0, min=0, below=1)
    with pytest.raises(ConfigError, match=r"^--scale 0.5 2.0: must be in \[0, 1\]$"):
        check_range("--scale", (0.5, 2.0), min=0, max=1)
    with pytest.raises(ConfigError, match="must be at least 0"):
        check_range("--lr", float("nan"), min=0)


def _trainer(task):
    if task == "classify":
        from pvtv2.classification import TrainConfig, train
    elif task == "segment":
        from pvtv2.segmentation import SegTrainConfig as TrainConfig, train
    else:
        from pvtv2.detection import DetTrainConfig as TrainConfig, train
    return TrainConfig, train


@pytest.mark.parametrize("task", ["classify", "segment", "detect"])
def test_trainers_lock_their_folder_and_refuse_another_run(tmp_path, task):
    TrainConfig, train = _trainer(task)
    out = tmp_path / "run"
    out.mkdir()
    (out / ".last.pt.abcd_123.tmp").write_bytes(b"\0" * 100)  # from a save killed midway
    cfg = TrainConfig(data=str(tmp_path / "nodata"), output=str(out), model="pvt_v2_b0", device="cpu", workers=0)
    with RunFolder(out):  # another run writing there
        with pytest.raises(ConfigError, match=rf"in use by another training run \(pid {os.getpid()}\)"):
            train(cfg)
    with pytest.raises(DataError):  # free again: the run gets as far as reading the (missing) data
        train(cfg)
    assert sorted(p.name for p in out.iterdir()) == []  # the stale temporary is gone
    (out / "last.pt").write_bytes(b"a previous run's state")
    with pytest.raises(ConfigError, match="already holds a run .*last.pt.*--resume.*--overwrite"):
        train(cfg)
    assert (out / "last.pt").read_bytes() == b"a previous run's state"


# -- GPU defaults, decided on the CPU -------------------------------------------------------
def test_curves_before_the_first_evaluation_and_between_evaluations(tmp_path):
    import warnings

    from pvtv2.engine import plot_curves

    history = [{"epoch": 0, "train_loss": 2.0}, {"epoch": 1, "train_loss": 1.5, "bbox_AP": 0.1},
               {"epoch": 2, "train_loss": 1.2}]  # --eval-interval 2
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # matplotlib warned about the empty score panel's legend
        for n in (1, 3):
            plot_curves(history[:n], tmp_path / f"{n}.png", score_keys=("bbox_AP",), score_label="AP")
    assert (tmp_path / "1.png").stat().st_size > 0 and (tmp_path / "3.png").stat().st_size > 0


def test_adamw_is_fused_on_the_cpu_and_torchs_default_elsewhere():
    from pvtv2.engine import adamw_options

    assert adamw_options("cpu") == adamw_options(torch.device("cpu")) == {"fused": True}
    assert adamw_options("cuda") == adamw_options("cuda:1") == {}
    w = torch.nn.Parameter(torch.ones(3))
    opt = torch.optim.AdamW([w], lr=0.1, **adamw_options("cpu"))  # torch takes it on CPU tensors
    w.grad = torch.tensor([1.0, -1.0, 0.0])
    opt.step()
    assert opt.param_groups[0]["fused"] is True
    assert w.detach().tolist() == pytest.approx([1 - 0.1 - 0.01 * 0.1, 1 + 0.1 - 0.01 * 0.1, 1 - 0.01 * 0.1], abs=1e-6)


def test_backend_settings_decide_tf32_and_determinism_per_device():
    from pvtv2.engine import BackendSettings, backend_settings

    assert backend_settings("cpu") == BackendSettings()  # the CPU's settings are left alone
    assert backend_settings("cuda:1") == BackendSettings(matmul_precision="high", cudnn_tf32=True)
    assert backend_settings("cuda", tf32=False) == BackendSettings(matmul_precision="highest", cudnn_tf32=False)
    det = backend_settings("cpu", deterministic=True)
    assert (det.deterministic, det.cudnn_benchmark, det.matmul_precision) == (True, False, None)


def test_using_backends_applies_and_restores(monkeypatch):
    from pvtv2.engine import backend_settings, using_backends

    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    before = torch.get_float32_matmul_precision(), torch.are_deterministic_algorithms_enabled()
    with using_backends(backend_settings("cuda", deterministic=True)):
        assert torch.get_float32_matmul_precision() == "high"
        assert torch.are_deterministic_algorithms_enabled() and torch.is_deterministic_algorithms_warn_only_enabled()
        assert not torch.backends.cudnn.benchmark and os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"
    assert (torch.get_float32_matmul_precision(), torch.are_deterministic_algorithms_enabled()) == before


def test_amp_auto_prefers_bf16_on_gpus_that_have_it():
    from pvtv2.engine import auto_amp, resolve_amp

    assert auto_amp("cuda", bf16_supported=True) == "bf16"
    assert auto_amp("cuda", bf16_supported=False) == "fp16"
    assert auto_amp("cpu", bf16_supported=True) == "none"
    assert resolve_amp("auto", torch.device("cpu")) == "none"


def test_loss_meter_sums_on_the_device_and_stops_on_a_nonfinite_loss():
    from pvtv2.engine import DistEnv, LossMeter, NonFiniteLossError

    meter = LossMeter(DistEnv())
    for step, (loss, n) in enumerate([(2.0, 4), (1.0, 2)]):
        meter.update(torch.tensor(loss), step, weight=n, parts={"a": torch.tensor(loss / 2)})
    assert meter.read(lambda s: f"step {s}", 1) == {"loss": 10.0, "weight": 6.0, "nonfinite": 0.0, "a": 1.5}
    meter.update(torch.tensor(1.0), 2)
    meter.update(torch.tensor(float("inf")), 3)
    meter.update(torch.tensor(float("nan")), 4)
    with pytest.raises(NonFiniteLossError, match=r"^loss is inf at step 3$"):
        meter.read(lambda s: f"step {s}", 4)


def test_loss_meter_under_fp16_counts_skipped_steps_and_stops_on_a_run_of_them():
    from pvtv2.engine import FP16_NONFINITE_PATIENCE, DistEnv, LossMeter, NonFiniteLossError

    meter = LossMeter(DistEnv(), patience=FP16_NONFINITE_PATIENCE)
    nan = torch.tensor(float("nan"))
    for step in range(FP16_NONFINITE_PATIENCE):  # GradScaler skips these updates
        meter.update(nan, step)
    meter.update(torch.tensor(3.0), FP16_NONFINITE_PATIENCE)
    assert meter.read(str, 0) == {"loss": 3.0, "weight": 1.0, "nonfinite": FP16_NONFINITE_PATIENCE}
    for step in range(FP16_NONFINITE_PATIENCE + 1):  # a run that does not recover, split over two reads
        meter.update(nan, 100 + step)
        if step == 3:
            assert meter.read(str, step)["nonfinite"] == 4
    with pytest.raises(NonFiniteLossError, match=r"loss is nan at 104 and in 11 steps in a row"):
        meter.read(str, 110)


def test_seeded_samples_follow_their_seed_not_the_loader():
    from torch.utils.data import DataLoader, Dataset

    from pvtv2.engine import SeededSampler, SeededSamples

    class Draws(Dataset):
        def __len__(self):
            return 6

        def __getitem__(self, i):
            return i, random.random(), float(np.random.rand()), float(torch.rand(()))

    sampler = SeededSampler(range(6), seed=3)
    sampler.set_epoch(2)
    dataset = SeededSamples(Draws())
    seed_everything(0)
    main_process = list(DataLoader(dataset, sampler=sampler, batch_size=None))
    assert random.random() == (seed_everything(0), random.random())[1]  # the main process's state is put back
    with_workers = list(DataLoader(dataset, sampler=sampler, batch_size=None, num_workers=2, persistent_workers=True))
    assert [tuple(map(float, x)) for x in main_process] == [tuple(map(float, x)) for x in with_workers]
    sampler.set_epoch(3)
    assert [float(x[1]) for x in DataLoader(dataset, sampler=sampler, batch_size=None)] != \
           [float(x[1]) for x in main_process]  # another epoch, other draws


def test_train_commands_have_the_gpu_flags():
    from pvtv2.classification import TrainConfig
    from pvtv2.cli import _config_from_args, build_parser

    args = build_parser().parse_args(["train", "--data", "d", "--no-tf32", "--deterministic", "--log-every", "5",
                                      "--dist-timeout", "2.5"])
    cfg = _config_from_args(TrainConfig, args)
    assert (cfg.tf32, cfg.deterministic, cfg.log_every, cfg.dist_timeout) == (False, True, 5, 2.5)
    assert TrainConfig().tf32 and not TrainConfig().deterministic and TrainConfig().log_every == 20
    for argv in (["eval", "--data", "d"], ["segment", "eval", "--data", "d"], ["detect", "eval", "--data", "d"],
                 ["predict", "x"], ["segment", "predict", "x", "--out", "o"], ["detect", "predict", "x", "--out", "o"]):
        args = build_parser().parse_args([*argv, "--checkpoint", "c", "--no-tf32", "--workers", "3"])
        assert (args.tf32, args.workers) == (False, 3), argv
