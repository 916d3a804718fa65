"""Image files read correctly or refused clearly, in every task: 16-bit PNGs, directory link
loops, decompression bombs, broken COCO entries, unusable segmentation pairs, predictions that
are never invalid JSON."""
import io
import json
import math
import os
import struct
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import transforms

import pvtv2
from pvtv2.checkpoint import CheckpointError, save_file
from pvtv2.classification.data import SkippingImageFolder
from pvtv2.classification.predict import image_paths, predict
from pvtv2.data.reading import open_rgb, walk_files
from pvtv2.detection.data import CocoDetection
from pvtv2.errors import DataError
from pvtv2.segmentation.data import SegmentationDataset, collate_pairs


def gradient16(h: int = 40, w: int = 40) -> np.ndarray:
    return (np.arange(h * w).reshape(h, w) * (65535 // (h * w))).astype(np.uint16)


def bomb_png(path: Path, width: int = 20000, height: int = 20000) -> Path:
    """A 1x1 PNG whose header declares ``width x height``: a few dozen bytes on disk."""
    buf = io.BytesIO()
    Image.new("L", (1, 1)).save(buf, format="PNG")
    data = bytearray(buf.getvalue())
    data[16:24] = struct.pack(">II", width, height)  # IHDR data follows the signature, length and type
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    path.write_bytes(bytes(data))
    return path


def classifier_file(path: Path, model=None) -> Path:
    model = model or pvtv2.create_model("pvt_v2_b0", num_classes=2)
    save_file(model.eval(), path, class_names=["a", "b"], extra={"input_size": 32, "crop_pct": 1.0})
    return path


# -- 16-bit images ---------------------------------------------------------------------------
def test_16bit_png_is_scaled_not_clipped(tmp_path):
    """PIL's convert("RGB") clips 16-bit values at 255 (a white image); every task keeps the
    top 8 bits instead, as torchvision's to_dtype(scale=True)."""
    grey = gradient16()
    expected = np.repeat((grey >> 8).astype(np.uint8)[..., None], 3, axis=2)
    (tmp_path / "cls" / "a").mkdir(parents=True)
    Image.fromarray(grey).save(tmp_path / "cls" / "a" / "x.png")
    assert Image.open(tmp_path / "cls" / "a" / "x.png").mode == "I;16"
    assert np.array_equal(np.asarray(open_rgb(tmp_path / "cls" / "a" / "x.png")), expected)

    folder = SkippingImageFolder(tmp_path / "cls", transforms.PILToTensor())
    image, _, err = folder[0]
    assert err is None and np.array_equal(image.permute(1, 2, 0).numpy(), expected)

    (tmp_path / "img").mkdir()
    Image.fromarray(grey).save(tmp_path / "img" / "x.png")
    Image.fromarray(np.zeros((40, 40), dtype=np.uint8)).save(tmp_path / "mask.png")
    seg_image, _ = SegmentationDataset([(tmp_path / "img" / "x.png", tmp_path / "mask.png")], None, 2).load(0)
    assert np.array_equal(np.asarray(seg_image), expected)

    coco = {"images": [{"id": 1, "file_name": "x.png", "width": 40, "height": 40}],
            "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [2, 2, 10, 10], "iscrowd": 0}],
            "categories": [{"id": 1, "name": "thing"}]}
    (tmp_path / "ann.json").write_text(json.dumps(coco))
    det_image, _, err = CocoDetection(tmp_path / "img", tmp_path / "ann.json")[0]
    assert err is None and torch.equal((det_image * 255).round().byte().permute(1, 2, 0), torch.from_numpy(expected))


def test_predict_reads_a_16bit_png_as_its_8bit_twin(tmp_path):
    grey = gradient16(48, 48)
    Image.fromarray(grey).save(tmp_path / "a16.png")
    Image.fromarray((grey >> 8).astype(np.uint8)).save(tmp_path / "b8.png")
    ckpt = classifier_file(tmp_path / "m.safetensors", pvtv2.create_model("pvt_v2_b0", num_classes=2).eval())
    a, b = predict([tmp_path / "a16.png", tmp_path / "b8.png"], ckpt, topk=2, show_progress=False)
    assert a["top"] == b["top"]


# -- directory links -------------------------------------------------------------------------
def test_directory_link_loops_are_walked_once(tmp_path):
    root = tmp_path / "train"
    for cls in ("a", "b"):
        (root / cls).mkdir(parents=True)
        for i in range(2):
            Image.new("RGB", (8, 8)).save(root / cls / f"{i}.png")
    os.symlink(root / "a", root / "a" / "loop")                  # a/loop -> a: a loop
    (tmp_path / "extra").mkdir()
    Image.new("RGB", (8, 8)).save(tmp_path / "extra" / "e.png")
    os.symlink(tmp_path / "extra", root / "b" / "more")          # b/more -> elsewhere: followed
    os.symlink(tmp_path / "extra", root / "b" / "more_again")    # the same folder twice: listed once

    samples = SkippingImageFolder(root).samples
    assert [(Path(p).relative_to(root).as_posix(), c) for p, c in samples] == [
        ("a/0.png", 0), ("a/1.png", 0), ("b/0.png", 1), ("b/1.png", 1), ("b/more/e.png", 1)]
    assert [p.relative_to(root).as_posix() for p in image_paths([root])] == [
        "a/0.png", "a/1.png", "b/0.png", "b/1.png", "b/more/e.png"]
    assert len(list(walk_files(root))) == 5


# -- decompression bombs -----------------------------------------------------------------------
def test_decompression_bomb_is_an_unreadable_image(tmp_path):
    bomb = bomb_png(tmp_path / "bomb.png")
    assert bomb.stat().st_size < 100
    with pytest.raises(DataError, match="bomb.png.*exceeds limit.*max_image_pixels"):
        open_rgb(bomb)
    (tmp_path / "cls" / "a").mkdir(parents=True)
    bomb_png(tmp_path / "cls" / "a" / "bomb.png")
    Image.new("RGB", (40, 40)).save(tmp_path / "cls" / "a" / "fine.png")
    folder = SkippingImageFolder(tmp_path / "cls", transforms.PILToTensor())
    assert "bomb.png" in folder[0][2] and folder[1][2] is None

    # predict: an error record, and the next image is still classified
    records = list(predict([tmp_path / "cls"], classifier_file(tmp_path / "m.safetensors"), show_progress=False))
    assert [("error" in r, Path(r["path"]).name) for r in records] == [(True, "bomb.png"), (False, "fine.png")]
    assert "exceeds limit" in records[0]["error"]


def test_pixel_limit_is_configurable(tmp_path, monkeypatch):
    Image.new("RGB", (8, 8)).save(tmp_path / "x.png")
    assert open_rgb(tmp_path / "x.png", max_pixels=64).size == (8, 8)
    with pytest.raises(DataError, match="8x8 = 64 pixels, more than the limit of 63"):
        open_rgb(tmp_path / "x.png", max_pixels=63)
    # A limit above PIL's reads what PIL alone refuses, and leaves PIL's own setting as it was.
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 16)
    with pytest.raises(DataError, match="exceeds limit"):
        open_rgb(tmp_path / "x.png")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nor PIL's DecompressionBombWarning
        assert open_rgb(tmp_path / "x.png", max_pixels=100).size == (8, 8)
    assert Image.MAX_IMAGE_PIXELS == 16
    folder = tmp_path / "cls"
    (folder / "a").mkdir(parents=True)
    Image.new("RGB", (8, 8)).save(folder / "a" / "x.png")
    assert SkippingImageFolder(folder, max_image_pixels=100)[0][2] is None
    assert "exceeds limit" in SkippingImageFolder(folder)[0][2]


# -- COCO entries ------------------------------------------------------------------------------
def test_coco_non_finite_boxes_and_unsafe_file_names_are_skipped_and_counted(tmp_path):
    (tmp_path / "images").mkdir()
    for name in ("a.png", "b.png"):
        Image.new("RGB", (50, 40)).save(tmp_path / "images" / name)
    Image.new("RGB", (50, 40)).save(tmp_path / "secret.png")   # outside the image folder
    img = {"width": 50, "height": 40}
    coco = {"images": [{"id": 1, "file_name": "a.png", **img}, {"id": 2, "file_name": "b.png", **img},
                       {"id": 3, "file_name": "../secret.png", **img},
                       {"id": 4, "file_name": str(tmp_path / "secret.png"), **img}],
            "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [5, 5, 10, 10]},
                            {"id": 2, "image_id": 1, "category_id": 1, "bbox": [math.nan, 5, 10, 10]},
                            {"id": 3, "image_id": 1, "category_id": 1, "bbox": [5, 5, math.inf, 10]},
                            {"id": 4, "image_id": 2, "category_id": 1, "bbox": [1, 1, 8, 8]},
                            {"id": 5, "image_id": 3, "category_id": 1, "bbox": [1, 1, 8, 8]},
                            {"id": 6, "image_id": 4, "category_id": 1, "bbox": [1, 1, 8, 8]}],
            "categories": [{"id": 1, "name": "thing"}]}
    (tmp_path / "ann.json").write_text(json.dumps(coco))  # NaN / Infinity: Python's JSON reads them back
    ds = CocoDetection(tmp_path / "images", tmp_path / "ann.json", train=True, flip_prob=0.0)
    assert len(ds) == 2
    assert sorted(p.split(":")[0] for p in ds.problems["annotations"]) == ["annotation 2 of a.png", "annotation 3 of a.png"]
    assert all("non-finite" in p for p in ds.problems["annotations"])
    assert ds[0][1]["boxes"].tolist() == [[5.0, 5.0, 15.0, 15.0]]   # not a full-width box
    assert len(ds.problems["unsafe_file_names"]) == 2
    assert "climbs out of the image folder" in ds.problems["unsafe_file_names"][0]
    assert "is absolute" in ds.problems["unsafe_file_names"][1]
    with pytest.warns(UserWarning, match="2 annotations, 2 unsafe file names"):
        ds.warn()


