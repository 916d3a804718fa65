"""Checkpoint formats: detecting them from key names, one key map per foreign format each
way, and the transformers config conversions.

The ``pvtv2`` layout is the official one (whai362/PVT ``classification/pvt_v2.py`` and, for
PVTv1, ``classification/pvt.py``), so ``official`` files need no renaming; ``pvtv2`` files add
the model config as metadata. transformers has one model per family (``PvtV2ForImageClassification``,
``PvtForImageClassification``): both are the ``transformers`` format, told apart by their keys
and ``model_type``. timm has PVTv2 only.
"""
from __future__ import annotations

import math
import re
from dataclasses import replace
from typing import Any, Callable, Mapping

import torch

from ..errors import CheckpointError
from ..model import VARIANTS, PVTv2Config
from ..registry import FAMILIES

#: Formats :func:`pvtv2.convert` writes and :func:`detect_format`/readers report.
FORMATS = ("pvtv2", "official", "timm", "transformers")
#: Older names still accepted for ``to=`` (files written under them read the same).
FORMAT_ALIASES = {"ours": "pvtv2"}
# transformers' PVTv1 (``PvtForImageClassification``): ``pvt.encoder.patch_embeddings.{i}`` holds
# stage i's patch embedding, its position embeddings (and stage 4's class token);
# ``pvt.encoder.block.{i}.{j}`` the blocks; ``pvt.encoder.layer_norm`` the final norm.
_HF_PVT_KEY = re.compile(r"^(pvt\.)?encoder\.(patch_embeddings|block)\.\d+\.")


def canonical_format(name: str) -> str:
    """``name`` or the format it is an alias of; an unknown name raises :class:`CheckpointError`."""
    name = FORMAT_ALIASES.get(name, name)
    if name not in FORMATS:
        raise CheckpointError(f"unknown checkpoint format {name!r}; choose one of {', '.join(FORMATS)}")
    return name


def describe_keys(keys: list[str], limit: int = 5) -> str:
    """The first ``limit`` keys and how many more, for messages."""
    shown = ", ".join(keys[:limit])
    return shown + (f" (+{len(keys) - limit} more)" if len(keys) > limit else "")


