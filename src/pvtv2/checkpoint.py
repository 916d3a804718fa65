"""Checkpoint formats: detection, key mapping, loading, saving and conversion.

Formats (all map to/from our layout, which is the official one):

* ``official`` -- whai362/PVT release files: ``patch_embed1.proj.weight``, ``block1.0.attn.kv.weight``...
* ``ours``     -- the official keys in safetensors, with the model config in the file's
  metadata and in a ``config.json`` beside it (``library: pvtv2``).
* ``timm``     -- ``patch_embed.*``, ``stages.{i}.downsample.*``, ``stages.{i}.blocks.{j}.*``, ``mlp.dwconv.*``.
* ``transformers`` -- ``pvt_v2.encoder.layers.{i}.*`` with separate ``key``/``value`` projections
  and a ``config.json`` of ``model_type: pvt_v2``.

Everything is read with ``torch.load(weights_only=True)`` or safetensors: a checkpoint
can never run code.
"""
from __future__ import annotations

import json
import os
import pickle
import re
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import nn

from .errors import CheckpointError
from .fileio import LIBRARY_TAG, atomic_write
from .model import VARIANTS, PVTv2Config, PyramidVisionTransformerV2, variant_config

FORMATS = ("ours", "official", "timm", "transformers")
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin", "model.pth", "model.pt")
CONFIG_FILE = "config.json"

#: Where ``pretrained=True`` downloads each variant from (timm's Hugging Face mirror of
#: the official ImageNet-1K weights). Any other hub id may be given explicitly.
HUB_IDS = {name: f"timm/{name}.in1k" for name in VARIANTS}
#: The official release files (github.com/whai362/PVT releases, tag v2).
OFFICIAL_URLS = {name: f"https://github.com/whai362/PVT/releases/download/v2/{name}.pth" for name in VARIANTS}


@dataclass
class LoadReport:
    """What :func:`load_checkpoint` did."""

    source: str
    format: str
    loaded: int
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    mismatched: list[str] = field(default_factory=list)
    head_reinitialized: bool = False
    notes: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        lines = [f"loaded {self.loaded} tensors from {self.source} ({self.format} format)"]
        lines += [f"  {n}" for n in self.notes]
        return "\n".join(lines)


# -- reading ------------------------------------------------------------------------
def _describe(keys: list[str], limit: int = 5) -> str:
    shown = ", ".join(keys[:limit])
    return shown + (f" (+{len(keys) - limit} more)" if len(keys) > limit else "")


def _read_file(path: Path) -> tuple[dict[str, Any], dict[str, str]]:
    """Read a weights file -> (object, safetensors metadata). Never unpickles code."""
    if not path.exists():
        raise CheckpointError(f"{path}: no such file")
    if path.is_dir():
        raise CheckpointError(f"{path}: is a folder without {CONFIG_FILE} and weights ({', '.join(WEIGHT_FILES)})")
    size = path.stat().st_size
    if size == 0:
        raise CheckpointError(f"{path}: the file is empty (0 bytes); the download or save was probably interrupted")
    with open(path, "rb") as fh:
        head = fh.read(8)
    if path.suffix == ".safetensors" or (len(head) == 8 and 0 < int.from_bytes(head, "little") < size and not head.startswith(b"PK")
                                         and not head.startswith(b"\x80")):
        try:
            from safetensors import safe_open

            with safe_open(str(path), framework="pt") as f:
                metadata = f.metadata() or {}
                return {k: f.get_tensor(k) for k in f.keys()}, metadata
        except Exception as e:  # safetensors raises its own error types
            if path.suffix == ".safetensors":
                raise CheckpointError(f"{path}: not a readable safetensors file ({e}); is it truncated or damaged?") from None
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise CheckpointError(
            f"{path}: refusing to load: the file contains pickled Python objects, not only tensors, and loading "
            f"it would run code ({str(e).splitlines()[-1] if str(e) else 'unsafe pickle'}). Re-save it as a plain state "
            f"dict or safetensors from a trusted environment."
        ) from None
    except Exception as e:  # torch raises many types for damaged or foreign files
        hint = "is it truncated or damaged?" if head.startswith(b"PK") or head.startswith(b"\x80") else \
            "it is neither a PyTorch checkpoint nor a safetensors file"
        raise CheckpointError(f"{path}: cannot read checkpoint: {hint} ({str(e).splitlines()[0][:200]})") from None
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"{path}: expected a dict of tensors, found {type(obj).__name__}")
    return dict(obj), {}


