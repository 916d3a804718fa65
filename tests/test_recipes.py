"""Recipe presets (imagenet, finetune, small), the advice warning, layer-wise lr decay and
ImageNet class names for checkpoints that carry none."""
import json
import shutil
import warnings

import numpy as np
import pytest
import timm
import torch
from PIL import Image
from timm.models import group_parameters
from timm.optim._param_groups import param_groups_layer_decay

import pvtv2
from pvtv2.checkpoint.formats import pvtv2_to_timm
from pvtv2.classification import TrainConfig, evaluate_checkpoint, predict, train
from pvtv2.classification.labels import class_names, imagenet_names, imagenet_synsets
from pvtv2.classification.recipe import RECIPES, advice
from pvtv2.cli import _config_from_args, build_parser, main
from pvtv2.data import make_classification_dataset
from pvtv2.data.synth import SHAPE_CLASSES, draw_object
from pvtv2.demo import DEMO_RECIPE
from pvtv2.errors import ConfigError
from pvtv2.export import classifier_metadata

# What the README's preset table documents (None: the variant's own, here b2's and b4's).
DOCUMENTED = {
    "imagenet": dict(pretrained=None, img_size=224, epochs=300, batch_size=128, lr=5e-4, min_lr=1e-5, warmup_epochs=5,
                     sched_per_step=False, layer_decay=1.0, aa="rand-m9-mstd0.5-inc1", scale=(0.08, 1.0), hflip=True,
                     mixup=0.8, cutmix=1.0, reprob=0.25, repeated_aug=True, eval_crop_pct=0.875),
    "finetune": dict(pretrained="true", img_size=224, epochs=30, batch_size=128, lr=2e-4, min_lr=1e-6, warmup_epochs=2,
                     sched_per_step=True, layer_decay=0.7, aa="rand-m9-mstd0.5-inc1", scale=(0.08, 1.0), hflip=True,
                     mixup=0.0, cutmix=0.0, reprob=0.0, repeated_aug=False, eval_crop_pct=0.875),
    "small": dict(pretrained=None, img_size=64, epochs=30, batch_size=32, lr=1.6e-2, min_lr=1e-5, warmup_epochs=2,
                  sched_per_step=True, layer_decay=1.0, aa="none", scale=(0.6, 1.0), hflip=False, mixup=0.0, cutmix=0.0,
                  reprob=0.0, repeated_aug=False, eval_crop_pct=1.0),
}
# (drop path, clip grad) for b2 and b4 under each preset.
VARIANT_DEPENDENT = {"imagenet": {"pvt_v2_b2": (0.1, 0.0), "pvt_v2_b4": (0.3, 1.0)},
                     "finetune": {"pvt_v2_b2": (0.0, 0.0), "pvt_v2_b4": (0.0, 1.0)},
                     "small": {"pvt_v2_b2": (0.0, 1.0), "pvt_v2_b4": (0.0, 1.0)}}


def _cli_config(*flags):
    args = build_parser().parse_args(["train", "--data", "d", *flags])
    return _config_from_args(TrainConfig, args).resolved()


@pytest.mark.parametrize("recipe", list(DOCUMENTED))
@pytest.mark.parametrize("model", ["pvt_v2_b2", "pvt_v2_b4"])
def test_presets_resolve_to_documented_values(recipe, model):
    flags = ["--model", model] + ([] if recipe == "imagenet" else ["--recipe", recipe])  # imagenet: the default
    cfg = _cli_config(*flags)
    assert cfg.recipe == recipe
    assert {k: getattr(cfg, k) for k in DOCUMENTED[recipe]} == DOCUMENTED[recipe]
    assert (cfg.drop_path, cfg.clip_grad) == VARIANT_DEPENDENT[recipe][model]
    assert set(DOCUMENTED[recipe]) <= set(RECIPES[recipe])
    # The Python API resolves the same way.
    assert TrainConfig(data="d", model=model, recipe=recipe).resolved() == cfg


