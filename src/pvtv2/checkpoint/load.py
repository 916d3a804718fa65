"""Loading checkpoints into models: the load report, the checks, and building a model from weights."""
from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Mapping

import torch
from torch import nn

from ..errors import CheckpointError
from ..model import PVTv2Config, PyramidVisionTransformerV2, variant_config
from .formats import describe_keys, infer_config, match_variant
from .io import Checkpoint, config_from_dict, json_entry, read_checkpoint


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


def check_values(tensors: Mapping[str, torch.Tensor], own: Mapping[str, torch.Tensor], source: Any) -> None:
    """Refuse what ``copy_`` would take silently: integer or boolean tensors for floating-point
    parameters (converted, they give logits around 1e9) and NaN/inf weights."""
    wrong_type = [f"{k} ({v.dtype})" for k, v in tensors.items()
                  if k in own and own[k].is_floating_point() and not v.is_floating_point()]
    if wrong_type:
        raise CheckpointError(f"{source}: {len(wrong_type)} tensor(s) are not floating point where the model has "
                              f"floating-point parameters: {describe_keys(wrong_type)}; the file is damaged or was "
                              f"written with the wrong dtype")
    non_finite = [k for k, v in tensors.items() if k in own and v.is_floating_point() and not torch.isfinite(v).all()]
    if non_finite:
        raise CheckpointError(f"{source}: {len(non_finite)} tensor(s) hold NaN or inf values: {describe_keys(non_finite)}; "
                              f"the training that wrote them diverged or the file is damaged")


def _variant_hint(ckpt_cfg: PVTv2Config | None, model: PyramidVisionTransformerV2) -> str:
    if ckpt_cfg is None:
        return ""
    theirs = ckpt_cfg.name or match_variant(ckpt_cfg)
    ours = model.config.name or match_variant(model.config)
    if theirs and theirs != ours:
        return f"; this looks like a {theirs} checkpoint; you built {ours or 'a custom PVTv2'}"
    return ""


def _drop_head(sd: dict[str, torch.Tensor], own: Mapping[str, torch.Tensor], model: PyramidVisionTransformerV2,
               report: LoadReport) -> None:
    """Leave out a classifier head the model cannot take (features-only model, other class count)."""
    head_keys = [k for k in sd if k.startswith("head.")]
    if head_keys:
        if model.num_classes == 0:
            for k in head_keys:
                sd.pop(k)
            report.notes.append("checkpoint head dropped: the model has num_classes=0 (features only)")
        elif ("head.weight" in sd and "head.weight" in own and sd["head.weight"].shape[0] != own["head.weight"].shape[0]
              and sd["head.weight"].shape[1:] == own["head.weight"].shape[1:]):
            n_ckpt = sd["head.weight"].shape[0]
            for k in head_keys:
                sd.pop(k)
            report.head_reinitialized = True
            msg = (f"classifier head not loaded: checkpoint has {n_ckpt} classes, model has {model.num_classes}; "
                   f"the head stays newly initialised (fine-tuning)")
            report.notes.append(msg)
            warnings.warn(msg, stacklevel=4)
    elif any(k.startswith("head.") for k in own):
        report.head_reinitialized = True
        msg = f"checkpoint has no classifier head (backbone weights); the model's {model.num_classes}-class head stays newly initialised"
        report.notes.append(msg)
        warnings.warn(msg, stacklevel=4)


def _drop_class_token(sd: dict[str, torch.Tensor], own: Mapping[str, torch.Tensor], report: LoadReport) -> None:
    """A features-only PVTv1 (the detection backbone) has no class token or final norm: leave
    a classifier's out, as the official detection code does (it loads non-strictly)."""
    unused = [k for k in sd if (k == "cls_token" or k.startswith("norm.")) and k not in own]
    if unused and "pos_embed1" in own:
        for k in unused:
            sd.pop(k)
        report.notes.append("class token and final norm not loaded: a features-only PVTv1 (dense-prediction "
                            "backbone) does not use them")


