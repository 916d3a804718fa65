"""Semantic FPN segmentation: model, metrics, data, training, evaluation, prediction."""
import json
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import ENV, VENV_BIN, cli_args, hash_training_state, pvtv2_cmd
import torch
from PIL import Image

import pvtv2
from pvtv2.checkpoint import CheckpointError
from pvtv2.data import make_segmentation_dataset
from pvtv2.engine import TrainingStateError, save_training_state
from pvtv2.errors import ConfigError, DataError, TrainingError
from pvtv2.segmentation import (SegTrainConfig, create_segmenter, evaluate_checkpoint, load_segmenter, predict,
                                save_segmenter, summarize, train, update_confusion)
from pvtv2.segmentation.data import SegmentationDataset, TrainTransform, ade_pairs, sliding_windows
from pvtv2.segmentation.predict import infer_logits
from pvtv2.segmentation.train import PassBatches, poly_lr


# The official pipeline (random rescale, crop with cat_max_ratio, flip, photometric, poly
# schedule) scaled to 64-pixel generated images.
FAST = dict(model="pvt_v2_b0", batch_size=8, scale=(64, 64), crop=64, ratio_range=(0.75, 1.33), lr=1e-3,
            warmup_iters=20, drop_path=0.0, workers=0, device="cpu", progress=False)



@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    return make_segmentation_dataset(tmp_path_factory.mktemp("seg"), classes=4, train_images=160, val_images=24,
                                     size=64, seed=0, progress=False)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return make_segmentation_dataset(tmp_path_factory.mktemp("segtiny"), classes=3, train_images=16, val_images=4,
                                     size=48, seed=1, progress=False)


@pytest.fixture(scope="module")
def trained(shapes, tmp_path_factory):
    out = tmp_path_factory.mktemp("segrun")
    result = train(SegTrainConfig(data=str(shapes), output=str(out), iters=150, eval_interval=50, **FAST))
    return out, result