def test_explicit_flags_override_the_preset():
    cfg = _cli_config("--recipe", "small", "--lr", "0.1", "--hflip", "--epochs", "3", "--scale", "0.2", "1",
                      "--drop-path", "0.2")
    assert (cfg.lr, cfg.hflip, cfg.epochs, cfg.scale, cfg.drop_path) == (0.1, True, 3, (0.2, 1.0), 0.2)
    assert (cfg.batch_size, cfg.aa, cfg.eval_crop_pct, cfg.clip_grad) == (32, "none", 1.0, 1.0)  # the rest: small's
    cfg = _cli_config("--no-repeated-aug", "--no-hflip", "--layer-decay", "0.9")
    assert (cfg.recipe, cfg.repeated_aug, cfg.hflip, cfg.layer_decay, cfg.mixup) == ("imagenet", False, False, 0.9, 0.8)
    # finetune defaults to the published weights; an explicit 'none' starts from random ones
    assert _cli_config("--recipe", "finetune").pretrained_weights is True
    assert _cli_config("--recipe", "finetune", "--pretrained", "none").pretrained_weights is None
    assert _cli_config("--recipe", "finetune", "--pretrained", "w.pth").pretrained_weights == "w.pth"
    with pytest.raises(ConfigError, match="--recipe cifar: unknown recipe; choose one of imagenet, finetune, small"):
        TrainConfig(data="d", recipe="cifar").resolved()


def test_demo_trains_on_the_small_preset_as_before():
    """The demo's run before the presets existed, flag for flag: only the preset's name is new."""
    before = dict(model="pvt_v2_b0", img_size=48, epochs=30, batch_size=32, lr=1.6e-2, sched_per_step=True,
                  warmup_epochs=2, min_lr=1e-5, clip_grad=1.0, aa="none", color_jitter=0.0, mixup=0.0, cutmix=0.0,
                  reprob=0.0, smoothing=0.1, drop_path=0.0, scale=(0.6, 1.0), repeated_aug=False, eval_crop_pct=1.0,
                  workers=2, device="cpu", seed=0)
    assert DEMO_RECIPE["recipe"] == "small"
    old = TrainConfig(data="d", **before).resolved().to_dict()
    new = TrainConfig(data="d", **DEMO_RECIPE).resolved().to_dict()
    assert {k for k in old if old[k] != new[k]} == {"recipe"}


def test_advice_names_the_presets_under_imagenet_only():
    imagenet = TrainConfig(data="d", batch_size=32).resolved()
    tip = advice(imagenet, images=1400, image_side=32, lr_scaled=5e-4 * 32 / 512)
    assert "\n" not in tip
    assert "1,400 training images" in tip and "about 32 px for a 224 px crop" in tip and "lr of 3.1e-05" in tip
    assert "--recipe finetune" in tip and "--recipe small" in tip and "--img-size 32" in tip and "--lr" in tip
    # each condition alone
    assert "training images" in advice(imagenet, images=9_999, image_side=224, lr_scaled=1e-3)
    assert "px crop" in advice(imagenet, images=50_000, image_side=112, lr_scaled=1e-3)
    assert "linearly scaled lr" in advice(imagenet, images=50_000, image_side=None, lr_scaled=9e-5)
    assert advice(imagenet, images=10_000, image_side=113, lr_scaled=1e-4) is None
    for recipe in ("finetune", "small"):  # chosen on purpose: no advice
        cfg = TrainConfig(data="d", recipe=recipe, pretrained="none").resolved()
        assert advice(cfg, images=100, image_side=16, lr_scaled=1e-6) is None


@pytest.fixture(scope="module")
def few(tmp_path_factory):
    return make_classification_dataset(tmp_path_factory.mktemp("few"), classes=2, train_per_class=2, val_per_class=1,
                                       size=32, seed=2, progress=False)


