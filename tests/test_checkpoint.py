"""Loading every checkpoint format, saving the pvtv2 format, converting, and the errors for broken files."""
import json
import pickle
import time
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
from pvtv2.registry import REGISTRY

HUB_ID = REGISTRY["pvt_v2_b0"].hub_id  # timm/pvt_v2_b0.in1k


def hf_arch(name):
    """transformers' PvtV2Config arguments for a registered variant."""
    v = REGISTRY[name]
    return dict(hidden_sizes=list(v.embed_dims), depths=list(v.depths), num_attention_heads=list(v.num_heads),
                mlp_ratios=list(v.mlp_ratios), sr_ratios=list(v.sr_ratios), linear_attention=v.attention == "linear")


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
    peer = randomize_(PvtV2ForImageClassification(HFConfig(num_labels=1000, **hf_arch(name))), seed=2).eval()
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
    PvtV2ForImageClassification(HFConfig(**hf_arch("pvt_v2_b1"))).save_pretrained(tmp_path)
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
    assert cfg["library"] == "pvtv2" and cfg["config"]["embed_dims"] == list(REGISTRY["pvt_v2_b0"].embed_dims)
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


# -- hub ids ------------------------------------------------------------------------------
@pytest.fixture
def hub(tmp_path, monkeypatch):
    """A private Hugging Face cache, and a hub endpoint that refuses connections (a closed
    local port), so nothing here reaches the network even on a machine that could.
    Returns ``add(repo_id, files)``, which puts a snapshot of ``files`` in the cache."""
    import huggingface_hub.constants as hf

    endpoint = "http://127.0.0.1:9"
    monkeypatch.setattr(hf, "HF_HUB_CACHE", str(tmp_path / "hub"))  # constants are read at import
    monkeypatch.setattr(hf, "ENDPOINT", endpoint)
    monkeypatch.setattr(hf, "HUGGINGFACE_CO_URL_TEMPLATE", endpoint + "/{repo_id}/resolve/{revision}/{filename}")
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(hf, "HF_HUB_OFFLINE", False)

    def add(repo_id, files):
        repo = tmp_path / "hub" / ("models--" + repo_id.replace("/", "--"))
        commit = "0123456789abcdef0123456789abcdef01234567"
        (repo / "refs").mkdir(parents=True)
        (repo / "refs" / "main").write_text(commit)
        snapshot = repo / "snapshots" / commit
        snapshot.mkdir(parents=True)
        for name, write in files.items():
            write(snapshot / name)
        return snapshot

    return add


def _timm_hub_repo(model):
    """The files of timm's hub repos: timm-layout safetensors and timm's config.json."""
    return {"model.safetensors": lambda p: save_file(pvtv2_to_timm(model.state_dict()), p),
            "config.json": lambda p: p.write_text(json.dumps({"architecture": "pvt_v2_b0", "num_classes": 1000}))}


def test_hub_id_works_wherever_a_checkpoint_is_accepted(tmp_path, hub, b0):
    """``--checkpoint timm/pvt_v2_b0.in1k`` for predict/eval/export resolves like ``create_model``'s
    ``pretrained=`` (here from the cache, as after a first download)."""
    from pvtv2.classification.predict import load_classifier
    from pvtv2.export import export_checkpoint

    hub(HUB_ID, _timm_hub_repo(b0))
    x = images((64, 64))
    with torch.no_grad():
        expected = b0(x)
        for model in (pvtv2.create_model(pretrained=HUB_ID),  # a hub id (its snapshot folder)
                      pvtv2.create_model("pvt_v2_b0", pretrained=True),  # the variant's published file
                      load_classifier(HUB_ID)[0]):  # how pvtv2 predict and eval build theirs
            assert model.load_report.format == "timm" and max_diff(model.eval()(x), expected) < 1e-4
    out = export_checkpoint(HUB_ID, tmp_path / "b0.pt", format="torchscript")
    assert out.is_file()