# -- segmentation pairs ------------------------------------------------------------------------
def _pair(root: Path, stem: str, mask: np.ndarray) -> tuple[Path, Path]:
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "masks").mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((*mask.shape, 3), 90, dtype=np.uint8)).save(root / "images" / f"{stem}.png")
    Image.fromarray(mask).save(root / "masks" / f"{stem}.png")
    return root / "images" / f"{stem}.png", root / "masks" / f"{stem}.png"


def test_out_of_range_label_skips_the_pair_names_the_mask_and_keeps_the_batch(tmp_path):
    from pvtv2.segmentation.data import TrainTransform

    good = _pair(tmp_path, "good", np.ones((32, 32), dtype=np.uint8))
    bad_mask = np.ones((32, 32), dtype=np.uint8)
    bad_mask[3, 4] = 9                                            # one pixel of a class that does not exist
    bad = _pair(tmp_path, "bad", bad_mask)
    ds = SegmentationDataset([bad, good], TrainTransform((32, 32), 32), 3)
    with pytest.warns(UserWarning, match=r"masks[/\\]bad\.png: label values \[9\] are out of range"):
        batch = [ds[(0, 11)], ds[(1, 12)]]
    images, labels, errors = collate_pairs(batch)
    assert images.shape == (2, 3, 32, 32) and len(errors) == 1 and str(bad[1]) in errors[0]
    # Evaluation (plain indices) skips without a stand-in.
    with pytest.warns(UserWarning):
        assert ds[0][0] is None and "out of range" in ds[0][2]


