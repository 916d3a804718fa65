"""`pvtv2 detect train` as a process: SIGKILL and exact resume, torchrun, training errors, a NaN loss.
(In their own file, apart from test_detection.py's trained-model fixture, so the two test workers share
the slow runs.)"""
import json
import subprocess

import pytest
from conftest import (ENV, FAST_RETINANET as FAST, VENV_BIN, cli_args, epoch_metrics, hash_training_state, pvtv2_cmd,
                      sigkill_inside_epoch_1)

from pvtv2.data import make_detection_dataset
from pvtv2.detection import CocoDetection, DetTrainConfig, load_detector, train
from pvtv2.engine import TrainingStateError
from pvtv2.errors import DataError


@pytest.fixture(scope="module")
def coco_shapes(tmp_path_factory):
    return make_detection_dataset(tmp_path_factory.mktemp("det"), classes=3, train_images=12, val_images=6,
                                  size=96, seed=0, progress=False)


@pytest.mark.slow
def test_killed_run_resumes_exactly(coco_shapes, tmp_path):
    recipe = {**FAST, "data": str(coco_shapes), "batch_size": 2, "epochs": 3, "min_size": 96, "max_size": 96,
              "drop_path": 0.1, "workers": 2}
    straight = subprocess.run(pvtv2_cmd("detect", "train", *cli_args({**recipe, "output": str(tmp_path / "straight")})),
                              env=ENV, capture_output=True, text=True)
    assert straight.returncode == 0, straight.stderr
    out = tmp_path / "killed"
    proc = subprocess.Popen(pvtv2_cmd("detect", "train", *cli_args({**recipe, "output": str(out)})), env=ENV,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    sigkill_inside_epoch_1(proc, out)
    res = subprocess.run(pvtv2_cmd("detect", "train", *cli_args({**recipe, "output": str(out)}), "--resume"),
                         env=ENV, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert "resumed from" in res.stdout and "at epoch 1" in res.stdout
    assert hash_training_state(out / "last.pt") == hash_training_state(tmp_path / "straight" / "last.pt")
    assert epoch_metrics(out / "metrics.jsonl") == epoch_metrics(tmp_path / "straight" / "metrics.jsonl")


@pytest.mark.slow
def test_torchrun_two_processes_mask_rcnn(coco_shapes, tmp_path):
    out = tmp_path / "ddp"
    recipe = {**FAST, "kind": "maskrcnn", "data": str(coco_shapes), "batch_size": 4, "epochs": 1, "min_size": 64,
              "max_size": 64, "workers": 0, "output": str(out)}
    res = subprocess.run([str(VENV_BIN / "torchrun"), "--standalone", "--nproc_per_node=2", "-m", "pvtv2", "detect",
                          "train", *cli_args(recipe)], env=ENV, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert "2 process(es)" in res.stdout
    lines = [json.loads(l) for l in (out / "metrics.jsonl").read_text().splitlines()]
    assert len(lines) == 1 and {"loss_mask", "bbox_AP", "segm_AP", "segm_AP50"} <= set(lines[0])
    assert json.loads((out / "config.json").read_text())["world_size"] == 2
    model, info = load_detector(out / "best.safetensors")
    assert info["kind"] == "maskrcnn" and model.roi_heads.mask_predictor is not None


def test_training_errors(coco_shapes, tmp_path):
    base = {**FAST, "output": str(tmp_path / "o"), "epochs": 1}
    with pytest.raises(DataError, match="no such annotation file"):
        train(DetTrainConfig(data=str(tmp_path / "nope"), **base))
    with pytest.raises(ValueError, match="unknown model"):
        train(DetTrainConfig(data=str(coco_shapes), **{**base, "model": "resnet50"}))
    with pytest.raises(DataError, match="no full batch"):
        train(DetTrainConfig(data=str(coco_shapes), **{**base, "batch_size": 64}))
    empty = json.loads((coco_shapes / "annotations" / "instances_train2017.json").read_text())
    empty["annotations"] = []
    with pytest.raises(DataError, match="no usable images.*12 no annotations"):
        CocoDetection(coco_shapes / "train2017", _write_json(tmp_path, empty), train=True)


def test_training_on_unreadable_images_is_an_error(coco_shapes, tmp_path):
    import shutil

    data = tmp_path / "d"
    shutil.copytree(coco_shapes, data)
    for p in (data / "train2017").iterdir():
        p.write_bytes(b"not an image")
    with pytest.raises(DataError, match=r"epoch 0: training: no usable sample \(12 file\(s\) skipped; first: "):
        train(DetTrainConfig(data=str(data), output=str(tmp_path / "o"), epochs=1,
                             **{**FAST, "min_size": 96, "max_size": 96, "workers": 0}))
    assert not (tmp_path / "o" / "best.safetensors").exists()


@pytest.mark.slow
def test_nan_loss_and_incompatible_resume(coco_shapes, tmp_path):
    out = tmp_path / "o"
    base = {**FAST, "data": str(coco_shapes), "output": str(out), "batch_size": 4, "min_size": 96, "max_size": 96,
            "workers": 0}
    train(DetTrainConfig(epochs=1, **base))
    before = hash_training_state(out / "last.pt")
    with pytest.raises(TrainingStateError, match="kind is 'retinanet' in the checkpoint but 'fasterrcnn' now"):
        train(DetTrainConfig(epochs=2, resume="auto", **{**base, "kind": "fasterrcnn"}))
    from pvtv2.errors import TrainingError
    with pytest.raises(TrainingError, match=r"loss is (nan|inf) at epoch 1, step \d.*last good checkpoint is "
                                            r".*last.pt \(epoch 0\).*--clip-grad 1.0"):
        train(DetTrainConfig(epochs=2, resume="auto", **{**base, "lr": 1e30, "warmup_iters": 0, "clip_grad": 0.0}))
    assert hash_training_state(out / "last.pt") == before




def _write_json(tmp_path, data):
    path = tmp_path / "ann.json"
    path.write_text(json.dumps(data))
    return path
