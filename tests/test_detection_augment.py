"""The 3x recipe: the multi-scale crop augmentation (boxes, masks and pixels stay together), the
schedule's values and their overrides, and the weight-decay exclusions."""
import json
import random

import pytest
import torch
from torch import nn
from torchvision.models.detection.transform import GeneralizedRCNNTransform

from pvtv2.cli import _config_from_args, build_parser
from pvtv2.data import make_detection_dataset
from pvtv2.detection import CocoDetection, DetTrainConfig, create_detector, train
from pvtv2.detection.augment import MultiScaleCrop, crop, keep_ratio_size, random_crop
from pvtv2.detection.kinds import MULTISCALE_SIZES
from pvtv2.detection.recipe import NO_DECAY_KEYS
from pvtv2.detection.train import param_groups
from pvtv2.engine import resolve_amp
from pvtv2.errors import ConfigError

# White rectangles on black, [x0, y0, x1, y1], at least 10 px apart, per image size; the first sits
# in a corner so that many crops leave it out.
RECTS = {(200, 300): [(4, 4, 24, 18), (40, 30, 120, 90), (150, 20, 290, 60), (60, 120, 200, 190)],
         (60, 400): [(4, 4, 24, 18), (40, 10, 120, 50), (150, 20, 290, 55), (300, 5, 390, 40)]}


def drawn(h: int, w: int):
    rects = RECTS[h, w]
    image = torch.zeros(3, h, w)
    masks = torch.zeros(len(rects), h, w, dtype=torch.uint8)
    for i, (x0, y0, x1, y1) in enumerate(rects):
        image[:, y0:y1, x0:x1] = 1
        masks[i, y0:y1, x0:x1] = 1
    boxes = torch.tensor(rects, dtype=torch.float32)
    return image, {"boxes": boxes, "labels": torch.arange(1, len(rects) + 1), "masks": masks}


def pixel_box(on: torch.Tensor) -> list[int]:
    """``[x0, y0, x1, y1]`` of the nonzero pixels of a ``(H, W)`` map (x1, y1 exclusive)."""
    xs, ys = torch.nonzero(on.any(0)), torch.nonzero(on.any(1))
    return [int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1]


def check_together(image: torch.Tensor, target: dict, tol: float) -> None:
    """Each box is its mask's bounding box and its white pixels' (within ``tol`` px); every white
    pixel belongs to a kept instance; every kept instance has pixels."""
    white = image[0] > 0.5
    unclaimed = white.clone()
    assert len(target["labels"]) == len(target["boxes"]) == len(target["masks"])
    for box, mask in zip(target["boxes"].tolist(), target["masks"]):
        x0, y0, x1, y1 = (int(round(v)) for v in box)
        top, left = max(y0 - 3, 0), max(x0 - 3, 0)
        near = (slice(top, y1 + 3), slice(left, x1 + 3))  # the box and a margin: no other instance
        assert mask[near].any() and mask[near].sum() == mask.sum(), "a kept instance's mask is empty or elsewhere"
        for on in (mask[near], white[near]):
            assert [a + b for a, b in zip(pixel_box(on), (left, top, left, top))] == pytest.approx(box, abs=tol)
        unclaimed[near] = False
    assert not unclaimed.any(), "white pixels of an instance that was dropped"


@pytest.mark.parametrize("h,w", [(200, 300), (60, 400)])  # the second's long side hits the 1333 cap
def test_multiscale_crop_keeps_boxes_masks_and_pixels_together(h, w):
    # The whole 3x augmentation: the data side, then the detector's multi-scale resize (480..800).
    resize = GeneralizedRCNNTransform(MULTISCALE_SIZES, 1333, [0.0] * 3, [1.0] * 3).train()
    augment = MultiScaleCrop()
    counts, shapes = [], set()
    for seed in range(10):
        random.seed(seed)
        torch.manual_seed(seed)
        image, target = augment(*drawn(h, w))
        check_together(image, target, tol=1)
        before = image.shape[-1]
        image, target = resize.resize(image, target)
        short, long = sorted(image.shape[-2:])
        assert long <= 1333 and (min(abs(short - s) for s in MULTISCALE_SIZES) <= 1 or long >= 1332), image.shape
        # A nearest-neighbour mask edge moves by up to 1 px per resize: the first's error is scaled by the second.
        check_together(image, target, tol=1 + image.shape[-1] / before)
        counts.append(len(target["boxes"]))
        shapes.add(tuple(image.shape[-2:]))
    assert min(counts) < len(RECTS[h, w]) and max(counts) == len(RECTS[h, w])  # crops dropped some, not always
    assert len(shapes) > 2


