"""Checkpoints of every PVTv2 format: reading, loading into models, writing the pvtv2 format, converting.

Formats (all map to/from the ``pvtv2`` layout, which is the official one):

* ``pvtv2``    -- the official keys in safetensors, with the model config in the file's
  metadata and in a ``config.json`` beside it (``library: pvtv2``). Its old name ``ours``
  is still accepted.
* ``official`` -- whai362/PVT release files: ``patch_embed1.proj.weight``, ``block1.0.attn.kv.weight``...
* ``timm``     -- ``patch_embed.*``, ``stages.{i}.downsample.*``, ``stages.{i}.blocks.{j}.*``, ``mlp.dwconv.*``.
* ``transformers`` -- ``pvt_v2.encoder.layers.{i}.*`` with separate ``key``/``value`` projections
  and a ``config.json`` of ``model_type: pvt_v2``; for PVTv1 ``PvtForImageClassification``'s
  ``pvt.encoder.patch_embeddings.{i}.*`` (position embeddings, class token) and
  ``pvt.encoder.block.{i}.*``, ``model_type: pvt``.

PVTv1 (``pvt_tiny`` ... ``pvt_large``) has the ``pvtv2``, ``official`` and ``transformers`` formats;
timm has no PVTv1.

Modules: :mod:`.formats` (detection, key maps, config conversion), :mod:`.io` (reading files
and folders, writing the pvtv2 format), :mod:`.hub` (hub ids, the published weights), :mod:`.load` (into
a model, the load report, task models), :mod:`.convert`.
"""
from ..errors import CheckpointError
from ..fileio import atomic_write
from .convert import convert
from .formats import (FORMAT_ALIASES, FORMATS, canonical_format, detect_format, family_of, infer_config, match_variant,
                      match_variant_name, pvtv2_config_to_transformers, pvtv2_to_timm, pvtv2_to_transformers,
                      pvtv2_to_transformers_pvt, timm_to_pvtv2, transformers_config_to_pvtv2, transformers_pvt_to_pvtv2,
                      transformers_to_pvtv2, unwrap_state_dict)
from .hub import HUB_IDS, OFFICIAL_URLS, resolve_hub, resolve_source
from .io import CONFIG_FILE, WEIGHT_FILES, Checkpoint, read_checkpoint, save_file, save_pretrained, save_task_file, \
    write_safetensors
from .load import LoadReport, TaskFile, apply_state_dict, build_pretrained, load_checkpoint, load_task_file, set_norm_eps

# The key maps' names from before the format was called ``pvtv2``, for callers not yet renamed
# (bench/speed.py, tests/test_backbone.py, test_cuda.py, test_ffn.py).
ours_to_timm = pvtv2_to_timm
timm_to_ours = timm_to_pvtv2

__all__ = [
    "CONFIG_FILE", "FORMATS", "FORMAT_ALIASES", "HUB_IDS", "OFFICIAL_URLS", "WEIGHT_FILES", "Checkpoint",
    "CheckpointError", "LoadReport", "TaskFile", "apply_state_dict", "atomic_write", "build_pretrained",
    "canonical_format", "convert", "detect_format", "family_of", "infer_config", "load_checkpoint", "load_task_file",
    "match_variant", "match_variant_name", "pvtv2_config_to_transformers", "pvtv2_to_timm", "pvtv2_to_transformers",
    "pvtv2_to_transformers_pvt", "read_checkpoint", "resolve_hub", "resolve_source", "save_file", "save_pretrained",
    "save_task_file", "set_norm_eps", "timm_to_pvtv2", "transformers_config_to_pvtv2", "transformers_pvt_to_pvtv2",
    "transformers_to_pvtv2", "unwrap_state_dict", "write_safetensors",
]