@pytest.mark.slow
@pytest.mark.parametrize("recipe", ["imagenet", "finetune", "small"])
def test_train_warns_about_a_small_dataset_under_imagenet_only(tmp_path, few, recipe):
    cfg = TrainConfig(data=str(few), output=str(tmp_path / "run"), recipe=recipe, pretrained="none", model="pvt_v2_b0",
                      img_size=64, epochs=1, batch_size=2, workers=0, device="cpu", progress=False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        train(cfg)
    tips = [str(w.message) for w in caught if "may not fit this data" in str(w.message)]
    if recipe == "imagenet":
        assert len(tips) == 1 and "4 training images" in tips[0] and "about 32 px for a 64 px crop" in tips[0]
    else:
        assert tips == []
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert saved["recipe"] == recipe and saved["lr"] == DOCUMENTED[recipe]["lr"]


@pytest.mark.parametrize("name", ["pvt_v2_b0"])
def test_layer_groups_match_timm(name):
    """group_matcher puts every parameter in the group timm's pvt_v2 puts it in (stem, 4 stages,
    head), so layer-wise lr decay scales each parameter's lr as in timm."""
    ours, peer = pvtv2.create_model(name), timm.create_model(name)
    params = dict(ours.named_parameters())
    timm_name = {id(t): k for k, t in pvtv2_to_timm(params).items()}
    as_timm = {n: timm_name[id(p)] for n, p in params.items()}
    mine = group_parameters(ours, ours.group_matcher(), reverse=True)
    theirs = group_parameters(peer, peer.group_matcher(), reverse=True)
    assert set(mine) == set(params) and set(mine.values()) == set(range(6))
    assert {as_timm[n]: g for n, g in mine.items()} == theirs
    assert mine["patch_embed1.proj.weight"] == 0 and mine["patch_embed2.proj.weight"] == 2 and mine["head.weight"] == 5

    def scales(model):  # parameter name -> lr scale under timm's layer-wise decay
        names = {id(p): n for n, p in model.named_parameters()}
        return {names[id(p)]: g["lr_scale"] for g in param_groups_layer_decay(model, layer_decay=0.7) for p in g["params"]}

    theirs = scales(peer)
    assert {as_timm[n]: s for n, s in scales(ours).items()} == pytest.approx(theirs)
    assert min(theirs.values()) == pytest.approx(0.7 ** 5)


def test_layer_groups_of_pvt_v1():
    model = pvtv2.create_model("pvt_tiny")
    groups = group_parameters(model, model.group_matcher(), reverse=True)
    assert (groups["pos_embed1"], groups["pos_embed2"], groups["cls_token"], groups["norm.weight"]) == (0, 2, 4, 5)


@pytest.fixture(scope="module")
def official_b0(tmp_path_factory):
    """A 1000-class b0 with random weights, saved as the release files are: a bare state dict
    with the official keys, no class names."""
    path = tmp_path_factory.mktemp("official") / "pvt_v2_b0.pth"
    torch.save(pvtv2.create_model("pvt_v2_b0").state_dict(), path)
    return path


def test_1000_class_checkpoint_without_names_predicts_imagenet_names(official_b0, few):
    checkpoint = official_b0
    records = list(predict([few / "val"], checkpoint, topk=3, img_size=32, workers=0, show_progress=False))
    assert len(records) == 2
    for record in records:
        assert [t["class"] for t in record["top"]] == [imagenet_names()[t["index"]] for t in record["top"]]
    assert imagenet_names()[0] == "tench, Tinca tinca" and imagenet_synsets()[0] == "n01440764"
    meta = classifier_metadata(pvtv2.create_model(pretrained=checkpoint))  # what the ONNX export writes
    assert json.loads(meta["class_names"]) == list(imagenet_names())


def test_class_names_fall_back_to_imagenet_only_for_1000_classes():
    assert class_names(["a", "b"], 2) == ["a", "b"]
    assert class_names(None, 3) == ["0", "1", "2"]
    assert class_names([f"LABEL_{i}" for i in range(1000)], 1000) == list(imagenet_names())  # transformers' placeholders
    assert class_names(None, 1000)[1] == "goldfish, Carassius auratus"
    names = [f"c{i}" for i in range(1000)]
    assert class_names(names, 1000) == names  # a checkpoint's own names win


def test_eval_reads_imagenet_folders_by_wordnet_id(tmp_path, few, official_b0):
    checkpoint = official_b0
    val = tmp_path / "imagenet" / "val"
    for synset, image in zip(imagenet_synsets()[:2], sorted((few / "val").rglob("*.png"))):
        (val / synset).mkdir(parents=True)
        shutil.copy(image, val / synset)
    scores = evaluate_checkpoint(tmp_path / "imagenet", checkpoint, img_size=32, device="cpu", workers=0)
    assert scores["images"] == 2 and 0 <= scores["top5"] <= 100


# Fine-tuning transfers: a b0 taught the hue of an object (4 hues) is fine-tuned for one epoch on
# another task, the same hues in two groups that no single colour channel separates ({red, green}
# vs {blue, yellow}), with the head new. The source's features make the grouping a linear readout;
# the identical run from random weights has one epoch to learn colour itself.
HUES = {"red": (255, 30, 30), "green": (30, 220, 30), "blue": (40, 40, 255), "yellow": (240, 230, 20)}


def _write_hue_set(out, groups, *, train_per_class, val_per_class, seed, size=32):
    """ImageFolder set: one shape (:data:`SHAPE_CLASSES`, any of the first six) per image on a
    noisy grey background; class ``name`` of ``groups`` paints it in one of its hues."""
    for split, n in (("train", train_per_class), ("val", val_per_class)):
        for c, (name, hues) in enumerate(groups.items()):
            folder = out / split / name
            folder.mkdir(parents=True)
            for i in range(n):
                rng = np.random.default_rng([seed, split == "val", c, i])
                _, mask = draw_object(SHAPE_CLASSES[rng.integers(6)], size, rng)
                image = np.clip(rng.uniform(60, 200) + rng.normal(0, 20, (size, size, 3)), 0, 255)
                hue = np.array(HUES[hues[rng.integers(len(hues))]]) * rng.uniform(0.6, 1.0)
                image[mask] = np.clip(hue + rng.normal(0, 15, (int(mask.sum()), 3)), 0, 255)
                Image.fromarray(image.astype(np.uint8)).save(folder / f"{i:04d}.png")
    return out


def _top1(run):
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()][-1]["val_top1"]


