"""pvtv2: the Pyramid Vision Transformer v2 family in plain PyTorch."""
from .model import MIN_INPUT_SIZE, PVTv2Config, PyramidVisionTransformerV2, list_models, variant_config
from .factory import create_model
from .checkpoint import CheckpointError, LoadReport, convert, load_checkpoint, save_pretrained
from .registry import REGISTRY, Variant, get_variant

__version__ = "0.1.0"

__all__ = [
    "MIN_INPUT_SIZE",
    "REGISTRY",
    "CheckpointError",
    "LoadReport",
    "PVTv2Config",
    "PyramidVisionTransformerV2",
    "Variant",
    "convert",
    "create_model",
    "get_variant",
    "list_models",
    "load_checkpoint",
    "save_pretrained",
    "variant_config",
]
