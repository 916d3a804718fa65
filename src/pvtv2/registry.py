"""Every published variant as one record: architecture, weights, recipe defaults, the paper's numbers.

The model's variant table, ``pretrained=True``'s hub ids, the classification recipe's
drop-path/clipping defaults, the FLOPs benchmark and the tests all read these records, so a
new variant is one more entry in :data:`REGISTRY`. A record names its ``family``, whose
design switches :data:`FAMILIES` holds: the PVTv1 models (``pvt_tiny`` ... ``pvt_large``:
learned position embeddings, non-overlapping patches, plain MLP, a class token) would be one
more family entry and four more records.

Sources (whai362/PVT): ``classification/pvt_v2.py`` (architectures),
``classification/configs/pvt_v2/*.py`` (drop path, gradient clipping),
``classification/README.md`` (ImageNet-1K top-1, release files), the PVTv2 paper's
Tables 1-2 (GFLOPs at 224x224). Hub ids are timm's Hugging Face mirrors of the release files.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

#: What a family's design sets in :class:`pvtv2.PVTv2Config`; a record adds its sizes. PVTv1
#: would be ``"pvt_v1": dict(patch_embed="plain", conv_ffn=False, pos_embed=True,
#: cls_token=True, stage_norms=False)``, sizes from the official ``classification/pvt.py``.
FAMILIES: dict[str, dict[str, Any]] = {
    "pvt_v2": dict(patch_embed="overlap", conv_ffn=True, pos_embed=False, cls_token=False, stage_norms=True),
}
_RELEASES = "https://github.com/whai362/PVT/releases/download/v2"


@dataclass(frozen=True)
class Variant:
    """One published model. Architecture fields are :class:`pvtv2.PVTv2Config` fields."""

    name: str
    family: str  # a key of FAMILIES: the design switches shared by the family
    # architecture (sizes)
    embed_dims: tuple[int, ...]
    depths: tuple[int, ...]
    num_heads: tuple[int, ...]
    mlp_ratios: tuple[float, ...]
    sr_ratios: tuple[int, ...]
    attention: str  # "sra" or "linear" (the paper's linear SRA)
    # published weights
    hub_id: str | None  # what ``pretrained=True`` downloads
    url: str | None  # the official release file
    # classification recipe defaults (configs/pvt_v2/*.py)
    drop_path: float
    clip_grad: float  # max gradient norm; 0 = no clipping (the configs' None)
    # numbers to reproduce
    num_params: int  # with the 1000-class head, exactly
    paper_gflops: float  # multiply-adds at 224x224, as the paper counts them
    paper_top1: float  # ImageNet-1K val top-1 (%) of the released weights

    @property
    def params_m(self) -> float:
        """Parameters in millions, rounded as papers print them."""
        return round(self.num_params / 1e6, 1)

    def architecture(self) -> dict[str, Any]:
        """The :class:`pvtv2.PVTv2Config` keyword arguments that build this variant."""
        return dict(FAMILIES[self.family], embed_dims=self.embed_dims, depths=self.depths, num_heads=self.num_heads,
                    mlp_ratios=self.mlp_ratios, sr_ratios=self.sr_ratios, attention=self.attention)


def _pvt_v2(name: str, depths: tuple[int, ...], *, embed_dims: tuple[int, ...] = (64, 128, 320, 512),
            mlp_ratios: tuple[float, ...] = (8, 8, 4, 4), attention: str = "sra", drop_path: float,
            clip_grad: float = 0.0, num_params: int, paper_gflops: float, paper_top1: float) -> Variant:
    """A PVTv2 record: every variant shares heads 1, 2, 5, 8 and reduction ratios 8, 4, 2, 1,
    and its weights sit under the same names on the hub and the release page."""
    return Variant(name=name, family="pvt_v2", embed_dims=embed_dims, depths=depths, num_heads=(1, 2, 5, 8),
                   mlp_ratios=mlp_ratios, sr_ratios=(8, 4, 2, 1), attention=attention, hub_id=f"timm/{name}.in1k",
                   url=f"{_RELEASES}/{name}.pth", drop_path=drop_path, clip_grad=clip_grad, num_params=num_params,
                   paper_gflops=paper_gflops, paper_top1=paper_top1)


#: Every variant, smallest first (the order of ``pvtv2.list_models()``).
REGISTRY: dict[str, Variant] = {v.name: v for v in (
    _pvt_v2("pvt_v2_b0", (2, 2, 2, 2), embed_dims=(32, 64, 160, 256), drop_path=0.1,
            num_params=3_666_760, paper_gflops=0.6, paper_top1=70.5),
    _pvt_v2("pvt_v2_b1", (2, 2, 2, 2), drop_path=0.1, num_params=14_009_000, paper_gflops=2.1, paper_top1=78.7),
    _pvt_v2("pvt_v2_b2", (3, 4, 6, 3), drop_path=0.1, num_params=25_362_856, paper_gflops=4.0, paper_top1=82.0),
    _pvt_v2("pvt_v2_b2_li", (3, 4, 6, 3), attention="linear", drop_path=0.1,
            num_params=22_553_512, paper_gflops=3.9, paper_top1=82.1),
    _pvt_v2("pvt_v2_b3", (3, 4, 18, 3), drop_path=0.3, clip_grad=1.0,
            num_params=45_238_696, paper_gflops=6.9, paper_top1=83.1),
    _pvt_v2("pvt_v2_b4", (3, 8, 27, 3), drop_path=0.3, clip_grad=1.0,
            num_params=62_556_072, paper_gflops=10.1, paper_top1=83.6),
    _pvt_v2("pvt_v2_b5", (3, 6, 40, 3), mlp_ratios=(4, 4, 4, 4), drop_path=0.3, clip_grad=1.0,
            num_params=81_956_008, paper_gflops=11.8, paper_top1=83.8),
)}


def get_variant(name: str) -> Variant:
    """The record of ``name``; an unknown name raises ``ValueError`` listing the known ones."""
    try:
        return REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; known models: {', '.join(REGISTRY)}") from None


def variant_names(family: str | None = None) -> list[str]:
    """Names in registry order, optionally of one ``family``."""
    return [n for n, v in REGISTRY.items() if family is None or v.family == family]