def apply_state_dict(model: PyramidVisionTransformerV2, ckpt: Checkpoint, *, strict: bool = True) -> LoadReport:
    """Load a pvtv2-layout :class:`Checkpoint` into ``model``; see :func:`load_checkpoint`."""
    sd = dict(ckpt.state_dict)
    own = model.state_dict()
    report = LoadReport(source=ckpt.source, format=ckpt.format, loaded=0)
    _drop_head(sd, own, model, report)
    _drop_class_token(sd, own, report)
    report.missing = sorted(k for k in own if k not in sd and not (report.head_reinitialized and k.startswith("head.")))
    report.unexpected = sorted(k for k in sd if k not in own)
    report.mismatched = sorted(f"{k} (checkpoint {tuple(sd[k].shape)}, model {tuple(own[k].shape)})"
                               for k in sd if k in own and sd[k].shape != own[k].shape)
    if report.mismatched or (strict and (report.missing or report.unexpected)):
        parts = []
        for label, keys in (("missing", report.missing), ("unexpected", report.unexpected), ("shape-mismatched", report.mismatched)):
            if keys:
                parts.append(f"{len(keys)} {label}: {describe_keys(keys)}")
        raise CheckpointError(
            f"{ckpt.source} ({ckpt.format} format) does not fit the model: " + "; ".join(parts)
            + _variant_hint(ckpt.config or infer_config(ckpt.state_dict), model)
        )
    loadable = {k: v for k, v in sd.items() if k in own}
    check_values(loadable, own, ckpt.source)
    # transformers' PvtV2 uses one LayerNorm eps everywhere; match it so outputs agree exactly.
    if ckpt.format == "transformers" and ckpt.config is not None and (
            ckpt.config.norm_eps, ckpt.config.embed_norm_eps) != (model.config.norm_eps, model.config.embed_norm_eps):
        set_norm_eps(model, ckpt.config.norm_eps, ckpt.config.embed_norm_eps)
        report.notes.append(f"LayerNorm eps set to {ckpt.config.norm_eps} to match the checkpoint's config.json")
    with torch.no_grad():
        for k, v in loadable.items():
            own[k].copy_(v)  # float16/bfloat16 files load into float32 models: a widening copy
    report.loaded = len(loadable)
    return report


def set_norm_eps(model: PyramidVisionTransformerV2, norm_eps: float, embed_norm_eps: float) -> None:
    """Change the LayerNorm eps in place (block/stage norms vs patch-embed/SRA norms)."""
    for name, m in model.named_modules():
        if isinstance(m, nn.LayerNorm):
            m.eps = embed_norm_eps if name.startswith("patch_embed") or name.endswith("attn.norm") else norm_eps
    model.config = replace(model.config, norm_eps=norm_eps, embed_norm_eps=embed_norm_eps)


def load_checkpoint(model: PyramidVisionTransformerV2, source: Any, *, strict: bool = True) -> LoadReport:
    """Load weights of any PVTv2 format into ``model`` and report what happened.

    ``source``: a ``.pth``/``.pt``/``.bin``/``.safetensors`` file (a run's ``last.pt`` too),
    a Hugging Face-style folder (``config.json`` + weights), a hub id (``org/name``), an
    in-memory state dict, or a :class:`Checkpoint` already read; training checkpoints
    wrapped under ``model``/``state_dict``/``module.`` are unwrapped.
    A classifier head of a different size is skipped with a warning (fine-tuning);
    everything else must match unless ``strict=False``. Raises :class:`CheckpointError`.
    """
    return apply_state_dict(model, read_checkpoint(source, name=model.config.name), strict=strict)


