"""Every published variant as one record: architecture, weights, recipe defaults, the paper's numbers.

The model's variant table, ``pretrained=True``'s hub ids, the classification recipe's
drop-path/clipping defaults, the FLOPs benchmark and the tests all read these records, so a
new variant is one more entry in :data:`REGISTRY`. A record names its ``family``, whose
design switches :data:`FAMILIES` holds: PVTv2 (``pvt_v2_b0`` ... ``pvt_v2_b5``) and PVTv1
(``pvt_tiny`` ... ``pvt_large``: learned position embeddings, non-overlapping patches, plain
MLP, a class token), built from the same blocks.

Sources (whai362/PVT): ``classification/pvt_v2.py`` and ``classification/pvt.py``
(architectures), ``classification/configs/pvt_v2/*.py`` and ``configs/pvt/*.py`` (drop path,
gradient clipping), ``classification/README.md`` (ImageNet-1K top-1, release files), the
PVTv2 paper's Tables 1-2 and the PVTv1 paper's Table 2 (GFLOPs at 224x224). PVTv2 hub ids are
timm's Hugging Face mirrors of the release files; PVTv1 ones are transformers' conversions
(timm has no PVTv1).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

#: What a family's design sets in :class:`pvtv2.PVTv2Config`; a record adds its sizes.
FAMILIES: dict[str, dict[str, Any]] = {
    "pvt_v2": dict(patch_embed="overlap", conv_ffn=True, pos_embed=False, cls_token=False, stage_norms=True),
    # PVTv1 (classification/pvt.py): kernel = stride patches, position embeddings learned on
    # the 224x224 token grids, plain MLP, a class token in stage 4 read after one final norm.
    "pvt_v1": dict(patch_embed="plain", conv_ffn=False, pos_embed=True, cls_token=True, stage_norms=False),
}
#: Short names accepted wherever a family is asked for (``list_models(family="v1")``).
FAMILY_ALIASES = {"v1": "pvt_v1", "v2": "pvt_v2"}
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
    # the one file ``pretrained=True`` takes from the hub repo; None: the whole repo (a
    # transformers repo's weights need its config.json: LayerNorm eps, labels)
    hub_file: str | None = "model.safetensors"
    # dense-prediction models on this backbone, as the PVTv2 paper counts them: detector or
    # segmenter -> (parameters in millions, GFLOPs or None where the paper gives none).
    # RetinaNet and Mask R-CNN (1x, COCO; GFLOPs at 1280x800): Table 3 (parameters) and the
    # ablation, Table 6 (GFLOPs); Semantic FPN (ADE20K, 512x512): Table 5; Cascade Mask R-CNN
    # (3x, COCO; B2 and B2-Li only): Table 4.
    paper_dense: Mapping[str, tuple[float, float | None]] = field(default_factory=dict)
    # their published accuracy: COCO val2017 box AP of the detectors (RetinaNet and Mask R-CNN 1x;
    # Cascade Mask R-CNN, ATSS, GFL, Sparse R-CNN 3x + multi-scale), ADE20K val mIoU of Semantic FPN
    # (whai362/PVT detection/README.md, the PVTv2 paper's Table 5, the PVTv1 paper's Table 5).
    paper_accuracy: Mapping[str, float] = field(default_factory=dict)

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
            clip_grad: float = 0.0, num_params: int, paper_gflops: float, paper_top1: float,
            dense: Mapping[str, tuple[float, float | None]], accuracy: Mapping[str, float]) -> Variant:
    """A PVTv2 record: every variant shares heads 1, 2, 5, 8 and reduction ratios 8, 4, 2, 1,
    and its weights sit under the same names on the hub and the release page."""
    return Variant(name=name, family="pvt_v2", embed_dims=embed_dims, depths=depths, num_heads=(1, 2, 5, 8),
                   mlp_ratios=mlp_ratios, sr_ratios=(8, 4, 2, 1), attention=attention, hub_id=f"timm/{name}.in1k",
                   url=f"{_RELEASES}/{name}.pth", drop_path=drop_path, clip_grad=clip_grad, num_params=num_params,
                   paper_gflops=paper_gflops, paper_top1=paper_top1, paper_dense=dense, paper_accuracy=accuracy)


def _pvt_v1(name: str, depths: tuple[int, ...], *, drop_path: float, clip_grad: float = 0.0, num_params: int,
            paper_gflops: float, paper_top1: float, dense: Mapping[str, tuple[float, float | None]],
            accuracy: Mapping[str, float]) -> Variant:
    """A PVTv1 record (``classification/pvt.py``): every variant shares widths 64-512, heads
    1, 2, 5, 8, MLP ratios 8, 8, 4, 4 and reduction ratios 8, 4, 2, 1. The hub copies are
    transformers' ``PvtForImageClassification`` conversions of the release files."""
    size = name.split("_")[1]
    return Variant(name=name, family="pvt_v1", embed_dims=(64, 128, 320, 512), depths=depths, num_heads=(1, 2, 5, 8),
                   mlp_ratios=(8, 8, 4, 4), sr_ratios=(8, 4, 2, 1), attention="sra", hub_id=f"Zetatech/pvt-{size}-224",
                   url=f"{_RELEASES}/{name}.pth", drop_path=drop_path, clip_grad=clip_grad, num_params=num_params,
                   paper_gflops=paper_gflops, paper_top1=paper_top1, hub_file=None, paper_dense=dense,
                   paper_accuracy=accuracy)


