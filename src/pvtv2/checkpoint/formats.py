"""Checkpoint formats: detecting them from key names, one key map per foreign format each
way, and the transformers config conversions.

The ``pvtv2`` layout is the official one (whai362/PVT ``classification/pvt_v2.py``), so
``official`` files need no renaming; ``pvtv2`` files add the model config as metadata.
"""
from __future__ import annotations

import re
from typing import Any, Callable, Mapping

import torch

from ..errors import CheckpointError
from ..model import VARIANTS, PVTv2Config

#: Formats :func:`pvtv2.convert` writes and :func:`detect_format`/readers report.
FORMATS = ("pvtv2", "official", "timm", "transformers")
#: Older names still accepted for ``to=`` (files written under them read the same).
FORMAT_ALIASES = {"ours": "pvtv2"}


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
    if any(re.match(r"^(pvt_v2\.)?encoder\.layers\.\d+\.", k) for k in keys):
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


def transformers_to_pvtv2(sd: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
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
    for key, parts in pending_kv.items():
        if set(parts) != {"key", "value"}:
            raise CheckpointError(f"transformers checkpoint has a {'/'.join(parts)} projection without its pair at {key}")
        out[key] = torch.cat([parts["key"], parts["value"]], dim=0)  # the official kv stacks K then V
    return out


def pvtv2_to_transformers(sd: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
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


_Map = Callable[[Mapping[str, torch.Tensor]], dict[str, torch.Tensor]]
#: Detected format -> the map into the pvtv2 layout, and the pvtv2 layout -> each format.
TO_PVTV2: dict[str, _Map] = {"official": dict, "pvtv2": dict, "timm": timm_to_pvtv2, "transformers": transformers_to_pvtv2}
FROM_PVTV2: dict[str, _Map] = {"official": dict, "pvtv2": dict, "timm": pvtv2_to_timm, "transformers": pvtv2_to_transformers}


# -- configs ------------------------------------------------------------------------
def transformers_config_to_pvtv2(cfg: Mapping[str, Any], num_classes: int) -> PVTv2Config:
    """A transformers ``PvtV2Config`` dict -> :class:`PVTv2Config` (raising on what we cannot build).

    ``num_classes`` comes from the weights (the classifier's rows, 0 without one): a saved
    ``PvtV2Model`` keeps transformers' default two labels in its config but has no classifier."""
    if cfg.get("model_type") not in (None, "pvt_v2"):
        raise CheckpointError(f"config.json is for model_type {cfg.get('model_type')!r}, not 'pvt_v2'")
    if list(cfg.get("patch_sizes", [7, 3, 3, 3])) != [7, 3, 3, 3] or list(cfg.get("strides", [4, 2, 2, 2])) != [4, 2, 2, 2]:
        raise CheckpointError(f"unsupported patch_sizes/strides {cfg.get('patch_sizes')}/{cfg.get('strides')}; PVTv2 uses 7,3,3,3 / 4,2,2,2")
    if cfg.get("hidden_act", "gelu") != "gelu":
        raise CheckpointError(f"unsupported hidden_act {cfg.get('hidden_act')!r}; PVTv2 uses gelu")
    eps = float(cfg.get("layer_norm_eps", 1e-6))
    attention = "linear" if cfg.get("linear_attention") else "sra"
    return PVTv2Config(
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
        name=match_variant_name(tuple(cfg.get("hidden_sizes", ())), tuple(cfg.get("depths", ())), attention) or "",
    )


def pvtv2_config_to_transformers(config: PVTv2Config, class_names: list[str] | None = None) -> dict[str, Any]:
    if config.patch_embed != "overlap" or not config.conv_ffn or config.attention == "full":
        raise CheckpointError("transformers' PvtV2 has no ablation switches; only standard PVTv2 models convert")
    labels = class_names or [f"LABEL_{i}" for i in range(config.num_classes)]
    return {
        "architectures": ["PvtV2ForImageClassification"],
        "model_type": "pvt_v2",
        "hidden_sizes": list(config.embed_dims),
        "depths": list(config.depths),
        "num_attention_heads": list(config.num_heads),
        "mlp_ratios": [int(r) if float(r).is_integer() else r for r in config.mlp_ratios],
        "sr_ratios": list(config.sr_ratios),
        "patch_sizes": [7, 3, 3, 3],
        "strides": [4, 2, 2, 2],
        "linear_attention": config.attention == "linear",
        "qkv_bias": config.qkv_bias,
        "num_channels": config.in_chans,
        "num_encoder_blocks": 4,
        "hidden_act": "gelu",
        "layer_norm_eps": config.norm_eps,
        "drop_path_rate": config.drop_path_rate,
        "id2label": {str(i): n for i, n in enumerate(labels)},
        "label2id": {n: i for i, n in enumerate(labels)},
    }


def match_variant_name(embed_dims: tuple, depths: tuple, attention: str) -> str | None:
    """The published variant with these widths, depths and attention, if any."""
    for name, spec in VARIANTS.items():
        if tuple(spec["embed_dims"]) == tuple(embed_dims) and tuple(spec["depths"]) == tuple(depths) \
                and spec["attention"] == attention:
            return name
    return None


def infer_config(sd: Mapping[str, torch.Tensor]) -> PVTv2Config | None:
    """Guess the architecture of a pvtv2-layout state dict from its shapes (None if not PVTv2-like)."""
    try:
        dims = tuple(int(sd[f"patch_embed{i}.proj.weight"].shape[0]) for i in range(1, 5))
        depths = tuple(len({int(m[1]) for k in sd if (m := re.match(rf"^block{i}\.(\d+)\.", k))}) for i in range(1, 5))
        sr = sd.get("block1.0.attn.sr.weight")
        attention = "linear" if sr is not None and sr.shape[-1] == 1 else ("sra" if sr is not None else "full")
        mlp = tuple(sd[f"block{i}.0.mlp.fc1.weight"].shape[0] / dims[i - 1] for i in range(1, 5))
        head = sd.get("head.weight")
    except (KeyError, IndexError):
        return None
    name = match_variant_name(dims, depths, attention)
    base = dict(VARIANTS[name]) if name else dict(embed_dims=dims, depths=depths)
    base.update(mlp_ratios=mlp, attention=attention, num_classes=int(head.shape[0]) if head is not None else 0)
    try:
        return PVTv2Config(name=name or "", **base)
    except ValueError:
        return None