@pytest.mark.slow
def test_segmentation_training_survives_a_bad_mask_in_a_batch_of_two(tmp_path):
    """A batch of 2 left with 1 sample at crop 32 stopped training in BatchNorm without naming the file."""
    from pvtv2.segmentation import SegTrainConfig, train

    root = tmp_path / "d"
    for split in ("training", "validation"):
        for i in range(2 if split == "training" else 1):
            mask = np.zeros((32, 32), dtype=np.uint8)
            mask[8:24, 8:24] = 1
            if split == "training" and i == 0:
                mask[0, 0] = 7
            for kind, data in (("images", np.dstack([mask * 200] * 3).astype(np.uint8)), ("annotations", mask)):
                (root / kind / split).mkdir(parents=True, exist_ok=True)
                Image.fromarray(data).save(root / kind / split / f"{i}.png")
    (root / "classes.json").write_text('["bg", "fg"]')
    with pytest.warns(UserWarning, match=r"annotations[/\\]training[/\\]0\.png: label values \[7\]"):
        train(SegTrainConfig(data=str(root), output=str(tmp_path / "run"), model="pvt_v2_b0", iters=1, eval_interval=1,
                             batch_size=2, scale=(32, 32), crop=32, ratio_range=(1.0, 1.0), workers=0, device="cpu",
                             progress=False, drop_path=0.0))
    record = json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[-1])
    assert record["skipped_images"] == 1 and math.isfinite(record["train_loss"])


