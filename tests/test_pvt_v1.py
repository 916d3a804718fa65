"""PVTv1 (pvt_tiny ... pvt_large): records, numerics against transformers' PvtForImageClassification,
checkpoints in every format, the dense-prediction backbone, training, export, and the ablation rows."""
import json
import math
import types

import pytest
import torch
import torch.nn.functional as F
from conftest import V1_MODELS, randomize_
from transformers import PvtConfig, PvtForImageClassification

import pvtv2
from pvtv2.ablation import ROWS
from pvtv2.checkpoint import CheckpointError, detect_format, pvtv2_to_transformers
from pvtv2.registry import REGISTRY

SIZE = {"pvt_tiny": "tiny", "pvt_small": "small", "pvt_medium": "medium", "pvt_large": "large"}


def hf_config(name, **kw):
    """transformers' PvtConfig for a registered PVTv1 variant."""
    v = REGISTRY[name]
    return PvtConfig(hidden_sizes=list(v.embed_dims), depths=list(v.depths), num_attention_heads=list(v.num_heads),
                     mlp_ratios=list(v.mlp_ratios), sequence_reduction_ratios=list(v.sr_ratios), **kw)


def official_resize(embedding, embeddings, height, width):
    """whai362/PVT's ``_get_pos_embed``: the *stored* grid resized to the target one, in place of
    transformers' ``interpolate_pos_encoding``, which reshapes the stored embedding to the target
    grid and so fails at every size but the one it was trained at."""
    side = math.isqrt(embeddings.shape[1])
    if (height, width) == (side, side):
        return embeddings
    grid = embeddings.reshape(1, side, side, -1).permute(0, 3, 1, 2)
    return F.interpolate(grid, size=(height, width), mode="bilinear").flatten(2).transpose(1, 2)


def images(size, n=2, seed=3):
    return torch.randn(n, 3, *size, generator=torch.Generator().manual_seed(seed))


# -- records -------------------------------------------------------------------------
@pytest.mark.parametrize("name", V1_MODELS)
def test_record_and_exact_parameter_count_against_transformers(name):
    v = REGISTRY[name]
    assert v.family == "pvt_v1" and v.hub_id == f"Zetatech/pvt-{SIZE[name]}-224" and v.hub_file is None
    assert v.url.endswith(f"/download/v2/{name}.pth")
    # classification/configs/pvt/*.py: medium and large train with drop path 0.3 and clipping 1.0.
    assert (v.drop_path, v.clip_grad) == ((0.3, 1.0) if sum(v.depths) > 20 else (0.1, 0.0))
    with torch.device("meta"):
        ours = pvtv2.create_model(name)
        peer = PvtForImageClassification(hf_config(name))
    count = sum(p.numel() for p in ours.parameters())
    assert count == sum(p.numel() for p in peer.parameters()) == v.num_params
    assert round(count / 1e6, 1) == {"pvt_tiny": 13.2, "pvt_small": 24.5, "pvt_medium": 44.2, "pvt_large": 61.4}[name]
    # The layouts correspond key for key, shape for shape (transformers splits kv into key and value).
    mapped = pvtv2_to_transformers(ours.state_dict())
    assert {k: tuple(t.shape) for k, t in mapped.items()} == {k: tuple(t.shape) for k, t in peer.state_dict().items()}


def test_list_models_by_family_and_pattern(cli):
    assert pvtv2.list_models() == [n for n, v in REGISTRY.items() if v.family == "pvt_v2"]
    assert pvtv2.list_models(family="v1") == pvtv2.list_models(family="pvt_v1") == V1_MODELS
    assert pvtv2.list_models(family="all") == list(REGISTRY) == pvtv2.list_models("pvt_*")
    assert pvtv2.list_models("pvt_v2_b2*") == ["pvt_v2_b2", "pvt_v2_b2_li"]
    assert pvtv2.list_models("*small*") == ["pvt_small"] and pvtv2.list_models("pvt_s*", family="v2") == []
    with pytest.raises(ValueError, match="unknown model family 'v3'.*pvt_v1"):
        pvtv2.list_models(family="v3")
    out = cli("models", "--family", "v1", check=True)
    assert [line.split()[:2] for line in out.stdout.splitlines()] == [[n, "pvt_v1"] for n in V1_MODELS]
    assert "24,485,864 parameters" in out.stdout


