"""RoI Align over several CPU cores at inference.

torchvision's CPU RoI Align kernel runs on one core: at the official test scale a Mask R-CNN's 1000
proposals took about 370 ms of its bf16 time on two cores (torchvision's kernel has no bf16 path: under
autocast it runs in float32). :class:`ParallelRoIAlign` splits the RoIs of each image into one part per
thread and runs the parts at once (1.9x on two cores); every RoI is pooled by the same kernel call as
before, so the outputs are the same, bit for bit. Training, GPUs, tracing and export keep torchvision's
single call.
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import torch
from torch import nn
from torchvision.ops import MultiScaleRoIAlign
from torchvision.ops.poolers import _setup_scales

from ..layers.onednn import eager

#: Fewer RoIs than this run in one call (threads would cost more than they save).
MIN_ROIS = 64


def parallel_pays(feature: torch.Tensor, num_rois: int, training: bool = False) -> bool:
    """Whether the RoIs are split over threads: CPU inference (not ``training``, no gradients wanted), eager,
    enough RoIs."""
    return (feature.device.type == "cpu" and not training and torch.get_num_threads() > 1 and num_rois >= MIN_ROIS
            and not (torch.is_grad_enabled() and feature.requires_grad) and eager())


class ParallelRoIAlign(MultiScaleRoIAlign):
    """torchvision's ``MultiScaleRoIAlign`` (same arguments, levels and outputs) whose CPU inference pools the
    RoIs of each image in ``torch.get_num_threads()`` parts at once where :func:`parallel_pays` (``parallel``:
    ``None``, the default; ``False``: never)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.parallel: bool | None = None

    def forward(self, x: dict[str, torch.Tensor], boxes: list[torch.Tensor],
                image_shapes: list[tuple[int, int]]) -> torch.Tensor:
        maps = [v for k, v in x.items() if k in self.featmap_names]
        if self.parallel is False or not maps or not parallel_pays(maps[0], sum(len(b) for b in boxes), self.training):
            return super().forward(x, boxes, image_shapes)
        if self.scales is None or self.map_levels is None:  # set once, here, before the threads read them
            self.scales, self.map_levels = _setup_scales(maps, image_shapes, self.canonical_scale,
                                                         self.canonical_level)
        dtype = maps[0].dtype
        # What autocast does for torchvision's roi_align (the worker threads have no autocast): float32 maps
        # and boxes, the result in the maps' dtype.
        x = {k: v.float() if k in self.featmap_names else v for k, v in x.items()}
        boxes = [b.float() for b in boxes]
        threads = torch.get_num_threads()
        parts = [b.tensor_split(threads) for b in boxes]  # parts[i][j]: image i's j-th share
        pool = super().forward
        with ThreadPoolExecutor(threads) as executor:
            pooled = list(executor.map(lambda j: pool(x, [p[j] for p in parts], image_shapes), range(threads)))
        # pooled[j] holds the j-th share of every image, image after image: put each image's shares back in order
        pieces, starts = [], [0] * threads
        for image_parts in parts:
            for j, share in enumerate(image_parts):
                pieces.append(pooled[j][starts[j]:starts[j] + len(share)])
                starts[j] += len(share)
        return torch.cat(pieces).to(dtype)


def use_parallel_roi_align(model: nn.Module) -> nn.Module:
    """Swap, in place, every torchvision ``MultiScaleRoIAlign`` of ``model`` (exactly that type: subclasses
    with their own rules stay) for a :class:`ParallelRoIAlign` with the same settings; returns ``model``.
    They hold no weights, so checkpoints are unchanged."""
    for module in list(model.modules()):
        for name, child in list(module.named_children()):
            if type(child) is MultiScaleRoIAlign:
                setattr(module, name, ParallelRoIAlign(child.featmap_names, child.output_size, child.sampling_ratio,
                                                       canonical_scale=child.canonical_scale,
                                                       canonical_level=child.canonical_level))
    return model