# -- model -----------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["pvt_v2_b0", "pvt_v2_b2_li"])
@pytest.mark.parametrize("size", [(64, 64), (65, 97)])
def test_per_pixel_logits_at_input_size(name, size):
    model = create_segmenter(name, 5).eval()
    with torch.no_grad():
        out = model(torch.randn(2, 3, *size))
    assert out.shape == (2, 5, *size)
    assert torch.isfinite(out).all()
    # The FPN neck gets the backbone's 4 maps (strides 4..32) and gives 256 channels each.
    feats = model.backbone.forward_features(torch.randn(1, 3, *size))
    assert [f.shape[1] for f in feats] == list(model.backbone.embed_dims)
    assert [f.shape[-1] for f in feats] == [-(-size[1] // s) for s in (4, 8, 16, 32)]
    assert model.neck.inner_blocks[0][0].in_channels == model.backbone.embed_dims[0]


def test_channels_last_head_computes_what_the_default_layout_does():
    model = create_segmenter("pvt_v2_b0", 5).eval()
    x = torch.randn(2, 3, 64, 96)
    outputs = {}
    with torch.no_grad():
        for layout in (None, False):  # None: where it pays (CPU inference); False: never
            model.channels_last = layout
            outputs[layout] = model(x)
    assert outputs[None].is_contiguous(memory_format=torch.channels_last)
    assert not outputs[False].is_contiguous(memory_format=torch.channels_last)
    assert (outputs[None] - outputs[False]).abs().max() < 1e-4
    model.channels_last = None
    assert not model.train()(x).is_contiguous(memory_format=torch.channels_last)  # training keeps the default


def test_backbone_takes_pretrained_weights(tmp_path):
    clf = pvtv2.create_model("pvt_v2_b0", num_classes=10)
    pvtv2.save_pretrained(clf, tmp_path / "clf")
    seg = create_segmenter("pvt_v2_b0", 3, pretrained_backbone=tmp_path / "clf")
    for key, value in seg.backbone.state_dict().items():
        assert torch.equal(value, clf.state_dict()[key]), key
    assert seg.backbone.num_classes == 0
    with pytest.raises(ValueError, match="at least 2"):
        create_segmenter("pvt_v2_b0", 1)


def test_save_and_load_round_trip(tmp_path):
    model = create_segmenter("pvt_v2_b2_li", 3).eval()
    save_segmenter(model, tmp_path / "m.safetensors", class_names=["bg", "a", "b"], extra={"scale": [64, 64], "crop": 64})
    again, info = load_segmenter(tmp_path / "m.safetensors")
    x = torch.randn(1, 3, 64, 80)
    with torch.no_grad():
        assert torch.equal(model(x), again(x))
    assert info["class_names"] == ["bg", "a", "b"] and info["crop"] == 64
    assert again.backbone.config.attention == "linear"


# -- metrics ---------------------------------------------------------------------------
def test_miou_matches_a_direct_computation():
    target = torch.tensor([[0, 0, 1, 1], [2, 2, 255, 1], [0, 2, 2, 255]])
    pred = torch.tensor([[0, 1, 1, 1], [2, 0, 0, 1], [0, 2, 1, 2]])
    conf = update_confusion(torch.zeros(4, 4, dtype=torch.float64), pred, target)
    assert conf.sum() == 10  # the two ignored pixels are not counted
    res = summarize(conf, ["a", "b", "c", "d"])
    keep = target != 255
    ious, accs = [], []
    for c in range(3):  # class 3 never occurs in the ground truth: left out of the means
        t, p = (target == c) & keep, (pred == c) & keep
        ious.append((t & p).sum().item() / (t | p).sum().item())
        accs.append((t & p).sum().item() / t.sum().item())
    assert res["mIoU"] == pytest.approx(100 * np.mean(ious))
    assert res["mAcc"] == pytest.approx(100 * np.mean(accs))
    assert res["aAcc"] == pytest.approx(100 * 7 / 10)
    assert res["per_class"]["b"] == pytest.approx(100 * ious[1]) and res["per_class"]["d"] is None
    # By hand: class a: 2 hits, union 4 -> 0.5; b: 3 hits, union 5 -> 0.6; c: 2 hits, union 4 -> 0.5.
    assert ious == pytest.approx([0.5, 0.6, 0.5])


def test_confusion_accumulates_over_batches():
    g = torch.Generator().manual_seed(0)
    target = torch.randint(0, 5, (4, 20, 20), generator=g)
    target[:, :3] = 255
    pred = torch.randint(0, 5, (4, 20, 20), generator=g)
    whole = update_confusion(torch.zeros(5, 5), pred, target)
    parts = torch.zeros(5, 5)
    for i in range(4):
        update_confusion(parts, pred[i], target[i])
    assert torch.equal(whole, parts)
    assert whole[2, 3] == ((target == 2) & (pred == 3)).sum()


# -- data and inference ----------------------------------------------------------------
def test_sliding_windows_cover_the_image():
    for h, w, crop, stride in [(100, 150, 64, 42), (64, 64, 64, 42), (40, 200, 64, 42), (513, 700, 512, 341)]:
        seen = np.zeros((h, w), dtype=int)
        for top, left, bottom, right in sliding_windows(h, w, crop, stride):
            assert bottom - top <= crop and right - left <= crop
            seen[top:bottom, left:right] += 1
        assert seen.min() >= 1


def test_slide_inference_equals_whole_when_one_window_fits():
    model = create_segmenter("pvt_v2_b0", 3).eval()
    x = torch.randn(1, 3, 48, 56)
    whole = infer_logits(model, x, mode="whole")
    assert torch.allclose(infer_logits(model, x, mode="slide", crop=64), whole, atol=1e-6)
    slid = infer_logits(model, x, mode="slide", crop=32, stride=16)
    assert slid.shape == whole.shape and not torch.allclose(slid, whole)


def test_train_transform_keeps_image_and_label_aligned(shapes):
    pairs, problems = ade_pairs(shapes, "train")
    assert len(pairs) == 160 and not problems
    ds = SegmentationDataset(pairs, TrainTransform((64, 64), 48, (0.5, 2.0), 0.75), 4)
    for i in range(8):
        img, lab, err = ds[(i, 100 + i)]
        assert err is None and img.shape == (3, 48, 48) and lab.shape == (48, 48)
        # Background pixels are grey (low saturation), objects are saturated colours.
        rgb = img * torch.tensor([0.229, 0.224, 0.225])[:, None, None] + torch.tensor([0.485, 0.456, 0.406])[:, None, None]
        sat = rgb.max(0).values - rgb.min(0).values
        fg, bg = (lab > 0) & (lab != 255), lab == 0
        if fg.sum() > 20 and bg.sum() > 20:
            assert sat[fg].median() > sat[bg].median() + 0.1
    # The same (index, seed) gives the same sample: augmentations follow from the seed alone.
    a, b = ds[(3, 7)], ds[(3, 7)]
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


def test_pass_batches_split_processes_and_resume_mid_pass():
    full = [b for b in PassBatches(20, 3, seed=0, pass_index=1)]
    assert len(full) == 6 and len({i for b in full for i, _ in b}) == 18
    assert list(PassBatches(20, 3, seed=0, pass_index=1, start=4)) == full[4:]
    r0 = list(PassBatches(20, 2, seed=0, pass_index=0, rank=0, world=2))
    r1 = list(PassBatches(20, 2, seed=0, pass_index=0, rank=1, world=2))
    assert len(r0) == len(r1) == 5 and not {i for b in r0 for i, _ in b} & {i for b in r1 for i, _ in b}


def test_poly_schedule():
    cfg = SegTrainConfig(iters=100, lr=2e-4, power=0.9)
    assert poly_lr(cfg, 0) == pytest.approx(2e-4)
    assert poly_lr(cfg, 50) == pytest.approx(2e-4 * 0.5 ** 0.9)
    assert poly_lr(cfg, 99) == pytest.approx(2e-4 * 0.01 ** 0.9)
    warm = SegTrainConfig(iters=100, lr=1e-3, warmup_iters=10)
    assert poly_lr(warm, 0) == pytest.approx(1e-3 * 0.1) and poly_lr(warm, 10) == pytest.approx(1e-3 * 0.9 ** 0.9)


# -- training, evaluation, prediction --------------------------------------------------
@pytest.mark.slow
def test_short_training_reaches_miou(trained, shapes, tmp_path):
    out, result = trained
    lines = [json.loads(l) for l in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["iter"] for r in lines] == [50, 100, 150]
    assert {"train_loss", "lr", "mIoU", "mAcc", "aAcc", "seconds", "images_per_second"} <= set(lines[0])
    assert lines[-1]["train_loss"] < lines[0]["train_loss"]
    assert result["best_miou"] > 60, lines
    assert (out / "curves.png").stat().st_size > 0 and (out / "config.json").exists()
    assert all(g["fused"] for g in torch.load(out / "last.pt", weights_only=True)["optimizer"]["param_groups"])
    # The evaluation command agrees with what training measured on the same checkpoint.
    scores = evaluate_checkpoint(shapes, out / "best.safetensors", device="cpu", progress_bar=False)
    assert scores["mIoU"] == pytest.approx(result["best_miou"], abs=1e-3)
    assert scores["images"] == 24 and set(scores["per_class"]) == {"background", "circle", "square", "triangle"}
    assert min(v for v in scores["per_class"].values()) > 40
    slide = evaluate_checkpoint(shapes, out / "best.safetensors", mode="slide", crop=48, device="cpu", progress_bar=False)
    assert slide["mIoU"] > 50
    # bf16 autocast (`segment eval --amp bf16`) scores what float32 scores, within half a point of mIoU.
    bf16 = evaluate_checkpoint(shapes, out / "best.safetensors", device="cpu", amp="bf16", progress_bar=False)
    assert abs(bf16["mIoU"] - scores["mIoU"]) < 0.5 and bf16["images"] == 24


@pytest.mark.slow
def test_cli_eval_and_predict(trained, shapes, tmp_path, cli):
    out, result = trained
    res = cli("segment", "eval", "--data", str(shapes), "--checkpoint", str(out / "best.safetensors"),
              "--device", "cpu", "--json", str(tmp_path / "e.json"))
    assert res.returncode == 0, res.stderr
    assert "mIoU" in res.stdout and "triangle" in res.stdout
    assert json.loads((tmp_path / "e.json").read_text())["mIoU"] == pytest.approx(result["best_miou"], abs=1e-3)

    images = sorted((shapes / "images" / "validation").iterdir())[:3]
    records = list(predict(images, out / "best.safetensors", tmp_path / "pred", progress_bar=False))
    assert len(records) == 3
    for rec, img in zip(records, images):
        mask = Image.open(rec["mask"])
        assert mask.mode == "P" and mask.size == Image.open(img).size
        labels = np.asarray(mask)
        truth = np.asarray(Image.open(shapes / "annotations" / "validation" / img.name))
        assert (labels == truth).mean() > 0.7  # the palette PNG's values are the class indices
        assert Image.open(rec["overlay"]).size == mask.size
        assert sum(rec["classes"].values()) == pytest.approx(1, abs=1e-3)
    # The command line, in bf16 (the CPU's fast path): the float32 mask to within 1% of the pixels.
    res = cli("segment", "predict", str(images[0]), "--checkpoint", str(out / "best.safetensors"),
              "--out", str(tmp_path / "cli"), "--amp", "bf16")
    assert res.returncode == 0, res.stderr
    mask_bf16 = json.loads(res.stdout.splitlines()[0])["mask"]
    assert mask_bf16.endswith("_mask.png")
    assert (np.asarray(Image.open(mask_bf16)) == np.asarray(Image.open(records[0]["mask"]))).mean() > 0.99



@pytest.mark.slow
def test_killed_run_resumes_exactly(tiny, tmp_path):
    # Two workers: the augmentation of a sample must not depend on which worker draws it.
    recipe = {**FAST, "data": str(tiny), "batch_size": 4, "iters": 12, "eval_interval": 6, "checkpoint_interval": 2,
              "workers": 2, "drop_path": 0.1}
    straight = subprocess.run(pvtv2_cmd("segment", "train", *cli_args({**recipe, "output": str(tmp_path / "straight")})),
                              env=ENV, capture_output=True, text=True)
    assert straight.returncode == 0, straight.stderr
    out = tmp_path / "killed"
    proc = subprocess.Popen(pvtv2_cmd("segment", "train", *cli_args({**recipe, "output": str(out)})), env=ENV,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.time() + 300
    while not (out / "last.pt").exists():
        assert proc.poll() is None and time.time() < deadline, "training ended before its first checkpoint"
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    stopped = torch.load(out / "last.pt", weights_only=True)["iter"]
    assert stopped < 12, "the kill was meant to land before the end"
    res = subprocess.run(pvtv2_cmd("segment", "train", *cli_args({**recipe, "output": str(out)}), "--resume"),
                         env=ENV, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert f"at iteration {stopped}" in res.stdout
    assert hash_training_state(out / "last.pt") == hash_training_state(tmp_path / "straight" / "last.pt")
    a = (out / "metrics.jsonl").read_text().splitlines()
    b = (tmp_path / "straight" / "metrics.jsonl").read_text().splitlines()
    key = lambda line: {k: v for k, v in json.loads(line).items() if k not in ("seconds", "images_per_second")}
    assert [key(l) for l in a] == [key(l) for l in b]


@pytest.mark.slow
def test_torchrun_two_processes(tiny, tmp_path):
    out = tmp_path / "ddp"
    res = subprocess.run([str(VENV_BIN / "torchrun"), "--standalone", "--nproc_per_node=2", "-m", "pvtv2", "segment",
                          "train", *cli_args({**FAST, "data": str(tiny), "batch_size": 4, "iters": 4,
                                              "eval_interval": 2, "output": str(out)})],
                         env=ENV, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert "2 process(es)" in res.stdout
    lines = [json.loads(l) for l in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["iter"] for r in lines] == [2, 4]  # rank 0 alone wrote
    assert json.loads((out / "config.json").read_text())["world_size"] == 2
    model, info = load_segmenter(out / "best.safetensors")
    assert info["class_names"] == ["background", "circle", "square"]


# -- errors ----------------------------------------------------------------------------
def _write_pair(root: Path, split: str, stem: str, image: np.ndarray, mask: np.ndarray) -> None:
    for kind, data in (("images", image), ("annotations", mask)):
        (root / kind / split).mkdir(parents=True, exist_ok=True)
        Image.fromarray(data).save(root / kind / split / f"{stem}.png")


def test_bad_pairs_are_skipped_with_a_count(tiny, tmp_path):
    root = tmp_path / "d"
    rgb = np.zeros((40, 40, 3), dtype=np.uint8)
    _write_pair(root, "training", "good", rgb, np.ones((40, 40), dtype=np.uint8))
    _write_pair(root, "training", "small_mask", rgb, np.ones((30, 40), dtype=np.uint8))
    _write_pair(root, "training", "out_of_range", rgb, np.full((40, 40), 7, dtype=np.uint8))
    (root / "images" / "training" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    Image.fromarray(np.zeros((40, 40), dtype=np.uint8)).save(root / "annotations" / "training" / "broken.png")
    (root / "images" / "training" / "lonely.png").write_bytes((root / "images" / "training" / "good.png").read_bytes())
    pairs, problems = ade_pairs(root, "train")
    assert len(pairs) == 4 and len(problems) == 1 and "lonely.png: no mask" in problems[0]
    ds = SegmentationDataset(pairs, TrainTransform((40, 40), 32), 3)
    errors = {p[0].stem: ds[i][2] for i, p in enumerate(pairs)}
    assert errors["good"] is None
    assert "mask is 40x30 but the image is 40x40" in errors["small_mask"]
    assert "[7] are out of range" in errors["out_of_range"] and "0..2 or 255" in errors["out_of_range"]
    assert errors["broken"] and "broken.png" in errors["broken"]


def test_reduce_zero_label(tmp_path):
    root = tmp_path / "d"
    mask = np.array([[0, 1, 2, 3]] * 32, dtype=np.uint8)
    _write_pair(root, "training", "a", np.zeros((32, 4, 3), dtype=np.uint8), mask)
    pairs, _ = ade_pairs(root, "train")
    image, label = SegmentationDataset(pairs, None, 3, reduce_zero_label=True).load(0)
    assert label[0].tolist() == [255, 0, 1, 2]


def test_training_errors(tiny, tmp_path):
    base = {**FAST, "output": str(tmp_path / "o"), "iters": 2}
    with pytest.raises(DataError, match="does not exist"):
        train(SegTrainConfig(data=str(tmp_path / "nope"), **base))
    (tmp_path / "empty" / "images" / "training").mkdir(parents=True)
    (tmp_path / "empty" / "annotations" / "training").mkdir(parents=True)
    (tmp_path / "empty" / "classes.json").write_text('["a", "b"]')
    with pytest.raises(DataError, match="no image/mask pairs"):
        train(SegTrainConfig(data=str(tmp_path / "empty"), **base))
    nocls = tmp_path / "nocls"
    for split in ("training", "validation"):
        _write_pair(nocls, split, "a", np.zeros((40, 40, 3), dtype=np.uint8), np.zeros((40, 40), dtype=np.uint8))
    with pytest.raises(DataError, match="--num-classes"):
        train(SegTrainConfig(data=str(nocls), **base))
    with pytest.raises(DataError, match="--num-classes 5 but .* names 3 classes"):
        train(SegTrainConfig(data=str(tiny), num_classes=5, **base))
    with pytest.raises(ValueError, match="unknown model"):
        train(SegTrainConfig(data=str(tiny), **{**base, "model": "pvt_v3"}))
    with pytest.raises(DataError, match="no full batch"):
        train(SegTrainConfig(data=str(tiny), **{**base, "batch_size": 64}))


def test_training_on_unusable_masks_is_an_error(tiny, tmp_path):
    import shutil

    base = {**FAST, "output": str(tmp_path / "o"), "iters": 2, "eval_interval": 2, "batch_size": 4}
    data = tmp_path / "d"
    shutil.copytree(tiny, data)
    masks = sorted((data / "annotations" / "training").iterdir())
    for m in masks:  # every mask the wrong size: every pair is skipped
        Image.fromarray(np.zeros((10, 10), dtype=np.uint8)).save(m)
    with pytest.warns(UserWarning, match="unusable image/mask pair"):
        with pytest.raises(DataError, match=r"iterations 1-2: training: no usable labelled pixel \(\d+ file\(s\) "
                                            r"skipped; first: .*mask is 10x10 but the image is 48x48"):
            train(SegTrainConfig(data=str(data), **base))
    for m in masks:  # every pixel "ignore": nothing to learn from (and no 0/0 loss)
        Image.fromarray(np.full((48, 48), 255, dtype=np.uint8)).save(m)
    with pytest.raises(DataError, match=r"iterations 1-2: training: no usable labelled pixel \(0 file"):
        train(SegTrainConfig(data=str(data), **base))
    assert not (tmp_path / "o" / "best.safetensors").exists()


@pytest.mark.slow
def test_nan_loss_and_incompatible_resume(tiny, tmp_path):
    out = tmp_path / "o"
    base = {**FAST, "data": str(tiny), "output": str(out), "batch_size": 4, "eval_interval": 2}
    train(SegTrainConfig(iters=2, **base))
    before = hash_training_state(out / "last.pt")
    with pytest.raises(TrainingStateError, match="planned for 2 iterations"):
        train(SegTrainConfig(iters=4, resume="auto", **base))
    with pytest.raises(ConfigError, match="already holds a run"):  # a fresh run may not replace it
        train(SegTrainConfig(iters=4, **{**base, "lr": 1e30, "warmup_iters": 0}))
    # A run planned for 4 iterations, stopped after 2: resumed with a learning rate that diverges.
    state = torch.load(out / "last.pt", weights_only=True)
    save_training_state(out / "last.pt", {**state, "iters": 4})
    before = hash_training_state(out / "last.pt")
    with pytest.raises(TrainingError, match=r"loss is (nan|inf) at iteration 3.*last good checkpoint is .*last.pt "
                                            r"\(iteration 2\).*--clip-grad 1.0"):
        train(SegTrainConfig(iters=4, resume="auto", **{**base, "lr": 1e30, "warmup_iters": 0}))
    assert hash_training_state(out / "last.pt") == before  # the bad run did not reach a save


def test_loading_a_classifier_as_segmenter_fails_clearly(tmp_path):
    clf = pvtv2.create_model("pvt_v2_b0", num_classes=3)
    pvtv2.save_pretrained(clf, tmp_path / "clf")
    with pytest.raises(CheckpointError, match="not a pvtv2 segmentation checkpoint"):
        load_segmenter(tmp_path / "clf" / "model.safetensors")
    (tmp_path / "cut.safetensors").write_bytes((tmp_path / "clf" / "model.safetensors").read_bytes()[:500])
    with pytest.raises(CheckpointError, match="truncated"):
        load_segmenter(tmp_path / "cut.safetensors")
    with pytest.raises(CheckpointError, match="no such segmentation checkpoint"):
        load_segmenter(tmp_path / "none.safetensors")


def test_synth_cli_writes_a_segmentation_set(tmp_path, cli):
    res = cli("data", "synth", "--task", "segment", "--out", str(tmp_path / "s"), "--classes", "3",
              "--train-images", "4", "--val-images", "2")
    assert res.returncode == 0, res.stderr
    meta = json.loads((tmp_path / "s" / "synth.json").read_text())
    assert meta["classes"] == ["background", "circle", "square"]
    masks = [np.asarray(Image.open(p)) for p in sorted((tmp_path / "s" / "annotations" / "training").iterdir())]
    assert len(masks) == 4 and all(m.shape == (64, 64) and m.max() <= 2 for m in masks)
    assert any((m > 0).any() for m in masks) and all((m == 0).any() for m in masks)
    with pytest.raises(ValueError, match="between 2 and 9"):
        make_segmentation_dataset(tmp_path / "x", classes=12)


def test_generic_pair_folders(shapes, tmp_path):
    """``{train,val}/images`` + ``{train,val}/masks`` trains like the ADE20K layout; a single
    ``images/`` + ``masks/`` folder evaluates."""
    import shutil

    root = tmp_path / "pairs"
    for split, ade in (("train", "training"), ("val", "validation")):
        shutil.copytree(shapes / "images" / ade, root / split / "images")
        shutil.copytree(shapes / "annotations" / ade, root / split / "masks")
    shutil.copy(shapes / "synth.json", root / "synth.json")
    assert ade_pairs(root, "train")[0] and len(ade_pairs(root, "val")[0]) == 24
    out = tmp_path / "run"
    result = train(SegTrainConfig(data=str(root), output=str(out), iters=2, eval_interval=2, **FAST))
    flat = tmp_path / "flat"
    shutil.copytree(root / "val" / "images", flat / "images")
    shutil.copytree(root / "val" / "masks", flat / "masks")
    scores = evaluate_checkpoint(flat, out / "best.safetensors", device="cpu", progress_bar=False)
    assert scores["images"] == 24 and scores["mIoU"] == pytest.approx(result["best_miou"], abs=1e-3)
    with pytest.raises(DataError, match="no segmentation data"):
        ade_pairs(tmp_path / "run", "train")