def transfer_gain(tmp_path, seed):
    """(source top-1, fine-tuned top-1, from-scratch top-1) after one epoch on the grouped task."""
    common = ["--model", "pvt_v2_b0", "--img-size", "32", "--workers", "0", "--device", "cpu", "--no-progress",
              "--seed", str(seed)]
    source = _write_hue_set(tmp_path / "hues", {h: [h] for h in HUES}, train_per_class=100, val_per_class=25,
                            seed=2 * seed)
    assert main(["train", "--recipe", "small", "--data", str(source), "--output", str(tmp_path / "source"),
                 "--epochs", "4", *common]) == 0
    target = _write_hue_set(tmp_path / "groups", {"blue_or_yellow": ["blue", "yellow"],
                                                  "red_or_green": ["red", "green"]},
                            train_per_class=300, val_per_class=50, seed=2 * seed + 1)
    # The finetune preset, with what one short epoch needs: 75 steps of 8 at a usable lr (2e-4 x 8 / 512
    # would be 3e-6), no warm-up, crops that keep the object, and no RandAugment: its Invert, Solarize and
    # Posterize repaint the hue that defines the class.
    finetune = ["--recipe", "finetune", "--data", str(target), "--epochs", "1", "--batch-size", "8", "--lr", "2e-2",
                "--warmup-epochs", "0", "--scale", "0.5", "1", "--aa", "none", *common]
    with pytest.warns(UserWarning, match="head not loaded: checkpoint has 4 classes, model has 2"):
        assert main(["train", *finetune, "--pretrained", str(tmp_path / "source" / "best.safetensors"),
                     "--output", str(tmp_path / "finetuned")]) == 0
    assert main(["train", *finetune, "--pretrained", "none", "--output", str(tmp_path / "scratch")]) == 0
    return _top1(tmp_path / "source"), _top1(tmp_path / "finetuned"), _top1(tmp_path / "scratch")


@pytest.mark.slow
def test_finetune_from_a_checkpoint_beats_the_same_run_from_scratch(tmp_path):
    # Over seeds 0-7 (sets, source and runs): source 99-100%, fine-tuned 98-100%, from scratch 65-78%.
    source, finetuned, scratch = transfer_gain(tmp_path, seed=0)
    assert source >= 90
    assert finetuned >= 95 and finetuned >= scratch + 15, (finetuned, scratch)
    saved = json.loads((tmp_path / "finetuned" / "config.json").read_text())  # the preset, bar the flags given
    assert (saved["recipe"], saved["layer_decay"], saved["drop_path"], saved["hflip"], saved["mixup"]) == \
        ("finetune", 0.7, 0.0, True, 0.0)
    assert saved["lr_scaled"] == pytest.approx(2e-2 * 8 / 512)