def unwrap_state_dict(obj: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """Peel training-checkpoint wrappers (``model``, ``state_dict``, ``model_ema``...) and
    ``module.`` / ``_orig_mod.`` prefixes down to a flat ``name -> tensor`` dict."""
    for key in ("model", "state_dict", "model_state", "module"):
        if key in obj and isinstance(obj[key], Mapping):
            return unwrap_state_dict(obj[key])
    tensors = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if not tensors:
        raise CheckpointError(f"no tensors found; top-level keys are {describe_keys(sorted(map(str, obj)))}")
    out = {}
    for k, v in tensors.items():
        for prefix in ("module.", "_orig_mod."):
            while k.startswith(prefix):
                k = k[len(prefix):]
        out[k] = v
    return out


def detect_format(state_dict: Mapping[str, torch.Tensor]) -> str:
    """``"official"`` (= the pvtv2 layout), ``"timm"`` or ``"transformers"``, from the key names.
    (A file is ``"pvtv2"`` when its metadata carries our config; the keys alone cannot tell.)"""
    keys = list(state_dict)
    if any(re.match(r"^(pvt_v2\.)?encoder\.layers\.\d+\.", k) or _HF_PVT_KEY.match(k) for k in keys):
        return "transformers"
    if any(k.startswith("stages.") for k in keys) or "patch_embed.proj.weight" in state_dict:
        return "timm"
    if any(re.match(r"^(patch_embed\d|block\d|norm\d)\.", k) for k in keys):
        return "official"
    raise CheckpointError(f"unrecognised checkpoint layout; first keys: {describe_keys(keys)}")


# -- key maps: one function per foreign format, each way ------------------------------
def timm_to_pvtv2(sd: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out = {}
    for k, v in sd.items():
        k = re.sub(r"^patch_embed\.", "patch_embed1.", k)
        k = re.sub(r"^stages\.(\d+)\.downsample\.", lambda m: f"patch_embed{int(m[1]) + 1}.", k)
        k = re.sub(r"^stages\.(\d+)\.blocks\.", lambda m: f"block{int(m[1]) + 1}.", k)
        k = re.sub(r"^stages\.(\d+)\.norm\.", lambda m: f"norm{int(m[1]) + 1}.", k)
        k = k.replace(".mlp.dwconv.", ".mlp.dwconv.dwconv.")
        out[k] = v
    return out


def pvtv2_to_timm(sd: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out = {}
    for k, v in sd.items():
        k = k.replace(".mlp.dwconv.dwconv.", ".mlp.dwconv.")
        k = re.sub(r"^patch_embed1\.", "patch_embed.", k)
        k = re.sub(r"^patch_embed(\d)\.", lambda m: f"stages.{int(m[1]) - 1}.downsample.", k)
        k = re.sub(r"^block(\d)\.", lambda m: f"stages.{int(m[1]) - 1}.blocks.", k)
        k = re.sub(r"^norm(\d)\.", lambda m: f"stages.{int(m[1]) - 1}.norm.", k)
        out[k] = v
    return out


_HF_BLOCK_NAMES = [  # (transformers, pvtv2) inside a block; key/value are handled apart
    ("layer_norm_1", "norm1"), ("layer_norm_2", "norm2"), ("attention.query", "attn.q"),
    ("attention.proj", "attn.proj"), ("attention.spatial_reduction", "attn.sr"),
    ("attention.layer_norm", "attn.norm"), ("mlp.dense1", "mlp.fc1"), ("mlp.dense2", "mlp.fc2"),
    ("mlp.dwconv.dwconv", "mlp.dwconv.dwconv"),
]


def _stack_kv(pending_kv: dict[str, dict[str, torch.Tensor]], out: dict[str, torch.Tensor]) -> None:
    """transformers' separate key/value projections -> the official ``kv``, keys then values."""
    for key, parts in pending_kv.items():
        if set(parts) != {"key", "value"}:
            raise CheckpointError(f"transformers checkpoint has a {'/'.join(parts)} projection without its pair at {key}")
        out[key] = torch.cat([parts["key"], parts["value"]], dim=0)


def transformers_to_pvtv2(sd: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """transformers' ``PvtV2ForImageClassification`` (or, by its keys, ``PvtForImageClassification``)
    -> the pvtv2 layout."""
    if any(_HF_PVT_KEY.match(k) for k in sd):
        return transformers_pvt_to_pvtv2(sd)
    out: dict[str, torch.Tensor] = {}
    pending_kv: dict[str, dict[str, torch.Tensor]] = {}
    for k, v in sd.items():
        k = re.sub(r"^pvt_v2\.", "", k)
        if k.startswith("classifier."):
            out["head." + k[len("classifier."):]] = v
            continue
        m = re.match(r"^encoder\.layers\.(\d+)\.(.*)$", k)
        if not m:
            out[k] = v  # left for the caller to report as unexpected
            continue
        stage, rest = int(m[1]) + 1, m[2]
        if rest.startswith("patch_embedding."):
            rest = rest[len("patch_embedding."):].replace("layer_norm", "norm")
            out[f"patch_embed{stage}.{rest}"] = v
        elif rest.startswith("layer_norm."):
            out[f"norm{stage}.{rest[len('layer_norm.'):]}"] = v
        else:
            b = re.match(r"^blocks\.(\d+)\.(.*)\.(weight|bias)$", rest)
            if not b:
                out[k] = v
                continue
            prefix, name, kind = f"block{stage}.{b[1]}", b[2], b[3]
            if name in ("attention.key", "attention.value"):
                pending_kv.setdefault(f"{prefix}.attn.kv.{kind}", {})[name.split(".")[1]] = v
                continue
            mapped = dict(_HF_BLOCK_NAMES).get(name)
            out[f"{prefix}.{mapped}.{kind}" if mapped else k] = v
    _stack_kv(pending_kv, out)
    return out


def pvtv2_to_transformers(sd: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The pvtv2 layout -> transformers' ``PvtV2ForImageClassification`` keys, or, for a
    PVTv1 state dict (one with position embeddings), ``PvtForImageClassification`` keys."""
    if "pos_embed1" in sd:
        return pvtv2_to_transformers_pvt(sd)
    back = {o: t for t, o in _HF_BLOCK_NAMES}
    out = {}
    for k, v in sd.items():
        if k.startswith("head."):
            out["classifier." + k[len("head."):]] = v
            continue
        m = re.match(r"^(patch_embed|norm|block)(\d)\.(.*)$", k)
        if not m:
            out[k] = v
            continue
        kind, stage, rest = m[1], int(m[2]) - 1, m[3]
        base = f"pvt_v2.encoder.layers.{stage}"
        if kind == "patch_embed":
            out[f"{base}.patch_embedding.{rest.replace('norm', 'layer_norm')}"] = v
        elif kind == "norm":
            out[f"{base}.layer_norm.{rest}"] = v
        else:
            b = re.match(r"^(\d+)\.(.*)\.(weight|bias)$", rest)
            idx, name, p = b[1], b[2], b[3]
            if name == "attn.kv":
                key, value = v.chunk(2, dim=0)
                out[f"{base}.blocks.{idx}.attention.key.{p}"] = key.clone()
                out[f"{base}.blocks.{idx}.attention.value.{p}"] = value.clone()
            else:
                out[f"{base}.blocks.{idx}.{back[name]}.{p}"] = v
    return out


_HF_PVT_BLOCK_NAMES = [  # (transformers, pvtv2) inside a block; key/value are handled apart
    ("layer_norm_1", "norm1"), ("layer_norm_2", "norm2"), ("attention.self.query", "attn.q"),
    ("attention.output.dense", "attn.proj"), ("attention.self.sequence_reduction", "attn.sr"),
    ("attention.self.layer_norm", "attn.norm"), ("mlp.dense1", "mlp.fc1"), ("mlp.dense2", "mlp.fc2"),
]


def transformers_pvt_to_pvtv2(sd: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """transformers' ``PvtForImageClassification`` (PVTv1) -> the pvtv2 layout (the official
    ``classification/pvt.py`` names)."""
    out: dict[str, torch.Tensor] = {}
    pending_kv: dict[str, dict[str, torch.Tensor]] = {}
    for k, v in sd.items():
        k = re.sub(r"^pvt\.", "", k)
        if k.startswith("classifier."):
            out["head." + k[len("classifier."):]] = v
        elif k.startswith("encoder.layer_norm."):
            out["norm." + k[len("encoder.layer_norm."):]] = v
        elif m := re.match(r"^encoder\.patch_embeddings\.(\d+)\.(.*)$", k):
            stage, rest = int(m[1]) + 1, m[2]
            if rest == "cls_token":
                out["cls_token"] = v
            elif rest == "position_embeddings":
                out[f"pos_embed{stage}"] = v
            elif rest.startswith(("projection.", "layer_norm.")):
                part = "proj" if rest.startswith("projection.") else "norm"
                out[f"patch_embed{stage}.{part}.{rest.split('.', 1)[1]}"] = v
            else:
                out[k] = v  # left for the caller to report as unexpected
        elif b := re.match(r"^encoder\.block\.(\d+)\.(\d+)\.(.*)\.(weight|bias)$", k):
            prefix, name, kind = f"block{int(b[1]) + 1}.{b[2]}", b[3], b[4]
            if name in ("attention.self.key", "attention.self.value"):
                pending_kv.setdefault(f"{prefix}.attn.kv.{kind}", {})[name.rsplit(".", 1)[1]] = v
                continue
            mapped = dict(_HF_PVT_BLOCK_NAMES).get(name)
            out[f"{prefix}.{mapped}.{kind}" if mapped else k] = v
        else:
            out[k] = v
    _stack_kv(pending_kv, out)
    return out


def pvtv2_to_transformers_pvt(sd: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The pvtv2 layout of a PVTv1 model -> transformers' ``PvtForImageClassification`` keys."""
    back = {o: t for t, o in _HF_PVT_BLOCK_NAMES}
    out = {}
    for k, v in sd.items():
        if k.startswith("head."):
            out["classifier." + k[len("head."):]] = v
        elif k.startswith("norm."):
            out["pvt.encoder.layer_norm." + k[len("norm."):]] = v
        elif k == "cls_token":
            out["pvt.encoder.patch_embeddings.3.cls_token"] = v
        elif m := re.match(r"^pos_embed(\d)$", k):
            out[f"pvt.encoder.patch_embeddings.{int(m[1]) - 1}.position_embeddings"] = v
        elif m := re.match(r"^patch_embed(\d)\.(proj|norm)\.(.*)$", k):
            part = "projection" if m[2] == "proj" else "layer_norm"
            out[f"pvt.encoder.patch_embeddings.{int(m[1]) - 1}.{part}.{m[3]}"] = v
        elif b := re.match(r"^block(\d)\.(\d+)\.(.*)\.(weight|bias)$", k):
            base, name, p = f"pvt.encoder.block.{int(b[1]) - 1}.{b[2]}", b[3], b[4]
            if name == "attn.kv":
                key, value = v.chunk(2, dim=0)
                out[f"{base}.attention.self.key.{p}"] = key.clone()
                out[f"{base}.attention.self.value.{p}"] = value.clone()
            else:
                out[f"{base}.{back[name]}.{p}"] = v
        else:
            out[k] = v
    return out


_Map = Callable[[Mapping[str, torch.Tensor]], dict[str, torch.Tensor]]
#: Detected format -> the map into the pvtv2 layout, and the pvtv2 layout -> each format.
TO_PVTV2: dict[str, _Map] = {"official": dict, "pvtv2": dict, "timm": timm_to_pvtv2, "transformers": transformers_to_pvtv2}
FROM_PVTV2: dict[str, _Map] = {"official": dict, "pvtv2": dict, "timm": pvtv2_to_timm, "transformers": pvtv2_to_transformers}


# -- configs ------------------------------------------------------------------------
#: transformers' ``model_type`` of each family's classifier.
TRANSFORMERS_MODEL_TYPES = {"pvt_v2": "pvt_v2", "pvt_v1": "pvt"}


def family_of(config: PVTv2Config) -> str | None:
    """The family (a key of :data:`pvtv2.registry.FAMILIES`) whose design switches ``config``
    has; ``None`` for ablation mixtures (e.g. overlapping patches with position embeddings)."""
    for family, switches in FAMILIES.items():
        if all(getattr(config, k) == v for k, v in switches.items()):
            return family
    return None


def transformers_config_to_pvtv2(cfg: Mapping[str, Any], num_classes: int) -> PVTv2Config:
    """A transformers ``PvtV2Config`` or ``PvtConfig`` (PVTv1) dict -> :class:`PVTv2Config`
    (raising on what we cannot build).

    ``num_classes`` comes from the weights (the classifier's rows, 0 without one): a saved
    ``PvtV2Model`` keeps transformers' default two labels in its config but has no classifier."""
    model_type = cfg.get("model_type")
    if model_type == "pvt":
        return _transformers_pvt_config(cfg, num_classes)
    if model_type not in (None, "pvt_v2"):
        raise CheckpointError(f"config.json is for model_type {model_type!r}, not 'pvt_v2' or 'pvt'")
    if list(cfg.get("patch_sizes", [7, 3, 3, 3])) != [7, 3, 3, 3] or list(cfg.get("strides", [4, 2, 2, 2])) != [4, 2, 2, 2]:
        raise CheckpointError(f"unsupported patch_sizes/strides {cfg.get('patch_sizes')}/{cfg.get('strides')}; PVTv2 uses 7,3,3,3 / 4,2,2,2")
    if cfg.get("hidden_act", "gelu") != "gelu":
        raise CheckpointError(f"unsupported hidden_act {cfg.get('hidden_act')!r}; PVTv2 uses gelu")
    eps = float(cfg.get("layer_norm_eps", 1e-6))
    attention = "linear" if cfg.get("linear_attention") else "sra"
    config = PVTv2Config(
        embed_dims=tuple(cfg.get("hidden_sizes", (32, 64, 160, 256))),
        depths=tuple(cfg.get("depths", (2, 2, 2, 2))),
        num_heads=tuple(cfg.get("num_attention_heads", (1, 2, 5, 8))),
        mlp_ratios=tuple(cfg.get("mlp_ratios", (8, 8, 4, 4))),
        sr_ratios=tuple(cfg.get("sr_ratios", (8, 4, 2, 1))),
        attention=attention,
        qkv_bias=bool(cfg.get("qkv_bias", True)),
        in_chans=int(cfg.get("num_channels", 3)),
        num_classes=num_classes,
        norm_eps=eps,
        embed_norm_eps=eps,
    )
    return replace(config, name=match_variant(config) or "")


def _transformers_pvt_config(cfg: Mapping[str, Any], num_classes: int) -> PVTv2Config:
    """transformers' ``PvtConfig`` (``model_type: pvt``) -> a PVTv1 :class:`PVTv2Config`."""
    for key, official in (("patch_sizes", [4, 2, 2, 2]), ("strides", [4, 2, 2, 2])):
        if list(cfg.get(key, official)) != official:
            raise CheckpointError(f"unsupported {key} {cfg.get(key)}; PVTv1 uses {','.join(map(str, official))}")
    if int(cfg.get("num_encoder_blocks", 4)) != 4:
        raise CheckpointError(f"unsupported num_encoder_blocks {cfg.get('num_encoder_blocks')}; PVTv1 has 4 stages")
    if cfg.get("hidden_act", "gelu") != "gelu":
        raise CheckpointError(f"unsupported hidden_act {cfg.get('hidden_act')!r}; PVTv1 uses gelu")
    size = cfg.get("image_size", 224)
    if isinstance(size, (list, tuple)):
        if len(set(size)) != 1:
            raise CheckpointError(f"unsupported non-square image_size {list(size)}; the position embeddings are "
                                  f"stored on a square grid here")
        size = size[0]
    eps = float(cfg.get("layer_norm_eps", 1e-6))
    try:
        config = PVTv2Config(
            **FAMILIES["pvt_v1"],
            embed_dims=tuple(cfg.get("hidden_sizes", (64, 128, 320, 512))),
            depths=tuple(cfg.get("depths", (2, 2, 2, 2))),
            num_heads=tuple(cfg.get("num_attention_heads", (1, 2, 5, 8))),
            mlp_ratios=tuple(cfg.get("mlp_ratios", (8, 8, 4, 4))),
            sr_ratios=tuple(cfg.get("sequence_reduction_ratios", (8, 4, 2, 1))),
            attention="sra",
            qkv_bias=bool(cfg.get("qkv_bias", True)),
            in_chans=int(cfg.get("num_channels", 3)),
            num_classes=num_classes,
            img_size=int(size),
            norm_eps=eps,
            embed_norm_eps=eps,
        )
    except ValueError as e:
        raise CheckpointError(f"config.json describes a PVTv1 that cannot be built: {e}") from None
    return replace(config, name=match_variant(config) or "")


def pvtv2_config_to_transformers(config: PVTv2Config, class_names: list[str] | None = None) -> dict[str, Any]:
    """The transformers ``config.json`` of a standard PVTv2 (``PvtV2ForImageClassification``, and
    ``PvtV2Backbone`` through ``AutoBackbone``) or PVTv1 (``PvtForImageClassification``; transformers
    has no PVTv1 backbone) model; ablation mixtures have no transformers class."""
    family = family_of(config)
    if family is None or config.attention == "full":
        raise CheckpointError("transformers has no class for ablation mixtures; only standard PVTv2 and PVTv1 "
                              "models convert (overlapping patches + conv FFN, or PVTv1's plain patches + position "
                              "embeddings + class token)")
    if family == "pvt_v1" and config.attention != "sra":
        raise CheckpointError(f"transformers' PVTv1 has spatial-reduction attention only, not {config.attention!r}")
    labels = class_names or [f"LABEL_{i}" for i in range(config.num_classes)]
    common = {
        "hidden_sizes": list(config.embed_dims),
        "depths": list(config.depths),
        "num_attention_heads": list(config.num_heads),
        "mlp_ratios": [int(r) if float(r).is_integer() else r for r in config.mlp_ratios],
        "qkv_bias": config.qkv_bias,
        "num_channels": config.in_chans,
        "num_encoder_blocks": 4,
        "hidden_act": "gelu",
        "layer_norm_eps": config.norm_eps,
        "drop_path_rate": config.drop_path_rate,
        "id2label": {str(i): n for i, n in enumerate(labels)},
        "label2id": {n: i for i, n in enumerate(labels)},
    }
    if family == "pvt_v1":
        return {"architectures": ["PvtForImageClassification"], "model_type": "pvt", **common,
                "sequence_reduction_ratios": list(config.sr_ratios), "patch_sizes": [4, 2, 2, 2],
                "strides": [4, 2, 2, 2], "image_size": config.img_size}
    # The backbone fields make the same folder load as ``AutoBackbone`` -> ``PvtV2Backbone``,
    # returning the maps of our ``out_indices`` (transformers' indices are 0-based into
    # ``stage_names``, as ours are into the stages); without them it returns stage 4 only.
    stages = [f"stage{i}" for i in range(1, 5)]
    return {"architectures": ["PvtV2ForImageClassification"], "model_type": "pvt_v2", **common,
            "sr_ratios": list(config.sr_ratios), "patch_sizes": [7, 3, 3, 3], "strides": [4, 2, 2, 2],
            "linear_attention": config.attention == "linear", "stage_names": stages,
            "out_features": [stages[i] for i in config.out_indices], "out_indices": list(config.out_indices)}


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, (tuple, list)) or isinstance(b, (tuple, list)):
        return tuple(map(float, a)) == tuple(map(float, b))
    return a == b


def match_variant(config: PVTv2Config) -> str | None:
    """The published variant whose architecture (sizes and family switches, e.g. ``pvt_small``
    vs ``pvt_v2_b2``, which share widths and depths) ``config`` has, if any."""
    for name, spec in VARIANTS.items():
        if all(_same(getattr(config, k), v) for k, v in spec.items()):
            return name
    return None


def match_variant_name(embed_dims: tuple, depths: tuple, attention: str, family: str = "pvt_v2") -> str | None:
    """The published variant of ``family`` with these widths, depths and attention, if any."""
    for name, spec in VARIANTS.items():
        if _same(spec["embed_dims"], embed_dims) and _same(spec["depths"], depths) and spec["attention"] == attention \
                and all(spec[k] == v for k, v in FAMILIES[family].items()):
            return name
    return None


def infer_config(sd: Mapping[str, torch.Tensor]) -> PVTv2Config | None:
    """Guess the architecture of a pvtv2-layout state dict from its shapes (None if not PVTv2-like):
    sizes, attention, and the design switches (patch kernel, conv FFN, position embeddings
    and their grid, class token, stage norms) that tell PVTv1 from PVTv2."""
    try:
        dims = tuple(int(sd[f"patch_embed{i}.proj.weight"].shape[0]) for i in range(1, 5))
        depths = tuple(len({int(m[1]) for k in sd if (m := re.match(rf"^block{i}\.(\d+)\.", k))}) for i in range(1, 5))
        sr = sd.get("block1.0.attn.sr.weight")
        attention = "linear" if sr is not None and sr.shape[-1] == 1 else ("sra" if sr is not None else "full")
        mlp = tuple(sd[f"block{i}.0.mlp.fc1.weight"].shape[0] / dims[i - 1] for i in range(1, 5))
        kernel = int(sd["patch_embed1.proj.weight"].shape[-1])
        head = sd.get("head.weight")
    except (KeyError, IndexError):
        return None
    pos, pos4 = sd.get("pos_embed1"), sd.get("pos_embed4")
    # A features-only PVTv1 (the official detection backbone) has no class token but keeps its row
    # in stage 4's position embedding: 7 x 7 + 1 rows.
    cls_row = pos is not None and pos4 is not None and pos4.shape[1] == pos.shape[1] // 64 + 1
    switches = dict(patch_embed="overlap" if kernel == 7 else "plain", conv_ffn="block1.0.mlp.dwconv.dwconv.weight" in sd,
                    pos_embed=pos is not None, cls_token="cls_token" in sd or cls_row, stage_norms="norm1.weight" in sd)
    extra = {}
    if pos is not None:
        side = math.isqrt(int(pos.shape[1]))
        if side * side != pos.shape[1]:
            return None
        extra["img_size"] = 4 * side
    try:
        guess = PVTv2Config(embed_dims=dims, depths=depths, mlp_ratios=mlp, attention=attention, **switches, **extra)
    except ValueError:
        return None
    name = match_variant(guess)
    base = dict(VARIANTS[name]) if name else dict(embed_dims=dims, depths=depths, **switches)
    base.update(mlp_ratios=mlp, attention=attention, num_classes=int(head.shape[0]) if head is not None else 0, **extra)
    try:
        return PVTv2Config(name=name or "", **base)
    except ValueError:
        return None
