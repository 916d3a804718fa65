"""Parameters and FLOPs in the papers' convention, for classifiers, detectors and segmenters.

The papers' numbers come from whai362/PVT's ``classification/get_flops.py`` and
``detection/get_flops.py``: mmcv's ``get_model_complexity_info`` plus the attention matmuls
that its module hooks cannot see. mmcv counts *multiply-adds* ("FLOPs") module by module:

* convolutions: ``k_h * k_w * C_in / groups`` per output element, plus one per output for
  the bias; transposed convolutions per *input* position (their bias term counts
  ``C_out * H_out * H_out``, an mmcv quirk kept here);
* linear layers: ``in * out`` per token, no bias;
* norms (LayerNorm, BatchNorm, GroupNorm, InstanceNorm): one per element, two when affine;
* ReLU-family activations and ``nn.Upsample``: one per output element; pooling: one per
  input element; GELU, softmax, dropout, additions and functional ops: nothing;
* get_flops.py's attention term: ``2 * h * w * h' * w' * C`` per block (``QK^T`` and
  ``AV``), with ``h' w' = (h // R)(w // R)`` for SRA and 7 x 7 for linear SRA, the token
  grid of the input (PVTv1's class token is not in it).

The table :data:`RULES` maps module types to these counters; a new layer type (a dynamic
conv, another attention) is counted by adding an entry, passed as ``rules=`` or added to
the table. Detectors are counted as mmdet's ``forward_dummy`` runs them (:data:`DUMMY_FORWARDS`):
no resizing, anchors or post-processing, the RoI heads of two-stage detectors on 1000
random proposals (the mask head on the first 100). Models can be counted on the ``meta``
device (:func:`build_on_meta`): shapes only, no arithmetic, so b5 at 1280x800 costs nothing.
"""
from __future__ import annotations

import contextlib
from collections import defaultdict
from dataclasses import replace
from typing import Any, Callable, Iterator, Mapping

import torch
from torch import nn

from ..errors import ConfigError
from ..layers import LinearSRA, SpatialReductionAttention
from ..registry import REGISTRY

#: The paper's GFLOPs at 224x224, per variant (from :mod:`pvtv2.registry`).
PAPER_GFLOPS = {name: v.paper_gflops for name, v in REGISTRY.items()}

#: ``(module, inputs, output) -> multiply-adds`` of one call.
Counter = Callable[[nn.Module, tuple, Any], int]


# -- mmcv's counters -------------------------------------------------------------------
def _conv(m: nn.Module, inputs: tuple, out: torch.Tensor) -> int:
    per_out = m.in_channels // m.groups
    for k in m.kernel_size:
        per_out *= k
    n_out = out.numel() // out.shape[1] * m.out_channels  # batch x spatial positions x channels
    return n_out * per_out + (n_out if m.bias is not None else 0)


