"""Classification training, evaluation and prediction, end to end on generated data."""
import json
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
from PIL import Image
from conftest import ENV, VENV_BIN, cli_args, hash_training_state, pvtv2_cmd
import torch
from safetensors.torch import load_file

import pvtv2
from pvtv2.classification import TrainConfig, TrainingError, evaluate_checkpoint, predict, train
from pvtv2.checkpoint import save_file
from pvtv2.classification.data import DataError, eval_transform
from pvtv2.classification.predict import load_classifier
from pvtv2.data import make_classification_dataset
from pvtv2.engine import TrainingStateError
from pvtv2.registry import REGISTRY


# A fast, deterministic recipe for tests: the official pipeline (RandAugment, Mixup/CutMix,
# erasing, smoothing, drop path all on) at a tiny size.
FAST = dict(model="pvt_v2_b0", img_size=32, batch_size=8, lr=5e-3, warmup_epochs=1, workers=0, device="cpu",
            progress=False, repeated_aug=False, drop_path=0.1)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return make_classification_dataset(tmp_path_factory.mktemp("tiny"), classes=3, train_per_class=8,
                                       val_per_class=4, size=40, seed=1, progress=False)



@pytest.mark.slow
def test_overfits_a_tiny_dataset(tmp_path):
    data = make_classification_dataset(tmp_path / "d", classes=3, train_per_class=6, val_per_class=20,
                                       size=48, seed=3, progress=False)
    (data / "val").rename(data / "held_out")
    shutil.copytree(data / "train", data / "val")  # validate on the training images themselves
    train(TrainConfig(data=str(data), output=str(tmp_path / "run"), epochs=40, aa="none", mixup=0, cutmix=0,
                      reprob=0, smoothing=0, color_jitter=0, scale=(1.0, 1.0), eval_crop_pct=1.0,
                      **{**FAST, "img_size": 48, "lr": 8e-3, "drop_path": 0.0, "batch_size": 6}))
    history = [json.loads(l) for l in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert len(history) == 40
    assert history[-1]["val_top1"] >= 99.9, history[-1]
    assert history[-1]["train_loss"] < 0.25 * history[0]["train_loss"]
    state = torch.load(tmp_path / "run" / "last.pt", weights_only=True)
    assert all(g["fused"] for g in state["optimizer"]["param_groups"])  # AdamW's CPU kernel (engine.adamw_options)
    scores = evaluate_checkpoint(data, tmp_path / "run" / "best.safetensors", device="cpu", workers=0)
    assert scores["top1"] >= 99.9 and scores["images"] == 18
    # bf16 on the 60 held-out images of this trained model: autocast (predict --amp bf16) and the weights
    # held in bf16 (the model cast: oneDNN's bf16 kernels) give the float32 model's top-1 on every image.
    best = tmp_path / "run" / "best.safetensors"
    top1 = {amp: {r["path"]: r["top"][0]["index"] for r in predict([data / "held_out"], best, topk=1, amp=amp,
                                                                   show_progress=False)} for amp in ("none", "bf16")}
    assert len(top1["none"]) == 60 and top1["bf16"] == top1["none"]
    net, _, size, crop = load_classifier(best)
    x = torch.stack([eval_transform(size, crop)(Image.open(p).convert("RGB")) for p in top1["none"]])
    with torch.inference_mode():
        assert net.eval().bfloat16()(x.bfloat16()).argmax(1).tolist() == list(top1["none"].values())


def test_outputs_and_metrics_format(tmp_path, tiny):
    out = tmp_path / "run"
    result = train(TrainConfig(data=str(tiny), output=str(out), epochs=2, **FAST))
    assert {p.name for p in out.iterdir()} >= {"metrics.jsonl", "last.pt", "best.safetensors", "curves.png", "config.json"}
    lines = [json.loads(l) for l in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in lines] == [0, 1]
    for r in lines:
        assert {"epoch", "train_loss", "val_loss", "val_top1", "val_top5", "lr", "epoch_seconds", "images_per_second"} <= set(r)
        assert 0 <= r["val_top1"] <= r["val_top5"] <= 100 and r["images_per_second"] > 0
    config = json.loads((out / "config.json").read_text())
    assert config["model"] == "pvt_v2_b0" and config["lr_scaled"] == pytest.approx(5e-3 * 8 / 512)
    assert config["classes"] == ["circle", "square", "triangle"]
    assert (out / "curves.png").read_bytes()[:4] == b"\x89PNG"
    # best.safetensors alone rebuilds the trained classifier, class names included.
    model = pvtv2.create_model(pretrained=out / "best.safetensors")
    assert model.num_classes == 3 and model.class_names == ["circle", "square", "triangle"]
    assert result["best_top1"] == max(r["val_top1"] for r in lines)


def test_eval_and_predict_commands(tmp_path, tiny, cli):
    out = tmp_path / "run"
    train(TrainConfig(data=str(tiny), output=str(out), epochs=1, **FAST))
    res = cli("eval", "--data", str(tiny), "--model", "pvt_v2_b0", "--checkpoint",
              str(out / "best.safetensors"), "--workers", "0", "--device", "cpu", check=True)
    scores = json.loads(res.stdout)
    assert set(scores) >= {"top1", "top5", "loss", "images"} and scores["images"] == 12
    in_process = evaluate_checkpoint(tiny, out / "best.safetensors", device="cpu", workers=0)
    assert scores["top1"] == in_process["top1"]
    res = cli("predict", str(tiny / "val" / "circle"), str(tiny / "val" / "square" / "00000.png"),
              "--checkpoint", str(out / "best.safetensors"), "--topk", "2", check=True)
    records = [json.loads(l) for l in res.stdout.splitlines()]
    assert len(records) == 5
    for r in records:
        assert len(r["top"]) == 2 and r["top"][0]["class"] in ("circle", "square", "triangle")
        assert r["top"][0]["prob"] >= r["top"][1]["prob"]
    direct = list(predict([tiny / "val" / "square" / "00000.png"], out / "best.safetensors", topk=2))
    assert [t["class"] for t in direct[0]["top"]] == [t["class"] for t in records[-1]["top"]]
    assert abs(direct[0]["top"][0]["prob"] - records[-1]["top"][0]["prob"]) < 1e-4



@pytest.mark.slow
def test_sigkill_mid_epoch_then_resume_is_exact(tmp_path):
    data = make_classification_dataset(tmp_path / "d", classes=3, train_per_class=40, val_per_class=4,
                                       size=40, seed=2, progress=False)
    recipe = dict(FAST, data=str(data), epochs=3, workers=1)
    subprocess.run(pvtv2_cmd("train", *cli_args({**recipe, "output": str(tmp_path / "straight")})),
                   env=ENV, check=True, capture_output=True)

    out = tmp_path / "killed"
    proc = subprocess.Popen(pvtv2_cmd("train", *cli_args({**recipe, "output": str(out)})), env=ENV,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    metrics = out / "metrics.jsonl"
    deadline = time.time() + 300
    while not (metrics.exists() and metrics.read_text().count("\n") >= 1 and (out / "last.pt").exists()):
        assert proc.poll() is None and time.time() < deadline, "training ended before the first epoch was saved"
        time.sleep(0.05)
    epoch_seconds = json.loads(metrics.read_text().splitlines()[0])["epoch_seconds"]
    time.sleep(epoch_seconds * 0.5)  # well inside epoch 1
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert metrics.read_text().count("\n") == 1, "the kill was meant to land in the middle of epoch 1"
    assert torch.load(out / "last.pt", weights_only=True)["epoch"] == 0

    res = subprocess.run(pvtv2_cmd("train", *cli_args({**recipe, "output": str(out)}), "--resume"),
                         env=ENV, capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "resumed from" in res.stdout and "at epoch 1" in res.stdout
    assert hash_training_state(out / "last.pt") == hash_training_state(tmp_path / "straight" / "last.pt")
    a = [json.loads(l) for l in metrics.read_text().splitlines()]
    b = [json.loads(l) for l in (tmp_path / "straight" / "metrics.jsonl").read_text().splitlines()]
    assert [(r["train_loss"], r["val_top1"]) for r in a] == [(r["train_loss"], r["val_top1"]) for r in b]


@pytest.mark.slow
def test_torchrun_two_processes(tmp_path, tiny):
    out = tmp_path / "ddp"
    res = subprocess.run([str(VENV_BIN / "torchrun"), "--standalone", "--nproc_per_node=2", "-m", "pvtv2", "train",
                          *cli_args({**FAST, "data": str(tiny), "epochs": 2, "output": str(out)})],
                         env=ENV, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert "2 process(es)" in res.stdout
    assert res.stdout.count("done: best val top-1") == 1 and res.stdout.count("epoch 1:") == 1  # rank 0 alone speaks
    lines = [json.loads(l) for l in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in lines] == [0, 1]  # rank 0 alone wrote, once per epoch
    assert {"train_loss", "val_loss", "val_top1", "val_top5", "lr", "epoch_seconds", "images_per_second"} <= set(lines[0])
    config = json.loads((out / "config.json").read_text())
    assert config["world_size"] == 2 and config["lr_scaled"] == pytest.approx(5e-3 * 16 / 512)
    assert not list(out.glob("*.tmp")) and load_file(out / "best.safetensors")


@pytest.mark.timeout(240)
def test_torchrun_a_rank_with_only_broken_images_skips_with_the_others(tmp_path, tiny):
    """Rank 1's first batch (one image) is unreadable while rank 0's is fine: both must skip that
    step together (a rank skipping alone would leave the other waiting in backward's all-reduce)."""
    from torch.utils.data import DistributedSampler

    from pvtv2.classification.data import SkippingImageFolder

    data = tmp_path / "d"
    shutil.copytree(tiny, data)
    files = [p for p, _ in SkippingImageFolder(data / "train").samples]
    sampler = DistributedSampler(files, num_replicas=2, rank=1, shuffle=True, seed=0)
    sampler.set_epoch(0)
    first_of_rank1 = next(iter(sampler))
    Path(files[first_of_rank1]).write_bytes(b"not an image")
    out = tmp_path / "ddp"
    recipe = {**FAST, "data": str(data), "epochs": 1, "output": str(out), "batch_size": 1, "mixup": 0.0, "cutmix": 0.0,
              "dist_timeout": 1.0, "log_every": 3}
    res = subprocess.run([str(VENV_BIN / "torchrun"), "--standalone", "--nproc_per_node=2", "-m", "pvtv2", "train",
                          *cli_args(recipe)], env=ENV, capture_output=True, text=True, timeout=200)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert "epoch 0: skipped 1 step(s) on every process" in res.stdout
    record = json.loads((out / "metrics.jsonl").read_text())
    assert record["skipped_steps"] == 1 and record["skipped_images"] == 1
    assert record["images_per_second"] > 0 and record["train_loss"] > 0


# -- errors and faults -----------------------------------------------------------------
def test_missing_and_empty_data(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        train(TrainConfig(data=str(tmp_path / "nope"), output=str(tmp_path / "o"), **FAST))
    (tmp_path / "d" / "train").mkdir(parents=True)
    with pytest.raises(DataError, match=r"val is missing"):
        train(TrainConfig(data=str(tmp_path / "d"), output=str(tmp_path / "o"), **FAST))
    (tmp_path / "d" / "val").mkdir()
    with pytest.raises(DataError, match="no class folders"):
        train(TrainConfig(data=str(tmp_path / "d"), output=str(tmp_path / "o"), **FAST))
    (tmp_path / "d" / "train" / "cat").mkdir()
    (tmp_path / "d" / "val" / "cat").mkdir()
    with pytest.raises(DataError, match=r"train/cat contains no images"):
        train(TrainConfig(data=str(tmp_path / "d"), output=str(tmp_path / "o"), **FAST))


def test_class_missing_from_val(tmp_path, tiny, cli):
    data = tmp_path / "d"
    shutil.copytree(tiny, data)
    shutil.rmtree(data / "val" / "circle")
    res = cli("train", *cli_args({**FAST, "data": str(data), "epochs": 1, "output": str(tmp_path / "o")}))
    assert res.returncode == 2
    assert "has no folder for class(es) ['circle'] that train has" in res.stderr
    assert "Traceback" not in res.stderr


def test_unreadable_images_are_skipped_and_counted(tmp_path, tiny):
    data = tmp_path / "d"
    shutil.copytree(tiny, data)
    good = (data / "train" / "circle" / "00000.png").read_bytes()
    (data / "train" / "circle" / "broken.png").write_bytes(good[: len(good) // 3])  # truncated
    (data / "val" / "square" / "garbage.png").write_bytes(b"not an image at all")
    with pytest.warns(UserWarning, match=r"skipped \d unreadable image"):
        train(TrainConfig(data=str(data), output=str(tmp_path / "o"), epochs=2, **FAST))
    lines = [json.loads(l) for l in (tmp_path / "o" / "metrics.jsonl").read_text().splitlines()]
    assert len(lines) == 2
    # The val garbage is skipped every epoch; the truncated train image whenever the sampler draws it
    # (drop_last may leave it out of an epoch).
    assert all(r["skipped_images"] >= 1 for r in lines)


def test_runs_on_nothing_readable_are_errors(tmp_path, tiny):
    data = tmp_path / "d"
    shutil.copytree(tiny, data)
    for p in (data / "train").rglob("*.png"):
        p.write_bytes(b"not an image")
    with pytest.raises(DataError, match=r"epoch 0: training on .*train: no usable sample \(\d+ file\(s\) skipped; first: "):
        train(TrainConfig(data=str(data), output=str(tmp_path / "o"), epochs=2, **FAST))
    assert not (tmp_path / "o" / "best.safetensors").exists()
    # eval on a folder whose images are all unreadable: an error, not top-1 0.0
    for p in (data / "val").rglob("*.png"):
        p.write_bytes(b"not an image")
    model = pvtv2.create_model("pvt_v2_b0", num_classes=3)
    save_file(model, tmp_path / "m.safetensors", class_names=["circle", "square", "triangle"])
    with pytest.raises(DataError, match=r"evaluating on .*val: no usable sample \(12 file\(s\) skipped"):
        evaluate_checkpoint(data, tmp_path / "m.safetensors", device="cpu", workers=0)


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path, tiny):
    out = tmp_path / "o"
    train(TrainConfig(data=str(tiny), output=str(out), epochs=1, **FAST))
    before = (out / "last.pt").read_bytes()
    with pytest.raises(TrainingError, match=r"loss is (nan|inf).*last good checkpoint is .*last.pt \(epoch 0\)"):
        train(TrainConfig(data=str(tiny), output=str(out), epochs=3, resume="auto", **{**FAST, "lr": 1e39}))
    assert (out / "last.pt").read_bytes() == before


def test_a_finished_run_is_not_overwritten_unless_asked(tmp_path, tiny, capsys):
    from pvtv2.cli import main

    out = tmp_path / "o"
    train(TrainConfig(data=str(tiny), output=str(out), epochs=1, **FAST))
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    capsys.readouterr()
    assert main(["train", *cli_args({**FAST, "data": str(tiny), "epochs": 1, "output": str(out)})]) == 2
    err = capsys.readouterr().err
    assert "already holds a run" in err and "--resume" in err and "--overwrite" in err
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # best, metrics, last.pt untouched
    train(TrainConfig(data=str(tiny), output=str(out), epochs=1, overwrite=True, **{**FAST, "seed": 1}))
    assert (out / "last.pt").read_bytes() != before["last.pt"]
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 1


def test_incompatible_resume(tmp_path, tiny):
    out = tmp_path / "o"
    train(TrainConfig(data=str(tiny), output=str(out), epochs=1, **FAST))
    with pytest.raises(TrainingStateError, match="model is 'pvt_v2_b0' in the checkpoint but 'pvt_v2_b1'"):
        train(TrainConfig(data=str(tiny), output=str(out), epochs=2, resume="auto", **{**FAST, "model": "pvt_v2_b1"}))
    with pytest.raises(TrainingStateError, match="not a pvtv2 training checkpoint"):
        train(TrainConfig(data=str(tiny), output=str(tmp_path / "p"), epochs=2, resume=str(out / "best.safetensors"), **FAST))


def test_fp16_on_cpu_is_refused(tmp_path, tiny):
    with pytest.raises(ValueError, match="fp16 needs a CUDA device"):
        train(TrainConfig(data=str(tiny), output=str(tmp_path / "o"), epochs=1, **{**FAST, "amp": "fp16"}))


def test_bf16_autocast_trains_on_cpu(tmp_path, tiny):
    train(TrainConfig(data=str(tiny), output=str(tmp_path / "o"), epochs=1, **{**FAST, "amp": "bf16"}))
    line = json.loads((tmp_path / "o" / "metrics.jsonl").read_text())
    assert line["train_loss"] > 0 and json.loads((tmp_path / "o" / "config.json").read_text())["amp_resolved"] == "bf16"


def test_recipe_defaults_follow_official_configs():
    for name, variant in REGISTRY.items():  # per variant: configs/pvt_v2/*.py, written in the registry
        cfg = TrainConfig(data="x", model=name).resolved()
        assert (cfg.drop_path, cfg.clip_grad) == (variant.drop_path, variant.clip_grad), name
    cfg = TrainConfig(data="x", model="pvt_v2_b2").resolved()
    assert (cfg.lr, cfg.weight_decay, cfg.epochs) == (5e-4, 0.05, 300)
    assert (cfg.mixup, cfg.cutmix, cfg.smoothing, cfg.reprob, cfg.aa) == (0.8, 1.0, 0.1, 0.25, "rand-m9-mstd0.5-inc1")