def _same_architecture(a: PVTv2Config, b: PVTv2Config) -> bool:
    fields_ = ("embed_dims", "depths", "num_heads", "mlp_ratios", "sr_ratios", "attention", "patch_embed", "conv_ffn",
               "qkv_bias", "in_chans", "pos_embed", "cls_token", "stage_norms") + (("img_size",) if a.pos_embed else ())
    return all(tuple(map(float, getattr(a, f))) == tuple(map(float, getattr(b, f))) if isinstance(getattr(a, f), tuple)
               else getattr(a, f) == getattr(b, f) for f in fields_)


def build_pretrained(name: str | None, pretrained: Any, *, num_classes: int | None = None,
                     drop_path_rate: float = 0.0, **overrides: Any) -> PyramidVisionTransformerV2:
    """``create_model(name, pretrained=...)``: build the model, checking a config that
    comes with the weights against the requested variant, and load.

    ``pretrained``: anything :func:`read_checkpoint` takes. ``num_classes=None`` keeps the
    checkpoint's own number of classes (1000 if unknown). The model gets ``load_report``,
    ``class_names`` (when the checkpoint has them) and ``checkpoint_extra`` (what the
    checkpoint recorded about its training, e.g. ``input_size``).
    """
    ckpt = read_checkpoint(pretrained, name=name)
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
    model.checkpoint_extra = dict(ckpt.extra)
    return model


# -- task models (detectors, segmenters) ----------------------------------------------------
@dataclass
class TaskFile:
    """A :func:`pvtv2.checkpoint.save_task_file` checkpoint's metadata, decoded."""

    path: Path
    metadata: dict[str, str]  # the raw strings, for the task's own entries
    class_names: list[str]
    extra: dict[str, Any]
    backbone: PyramidVisionTransformerV2  # freshly built from the file's backbone config (num_classes=0)

    def json(self, key: str) -> Any:
        """A task-specific JSON entry, with an error naming the file if it is missing or damaged."""
        if key not in self.metadata:
            raise CheckpointError(f"{self.path}: metadata entry {key!r} is missing; the file was not written by this version of pvtv2")
        return json_entry(self.metadata, key, self.path)


def load_task_file(path: str | os.PathLike, *, task: str, label: str,
                   build: Callable[[TaskFile], nn.Module]) -> tuple[nn.Module, TaskFile]:
    """Rebuild a task model (detector, segmenter) from its file: ``build`` makes the model
    from the decoded metadata and a fresh backbone, then every weight is loaded, strictly.
    ``label`` names the task in messages ("detection"). A missing, damaged or other kind of
    file raises :class:`CheckpointError`."""
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such {label} checkpoint (a run writes OUTPUT/best.safetensors)")
    try:
        with safe_open(str(path), "pt") as fh:
            meta = fh.metadata() or {}
            state = {k: fh.get_tensor(k) for k in fh.keys()}
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{path}: cannot read it as safetensors ({e}); is it truncated?") from None
    if meta.get("task") != task:
        raise CheckpointError(f"{path}: not a pvtv2 {label} checkpoint (no 'task: {task}' metadata); "
                              f"a classifier file can serve as --pretrained backbone weights instead")
    config = config_from_dict(json_entry(meta, "pvtv2_config", path), path, "metadata entry 'pvtv2_config'")
    config = replace(config, num_classes=0)  # the task's head replaces the classifier
    info = TaskFile(path, dict(meta), list(json_entry(meta, "class_names", path, [])),
                    dict(json_entry(meta, "pvtv2_extra", path, {})), PyramidVisionTransformerV2(config))
    model = build(info)
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    mismatched = sorted(k for k in state if k in own and state[k].shape != own[k].shape)
    if missing or unexpected or mismatched:
        raise CheckpointError(f"{path}: weights do not fit the model in its metadata: missing {describe_keys(missing)}, "
                              f"unexpected {describe_keys(unexpected)}, shape-mismatched {describe_keys(mismatched)}")
    check_values(state, own, path)
    model.load_state_dict(state)
    return model, info