def test_unreachable_hub_fails_at_once(hub):
    """Offline without HF_HUB_OFFLINE: no retries (huggingface_hub's own take about 25 s), a
    message naming the hub id and what to do. The time bound only guards against a hang."""
    start = time.monotonic()
    with pytest.raises(CheckpointError, match=rf"{HUB_ID}: cannot reach the Hugging Face Hub.*pretrained='path/to.*--pretrained \(train\) / --checkpoint"):
        pvtv2.create_model("pvt_v2_b0", pretrained=True)
    # A string that is neither a local path nor reachable on the hub: both are said.
    with pytest.raises(CheckpointError, match=r"someone/b0: no such local file or folder, and as a Hugging Face Hub id: cannot reach"):
        pvtv2.create_model("pvt_v2_b0", pretrained="someone/b0")
    assert time.monotonic() - start < 10


def test_missing_path_and_offline_hub(tmp_path, monkeypatch, hub):
    with pytest.raises(CheckpointError, match="no such file"):
        pvtv2.create_model("pvt_v2_b0", pretrained=str(tmp_path / "nope.pth"))
    with pytest.raises(CheckpointError, match=r"runs/x/last\.pt: no such file"):  # a relative path, not a hub id
        pvtv2.create_model("pvt_v2_b0", pretrained="runs/x/last.pt")
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)  # read at import time
    with pytest.raises(CheckpointError, match=rf"{HUB_ID}.*offline.*pretrained='path/to"):
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


# -- training states ------------------------------------------------------------------------
def _write_last_pt(path, model, classes, *, task="classify"):
    """A last.pt as classification/train.py writes it: the *training* config under ``config``."""
    from pvtv2.classification import TrainConfig
    from pvtv2.engine import save_training_state

    cfg = TrainConfig(data="d", model="pvt_v2_b0", img_size=48).resolved()
    optimizer = torch.optim.AdamW(model.parameters())
    save_training_state(path, {
        "meta": {"task": task, "model": "pvt_v2_b0", "classes": classes, "img_size": 48}, "epoch": 0,
        "best_top1": 50.0, "history": [], "model": model.state_dict(), "optimizer": optimizer.state_dict(),
        "scaler": None, "ema": None, "config": cfg.to_dict(), "class_names": classes,
    })


def test_last_pt_loads_as_weights(tmp_path):
    from pvtv2.classification.predict import load_classifier

    trained = randomize_(pvtv2.create_model("pvt_v2_b0", num_classes=3), seed=6).eval()
    last = tmp_path / "runs" / "x" / "last.pt"
    _write_last_pt(last, trained, ["a", "b", "c"])
    model = pvtv2.create_model("pvt_v2_b0", num_classes=3)
    report = pvtv2.load_checkpoint(model, last)  # the README's example
    assert report.format == "pvtv2" and report.loaded == len(trained.state_dict())
    assert torch.equal(model.head.weight, trained.head.weight)
    alone = pvtv2.create_model(pretrained=last)  # the variant and classes from the training state
    assert alone.config.name == "pvt_v2_b0" and alone.class_names == ["a", "b", "c"]
    net, names, size, crop = load_classifier(last)  # pvtv2 eval / predict --checkpoint last.pt
    assert names == ["a", "b", "c"] and size == 48 and crop == pytest.approx(0.875)
    for k, v in trained.state_dict().items():
        assert torch.equal(net.state_dict()[k], v), k
    _write_last_pt(tmp_path / "det.pt", trained, ["a"], task="detect")
    with pytest.raises(CheckpointError, match=r"det\.pt: this is a pvtv2 detect training state.*pvtv2 detect eval"):
        pvtv2.load_checkpoint(model, tmp_path / "det.pt")