# -- the model -------------------------------------------------------------------------
def test_shapes_gradients_and_heads():
    model = pvtv2.create_model("pvt_tiny", num_classes=7)
    assert model.no_weight_decay() == {"cls_token"}  # as the official pvt.py: position embeddings decay
    for h, w in [(224, 224), (96, 128), (32, 32)]:
        x = torch.randn(2, 3, h, w, requires_grad=(h, w) == (96, 128))
        feats = model.forward_features(x)
        assert [tuple(f.shape) for f in feats] == [(2, c, h // s, w // s) for c, s in zip((64, 128, 320, 512), (4, 8, 16, 32))]
        logits = model(x)
        assert logits.shape == (2, 7)
        if x.requires_grad:
            logits.square().mean().backward()
            assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
            assert model.cls_token.grad.abs().sum() > 0 and model.pos_embed1.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="class token"):
        model.forward_head(feats)
    features = pvtv2.create_model("pvt_tiny", num_classes=0).eval()
    with torch.no_grad():
        assert features(torch.randn(2, 3, 64, 64)).shape == (2, 512)  # the normalised class token


@pytest.mark.parametrize("name", ["pvt_tiny", "pvt_small"])
def test_logits_match_transformers(tmp_path, name):
    peer = randomize_(PvtForImageClassification(hf_config(name, num_labels=1000)), seed=2).eval()
    peer.save_pretrained(tmp_path)
    model = pvtv2.create_model(name, pretrained=tmp_path).eval()
    alone = pvtv2.create_model(pretrained=tmp_path).eval()  # the variant from the folder alone
    assert model.load_report.format == "transformers" and alone.config.name == name
    assert model.config.norm_eps == model.config.embed_norm_eps == 1e-6  # transformers' one eps
    with torch.no_grad():
        x = images((224, 224))
        expected = peer(pixel_values=x).logits
        assert expected.abs().max() > 0.5
        assert (model(x) - expected).abs().max().item() < 1e-4 and (alone(x) - expected).abs().max().item() < 1e-4
        # Other sizes: transformers' own resize is broken (see official_resize); with the official one
        # in its place the two agree.
        for emb in peer.pvt.encoder.patch_embeddings:
            emb.interpolate_pos_encoding = types.MethodType(official_resize, emb)
        for size in [(160, 256), (256, 192)]:
            x = images(size, n=1)
            assert (model(x) - peer(pixel_values=x).logits).abs().max().item() < 1e-4, size


# -- checkpoints -----------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny():
    return randomize_(pvtv2.create_model("pvt_tiny"), seed=5).eval()


def test_official_release_layout_loads(tmp_path, tiny):
    sd = tiny.state_dict()
    assert {"patch_embed1.proj.weight", "pos_embed1", "pos_embed4", "cls_token", "block1.0.attn.kv.weight",
            "norm.weight", "head.weight"} <= set(sd) and "norm1.weight" not in sd
    torch.save({"model": sd}, tmp_path / "pvt_tiny.pth")  # the release files wrap the weights in "model"
    assert detect_format(sd) == "official"
    named = pvtv2.create_model("pvt_tiny", pretrained=tmp_path / "pvt_tiny.pth").eval()
    alone = pvtv2.create_model(pretrained=tmp_path / "pvt_tiny.pth").eval()
    # The shapes alone tell pvt_small from pvt_v2_b2, which share widths and depths.
    assert alone.config.name == "pvt_tiny" and named.load_report.format == "official"
    x = images((224, 224))
    with torch.no_grad():
        assert torch.equal(named(x), tiny(x)) and torch.equal(alone(x), tiny(x))


def test_convert_every_direction(tmp_path, tiny, cli):
    tiny.save_pretrained(tmp_path / "pvtv2")
    x = images((224, 224))
    with torch.no_grad():
        expected = tiny(x)
        for to, dst in [("official", "o.pth"), ("transformers", "hf"), ("pvtv2", "p.safetensors")]:
            pvtv2.convert(tmp_path / "pvtv2", tmp_path / dst, to=to)
            back = pvtv2.create_model(pretrained=tmp_path / dst).eval()
            assert back.config.name == "pvt_tiny"
            for k, v in tiny.state_dict().items():
                assert torch.equal(v, back.state_dict()[k]), (to, k)
        hf = PvtForImageClassification.from_pretrained(tmp_path / "hf").eval()
        assert json.loads((tmp_path / "hf" / "config.json").read_text())["model_type"] == "pvt"
        # transformers has one LayerNorm eps (1e-6) where the official code has 1e-5 in two places.
        assert (hf(pixel_values=x).logits - expected).abs().max().item() < 1e-4
    res = cli("convert", str(tmp_path / "hf"), str(tmp_path / "cli.pth"), "--to", "official")
    assert res.returncode == 0 and set(torch.load(tmp_path / "cli.pth", weights_only=True)) == set(tiny.state_dict())
    with pytest.raises(CheckpointError, match="timm has the standard PVTv2 models only.*PVTv1"):
        pvtv2.convert(tmp_path / "pvtv2", tmp_path / "t.pth", to="timm")
    assert not (tmp_path / "t.pth").exists()


def test_broken_and_mismatched_files(tmp_path, tiny):
    torch.save(tiny.state_dict(), tmp_path / "tiny.pth")
    with pytest.raises(CheckpointError, match="looks like a pvt_tiny checkpoint; you built pvt_small"):
        pvtv2.create_model("pvt_small", pretrained=tmp_path / "tiny.pth")
    with pytest.raises(CheckpointError, match="missing.*unexpected.*looks like a pvt_tiny checkpoint; you built pvt_v2_b1"):
        pvtv2.create_model("pvt_v2_b1", pretrained=tmp_path / "tiny.pth")
    PvtForImageClassification(hf_config("pvt_tiny")).save_pretrained(tmp_path / "hf")
    with pytest.raises(CheckpointError, match="asked for pvt_small"):
        pvtv2.create_model("pvt_small", pretrained=tmp_path / "hf")
    cfg = json.loads((tmp_path / "hf" / "config.json").read_text())
    (tmp_path / "hf" / "config.json").write_text(json.dumps({**cfg, "patch_sizes": [7, 3, 3, 3]}))
    with pytest.raises(CheckpointError, match="unsupported patch_sizes.*PVTv1 uses 4,2,2,2"):
        pvtv2.create_model(pretrained=tmp_path / "hf")
    sd = pvtv2_to_transformers(tiny.state_dict())
    del sd["pvt.encoder.block.0.0.attention.self.value.weight"]
    with pytest.raises(CheckpointError, match="key projection without its pair"):
        pvtv2.load_checkpoint(pvtv2.create_model("pvt_tiny"), sd)
    grid = dict(tiny.state_dict(), pos_embed1=torch.zeros(1, 64 * 64, 64))  # a 256-pixel grid
    with pytest.raises(CheckpointError, match=r"pos_embed1 \(checkpoint \(1, 4096, 64\), model \(1, 3136, 64\)\)"):
        pvtv2.load_checkpoint(pvtv2.create_model("pvt_tiny"), grid)


# -- dense prediction, training, export ---------------------------------------------------
def test_dense_backbone_detectors_and_segmenter(tmp_path):
    from pvtv2.detection import create_detector
    from pvtv2.segmentation import create_segmenter

    classifier = randomize_(pvtv2.create_model("pvt_small"), seed=1)
    classifier.save_pretrained(tmp_path / "cls")
    for kind in ("retinanet", "maskrcnn"):
        det = create_detector(kind, "pvt_small", 3, min_size=64, max_size=96).eval()
        body = det.backbone.body
        # The official detection backbone: no class token or final norm (its maps never use them).
        assert not hasattr(body, "cls_token") and not hasattr(body, "norm") and body.pos_embed4.shape[1] == 50
        with torch.no_grad():
            out = det([torch.rand(3, 64, 96)])
        assert {"boxes", "scores", "labels"} <= set(out[0])
    seg = create_segmenter("pvt_small", 4, pretrained_backbone=tmp_path / "cls")
    assert "class token and final norm not loaded" in str(seg.backbone.load_report)
    assert torch.equal(seg.backbone.pos_embed4, classifier.pos_embed4)
    x = torch.randn(2, 3, 64, 96)
    logits = seg(x)
    assert logits.shape == (2, 4, 64, 96)
    logits.mean().backward()  # every backbone parameter takes part (DDP needs no unused-parameter search)
    assert all(p.grad is not None for p in seg.backbone.parameters())


def test_train_eval_predict_commands(tmp_path, cli):
    from pvtv2.data import make_classification_dataset

    data = make_classification_dataset(tmp_path / "d", classes=3, train_per_class=4, val_per_class=2, size=40,
                                       seed=2, progress=False)
    out = tmp_path / "run"
    cli("train", "--data", str(data), "--output", str(out), "--model", "pvt_tiny", "--epochs", "1",
        "--img-size", "32", "--batch-size", "6", "--workers", "0", "--device", "cpu",
        "--no-progress", "--no-repeated-aug", check=True)
    assert json.loads((out / "config.json").read_text())["drop_path"] == REGISTRY["pvt_tiny"].drop_path
    model = pvtv2.create_model(pretrained=out / "best.safetensors")
    assert model.config.name == "pvt_tiny" and model.num_classes == 3 and model.config.pos_embed
    res = cli("eval", "--data", str(data), "--checkpoint", str(out / "best.safetensors"),
              "--workers", "0", "--device", "cpu", check=True)
    assert json.loads(res.stdout)["images"] == 6
    res = cli("predict", str(data / "val"), "--checkpoint", str(out / "last.pt"), "--topk", "2", check=True)
    records = [json.loads(line) for line in res.stdout.splitlines()]
    assert len(records) == 6 and all(len(r["top"]) == 2 for r in records)


@pytest.mark.slow
def test_onnx_export_with_dynamic_size_and_torchscript(tmp_path, cli):
    """``pvtv2 export`` checks the file in onnxruntime at 224x224, 193x257 and 512x384 itself; the
    position-embedding resize and the plain patches' padding must stay symbolic for that."""
    from pvtv2.export import export_torchscript, onnx_session

    model = randomize_(pvtv2.create_model("pvt_tiny", depths=(1, 1, 1, 1), num_classes=5)).eval()
    model.save_pretrained(tmp_path / "ckpt")
    res = cli("export", str(tmp_path / "ckpt"), "--out", str(tmp_path / "m.onnx"))
    assert res.returncode == 0, res.stderr
    session = onnx_session(tmp_path / "m.onnx")
    x = images((96, 160), n=3)
    with torch.no_grad():
        expected = model(x)
    assert abs(session.run(None, {"images": x.numpy()})[0] - expected.numpy()).max() < 1e-4
    # TorchScript: traced at 224, checked by export_torchscript at 193x257 and 160x96 too.
    traced = torch.jit.load(str(export_torchscript(model, tmp_path / "m.pt")))
    with torch.no_grad():
        assert (traced(x) - expected).abs().max().item() < 1e-4


# -- the ablation's rows ---------------------------------------------------------------
def test_ablation_rows_are_single_create_model_calls():
    configs = [pvtv2.create_model(row.base, **row.switches).config for row in ROWS]
    assert [row.same_as for row in ROWS] == ["pvt_small", None, "pvt_v2_b2", "pvt_v2_b2_li"]
    for row, config in zip(ROWS, configs):
        if row.same_as:  # PVTv2Config equality ignores the name
            assert config == pvtv2.variant_config(row.same_as), row.label
    ope = configs[1]
    assert ope.patch_embed == "overlap" and ope.pos_embed and ope.cls_token and not ope.conv_ffn