def unwrap_state_dict(obj: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """Peel training-checkpoint wrappers (``model``, ``state_dict``, ``model_ema``...) and
    ``module.`` / ``_orig_mod.`` prefixes down to a flat ``name -> tensor`` dict."""
    for key in ("model", "state_dict", "model_state", "module"):
        if key in obj and isinstance(obj[key], Mapping):
            return unwrap_state_dict(obj[key])
    tensors = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if not tensors:
        raise CheckpointError(f"no tensors found; top-level keys are {_describe(sorted(map(str, obj)))}")
    out = {}
    for k, v in tensors.items():
        for prefix in ("module.", "_orig_mod."):
            while k.startswith(prefix):
                k = k[len(prefix):]
        out[k] = v
    return out


def detect_format(state_dict: Mapping[str, torch.Tensor]) -> str:
    """``"official"`` (= our layout), ``"timm"`` or ``"transformers"``, from the key names."""
    keys = list(state_dict)
    if any(re.match(r"^(pvt_v2\.)?encoder\.layers\.\d+\.", k) for k in keys):
        return "transformers"
    if any(k.startswith("stages.") for k in keys) or "patch_embed.proj.weight" in state_dict:
        return "timm"
    if any(re.match(r"^(patch_embed\d|block\d|norm\d)\.", k) for k in keys):
        return "official"
    raise CheckpointError(f"unrecognised checkpoint layout; first keys: {_describe(keys)}")


# -- key mapping: one function per foreign format, each way ---------------------------
def timm_to_ours(sd: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out = {}
    for k, v in sd.items():
        k = re.sub(r"^patch_embed\.", "patch_embed1.", k)
        k = re.sub(r"^stages\.(\d+)\.downsample\.", lambda m: f"patch_embed{int(m[1]) + 1}.", k)
        k = re.sub(r"^stages\.(\d+)\.blocks\.", lambda m: f"block{int(m[1]) + 1}.", k)
        k = re.sub(r"^stages\.(\d+)\.norm\.", lambda m: f"norm{int(m[1]) + 1}.", k)
        k = k.replace(".mlp.dwconv.", ".mlp.dwconv.dwconv.")
        out[k] = v
    return out


def ours_to_timm(sd: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out = {}
    for k, v in sd.items():
        k = k.replace(".mlp.dwconv.dwconv.", ".mlp.dwconv.")
        k = re.sub(r"^patch_embed1\.", "patch_embed.", k)
        k = re.sub(r"^patch_embed(\d)\.", lambda m: f"stages.{int(m[1]) - 1}.downsample.", k)
        k = re.sub(r"^block(\d)\.", lambda m: f"stages.{int(m[1]) - 1}.blocks.", k)
        k = re.sub(r"^norm(\d)\.", lambda m: f"stages.{int(m[1]) - 1}.norm.", k)
        out[k] = v
    return out


_HF_BLOCK_NAMES = [  # (transformers, ours) inside a block; key/value are handled apart
    ("layer_norm_1", "norm1"), ("layer_norm_2", "norm2"), ("attention.query", "attn.q"),
    ("attention.proj", "attn.proj"), ("attention.spatial_reduction", "attn.sr"),
    ("attention.layer_norm", "attn.norm"), ("mlp.dense1", "mlp.fc1"), ("mlp.dense2", "mlp.fc2"),
    ("mlp.dwconv.dwconv", "mlp.dwconv.dwconv"),
]


def transformers_to_ours(sd: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
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
        out[key] = torch.cat([parts["key"], parts["value"]], dim=0)  # ours stacks K then V
    return out


def ours_to_transformers(sd: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
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


_TO_OURS = {"official": dict, "ours": dict, "timm": timm_to_ours, "transformers": transformers_to_ours}
_FROM_OURS = {"official": dict, "ours": dict, "timm": ours_to_timm, "transformers": ours_to_transformers}


# -- configs ------------------------------------------------------------------------
def transformers_config_to_ours(cfg: Mapping[str, Any]) -> PVTv2Config:
    """A transformers ``PvtV2Config`` dict -> :class:`PVTv2Config` (raising on what we cannot build)."""
    if cfg.get("model_type") not in (None, "pvt_v2"):
        raise CheckpointError(f"config.json is for model_type {cfg.get('model_type')!r}, not 'pvt_v2'")
    if list(cfg.get("patch_sizes", [7, 3, 3, 3])) != [7, 3, 3, 3] or list(cfg.get("strides", [4, 2, 2, 2])) != [4, 2, 2, 2]:
        raise CheckpointError(f"unsupported patch_sizes/strides {cfg.get('patch_sizes')}/{cfg.get('strides')}; PVTv2 uses 7,3,3,3 / 4,2,2,2")
    if cfg.get("hidden_act", "gelu") != "gelu":
        raise CheckpointError(f"unsupported hidden_act {cfg.get('hidden_act')!r}; PVTv2 uses gelu")
    eps = float(cfg.get("layer_norm_eps", 1e-6))
    id2label = cfg.get("id2label") or {}
    num_classes = int(cfg.get("num_labels", len(id2label) or 1000))
    if id2label:
        num_classes = len(id2label)
    return PVTv2Config(
        embed_dims=tuple(cfg.get("hidden_sizes", (32, 64, 160, 256))),
        depths=tuple(cfg.get("depths", (2, 2, 2, 2))),
        num_heads=tuple(cfg.get("num_attention_heads", (1, 2, 5, 8))),
        mlp_ratios=tuple(cfg.get("mlp_ratios", (8, 8, 4, 4))),
        sr_ratios=tuple(cfg.get("sr_ratios", (8, 4, 2, 1))),
        attention="linear" if cfg.get("linear_attention") else "sra",
        qkv_bias=bool(cfg.get("qkv_bias", True)),
        in_chans=int(cfg.get("num_channels", 3)),
        num_classes=num_classes,
        norm_eps=eps,
        embed_norm_eps=eps,
        name=match_variant_name(tuple(cfg.get("hidden_sizes", ())), tuple(cfg.get("depths", ())),
                                "linear" if cfg.get("linear_attention") else "sra") or "",
    )


def ours_config_to_transformers(config: PVTv2Config, class_names: list[str] | None = None) -> dict[str, Any]:
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
    for name, spec in VARIANTS.items():
        if tuple(spec["embed_dims"]) == tuple(embed_dims) and tuple(spec["depths"]) == tuple(depths) \
                and spec.get("attention", "sra") == attention:
            return name
    return None


def infer_config(sd: Mapping[str, torch.Tensor]) -> PVTv2Config | None:
    """Guess the architecture of an our-layout state dict from its shapes (None if not PVTv2-like)."""
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


# -- sources ------------------------------------------------------------------------
@dataclass
class Checkpoint:
    """A checkpoint read into memory: our-layout tensors plus whatever config came with it."""

    state_dict: dict[str, torch.Tensor]
    format: str
    source: str
    config: PVTv2Config | None = None
    class_names: list[str] | None = None
    extra: dict[str, Any] = field(default_factory=dict)  # e.g. input_size, crop_pct of a trained model


def _read_folder(path: Path) -> Checkpoint:
    cfg_path = path / CONFIG_FILE
    weights = next((path / w for w in WEIGHT_FILES if (path / w).exists()), None)
    if weights is None:
        raise CheckpointError(f"{path}: folder has no weights file (looked for {', '.join(WEIGHT_FILES)})")
    if not cfg_path.exists():
        raise CheckpointError(f"{path}: folder has weights but no {CONFIG_FILE}")
    try:
        cfg = json.loads(cfg_path.read_text())
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{cfg_path}: not valid JSON ({e})") from None
    ckpt = read_checkpoint(weights)
    ckpt.source = str(path)
    if cfg.get("library") == LIBRARY_TAG:
        ckpt.format = "ours"
        ckpt.config = PVTv2Config.from_dict(cfg["config"])
        ckpt.class_names = cfg.get("class_names")
    elif cfg.get("model_type") == "pvt_v2":
        ckpt.config = transformers_config_to_ours(cfg)
        head = ckpt.state_dict.get("head.weight")  # transformers may omit num_labels
        ckpt.config = replace(ckpt.config, num_classes=int(head.shape[0]) if head is not None else 0)
        labels = cfg.get("id2label") or {}
        ckpt.class_names = [labels[k] for k in sorted(labels, key=int)] if labels else None
    else:
        raise CheckpointError(f"{cfg_path}: neither a pvtv2 config nor a transformers pvt_v2 config")
    return ckpt


def read_checkpoint(source: str | os.PathLike | Mapping[str, Any]) -> Checkpoint:
    """Read a file, folder or in-memory dict into our layout, detecting its format."""
    if isinstance(source, Mapping):
        raw, meta, name = dict(source), {}, "<state dict>"
    else:
        path = Path(source).expanduser()
        if path.is_dir():
            return _read_folder(path)
        raw, meta = _read_file(path)
        name = str(path)
    try:
        sd = unwrap_state_dict(raw)
        fmt = detect_format(sd)
    except CheckpointError as e:
        raise CheckpointError(f"{name}: {e}") from None
    config = class_names = None
    if "pvtv2_config" in meta:
        fmt = "ours"
        config = PVTv2Config.from_dict(json.loads(meta["pvtv2_config"]))
        class_names = json.loads(meta.get("class_names", "null"))
    elif isinstance(raw.get("config"), Mapping) and raw.get("library") == LIBRARY_TAG:
        config = PVTv2Config.from_dict(dict(raw["config"]))  # our training checkpoints
        class_names = raw.get("class_names")
    extra = json.loads(meta["pvtv2_extra"]) if "pvtv2_extra" in meta else dict(raw.get("extra") or {})
    return Checkpoint(_TO_OURS[fmt](sd), fmt, name, config, class_names, extra)


def resolve_hub(source: str, *, filename: str | None = None) -> Path:
    """Download (or find in the cache) a hub repo ``org/name`` and return the local path."""
    try:
        from huggingface_hub import hf_hub_download, snapshot_download
    except ImportError as e:  # pragma: no cover - a declared dependency
        raise CheckpointError("huggingface_hub is needed to download checkpoints") from e
    try:
        if filename:
            return Path(hf_hub_download(source, filename))
        return Path(snapshot_download(source, allow_patterns=["*.json", "*.safetensors", "*.bin"]))
    except Exception as e:
        raise CheckpointError(
            f"could not download {source!r} from the Hugging Face Hub ({type(e).__name__}: {str(e).splitlines()[0][:200]}). "
            f"If this machine is offline, download the weights elsewhere (e.g. {OFFICIAL_URLS.get(source.split('/')[-1].split('.')[0], 'the release page')}) "
            f"and pass the local file or folder: create_model(name, pretrained='path/to/weights.pth')."
        ) from None


def _resolve(source: Any, name: str | None) -> Any:
    """Map ``pretrained=`` values to something :func:`read_checkpoint` takes."""
    if source is True:
        if name not in HUB_IDS:
            raise CheckpointError(f"no published weights known for {name!r}; pass a file, folder or hub id")
        return resolve_hub(HUB_IDS[name], filename="model.safetensors")
    if isinstance(source, (str, os.PathLike)):
        path = Path(source).expanduser()
        if path.exists():
            return path
        if isinstance(source, str) and re.fullmatch(r"[\w.-]+/[\w.-]+", source) and not source.startswith((".", "/")):
            return resolve_hub(source)
        raise CheckpointError(f"{source}: no such file or folder (and not a hub id of the form 'org/name')")
    return source


# -- loading ------------------------------------------------------------------------
def _variant_hint(ckpt_cfg: PVTv2Config | None, model: PyramidVisionTransformerV2) -> str:
    if ckpt_cfg is None:
        return ""
    theirs = ckpt_cfg.name or match_variant_name(ckpt_cfg.embed_dims, ckpt_cfg.depths, ckpt_cfg.attention)
    ours = model.config.name or match_variant_name(model.config.embed_dims, model.config.depths, model.config.attention)
    if theirs and theirs != ours:
        return f"; this looks like a {theirs} checkpoint; you built {ours or 'a custom PVTv2'}"
    return ""


def apply_state_dict(
    model: PyramidVisionTransformerV2, ckpt: Checkpoint, *, strict: bool = True
) -> LoadReport:
    """Load an our-layout :class:`Checkpoint` into ``model``; see :func:`load_checkpoint`."""
    sd = dict(ckpt.state_dict)
    own = model.state_dict()
    report = LoadReport(source=ckpt.source, format=ckpt.format, loaded=0)
    head_keys = [k for k in sd if k.startswith("head.")]
    if head_keys:
        if model.num_classes == 0:
            for k in head_keys:
                sd.pop(k)
            report.notes.append("checkpoint head dropped: the model has num_classes=0 (features only)")
        elif ("head.weight" in sd and "head.weight" in own and sd["head.weight"].shape[0] != own["head.weight"].shape[0]
              and sd["head.weight"].shape[1:] == own["head.weight"].shape[1:]):
            n_ckpt = sd["head.weight"].shape[0] if "head.weight" in sd else "?"
            for k in head_keys:
                sd.pop(k)
            report.head_reinitialized = True
            msg = (f"classifier head not loaded: checkpoint has {n_ckpt} classes, model has {model.num_classes}; "
                   f"the head stays newly initialised (fine-tuning)")
            report.notes.append(msg)
            warnings.warn(msg, stacklevel=3)
    elif any(k.startswith("head.") for k in own):
        report.head_reinitialized = True
        msg = f"checkpoint has no classifier head (backbone weights); the model's {model.num_classes}-class head stays newly initialised"
        report.notes.append(msg)
        warnings.warn(msg, stacklevel=3)
    report.missing = sorted(k for k in own if k not in sd and not (report.head_reinitialized and k.startswith("head.")))
    report.unexpected = sorted(k for k in sd if k not in own)
    report.mismatched = sorted(f"{k} (checkpoint {tuple(sd[k].shape)}, model {tuple(own[k].shape)})"
                               for k in sd if k in own and sd[k].shape != own[k].shape)
    if report.mismatched or (strict and (report.missing or report.unexpected)):
        parts = []
        for label, keys in (("missing", report.missing), ("unexpected", report.unexpected), ("shape-mismatched", report.mismatched)):
            if keys:
                parts.append(f"{len(keys)} {label}: {_describe(keys)}")
        raise CheckpointError(
            f"{ckpt.source} ({ckpt.format} format) does not fit the model: " + "; ".join(parts)
            + _variant_hint(ckpt.config or infer_config(ckpt.state_dict), model)
        )
    # transformers' PvtV2 uses one LayerNorm eps everywhere; match it so outputs agree exactly.
    if ckpt.format == "transformers" and ckpt.config is not None and (
        ckpt.config.norm_eps, ckpt.config.embed_norm_eps) != (model.config.norm_eps, model.config.embed_norm_eps):
        set_norm_eps(model, ckpt.config.norm_eps, ckpt.config.embed_norm_eps)
        report.notes.append(f"LayerNorm eps set to {ckpt.config.norm_eps} to match the checkpoint's config.json")
    loadable = {k: v for k, v in sd.items() if k in own}
    with torch.no_grad():
        for k, v in loadable.items():
            own[k].copy_(v.to(own[k].dtype))
    report.loaded = len(loadable)
    return report


def set_norm_eps(model: PyramidVisionTransformerV2, norm_eps: float, embed_norm_eps: float) -> None:
    """Change the LayerNorm eps in place (block/stage norms vs patch-embed/SRA norms)."""
    for name, m in model.named_modules():
        if isinstance(m, nn.LayerNorm):
            m.eps = embed_norm_eps if name.startswith("patch_embed") or name.endswith("attn.norm") else norm_eps
    model.config = replace(model.config, norm_eps=norm_eps, embed_norm_eps=embed_norm_eps)


def load_checkpoint(
    model: PyramidVisionTransformerV2, source: str | os.PathLike | Mapping[str, Any], *, strict: bool = True
) -> LoadReport:
    """Load weights of any PVTv2 format into ``model`` and report what happened.

    ``source``: a ``.pth``/``.pt``/``.bin``/``.safetensors`` file, a Hugging Face-style
    folder (``config.json`` + weights), a hub id (``org/name``) or an in-memory state dict;
    training checkpoints wrapped under ``model``/``state_dict``/``module.`` are unwrapped.
    A classifier head of a different size is skipped with a warning (fine-tuning);
    everything else must match unless ``strict=False``. Raises :class:`CheckpointError`.
    """
    ckpt = read_checkpoint(_resolve(source, model.config.name))
    return apply_state_dict(model, ckpt, strict=strict)


def _same_architecture(a: PVTv2Config, b: PVTv2Config) -> bool:
    fields_ = ("embed_dims", "depths", "num_heads", "mlp_ratios", "sr_ratios", "attention", "patch_embed", "conv_ffn", "qkv_bias", "in_chans")
    return all(tuple(map(float, getattr(a, f))) == tuple(map(float, getattr(b, f))) if isinstance(getattr(a, f), tuple)
               else getattr(a, f) == getattr(b, f) for f in fields_)


def build_pretrained(name: str | None, pretrained: Any, *, num_classes: int | None = None,
                     drop_path_rate: float = 0.0, **overrides: Any) -> PyramidVisionTransformerV2:
    """``create_model(name, pretrained=...)``: build the model, checking a config that
    comes with the weights against the requested variant, and load.

    ``num_classes=None`` keeps the checkpoint's own number of classes (1000 if unknown).
    """
    ckpt = read_checkpoint(_resolve(pretrained, name))
    ckpt_config = ckpt.config or infer_config(ckpt.state_dict)
    if num_classes is None:
        num_classes = ckpt_config.num_classes if ckpt_config is not None else 1000
    if name is None:
        if ckpt.config is None and (ckpt_config is None or not ckpt_config.name):
            raise CheckpointError(f"{ckpt.source}: carries no config; name the variant: create_model('pvt_v2_b2', pretrained=...)")
        config = replace(ckpt_config, num_classes=num_classes, drop_path_rate=drop_path_rate, **overrides)
    else:
        config = variant_config(name, num_classes=num_classes, drop_path_rate=drop_path_rate, **overrides)
        if ckpt.config is not None:
            if not _same_architecture(ckpt.config, config):
                theirs = ckpt.config.name or "a different PVTv2"
                raise CheckpointError(f"{ckpt.source}: its config describes {theirs}, but you asked for {name}")
            config = replace(config, norm_eps=ckpt.config.norm_eps, embed_norm_eps=ckpt.config.embed_norm_eps)
    model = PyramidVisionTransformerV2(config)
    report = apply_state_dict(model, ckpt)
    names = ckpt.class_names
    model.class_names = list(names) if names and len(names) == model.num_classes else None
    model.load_report = report
    return model


# -- saving and converting --------------------------------------------------------------
def _contiguous(sd: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().contiguous() for k, v in sd.items()}


def save_file(model: PyramidVisionTransformerV2, path: str | os.PathLike, *, class_names: list[str] | None = None,
              extra: dict[str, Any] | None = None) -> Path:
    """Our single-file format: safetensors with the config, class names and ``extra``
    (e.g. the input size it was trained at) in its metadata."""
    from safetensors.torch import save_file as st_save

    meta = {"library": LIBRARY_TAG, "pvtv2_config": json.dumps(model.config.to_dict())}
    if extra:
        meta["pvtv2_extra"] = json.dumps(extra)
    names = class_names if class_names is not None else getattr(model, "class_names", None)
    if names:
        meta["class_names"] = json.dumps(list(names))
    atomic_write(path, lambda tmp: st_save(_contiguous(model.state_dict()), tmp, metadata=meta))
    return Path(path)


def save_pretrained(model: PyramidVisionTransformerV2, directory: str | os.PathLike,
                    *, class_names: list[str] | None = None) -> Path:
    """Write ``model.safetensors`` + ``config.json``; ``create_model(pretrained=directory)`` rebuilds it."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    names = class_names if class_names is not None else getattr(model, "class_names", None)
    save_file(model, directory / "model.safetensors", class_names=names)
    cfg = {"library": LIBRARY_TAG, "config": model.config.to_dict(), "class_names": list(names) if names else None}
    atomic_write(directory / CONFIG_FILE, lambda tmp: Path(tmp).write_text(json.dumps(cfg, indent=2)))
    return directory


PyramidVisionTransformerV2.save_pretrained = save_pretrained  # model.save_pretrained(dir)


#: What a task checkpoint is called in messages, by its metadata ``task``.
TASK_NAMES = {"segment": "segmentation", "detect": "detection"}


def save_task_file(model: torch.nn.Module, path: str | os.PathLike, *, task: str, backbone: PyramidVisionTransformerV2,
                   class_names: list[str], extra: dict[str, Any] | None = None, **meta: str) -> Path:
    """A task model (segmenter, detector) as safetensors, atomically, with what rebuilds it in the
    metadata: ``task``, the backbone config, class names, ``extra`` (JSON) and ``meta`` strings."""
    from safetensors.torch import save_file as st_save

    metadata = {"library": LIBRARY_TAG, "task": task, "pvtv2_config": json.dumps(backbone.config.to_dict()),
                "class_names": json.dumps(list(class_names)), "pvtv2_extra": json.dumps(extra or {}), **meta}
    atomic_write(path, lambda tmp: st_save(_contiguous(model.state_dict()), tmp, metadata=metadata))
    return Path(path)


def read_task_file(path: str | os.PathLike, task: str) -> tuple[dict[str, torch.Tensor], dict[str, str], PyramidVisionTransformerV2]:
    """Read a :func:`save_task_file` checkpoint -> (state dict, metadata, a fresh backbone of its
    config); a missing, damaged or other kind of file raises :class:`CheckpointError`."""
    from safetensors import SafetensorError, safe_open
    from safetensors.torch import load_file

    path = Path(path)
    name = TASK_NAMES[task]
    if not path.is_file():
        raise CheckpointError(f"{path}: no such {name} checkpoint (a run writes OUTPUT/best.safetensors)")
    try:
        with safe_open(str(path), "pt") as fh:
            meta = fh.metadata() or {}
        state = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{path}: cannot read it as safetensors ({e}); is it truncated?") from None
    if meta.get("task") != task:
        raise CheckpointError(f"{path}: not a pvtv2 {name} checkpoint (no 'task: {task}' metadata); "
                              f"a classifier file can serve as --pretrained backbone weights instead")
    backbone = PyramidVisionTransformerV2(PVTv2Config.from_dict({**json.loads(meta["pvtv2_config"]), "num_classes": 0}))
    return state, meta, backbone


def load_task_state(model: torch.nn.Module, state: dict[str, torch.Tensor], path: str | os.PathLike) -> None:
    """Load a task checkpoint's weights, all of them and nothing else."""
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise CheckpointError(f"{path}: weights do not fit the model in its metadata: missing {missing[:5]}, "
                              f"unexpected {unexpected[:5]}")


def convert(src: Any, dst: str | os.PathLike, *, to: str = "ours", name: str | None = None) -> Path:
    """Convert a checkpoint of any format to ``to`` (``ours``, ``official``, ``timm``, ``transformers``).

    ``ours``/``transformers`` write a folder (config + safetensors) unless ``dst`` ends in
    ``.safetensors``; ``official`` writes a ``.pth`` state dict; ``timm`` a ``.safetensors``
    or ``.pth`` file by its suffix. The model is rebuilt in between, so the result is checked.
    """
    if to not in FORMATS:
        raise CheckpointError(f"unknown target format {to!r}; choose one of {', '.join(FORMATS)}")
    model = build_pretrained(name, src, num_classes=None)
    dst = Path(dst)
    names = getattr(model, "class_names", None)
    sd = _contiguous(model.state_dict())
    if to == "ours":
        return save_file(model, dst) if dst.suffix == ".safetensors" else save_pretrained(model, dst)
    if to == "transformers":
        from safetensors.torch import save_file as st_save

        cfg = ours_config_to_transformers(model.config, names)
        dst.mkdir(parents=True, exist_ok=True)
        atomic_write(dst / "model.safetensors", lambda tmp: st_save(ours_to_transformers(sd), tmp, metadata={"format": "pt"}))
        atomic_write(dst / CONFIG_FILE, lambda tmp: Path(tmp).write_text(json.dumps(cfg, indent=2)))
        return dst
    out = _FROM_OURS[to](sd)
    if dst.suffix == ".safetensors":
        from safetensors.torch import save_file as st_save

        atomic_write(dst, lambda tmp: st_save(out, tmp))
    else:
        atomic_write(dst, lambda tmp: torch.save(out, tmp))
    return dst
