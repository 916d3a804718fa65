"""PVTv2 building blocks, one file each: patch embedding, attention, FFN, block."""
from .attention import LinearSRA, SpatialReductionAttention
from .block import ATTENTION_KINDS, Block
from .ffn import ConvFFN, DepthwiseConv, map_to_tokens, tokens_to_map
from .patch_embed import OverlapPatchEmbed

__all__ = [
    "ATTENTION_KINDS",
    "Block",
    "ConvFFN",
    "DepthwiseConv",
    "LinearSRA",
    "OverlapPatchEmbed",
    "SpatialReductionAttention",
    "map_to_tokens",
    "tokens_to_map",
]
