"""Loading every checkpoint format, saving the pvtv2 format, converting, and the errors for broken files."""
import json
import pickle
import warnings

import pytest
import timm
import torch
from conftest import randomize_
from safetensors.torch import save_file
from timm.models.pvt_v2 import checkpoint_filter_fn as timm_filter
from transformers import PvtV2Config as HFConfig
from transformers import PvtV2ForImageClassification

import pvtv2
from pvtv2.checkpoint import CheckpointError, detect_format, pvtv2_to_timm, pvtv2_to_transformers

HF_ARCH = {
    "pvt_v2_b0": dict(hidden_sizes=[32, 64, 160, 256], depths=[2, 2, 2, 2]),
    "pvt_v2_b1": dict(hidden_sizes=[64, 128, 320, 512], depths=[2, 2, 2, 2]),
    "pvt_v2_b2_li": dict(hidden_sizes=[64, 128, 320, 512], depths=[3, 4, 6, 3], linear_attention=True),
}
SIZES = [(224, 224), (160, 232)]


def images(size, n=2, seed=3):
    return torch.randn(n, 3, *size, generator=torch.Generator().manual_seed(seed))


def max_diff(a, b):
    return (a - b).abs().max().item()


@pytest.fixture(scope="module")
def b0():
    return randomize_(pvtv2.create_model("pvt_v2_b0"), seed=5).eval()


# -- peers' own checkpoints -------------------------------------------------------------
@pytest.mark.parametrize("name", ["pvt_v2_b0", "pvt_v2_b2_li"])
@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_timm_checkpoint_loads_and_matches(tmp_path, name, suffix):
    peer = randomize_(timm.create_model(name), seed=1).eval()
    path = tmp_path / f"timm{suffix}"
    if suffix == ".pth":
        torch.save(peer.state_dict(), path)
    else:
        save_file(peer.state_dict(), path)
    report = pvtv2.load_checkpoint(model := pvtv2.create_model(name).eval(), path)
    assert report.format == "timm" and report.loaded == len(peer.state_dict())
    with torch.no_grad():
        for size in SIZES:
            x = images(size)
            assert max_diff(model(x), peer(x)) < 1e-4


@pytest.mark.parametrize("name", ["pvt_v2_b0", "pvt_v2_b1", "pvt_v2_b2_li"])
def test_transformers_folder_loads_and_matches(tmp_path, name):
    peer = randomize_(PvtV2ForImageClassification(HFConfig(num_labels=1000, **HF_ARCH[name])), seed=2).eval()
    peer.save_pretrained(tmp_path)
    model = pvtv2.create_model(name, pretrained=tmp_path).eval()
    alone = pvtv2.create_model(pretrained=tmp_path).eval()  # the variant from the folder alone
    assert model.load_report.format == "transformers" and alone.config.name == name
    with torch.no_grad():
        for size in SIZES:
            x = images(size)
            expected = peer(pixel_values=x).logits
            assert max_diff(model(x), expected) < 1e-4
            assert max_diff(alone(x), expected) < 1e-4


def test_transformers_config_must_agree_with_variant(tmp_path):
    PvtV2ForImageClassification(HFConfig(**HF_ARCH["pvt_v2_b1"])).save_pretrained(tmp_path)
    with pytest.raises(CheckpointError, match="asked for pvt_v2_b2"):
        pvtv2.create_model("pvt_v2_b2", pretrained=tmp_path)


@pytest.mark.parametrize("name", ["pvt_v2_b0", "pvt_v2_b2_li"])
def test_official_checkpoint_loads(tmp_path, name):
    """Official key names, cross-checked with timm's own official->timm mapping."""
    ours = randomize_(pvtv2.create_model(name), seed=4).eval()
    official = dict(ours.state_dict())
    assert "block1.0.mlp.dwconv.dwconv.weight" in official and "patch_embed4.norm.bias" in official
    torch.save(official, tmp_path / f"{name}.pth")  # how the release files are laid out
    peer = timm.create_model(name).eval()
    peer.load_state_dict(timm_filter(official, peer))
    model = pvtv2.create_model(name, pretrained=tmp_path / f"{name}.pth").eval()
    assert model.load_report.format == "official"
    with torch.no_grad():
        for size in SIZES:
            x = images(size)
            assert max_diff(model(x), peer(x)) < 1e-4