#: Every variant, PVTv2 then PVTv1, smallest first within a family (``pvtv2.list_models()``
#: lists the PVTv2 ones; ``list_models(family="all")`` all of them in this order).
REGISTRY: dict[str, Variant] = {v.name: v for v in (
    _pvt_v2("pvt_v2_b0", (2, 2, 2, 2), embed_dims=(32, 64, 160, 256), drop_path=0.1,
            num_params=3_666_760, paper_gflops=0.6, paper_top1=70.5,
            dense=dict(retinanet=(13.0, None), maskrcnn=(23.5, None), semantic_fpn=(7.6, 25.0)),
            accuracy=dict(retinanet=37.2, maskrcnn=38.2, semantic_fpn=37.2)),
    _pvt_v2("pvt_v2_b1", (2, 2, 2, 2), drop_path=0.1, num_params=14_009_000, paper_gflops=2.1, paper_top1=78.7,
            dense=dict(retinanet=(23.8, None), maskrcnn=(33.7, None), semantic_fpn=(17.8, 34.2)),
            accuracy=dict(retinanet=41.2, maskrcnn=41.8, semantic_fpn=42.5)),
    _pvt_v2("pvt_v2_b2", (3, 4, 6, 3), drop_path=0.1, num_params=25_362_856, paper_gflops=4.0, paper_top1=82.0,
            dense=dict(retinanet=(35.1, 290.7), maskrcnn=(45.0, None), semantic_fpn=(29.1, 45.8),
                       cascade_maskrcnn=(83.0, 788.0)),
            accuracy=dict(retinanet=44.6, maskrcnn=45.3, semantic_fpn=45.2, cascade_maskrcnn=51.1, atss=49.9, gfl=50.2,
                          sparse_rcnn=50.1)),
    _pvt_v2("pvt_v2_b2_li", (3, 4, 6, 3), attention="linear", drop_path=0.1,
            num_params=22_553_512, paper_gflops=3.9, paper_top1=82.1,
            dense=dict(retinanet=(32.3, 227.4), maskrcnn=(42.2, None), semantic_fpn=(26.3, 41.0),
                       cascade_maskrcnn=(80.0, 725.0)),
            accuracy=dict(retinanet=43.6, maskrcnn=44.1, cascade_maskrcnn=50.9, atss=48.9, gfl=49.2, sparse_rcnn=48.9)),
    _pvt_v2("pvt_v2_b3", (3, 4, 18, 3), drop_path=0.3, clip_grad=1.0,
            num_params=45_238_696, paper_gflops=6.9, paper_top1=83.1,
            dense=dict(retinanet=(55.0, None), maskrcnn=(64.9, None), semantic_fpn=(49.0, 62.4)),
            accuracy=dict(retinanet=45.9, maskrcnn=47.0, semantic_fpn=47.3)),
    _pvt_v2("pvt_v2_b4", (3, 8, 27, 3), drop_path=0.3, clip_grad=1.0,
            num_params=62_556_072, paper_gflops=10.1, paper_top1=83.6,
            dense=dict(retinanet=(72.3, None), maskrcnn=(82.2, None), semantic_fpn=(66.3, 81.3)),
            accuracy=dict(retinanet=46.1, maskrcnn=47.5, semantic_fpn=47.9)),
    _pvt_v2("pvt_v2_b5", (3, 6, 40, 3), mlp_ratios=(4, 4, 4, 4), drop_path=0.3, clip_grad=1.0,
            num_params=81_956_008, paper_gflops=11.8, paper_top1=83.8,
            dense=dict(retinanet=(91.7, None), maskrcnn=(101.6, None), semantic_fpn=(85.7, 91.1)),
            accuracy=dict(retinanet=46.2, maskrcnn=47.4, semantic_fpn=48.7)),
    # configs/pvt/*.py: medium and large train with drop path 0.3 and clipping 1.0.
    _pvt_v1("pvt_tiny", (2, 2, 2, 2), drop_path=0.1, num_params=13_229_288, paper_gflops=1.9, paper_top1=75.1,
            dense=dict(retinanet=(23.0, None), maskrcnn=(32.9, None), semantic_fpn=(17.0, 33.2)),
            accuracy=dict(retinanet=36.7, maskrcnn=36.7, semantic_fpn=35.7)),
    _pvt_v1("pvt_small", (3, 4, 6, 3), drop_path=0.1, num_params=24_485_864, paper_gflops=3.8, paper_top1=79.8,
            dense=dict(retinanet=(34.2, 285.8), maskrcnn=(44.1, None), semantic_fpn=(28.2, 44.5)),
            accuracy=dict(retinanet=40.4, maskrcnn=40.4, semantic_fpn=39.8)),
    _pvt_v1("pvt_medium", (3, 4, 18, 3), drop_path=0.3, clip_grad=1.0, num_params=44_208_104,
            paper_gflops=6.7, paper_top1=81.2,
            dense=dict(retinanet=(53.9, None), maskrcnn=(63.9, None), semantic_fpn=(48.0, 61.0)),
            accuracy=dict(retinanet=41.9, maskrcnn=42.0, semantic_fpn=41.6)),
    _pvt_v1("pvt_large", (3, 8, 27, 3), drop_path=0.3, clip_grad=1.0, num_params=61_369_320,
            paper_gflops=9.8, paper_top1=81.7,
            dense=dict(retinanet=(71.1, None), maskrcnn=(81.0, None), semantic_fpn=(65.1, 79.6)),
            accuracy=dict(retinanet=42.6, maskrcnn=42.9, semantic_fpn=42.1)),
)}


def get_variant(name: str) -> Variant:
    """The record of ``name``; an unknown name raises ``ValueError`` listing the known ones."""
    try:
        return REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; known models: {', '.join(REGISTRY)}") from None


def canonical_family(family: str) -> str:
    """``family`` or the family it abbreviates (``"v1"`` -> ``"pvt_v1"``); an unknown one
    raises ``ValueError`` listing the known ones."""
    family = FAMILY_ALIASES.get(family, family)
    if family not in FAMILIES:
        raise ValueError(f"unknown model family {family!r}; known families: {', '.join(FAMILIES)} "
                         f"(or {', '.join(FAMILY_ALIASES)})")
    return family


def variant_names(family: str | None = None) -> list[str]:
    """Names in registry order, optionally of one ``family`` (``"pvt_v1"`` or ``"v1"``...)."""
    family = None if family is None else canonical_family(family)
    return [n for n, v in REGISTRY.items() if family is None or v.family == family]
