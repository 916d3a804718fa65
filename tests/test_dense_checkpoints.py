"""The published dense-prediction checkpoints (MMSegmentation / MMDetection layouts) load into
our task models: every tensor used, shapes exact, and the outputs of the official networks.

The files are built here from the official configs' shapes (b0, few classes, random values)
with the official key names written out, not derived from our own renaming."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from pvtv2 import create_model
from pvtv2.errors import CheckpointError
from pvtv2.segmentation.model import load_segmenter

B0_DIMS = (32, 64, 160, 256)


def _mmseg_fpn_state_dict(num_classes: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """whai362/PVTv2-Seg ``fpn_pvtv2_b0_ade20k_40k.py``: FPN(in [32, 64, 160, 256], out 256,
    num_outs 4) + FPNHead(channels 128, strides 4-32, SyncBN) in MMSegmentation 0.x names."""
    g = torch.Generator().manual_seed(seed)

    def rand(*shape):
        return torch.randn(*shape, generator=g) * 0.05

    backbone = create_model("pvt_v2_b0", features_only=True)
    sd = {f"backbone.{k}": rand(*v.shape) if v.is_floating_point() else v for k, v in backbone.state_dict().items()}
    for i, c in enumerate(B0_DIMS):
        sd[f"neck.lateral_convs.{i}.conv.weight"] = rand(256, c, 1, 1)
        sd[f"neck.lateral_convs.{i}.conv.bias"] = rand(256)
        sd[f"neck.fpn_convs.{i}.conv.weight"] = rand(256, 256, 3, 3)
        sd[f"neck.fpn_convs.{i}.conv.bias"] = rand(256)
    for i in range(4):
        for k in range(max(1, i)):
            j = 2 * k if i > 0 else 0  # ConvModule, Upsample, ConvModule, ...
            p = f"decode_head.scale_heads.{i}.{j}"
            sd[f"{p}.conv.weight"] = rand(128, 256 if k == 0 else 128, 3, 3)  # no bias: the conv has a norm
            sd[f"{p}.bn.weight"] = 1 + rand(128)
            sd[f"{p}.bn.bias"] = rand(128)
            sd[f"{p}.bn.running_mean"] = rand(128)
            sd[f"{p}.bn.running_var"] = 0.5 + torch.rand(128, generator=g)
            sd[f"{p}.bn.num_batches_tracked"] = torch.tensor(100)
    sd["decode_head.conv_seg.weight"] = rand(num_classes, 128, 1, 1)
    sd["decode_head.conv_seg.bias"] = rand(num_classes)
    return sd


def _mmseg_reference(x: torch.Tensor, sd: dict[str, torch.Tensor]) -> torch.Tensor:
    """MMSegmentation 0.x's FPN + FPNHead + resize, written from its code with the file's tensors."""
    backbone = create_model("pvt_v2_b0", features_only=True).eval()
    backbone.load_state_dict({k[len("backbone."):]: v for k, v in sd.items() if k.startswith("backbone.")})
    feats = backbone.forward_features(x)
    lat = [F.conv2d(f, sd[f"neck.lateral_convs.{i}.conv.weight"], sd[f"neck.lateral_convs.{i}.conv.bias"])
           for i, f in enumerate(feats)]
    for i in range(3, 0, -1):  # upsample_cfg=dict(mode='nearest')
        lat[i - 1] = lat[i - 1] + F.interpolate(lat[i], size=lat[i - 1].shape[2:], mode="nearest")
    outs = [F.conv2d(t, sd[f"neck.fpn_convs.{i}.conv.weight"], sd[f"neck.fpn_convs.{i}.conv.bias"], padding=1)
            for i, t in enumerate(lat)]
    out = None
    for i, t in enumerate(outs):
        for k in range(max(1, i)):
            p = f"decode_head.scale_heads.{i}.{2 * k if i > 0 else 0}"
            t = F.conv2d(t, sd[f"{p}.conv.weight"], padding=1)
            t = F.batch_norm(t, sd[f"{p}.bn.running_mean"], sd[f"{p}.bn.running_var"], sd[f"{p}.bn.weight"],
                             sd[f"{p}.bn.bias"], training=False, eps=1e-5)
            t = F.relu(t)
            if i > 0:
                t = F.interpolate(t, scale_factor=2, mode="bilinear", align_corners=False)
        out = t if out is None else out + F.interpolate(t, size=out.shape[2:], mode="bilinear", align_corners=False)
    logits = F.conv2d(out, sd["decode_head.conv_seg.weight"], sd["decode_head.conv_seg.bias"])
    return F.interpolate(logits, size=x.shape[2:], mode="bilinear", align_corners=False)


def _save(tmp_path, sd, meta=None, name="fpn.pth"):
    path = tmp_path / name
    torch.save({"state_dict": sd, "meta": meta or {"mmseg_version": "0.11.0"}}, path)
    return path


@torch.no_grad()
def test_mmseg_semantic_fpn_loads_every_tensor_and_computes_the_official_logits(tmp_path):
    sd = _mmseg_fpn_state_dict(num_classes=5)
    model, info = load_segmenter(_save(tmp_path, sd, {"CLASSES": ["a", "b", "c", "d", "e"]}))
    assert model.num_classes == 5 and not model.training
    assert info["class_names"] == ["a", "b", "c", "d", "e"] and "reduce_zero_label" not in info
    assert len(model.state_dict()) == len(sd)
    x = torch.randn(1, 3, 96, 64, generator=torch.Generator().manual_seed(1))
    ref = _mmseg_reference(x, sd)
    out = model(x)
    assert out.shape == (1, 5, 96, 64)
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-5)


def test_mmseg_semantic_fpn_without_class_names_gets_indices_and_ade20k_label_shift(tmp_path):
    model, info = load_segmenter(_save(tmp_path, _mmseg_fpn_state_dict(num_classes=150)))
    assert model.num_classes == 150
    assert info["class_names"] == [str(i) for i in range(150)]
    assert info["reduce_zero_label"] is True  # ADE20K's config trains with reduce_zero_label=True


def test_mmseg_semantic_fpn_with_a_missing_and_an_extra_tensor_is_refused_naming_both(tmp_path):
    sd = _mmseg_fpn_state_dict(num_classes=3)
    del sd["decode_head.scale_heads.3.4.bn.running_var"]
    sd["decode_head.conv_seg_extra.weight"] = torch.zeros(3)
    with pytest.raises(CheckpointError, match=r"1 missing: head\.scale_heads\.3\.4\.1\.running_var; "
                                              r"1 unused: decode_head\.conv_seg_extra\.weight"):
        load_segmenter(_save(tmp_path, sd))


def test_mmseg_semantic_fpn_with_a_wrong_shape_is_refused(tmp_path):
    sd = _mmseg_fpn_state_dict(num_classes=3)
    sd["neck.fpn_convs.2.conv.weight"] = torch.zeros(256, 256, 1, 1)
    with pytest.raises(CheckpointError, match=r"shape-mismatched: neck\.layer_blocks\.2\.0\.weight"):
        load_segmenter(_save(tmp_path, sd))


def test_a_torch_file_that_is_no_published_segmenter_is_refused(tmp_path):
    path = tmp_path / "x.pth"
    torch.save({"state_dict": {"conv.weight": torch.zeros(1)}}, path)
    with pytest.raises(CheckpointError, match="neither a pvtv2 task file nor a published"):
        load_segmenter(path)