@pytest.mark.parametrize("wrap", ["model", "state_dict", "module", "ema"])
def test_wrapped_training_checkpoints(tmp_path, b0, wrap):
    sd = b0.state_dict()
    if wrap == "module":
        obj = {"model": {f"module.{k}": v for k, v in sd.items()}, "epoch": 3}
    elif wrap == "ema":
        obj = {"state_dict": {f"_orig_mod.{k}": v for k, v in pvtv2_to_timm(sd).items()}, "optimizer": {"lr": 1.0}}
    else:
        obj = {wrap: sd, "epoch": torch.tensor(4)}
    torch.save(obj, tmp_path / "train.pt")
    model = pvtv2.create_model("pvt_v2_b0")
    pvtv2.load_checkpoint(model, tmp_path / "train.pt")
    for k, v in model.state_dict().items():
        assert torch.equal(v, sd[k]), k


def test_in_memory_state_dict(b0):
    model = pvtv2.create_model("pvt_v2_b0")
    report = pvtv2.load_checkpoint(model, pvtv2_to_transformers(b0.state_dict()))
    assert report.format == "transformers" and report.source == "<state dict>"
    assert torch.equal(model.block2[1].attn.kv.weight, b0.block2[1].attn.kv.weight)


# -- the pvtv2 format ---------------------------------------------------------------------
def test_save_pretrained_round_trip(tmp_path, b0):
    b0.save_pretrained(tmp_path / "pvtv2", class_names=[f"c{i}" for i in range(1000)])
    cfg = json.loads((tmp_path / "pvtv2" / "config.json").read_text())
    assert cfg["library"] == "pvtv2" and cfg["config"]["embed_dims"] == [32, 64, 160, 256]
    again = pvtv2.create_model(pretrained=tmp_path / "pvtv2").eval()
    assert again.config == b0.config and again.class_names[3] == "c3"
    for k, v in b0.state_dict().items():
        assert torch.equal(v, again.state_dict()[k])
    # The safetensors file alone rebuilds the model (config in its metadata).
    alone = pvtv2.create_model(pretrained=tmp_path / "pvtv2" / "model.safetensors")
    assert alone.config == b0.config


def test_ablation_config_round_trips(tmp_path):
    model = pvtv2.create_model("pvt_v2_b0", num_classes=5, patch_embed="plain", conv_ffn=False)
    model.save_pretrained(tmp_path)
    again = pvtv2.create_model(pretrained=tmp_path)
    assert again.config.patch_embed == "plain" and not again.config.conv_ffn and again.num_classes == 5


@pytest.mark.parametrize("to", ["official", "timm", "transformers"])
def test_round_trip_through_every_format_is_exact(tmp_path, b0, to):
    b0.save_pretrained(tmp_path / "pvtv2")
    dst = tmp_path / ("foreign.pth" if to != "transformers" else "hf")
    pvtv2.convert(tmp_path / "pvtv2", dst, to=to)
    pvtv2.convert(dst, tmp_path / "back", to="pvtv2", name="pvt_v2_b0")
    back = pvtv2.create_model(pretrained=tmp_path / "back")
    for k, v in b0.state_dict().items():
        assert torch.equal(v, back.state_dict()[k]), k


def test_converted_files_load_in_peers(tmp_path, b0):
    b0.save_pretrained(tmp_path / "pvtv2")
    x = images((224, 224))
    with torch.no_grad():
        expected = b0(x)
        pvtv2.convert(tmp_path / "pvtv2", tmp_path / "t.safetensors", to="timm")
        peer = timm.create_model("pvt_v2_b0", pretrained=True,
                                 pretrained_cfg_overlay={"file": str(tmp_path / "t.safetensors")}).eval()
        assert max_diff(peer(x), expected) < 1e-4
        pvtv2.convert(tmp_path / "pvtv2", tmp_path / "hf", to="transformers")
        hf = PvtV2ForImageClassification.from_pretrained(tmp_path / "hf").eval()
        # transformers uses one LayerNorm eps (1e-6) where the official code has 1e-5 in two places.
        assert max_diff(hf(pixel_values=x).logits, expected) < 1e-4
        pvtv2.convert(tmp_path / "pvtv2", tmp_path / "o.pth", to="official")
        official = torch.load(tmp_path / "o.pth", weights_only=True)
        assert set(official) == set(b0.state_dict())


# -- heads and hints -------------------------------------------------------------------
def test_finetune_head_is_reinitialised_with_warning(tmp_path, b0):
    b0.save_pretrained(tmp_path)
    with pytest.warns(UserWarning, match="1000 classes, model has 10"):
        model = pvtv2.create_model("pvt_v2_b0", num_classes=10, pretrained=tmp_path)
    assert model.load_report.head_reinitialized and model.head.weight.shape == (10, 256)
    assert torch.equal(model.block1[0].attn.q.weight, b0.block1[0].attn.q.weight)