def test_crop_clips_boxes_and_drops_emptied_instances():
    image, target = drawn(200, 300)
    out, t = crop(image, target, top=25, left=30, height=100, width=150)
    assert out.shape == (3, 100, 150)
    # The corner rectangle is outside the window: dropped with its label and mask.
    assert t["labels"].tolist() == [2, 3, 4]
    assert t["boxes"].tolist() == [[10, 5, 90, 65], [120, 0, 150, 35], [30, 95, 150, 100]]
    assert [pixel_box(m) for m in t["masks"]] == t["boxes"].int().tolist()
    assert torch.equal(out, image[:, 25:125, 30:180])


def test_random_crop_draws_from_the_absolute_range():
    heights, widths = set(), set()
    empty = {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)}
    for seed in range(300):
        random.seed(seed)
        out, _ = random_crop(torch.zeros(1, 500, 450), empty, (384, 600))
        heights.add(out.shape[1])
        widths.add(out.shape[2])
    # h in [384, min(500, 600)], w in [384, min(450, 600)], both ends included (np.random.randint(lo, hi + 1))
    assert min(heights) == 384 and max(heights) == 500 and min(widths) == 384 and max(widths) == 450
    random.seed(0)
    assert random_crop(torch.zeros(1, 300, 200), empty, (384, 600))[0].shape == (1, 300, 200)  # smaller: whole


def test_keep_ratio_size_is_mmcvs_rescale():
    assert keep_ratio_size(200, 300, 480, 1333) == (480, 720)
    assert keep_ratio_size(60, 400, 800, 1333) == (200, 1333)  # long side capped
    assert keep_ratio_size(427, 640, 500, 1333) == (500, 749)  # 640 * 500 / 427 = 749.4


def test_dataset_applies_the_augmentation_to_coco_masks(tmp_path):
    root = make_detection_dataset(tmp_path, classes=3, train_images=6, val_images=1, size=64, seed=0, progress=False)
    ds = CocoDetection(root / "train2017", root / "annotations" / "instances_train2017.json", train=True, masks=True,
                       augment=MultiScaleCrop(short_sides=(100, 120), crop_range=(48, 90)))
    sizes = set()
    for seed in range(12):
        random.seed(seed)
        image, target, err = ds[seed % len(ds)]
        assert err is None and target["masks"].shape[-2:] == image.shape[-2:]
        sizes.add(tuple(image.shape[-2:]))
        # Shapes other than rectangles: the clipped box holds the cropped mask (not always tightly).
        for (x0, y0, x1, y1), mask in zip(target["boxes"].tolist(), target["masks"]):
            if mask.any():
                mx0, my0, mx1, my1 = pixel_box(mask)
                assert x0 - 1 <= mx0 and y0 - 1 <= my0 and mx1 <= x1 + 1 and my1 <= y1 + 1
    assert (64, 64) in sizes and len(sizes) > 2  # policy (a) leaves the image to the detector; (b) crops


def test_schedule_3x_is_the_official_recipe():
    cfg = DetTrainConfig(kind="maskrcnn", schedule="3x").resolved()
    assert (cfg.schedule, cfg.epochs, cfg.steps, cfg.lr, cfg.weight_decay) == ("3x", 36, (27, 33), 1e-4, 0.05)
    assert cfg.no_decay_keys == ("absolute_pos_embed", "relative_position_bias_table", "norm")
    assert cfg.augmentation == "multiscale_crop" and cfg.min_size == tuple(range(480, 801, 32))
    assert (cfg.crop_resize, cfg.crop_range, cfg.max_size, cfg.batch_size, cfg.clip_grad) == \
        ((400, 500, 600), (384, 600), 1333, 16, 0.0)
    assert cfg.amp_on("cuda") == "fp16" and resolve_amp(cfg.amp_on("cpu"), torch.device("cpu")) == "none"
    one = DetTrainConfig(kind="maskrcnn").resolved()  # auto: Mask R-CNN's official 1x
    assert (one.schedule, one.epochs, one.steps, one.lr, one.weight_decay, one.no_decay_keys) == \
        ("1x", 12, (8, 11), 2e-4, 1e-4, ())
    assert (one.augmentation, one.min_size, one.amp_on("cuda")) == ("resize", (800,), "auto")


