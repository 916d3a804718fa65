"""The Semantic FPN recipe follows whai362/PVTv2-Seg (and whai362/PVT for PVTv1, which agrees):
the training defaults, and AlignResize, the test transform that rounds sizes up to multiples of 32."""
import numpy as np
import pytest
import torch
from PIL import Image

from pvtv2.engine import DistEnv
from pvtv2.segmentation import SegTrainConfig, create_segmenter
from pvtv2.segmentation.data import EvalTransform, SegmentationDataset, align_size, find_pairs, rescale_size
from pvtv2.segmentation.evaluate import evaluate

# fpn_pvtv2_b*_ade20k_40k.py and _base_/datasets/ade20k.py, pvtv2.py, _base_/models/fpn_r50.py.
OFFICIAL = dict(batch_size=32, lr=2e-4, weight_decay=1e-4, power=0.9, min_lr=0.0, warmup_iters=0, iters=40000,
                eval_interval=4000, drop_path=0.1, scale=(2048, 512), ratio_range=(0.5, 2.0), crop=512,
                cat_max_ratio=0.75, clip_grad=0.0, eval_mode="whole")


@pytest.mark.parametrize("model", ["pvt_v2_b2", "pvt_v2_b0", "pvt_v2_b2_li", "pvt_small"])
def test_recipe_defaults_are_the_official_configs(model):
    cfg = SegTrainConfig(model=model).resolved()
    assert {k: getattr(cfg, k) for k in OFFICIAL} == OFFICIAL


# Hand-computed from align_resize.py: mmcv.imrescale(img, (2048, 512)) scales by
# f = min(2048 / long side, 512 / short side) and rounds each side as int(x * f + 0.5);
# _align then takes int(np.ceil(side / 32)) * 32.
@pytest.mark.parametrize("hw, rescaled, aligned", [
    ((512, 683), (512, 683), (512, 704)),     # f = min(2048/683, 512/512) = 1
    ((375, 500), (512, 683), (512, 704)),     # f = 512/375: 500 * 1.36533 + 0.5 = 683.17 -> 683
    ((1000, 300), (1707, 512), (1728, 512)),  # f = 512/300: 1000 * 1.70667 + 0.5 = 1707.17 -> 1707
    ((100, 1000), (205, 2048), (224, 2048)),  # f = 2048/1000 (long side binds): 100 * 2.048 + 0.5 -> 205
    ((2000, 2000), (512, 512), (512, 512)),   # already aligned: unchanged
])
def test_align_size_is_the_official_rule(hw, rescaled, aligned):
    assert rescale_size(*hw, (2048, 512)) == rescaled
    assert align_size(*hw, (2048, 512)) == aligned


def test_eval_transform_resizes_to_aligned_size_and_keeps_the_label():
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 255, (45, 70, 3), dtype=np.uint8))
    mask = rng.integers(0, 3, (45, 70)).astype(np.uint8)
    x, y = EvalTransform((96, 64))(image, mask)
    # f = min(96/70, 64/45) = 1.3714: 45 -> 62, 70 -> 96; aligned 64 x 96
    assert x.shape == (3, 64, 96) and y.shape == (45, 70)
    assert torch.equal(y, torch.from_numpy(mask.astype(np.int64)))


def _pairs(root, sizes, rng):
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for i, (h, w) in enumerate(sizes):
        Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(root / "images" / f"{i}.png")
        mask = rng.integers(0, 3, (h, w)).astype(np.uint8)
        mask[0, :] = 255  # a row of "ignore"
        Image.fromarray(mask).save(root / "masks" / f"{i}.png")
    return find_pairs(root / "images", root / "masks")[0]


def test_evaluation_feeds_aligned_images_and_scores_full_labels(tmp_path):
    sizes = [(45, 70), (37, 37), (80, 33)]
    pairs = _pairs(tmp_path, sizes, np.random.default_rng(1))
    scale = (96, 64)
    torch.manual_seed(0)
    model = create_segmenter("pvt_v2_b0", num_classes=3)
    seen = []
    model.register_forward_pre_hook(lambda _, args: seen.append(tuple(args[0].shape[-2:])))
    dataset = SegmentationDataset(pairs, EvalTransform(scale), 3)
    res = evaluate(model, dataset, 3, env=DistEnv(), show_progress=False)
    assert seen == [align_size(h, w, scale) for h, w in sizes]
    assert all(h % 32 == 0 and w % 32 == 0 for h, w in seen)
    # Every labelled pixel of every full-size label is counted once; the ignore row is not.
    assert res["confusion"].sum().item() == sum((h - 1) * w for h, w in sizes) and res["skipped_count"] == 0