def test_wrong_variant_gives_hint(tmp_path, b0):
    torch.save(b0.state_dict(), tmp_path / "b0.pth")
    with pytest.raises(CheckpointError) as err:
        pvtv2.create_model("pvt_v2_b1", pretrained=tmp_path / "b0.pth")
    msg = str(err.value)
    assert "b0.pth" in msg and "official format" in msg and "shape-mismatched" in msg
    assert "looks like a pvt_v2_b0 checkpoint; you built pvt_v2_b1" in msg


def test_missing_and_unexpected_keys_listed(tmp_path, b0):
    sd = dict(b0.state_dict())
    removed = [k for k in sd if k.startswith("block4.")]
    for k in removed:
        del sd[k]
    sd["extra.weight"] = torch.zeros(1)
    with pytest.raises(CheckpointError, match=r"\d+ missing: block4\..*more.*1 unexpected: extra.weight"):
        pvtv2.load_checkpoint(pvtv2.create_model("pvt_v2_b0"), sd)
    report = pvtv2.load_checkpoint(pvtv2.create_model("pvt_v2_b0"), sd, strict=False)
    assert report.unexpected == ["extra.weight"] and report.missing == sorted(removed)


# -- broken files --------------------------------------------------------------------
def test_empty_file(tmp_path):
    (tmp_path / "e.pth").write_bytes(b"")
    with pytest.raises(CheckpointError, match=r"e\.pth.*empty"):
        pvtv2.create_model("pvt_v2_b0", pretrained=tmp_path / "e.pth")


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_truncated_file(tmp_path, b0, suffix):
    path = tmp_path / f"t{suffix}"
    torch.save(b0.state_dict(), path) if suffix == ".pth" else save_file(b0.state_dict(), path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=rf"t\{suffix}.*(truncated|damaged)"):
        pvtv2.load_checkpoint(pvtv2.create_model("pvt_v2_b0"), path)


def test_not_a_checkpoint(tmp_path):
    (tmp_path / "notes.pth").write_text("these are my notes, not weights\n" * 20)
    with pytest.raises(CheckpointError, match=r"notes\.pth.*neither a PyTorch checkpoint nor a safetensors"):
        pvtv2.load_checkpoint(pvtv2.create_model("pvt_v2_b0"), tmp_path / "notes.pth")


class Payload:
    def __reduce__(self):
        return (print, ("this must never run",))


def test_pickle_that_needs_code_is_refused(tmp_path, capsys):
    torch.save({"model": Payload()}, tmp_path / "evil.pth")
    with pytest.raises(CheckpointError, match=r"evil\.pth.*refusing.*run code"):
        pvtv2.load_checkpoint(pvtv2.create_model("pvt_v2_b0"), tmp_path / "evil.pth")
    assert "must never run" not in capsys.readouterr().out


def test_plain_pickle_is_refused(tmp_path):
    with open(tmp_path / "p.bin", "wb") as fh:
        pickle.dump({"x": Payload()}, fh)
    with pytest.raises(CheckpointError, match=r"p\.bin"):
        pvtv2.load_checkpoint(pvtv2.create_model("pvt_v2_b0"), tmp_path / "p.bin")


def test_unrelated_state_dict(tmp_path):
    torch.save({"conv.weight": torch.zeros(3)}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match=r"other\.pt.*unrecognised checkpoint layout.*conv.weight"):
        pvtv2.load_checkpoint(pvtv2.create_model("pvt_v2_b0"), tmp_path / "other.pt")


def test_missing_path_and_offline_hub(tmp_path, monkeypatch):
    with pytest.raises(CheckpointError, match="no such file"):
        pvtv2.create_model("pvt_v2_b0", pretrained=str(tmp_path / "nope.pth"))
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)  # read at import time
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    with pytest.raises(CheckpointError, match=r"timm/pvt_v2_b0.in1k.*offline.*pretrained='path/to"):
        pvtv2.create_model("pvt_v2_b0", pretrained=True)


def test_detect_format():
    sd = pvtv2.create_model("pvt_v2_b0").state_dict()
    assert detect_format(sd) == "official"
    assert detect_format(pvtv2_to_timm(sd)) == "timm"
    assert detect_format(pvtv2_to_transformers(sd)) == "transformers"


def test_no_warning_when_head_matches(tmp_path, b0):
    b0.save_pretrained(tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        pvtv2.create_model("pvt_v2_b0", pretrained=tmp_path)
