"""Flags that reach the package's protections: --overwrite for export and data synth,
--max-image-pixels for predict, and detect predict's note when nothing passes its threshold.
In-process through `pvtv2.cli.main`."""
import json

import pytest
import torch
from PIL import Image

import pvtv2
from pvtv2.cli import main


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_synth_overwrite_flag(capsys, tmp_path):
    out = tmp_path / "shapes"
    args = ["data", "synth", "--out", out, "--classes", 2, "--train-per-class", 1, "--val-per-class", 1, "--size", 32]
    assert run(capsys, *args)[0] == 0
    code, _, err = run(capsys, *args)
    assert code == 2 and "--overwrite" in err and err.count("\n") == 1
    assert run(capsys, *args, "--overwrite")[0] == 0
    assert len(list(out.rglob("*.png"))) == 4


def test_export_overwrite_flag(capsys, tmp_path):
    ckpt = tmp_path / "b0"
    pvtv2.create_model("pvt_v2_b0", num_classes=2).save_pretrained(ckpt)
    target = tmp_path / "b0.pt"
    target.write_bytes(b"keep me")
    args = ["export", ckpt, "--format", "torchscript", "--out", target]
    code, _, err = run(capsys, *args)
    assert code == 2 and "--overwrite" in err and target.read_bytes() == b"keep me"
    assert run(capsys, *args, "--overwrite")[0] == 0
    assert torch.jit.load(str(target))(torch.randn(1, 3, 64, 64)).shape == (1, 2)


def test_predict_max_image_pixels_skips_larger_images(capsys, tmp_path):
    ckpt = tmp_path / "b0"
    pvtv2.create_model("pvt_v2_b0", num_classes=2).save_pretrained(ckpt)
    Image.new("RGB", (40, 40)).save(tmp_path / "small.png")
    Image.new("RGB", (80, 80)).save(tmp_path / "large.png")
    code, out, _ = run(capsys, "predict", tmp_path / "small.png", tmp_path / "large.png", "--checkpoint", ckpt,
                       "--img-size", 32, "--max-image-pixels", 2000)
    records = {r["path"].rsplit("/", 1)[-1]: r for r in map(json.loads, out.splitlines())}
    assert code == 0 and "error" not in records["small.png"] and "error" in records["large.png"]


def test_detect_predict_says_when_nothing_passes_the_threshold(capsys, tmp_path):
    from pvtv2.detection import create_detector, save_detector

    torch.manual_seed(0)
    model = create_detector("retinanet", "pvt_v2_b0", num_classes=2, min_size=64, max_size=96)
    save_detector(model, tmp_path / "det.safetensors", class_names=["a", "b"])
    Image.new("RGB", (64, 64), "white").save(tmp_path / "img.png")
    code, out, err = run(capsys, "detect", "predict", tmp_path / "img.png", "--checkpoint", tmp_path / "det.safetensors",
                         "--out", tmp_path / "pred")
    assert code == 0 and json.loads(out)["detections"] == []  # a fresh head scores about 0.01
    assert "none scored >= --score-thresh 0.5" in err and "0.05" in err