# -- values a copy would take silently -------------------------------------------------------
def test_integer_and_non_finite_tensors_are_refused(tmp_path, b0):
    from pvtv2.segmentation import create_segmenter, load_segmenter, save_segmenter

    sd = dict(b0.state_dict())
    sd["head.weight"] = torch.ones(sd["head.weight"].shape, dtype=torch.int32)  # the right size, the wrong kind
    save_file(sd, tmp_path / "int.safetensors")
    with pytest.raises(CheckpointError, match=r"int\.safetensors.*not floating point.*head\.weight \(torch\.int32\)"):
        pvtv2.load_checkpoint(pvtv2.create_model("pvt_v2_b0"), tmp_path / "int.safetensors")
    sd = dict(b0.state_dict())
    sd["block1.0.attn.q.weight"] = sd["block1.0.attn.q.weight"].clone()
    sd["block1.0.attn.q.weight"][0, 0] = float("nan")
    sd["norm4.bias"] = torch.full_like(sd["norm4.bias"], float("inf"))
    torch.save(sd, tmp_path / "nan.pth")
    with pytest.raises(CheckpointError, match=r"nan\.pth: 2 tensor\(s\) hold NaN or inf values: block1\.0\.attn\.q\.weight, norm4\.bias"):
        pvtv2.create_model("pvt_v2_b0", pretrained=tmp_path / "nan.pth")
    # Task files (detectors, segmenters) are checked the same way.
    seg = create_segmenter("pvt_v2_b0", 3)
    with torch.no_grad():
        seg.head.classifier.weight[0] = float("nan")
    save_segmenter(seg, tmp_path / "seg.safetensors")
    with pytest.raises(CheckpointError, match=r"seg\.safetensors: 1 tensor\(s\) hold NaN or inf values: head\.classifier\.weight"):
        load_segmenter(tmp_path / "seg.safetensors")


# -- files that are not checkpoints, or damaged ones --------------------------------------------
def test_broken_metadata_names_the_file(tmp_path, b0):
    save_file(b0.state_dict(), tmp_path / "bad.safetensors", metadata={"library": "pvtv2", "pvtv2_config": '{"embed_dims": [32,'})
    with pytest.raises(CheckpointError, match=r"bad\.safetensors: metadata entry 'pvtv2_config' is not valid JSON"):
        pvtv2.create_model(pretrained=tmp_path / "bad.safetensors")
    save_file(b0.state_dict(), tmp_path / "keys.safetensors", metadata={"pvtv2_config": '{"widths": [1]}'})
    with pytest.raises(CheckpointError, match=r"keys\.safetensors: metadata entry 'pvtv2_config' is not a valid PVTv2 config.*widths"):
        pvtv2.create_model(pretrained=tmp_path / "keys.safetensors")
    b0.save_pretrained(tmp_path / "folder")
    (tmp_path / "folder" / "config.json").write_text(json.dumps({"library": "pvtv2", "config": {"depth": 3}}))
    with pytest.raises(CheckpointError, match=r"folder/config\.json: its 'config' entry is not a valid PVTv2 config"):
        pvtv2.create_model(pretrained=tmp_path / "folder")


def test_exports_are_named_as_such(tmp_path, b0):
    """Our ONNX and TorchScript exports given where a checkpoint is expected: the message says
    what the file is and what takes it (not "pickled objects" or "truncated")."""
    import onnx
    from onnx import TensorProto, helper

    from pvtv2.export import export_torchscript

    export_torchscript(b0, tmp_path / "m.pt", check_sizes=[(64, 64)])
    with pytest.raises(CheckpointError, match=r"m\.pt: this is a TorchScript module.*torch\.jit\.load"):
        pvtv2.load_checkpoint(pvtv2.create_model("pvt_v2_b0"), tmp_path / "m.pt")
    # An ONNX file laid out as torch.onnx writes one (exporting b0 itself takes 10+ s).
    graph = helper.make_graph([helper.make_node("Identity", ["images"], ["logits"])], "g",
                              [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 3])])
    proto = helper.make_model(graph, producer_name="pytorch")
    for name in ("m.onnx", "renamed.pth"):
        onnx.save(proto, tmp_path / name)
        with pytest.raises(CheckpointError, match=rf"{name}: this is an ONNX model.*pvtv2 predict IMAGES --checkpoint MODEL\.onnx"):
            pvtv2.create_model("pvt_v2_b0", pretrained=tmp_path / name)


