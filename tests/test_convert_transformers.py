"""``pvtv2 convert --to transformers``: one folder that transformers loads both as the classifier
(``AutoModelForImageClassification`` -> ``PvtV2ForImageClassification``) and as a backbone
(``AutoBackbone`` -> ``PvtV2Backbone``), with the same numbers as our model."""
import json

import pytest
import torch

pytest.importorskip("transformers")
import transformers  # noqa: E402
from huggingface_hub.utils import HFValidationError  # noqa: E402
from transformers import AutoBackbone, AutoConfig, AutoModelForImageClassification, PvtV2Backbone  # noqa: E402

import pvtv2  # noqa: E402
from pvtv2.cli import main  # noqa: E402

STAGES = ["stage1", "stage2", "stage3", "stage4"]


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    """A randomly initialised b0 (3 classes) and its transformers folder, written by the CLI."""
    root = tmp_path_factory.mktemp("hf")
    torch.manual_seed(0)
    model = pvtv2.create_model("pvt_v2_b0", num_classes=3).eval()
    model.save_pretrained(root / "ours")
    assert main(["convert", str(root / "ours"), str(root / "hf"), "--to", "transformers"]) in (0, None)
    return model, root / "hf"


def _maps(backbone, x):
    with torch.no_grad():
        return list(backbone(x).feature_maps)


def test_config_has_backbone_fields(converted):
    _, folder = converted
    cfg = json.loads((folder / "config.json").read_text())
    assert cfg["stage_names"] == STAGES and cfg["out_features"] == STAGES and cfg["out_indices"] == [0, 1, 2, 3]
    hf_cfg = AutoConfig.from_pretrained(folder)
    assert hf_cfg.out_features == STAGES and hf_cfg.out_indices in ([0, 1, 2, 3], (0, 1, 2, 3))


def test_backbone_feature_maps_equal_ours(converted):
    model, folder = converted
    # AutoBackbone picks PvtV2Backbone for this config, with all four stages out.
    assert type(AutoBackbone.from_config(AutoConfig.from_pretrained(folder))) is PvtV2Backbone
    backbone, info = PvtV2Backbone.from_pretrained(folder, output_loading_info=True)
    assert not info["missing_keys"] and set(info["unexpected_keys"]) == {"classifier.weight", "classifier.bias"}
    backbone.eval()
    assert backbone.out_features == STAGES and backbone.channels == [32, 64, 160, 256]
    x = torch.randn(2, 3, 64, 96)
    ours = model.forward_features(x)
    theirs = _maps(backbone, x)
    assert [t.shape for t in theirs] == [(2, 32, 16, 24), (2, 64, 8, 12), (2, 160, 4, 6), (2, 256, 2, 3)]
    for a, b in zip(theirs, ours):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-4)


def test_auto_backbone_from_pretrained(converted):
    """``AutoBackbone.from_pretrained(folder)`` itself. transformers 5.x (seen in 5.24) asks the
    Hub whether the name is a repository before looking at the disk, so a local folder raises
    ``HFValidationError`` there (any model, not this folder); the README says so and shows
    ``PvtV2Backbone.from_pretrained``. Where it loads, it must be the same backbone."""
    model, folder = converted
    try:
        backbone = AutoBackbone.from_pretrained(folder).eval()
    except HFValidationError:
        assert int(transformers.__version__.split(".")[0]) >= 5
        return
    assert type(backbone) is PvtV2Backbone and backbone.out_features == STAGES
    x = torch.randn(1, 3, 64, 64)
    for a, b in zip(_maps(backbone, x), model.forward_features(x)):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-4)


def test_selected_stages_become_out_features(tmp_path):
    torch.manual_seed(0)
    model = pvtv2.create_model("pvt_v2_b0", num_classes=0, out_indices=(1, 3)).eval()
    model.save_pretrained(tmp_path / "ours")
    pvtv2.convert(tmp_path / "ours", tmp_path / "hf", to="transformers")
    backbone = PvtV2Backbone.from_pretrained(tmp_path / "hf").eval()
    assert backbone.out_features == ["stage2", "stage4"]
    x = torch.randn(1, 3, 64, 64)
    ours = model.forward_features(x)
    theirs = _maps(backbone, x)
    assert len(theirs) == len(ours) == 2
    for a, b in zip(theirs, ours):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-4)


def test_classifier_logits_equal_ours(converted):
    model, folder = converted
    classifier = AutoModelForImageClassification.from_pretrained(folder).eval()
    assert type(classifier).__name__ == "PvtV2ForImageClassification"
    x = torch.randn(2, 3, 64, 96)
    with torch.no_grad():
        torch.testing.assert_close(classifier(x).logits, model(x), rtol=0, atol=1e-4)