def _deconv(m: nn.Module, inputs: tuple, out: torch.Tensor) -> int:
    x = inputs[0]
    positions = x.shape[0] * x.shape[2] * x.shape[3]
    macs = positions * m.kernel_size[0] * m.kernel_size[1] * m.in_channels * (m.out_channels // m.groups)
    # mmcv multiplies the output height by itself here (not by the width); equal for square RoI masks.
    bias = m.out_channels * out.shape[0] * out.shape[2] * out.shape[2] if m.bias is not None else 0
    return macs + bias


def _linear(m: nn.Module, inputs: tuple, out: torch.Tensor) -> int:
    return inputs[0].numel() * out.shape[-1]


def _norm(m: nn.Module, inputs: tuple, out: torch.Tensor) -> int:
    affine = getattr(m, "affine", False) or getattr(m, "elementwise_affine", False)
    return inputs[0].numel() * (2 if affine else 1)


def _per_output(m: nn.Module, inputs: tuple, out: torch.Tensor) -> int:
    return out.numel()


def _per_input(m: nn.Module, inputs: tuple, out: torch.Tensor) -> int:
    return inputs[0].numel()


def _attention(m: SpatialReductionAttention, inputs: tuple, out: torch.Tensor) -> int:
    """get_flops.py's ``sra_flops`` / ``li_sra_flops``: ``2 * H * W * N' * C`` for the
    ``H x W`` token grid the block runs on (``inputs = (x, H, W)``)."""
    H, W = int(inputs[1]), int(inputs[2])
    if isinstance(m, LinearSRA):
        kv = m.pool_size ** 2
    else:
        kv = (H // m.sr_ratio) * (W // m.sr_ratio)
    return inputs[0].shape[0] * 2 * H * W * kv * m.dim


_ACTIVATIONS = (nn.ReLU, nn.PReLU, nn.ELU, nn.LeakyReLU, nn.ReLU6)
_POOLS = (nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d,
          nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d, nn.AdaptiveMaxPool3d,
          nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d)
_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.GroupNorm, nn.InstanceNorm1d, nn.InstanceNorm2d,
          nn.InstanceNorm3d, nn.LayerNorm)

#: Module type -> ``(kind, counter)``: mmcv's table plus PVT's attention. A module is counted
#: by the entry of the nearest class in its MRO (mmcv needs the exact type, and lists its own
#: subclasses of the torch layers; here a subclass is counted like its base unless it has an
#: entry). ``kind`` groups the totals in ``by_kind``.
RULES: dict[type, tuple[str, Counter]] = {
    nn.Conv1d: ("conv", _conv), nn.Conv2d: ("conv", _conv), nn.Conv3d: ("conv", _conv),
    nn.ConvTranspose2d: ("conv", _deconv),
    nn.Linear: ("linear", _linear),
    **{t: ("norm", _norm) for t in _NORMS},
    **{t: ("act_pool", _per_output) for t in _ACTIVATIONS},
    **{t: ("act_pool", _per_input) for t in _POOLS},
    nn.Upsample: ("act_pool", _per_output),
    SpatialReductionAttention: ("attention", _attention),
}


def _rule_for(module: nn.Module, rules: Mapping[type, tuple[str, Counter]]) -> tuple[str, Counter] | None:
    for cls in type(module).__mro__:
        if cls in rules:
            return rules[cls]
    return None


# -- what one image's forward runs, per model type -------------------------------------
def _single_stage_dummy(model: nn.Module, images: torch.Tensor) -> Any:
    """mmdet ``SingleStageDetector.forward_dummy``: backbone + neck + head on every level."""
    return model.head(list(model.backbone(images).values()))


def _two_stage_dummy(model: nn.Module, images: torch.Tensor) -> Any:
    """mmdet ``TwoStageDetector.forward_dummy``: backbone + neck, the RPN head on every level,
    the box head on 1000 random proposals and the mask head (if any) on the first 100 of
    them. RoIAlign counts nothing (as in mmcv) and its output size is fixed, so the pooled
    features are made directly (which also works on the meta device, where the pooler's
    data-dependent level assignment cannot run)."""
    levels = list(model.backbone(images).values())
    outputs = [model.rpn.head(levels)]
    heads = model.roi_heads

    def pooled(pooler: nn.Module, n: int) -> torch.Tensor:
        return images.new_zeros(n, model.backbone.out_channels, *pooler.output_size)

    outputs.append(heads.box_predictor(heads.box_head(pooled(heads.box_roi_pool, 1000))))
    if getattr(heads, "mask_head", None) is not None:
        outputs.append(heads.mask_predictor(heads.mask_head(pooled(heads.mask_roi_pool, 100))))
    return outputs


#: Model type -> ``forward(model, images)`` running what mmdet/mmseg's ``forward_dummy`` runs;
#: the nearest class in a model's MRO is used, and models without an entry run ``model(images)``
#: (classifiers, Semantic FPN). New detector kinds add an entry here.
DUMMY_FORWARDS: dict[type, Callable[[nn.Module, torch.Tensor], Any]] = {}


def _register_torchvision_detectors() -> None:
    from torchvision.models.detection import FCOS, FasterRCNN, RetinaNet

    DUMMY_FORWARDS.setdefault(RetinaNet, _single_stage_dummy)
    DUMMY_FORWARDS.setdefault(FCOS, _single_stage_dummy)
    DUMMY_FORWARDS.setdefault(FasterRCNN, _two_stage_dummy)  # Mask R-CNN is a FasterRCNN subclass


def _sparse_rcnn_dummy(model: nn.Module, images: torch.Tensor) -> Any:
    """mmdet ``SparseRCNN.forward_dummy``: backbone + neck, then every stage's dynamic head on the
    learned proposals (their features from the embedding; RoIAlign counts nothing, so the pooled
    features are made directly). The dynamic convs' per-proposal matmuls are functional, which mmcv
    does not count."""
    features = model.backbone(images)
    obj = model.init_proposal_features.weight[None]
    outputs = []
    for stage in model.stages:
        roi = images.new_zeros(obj.shape[1], model.backbone.out_channels, *model.box_roi_pool.output_size)
        logits, deltas, obj = stage(roi, obj)
        outputs.append((logits, deltas))
    return features, outputs


def _cascade_dummy(model: nn.Module, images: torch.Tensor) -> Any:
    """mmdet ``CascadeRoIHead.forward_dummy``: backbone + neck, the RPN head on every level, every
    stage's box head on the same 1000 random proposals and every stage's mask head on the first 100
    (pooled features made directly, as :func:`_two_stage_dummy`)."""
    levels = list(model.backbone(images).values())
    outputs = [model.rpn.head(levels)]
    heads = model.roi_heads

    def pooled(pooler: nn.Module, n: int) -> torch.Tensor:
        return images.new_zeros(n, model.backbone.out_channels, *pooler.output_size)

    outputs += [head(pooled(heads.box_roi_pool, 1000)) for head in heads.box_heads]
    outputs += [head(pooled(heads.mask_roi_pool, 100)) for head in heads.mask_heads]
    return outputs


def _register_pvtv2_detectors() -> None:
    """The detector kinds of :mod:`pvtv2.detection` that are not torchvision's."""
    from ..detection.cascade_rcnn import CascadeMaskRCNN
    from ..detection.one_stage import ConvGN, OneStageDetector
    from ..detection.sparse_rcnn import SparseRCNN

    DUMMY_FORWARDS.setdefault(OneStageDetector, _single_stage_dummy)  # ATSS, GFL
    DUMMY_FORWARDS.setdefault(SparseRCNN, _sparse_rcnn_dummy)
    DUMMY_FORWARDS.setdefault(CascadeMaskRCNN, _cascade_dummy)
    # mmcv's ConvModule has a ReLU module, which it counts; ConvGN applies torch.relu (its conv and
    # GroupNorm are counted by their own rules).
    RULES.setdefault(ConvGN, ("act_pool", _per_output))


_register_torchvision_detectors()
_register_pvtv2_detectors()


def _dummy_forward_for(model: nn.Module) -> Callable[[nn.Module, torch.Tensor], Any] | None:
    for cls in type(model).__mro__:
        if cls in DUMMY_FORWARDS:
            return DUMMY_FORWARDS[cls]
    return None


def _plain_forward(model: nn.Module, images: torch.Tensor) -> Any:
    return model(images)


# -- counting ----------------------------------------------------------------------------
@contextlib.contextmanager
def _hooks(model: nn.Module, rules: Mapping[type, tuple[str, Counter]], totals: dict[str, int]) -> Iterator[None]:
    handles = []
    for m in model.modules():
        rule = _rule_for(m, rules)
        if rule is None:
            continue
        kind, counter = rule

        def hook(module, inputs, output, kind=kind, counter=counter):
            totals[kind] += int(counter(module, inputs, output))

        handles.append(m.register_forward_hook(hook))
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def count_flops(model: nn.Module, img_size: int | tuple[int, int] = 224, in_chans: int = 3, *,
                rules: Mapping[type, tuple[str, Counter]] | None = None,
                forward: Callable[[nn.Module, torch.Tensor], Any] | None = None) -> dict[str, Any]:
    """Count one ``(1, in_chans, H, W)`` image's forward pass, on the model's device (the
    ``meta`` device counts shapes without computing; see :func:`build_on_meta`).

    ``rules``: module type -> ``(kind, counter)`` (default :data:`RULES`); ``forward``:
    what to run (default: the model type's entry in :data:`DUMMY_FORWARDS`, else
    ``model(x)``). Returns ``{"params", "flops", "by_kind"}`` (flops = multiply-adds, as
    the papers count them; params = every parameter)."""
    h, w = (img_size, img_size) if isinstance(img_size, int) else img_size
    rules = RULES if rules is None else rules
    run = forward or _dummy_forward_for(model) or _plain_forward
    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    dtype = param.dtype if param is not None and param.is_floating_point() else torch.float32
    totals: dict[str, int] = defaultdict(int)
    was_training = model.training
    try:
        model.eval()
        with _hooks(model, rules, totals), torch.no_grad():
            run(model, torch.zeros(1, in_chans, h, w, device=device, dtype=dtype))
    finally:
        model.train(was_training)
    return {"params": sum(p.numel() for p in model.parameters()), "flops": int(sum(totals.values())),
            "by_kind": dict(totals)}


def build_on_meta(build: Callable[[], nn.Module]) -> nn.Module:
    """``build()`` with every tensor on the ``meta`` device: no memory and no initialisation
    cost, and :func:`count_flops` then runs on shapes alone."""
    with torch.device("meta"):
        return build()


# -- the dense tasks -------------------------------------------------------------------
TASKS = ("classify", "detect", "segment")
#: Each task's input size (height, width) in the papers: 224 for ImageNet, get_flops.py's
#: default shape for COCO (``--shape 1280 800``: height 1280, width 800), 512 for ADE20K.
DEFAULT_SIZES = {"classify": (224, 224), "detect": (1280, 800), "segment": (512, 512)}
#: Classes of the datasets the papers count with: ImageNet-1K, COCO, ADE20K.
DEFAULT_CLASSES = {"classify": 1000, "detect": 80, "segment": 150}


def build_task_model(task: str, name: str, *, kind: str | None = None, num_classes: int | None = None,
                     **overrides: Any) -> nn.Module:
    """The model the papers count for ``task``: the classifier, a torchvision detector of
    ``kind`` (``retinanet``, ``maskrcnn``...) or the Semantic FPN segmenter, on backbone
    ``name`` with :class:`pvtv2.PVTv2Config` ``overrides`` (the ablation's switches)."""
    n = DEFAULT_CLASSES[task] if num_classes is None else num_classes
    if task == "classify":
        from ..factory import create_model

        return create_model(name, num_classes=n, **overrides)
    if task == "detect":
        from ..detection.model import create_detector

        if kind is None:
            raise ConfigError("--task detect needs a detector --kind (retinanet, fasterrcnn, maskrcnn, ...)")
        model = create_detector(kind, name, n, drop_path_rate=0.0)
        if overrides:  # create_detector's keywords go to torchvision: rebuild the body with the switches
            from ..model import PyramidVisionTransformerV2

            body = model.backbone.body
            model.backbone.body = PyramidVisionTransformerV2(replace(body.config, **overrides))
        return model
    if task == "segment":
        from ..segmentation.model import create_segmenter

        return create_segmenter(name, n, drop_path_rate=0.0, **overrides)
    raise ConfigError(f"unknown task {task!r}; choose one of {', '.join(TASKS)}")


def count_task_flops(task: str, name: str, img_size: tuple[int, int] | None = None, *, kind: str | None = None,
                     num_classes: int | None = None, **overrides: Any) -> dict[str, Any]:
    """:func:`count_flops` of :func:`build_task_model`, built on the meta device, at
    ``img_size`` (default: the task's :data:`DEFAULT_SIZES`). Returns the counts plus
    ``params_m`` and ``gflops``."""
    size = tuple(img_size or DEFAULT_SIZES[task])
    model = build_on_meta(lambda: build_task_model(task, name, kind=kind, num_classes=num_classes, **overrides))
    if task == "detect" and _dummy_forward_for(model) is None:
        # A detector's own forward resizes, decodes and runs NMS, none of which the papers count.
        raise ConfigError(f"no FLOPs rule for {type(model).__name__} (--kind {kind}): add the forward mmdet's "
                         f"forward_dummy runs for it to pvtv2.bench.flops.DUMMY_FORWARDS")
    r = count_flops(model, size)
    return {**r, "params_m": r["params"] / 1e6, "gflops": r["flops"] / 1e9, "img_size": list(size)}


def paper_numbers(task: str, name: str, kind: str | None = None) -> tuple[float | None, float | None]:
    """The paper's ``(parameters in millions, GFLOPs)`` for ``name`` on ``task`` at the task's
    :data:`DEFAULT_SIZES`, ``None`` where the paper gives none (from :mod:`pvtv2.registry`)."""
    v = REGISTRY.get(name)
    if v is None:
        return None, None
    if task == "classify":
        return v.params_m, v.paper_gflops
    return v.paper_dense.get("semantic_fpn" if task == "segment" else kind, (None, None))


def flops_rows(names: list[str], *, task: str = "classify", kind: str | None = None,
               img_size: tuple[int, int] | None = None, num_classes: int | None = None) -> list[dict[str, Any]]:
    """``pvtv2 flops``: one row per variant with our parameters and GFLOPs and the paper's
    (``paper_params_m`` with the paper's class count, ``paper_gflops`` also only at the task's
    default size; ``None`` where it has none)."""
    if task not in TASKS:
        raise ConfigError(f"unknown task {task!r}; choose one of {', '.join(TASKS)}")
    if task == "detect" and kind is None:
        kind = "retinanet"
    size = tuple(img_size or DEFAULT_SIZES[task])
    rows = []
    for name in names:
        r = count_task_flops(task, name, size, kind=kind, num_classes=num_classes)
        same_classes = num_classes in (None, DEFAULT_CLASSES[task])
        paper_params, paper_gflops = paper_numbers(task, name, kind) if same_classes else (None, None)
        if size != DEFAULT_SIZES[task]:  # the parameters do not depend on the input size; the GFLOPs do
            paper_gflops = None
        rows.append({"model": name, "task": task, "kind": kind if task == "detect" else None,
                     "img_size": list(size), "params": r["params"], "params_m": round(r["params_m"], 2),
                     "gflops": round(r["gflops"], 3), "paper_params_m": paper_params, "paper_gflops": paper_gflops,
                     "by_kind": r["by_kind"]})
    return rows


def format_rows(rows: list[dict[str, Any]]) -> str:
    """:func:`flops_rows` as the text table ``pvtv2 flops`` prints."""
    if not rows:
        return ""
    first = rows[0]
    what = {"classify": "classifier", "detect": first["kind"], "segment": "Semantic FPN"}[first["task"]]
    size = "x".join(map(str, first["img_size"]))
    out = [f"{what} at {size} (H x W); GFLOPs = multiply-adds, as whai362/PVT's get_flops.py counts them",
           f"{'model':14s} {'params (M)':>10s} {'paper':>6s} {'GFLOPs':>9s} {'paper':>6s}"]
    for r in rows:
        out.append(f"{r['model']:14s} {r['params_m']:10.2f} {r['paper_params_m'] or '':>6} {r['gflops']:9.2f} "
                   f"{r['paper_gflops'] or '':>6}")
    return "\n".join(out)