def test_a_checkpoint_is_read_once(tmp_path, b0, monkeypatch):
    """predict/eval/export build the model and take its metadata (input size) from one read."""
    from pvtv2.checkpoint import io
    from pvtv2.classification.predict import load_classifier

    pvtv2.checkpoint.save_file(b0, tmp_path / "b0.safetensors", extra={"input_size": 96})
    reads = []
    original = io._read_file
    monkeypatch.setattr(io, "_read_file", lambda path: reads.append(path) or original(path))
    assert load_classifier(tmp_path / "b0.safetensors")[2] == 96
    assert reads == [tmp_path / "b0.safetensors"]


# -- convert: nothing existing replaced unless asked, never the source ------------------------
def test_convert_refuses_to_overwrite(tmp_path, b0):
    b0.save_pretrained(tmp_path / "src")
    src_bytes = (tmp_path / "src" / "model.safetensors").read_bytes()
    (tmp_path / "taken.pth").write_bytes(b"someone's file")
    with pytest.raises(CheckpointError, match=r"taken\.pth: already exists; pass overwrite=True \(--overwrite\)"):
        pvtv2.convert(tmp_path / "src", tmp_path / "taken.pth", to="official")
    assert (tmp_path / "taken.pth").read_bytes() == b"someone's file"
    pvtv2.convert(tmp_path / "src", tmp_path / "taken.pth", to="official", overwrite=True)
    assert set(torch.load(tmp_path / "taken.pth", weights_only=True)) == set(b0.state_dict())
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "notes.txt").write_text("keep")
    with pytest.raises(CheckpointError, match="full: already exists"):
        pvtv2.convert(tmp_path / "src", tmp_path / "full", to="transformers")
    # Never the source, nor a folder holding it or a file inside it, even with overwrite=True.
    for dst, to in ((tmp_path / "src", "pvtv2"), (tmp_path / "src" / "model.safetensors", "pvtv2"), (tmp_path, "transformers")):
        with pytest.raises(CheckpointError, match="would overwrite the source"):
            pvtv2.convert(tmp_path / "src", dst, to=to, overwrite=True)
    assert (tmp_path / "src" / "model.safetensors").read_bytes() == src_bytes


@pytest.mark.parametrize("to,dst,expected", [
    ("official", "b0.onnx", "name it .pth, .pt or .bin"), ("timm", "b0_timm", "name it .pth"),
    ("transformers", "hf.safetensors", "is a folder"), ("pvtv2", "b0.pth", "a .safetensors file or a folder"),
    ("tflite", "b0.pth", "unknown checkpoint format 'tflite'")])
def test_convert_checks_the_destination_suffix(tmp_path, to, dst, expected):
    with pytest.raises(CheckpointError, match=expected):
        pvtv2.convert(tmp_path / "nothing-read-yet.pth", tmp_path / dst, to=to)
    assert not (tmp_path / dst).exists()


def test_convert_command_overwrite_flag_and_old_format_name(tmp_path, b0, cli):
    b0.save_pretrained(tmp_path / "src")
    (tmp_path / "b0.safetensors").write_bytes(b"old")
    res = cli("convert", str(tmp_path / "src"), str(tmp_path / "b0.safetensors"), "--to", "ours",
              "--overwrite")
    assert res.returncode == 0 and "wrote pvtv2 checkpoint" in res.stdout, res.stderr
    again = pvtv2.create_model(pretrained=tmp_path / "b0.safetensors")
    assert again.load_report.format == "pvtv2" and torch.equal(again.head.weight, b0.head.weight)