# -- predict output ----------------------------------------------------------------------------
def test_predict_never_writes_invalid_json(tmp_path):
    """Finite but huge weights overflow the logits to inf; softmax then gives NaN."""
    model = pvtv2.create_model("pvt_v2_b0", num_classes=2)
    with torch.no_grad():
        model.head.weight.fill_(3e38)
    ckpt = classifier_file(tmp_path / "m.safetensors", model)
    Image.new("RGB", (32, 32), (200, 10, 10)).save(tmp_path / "x.png")
    records = list(predict([tmp_path / "x.png"], ckpt, show_progress=False))
    assert len(records) == 1 and "not finite" in records[0]["error"]
    json.dumps(records, allow_nan=False)


def test_predict_errors_are_one_line(tmp_path, cli):
    ckpt = classifier_file(tmp_path / "m.safetensors")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("no images here")
    with pytest.raises(DataError, match=r"no images found in .*empty \(searched recursively for .*\.png"):
        list(predict([tmp_path / "empty"], ckpt, show_progress=False))
    (tmp_path / "broken.onnx").write_bytes(b"\x08\x07not a protobuf at all")
    Image.new("RGB", (32, 32)).save(tmp_path / "x.png")
    with pytest.raises(CheckpointError, match="broken.onnx: not a readable ONNX model"):
        list(predict([tmp_path / "x.png"], tmp_path / "broken.onnx", show_progress=False))
    res = cli("predict", str(tmp_path / "x.png"), "--checkpoint", str(tmp_path / "broken.onnx"))
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert "broken.onnx: not a readable ONNX model" in res.stderr and not res.stdout


@pytest.mark.parametrize("task", ["detect", "segment"])
def test_refused_dense_predict_makes_no_output_folder(tmp_path, cli, task):
    (tmp_path / "no_images").mkdir()
    (tmp_path / "no_images" / "notes.txt").write_text("no images here")
    res = cli(task, "predict", tmp_path / "no_images", "--checkpoint", tmp_path / "any.safetensors",
              "--out", tmp_path / "out")
    assert res.returncode == 2 and "no images found in" in res.stderr and "Traceback" not in res.stderr
    assert not (tmp_path / "out").exists()
    Image.new("RGB", (32, 32)).save(tmp_path / "x.png")  # an image, but no checkpoint
    res = cli(task, "predict", tmp_path / "x.png", "--checkpoint", tmp_path / "any.safetensors", "--out", tmp_path / "out")
    assert res.returncode == 2 and "any.safetensors" in res.stderr and not (tmp_path / "out").exists()


def test_detect_predict_pads_a_very_wide_image_and_goes_on(tmp_path):
    from pvtv2.detection.model import create_detector, save_detector
    from pvtv2.detection.predict import predict as detect

    torch.manual_seed(0)
    ckpt = save_detector(create_detector("retinanet", "pvt_v2_b0", 2, min_size=64, max_size=64).eval(),
                         tmp_path / "det.safetensors", class_names=["a", "b"])
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (10, 1000, 3), dtype=np.uint8)).save(tmp_path / "a_wide.png")
    Image.fromarray(rng.integers(0, 255, (1000, 10, 3), dtype=np.uint8)).save(tmp_path / "b_tall.png")
    bomb_png(tmp_path / "c_bomb.png")
    Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(tmp_path / "d_fine.png")
    records = list(detect([tmp_path], ckpt, tmp_path / "out", score_thresh=0.0, progress_bar=False))
    assert [Path(r["path"]).name for r in records] == ["a_wide.png", "b_tall.png", "c_bomb.png", "d_fine.png"]
    assert "exceeds limit" in records[2]["error"]
    for r, size in zip(records[:2] + records[3:], [(1000, 10), (10, 1000), (64, 64)]):
        assert "error" not in r and Image.open(r["image"]).size == size
        for d in r["detections"]:
            x0, y0, x1, y1 = d["box"]
            assert 0 <= x0 < x1 <= size[0] and 0 <= y0 < y1 <= size[1]
    (tmp_path / "taken").write_text("a file")
    with pytest.raises(DataError, match="is a file, not a folder"):
        list(detect([tmp_path / "d_fine.png"], ckpt, tmp_path / "taken", progress_bar=False))
    (tmp_path / "no_images").mkdir()
    with pytest.raises(DataError, match="no images found"):
        list(detect([tmp_path / "no_images"], ckpt, tmp_path / "out2", progress_bar=False))
    assert not (tmp_path / "out2").exists()