def test_auto_schedule_follows_each_kinds_official_config():
    atss = DetTrainConfig(kind="atss", model="pvt_v2_b2").resolved()
    assert (atss.schedule, atss.epochs, atss.steps, atss.weight_decay, atss.augmentation) == \
        ("3x", 36, (27, 33), 0.05, "multiscale_crop")
    assert atss.no_decay_keys == NO_DECAY_KEYS and atss.amp_on("cuda") == "fp16"
    sparse = DetTrainConfig(kind="sparse_rcnn", model="pvt_v2_b2").resolved()
    assert (sparse.schedule, sparse.weight_decay, sparse.no_decay_keys, sparse.clip_grad, sparse.batch_size) == \
        ("3x", 1e-4, (), 1.0, 8)
    assert sparse.amp_on("cuda") == "none" and sparse.lr == pytest.approx(2.5e-5 / 1.4)  # its config trains in fp32
    assert DetTrainConfig(kind="fcos").resolved().schedule == "1x"
    atss_1x = DetTrainConfig(kind="atss", schedule="1x").resolved()  # the schedule's length and sizes, the kind's optimiser
    assert (atss_1x.epochs, atss_1x.steps, atss_1x.augmentation, atss_1x.min_size, atss_1x.weight_decay) == \
        (12, (8, 11), "resize", (800,), 0.05)


def test_explicit_options_win_over_the_schedule():
    cfg = DetTrainConfig(kind="maskrcnn", schedule="3x", epochs=5, steps=(3,), lr=3e-4, weight_decay=0.01, no_decay_keys=(),
                         augmentation="resize", min_size=640, batch_size=4, clip_grad=2.0, amp="bf16").resolved()
    assert (cfg.epochs, cfg.steps, cfg.lr, cfg.weight_decay, cfg.no_decay_keys) == (5, (3,), 3e-4, 0.01, ())
    assert (cfg.augmentation, cfg.min_size, cfg.batch_size, cfg.clip_grad, cfg.amp_on("cuda")) == \
        ("resize", (640,), 4, 2.0, "bf16")
    args = build_parser().parse_args(["detect", "train", "--data", "d", "--schedule", "3x", "--epochs", "6",
                                      "--no-decay-keys", "--min-size", "512", "640", "--crop-range", "100", "200"])
    cfg = _config_from_args(DetTrainConfig, args).resolved()
    assert (cfg.epochs, cfg.steps, cfg.weight_decay, cfg.no_decay_keys) == (6, (27, 33), 0.05, ())
    assert (cfg.min_size, cfg.crop_range, cfg.augmentation) == ((512, 640), (100, 200), "multiscale_crop")
    with pytest.raises(ConfigError, match="--crop-range 600 384"):
        DetTrainConfig(crop_range=(600, 384)).resolved().validate(["pvt_v2_b2"])


def test_norms_get_no_weight_decay():
    model = create_detector("maskrcnn", "pvt_v2_b0", 2, min_size=64, max_size=64)
    optimizer = torch.optim.AdamW(param_groups(model, 0.05, NO_DECAY_KEYS), lr=1e-4)
    decay = {id(p) for g in optimizer.param_groups if g["weight_decay"] == 0.05 for p in g["params"]}
    free = {id(p) for g in optimizer.param_groups if g["weight_decay"] == 0.0 for p in g["params"]}
    norms = {id(p) for m in model.modules() if isinstance(m, nn.LayerNorm) for p in m.parameters()}
    convs = {id(m.weight) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))}
    assert len(optimizer.param_groups) == 2 and len(norms) > 50
    assert norms == free and convs <= decay and len(decay) + len(free) == len(list(model.parameters()))
    assert [g["weight_decay"] for g in param_groups(model, 1e-4)] == [1e-4]  # 1x: one group, as before


@pytest.mark.slow
def test_3x_mask_rcnn_trains_on_cropped_images(tmp_path):
    data = make_detection_dataset(tmp_path / "data", classes=2, train_images=4, val_images=2, size=64, seed=0, progress=False)
    out = tmp_path / "run"
    train(DetTrainConfig(data=str(data), output=str(out), kind="maskrcnn", model="pvt_v2_b0", schedule="3x", epochs=1,
                         batch_size=4, min_size=(64, 80, 96), max_size=128, crop_resize=(100, 120), crop_range=(48, 90),
                         warmup_iters=2, drop_path=0.0, workers=0, device="cpu", progress=False))
    config = json.loads((out / "config.json").read_text())
    assert (config["schedule"], config["augmentation"], config["weight_decay"], config["steps"]) == \
        ("3x", "multiscale_crop", 0.05, [27, 33])
    record = json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])
    assert record["train_loss"] == pytest.approx(record["train_loss"]) and "segm_AP" in record  # finite
    state = torch.load(out / "last.pt", weights_only=False)
    assert [g["weight_decay"] for g in state["optimizer"]["param_groups"]] == [0.05, 0.0]
